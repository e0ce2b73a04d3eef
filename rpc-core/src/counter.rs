//! The one counter helper: every statistic of the crate (server, client,
//! multicast, fault proxy) is a relaxed atomic bumped on the hot path and
//! read as a snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
