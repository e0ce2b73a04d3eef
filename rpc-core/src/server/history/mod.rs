//! The reply history: what the server remembers about requests so that a
//! non-idempotent request runs at most once.
//!
//! Entries are keyed by (session id, request id) and are either
//! `InProgress` (the handler is running), `Completed` (the encoded reply
//! datagram, or nothing for a one-way tombstone) or `Acked` (the client
//! acknowledged the reply, which was dropped: only the fact that the id is
//! done is kept). Each session also keeps a *floor* (the largest
//! `ack_up_to` it sent: requests at or below it are stale) and a *max
//! evicted id* (the highest id of an entry dropped by age or by a cap: a
//! request at or below it that is not in the history any more has an
//! unknown outcome).
//!
//! No id that ran is ever taken for new while a copy of it may still be
//! in the network (up to one ttl): it is an entry, at or below the floor,
//! at or below the max evicted id, or, when its whole session was
//! forgotten under `max_sessions`, at or below the highest id of a
//! *tombstone* of that session kept for one ttl.
//!
//! Eviction, every kind counted ([`EvictionCounts`]):
//! - acknowledgement: an explicit ACK drops its entry's reply and leaves an
//!   `Acked` marker until the floor passes it (a late copy of the request
//!   must not run again); `ack_up_to` on any message drops every entry of
//!   the session at or below it; markers right above the floor are folded
//!   into it;
//! - age: completed entries older than [`HistoryConfig::ttl`] (counted
//!   from when the reply was stored), on [`History::sweep`];
//! - per-session cap, global cap: the oldest completed entry goes first;
//! - max sessions: the least recently active session without running
//!   requests is forgotten with all its entries, leaving a tombstone for
//!   one ttl. Tombstones are never dropped earlier: while
//!   [`HistoryConfig::max_tombstones`] are in use, no session is forgotten
//!   and a request that needs a new session is refused.
//!
//! `InProgress` entries are never evicted by age or cap (the engine bounds
//! them by its concurrency limits). A session with no entries that has
//! been idle longer than the ttl is forgotten on the next sweep.
//!
//! Every session belongs to the peer that created it ([`Owner`]): the
//! engine asks [`History::ownership`] before anything else, so that a
//! session id seen on the network is not a bearer token. Sessions and
//! stored bytes are counted per *source* (the owner's host or identity)
//! against [`HistoryConfig::max_sessions_per_source`] and
//! [`HistoryConfig::max_bytes_per_source`]: a flood from one source is
//! refused before it can evict another source's entries.
//!
//! Files: `config.rs` (the limits), `session.rs` (one session's entries
//! and counts), `idmap.rs` (entries by request id), `owner.rs` (whose a
//! session is, quotas per source), `evict.rs` (age, caps, forgetting
//! sessions), and this file (lookup, registration, completion, ACKs).
//!
//! Everything here is synchronous and takes the time as an argument, so it
//! is tested without sockets or timers; the engine holds it in a mutex.

mod config;
mod evict;
mod idmap;
mod owner;
mod session;
#[cfg(test)]
mod tests;

use crate::hash::FastMap;
use bytes::Bytes;
pub use config::{EvictionCounts, HistoryConfig};
use owner::Sources;
pub(crate) use owner::{Owner, Ownership, Peer};
use session::{Record, Session, State, Tally};
use std::collections::VecDeque;
use std::time::Instant;

/// What the history knows about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// At or below the session's floor: the client no longer needs it.
    Stale,
    /// Done, and its reply acknowledged by the client (which has it): a
    /// late copy, to drop.
    Acked,
    /// Finished; the stored reply datagram (`None`: a one-way tombstone).
    Completed(Option<Bytes>),
    /// Still running.
    InProgress,
    /// Not here, but an entry of this session with an id at least this
    /// high was evicted by age or cap: the outcome is unknown.
    Evicted,
    /// Never seen (or forgotten with its session).
    Absent,
}

/// Why a request could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegisterError {
    /// The session table is full of sessions with running requests.
    TooManySessions,
    /// Its source holds [`HistoryConfig::max_sessions_per_source`] sessions.
    SourceSessions,
    /// Its source holds more than [`HistoryConfig::max_bytes_per_source`].
    SourceBytes,
    /// The session id was last used by another peer (its tombstone says
    /// so).
    Foreign,
}

/// The reply history of one server (shared by all its transports).
#[derive(Debug, Clone)]
pub struct History {
    config: HistoryConfig,
    sessions: FastMap<u64, Session>,
    /// Completed entries, oldest first (lazy deletion).
    order: VecDeque<Record>,
    /// Sessions by last registration, least recent first (lazy deletion):
    /// (touch seq, session id).
    activity: VecDeque<(u64, u64)>,
    next_seq: u64,
    completed: usize,
    /// `Acked` markers.
    acked: usize,
    in_progress: usize,
    bytes: usize,
    evicted: EvictionCounts,
    sessions_forgotten: u64,
    sessions_evicted: u64,
    /// Sessions forgotten under `max_sessions` in the last ttl: session id
    /// -> (the highest request id it had used, when it was forgotten, its
    /// owner).
    tombstones: FastMap<u64, (u64, Instant, Owner)>,
    /// Sessions and stored bytes per source (entries with both at zero
    /// are removed).
    sources: Sources,
    /// `tombstones` in the order they were made (lazy deletion).
    tombstone_order: VecDeque<(Instant, u64)>,
}

/// Sizes of the history at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistorySize {
    /// Completed entries (stored replies and one-way tombstones).
    pub completed: usize,
    /// Markers of acknowledged requests (done, reply dropped) above their
    /// session's floor.
    pub acked: usize,
    /// Entries of requests still running.
    pub in_progress: usize,
    /// Sessions remembered.
    pub sessions: usize,
    /// Bytes of stored replies.
    pub bytes: usize,
    /// Tombstones of forgotten sessions.
    pub tombstones: usize,
}

impl History {
    /// An empty history with these limits.
    pub fn new(config: HistoryConfig) -> History {
        History {
            config,
            sessions: FastMap::default(),
            order: VecDeque::new(),
            activity: VecDeque::new(),
            next_seq: 1,
            completed: 0,
            acked: 0,
            in_progress: 0,
            bytes: 0,
            evicted: EvictionCounts::default(),
            sessions_forgotten: 0,
            sessions_evicted: 0,
            tombstones: FastMap::default(),
            tombstone_order: VecDeque::new(),
            sources: Sources::default(),
        }
    }

    /// Whether `session` belongs to `owner`. When it does but is not
    /// verified yet, `proves` says whether this message proves the owner's
    /// address (asked only then: on the hot path the session is verified);
    /// if it does, the session is verified from now on.
    pub(crate) fn ownership(
        &mut self,
        session: u64,
        owner: &Owner,
        proves: &dyn Fn() -> bool,
    ) -> Ownership {
        match self.sessions.get_mut(&session) {
            None => match self.tombstones.get(&session) {
                Some((_, _, old)) if old != owner => Ownership::Foreign,
                _ => Ownership::Unknown,
            },
            Some(s) if s.owner == *owner => {
                if !s.verified && proves() {
                    s.verified = true;
                }
                Ownership::Own {
                    verified: s.verified,
                }
            }
            Some(_) => Ownership::Foreign,
        }
    }

    /// The sessions and stored bytes `source` holds now.
    #[cfg(test)]
    fn source_use(&self, source: &Owner) -> (usize, usize) {
        self.sources.of(source)
    }

    /// Whether `session` could be forgotten now (known, nothing running).
    #[cfg(test)]
    pub(crate) fn can_forget(&self, session: u64) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|s| s.in_progress == 0)
    }

    /// Forgets `session` as a flood of other sessions would (with its
    /// tombstone, if there is room for one; returns whether it did): the
    /// model checker's adversary.
    #[cfg(test)]
    pub(crate) fn forget(&mut self, session: u64, now: Instant) -> bool {
        if !self.can_forget(session) || !self.tombstone_room(now) {
            return false;
        }
        match self.sessions.remove(&session) {
            Some(s) => {
                self.forgot(session, &s, now);
                true
            }
            None => false,
        }
    }

    /// Tombstones of forgotten sessions kept now.
    pub fn tombstones(&self) -> usize {
        self.tombstones.len()
    }

    /// The limits.
    pub fn config(&self) -> &HistoryConfig {
        &self.config
    }

    /// Current sizes.
    pub fn size(&self) -> HistorySize {
        HistorySize {
            completed: self.completed,
            acked: self.acked,
            in_progress: self.in_progress,
            sessions: self.sessions.len(),
            bytes: self.bytes,
            tombstones: self.tombstones.len(),
        }
    }

    /// Evictions so far, by kind.
    pub fn evictions(&self) -> EvictionCounts {
        self.evicted
    }

    /// Sessions forgotten because they were empty and idle longer than the ttl.
    pub fn sessions_forgotten(&self) -> u64 {
        self.sessions_forgotten
    }

    /// Sessions forgotten (with their entries) because of `max_sessions`.
    pub fn sessions_evicted(&self) -> u64 {
        self.sessions_evicted
    }

    fn seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Applies an acknowledgement: drops the reply of entry `request_id`
    /// (when non-zero) and leaves an `Acked` marker in its place, drops
    /// every entry of the session at or below `ack_up_to`, raises the floor
    /// to it, and folds markers right above the floor into it. Returns
    /// whether entry `request_id` was there (always `true` for
    /// `request_id == 0`). An unknown session is not created.
    pub(crate) fn ack(
        &mut self,
        session: u64,
        request_id: u64,
        ack_up_to: u64,
        now: Instant,
    ) -> bool {
        let Some(s) = self.sessions.get_mut(&session) else {
            return request_id == 0;
        };
        s.last_active = now;
        let slot = s.slot;
        let mut removed = Tally::default();
        let mut found = request_id == 0;
        let mut marked = 0;
        // Id 0 is never an entry: a request's ack floor alone (every
        // REQUEST carries one) needs no search for it.
        if !found {
            if let Some(state) = s.entries.get_mut(&request_id) {
                found = true;
                let seq = match state {
                    State::Acked { .. } => None,
                    State::Completed { seq, .. } => Some(*seq),
                    // Acknowledged while running (the client gave up on
                    // it): the reply will not be stored; the marker ages
                    // out like a stored reply.
                    State::InProgress => {
                        let seq = self.next_seq;
                        self.next_seq += 1;
                        self.order.push_back(Record {
                            seq,
                            session,
                            request: request_id,
                            stored: now,
                        });
                        Some(seq)
                    }
                };
                if let Some(seq) = seq {
                    let old = std::mem::replace(state, State::Acked { seq });
                    removed.add(s.uncount(old));
                    s.acked += 1;
                    marked += 1;
                }
            }
        }
        if ack_up_to > s.floor {
            s.floor = ack_up_to;
            while let Some((&id, _)) = s.entries.first_key_value() {
                if id > ack_up_to {
                    break;
                }
                match s.remove(id) {
                    Some(r) => removed.add(r),
                    None => break,
                }
            }
        }
        // Markers right above the floor say no more than the floor would.
        while let Some((&id, State::Acked { .. })) = s.entries.first_key_value() {
            if id != s.floor + 1 {
                break;
            }
            s.floor = id;
            if let Some(r) = s.remove(id) {
                removed.add(r);
            }
        }
        self.evicted.ack += removed.count;
        self.acked += marked;
        self.account_tally(slot, removed);
        self.maybe_compact();
        found
    }

    /// What the history knows about (session, request_id).
    pub(crate) fn lookup(&mut self, session: u64, request_id: u64, now: Instant) -> Lookup {
        let Some(s) = self.sessions.get_mut(&session) else {
            return match self.tombstones.get(&session) {
                Some(&(max_id, _, _)) if request_id <= max_id => Lookup::Evicted,
                _ => Lookup::Absent,
            };
        };
        s.last_active = now;
        if request_id <= s.floor {
            return Lookup::Stale;
        }
        match s.entries.get(&request_id) {
            Some(State::InProgress) => Lookup::InProgress,
            Some(State::Completed { reply, .. }) => Lookup::Completed(reply.clone()),
            Some(State::Acked { .. }) => Lookup::Acked,
            None if request_id <= s.max_evicted_id => Lookup::Evicted,
            None => Lookup::Absent,
        }
    }

    /// Registers a new request. The caller has checked that it is
    /// [`Lookup::Absent`]. A session created here starts with `floor` (the
    /// request's `ack_up_to`) as its floor. A `oneway` request is registered
    /// as already completed with no reply (a tombstone, so that a network
    /// duplicate does not run it again); any other as running.
    pub(crate) fn register(
        &mut self,
        session: u64,
        request_id: u64,
        oneway: bool,
        floor: u64,
        peer: Peer<'_>,
        now: Instant,
    ) -> Result<(), RegisterError> {
        if let Some(s) = self.sessions.get(&session) {
            if s.owner != *peer.owner {
                return Err(RegisterError::Foreign);
            }
            if self.sources.bytes(s.slot) > self.config.max_bytes_per_source {
                return Err(RegisterError::SourceBytes);
            }
        } else {
            if let Some((_, _, old)) = self.tombstones.get(&session) {
                if old != peer.owner {
                    return Err(RegisterError::Foreign);
                }
            }
            let source = peer.owner.source();
            let (sessions, bytes) = self.sources.of(&source);
            if sessions >= self.config.max_sessions_per_source {
                return Err(RegisterError::SourceSessions);
            }
            if bytes > self.config.max_bytes_per_source {
                return Err(RegisterError::SourceBytes);
            }
            if self.sessions.len() >= self.config.max_sessions && !self.forget_one_session(now) {
                return Err(RegisterError::TooManySessions);
            }
            let slot = self.sources.add_session(source);
            let mut fresh = Session::new(now, peer.owner.clone(), slot, peer.verified);
            fresh.floor = floor;
            // A session forgotten in the last ttl comes back knowing that
            // its old ids have an unknown outcome.
            if let Some((max_id, _, _)) = self.tombstones.remove(&session) {
                fresh.max_evicted_id = max_id;
            }
            self.sessions.insert(session, fresh);
        }
        let touch = self.seq();
        // A tombstone's place in the order of completed entries.
        let tombstone = oneway.then(|| self.seq());
        let Some(s) = self.sessions.get_mut(&session) else {
            return Err(RegisterError::TooManySessions);
        };
        s.last_active = now;
        s.touch_seq = touch;
        s.max_id = s.max_id.max(request_id);
        // The caller looked the entry up: one is replaced only if it is
        // there after all, and then taken off the counts.
        let replaced = if let Some(seq) = tombstone {
            // A tombstone holds no bytes.
            let replaced = s
                .entries
                .insert(request_id, State::Completed { reply: None, seq });
            self.order.push_back(Record {
                seq,
                session,
                request: request_id,
                stored: now,
            });
            s.completed += 1;
            self.completed += 1;
            replaced
        } else {
            let replaced = s.entries.insert(request_id, State::InProgress);
            s.in_progress += 1;
            self.in_progress += 1;
            replaced
        };
        let replaced = replaced.map(|old| s.uncount(old));
        let over_session_cap = s.done() > self.config.max_per_session;
        let slot = s.slot;
        self.activity.push_back((touch, session));
        if let Some(r) = replaced {
            self.account_removed(slot, r);
        }
        if over_session_cap || self.over_global_cap() {
            self.enforce_caps(session, now);
        }
        self.maybe_compact();
        Ok(())
    }

    /// Stores the reply of a running request (replacing `InProgress`).
    /// Returns `false` when the entry is gone (acknowledged meanwhile): the
    /// reply is then not stored.
    pub(crate) fn complete(
        &mut self,
        session: u64,
        request_id: u64,
        reply: Bytes,
        now: Instant,
    ) -> bool {
        let seq = self.seq();
        let Some(s) = self.sessions.get_mut(&session) else {
            return false;
        };
        let Some(state) = s.entries.get_mut(&request_id) else {
            return false;
        };
        if !matches!(state, State::InProgress) {
            return false;
        }
        let len = reply.len();
        *state = State::Completed {
            reply: Some(reply),
            seq,
        };
        s.in_progress -= 1;
        s.completed += 1;
        s.bytes += len;
        self.sources.add_bytes(s.slot, len);
        self.in_progress -= 1;
        self.completed += 1;
        self.bytes += len;
        let over_session_cap = s.done() > self.config.max_per_session;
        self.order.push_back(Record {
            seq,
            session,
            request: request_id,
            stored: now,
        });
        if over_session_cap || self.over_global_cap() {
            self.enforce_caps(session, now);
        }
        self.maybe_compact();
        true
    }

    fn over_global_cap(&self) -> bool {
        self.completed + self.acked > self.config.max_entries || self.bytes > self.config.max_bytes
    }

    /// Drops a registration that never ran (refused after registering).
    /// Not counted as an eviction.
    pub(crate) fn unregister(&mut self, session: u64, request_id: u64) {
        if let Some((slot, r)) = self
            .sessions
            .get_mut(&session)
            .and_then(|s| Some((s.slot, s.remove(request_id)?)))
        {
            self.account_removed(slot, r);
        }
    }

    /// The session's floor and max evicted id (tests and diagnostics).
    pub fn session_marks(&self, session: u64) -> Option<(u64, u64)> {
        self.sessions
            .get(&session)
            .map(|s| (s.floor, s.max_evicted_id))
    }

    /// Feeds what decides the history's future answers into `h`: every
    /// session's marks and entries, and the tombstones (not the clock
    /// readings, which the protocol model checker keeps constant).
    #[cfg(test)]
    pub(crate) fn fingerprint<H: std::hash::Hasher>(&self, h: &mut H) {
        use std::hash::Hash;
        let mut ids: Vec<&u64> = self.sessions.keys().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(s) = self.sessions.get(id) else {
                continue;
            };
            (id, s.floor, s.max_evicted_id, s.max_id).hash(h);
            for (rid, state) in s.entries.iter() {
                rid.hash(h);
                match state {
                    State::InProgress => 0u8.hash(h),
                    State::Completed { reply, .. } => (1u8, reply).hash(h),
                    State::Acked { .. } => 2u8.hash(h),
                }
            }
        }
        let mut tombstones: Vec<(&u64, u64)> =
            self.tombstones.iter().map(|(k, v)| (k, v.0)).collect();
        tombstones.sort_unstable();
        tombstones.hash(h);
    }

    /// Lengths of the internal queues (tests: they stay bounded).
    #[cfg(test)]
    fn queue_lens(&self) -> (usize, usize) {
        (self.order.len(), self.activity.len())
    }
}
