//! One client session's entries and counts ([`Session`]), and the
//! bookkeeping of what leaves the history ([`Removed`], [`Tally`],
//! [`Record`]).

use super::idmap::IdMap;
use super::owner::Owner;
use bytes::Bytes;
use std::time::Instant;

#[derive(Debug, Clone)]
pub(super) enum State {
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

#[derive(Debug, Clone)]
pub(super) struct Session {
    pub(super) entries: IdMap<State>,
    pub(super) floor: u64,
    pub(super) max_evicted_id: u64,
    /// The highest request id ever registered (for a tombstone).
    pub(super) max_id: u64,
    pub(super) completed: usize,
    /// `Acked` markers.
    pub(super) acked: usize,
    pub(super) in_progress: usize,
    /// Bytes of this session's stored replies.
    pub(super) bytes: usize,
    pub(super) last_active: Instant,
    /// Sequence number of this session's newest record in `History::activity`.
    pub(super) touch_seq: u64,
    /// The peer the session belongs to.
    pub(super) owner: Owner,
    /// The slot of `owner.source()` in `History::sources`.
    pub(super) slot: usize,
    /// The owner's address is verified (see [`Ownership::Own`]).
    pub(super) verified: bool,
}

impl Session {
    pub(super) fn new(now: Instant, owner: Owner, slot: usize, verified: bool) -> Session {
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

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes one entry.
    pub(super) fn remove(&mut self, id: u64) -> Option<Removed> {
        let state = self.entries.remove(&id)?;
        Some(self.uncount(state))
    }

    /// Takes a removed or replaced entry off the session's counts.
    pub(super) fn uncount(&mut self, state: State) -> Removed {
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
    pub(super) fn done(&self) -> usize {
        self.completed + self.acked
    }

    /// The highest id this session is known to have used.
    pub(super) fn max_seen(&self) -> u64 {
        self.max_id.max(self.floor).max(self.max_evicted_id)
    }
}

/// What [`Session::remove`] removed.
#[derive(Debug, Clone, Copy)]
pub(super) enum Removed {
    Running,
    /// A completed entry with a reply of this many bytes.
    Completed(usize),
    /// An `Acked` marker.
    Marker,
}

/// Entries a session removed in one go, counted without allocating.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Tally {
    /// Entries with a reply or still running (markers are not counted:
    /// their reply was counted when it was acknowledged).
    pub(super) count: u64,
    pub(super) running: usize,
    pub(super) completed: usize,
    pub(super) acked: usize,
    pub(super) bytes: usize,
}

impl Tally {
    pub(super) fn add(&mut self, removed: Removed) {
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
pub(super) struct Record {
    pub(super) seq: u64,
    pub(super) session: u64,
    pub(super) request: u64,
    pub(super) stored: Instant,
}
