//! Logical clocks: Lamport, vector and hybrid (HLC), carried in call
//! metadata.
//!
//! Each clock has two functions for the wire: `stamp` (a send event:
//! advance, then write the clock into outgoing metadata) and `merge` (a
//! receive event: read the remote clock from incoming metadata, advance
//! past it). `merge` rejects malformed metadata with `INVALID_ARGUMENT`
//! and changes nothing then; metadata without the clock's key is not an
//! event of that clock (`Ok(None)`).
//!
//! # Metadata keys
//!
//! | key | value | example |
//! |---|---|---|
//! | [`LAMPORT_KEY`] `clock-lamport` | the counter, decimal `u64` | `42` |
//! | [`VECTOR_KEY`] `clock-vector` | `id=counter` pairs, `,`-separated, ids `u32` ascending, counters `u64`; zero entries may be left out; empty = all zero | `1=4,3=7` |
//! | [`HLC_KEY`] `clock-hlc` | `<l>.<c>`: `l` the physical part in ns since the Unix epoch (decimal `i64`), `c` the logical part (decimal `u32`) | `1700000000123456789.2` |
//!
//! # Wiring
//!
//! [`ClockInterceptor`] carries the clocks on every call and answer, as a
//! server interceptor (merge the request's clocks before the handler,
//! refusing the call when they are malformed or too far ahead; stamp the
//! answer's metadata after it) and a client interceptor (stamp each
//! request; merge each answer's clocks):
//!
//! ```no_run
//! # async fn f(clocks: std::sync::Arc<rpc_services::clock::logical::LogicalClocks>, client: rpc_core::Client) {
//! use rpc_services::clock::logical::ClockInterceptor;
//! let interceptor = ClockInterceptor::new(clocks);
//! let server = rpc_core::server::Server::builder().intercept(interceptor.clone());
//! let client = client.intercepted(interceptor);
//! # let _ = (server, client); }
//! ```
//!
//! It carries all three clocks unless told otherwise: a service that needs
//! one clock carries only that one
//! (`ClockInterceptor::new(clocks).only(ClockKinds::HYBRID)`), which costs
//! a third of the metadata. Both sides of a call should carry the same
//! kinds: a clock a side does not carry is neither written nor read by it.
//!
//! # Files
//!
//! - `wire.rs`: decimals and the refusal of malformed metadata;
//! - `lamport.rs`: [`Lamport`];
//! - `vector.rs`: [`VectorClock`], [`Causality`], [`VectorClocks`] and the
//!   vector's wire form;
//! - `hybrid.rs`: [`Hlc`], [`HybridClock`];
//! - `interceptor.rs`: [`ClockInterceptor`], [`ClockKinds`];
//! - this file: the metadata keys and [`LogicalClocks`], the three clocks
//!   of a node stamped and merged together.

mod hybrid;
mod interceptor;
mod lamport;
mod vector;
mod wire;

pub use hybrid::{Hlc, HybridClock};
pub use interceptor::{ClockInterceptor, ClockKinds};
pub use lamport::Lamport;
pub use vector::{Causality, VectorClock, VectorClocks, MAX_VECTOR_ENTRIES};

use super::time_source::TimeSource;
use crate::lock::lock;
use rpc_core::{Metadata, Status};
use std::cell::RefCell;
use std::sync::Arc;
use vector::parse_vector;
use wire::{malformed, parse};

/// Metadata key of the Lamport clock.
pub const LAMPORT_KEY: &str = "clock-lamport";
/// Metadata key of the vector clock.
pub const VECTOR_KEY: &str = "clock-vector";
/// Metadata key of the hybrid logical clock.
pub const HLC_KEY: &str = "clock-hlc";

thread_local! {
    /// Scratch space of [`LogicalClocks::merge`] (it runs on every call and
    /// answer): the entries of a parsed vector.
    static SCRATCH: RefCell<Vec<(u32, u64)>> = const { RefCell::new(Vec::new()) };
}

/// The three clocks of one node, stamped and merged together.
#[derive(Debug)]
pub struct LogicalClocks {
    /// Lamport.
    pub lamport: Lamport,
    /// Vector.
    pub vector: VectorClocks,
    /// Hybrid.
    pub hybrid: HybridClock,
}

impl LogicalClocks {
    /// Node `id`'s clocks; the hybrid one over `time`, refusing remote
    /// clocks more than `max_offset_ns` ahead.
    pub fn new(id: u32, time: Arc<TimeSource>, max_offset_ns: i64) -> LogicalClocks {
        LogicalClocks {
            lamport: Lamport::new(),
            vector: VectorClocks::new(id),
            hybrid: HybridClock::new(time, max_offset_ns),
        }
    }

    /// A send event of every clock, written into `md`.
    pub fn stamp(&self, md: &mut Metadata) {
        self.stamp_kinds(md, ClockKinds::ALL);
    }

    /// A send event of the clocks `kinds` names, written into `md`.
    pub fn stamp_kinds(&self, md: &mut Metadata, kinds: ClockKinds) {
        if kinds.lamport {
            self.lamport.stamp(md);
        }
        if kinds.vector {
            self.vector.stamp_into(md);
        }
        if kinds.hybrid {
            self.hybrid.stamp(md);
        }
    }

    /// The stamp of a send event as a fresh map (for a reply's `stamp`
    /// field, or to copy into a call's metadata).
    pub fn stamped(&self) -> Metadata {
        let mut md = Metadata::new();
        self.stamp(&mut md);
        md
    }

    /// A receive event of every clock present in `md`. Everything is
    /// parsed and checked first, so a refusal changes no clock.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` (malformed) or `OUT_OF_RANGE` (HLC too far
    /// ahead).
    pub fn merge(&self, md: &Metadata) -> Result<(), Status> {
        self.merge_kinds(md, ClockKinds::ALL)
    }

    /// [`LogicalClocks::merge`] of the clocks `kinds` names; the others'
    /// entries are not read.
    ///
    /// # Errors
    /// As [`LogicalClocks::merge`].
    pub fn merge_kinds(&self, md: &Metadata, kinds: ClockKinds) -> Result<(), Status> {
        let lamport = if kinds.lamport {
            parse::<u64>(md, LAMPORT_KEY)?
        } else {
            None
        };
        let hlc = if kinds.hybrid {
            parse::<Hlc>(md, HLC_KEY)?
        } else {
            None
        };
        let observe_rest = |vector: Option<&[(u32, u64)]>| -> Result<(), Status> {
            if let Some(h) = hlc {
                self.hybrid.observe(h)?;
            }
            if let Some(l) = lamport {
                self.lamport.observe(l);
            }
            if let Some(entries) = vector {
                self.vector.observe_entries(entries);
            }
            Ok(())
        };
        match md.get(VECTOR_KEY).filter(|_| kinds.vector) {
            None => observe_rest(None),
            Some(text) => SCRATCH.with_borrow_mut(|entries| {
                parse_vector(text, entries).map_err(|e| malformed(VECTOR_KEY, text, e))?;
                observe_rest(Some(entries))
            }),
        }
    }
}

#[cfg(test)]
mod tests;
