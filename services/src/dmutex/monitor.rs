//! [`CsMonitor`]: a shared checker that the peers' users tell when they
//! enter and leave the critical section. It counts overlaps (two inside at
//! once: mutual exclusion broken), entries per peer (nobody starves), and
//! synchronisation delays (from an exit to the next entry of a peer that
//! was already waiting then).
//!
//! It sees the peers of one process; each peer reports its entry after
//! `enter` returned and its exit before it calls `exit`, so an overlap it
//! sees is one that happened.

use crate::lock::lock;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Inner {
    inside: Vec<u32>,
    overlaps: u64,
    first_overlap: Option<(u32, u32)>,
    entries: Vec<u64>,
    last_exit: Option<Instant>,
    sync_total: Duration,
    sync_samples: u64,
    sync_max: Duration,
}

/// The checker (see the module docs).
#[derive(Debug, Default)]
pub struct CsMonitor {
    inner: Mutex<Inner>,
}

/// What a [`CsMonitor`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonitorReport {
    /// Entries, by peer id.
    pub entries: Vec<u64>,
    /// Entries while another peer was inside.
    pub overlaps: u64,
    /// The first overlap: (the peer inside, the peer that entered).
    pub first_overlap: Option<(u32, u32)>,
    /// Mean synchronisation delay, when there was a sample.
    pub sync_delay_mean: Option<Duration>,
    /// Longest synchronisation delay seen.
    pub sync_delay_max: Duration,
    /// Hand-overs measured.
    pub sync_samples: u64,
}

impl MonitorReport {
    /// Entries of every peer.
    pub fn total_entries(&self) -> u64 {
        self.entries.iter().sum()
    }
}

impl CsMonitor {
    /// A checker that has seen nothing.
    pub fn new() -> CsMonitor {
        CsMonitor::default()
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Plain counters: usable after a panic elsewhere.
        lock(&self.inner)
    }

    /// Peer `id` entered; it asked at `asked`.
    pub fn enter(&self, id: u32, asked: Instant) {
        let now = Instant::now();
        let mut s = self.inner();
        if let Some(&other) = s.inside.first() {
            s.overlaps += 1;
            s.first_overlap.get_or_insert((other, id));
            tracing::error!(
                inside = other,
                entered = id,
                "dmutex: two peers in the critical section"
            );
        }
        s.inside.push(id);
        let i = id as usize;
        if s.entries.len() <= i {
            s.entries.resize(i + 1, 0);
        }
        s.entries[i] += 1;
        if let Some(exit) = s.last_exit {
            if asked <= exit {
                let d = now.saturating_duration_since(exit);
                s.sync_total += d;
                s.sync_samples += 1;
                s.sync_max = s.sync_max.max(d);
            }
        }
    }

    /// Peer `id` is about to leave.
    pub fn exit(&self, id: u32) {
        let mut s = self.inner();
        if let Some(pos) = s.inside.iter().position(|&x| x == id) {
            s.inside.remove(pos);
        }
        s.last_exit = Some(Instant::now());
    }

    /// What it has seen so far.
    pub fn report(&self) -> MonitorReport {
        let s = self.inner();
        MonitorReport {
            entries: s.entries.clone(),
            overlaps: s.overlaps,
            first_overlap: s.first_overlap,
            sync_delay_mean: u32::try_from(s.sync_samples)
                .ok()
                .filter(|&k| k > 0)
                .map(|k| s.sync_total / k),
            sync_delay_max: s.sync_max,
            sync_samples: s.sync_samples,
        }
    }
}
