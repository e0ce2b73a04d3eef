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
#![forbid(unsafe_code)]

/// Rust generated from `idl/demo.idl` (package `demo.v1`) and
/// `idl/clock.idl` (package `clock.v1`).
pub mod proto {
    rpc_core::include_idl!("demo");
    rpc_core::include_idl!("clock");
}

pub mod clock;
pub mod counter;
pub mod election;

pub use counter::CounterService;
