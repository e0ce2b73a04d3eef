//! Remote services declared in `idl/` and served by the framework itself.
//!
//! - [`counter`]: the demonstration service of the tour, the tests and the
//!   benchmark (`idl/demo.idl`), whose methods exercise every protocol and
//!   call style.
#![forbid(unsafe_code)]

/// Rust generated from `idl/demo.idl` (package `demo.v1`).
pub mod proto {
    rpc_core::include_idl!("demo");
}

pub mod counter;

pub use counter::CounterService;
