//! The scheduler shared by the proxy and the in-memory network: applies one
//! [`Decision`] per datagram and releases datagrams when they are due.
//!
//! It does no I/O and reads no clock: the caller passes `now`, pushes what
//! arrives and pops what is ready, and sleeps until [`Shaper::next_deadline`].
//!
//! A blackhole ([`Shaper::set_blackhole`]) sits in front of the decisions:
//! while it is on, what arrives is dropped without a decision being drawn
//! (so the generator's sequence resumes where it was once it is off), and
//! what falls due in the queue is dropped instead of released: nothing
//! leaves, as across a cut link.

use super::{Decider, FaultConfig, FaultCounters, MAX_DELAY};
use crate::counter::bump;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;
use tokio::time::Instant;

/// One queued datagram; the heap pops the earliest `(at, seq)` first.
#[derive(Debug)]
struct Slot<T> {
    at: Instant,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Slot<T> {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.seq == other.seq
    }
}

impl<T> Eq for Slot<T> {}

impl<T> PartialOrd for Slot<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Slot<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap, we want the earliest first.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A datagram held back for reordering (with its duplicate, if any).
#[derive(Debug)]
struct Held<T> {
    copies: Vec<(Instant, T)>,
    /// When it is released even if nothing overtook it.
    deadline: Instant,
}

/// Decides and schedules the datagrams of one direction or link.
#[derive(Debug)]
pub(crate) struct Shaper<T> {
    decider: Decider,
    queue: BinaryHeap<Slot<T>>,
    held: Option<Held<T>>,
    seq: u64,
    limit: usize,
    counters: Arc<FaultCounters>,
    blackhole: bool,
}

impl<T: Clone> Shaper<T> {
    /// A shaper applying `config`, queueing at most `limit` datagrams.
    pub(crate) fn new(
        config: FaultConfig,
        limit: usize,
        counters: Arc<FaultCounters>,
    ) -> Shaper<T> {
        Shaper {
            decider: Decider::new(config),
            queue: BinaryHeap::new(),
            held: None,
            seq: 0,
            limit,
            counters,
            blackhole: false,
        }
    }

    /// Turns the blackhole on or off (see the module docs).
    pub(crate) fn set_blackhole(&mut self, on: bool) {
        self.blackhole = on;
    }

    /// Drops, counted, everything due at `now` while the blackhole is on.
    fn swallow_due(&mut self, now: Instant) {
        if !self.blackhole {
            return;
        }
        while self.queue.peek().is_some_and(|s| s.at <= now) {
            self.queue.pop();
            bump(&self.counters.dropped);
            bump(&self.counters.blackholed);
        }
    }

    /// Replaces the configuration and restarts the generator from its seed;
    /// queued datagrams keep their schedule.
    pub(crate) fn set_config(&mut self, config: FaultConfig) {
        self.decider = Decider::new(config);
    }

    /// Datagrams waiting (held ones included).
    pub(crate) fn len(&self) -> usize {
        self.queue.len() + self.held.as_ref().map_or(0, |h| h.copies.len())
    }

    /// Forgets every queued datagram (the receiver went away).
    pub(crate) fn clear(&mut self) {
        self.queue.clear();
        self.held = None;
    }

    fn schedule(&mut self, at: Instant, item: T) {
        if self.len() >= self.limit {
            bump(&self.counters.overflow);
            return;
        }
        self.seq += 1;
        self.queue.push(Slot {
            at,
            seq: self.seq,
            item,
        });
    }

    /// Releases a held datagram whose wait is over, un-overtaken.
    fn expire_held(&mut self, now: Instant) {
        if self.held.as_ref().is_some_and(|h| h.deadline <= now) {
            if let Some(held) = self.held.take() {
                for (at, item) in held.copies {
                    self.schedule(at, item);
                }
            }
        }
    }

    /// Takes one arriving datagram: drops, duplicates, delays or holds it.
    pub(crate) fn push(&mut self, now: Instant, item: T) {
        let c = &self.counters;
        bump(&c.received);
        if self.blackhole {
            bump(&c.dropped);
            bump(&c.blackholed);
            return;
        }
        let d = self.decider.decide();
        if d.drop {
            bump(&c.dropped);
            return;
        }
        if d.duplicate {
            bump(&c.duplicated);
        }
        if !d.delay.is_zero() {
            bump(&c.delayed);
        }
        self.expire_held(now);
        let at = now + d.delay;
        let copy = d.duplicate.then(|| (now + d.copy_delay, item.clone()));
        if d.reorder && self.held.is_none() {
            if self.len() >= self.limit {
                bump(&self.counters.overflow);
                if copy.is_some() {
                    bump(&self.counters.overflow);
                }
                return;
            }
            let hold = self.decider.config().reorder_hold.min(MAX_DELAY);
            let mut copies = vec![(at, item)];
            copies.extend(copy);
            self.held = Some(Held {
                copies,
                deadline: at + hold,
            });
            return;
        }
        self.schedule(at, item);
        if let Some((copy_at, copy)) = copy {
            self.schedule(copy_at, copy);
        }
        // This datagram overtakes the held one, which follows right after it.
        if let Some(held) = self.held.take() {
            bump(&self.counters.reordered);
            for (held_at, item) in held.copies {
                self.schedule(held_at.max(at), item);
            }
        }
    }

    /// The next datagram due at `now`, if any.
    pub(crate) fn pop_ready(&mut self, now: Instant) -> Option<T> {
        self.expire_held(now);
        self.swallow_due(now);
        if self.queue.peek().is_some_and(|s| s.at <= now) {
            let slot = self.queue.pop()?;
            bump(&self.counters.forwarded);
            return Some(slot.item);
        }
        None
    }

    /// When the earliest datagram due at `now` became due (to pick between
    /// several shapers), if any is.
    pub(crate) fn ready_at(&mut self, now: Instant) -> Option<(Instant, u64)> {
        self.expire_held(now);
        self.swallow_due(now);
        self.queue
            .peek()
            .filter(|s| s.at <= now)
            .map(|s| (s.at, s.seq))
    }

    /// When something next becomes due (a queued datagram or the end of a
    /// hold), if anything is waiting.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let queued = self.queue.peek().map(|s| s.at);
        let held = self.held.as_ref().map(|h| h.deadline);
        match (queued, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::Delay;
    use std::time::Duration;

    fn shaper(config: FaultConfig) -> (Shaper<u32>, Arc<FaultCounters>) {
        let counters = Arc::new(FaultCounters::default());
        (Shaper::new(config, 100, counters.clone()), counters)
    }

    fn drain(s: &mut Shaper<u32>, now: Instant) -> Vec<u32> {
        std::iter::from_fn(|| s.pop_ready(now)).collect()
    }

    #[test]
    fn no_faults_keeps_order() {
        let (mut s, c) = shaper(FaultConfig::none());
        let now = Instant::now();
        for i in 0..10 {
            s.push(now, i);
        }
        assert_eq!(drain(&mut s, now), (0..10).collect::<Vec<_>>());
        assert_eq!(c.snapshot().forwarded, 10);
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn reorder_lets_the_next_datagram_overtake() {
        let (mut s, c) = shaper(FaultConfig::seeded(1).reorder(1.0));
        let now = Instant::now();
        s.push(now, 1); // held
        s.push(now, 2); // cannot be held (slot taken): overtakes 1
        assert_eq!(drain(&mut s, now), vec![2, 1]);
        assert_eq!(c.snapshot().reordered, 1);
    }

    #[test]
    fn held_datagram_is_released_after_the_hold() {
        let hold = Duration::from_millis(10);
        let (mut s, c) = shaper(FaultConfig::seeded(1).reorder(1.0).reorder_hold(hold));
        let now = Instant::now();
        s.push(now, 1);
        assert_eq!(s.pop_ready(now), None);
        assert_eq!(s.next_deadline(), Some(now + hold));
        assert_eq!(s.pop_ready(now + hold), Some(1));
        assert_eq!(c.snapshot().reordered, 0);
    }

    #[test]
    fn delay_holds_until_due_and_overflow_is_counted() {
        let d = Duration::from_millis(5);
        let counters = Arc::new(FaultCounters::default());
        let mut s = Shaper::new(
            FaultConfig::seeded(3).delay(Delay::fixed(d)),
            2,
            counters.clone(),
        );
        let now = Instant::now();
        for i in 0..3 {
            s.push(now, i);
        }
        assert_eq!(s.pop_ready(now), None);
        assert_eq!(drain(&mut s, now + d), vec![0, 1]);
        let stats = counters.snapshot();
        assert_eq!((stats.delayed, stats.overflow, stats.forwarded), (3, 1, 2));
    }

    #[test]
    fn blackhole_drops_arrivals_and_due_datagrams_and_draws_nothing() {
        let d = Duration::from_millis(5);
        let config = FaultConfig::seeded(9).loss(0.5).delay(Delay::fixed(d));
        let (mut s, c) = shaper(config.clone());
        let now = Instant::now();
        s.push(now, 1); // queued (or lost) before the blackhole
        let queued = s.len() as u64;
        s.set_blackhole(true);
        for i in 2..12 {
            s.push(now, i);
        }
        assert_eq!(s.len() as u64, queued, "nothing new is queued");
        assert_eq!(drain(&mut s, now + d), Vec::<u32>::new());
        let stats = c.snapshot();
        assert_eq!(stats.received, 11);
        assert_eq!(stats.blackholed, 10 + queued, "arrivals and the due one");
        assert_eq!(stats.forwarded, 0);
        assert_eq!(s.next_deadline(), None);

        // Off again: the decisions go on from the second draw, as if the
        // blackholed datagrams had never come.
        s.set_blackhole(false);
        let mut reference = Decider::new(config);
        reference.decide();
        let expected = reference.decide();
        s.push(now + d, 99);
        assert_eq!(s.len(), usize::from(!expected.drop));
        assert_eq!(
            drain(&mut s, now + d + d),
            if expected.drop { vec![] } else { vec![99] }
        );
    }

    #[test]
    fn same_seed_same_decisions() {
        let config = FaultConfig::seeded(42)
            .loss(0.3)
            .duplicate(0.2)
            .reorder(0.1);
        let mut a = Decider::new(config.clone());
        let mut b = Decider::new(config.clone());
        let mut c = Decider::new(config.seed(43));
        let da: Vec<_> = (0..200).map(|_| a.decide()).collect();
        let db: Vec<_> = (0..200).map(|_| b.decide()).collect();
        let dc: Vec<_> = (0..200).map(|_| c.decide()).collect();
        assert_eq!(da, db);
        assert_ne!(da, dc);
    }
}
