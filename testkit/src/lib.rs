//! A test kit for clusters: nodes as real child processes, histories of
//! what clients saw, and a linearizability checker.
//!
//! It depends on nothing of the framework, so the tests of any package,
//! the tour and users' own tests can use it on any server binary; only its
//! feature `udp` brings in `rpc-core`, whose fault proxy carries the links
//! of a UDP [`Net`].
//!
//! - [`node`]: a [`NodeBuilder`] starts a binary as a child process with
//!   its output in files of a per-test directory ([`TestDir`]) and reads
//!   its address from its output; the [`Node`] kills (SIGKILL), pauses
//!   (SIGSTOP), resumes (SIGCONT) and restarts it on the same address and
//!   data directory. Children never outlive the test: killed on drop, and
//!   on Linux by the kernel when the test process dies. A [`Cluster`]
//!   holds the nodes of one test. The directory is removed only when the
//!   test calls [`Cluster::passed`] (or [`TestDir::passed`]) at its end,
//!   so a test that fails in any way (a panic, an `Err` returned early, a
//!   timeout dropping its future) keeps the logs its errors name.
//! - [`history`]: a [`Recorder`] that many client tasks share records each
//!   operation on a key-value store (read, write, compare-and-set) with
//!   its invocation and completion times on one monotonic clock and its
//!   outcome: a response, a definite failure, or indeterminate.
//! - [`linearizability`]: [`check`] decides whether a [`History`] is
//!   linearizable, key by key, and explains a failure.
//! - [`tcp_proxy`]: a [`TcpFaultProxy`] between clients and a server that
//!   delays, throttles, cuts, blackholes (a partition: silence, no reset)
//!   and pauses TCP connections while they run, and counts what it did.
//! - [`net`]: a cluster's [`Net`]: one fault proxy per directed link
//!   between named members (nodes and clients), with partitions,
//!   isolation, and loss, duplication, reordering and delay per link or
//!   per node, changed while the test runs; over TCP, or over UDP with
//!   the framework's fault proxy (feature `udp`).
//! - [`nemesis`]: a seeded [`Schedule`] of kills, restarts, pauses,
//!   partitions, loss bursts and heals applied to a [`Cluster`] and its
//!   [`Net`] while clients run, printed with its seed
//!   (`RPC_NEMESIS_SEED` repeats it).
//!
//! ```
//! use rpc_testkit::{check, Cluster, NodeBuilder, Op, Recorder, Response};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A node: any binary; `{addr}` is where it should listen, `{data}` its
//! // data directory. This one leaves a file there, says where it listens
//! // (the line that `start` waits for) and waits.
//! let mut cluster = Cluster::new()?;
//! let node = cluster.start(
//!     NodeBuilder::new("a", "sh")
//!         .args(["-c", "touch {data}/seen; echo listening on 127.0.0.1:4000; exec sleep 600"]),
//! )?;
//! assert_eq!(node.addr().port(), 4000);
//! node.pause()?;
//! node.resume()?;
//! node.kill()?;
//! node.restart()?; // same address and data directory, next run's log files
//! assert!(node.is_running() && node.data_dir().join("seen").exists());
//! // The last line of a test: only a test that gets here removes its
//! // directory; a failing one keeps the logs its errors name.
//! cluster.passed();
//!
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
//!
//! # Unsafe code
//!
//! Denied, as in the whole workspace, with one exception: the hook between
//! `fork` and `exec` that sets a child's parent-death signal (in
//! `node/process.rs`, with its safety argument).

/// Builder setters that each set one field and return the builder:
/// `setters! { Type { /// doc
/// name(argument: T) => field, ... } }` makes
/// `pub fn name(mut self, argument: T) -> Type`.
macro_rules! setters {
    ($ty:ident { $( $(#[$doc:meta])* $name:ident($arg:ident: $t:ty) => $field:ident ),* $(,)? }) => {
        impl $ty {
            $(
                $(#[$doc])*
                pub fn $name(mut self, $arg: $t) -> $ty {
                    self.$field = $arg;
                    self
                }
            )*
        }
    };
}

#[cfg(unix)]
mod cluster;
mod dir;
pub mod history;
pub mod linearizability;
#[cfg(unix)]
pub mod nemesis;
pub mod net;
#[cfg(unix)]
pub mod node;
pub mod poll;
pub mod tcp_proxy;

#[cfg(unix)]
pub use cluster::Cluster;
pub use dir::TestDir;
pub use history::{Call, Entry, History, Op, Outcome, Recorder, Response};
pub use linearizability::{check, Checker, HistoryError, Report, Verdict, Violation};
#[cfg(unix)]
pub use nemesis::{Fault, FaultKind, Nemesis, NemesisError, Schedule, SeedError, StepError};
pub use net::{reserve_tcp_addr, reserve_udp_addr, LinkFaults, Net, NetError};
pub use node::{address_in_line, Exit, Logs, Node, NodeBuilder, NodeError, Output};
#[cfg(unix)]
pub use poll::poll_until;
pub use tcp_proxy::{
    Direction, DirectionStats, ProxyError, TcpFaultProxy, TcpProxyConfig, TcpProxyStats,
};
