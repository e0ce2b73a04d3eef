//! The Lamport clock: one counter, advanced on every event.

use super::wire::parse;
use super::LAMPORT_KEY;
use rpc_core::{Metadata, Status};
use std::sync::atomic::{AtomicU64, Ordering};

/// A Lamport clock: one counter, advanced on every event.
#[derive(Debug, Default)]
pub struct Lamport(AtomicU64);

impl Lamport {
    /// A clock at 0.
    pub fn new() -> Lamport {
        Lamport::default()
    }

    /// The current value.
    pub fn now(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Sets the counter to `next(current)`; returns the new value.
    fn update(&self, next: impl Fn(u64) -> u64) -> u64 {
        let mut current = self.0.load(Ordering::Acquire);
        loop {
            let new = next(current);
            match self
                .0
                .compare_exchange_weak(current, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return new,
                Err(seen) => current = seen,
            }
        }
    }

    /// A local event: advances and returns the new value.
    pub fn tick(&self) -> u64 {
        self.update(|v| v.saturating_add(1))
    }

    /// A send event: advances and writes the value under [`LAMPORT_KEY`].
    pub fn stamp(&self, md: &mut Metadata) -> u64 {
        let v = self.tick();
        md.insert(LAMPORT_KEY, itoa::Buffer::new().format(v));
        v
    }

    /// A receive event: `max(local, remote) + 1`.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` when the value is not a decimal `u64`.
    pub fn merge(&self, md: &Metadata) -> Result<Option<u64>, Status> {
        let Some(remote) = parse::<u64>(md, LAMPORT_KEY)? else {
            return Ok(None);
        };
        Ok(Some(self.observe(remote)))
    }

    /// A receive event of a remote value already parsed.
    pub fn observe(&self, remote: u64) -> u64 {
        self.update(|v| v.max(remote).saturating_add(1))
    }
}
