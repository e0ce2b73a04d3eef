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
//!   requests is forgotten with all its entries.
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
//! Everything here is synchronous and takes the time as an argument, so it
//! is tested without sockets or timers; the engine holds it in a mutex.

use crate::hash::FastMap;
use crate::service::PeerIdentity;
use bytes::Bytes;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Limits of the reply history.
///
/// Defaults: `ttl` 60 s, `sweep_interval` `None` (ttl / 4), `max_per_session`
/// 1024, `max_entries` 100,000, `max_bytes` 128 MiB, `max_sessions` 10,000,
/// `max_sessions_per_source` 1,024, `max_bytes_per_source` 16 MiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    /// How long a completed reply is kept after it was stored. Default 60 s.
    pub ttl: Duration,
    /// How often the server sweeps entries older than `ttl` (and idle empty
    /// sessions). `None` (the default): `ttl / 4`, at least 1 ms.
    pub sweep_interval: Option<Duration>,
    /// Completed entries kept per session; beyond it the oldest of that
    /// session goes. Default 1024.
    pub max_per_session: usize,
    /// Completed entries kept in total; beyond it the oldest goes.
    /// Default 100,000.
    pub max_entries: usize,
    /// Bytes of stored replies kept in total; beyond it the oldest goes
    /// (counted with the global cap). Bounds memory when replies are large.
    /// Default 128 MiB.
    pub max_bytes: usize,
    /// Sessions remembered; beyond it the least recently active session
    /// without running requests is forgotten. Default 10,000.
    pub max_sessions: usize,
    /// Sessions one source (a host, or a verified client identity) may
    /// hold; a request that would create one more is refused
    /// (RESOURCE_EXHAUSTED, not run) until that source's sessions end.
    /// Default 1,024.
    pub max_sessions_per_source: usize,
    /// Bytes of stored replies one source may hold; while it holds more,
    /// its new requests are refused (RESOURCE_EXHAUSTED, not run) until
    /// acknowledgements or age free them. Default 16 MiB.
    pub max_bytes_per_source: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            ttl: Duration::from_secs(60),
            sweep_interval: None,
            max_per_session: 1024,
            max_entries: 100_000,
            max_bytes: 128 << 20,
            max_sessions: 10_000,
            max_sessions_per_source: 1024,
            max_bytes_per_source: 16 << 20,
        }
    }
}

impl HistoryConfig {
    /// The effective sweep period.
    pub fn effective_sweep_interval(&self) -> Duration {
        self.sweep_interval
            .unwrap_or(self.ttl / 4)
            .max(Duration::from_millis(1))
    }
}

/// Evictions from the history, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EvictionCounts {
    /// Dropped because the client acknowledged them (ACK or `ack_up_to`).
    pub ack: u64,
    /// Dropped because they were older than the ttl.
    pub age: u64,
    /// Dropped because their session had too many completed entries.
    pub session_cap: u64,
    /// Dropped because the history had too many completed entries or bytes.
    pub global_cap: u64,
    /// Dropped with their session because there were too many sessions.
    pub session_limit: u64,
    /// Markers of acknowledged requests dropped by age or a cap before the
    /// floor passed them (a late copy of one gets "outcome unknown").
    pub markers: u64,
}

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

/// The peer a session belongs to: only messages from it may register,
/// replay or acknowledge the session's requests.
#[derive(Debug, Clone)]
pub(crate) enum Owner {
    /// A datagram peer: its address and port (the client's socket).
    Addr(SocketAddr),
    /// A stream peer (TCP, gRPC) without a verified identity: its host,
    /// since a reconnect comes from another port.
    Host(IpAddr),
    /// A peer with a verified client certificate (mutual TLS), from any
    /// address: the same subject and alternative names are the same peer.
    Identity(Arc<PeerIdentity>),
    /// A peer without an address (in-process transports): anyone.
    Local,
}

impl PartialEq for Owner {
    fn eq(&self, other: &Owner) -> bool {
        match (self, other) {
            (Owner::Addr(a), Owner::Addr(b)) => a == b,
            (Owner::Host(a), Owner::Host(b)) => a == b,
            (Owner::Identity(a), Owner::Identity(b)) => {
                // One connection's calls share one `Arc`.
                Arc::ptr_eq(a, b) || (a.subject == b.subject && a.alt_names == b.alt_names)
            }
            (Owner::Local, Owner::Local) => true,
            _ => false,
        }
    }
}

impl Eq for Owner {}

impl std::hash::Hash for Owner {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        std::mem::discriminant(self).hash(h);
        match self {
            Owner::Addr(a) => a.hash(h),
            Owner::Host(a) => a.hash(h),
            Owner::Identity(id) => id.subject.hash(h),
            Owner::Local => {}
        }
    }
}

impl Owner {
    /// The source whose quota the owner's sessions count against.
    pub(crate) fn source(&self) -> Owner {
        match self {
            Owner::Addr(addr) => Owner::Host(addr.ip()),
            other => other.clone(),
        }
    }
}

/// What [`History::ownership`] found for a session and a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ownership {
    /// No such session.
    Unknown,
    /// The session belongs to this peer; `verified`: its address has been
    /// shown to receive what is sent to it (always true but on datagrams).
    Own { verified: bool },
    /// The session belongs to another peer.
    Foreign,
}

/// Sessions and stored bytes of one source.
#[derive(Debug, Clone, Default)]
struct SourceUse {
    /// The source (`None`: a free slot).
    key: Option<Owner>,
    sessions: usize,
    bytes: usize,
}

/// Sessions and stored bytes per source, in slots that sessions point at:
/// storing or dropping a reply updates its source without hashing.
#[derive(Debug, Clone, Default)]
struct Sources {
    slots: FastMap<Owner, usize>,
    usage: Vec<SourceUse>,
    free: Vec<usize>,
}

impl Sources {
    /// What `source` holds now (zeros when nothing).
    fn of(&self, source: &Owner) -> (usize, usize) {
        self.slots
            .get(source)
            .and_then(|&i| self.usage.get(i))
            .map_or((0, 0), |u| (u.sessions, u.bytes))
    }

    /// The bytes the source in `slot` holds.
    fn bytes(&self, slot: usize) -> usize {
        self.usage.get(slot).map_or(0, |u| u.bytes)
    }

    /// Counts one more session of `source`; returns its slot.
    fn add_session(&mut self, source: Owner) -> usize {
        let slot = match self.slots.get(&source) {
            Some(&slot) => slot,
            None => {
                let slot = self.free.pop().unwrap_or(self.usage.len());
                if slot == self.usage.len() {
                    self.usage.push(SourceUse::default());
                }
                self.slots.insert(source.clone(), slot);
                if let Some(u) = self.usage.get_mut(slot) {
                    u.key = Some(source);
                }
                slot
            }
        };
        if let Some(u) = self.usage.get_mut(slot) {
            u.sessions += 1;
        }
        slot
    }

    fn add_bytes(&mut self, slot: usize, bytes: usize) {
        if let Some(u) = self.usage.get_mut(slot) {
            u.bytes += bytes;
        }
    }

    /// Takes `sessions` and `bytes` off the source in `slot`; frees the
    /// slot of a source that holds nothing (no session points at it).
    fn release(&mut self, slot: usize, sessions: usize, bytes: usize) {
        let Some(u) = self.usage.get_mut(slot) else {
            return;
        };
        u.sessions = u.sessions.saturating_sub(sessions);
        u.bytes = u.bytes.saturating_sub(bytes);
        if u.sessions == 0 && u.bytes == 0 {
            if let Some(key) = u.key.take() {
                self.slots.remove(&key);
                self.free.push(slot);
            }
        }
    }
}

#[derive(Debug, Clone)]
enum State {
    InProgress,
    Completed {
        reply: Option<Bytes>,
        seq: u64,
    },
    /// Done and acknowledged: the reply is dropped. `seq` is the record in
    /// `History::order` that ages it out (the completion's).
    Acked {
        seq: u64,
    },
}

/// A session's entries by request id: a deque kept sorted by id. A
/// client's ids grow by one per call and its entries leave mostly in id
/// order (the ack floor), so an entry is added at the back and removed at
/// the front: no search and no node allocation, where a `BTreeMap` spent
/// about a tenth of a TCP call's server time. Lookups are binary searches;
/// out-of-order ids (retransmissions, hostile clients) cost a shift within
/// one session's entries, which the caps bound.
#[derive(Debug, Clone)]
struct IdMap<V> {
    items: VecDeque<(u64, V)>,
}

impl<V> Default for IdMap<V> {
    fn default() -> Self {
        IdMap {
            items: VecDeque::new(),
        }
    }
}

impl<V> IdMap<V> {
    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Where `id` is (`Ok`) or would go (`Err`); the ends are tried first.
    fn position(&self, id: u64) -> Result<usize, usize> {
        match self.items.back() {
            None => return Err(0),
            Some(&(last, _)) if id > last => return Err(self.items.len()),
            Some(&(last, _)) if id == last => return Ok(self.items.len() - 1),
            Some(_) => {}
        }
        self.items.binary_search_by_key(&id, |&(k, _)| k)
    }

    fn get(&self, id: &u64) -> Option<&V> {
        let i = self.position(*id).ok()?;
        self.items.get(i).map(|(_, v)| v)
    }

    fn get_mut(&mut self, id: &u64) -> Option<&mut V> {
        let i = self.position(*id).ok()?;
        self.items.get_mut(i).map(|(_, v)| v)
    }

    /// Adds or replaces; returns the replaced value.
    fn insert(&mut self, id: u64, value: V) -> Option<V> {
        match self.position(id) {
            Ok(i) => self
                .items
                .get_mut(i)
                .map(|(_, v)| std::mem::replace(v, value)),
            Err(i) => {
                self.items.insert(i, (id, value));
                None
            }
        }
    }

    fn remove(&mut self, id: &u64) -> Option<V> {
        if self.items.front().is_some_and(|&(first, _)| first == *id) {
            return self.items.pop_front().map(|(_, v)| v);
        }
        let i = self.position(*id).ok()?;
        self.items.remove(i).map(|(_, v)| v)
    }

    fn first_key_value(&self) -> Option<(&u64, &V)> {
        self.items.front().map(|(k, v)| (k, v))
    }

    /// In id order.
    fn iter(&self) -> impl Iterator<Item = (&u64, &V)> {
        self.items.iter().map(|(k, v)| (k, v))
    }
}

#[derive(Debug, Clone)]
struct Session {
    entries: IdMap<State>,
    floor: u64,
    max_evicted_id: u64,
    /// The highest request id ever registered (for a tombstone).
    max_id: u64,
    completed: usize,
    /// `Acked` markers.
    acked: usize,
    in_progress: usize,
    /// Bytes of this session's stored replies.
    bytes: usize,
    last_active: Instant,
    /// Sequence number of this session's newest record in `History::activity`.
    touch_seq: u64,
    /// The peer the session belongs to.
    owner: Owner,
    /// The slot of `owner.source()` in `History::sources`.
    slot: usize,
    /// The owner's address is verified (see [`Ownership::Own`]).
    verified: bool,
}

impl Session {
    fn new(now: Instant, owner: Owner, slot: usize, verified: bool) -> Session {
        Session {
            slot,
            owner,
            verified,
            entries: IdMap::default(),
            floor: 0,
            max_evicted_id: 0,
            max_id: 0,
            completed: 0,
            acked: 0,
            in_progress: 0,
            bytes: 0,
            last_active: now,
            touch_seq: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes one entry.
    fn remove(&mut self, id: u64) -> Option<Removed> {
        let state = self.entries.remove(&id)?;
        Some(self.uncount(state))
    }

    /// Takes a removed or replaced entry off the session's counts.
    fn uncount(&mut self, state: State) -> Removed {
        match state {
            State::InProgress => {
                self.in_progress -= 1;
                Removed::Running
            }
            State::Completed { reply, .. } => {
                let len = reply.map_or(0, |r| r.len());
                self.completed -= 1;
                self.bytes -= len;
                Removed::Completed(len)
            }
            State::Acked { .. } => {
                self.acked -= 1;
                Removed::Marker
            }
        }
    }

    /// Entries that count against the caps (all but running ones).
    fn done(&self) -> usize {
        self.completed + self.acked
    }

    /// The highest id this session is known to have used.
    fn max_seen(&self) -> u64 {
        self.max_id.max(self.floor).max(self.max_evicted_id)
    }
}

/// What [`Session::remove`] removed.
#[derive(Debug, Clone, Copy)]
enum Removed {
    Running,
    /// A completed entry with a reply of this many bytes.
    Completed(usize),
    /// An `Acked` marker.
    Marker,
}

/// Entries a session removed in one go, counted without allocating.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    /// Entries with a reply or still running (markers are not counted:
    /// their reply was counted when it was acknowledged).
    count: u64,
    running: usize,
    completed: usize,
    acked: usize,
    bytes: usize,
}

impl Tally {
    fn add(&mut self, removed: Removed) {
        match removed {
            Removed::Running => {
                self.count += 1;
                self.running += 1;
            }
            Removed::Completed(len) => {
                self.count += 1;
                self.completed += 1;
                self.bytes += len;
            }
            Removed::Marker => self.acked += 1,
        }
    }
}

/// A completed entry in storing order (for age and global-cap eviction).
/// Records of entries removed otherwise stay until they reach the front or
/// the queue is compacted ("lazy deletion"); `seq` tells them apart.
#[derive(Debug, Clone, Copy)]
struct Record {
    seq: u64,
    session: u64,
    request: u64,
    stored: Instant,
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
    /// Registrations refused by a source quota.
    quota_refused: u64,
    /// `tombstones` in the order they were made (lazy deletion).
    tombstone_order: VecDeque<(Instant, u64)>,
    /// When a tombstone was last dropped before its ttl (too many): until
    /// one ttl later, an unknown session's retransmission is refused.
    last_tombstone_overflow: Option<Instant>,
    tombstones_dropped: u64,
}

/// Who registers a request: the session's owner-to-be and whether this
/// message verified its address.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer<'a> {
    pub(crate) owner: &'a Owner,
    pub(crate) verified: bool,
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
            last_tombstone_overflow: None,
            tombstones_dropped: 0,
            sources: Sources::default(),
            quota_refused: 0,
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

    /// Registrations refused because their source was over a quota.
    pub fn quota_refused(&self) -> u64 {
        self.quota_refused
    }

    /// The sessions and stored bytes `source` holds now.
    #[cfg(test)]
    fn source_use(&self, source: &Owner) -> (usize, usize) {
        self.sources.of(source)
    }

    /// Whether `session` is unknown and may have been forgotten without a
    /// tombstone: one was dropped early (more sessions forgotten within a
    /// ttl than `max_sessions`) less than one ttl ago. The engine then
    /// refuses an unknown session's retransmissions ("outcome unknown").
    pub(crate) fn may_have_forgotten(&self, session: u64, now: Instant) -> bool {
        !self.sessions.contains_key(&session)
            && self
                .last_tombstone_overflow
                .is_some_and(|t| now.saturating_duration_since(t) < self.config.ttl)
    }

    /// Tombstones dropped before their ttl because too many sessions were
    /// forgotten at once.
    pub fn tombstones_dropped(&self) -> u64 {
        self.tombstones_dropped
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

    /// Registers a new request as running. The caller has checked that it
    /// is [`Lookup::Absent`]. A session created here starts with `floor`
    /// (the request's `ack_up_to`) as its floor.
    pub(crate) fn register(
        &mut self,
        session: u64,
        request_id: u64,
        floor: u64,
        peer: Peer<'_>,
        now: Instant,
    ) -> Result<(), RegisterError> {
        self.insert(session, request_id, None, floor, peer, now)
    }

    /// Registers a one-way request as already completed with no reply (a
    /// tombstone, so that a network duplicate does not run it again).
    pub(crate) fn register_tombstone(
        &mut self,
        session: u64,
        request_id: u64,
        floor: u64,
        peer: Peer<'_>,
        now: Instant,
    ) -> Result<(), RegisterError> {
        self.insert(session, request_id, Some(None), floor, peer, now)
    }

    fn insert(
        &mut self,
        session: u64,
        request_id: u64,
        completed: Option<Option<Bytes>>,
        floor: u64,
        peer: Peer<'_>,
        now: Instant,
    ) -> Result<(), RegisterError> {
        if let Some(s) = self.sessions.get(&session) {
            if s.owner != *peer.owner {
                return Err(RegisterError::Foreign);
            }
            if self.sources.bytes(s.slot) > self.config.max_bytes_per_source {
                self.quota_refused += 1;
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
                self.quota_refused += 1;
                return Err(RegisterError::SourceSessions);
            }
            if bytes > self.config.max_bytes_per_source {
                self.quota_refused += 1;
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
        let Some(s) = self.sessions.get_mut(&session) else {
            return Err(RegisterError::TooManySessions);
        };
        s.last_active = now;
        s.touch_seq = touch;
        s.max_id = s.max_id.max(request_id);
        // The caller looked the entry up: one is replaced only if it is
        // there after all, and then taken off the counts.
        let replaced = match completed {
            None => {
                let replaced = s.entries.insert(request_id, State::InProgress);
                s.in_progress += 1;
                self.in_progress += 1;
                replaced
            }
            Some(reply) => {
                let seq = self.next_seq;
                self.next_seq += 1;
                let len = reply.as_ref().map_or(0, Bytes::len);
                let replaced = s
                    .entries
                    .insert(request_id, State::Completed { reply, seq });
                s.completed += 1;
                s.bytes += len;
                self.sources.add_bytes(s.slot, len);
                self.completed += 1;
                self.bytes += len;
                self.order.push_back(Record {
                    seq,
                    session,
                    request: request_id,
                    stored: now,
                });
                replaced
            }
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
        while let Some(&(made, id)) = self.tombstone_order.front() {
            if now.saturating_duration_since(made) < ttl {
                break;
            }
            self.tombstone_order.pop_front();
            if self.tombstones.get(&id).is_some_and(|&(_, t, _)| t == made) {
                self.tombstones.remove(&id);
            }
        }
        self.maybe_compact();
    }

    /// Removes the entry `rec` points to if it is still that completed
    /// entry or marker; raises the session's max evicted id. Returns what
    /// it removed.
    fn evict_record(&mut self, rec: &Record, now: Instant) -> Option<Removed> {
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
    fn account_tally(&mut self, slot: usize, tally: Tally) {
        self.sources.release(slot, 0, tally.bytes);
        self.in_progress -= tally.running;
        self.completed -= tally.completed;
        self.acked -= tally.acked;
        self.bytes -= tally.bytes;
    }

    /// Updates the global counts for an entry a session removed.
    fn account_removed(&mut self, slot: usize, removed: Removed) {
        let mut tally = Tally::default();
        tally.add(removed);
        self.account_tally(slot, tally);
    }

    fn enforce_caps(&mut self, session: u64, now: Instant) {
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
    fn forget_one_session(&mut self, now: Instant) -> bool {
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
    fn forgot(&mut self, id: u64, s: &Session, now: Instant) {
        self.completed -= s.completed;
        self.acked -= s.acked;
        self.bytes -= s.bytes;
        self.sources.release(s.slot, 1, s.bytes);
        self.evicted.session_limit += s.completed as u64;
        self.sessions_evicted += 1;
        // As many tombstones as sessions; beyond, the oldest goes early and
        // the engine falls back to refusing unknown sessions' retries.
        while self.tombstones.len() >= self.config.max_sessions.max(1) {
            let Some((made, old)) = self.tombstone_order.pop_front() else {
                break;
            };
            if self
                .tombstones
                .get(&old)
                .is_some_and(|&(_, t, _)| t == made)
            {
                self.tombstones.remove(&old);
                self.tombstones_dropped += 1;
                self.last_tombstone_overflow = Some(now);
                tracing::debug!(
                    session = old,
                    "tombstone of a forgotten session dropped early"
                );
            }
        }
        self.tombstones
            .insert(id, (s.max_seen(), now, s.owner.clone()));
        self.tombstone_order.push_back((now, id));
    }

    /// Keeps the lazy queues within a constant factor of the live data.
    fn maybe_compact(&mut self) {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    static ANYONE: Owner = Owner::Local;
    /// An in-process peer (quotas and ownership are tested below).
    const LOCAL: Peer<'static> = Peer {
        owner: &ANYONE,
        verified: true,
    };

    #[test]
    fn id_map_behaves_as_an_ordered_map() {
        use rand::{Rng, SeedableRng};
        use std::collections::BTreeMap;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (mut ours, mut model) = (IdMap::default(), BTreeMap::new());
        let mut next = 1u64;
        for step in 0..20_000u64 {
            // Mostly ascending ids, some old, some repeated.
            let id = match rng.random_range(0..10) {
                0..=5 => {
                    next += 1;
                    next
                }
                6 | 7 => rng.random_range(1..=next),
                _ => model.keys().next().copied().unwrap_or(1),
            };
            match rng.random_range(0..4) {
                0 | 1 => assert_eq!(ours.insert(id, step), model.insert(id, step)),
                2 => assert_eq!(ours.remove(&id), model.remove(&id)),
                _ => {
                    if let Some(v) = ours.get_mut(&id) {
                        *v += 1;
                    }
                    if let Some(v) = model.get_mut(&id) {
                        *v += 1;
                    }
                }
            }
            assert_eq!(ours.get(&id), model.get(&id));
            assert_eq!(ours.first_key_value(), model.first_key_value());
            assert_eq!(ours.is_empty(), model.is_empty());
        }
        assert!(ours.iter().eq(model.iter()));
    }

    fn cfg() -> HistoryConfig {
        HistoryConfig {
            ttl: Duration::from_secs(10),
            sweep_interval: None,
            max_per_session: 4,
            max_entries: 10,
            max_bytes: 1 << 20,
            max_sessions: 3,
            max_sessions_per_source: 1000,
            max_bytes_per_source: 1 << 20,
        }
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn register_complete_replay() {
        let now = Instant::now();
        let mut h = History::new(cfg());
        assert_eq!(h.lookup(7, 1, now), Lookup::Absent);
        assert_eq!(h.register(7, 1, 0, LOCAL, now), Ok(()));
        assert_eq!(h.lookup(7, 1, now), Lookup::InProgress);
        assert!(h.complete(7, 1, b("r1"), now));
        assert_eq!(h.lookup(7, 1, now), Lookup::Completed(Some(b("r1"))));
        assert_eq!(
            h.size(),
            HistorySize {
                completed: 1,
                acked: 0,
                in_progress: 0,
                sessions: 1,
                bytes: 2
            }
        );
        // Completing twice does nothing.
        assert!(!h.complete(7, 1, b("again"), now));
        assert_eq!(h.lookup(7, 1, now), Lookup::Completed(Some(b("r1"))));
    }

    #[test]
    fn ack_and_ack_up_to_drop_entries_and_raise_floor() {
        let now = Instant::now();
        let mut h = History::new(cfg());
        for id in 1..=4 {
            h.register(1, id, 0, LOCAL, now).unwrap();
            h.complete(1, id, b("r"), now);
        }
        assert!(h.ack(1, 3, 0, now));
        // The reply is gone, the fact that id 3 ran is not: a late copy of
        // it must never be taken for new.
        assert_eq!(h.lookup(1, 3, now), Lookup::Acked);
        assert_eq!(h.evictions().ack, 1);
        assert_eq!(h.size().acked, 1);
        assert!(h.ack(1, 3, 0, now), "a repeated ack finds the marker");
        assert_eq!(h.evictions().ack, 1, "and counts nothing twice");
        assert!(h.ack(1, 0, 2, now));
        assert_eq!(h.lookup(1, 1, now), Lookup::Stale);
        assert_eq!(h.lookup(1, 2, now), Lookup::Stale);
        assert_eq!(h.lookup(1, 4, now), Lookup::Completed(Some(b("r"))));
        assert_eq!(h.evictions().ack, 3);
        assert_eq!(h.size().completed, 1);
        // The marker of 3, right above the new floor, is folded into it.
        assert_eq!(h.session_marks(1), Some((3, 0)));
        assert_eq!(h.lookup(1, 3, now), Lookup::Stale);
        assert_eq!(h.size().acked, 0);
        // A lower ack_up_to never lowers the floor.
        h.ack(1, 0, 1, now);
        assert_eq!(h.session_marks(1), Some((3, 0)));
        // Unknown session: not created.
        assert!(!h.ack(99, 5, 5, now));
        assert_eq!(h.size().sessions, 1);
    }

    #[test]
    fn acked_markers_stay_until_the_floor_passes_them() {
        let now = Instant::now();
        let mut h = History::new(cfg());
        for id in 1..=4 {
            h.register(1, id, 0, LOCAL, now).unwrap();
        }
        h.complete(1, 3, b("r3"), now);
        h.complete(1, 4, b("r4"), now);
        // 1 and 2 still run; 3 and 4 are acknowledged with a floor of 0.
        h.ack(1, 3, 0, now);
        h.ack(1, 4, 0, now);
        assert_eq!(
            (h.size().completed, h.size().acked, h.size().bytes),
            (0, 2, 0)
        );
        assert_eq!(h.lookup(1, 3, now), Lookup::Acked);
        assert_eq!(h.lookup(1, 4, now), Lookup::Acked);
        // Completing a marker's request stores nothing.
        assert!(!h.complete(1, 4, b("again"), now));
        // The floor reaches 2: the markers 3 and 4 are folded into it.
        h.complete(1, 1, b("r1"), now);
        h.complete(1, 2, b("r2"), now);
        h.ack(1, 0, 2, now);
        assert_eq!(h.session_marks(1), Some((4, 0)));
        assert_eq!(
            h.size(),
            HistorySize {
                sessions: 1,
                ..HistorySize::default()
            }
        );
        let (order, _) = h.queue_lens();
        assert!(order <= 4);
    }

    #[test]
    fn markers_count_against_the_caps_and_their_eviction_is_outcome_unknown() {
        let now = Instant::now();
        let mut h = History::new(cfg());
        // Id 1 runs for ever, so the floor stays at 0.
        h.register(1, 1, 0, LOCAL, now).unwrap();
        for id in 2..=7 {
            h.register(1, id, 0, LOCAL, now).unwrap();
            h.complete(1, id, b("r"), now);
            h.ack(1, id, 0, now);
        }
        // max_per_session is 4: two markers (2, 3) went, oldest first.
        assert_eq!(h.size().acked, 4);
        assert_eq!(h.evictions().markers, 2);
        assert_eq!(h.evictions().session_cap, 0, "no reply was lost");
        assert_eq!(h.lookup(1, 2, now), Lookup::Evicted);
        assert_eq!(h.lookup(1, 3, now), Lookup::Evicted);
        assert_eq!(h.lookup(1, 4, now), Lookup::Acked);
        // And by age.
        h.sweep(now + Duration::from_secs(10));
        assert_eq!(h.size().acked, 0);
        assert_eq!(h.evictions().markers, 6);
        assert_eq!(
            h.lookup(1, 7, now + Duration::from_secs(10)),
            Lookup::Evicted
        );
        assert_eq!(
            h.lookup(1, 1, now + Duration::from_secs(10)),
            Lookup::InProgress
        );
    }

    #[test]
    fn a_forgotten_sessions_old_ids_have_an_unknown_outcome_for_one_ttl() {
        let now = Instant::now();
        let mut h = History::new(cfg());
        for session in 1..=3 {
            h.register(session, 5, 4, LOCAL, now).unwrap();
            h.complete(session, 5, b("r"), now);
        }
        // A fourth session pushes session 1 (least recent) out.
        h.register(4, 1, 0, LOCAL, now).unwrap();
        assert_eq!(h.sessions_evicted(), 1);
        assert_eq!(h.lookup(1, 5, now), Lookup::Evicted, "ran: never again");
        assert_eq!(h.lookup(1, 4, now), Lookup::Evicted);
        assert_eq!(h.lookup(1, 6, now), Lookup::Absent, "never seen: new");
        // Coming back, the session knows its old ids' fate.
        h.register(1, 6, 0, LOCAL, now).unwrap();
        assert_eq!(h.session_marks(1), Some((0, 5)));
        assert_eq!(h.lookup(1, 5, now), Lookup::Evicted);
        // A tombstone lasts one ttl.
        h.register(5, 1, 0, LOCAL, now).unwrap(); // forgets session 2
        assert_eq!(h.lookup(2, 5, now), Lookup::Evicted);
        let later = now + Duration::from_secs(10);
        h.sweep(later);
        assert_eq!(h.lookup(2, 5, later), Lookup::Absent);
        assert_eq!(h.tombstones_dropped(), 0);
    }

    #[test]
    fn too_many_tombstones_fall_back_to_refusing_unknown_retries() {
        let now = Instant::now();
        let mut h = History::new(HistoryConfig {
            max_sessions: 2,
            ..cfg()
        });
        for session in 1..=6u64 {
            h.register(session, 1, 0, LOCAL, now).unwrap();
            h.complete(session, 1, b("r"), now);
        }
        // Sessions 1..=4 were forgotten; two tombstones fit.
        assert_eq!(h.sessions_evicted(), 4);
        assert_eq!(h.tombstones_dropped(), 2);
        assert_eq!(h.lookup(1, 1, now), Lookup::Absent);
        assert!(h.may_have_forgotten(1, now));
        assert_eq!(h.lookup(4, 1, now), Lookup::Evicted);
        assert!(!h.may_have_forgotten(6, now), "a known session");
        assert!(!h.may_have_forgotten(1, now + Duration::from_secs(10)));
    }

    #[test]
    fn ack_of_running_entry_means_reply_is_not_stored() {
        let now = Instant::now();
        let mut h = History::new(cfg());
        h.register(1, 5, 0, LOCAL, now).unwrap();
        h.ack(1, 0, 5, now);
        assert_eq!(h.size().in_progress, 0);
        assert!(!h.complete(1, 5, b("late"), now));
        assert_eq!(h.lookup(1, 5, now), Lookup::Stale);
        assert_eq!(h.size().completed, 0);
    }

    #[test]
    fn per_session_cap_evicts_oldest_and_marks_evicted() {
        let now = Instant::now();
        let mut h = History::new(cfg());
        for id in 1..=6 {
            h.register(1, id, 0, LOCAL, now).unwrap();
            h.complete(1, id, b("r"), now);
        }
        assert_eq!(h.size().completed, 4);
        assert_eq!(h.evictions().session_cap, 2);
        assert_eq!(h.lookup(1, 1, now), Lookup::Evicted);
        assert_eq!(h.lookup(1, 2, now), Lookup::Evicted);
        assert_eq!(h.lookup(1, 3, now), Lookup::Completed(Some(b("r"))));
        assert_eq!(h.lookup(1, 7, now), Lookup::Absent);
    }

    #[test]
    fn running_entries_are_never_evicted_by_caps() {
        let now = Instant::now();
        let mut h = History::new(cfg());
        for id in 1..=8 {
            h.register(1, id, 0, LOCAL, now).unwrap();
        }
        assert_eq!(h.size().in_progress, 8);
        h.complete(1, 8, b("r"), now);
        assert_eq!(h.evictions(), EvictionCounts::default());
        assert_eq!(h.lookup(1, 1, now), Lookup::InProgress);
    }

    #[test]
    fn global_cap_evicts_oldest_stored_first() {
        let now = Instant::now();
        let mut h = History::new(HistoryConfig {
            max_sessions: 100,
            ..cfg()
        });
        for session in 1..=4u64 {
            for id in 1..=3 {
                h.register(session, id, 0, LOCAL, now).unwrap();
                h.complete(session, id, b("r"), now);
            }
        }
        assert_eq!(h.size().completed, 10);
        assert_eq!(h.evictions().global_cap, 2);
        assert_eq!(h.lookup(1, 1, now), Lookup::Evicted);
        assert_eq!(h.lookup(1, 2, now), Lookup::Evicted);
        assert_eq!(h.lookup(1, 3, now), Lookup::Completed(Some(b("r"))));
    }

    #[test]
    fn age_sweep_evicts_and_forgets_idle_sessions() {
        let t0 = Instant::now();
        let mut h = History::new(cfg());
        h.register(1, 1, 0, LOCAL, t0).unwrap();
        h.complete(1, 1, b("r"), t0);
        h.register(1, 2, 0, LOCAL, t0).unwrap();
        let t1 = t0 + Duration::from_secs(5);
        h.complete(1, 2, b("r"), t1);
        h.sweep(t0 + Duration::from_secs(11));
        assert_eq!(h.evictions().age, 1);
        assert_eq!(
            h.lookup(1, 1, t0 + Duration::from_secs(11)),
            Lookup::Evicted
        );
        assert_eq!(
            h.lookup(1, 2, t0 + Duration::from_secs(11)),
            Lookup::Completed(Some(b("r")))
        );
        h.sweep(t0 + Duration::from_secs(16));
        assert_eq!(h.evictions().age, 2);
        assert_eq!(h.size().sessions, 1, "session was active at 11 s");
        h.sweep(t0 + Duration::from_secs(40));
        assert_eq!(h.size().sessions, 0);
        assert_eq!(h.sessions_forgotten(), 1);

        // A session idle for long whose last entry ages out now is kept for
        // another ttl, so that a retry still learns "outcome unknown".
        let mut h = History::new(cfg());
        h.register(2, 1, 0, LOCAL, t0).unwrap();
        h.complete(2, 1, b("r"), t0);
        let late = t0 + Duration::from_secs(100);
        h.sweep(late);
        assert_eq!(h.evictions().age, 1);
        assert_eq!(h.size().sessions, 1);
        h.sweep(late + Duration::from_secs(9));
        assert_eq!(h.size().sessions, 1);
        h.sweep(late + Duration::from_secs(10));
        assert_eq!(h.size().sessions, 0);
    }

    #[test]
    fn running_entries_survive_the_sweep() {
        let t0 = Instant::now();
        let mut h = History::new(cfg());
        h.register(1, 1, 0, LOCAL, t0).unwrap();
        h.sweep(t0 + Duration::from_secs(100));
        assert_eq!(
            h.lookup(1, 1, t0 + Duration::from_secs(100)),
            Lookup::InProgress
        );
        assert_eq!(h.size().sessions, 1);
    }

    #[test]
    fn session_limit_forgets_least_recent_idle_session() {
        let now = Instant::now();
        let mut h = History::new(cfg());
        h.register(1, 1, 0, LOCAL, now).unwrap(); // stays running
        h.register(2, 1, 0, LOCAL, now).unwrap();
        h.complete(2, 1, b("r"), now);
        h.register(3, 1, 0, LOCAL, now).unwrap();
        h.complete(3, 1, b("r"), now);
        h.register(4, 1, 0, LOCAL, now).unwrap();
        assert_eq!(h.size().sessions, 3);
        assert_eq!(h.lookup(1, 1, now), Lookup::InProgress);
        assert_eq!(
            h.lookup(2, 1, now),
            Lookup::Evicted,
            "session 2 was forgotten: what it ran has an unknown outcome"
        );
        assert_eq!(h.lookup(2, 2, now), Lookup::Absent);
        assert_eq!(h.evictions().session_limit, 1);
        assert_eq!(h.sessions_evicted(), 1);
        // All sessions running: refuse.
        let mut h = History::new(HistoryConfig {
            max_sessions: 2,
            ..cfg()
        });
        h.register(1, 1, 0, LOCAL, now).unwrap();
        h.register(2, 1, 0, LOCAL, now).unwrap();
        assert_eq!(
            h.register(3, 1, 0, LOCAL, now),
            Err(RegisterError::TooManySessions)
        );
    }

    #[test]
    fn a_new_session_starts_at_the_requests_ack_up_to() {
        let now = Instant::now();
        let mut h = History::new(cfg());
        h.register(9, 50, 49, LOCAL, now).unwrap();
        assert_eq!(h.session_marks(9), Some((49, 0)));
        assert_eq!(h.lookup(9, 30, now), Lookup::Stale);
        // An existing session keeps its floor.
        h.register(9, 51, 0, LOCAL, now).unwrap();
        assert_eq!(h.session_marks(9), Some((49, 0)));
    }

    #[test]
    fn byte_cap_evicts_oldest_and_bytes_are_accounted() {
        let now = Instant::now();
        let mut h = History::new(HistoryConfig {
            max_bytes: 1_000,
            max_sessions: 100,
            ..cfg()
        });
        let reply = Bytes::from(vec![0u8; 400]);
        for session in 1..=3u64 {
            h.register(session, 1, 0, LOCAL, now).unwrap();
            h.complete(session, 1, reply.clone(), now);
        }
        assert_eq!(h.size().bytes, 800);
        assert_eq!(h.evictions().global_cap, 1);
        assert_eq!(h.lookup(1, 1, now), Lookup::Evicted);
        h.ack(2, 1, 0, now);
        assert_eq!(h.size().bytes, 400);
        h.sweep(now + Duration::from_secs(60));
        // Session 3 stays another ttl after its entry aged out.
        assert_eq!(
            h.size(),
            HistorySize {
                completed: 0,
                acked: 0,
                in_progress: 0,
                sessions: 1,
                bytes: 0
            }
        );
    }

    #[test]
    fn one_way_tombstones() {
        let now = Instant::now();
        let mut h = History::new(cfg());
        h.register_tombstone(1, 1, 0, LOCAL, now).unwrap();
        assert_eq!(h.lookup(1, 1, now), Lookup::Completed(None));
        h.unregister(1, 1);
        assert_eq!(h.lookup(1, 1, now), Lookup::Absent);
        assert_eq!(h.size().completed, 0);
    }

    #[test]
    fn flood_of_sessions_stays_bounded() {
        let now = Instant::now();
        let mut h = History::new(HistoryConfig {
            max_sessions: 100,
            max_entries: 150,
            max_per_session: 8,
            ..HistoryConfig::default()
        });
        for session in 1..=10_000u64 {
            for id in 1..=3 {
                h.register(session, id, 0, LOCAL, now).unwrap();
                h.complete(session, id, b("reply"), now);
            }
            h.ack(session, 0, 1, now);
        }
        let size = h.size();
        assert!(size.sessions <= 100);
        assert!(size.completed <= 150);
        assert_eq!(size.bytes, 5 * size.completed, "bytes accounted");
        let (order, activity) = h.queue_lens();
        assert!(order <= 2 * size.completed + 64 + 1, "order queue {order}");
        assert!(
            activity <= 2 * size.sessions + 64 + 1,
            "activity queue {activity}"
        );
        let e = h.evictions();
        assert_eq!(e.ack, 10_000);
        assert_eq!(h.sessions_evicted(), 10_000 - 100);
        // Every completed entry is accounted for: kept, acked or evicted.
        assert_eq!(
            size.completed as u64 + e.ack + e.age + e.session_cap + e.global_cap + e.session_limit,
            30_000
        );
    }

    #[test]
    fn steady_rra_keeps_queues_small() {
        let now = Instant::now();
        let mut h = History::new(HistoryConfig::default());
        for id in 1..=100_000u64 {
            h.register(1, id, 0, LOCAL, now).unwrap();
            h.complete(1, id, b("r"), now);
            h.ack(1, id, id - 1, now);
        }
        assert_eq!(h.size().completed, 0);
        let (order, activity) = h.queue_lens();
        assert!(order <= 65 && activity <= 67, "{order} {activity}");
    }

    fn udp(port: u16) -> Owner {
        Owner::Addr(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn a_session_belongs_to_the_peer_that_created_it() {
        let now = Instant::now();
        let mut h = History::new(cfg());
        let (me, other) = (udp(1000), udp(2000));
        let mine = Peer {
            owner: &me,
            verified: false,
        };
        assert_eq!(h.ownership(7, &me, &|| false), Ownership::Unknown);
        h.register(7, 1, 0, mine, now).unwrap();
        assert_eq!(
            h.ownership(7, &me, &|| false),
            Ownership::Own { verified: false }
        );
        // Another port of the same host is another peer.
        assert_eq!(h.ownership(7, &other, &|| true), Ownership::Foreign);
        let theirs = Peer {
            owner: &other,
            verified: true,
        };
        assert_eq!(
            h.register(7, 2, 0, theirs, now),
            Err(RegisterError::Foreign)
        );
        // A message that proves the owner's address marks the session.
        assert_eq!(
            h.ownership(7, &me, &|| true),
            Ownership::Own { verified: true }
        );
        assert_eq!(
            h.ownership(7, &me, &|| false),
            Ownership::Own { verified: true }
        );
    }

    #[test]
    fn a_forgotten_sessions_tombstone_keeps_its_owner() {
        let now = Instant::now();
        let mut h = History::new(HistoryConfig {
            max_sessions: 1,
            ..cfg()
        });
        let (me, other) = (udp(1000), udp(2000));
        let mine = Peer {
            owner: &me,
            verified: true,
        };
        let theirs = Peer {
            owner: &other,
            verified: true,
        };
        h.register(1, 1, 0, mine, now).unwrap();
        h.complete(1, 1, b("x"), now);
        h.register(2, 1, 0, theirs, now).unwrap(); // forgets session 1
        h.complete(2, 1, b("y"), now);
        assert_eq!(h.ownership(1, &other, &|| true), Ownership::Foreign);
        assert_eq!(
            h.register(1, 9, 0, theirs, now),
            Err(RegisterError::Foreign)
        );
        assert_eq!(h.ownership(1, &me, &|| true), Ownership::Unknown);
    }

    #[test]
    fn source_quotas_refuse_a_flood_without_evicting_others() {
        let now = Instant::now();
        let mut h = History::new(HistoryConfig {
            max_sessions: 10,
            max_sessions_per_source: 3,
            max_bytes_per_source: 10,
            ..cfg()
        });
        let honest = udp(1000);
        let honest_peer = Peer {
            owner: &honest,
            verified: true,
        };
        h.register(100, 1, 0, honest_peer, now).unwrap();
        h.complete(100, 1, b("reply"), now);
        // Another host floods new sessions, one port each.
        let mut refused = 0;
        for port in 0..50u16 {
            let owner = Owner::Addr(SocketAddr::from(([127, 0, 0, 2], port)));
            let peer = Peer {
                owner: &owner,
                verified: true,
            };
            match h.register(u64::from(port) + 1, 1, 0, peer, now) {
                Ok(()) => assert!(h.complete(u64::from(port) + 1, 1, b("r"), now)),
                Err(e) => {
                    assert_eq!(e, RegisterError::SourceSessions);
                    refused += 1;
                }
            }
        }
        assert_eq!(refused, 47);
        let flooder = Owner::Host("127.0.0.2".parse().unwrap());
        assert_eq!(h.source_use(&flooder), (3, 3));
        assert_eq!(h.quota_refused(), 47);
        // The honest session and its reply are still there.
        assert_eq!(h.lookup(100, 1, now), Lookup::Completed(Some(b("reply"))));
        // Bytes: a source over its byte quota is refused new requests
        // until acknowledgements free them.
        h.register(100, 2, 0, honest_peer, now).unwrap();
        h.complete(100, 2, b("0123456789"), now);
        assert_eq!(h.source_use(&honest.source()), (1, 15));
        assert_eq!(
            h.register(100, 3, 0, honest_peer, now),
            Err(RegisterError::SourceBytes)
        );
        h.ack(100, 0, 2, now);
        assert_eq!(h.source_use(&honest.source()), (1, 0));
        h.register(100, 3, 0, honest_peer, now).unwrap();
        // Sessions that end give their quota back.
        h.sweep(now + Duration::from_secs(3600));
        h.sweep(now + Duration::from_secs(7200));
        assert_eq!(h.source_use(&flooder), (0, 0));
    }
}
