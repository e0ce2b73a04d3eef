//! Maekawa's voting sets, with the inquire/relinquish extension that
//! avoids deadlock (Sanders' correction, as in Singhal's survey).
//!
//! Every peer i has a voting set S_i ([`voting_sets`]); any two sets share
//! a peer. Each peer is a *voter* with one vote, and a *candidate* that
//! needs the vote of every member of its set:
//!
//! - The candidate sends REQUEST (Lamport timestamp) to its set.
//! - A voter that has not voted votes for it (VOTE). Otherwise it queues
//!   the request; if the request goes before (timestamp, id) the one it
//!   voted for and every queued one, it sends INQUIRE to the candidate it
//!   voted for (once per vote); every queued request that does not go
//!   first is told FAILED (once).
//! - A candidate that is asked (INQUIRE) gives the vote back
//!   (RELINQUISH) if it knows it cannot win now (it was told FAILED, or
//!   has given a vote back that it has not got again); otherwise it keeps
//!   the inquiry until it is told FAILED (then gives the vote back) or
//!   enters (then its RELEASE answers it).
//! - A voter given its vote back queues the candidate again and votes for
//!   the first queued request; on RELEASE it votes for the first queued.
//!
//! Without contention an entry costs 3(K-1) messages (request, vote,
//! release to every other member of a set of K; a peer's own vote is a
//! function call); with contention FAILED, INQUIRE and RELINQUISH add up
//! to about 2(K-1) more. Synchronisation delay: two messages (the release
//! to the shared voter, its vote to the next).
//!
//! The algorithm assumes FIFO channels, and a vote and an inquiry about it
//! must not be reordered: an event's messages are queued on their links
//! before the core is unlocked, so each link holds them in the order the
//! core made them; messages to each peer go one at a time, in that
//! order, each a call (`Maekawa.Deliver`) that is retransmitted
//! until delivered. [`MaekawaCore`] is the algorithm without I/O.

use super::{DmutexError, Meter};
use crate::clock::logical::Lamport;
use crate::proto::dmutex::v1 as pb;
use crate::proto::dmutex::v1::VoteKind;
use rpc_core::{CallContext, Client, Status};
use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard, OnceLock};
use tokio::sync::{mpsc, oneshot, watch};

/// Voting sets for `n` peers: set `i` contains `i`, and any two sets
/// share a peer. Of two constructions, the one with the smaller largest
/// set: a grid of ceil(sqrt n) columns (a peer's row and column, the
/// missing cells of the last row standing for the first row's peers;
/// about 2 sqrt n each), or the majority of floor(n/2) + 1 consecutive
/// peers (smaller for n up to 9).
pub fn voting_sets(n: usize) -> Vec<Vec<u32>> {
    let grid = grid_sets(n);
    let majority = majority_sets(n);
    let largest = |s: &[Vec<u32>]| s.iter().map(Vec::len).max().unwrap_or(0);
    if largest(&grid) < largest(&majority) {
        grid
    } else {
        majority
    }
}

fn id(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

fn majority_sets(n: usize) -> Vec<Vec<u32>> {
    let k = n / 2 + 1;
    (0..n)
        .map(|i| {
            let mut s: Vec<u32> = (0..k).map(|j| id((i + j) % n)).collect();
            s.sort_unstable();
            s
        })
        .collect()
}

fn grid_sets(n: usize) -> Vec<Vec<u32>> {
    if n == 0 {
        return Vec::new();
    }
    let cols = (1..=n).find(|c| c * c >= n).unwrap_or(n);
    let rows = n.div_ceil(cols);
    // A cell past the last peer stands for the first row's peer of its
    // column, so that row r and column c always meet in a peer.
    let cell = |r: usize, c: usize| if r * cols + c < n { r * cols + c } else { c };
    (0..n)
        .map(|i| {
            let (r, c) = (i / cols, i % cols);
            let mut s: BTreeSet<u32> = (0..cols).map(|cc| id(cell(r, cc))).collect();
            s.extend((0..rows).map(|rr| id(cell(rr, c))));
            s.into_iter().collect()
        })
        .collect()
}

/// A request: (Lamport timestamp, candidate). Earlier goes first.
pub type Request = (u64, u32);

/// A message for another peer (or for oneself), about `request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// The receiver.
    pub to: u32,
    /// What it is.
    pub kind: VoteKind,
    /// The request it is about.
    pub request: Request,
}

/// One peer's voter and candidate, without I/O: each event returns the
/// messages to send (those to itself already handled).
#[derive(Debug, Clone)]
pub struct MaekawaCore {
    id: u32,
    set: Vec<u32>,
    // The voter.
    voted: Option<Request>,
    queue: BTreeSet<Request>,
    inquired: bool,
    failed_sent: HashSet<Request>,
    // The candidate.
    mine: Option<u64>,
    votes: BTreeSet<u32>,
    failed: BTreeSet<u32>,
    yielded: BTreeSet<u32>,
    inquiries: BTreeSet<u32>,
    inside: bool,
}

/// Bound on the messages to oneself handled for one event (each event
/// makes a few; this is far above).
const LOCAL_STEPS: usize = 10_000;

impl MaekawaCore {
    /// Peer `id` with voting set `set` (which should contain `id`).
    pub fn new(id: u32, set: Vec<u32>) -> MaekawaCore {
        MaekawaCore {
            id,
            set,
            voted: None,
            queue: BTreeSet::new(),
            inquired: false,
            failed_sent: HashSet::new(),
            mine: None,
            votes: BTreeSet::new(),
            failed: BTreeSet::new(),
            yielded: BTreeSet::new(),
            inquiries: BTreeSet::new(),
            inside: false,
        }
    }

    /// Its voting set.
    pub fn set(&self) -> &[u32] {
        &self.set
    }

    /// Whether it has every vote of its set (it may enter).
    pub fn may_enter(&self) -> bool {
        self.mine.is_some() && self.votes.len() == self.set.len()
    }

    /// Whether it is inside.
    pub fn inside(&self) -> bool {
        self.inside
    }

    /// Asks for the critical section with timestamp `ts`.
    pub fn request(&mut self, ts: u64) -> Vec<Message> {
        self.mine = Some(ts);
        self.votes.clear();
        self.failed.clear();
        self.yielded.clear();
        self.inquiries.clear();
        self.tell_set(VoteKind::Request, ts)
    }

    /// `kind` about this peer's request `ts` to every member of its set.
    fn tell_set(&mut self, kind: VoteKind, ts: u64) -> Vec<Message> {
        let out = self
            .set
            .iter()
            .map(|&to| Message {
                to,
                kind,
                request: (ts, self.id),
            })
            .collect();
        self.settle(out)
    }

    /// Enters (when [`MaekawaCore::may_enter`]).
    pub fn enter(&mut self) -> bool {
        if self.may_enter() {
            self.inside = true;
            self.inquiries.clear();
        }
        self.inside
    }

    /// Leaves the critical section: RELEASE to the set.
    pub fn release(&mut self) -> Vec<Message> {
        let Some(ts) = self.mine.take() else {
            return Vec::new();
        };
        self.inside = false;
        self.votes.clear();
        self.inquiries.clear();
        self.tell_set(VoteKind::Release, ts)
    }

    /// Handles a message from peer `from`.
    pub fn receive(&mut self, from: u32, kind: VoteKind, request: Request) -> Vec<Message> {
        let mut out = Vec::new();
        self.on(from, kind, request, &mut out);
        self.settle(out)
    }

    /// Handles the messages to itself (in order, with those they make);
    /// returns the others, in the order made.
    fn settle(&mut self, out: Vec<Message>) -> Vec<Message> {
        let mut pending: VecDeque<Message> = out.into();
        let mut remote = Vec::new();
        let mut steps = 0;
        while let Some(m) = pending.pop_front() {
            if m.to != self.id {
                remote.push(m);
                continue;
            }
            steps += 1;
            if steps > LOCAL_STEPS {
                tracing::error!(id = self.id, "maekawa: too many messages to itself");
                break;
            }
            let mut more = Vec::new();
            self.on(self.id, m.kind, m.request, &mut more);
            pending.extend(more);
        }
        remote
    }

    fn on(&mut self, from: u32, kind: VoteKind, request: Request, out: &mut Vec<Message>) {
        match kind {
            VoteKind::Request => self.on_request(request, out),
            VoteKind::Release => self.on_release(request, out),
            VoteKind::Relinquish => self.on_relinquish(request, out),
            VoteKind::Vote => self.on_vote(from, request),
            VoteKind::Failed => self.on_failed(from, request, out),
            VoteKind::Inquire => self.on_inquire(from, request, out),
            VoteKind::Unspecified => {}
        }
    }

    // The voter.

    fn vote(&mut self, request: Request, out: &mut Vec<Message>) {
        self.voted = Some(request);
        self.inquired = false;
        self.failed_sent.remove(&request);
        out.push(Message {
            to: request.1,
            kind: VoteKind::Vote,
            request,
        });
    }

    /// Every queued request that does not go first is told FAILED (once);
    /// the candidate voted for is asked (once) when a queued request goes
    /// before it.
    fn arbitrate(&mut self, out: &mut Vec<Message>) {
        let Some(voted) = self.voted else { return };
        let best = self.queue.first().copied();
        if let Some(best) = best {
            if best < voted && !self.inquired {
                self.inquired = true;
                out.push(Message {
                    to: voted.1,
                    kind: VoteKind::Inquire,
                    request: voted,
                });
            }
        }
        for &q in &self.queue {
            let goes_first = Some(q) == best && q < voted;
            if !goes_first && self.failed_sent.insert(q) {
                out.push(Message {
                    to: q.1,
                    kind: VoteKind::Failed,
                    request: q,
                });
            }
        }
    }

    fn on_request(&mut self, request: Request, out: &mut Vec<Message>) {
        if self.voted == Some(request) || self.queue.contains(&request) {
            return;
        }
        // A newer request of a candidate replaces its older ones.
        self.queue.retain(|q| q.1 != request.1);
        if self.voted.is_none() {
            self.vote(request, out);
        } else {
            self.queue.insert(request);
            self.arbitrate(out);
        }
    }

    fn next_vote(&mut self, out: &mut Vec<Message>) {
        self.voted = None;
        self.inquired = false;
        if let Some(next) = self.queue.pop_first() {
            self.vote(next, out);
            self.arbitrate(out);
        }
    }

    fn on_relinquish(&mut self, request: Request, out: &mut Vec<Message>) {
        if self.voted != Some(request) {
            return;
        }
        self.queue.insert(request);
        // It knows that it lacks this vote: no FAILED for it.
        self.failed_sent.insert(request);
        self.next_vote(out);
    }

    fn on_release(&mut self, request: Request, out: &mut Vec<Message>) {
        self.queue.remove(&request);
        self.failed_sent.remove(&request);
        if self.voted == Some(request) {
            self.next_vote(out);
        }
    }

    // The candidate.

    fn current(&self, request: Request) -> bool {
        request.1 == self.id && self.mine == Some(request.0)
    }

    fn on_vote(&mut self, from: u32, request: Request) {
        if !self.current(request) {
            tracing::warn!(
                id = self.id,
                from,
                ?request,
                "maekawa: a vote for no current request"
            );
            return;
        }
        self.votes.insert(from);
        self.failed.remove(&from);
        self.yielded.remove(&from);
    }

    fn relinquish(&mut self, to: u32, request: Request, out: &mut Vec<Message>) {
        self.votes.remove(&to);
        self.inquiries.remove(&to);
        self.yielded.insert(to);
        out.push(Message {
            to,
            kind: VoteKind::Relinquish,
            request,
        });
    }

    fn on_failed(&mut self, from: u32, request: Request, out: &mut Vec<Message>) {
        if !self.current(request) || self.inside {
            return;
        }
        self.failed.insert(from);
        let asked: Vec<u32> = self.inquiries.iter().copied().collect();
        for to in asked {
            self.relinquish(to, request, out);
        }
    }

    fn on_inquire(&mut self, from: u32, request: Request, out: &mut Vec<Message>) {
        if !self.current(request) || self.inside || !self.votes.contains(&from) {
            return;
        }
        if self.failed.is_empty() && self.yielded.is_empty() {
            self.inquiries.insert(from);
        } else {
            self.relinquish(from, request, out);
        }
    }
}

/// How long a candidate waits without any change before it logs its state.
const STILL_WAITING: std::time::Duration = std::time::Duration::from_secs(10);

/// A message on a link, and who waits for its delivery.
type Outgoing = (pb::VoteMessage, Option<oneshot::Sender<()>>);

/// A peer of Maekawa's algorithm (see the module docs).
#[derive(Debug)]
pub struct MaekawaPeer {
    id: u32,
    n: usize,
    pub(super) meter: Meter,
    clock: Lamport,
    core: Mutex<MaekawaCore>,
    /// Bumped on every change of the core.
    changed: watch::Sender<u64>,
    /// One ordered queue per peer (none for itself); a message may come
    /// with a sender to be told when it is delivered. The queues exist
    /// from the start: a message made before [`MaekawaPeer::connect`] (a
    /// vote for a request that arrived from a peer that started earlier)
    /// waits in its queue and goes once connected, instead of being lost
    /// with the voter's state already changed (which deadlocked peers in
    /// separate processes).
    links: Vec<Option<mpsc::UnboundedSender<Outgoing>>>,
    /// The queues' receiving ends, until `connect` starts their senders.
    unsent: Mutex<Option<Vec<Option<mpsc::UnboundedReceiver<Outgoing>>>>>,
    /// Set by `connect`.
    connected: OnceLock<()>,
    /// The first message that could not be delivered.
    broken: watch::Sender<Option<DmutexError>>,
}

impl MaekawaPeer {
    pub(super) fn new(id: u32, n: usize) -> MaekawaPeer {
        let set = voting_sets(n).get(id as usize).cloned().unwrap_or_default();
        let (links, unsent) = (0..n)
            .map(|to| {
                if to == id as usize {
                    (None, None)
                } else {
                    let (tx, rx) = mpsc::unbounded_channel::<Outgoing>();
                    (Some(tx), Some(rx))
                }
            })
            .unzip();
        MaekawaPeer {
            id,
            n,
            meter: Meter::default(),
            clock: Lamport::new(),
            core: Mutex::new(MaekawaCore::new(id, set)),
            changed: watch::Sender::new(0),
            links,
            unsent: Mutex::new(Some(unsent)),
            connected: OnceLock::new(),
            broken: watch::Sender::new(None),
        }
    }

    fn core(&self) -> MutexGuard<'_, MaekawaCore> {
        // Every event leaves the core consistent before anything can panic.
        self.core
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn connect(&self, clients: Vec<Client>) -> Result<(), DmutexError> {
        if clients.len() != self.n {
            return Err(DmutexError::GroupSize(clients.len()));
        }
        let Some(unsent) = self
            .unsent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        else {
            return Err(DmutexError::State("the peer is already connected"));
        };
        for (to, (client, rx)) in clients.into_iter().zip(unsent).enumerate() {
            let Some(mut rx) = rx else { continue };
            let stub = pb::MaekawaClient::new(client);
            let broken = self.broken.clone();
            let to = id(to);
            tokio::spawn(async move {
                // One message at a time, in order: the next goes when the
                // previous is delivered.
                while let Some((m, delivered)) = rx.recv().await {
                    match stub.deliver(m).await {
                        Ok(_) => {
                            if let Some(d) = delivered {
                                let _ = d.send(());
                            }
                        }
                        Err(e) => {
                            tracing::warn!(to, error = %e, "maekawa: a message was not delivered");
                            broken.send_if_modified(|b| {
                                if b.is_some() {
                                    return false;
                                }
                                *b = Some(DmutexError::Peer {
                                    peer: to,
                                    detail: e.to_string(),
                                });
                                true
                            });
                        }
                    }
                }
            });
        }
        let _ = self.connected.set(());
        Ok(())
    }

    /// Queues `out`, the messages of one event, on the links (in order)
    /// and counts them; returns receivers told when each is delivered.
    ///
    /// Takes the core's guard to show that it is still locked: the
    /// messages of two events handled at once (two deliveries, or a
    /// delivery and [`MaekawaPeer::exit`]) must reach each link in the
    /// order the core made them. Queued after unlocking, a VOTE and the
    /// INQUIRE about it could swap places on their link; the candidate
    /// then ignored the inquiry (it had no such vote), the voter never
    /// asked again, and the peers waited forever.
    fn send(
        &self,
        _locked: &MutexGuard<'_, MaekawaCore>,
        out: Vec<Message>,
    ) -> Vec<oneshot::Receiver<()>> {
        let mut delivered = Vec::new();
        for m in out {
            let Some(Some(link)) = self.links.get(m.to as usize) else {
                continue;
            };
            self.meter.sent(1);
            let message = pb::VoteMessage {
                from: self.id,
                kind: m.kind as i32,
                timestamp: m.request.0,
                candidate: m.request.1,
            };
            let (tx, rx) = oneshot::channel();
            delivered.push(rx);
            if link.send((message, Some(tx))).is_err() {
                tracing::warn!(to = m.to, "maekawa: the link is closed");
            }
        }
        self.changed.send_modify(|v| *v += 1);
        delivered
    }

    fn broken(&self) -> Option<DmutexError> {
        match &*self.broken.borrow() {
            Some(DmutexError::Peer { peer, detail }) => Some(DmutexError::Peer {
                peer: *peer,
                detail: detail.clone(),
            }),
            _ => None,
        }
    }

    pub(super) async fn enter(&self) -> Result<(), DmutexError> {
        if self.connected.get().is_none() {
            return Err(DmutexError::State("the peer is not connected"));
        }
        {
            let mut core = self.core();
            if core.mine.is_some() {
                return Err(DmutexError::State("already inside or asking"));
            }
            let ts = self.clock.tick();
            let out = core.request(ts);
            let _ = self.send(&core, out);
        }
        let mut changed = self.changed.subscribe();
        let mut broken = self.broken.subscribe();
        loop {
            if self.core().enter() {
                break;
            }
            if let Some(e) = self.broken() {
                return Err(e);
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return Err(DmutexError::State("the peer stopped")) },
                r = broken.changed() => if r.is_err() { return Err(DmutexError::State("the peer stopped")) },
                // Nothing changed for a long while: say where it stands,
                // so that a wait that never ends can be read in the log.
                () = tokio::time::sleep(STILL_WAITING) => {
                    tracing::warn!(id = self.id, core = ?*self.core(), "maekawa: still waiting for votes");
                }
            }
        }
        self.meter.entered();
        Ok(())
    }

    /// Leaves; returns when every RELEASE is delivered.
    pub(super) async fn exit(&self) -> Result<(), DmutexError> {
        let delivered = {
            let mut core = self.core();
            if !core.inside() {
                return Err(DmutexError::State("not inside"));
            }
            let out = core.release();
            self.send(&core, out)
        };
        for delivered in delivered {
            if delivered.await.is_err() {
                return Err(self
                    .broken()
                    .unwrap_or(DmutexError::State("the peer stopped")));
            }
        }
        Ok(())
    }

    /// Handles one delivered message (the body of `Maekawa.Deliver`).
    fn handle(&self, m: &pb::VoteMessage) -> Result<(), Status> {
        let kind = VoteKind::try_from(m.kind).unwrap_or(VoteKind::Unspecified);
        if kind == VoteKind::Unspecified
            || m.from as usize >= self.n
            || m.candidate as usize >= self.n
        {
            return Err(Status::invalid_argument(format!(
                "a message of kind {} from peer {} about peer {} in a group of {}",
                m.kind, m.from, m.candidate, self.n
            )));
        }
        if kind == VoteKind::Request {
            self.clock.observe(m.timestamp);
        }
        let mut core = self.core();
        let out = core.receive(m.from, kind, (m.timestamp, m.candidate));
        let _ = self.send(&core, out);
        Ok(())
    }
}

impl pb::Maekawa for MaekawaPeer {
    async fn deliver(&self, _ctx: CallContext, m: pb::VoteMessage) -> Result<pb::Ack, Status> {
        self.handle(&m)?;
        Ok(pb::Ack { from: self.id })
    }
}

#[cfg(test)]
mod tests;
