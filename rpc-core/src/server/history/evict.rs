//! What leaves the history, and when: the age sweep, the per-session
//! and global caps, forgetting a session under `max_sessions` (with its
//! tombstone), and keeping the lazy queues compact. Every removal updates
//! the global and per-source counts here.

use super::session::{Record, Removed, Session, State, Tally};
use super::History;
use std::time::Instant;

impl History {
    /// Evicts completed entries older than the ttl and forgets empty
    /// sessions idle longer than the ttl.
    pub fn sweep(&mut self, now: Instant) {
        let ttl = self.config.ttl;
        while let Some(rec) = self.order.front().copied() {
            if now.saturating_duration_since(rec.stored) < ttl {
                break;
            }
            self.order.pop_front();
            match self.evict_record(&rec, now) {
                Some(Removed::Marker) => self.evicted.markers += 1,
                Some(_) => self.evicted.age += 1,
                None => {}
            }
        }
        let before = self.sessions.len();
        let sources = &mut self.sources;
        self.sessions.retain(|_, s| {
            let idle = s.is_empty() && now.saturating_duration_since(s.last_active) >= ttl;
            if idle {
                sources.release(s.slot, 1, 0);
            }
            !idle
        });
        self.sessions_forgotten += (before - self.sessions.len()) as u64;
        self.expire_tombstones(now);
        self.maybe_compact();
    }

    /// Drops the tombstones older than the ttl.
    fn expire_tombstones(&mut self, now: Instant) {
        let ttl = self.config.ttl;
        while let Some(&(made, id)) = self.tombstone_order.front() {
            if now.saturating_duration_since(made) < ttl {
                break;
            }
            self.tombstone_order.pop_front();
            if self.tombstones.get(&id).is_some_and(|&(_, t, _)| t == made) {
                self.tombstones.remove(&id);
            }
        }
    }

    /// Whether one more session can be forgotten (its tombstone has room),
    /// after dropping the tombstones older than the ttl.
    pub(super) fn tombstone_room(&mut self, now: Instant) -> bool {
        if self.tombstones.len() >= self.config.max_tombstones.max(1) {
            self.expire_tombstones(now);
        }
        self.tombstones.len() < self.config.max_tombstones.max(1)
    }

    /// Removes the entry `rec` points to if it is still that completed
    /// entry or marker; raises the session's max evicted id. Returns what
    /// it removed.
    pub(super) fn evict_record(&mut self, rec: &Record, now: Instant) -> Option<Removed> {
        let s = self.sessions.get_mut(&rec.session)?;
        match s.entries.get(&rec.request) {
            Some(State::Completed { seq, .. } | State::Acked { seq }) if *seq == rec.seq => {}
            _ => return None,
        }
        let removed = s.remove(rec.request)?;
        s.max_evicted_id = s.max_evicted_id.max(rec.request);
        // Keep the session (and so "outcome unknown" for this id) for
        // another ttl after the eviction.
        s.last_active = s.last_active.max(now);
        let slot = s.slot;
        self.account_removed(slot, removed);
        Some(removed)
    }

    /// Updates the global counts, and those of the source in `slot`, for
    /// the entries one of its sessions removed.
    pub(super) fn account_tally(&mut self, slot: usize, tally: Tally) {
        self.sources.release(slot, 0, tally.bytes);
        self.in_progress -= tally.running;
        self.completed -= tally.completed;
        self.acked -= tally.acked;
        self.bytes -= tally.bytes;
    }

    /// Updates the global counts for an entry a session removed.
    pub(super) fn account_removed(&mut self, slot: usize, removed: Removed) {
        let mut tally = Tally::default();
        tally.add(removed);
        self.account_tally(slot, tally);
    }

    pub(super) fn enforce_caps(&mut self, session: u64, now: Instant) {
        // Per session: the oldest (lowest id) completed entry goes first.
        let mut removed = Tally::default();
        let mut slot = usize::MAX;
        if let Some(s) = self.sessions.get_mut(&session) {
            slot = s.slot;
            while s.done() > self.config.max_per_session {
                let victim = s
                    .entries
                    .iter()
                    .find(|(_, st)| !matches!(st, State::InProgress))
                    .map(|(&id, _)| id);
                let Some(id) = victim else { break };
                let Some(r) = s.remove(id) else { break };
                removed.add(r);
                s.max_evicted_id = s.max_evicted_id.max(id);
                s.last_active = s.last_active.max(now);
            }
        }
        self.evicted.session_cap += removed.count;
        self.evicted.markers += removed.acked as u64;
        self.account_tally(slot, removed);
        // Globally: the oldest stored entry goes first.
        while self.over_global_cap() {
            let Some(rec) = self.order.pop_front() else {
                break;
            };
            match self.evict_record(&rec, now) {
                Some(Removed::Marker) => self.evicted.markers += 1,
                Some(_) => self.evicted.global_cap += 1,
                None => {}
            }
        }
    }

    /// Forgets the least recently active session that has no running
    /// request. Returns whether one was forgotten.
    pub(super) fn forget_one_session(&mut self, now: Instant) -> bool {
        if !self.tombstone_room(now) {
            tracing::debug!(
                tombstones = self.tombstones.len(),
                "no session forgotten: every tombstone is in use"
            );
            return false;
        }
        // Each live session has exactly one live record; a session with a
        // running request is re-queued once, so this visits each at most twice.
        let mut budget = self.activity.len() + self.sessions.len();
        while budget > 0 {
            budget -= 1;
            let Some((seq, id)) = self.activity.pop_front() else {
                break;
            };
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            if s.touch_seq != seq {
                continue;
            }
            if s.in_progress > 0 {
                let touch = self.next_seq;
                self.next_seq += 1;
                s.touch_seq = touch;
                self.activity.push_back((touch, id));
                continue;
            }
            if let Some(s) = self.sessions.remove(&id) {
                self.forgot(id, &s, now);
            }
            return true;
        }
        // Sessions created without a registration record (none today) or an
        // exhausted queue: fall back to any empty session.
        let victim = self
            .sessions
            .iter()
            .find(|(_, s)| s.in_progress == 0)
            .map(|(&id, _)| id);
        match victim.and_then(|id| self.sessions.remove(&id).map(|s| (id, s))) {
            Some((id, s)) => {
                self.forgot(id, &s, now);
                true
            }
            None => false,
        }
    }

    /// Accounts for session `id`, just forgotten under `max_sessions`, and
    /// leaves a tombstone with the highest id it used, for one ttl.
    pub(super) fn forgot(&mut self, id: u64, s: &Session, now: Instant) {
        self.completed -= s.completed;
        self.acked -= s.acked;
        self.bytes -= s.bytes;
        self.sources.release(s.slot, 1, s.bytes);
        self.evicted.session_limit += s.completed as u64;
        self.sessions_evicted += 1;
        // Never more than `max_tombstones`: `forget_one_session` checked
        // for room (a tombstone dropped early would let a late copy of one
        // of this session's requests run again).
        debug_assert!(self.tombstones.len() < self.config.max_tombstones.max(1));
        self.tombstones
            .insert(id, (s.max_seen(), now, s.owner.clone()));
        self.tombstone_order.push_back((now, id));
    }

    /// Keeps the lazy queues within a constant factor of the live data.
    pub(super) fn maybe_compact(&mut self) {
        if self.order.len() > 2 * (self.completed + self.acked) + 64 {
            let sessions = &self.sessions;
            self.order.retain(|rec| {
                sessions.get(&rec.session).is_some_and(|s| {
                    matches!(s.entries.get(&rec.request), Some(State::Completed { seq, .. } | State::Acked { seq }) if *seq == rec.seq)
                })
            });
        }
        if self.tombstone_order.len() > 2 * self.tombstones.len() + 64 {
            let tombstones = &self.tombstones;
            self.tombstone_order
                .retain(|(made, id)| tombstones.get(id).is_some_and(|&(_, t, _)| t == *made));
        }
        if self.activity.len() > 2 * self.sessions.len() + 64 {
            let sessions = &self.sessions;
            self.activity
                .retain(|(seq, id)| sessions.get(id).is_some_and(|s| s.touch_seq == *seq));
        }
    }
}
