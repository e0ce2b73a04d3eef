//! Remote services declared in `idl/` and served by the framework itself.
//!
//! - [`counter`]: the demonstration service of the tour, the tests and the
//!   benchmark (`idl/demo.idl`), whose methods exercise every protocol and
//!   call style.
//! - [`clock`]: the clock service (`idl/clock.idl`): a disciplined clock
//!   per process, Cristian/NTP synchronisation, the Berkeley algorithm,
//!   Lamport, vector and hybrid logical clocks.
//! - [`election`]: leader election (bully, ring), reusable by any group of
//!   nodes; the clock service's members use it to replace a dead master.
//! - [`mutex`]: the lock service (`idl/mutex.idl`): named locks with
//!   leases and fencing tokens, a client library with renewal and release
//!   on drop, and a `Resource` that refuses stale tokens.
//! - [`consensus`]: the consensus service (`idl/consensus.idl`): a
//!   replicated, durable, linearizable key-value store on openraft, with
//!   this framework as Raft's network.
//! - [`dmutex`]: distributed mutual exclusion among N peers
//!   (`idl/dmutex.idl`): central server, token ring, Ricart–Agrawala,
//!   Lamport's and Maekawa's algorithms, with their message counts.
//! - [`twopc`]: two-phase commit (`idl/twopc.idl`): a coordinator and
//!   participants with durable, checksummed logs, recovery after a crash
//!   of any party, and fault injection points for tests.
#![forbid(unsafe_code)]

/// Rust generated from `idl/demo.idl` (package `demo.v1`) and
/// `idl/clock.idl` (package `clock.v1`) and `idl/mutex.idl` (package
/// `mutex.v1`), `idl/consensus.idl` (package `consensus.v1`) and
/// `idl/dmutex.idl` (package `dmutex.v1`) and `idl/twopc.idl` (package
/// `twopc.v1`).
pub mod proto {
    rpc_core::include_idl!("demo");
    rpc_core::include_idl!("clock");
    rpc_core::include_idl!("mutex");
    rpc_core::include_idl!("consensus");
    rpc_core::include_idl!("dmutex");
    rpc_core::include_idl!("twopc");
}

pub mod clock;
pub mod consensus;
pub mod counter;
pub mod dmutex;
pub mod election;
mod ids;
mod lock;
mod logging;
pub mod mutex;
pub mod twopc;

pub use counter::CounterService;
pub use logging::init_tracing;
