//! The calls of one client session, whoever answers them: request ids, the
//! calls in flight with the caller's state of each (`T`), the
//! acknowledgement low-water mark and the ids of completed RRA calls.
//!
//! Both clients are built on it: [`Session`](super::Session) (one server,
//! `T` = its [`Entry`](super::Entry)) and the multicast client (a group
//! whose members each answer every call, `T` = where the call's answers
//! go). What is particular to one of them (round trips, the send window,
//! PINGs; answers per member) stays with it. Sans-IO like the rest of the
//! session: no clock, no socket.
//!
//! A call is *pending* from [`Calls::start`] until [`Calls::end`]; in
//! between it may be *finished* ([`Calls::finish`]): it needs nothing more
//! from the server (its answer arrived) but the caller has not collected
//! it yet. Finished calls count in the low-water mark.

use crate::hash::{FastMap, FastSet};
use std::collections::{BTreeSet, VecDeque};

/// How many completed RRA request ids are remembered, so that a late
/// duplicate REPLY for one of them is acknowledged again.
const RECENT_RRA: usize = 4096;

/// One pending call.
#[derive(Debug, Clone)]
struct Pending<T> {
    /// The call uses RRA: every answer is acknowledged.
    rra: bool,
    /// The call needs nothing more from the server.
    finished: bool,
    /// The caller's state of the call.
    call: T,
}

/// The calls of one session (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Calls<T> {
    next_id: u64,
    pending: FastMap<u64, Pending<T>>,
    /// Ids of pending calls that have not finished.
    unfinished: BTreeSet<u64>,
    recent_rra: FastSet<u64>,
    recent_rra_order: VecDeque<u64>,
}

impl<T> Calls<T> {
    /// No calls yet: request ids start at 1.
    pub(crate) fn new() -> Calls<T> {
        Calls {
            next_id: 1,
            pending: FastMap::default(),
            unfinished: BTreeSet::new(),
            recent_rra: FastSet::default(),
            recent_rra_order: VecDeque::new(),
        }
    }

    /// The id the next call will get.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Whether `id` was handed out (to a call pending or not).
    pub(crate) fn issued(&self, id: u64) -> bool {
        id != 0 && id < self.next_id
    }

    /// Hands out the next request id to a call that waits for an answer,
    /// with the caller's state `call`.
    pub(crate) fn start(&mut self, rra: bool, call: T) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.unfinished.insert(id);
        self.pending.insert(
            id,
            Pending {
                rra,
                finished: false,
                call,
            },
        );
        id
    }

    /// Hands out the next request id to a call that is finished as soon as
    /// it is sent (one-way).
    pub(crate) fn start_one_way(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The cumulative acknowledgement: the largest L such that every call
    /// with an id up to L has finished on this side.
    pub(crate) fn ack_up_to(&self) -> u64 {
        match self.unfinished.first() {
            Some(first) => first - 1,
            None => self.next_id - 1,
        }
    }

    /// Whether call `id` is pending and not finished.
    pub(crate) fn is_unfinished(&self, id: u64) -> bool {
        self.unfinished.contains(&id)
    }

    /// The caller's state of the pending call `id` (finished or not).
    pub(crate) fn get(&self, id: u64) -> Option<&T> {
        self.pending.get(&id).map(|p| &p.call)
    }

    /// The caller's state of the pending call `id` (finished or not).
    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        self.pending.get_mut(&id).map(|p| &mut p.call)
    }

    /// The caller's state of every pending call.
    pub(crate) fn calls_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.pending.values_mut().map(|p| &mut p.call)
    }

    /// Whether an answer for call `id` is acknowledged: the call uses RRA,
    /// whether it is still pending or ended recently.
    pub(crate) fn acknowledges(&self, id: u64) -> bool {
        match self.pending.get(&id) {
            Some(p) => p.rra,
            None => self.recent_rra.contains(&id),
        }
    }

    /// Call `id` needs nothing more from the server: it counts in the
    /// low-water mark from now on. Returns whether the low-water mark
    /// advanced (`id` was the lowest unfinished call); does nothing for a
    /// call that is not pending or already finished.
    pub(crate) fn finish(&mut self, id: u64) -> bool {
        let lowest = self.unfinished.first() == Some(&id);
        if !self.unfinished.remove(&id) {
            return false;
        }
        if let Some(p) = self.pending.get_mut(&id) {
            p.finished = true;
            if p.rra {
                if self.recent_rra_order.len() >= RECENT_RRA {
                    if let Some(old) = self.recent_rra_order.pop_front() {
                        self.recent_rra.remove(&old);
                    }
                }
                self.recent_rra_order.push_back(id);
                self.recent_rra.insert(id);
            }
        }
        lowest
    }

    /// Forgets call `id` (it completed, failed or was dropped), finishing
    /// it first if it was not; returns whether the low-water mark advanced.
    pub(crate) fn end(&mut self, id: u64) -> bool {
        let advanced = self.finish(id);
        self.pending.remove(&id);
        advanced
    }

    /// Feeds the ids, the pending calls (each through `call`) and the
    /// remembered RRA ids into `h`: for the protocol model checker.
    #[cfg(test)]
    pub(crate) fn fingerprint<H: std::hash::Hasher>(&self, h: &mut H, call: impl Fn(&T, &mut H)) {
        use std::hash::Hash;
        self.next_id.hash(h);
        self.unfinished.hash(h);
        let mut ids: Vec<&u64> = self.pending.keys().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(p) = self.pending.get(id) else {
                continue;
            };
            (id, p.rra, p.finished).hash(h);
            call(&p.call, h);
        }
        let mut recent: Vec<&u64> = self.recent_rra.iter().collect();
        recent.sort_unstable();
        recent.hash(h);
    }
}
