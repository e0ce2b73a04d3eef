//! A test kit for clusters: histories of what clients saw, and a
//! linearizability checker.
//!
//! It depends on nothing of the framework, so the tests of any package,
//! the tour and users' own tests can use it.
//!
//! - [`history`]: a [`Recorder`] that many client tasks share records each
//!   operation on a key-value store (read, write, compare-and-set) with
//!   its invocation and completion times on one monotonic clock and its
//!   outcome: a response, a definite failure, or indeterminate.
//! - [`linearizability`]: [`check`] decides whether a [`History`] is
//!   linearizable, key by key, and explains a failure.
//!
//! ```
//! use rpc_testkit::{check, Op, Recorder, Response};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A history, as the clients of a test would record it.
//! let recorder = Recorder::new();
//! recorder.invoke(1, Op::Write("x", 1)).ok(Response::Written);
//! let read = recorder.invoke(2, Op::Read("x"));
//! let cas = recorder.invoke(3, Op::Cas("x", 1, 2)); // concurrent with the read
//! cas.ok(Response::Cas(true));
//! read.ok(Response::Read(Some(2)));
//! let report = check(&recorder.history())?;
//! assert!(report.is_linearizable(), "{report}");
//! # Ok(())
//! # }
//! ```
//!
//! The checker's benchmark (10,000 operations of a simulated correct
//! register): `cargo bench -p rpc-testkit --bench linearizability`.
#![forbid(unsafe_code)]

pub mod history;
pub mod linearizability;

pub use history::{Call, Entry, History, Op, Outcome, Recorder, Response};
pub use linearizability::{check, Checker, HistoryError, Report, Verdict, Violation};
