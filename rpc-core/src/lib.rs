//! Runtime of the RPC framework.
//!
//! Interfaces are declared once in `.idl` files; `rpc-codegen` (from
//! `build.rs`) or [`idl!`] turns them into prost messages, a server trait,
//! a dispatcher and client stubs that target this crate. This crate runs
//! them: the envelope, the exchange protocols R, RR and RRA with request
//! ids, retransmission, duplicate filtering and a reply history (so that
//! non-idempotent calls run at most once), and the call styles
//! synchronous, asynchronous, deferred-synchronous, one-way and multicast.
//!
//! The semantics are specified in `shared/SEMANTICS.md`; the modules:
//! - [`status`], [`error`]: what can go wrong, with gRPC's codes;
//! - [`service`]: what a server hosts ([`Service`], [`CallContext`]);
//! - [`call`]: the caller's side ([`Client`], [`Call`], [`Deferred`],
//!   [`GroupClient`]), independent of the transport;
//! - `grpc` (feature `grpc`, on by default): the gRPC face of every service
//!   and a gRPC channel for every client.
#![forbid(unsafe_code)]

pub mod call;
pub mod client;
pub mod envelope;
pub mod error;
pub mod fault;
#[cfg(feature = "grpc")]
pub mod grpc;
pub mod server;
pub mod service;
pub mod status;
pub mod transport;

#[doc(hidden)]
pub mod codegen;

pub use call::{
    Call, CallOptions, Channel, Client, Completion, Deferred, GroupCall, GroupClient, GroupOutcome, Invocation,
    MemberOutcome, MemberResult, OneWay, Outcome,
};
pub use error::{CallError, Error, MethodError, Never, Raisable};
pub use rpc_macros::idl;
pub use service::{CallContext, Metadata, MethodInfo, Protocol, Service, ServiceInfo, Style, TransportKind};
pub use status::{Code, Status};

/// Includes the Rust that `rpc_codegen::Builder` generated in `build.rs` for
/// `name.idl` (the file stem): `rpc_core::include_idl!("clock");`.
#[macro_export]
macro_rules! include_idl {
    ($name:literal) => {
        ::core::include!(::core::concat!(::core::env!("OUT_DIR"), "/", $name, ".rs"));
    };
}
