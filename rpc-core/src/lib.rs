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
//! # From IDL to a call
//!
//! 1. Declare the interface (`idl/demo.idl`, abridged):
//!
//! ```text
//! package demo.v1;
//! message Amount { sint64 delta = 1; }
//! message Count { int64 value = 1; uint64 executions = 2; }
//! message Overdrawn { int64 balance = 1; int64 requested = 2; }
//! service Counter {
//!   rpc Increment(Amount) returns (Count);                  // at most once (RR + history)
//!   rpc Withdraw(Amount) returns (Count) raises (Overdrawn);  // typed error
//!   rpc Compute(Work) returns (Count) [style = deferred, protocol = RRA];
//!   oneway rpc Nudge(Amount);                                // R: no reply
//!   ...
//! }
//! ```
//!
//! 2. Generate the Rust, either from `build.rs` with
//!    `rpc_codegen::Builder::new().compile(&["idl/demo.idl"])` and
//!    `rpc_core::include_idl!("demo");` in the crate, or with the macro
//!    [`idl!`], which expands to the same code.
//! 3. Implement the generated trait, serve it, and call it through the
//!    generated client stub:
//!
//! ```
//! rpc_core::idl!("../idl/demo.idl");
//! use demo::v1::{Amount, Blob, Count, Counter, CounterClient, CounterServer, Empty, Overdrawn, Work};
//! use rpc_core::{CallContext, MethodError, Status};
//! use std::sync::atomic::{AtomicI64, Ordering};
//!
//! #[derive(Default)]
//! struct MyCounter(AtomicI64);
//!
//! impl Counter for MyCounter {
//!     async fn increment(&self, _: CallContext, r: Amount) -> Result<Count, Status> {
//!         Ok(Count { value: self.0.fetch_add(r.delta, Ordering::SeqCst) + r.delta, executions: 0 })
//!     }
//!     async fn increment_acked(&self, ctx: CallContext, r: Amount) -> Result<Count, Status> {
//!         self.increment(ctx, r).await
//!     }
//!     async fn get(&self, _: CallContext, _: Empty) -> Result<Count, Status> {
//!         Ok(Count { value: self.0.load(Ordering::SeqCst), executions: 0 })
//!     }
//!     async fn withdraw(&self, _: CallContext, r: Amount) -> Result<Count, MethodError<Overdrawn>> {
//!         let balance = self.0.load(Ordering::SeqCst);
//!         Err(MethodError::raised(Overdrawn { balance, requested: r.delta }))
//!     }
//!     async fn slow(&self, ctx: CallContext, w: Work) -> Result<Count, Status> {
//!         self.increment(ctx, Amount { delta: w.delta }).await
//!     }
//!     async fn compute(&self, ctx: CallContext, w: Work) -> Result<Count, Status> {
//!         self.increment(ctx, Amount { delta: w.delta }).await
//!     }
//!     async fn nudge(&self, _: CallContext, r: Amount) -> Result<(), Status> {
//!         self.0.fetch_add(r.delta, Ordering::SeqCst);
//!         Ok(())
//!     }
//!     async fn echo(&self, _: CallContext, b: Blob) -> Result<Blob, Status> {
//!         Ok(b)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Serve it over UDP on loopback ...
//! let server = rpc_core::server::Server::builder()
//!     .add_service(CounterServer::new(MyCounter::default()))
//!     .serve_udp("127.0.0.1:0")
//!     .await?;
//! // ... and call it: one channel (session) multiplexes every call.
//! let counter = CounterClient::connect(&format!("udp://{}", server.local_addr())).await?;
//! // (the same as `CounterClient::new(UdpChannel::connect(addr).await?)`;
//! // `tcp://` and `grpc://` give the other channels.)
//!
//! let count = counter.increment(Amount { delta: 5 }).await?;            // synchronous, at most once
//! assert_eq!(count.value, 5);
//! let err = counter.withdraw(Amount { delta: 100 }).await.unwrap_err();  // typed `raises`
//! assert_eq!(err.raised().map(|o| o.balance), Some(5));
//! let handle = counter.compute(Work { millis: 0, delta: 1 }).await?;    // deferred: a handle at ACCEPT
//! assert_eq!(handle.await?.value, 6);
//! counter.nudge(Amount { delta: 1 }).await?;                            // one-way: returns once sent
//! # Ok(())
//! # }
//! ```
//!
//! The protocol is specified in `idl/PROTOCOL.md`; the modules:
//! - [`status`], [`error`]: what can go wrong, with gRPC's codes;
//! - [`service`]: what a server hosts ([`Service`], [`CallContext`]);
//! - [`call`]: the caller's side ([`Client`], [`Call`], [`Deferred`],
//!   [`GroupClient`]), independent of the transport;
//! - [`envelope`]: the wire message (`idl/rpc/envelope.idl`);
//! - [`server`]: the transport-agnostic engine (duplicate filtering, reply
//!   history, incarnation) and its doors;
//! - [`client`]: the UDP channel (retransmission with an adaptive timeout,
//!   RRA acknowledgements, deferred results that survive loss) and the TCP
//!   channel (the same exchange over a reconnecting framed connection);
//! - [`multicast`]: one call to a group over IP multicast;
//! - [`transport`]: datagram sockets, including an in-memory network, and
//!   the length-delimited framing of TCP;
//! - `tls` (feature `tls`): rustls configurations for the TCP and gRPC
//!   doors and channels;
//! - [`fault`]: a seeded fault-injecting UDP proxy for testing services;
//! - `grpc` (feature `grpc`, on by default): the gRPC face of every service
//!   and a gRPC channel for every client.
//!
//! # Where things are
//! - a datagram is parsed in `envelope/` (`header.rs` reads a frame's
//!   header without decoding the rest);
//! - a request is admitted or refused in `server/admit.rs`, and served in
//!   `server/engine/`;
//! - the RR retransmission timer is `client/exchange/retransmit.rs`, its
//!   timeout `client/rto.rs`;
//! - the reply history evicts in `server/history/evict.rs`;
//! - a generated stub comes from `codegen/src/rust/service.rs` (package
//!   `rpc-codegen`), and reaches this crate only through [`codegen`].
//!
//! # Glossary
//! The words the modules use for their parts, and where each lives:
//! - **envelope**: the one wire message (a request, an answer or a control
//!   message) and its header; [`envelope`]. Its status is
//!   [`envelope::WireStatus`]; the API's is [`Status`].
//! - **protocol** R / RR / RRA: what a call's messages are: a request only
//!   ("maybe"), request and reply, or request, reply and the client's
//!   acknowledgement of the reply; [`Protocol`], on the wire
//!   [`envelope::ExchangeProtocol`].
//! - **style**: how the caller waits (synchronous, asynchronous at the
//!   ACCEPT, deferred, one-way); [`Style`], and the marker types of
//!   [`call::style`], the type parameter of a [`Call`] and a [`GroupCall`]
//!   (a group call has no deferred style).
//! - **channel**: the client's side of a transport, one session shared by
//!   every call made through it; [`Channel`], implemented by
//!   [`client::UdpChannel`], [`client::TcpChannel`] and `grpc::GrpcChannel`.
//! - **link**: what a channel's exchanges send through, and whether it is
//!   reliable: a datagram socket ([`transport::DatagramSocket`]: UDP, the
//!   in-memory network) may lose messages, so requests are retransmitted;
//!   the TCP link, a reconnecting framed connection, loses nothing while a
//!   connection lives, so a request goes out once and is polled for only
//!   after a reconnect; `client/link.rs`, `client/tcp`.
//! - **session**: a client's numbering of its calls (session id, request
//!   ids, the acknowledged floor `ack_up_to`), kept without I/O in
//!   `client/session`; the server keys its history by it.
//! - **exchange**: the messages of one call on a channel (copies,
//!   retransmission timer, PINGs, polls after ACCEPT); `client/exchange`,
//!   its timeout estimate in `client/rto.rs`.
//! - **incarnation**: a random number a server draws at every start and
//!   puts on every message it sends; a client that sees it change knows
//!   the server's history is gone ("outcome unknown"); [`server`].
//! - **history**: the server's stored answers, keyed by (session, request
//!   id), that make a retried request run at most once; its limits,
//!   eviction and tombstones in `server/history`.
//! - **door**: one way into a server (a UDP socket, a TCP or TLS listener,
//!   a gRPC listener), opened with the `serve_*` verbs of
//!   [`server::ServerBuilder`] and [`server::ServerHandle`]; `server/udp.rs`,
//!   `server/tcp`, `grpc/server`.
//! - **engine**: what every door feeds: one message in, its answer out
//!   through the door's [`server::ReplySink`]; [`server::Engine`] in
//!   `server/engine`.
//! - **owner**: the peer a session is bound to (an address, a host or a
//!   verified certificate); `server/history/owner.rs`.
//! - **cookie**: the token that proves a datagram's source address;
//!   `server/verify.rs`.
//! - **budget**: the bytes that partly received stream messages may hold,
//!   all doors together; `server/budget.rs`.
//! - **interceptor**: code run around every call of a server or client;
//!   [`intercept`].
//! - **group**, **member**: one call to several servers and the answer of
//!   each; [`GroupClient`] in [`call`], over IP multicast in [`multicast`].
// Batched UDP I/O is `quinn-udp`'s (see `transport::udp`).
#![forbid(unsafe_code)]

pub mod call;
pub mod client;
mod counter;
pub mod envelope;
pub mod error;
pub mod fault;
#[cfg(feature = "grpc")]
pub mod grpc;
mod hash;
pub mod intercept;
pub mod metadata;
pub mod multicast;
#[cfg(test)]
mod protocol_check;
pub mod server;
pub mod service;
mod setters;
pub mod status;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transport;

#[doc(hidden)]
pub mod codegen;

pub use call::{
    Call, CallOptions, Channel, Client, Completion, Deferred, GroupCall, GroupClient, GroupOutcome,
    GroupStream, Invocation, MemberOutcome, MemberResult, OneWay, Outcome, Stragglers,
};
pub use error::{CallError, Error, MethodError, Never, Raisable};
pub use rpc_macros::idl;
pub use service::{
    AltName, CallContext, Metadata, MethodInfo, PeerIdentity, Protocol, Service, ServiceInfo,
    Style, TransportKind,
};
pub use status::{Code, Status};

/// Includes the Rust that `rpc_codegen::Builder` generated in `build.rs` for
/// `name.idl` (the file stem): `rpc_core::include_idl!("clock");`.
#[macro_export]
macro_rules! include_idl {
    ($name:literal) => {
        ::core::include!(::core::concat!(::core::env!("OUT_DIR"), "/", $name, ".rs"));
    };
}
