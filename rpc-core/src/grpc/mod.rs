//! The gRPC face: every service a server hosts is also a real gRPC service
//! (`/<package>.<Service>/<Method>`), and every generated client can call a
//! gRPC server through [`GrpcChannel`].
//!
//! How the pieces fit:
//! - Generated code implements `tonic_build`'s `Service`/`Method` traits
//!   for the IDL model and emits tonic's server for each service with
//!   [`BytesCodec`] (messages stay encoded; the dispatcher decodes them as
//!   for UDP). The generated tonic trait is implemented for [`Door`], whose
//!   [`Door::unary`] does the work; `Service::grpc_route` hands the
//!   generated server to the door ([`server`]).
//! - [`ServerBuilder::serve_grpc`](crate::server::ServerBuilder::serve_grpc) /
//!   [`ServerHandle::serve_grpc`](crate::server::ServerHandle::serve_grpc) open the door
//!   (HTTP/2 over TCP) next to UDP and TCP; all share one engine and history.
//! - [`GrpcChannel`] is the client side ([`client`]).
//!
//! # What travels how
//! | ours | gRPC |
//! |---|---|
//! | status code | `grpc-status`, same number ([`crate::Code`] is gRPC's) |
//! | status message | `grpc-message` |
//! | typed `raises` error | `grpc-status-details-bin`: a `google.rpc.Status` {code, message, details: [`google.protobuf.Any` {`type.googleapis.com/<full name>`, encoded error}]} ([`status`]) |
//! | deadline | `grpc-timeout` (both ways; the handler's `ctx.deadline`) |
//! | metadata map | ASCII metadata; reserved keys (`rpc-*`, `grpc-*`, HTTP headers) and binary `-bin` entries are not part of the map |
//! | session, request id, attempt, incarnation, ack floor, protocol, accept, idempotent | one `rpc-call` header ([`metadata::CallHeader`]), sent never-indexed |
//! | instance | `rpc-instance` |
//! | server incarnation, "this is the ACCEPT" (responses) | `rpc-incarnation`, `rpc-accepted` |
//!
//! # Semantics over gRPC
//! - A call with `rpc-call` (our client) goes through the server's
//!   engine like a UDP or TCP request: duplicates are filtered, replies
//!   kept, so a call retried after a connection failure runs at most once;
//!   a retry reaching a restarted server gets "outcome unknown".
//! - A call without it (any other gRPC client) runs once per request, with
//!   session and request id 0 and no history, under the same handler
//!   permits and waiting slots as every request (beyond them it is refused
//!   with RESOURCE_EXHAUSTED, not run), and is counted in the server's
//!   statistics.
//! - One-way methods: the reply (`google.protobuf.Empty`, i.e. no bytes) is
//!   sent as soon as the request is taken (it has a handler slot or a
//!   waiting slot), before the handler finishes; it says nothing about the
//!   handler's outcome.
//! - TLS (feature `tls`): the door serves HTTP/2 over TLS with ALPN `h2`
//!   when its `GrpcServerConfig` has a TLS configuration, and
//!   `GrpcChannel::connect_tls` connects to such a door (or any gRPC server
//!   over TLS); a TLS handshake refused by either side fails the call with
//!   UNAUTHENTICATED, not run.
//! - Asynchronous and deferred calls from our client (flag `a` of `rpc-call`):
//!   the server answers with an empty message and `rpc-accepted: 1` at
//!   ACCEPT; a deferred result is collected by re-sending the same request
//!   id, answered from the history. Other clients get the result directly.
//! - Cancellation: our client that abandons a call (drops it, or its
//!   deferred handle) sends its CANCEL as a request of its own, flag `c` of
//!   `rpc-call` with an empty message; a plain caller's stream reset
//!   cancels its call.
//! - RRA: acknowledgements ride on later requests (the ack floor in `rpc-call`, the
//!   highest id up to which every call of the session has ended); there is
//!   no separate ACK message over gRPC, so the history of an RRA call is
//!   freed by the next call or by its lifetime.

pub mod client;
pub mod codec;
pub mod metadata;
pub mod server;
pub mod status;

pub use client::{GrpcChannel, GrpcClientConfig, GrpcError};
pub use codec::BytesCodec;
pub use server::{route, Door, Route};
