//! One way to take a `std::sync::Mutex` in this crate: a poisoned lock is
//! taken anyway.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, poisoned or not. Every value this crate keeps behind a
/// `std::sync::Mutex` is plain (counters, values replaced whole, or state
/// left consistent before anything can panic), so a panic elsewhere
/// leaves it usable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
