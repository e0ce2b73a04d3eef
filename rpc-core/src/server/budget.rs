//! The server-wide budget of bytes that partly received messages may hold
//! ([`ServerConfig::buffer_budget`](super::ServerConfig::buffer_budget)).
//!
//! A stranger can open a connection, announce a large message and send most
//! of it, then stall: what it sent stays in the server's memory until the
//! message completes or the connection closes. Every door takes the memory
//! for such messages from one budget, so all connections together can make
//! the server hold at most the budget (plus a small, fixed allowance per
//! connection, see the doors), however many there are.
//!
//! - A [`Reservation`] is taken for a message's announced length before its
//!   body is buffered (all of it at once: a connection that holds a
//!   reservation can always complete its message, so connections never
//!   hold part of what they need while waiting for the rest of it) and is
//!   released when it is dropped: when the message is handed on, or when
//!   the connection closes for whatever reason (error, timeout, shutdown,
//!   task cancelled). No path leaks it.
//! - Waiting is first come, first served ([`tokio::sync::Semaphore`], one
//!   permit per byte): a large message waiting at the front is not
//!   overtaken by smaller ones behind it, so it is not starved.
//! - Counters: bytes reserved now and at most, bytes of reserved messages
//!   received so far, reservations that had to wait, refusals.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A snapshot of the server's buffer budget, from
/// [`ServerHandle::buffer_stats`](super::ServerHandle::buffer_stats).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BufferStats {
    /// The budget: [`ServerConfig::buffer_budget`](super::ServerConfig::buffer_budget).
    pub budget: usize,
    /// Bytes reserved now by messages being received (never more than
    /// `budget`).
    pub reserved: usize,
    /// The most bytes ever reserved at once.
    pub peak: usize,
    /// Bytes of the reserved messages received so far (at most
    /// `reserved`): what they make the server hold now.
    pub filled: usize,
    /// Reservations granted.
    pub reservations: u64,
    /// Reservations that could not be granted at once and waited (TCP).
    pub waited: u64,
    /// Reservations refused: a TCP connection closed after waiting in
    /// vain until its frame timeout, a gRPC request refused at once.
    pub refused: u64,
}

/// The budget shared by every door of one server.
pub(crate) struct ByteBudget {
    limit: usize,
    permits: Arc<Semaphore>,
    reserved: AtomicUsize,
    peak: AtomicUsize,
    filled: AtomicUsize,
    reservations: AtomicU64,
    waited: AtomicU64,
    refused: AtomicU64,
}

impl fmt::Debug for ByteBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteBudget")
            .field("limit", &self.limit)
            .field("reserved", &self.reserved.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl ByteBudget {
    /// A budget of `limit` bytes (at most [`Semaphore::MAX_PERMITS`]; the
    /// server's configuration is validated before).
    pub(crate) fn new(limit: usize) -> Arc<ByteBudget> {
        let limit = limit.min(Semaphore::MAX_PERMITS);
        Arc::new(ByteBudget {
            limit,
            permits: Arc::new(Semaphore::new(limit)),
            reserved: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            filled: AtomicUsize::new(0),
            reservations: AtomicU64::new(0),
            waited: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// The budget in bytes.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// `bytes` reserved now, if they are free (and no one waits before).
    pub(crate) fn try_reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        let n = u32::try_from(bytes).ok()?;
        let permit = Arc::clone(&self.permits).try_acquire_many_owned(n).ok()?;
        Some(self.granted(permit, bytes))
    }

    /// `bytes` reserved once they are free, in turn with the other waiters;
    /// `None` if they never can be (more than the budget). Counted as a
    /// wait. Cancel safe: dropped, it takes nothing.
    pub(crate) async fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        self.waited.fetch_add(1, Ordering::Relaxed);
        if bytes > self.limit {
            return None;
        }
        let n = u32::try_from(bytes).ok()?;
        let permit = Arc::clone(&self.permits).acquire_many_owned(n).await.ok()?;
        Some(self.granted(permit, bytes))
    }

    /// Counts a reservation refused (given up on, or not waited for).
    pub(crate) fn count_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    fn granted(self: &Arc<Self>, permit: OwnedSemaphorePermit, bytes: usize) -> Reservation {
        self.reservations.fetch_add(1, Ordering::Relaxed);
        let now = self.reserved.fetch_add(bytes, Ordering::AcqRel) + bytes;
        self.peak.fetch_max(now, Ordering::AcqRel);
        Reservation {
            budget: Arc::clone(self),
            bytes,
            filled: 0,
            _permit: permit,
        }
    }

    /// A snapshot of the counters.
    pub(crate) fn stats(&self) -> BufferStats {
        BufferStats {
            budget: self.limit,
            reserved: self.reserved.load(Ordering::Acquire),
            peak: self.peak.load(Ordering::Acquire),
            filled: self.filled.load(Ordering::Acquire),
            reservations: self.reservations.load(Ordering::Relaxed),
            waited: self.waited.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// Bytes taken from the budget for one message; given back when dropped.
#[must_use = "the bytes are given back as soon as the reservation is dropped"]
pub(crate) struct Reservation {
    budget: Arc<ByteBudget>,
    bytes: usize,
    /// What [`Reservation::set_filled`] last said.
    filled: usize,
    /// The semaphore's share; released (and waiters woken) on drop.
    _permit: OwnedSemaphorePermit,
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("bytes", &self.bytes)
            .field("filled", &self.filled)
            .finish()
    }
}

impl Reservation {
    /// Records how many bytes of the message have arrived (for
    /// [`BufferStats::filled`]); capped at the reservation.
    pub(crate) fn set_filled(&mut self, filled: usize) {
        let filled = filled.min(self.bytes);
        if filled > self.filled {
            self.budget
                .filled
                .fetch_add(filled - self.filled, Ordering::AcqRel);
        } else {
            self.budget
                .filled
                .fetch_sub(self.filled - filled, Ordering::AcqRel);
        }
        self.filled = filled;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.filled.fetch_sub(self.filled, Ordering::AcqRel);
        self.budget.reserved.fetch_sub(self.bytes, Ordering::AcqRel);
        // The permit is released after this body: `reserved` never counts
        // less than what the semaphore has handed out.
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_are_given_back_on_every_path() {
        let budget = ByteBudget::new(100);
        let mut a = budget.try_reserve(60).unwrap();
        a.set_filled(10);
        a.set_filled(70); // capped
        assert!(budget.try_reserve(50).is_none(), "only 40 left");
        let s = budget.stats();
        assert_eq!((s.reserved, s.peak, s.filled), (60, 60, 60));
        // A waiter gets its bytes when they are given back.
        let waiter = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { budget.reserve(50).await.map(|r| r.bytes) })
        };
        tokio::task::yield_now().await;
        drop(a);
        assert_eq!(waiter.await.unwrap(), Some(50));
        // A cancelled wait takes nothing.
        let c = budget.try_reserve(100).unwrap();
        {
            let wait = budget.reserve(1);
            tokio::pin!(wait);
            assert!(futures::poll!(wait.as_mut()).is_pending());
        } // dropped here
        drop(c);
        let s = budget.stats();
        assert_eq!((s.reserved, s.filled, s.peak), (0, 0, 100));
        assert_eq!((s.reservations, s.waited), (3, 2));
        assert!(budget.try_reserve(100).is_some());
        // More than the budget can never be had.
        assert!(budget.reserve(101).await.is_none());
    }
}
