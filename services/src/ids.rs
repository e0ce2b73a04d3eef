//! Ids a client makes up for itself (a store client's id, a lock
//! acquire's id): random enough not to collide between processes and
//! calls, not secret.

use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::atomic::{AtomicU64, Ordering};

/// A random 64-bit number, different per call: a per-process counter and
/// the process id through a randomly keyed hasher.
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.finish()
}
