//! What a server hosts: [`Service`]s described by static [`ServiceInfo`]
//! and [`MethodInfo`], called with a [`CallContext`].
//!
//! Generated code implements [`Service`] for `<Name>Server<S>`, which routes
//! by method id to the user's implementation of the generated trait.

use crate::status::Status;
use bytes::Bytes;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// Metadata carried with every call (logical clocks, auth tokens, trace
/// ids, ...). Keys are lowercase ASCII by convention, as in gRPC.
pub type Metadata = HashMap<String, String>;

/// The exchange protocol of a call (`idl/PROTOCOL.md`, section 5, "Exchange
/// protocols: R, RR, RRA").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Request only: sent once, no reply ("maybe" semantics).
    R,
    /// Request, reply; the reply acknowledges the request.
    RR,
    /// Request, reply, acknowledgement of the reply.
    RRA,
}

/// How the caller waits (`idl/PROTOCOL.md`, section 12, "Call styles").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Style {
    /// Wait for the result.
    Sync,
    /// Continue at the server's ACCEPT; the result is not collected.
    Async,
    /// Get a handle at the ACCEPT; collect the result later.
    Deferred,
    /// Send and do not wait for anything (protocol R).
    OneWay,
}

/// Static description of one method, generated from the IDL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodInfo {
    /// Method name as declared, e.g. `GetTime`.
    pub name: &'static str,
    /// Stable method id (FNV-1a 32 of `<package>.<Service>/<Method>`).
    pub id: u32,
    /// Full protobuf name of the request type.
    pub request_type: &'static str,
    /// Full protobuf name of the reply type (empty for one-way methods).
    pub response_type: &'static str,
    /// Full protobuf name of the `raises` type (empty when none).
    pub raises_type: &'static str,
    /// Declared `oneway`.
    pub oneway: bool,
    /// Declared `idempotent`: safe to run again, no reply history needed.
    pub idempotent: bool,
    /// Default protocol.
    pub protocol: Protocol,
    /// Default style.
    pub style: Style,
    /// Default per-call timeout in milliseconds (0: the client's default).
    pub timeout_ms: u64,
    /// Default retries (attempts after the first); `None`: the client's default.
    pub retries: Option<u32>,
}

/// Static description of one service, generated from the IDL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Dotted package, e.g. `demo.v1` (may be empty).
    pub package: &'static str,
    /// Service name, e.g. `Clock`.
    pub name: &'static str,
    /// `<package>.<name>`, the object reference on the wire and the gRPC
    /// service path.
    pub full_name: &'static str,
    /// Every method, in declaration order.
    pub methods: &'static [MethodInfo],
}

impl ServiceInfo {
    /// The method with this id.
    pub fn method(&self, id: u32) -> Option<&'static MethodInfo> {
        self.methods.iter().find(|m| m.id == id)
    }

    /// The method with this name.
    pub fn method_by_name(&self, name: &str) -> Option<&'static MethodInfo> {
        self.methods.iter().find(|m| m.name == name)
    }
}

/// The transport a call arrived on: which door, and whether TLS protected
/// it. A TLS door has its own kind rather than a flag beside the kind, so
/// that a handler that must only serve protected callers matches on one
/// value (`Tls | GrpcTls`); the client's certificate, when the door asked
/// for one, is in [`CallContext::identity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// UDP datagrams.
    Udp,
    /// Length-delimited frames over plain TCP.
    Tcp,
    /// Length-delimited frames over TLS over TCP.
    Tls,
    /// gRPC over plain-text HTTP/2.
    Grpc,
    /// gRPC over HTTP/2 over TLS.
    GrpcTls,
    /// The in-memory transport for tests.
    Memory,
}

impl TransportKind {
    /// Whether TLS protected the call on its way in (the caller's identity
    /// is then known if the door required a client certificate).
    pub fn is_tls(self) -> bool {
        matches!(self, TransportKind::Tls | TransportKind::GrpcTls)
    }
}

/// Who called, as a TLS door verified it: the client certificate that
/// chained to the door's client CA (mutual TLS). Made once per connection
/// and shared by its calls.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerIdentity {
    /// The certificate's subject as RFC 4514 text, e.g. `CN=client-1,O=Acme`
    /// (empty when the subject is empty).
    pub subject: String,
    /// The subject's common name (`CN`), if it has one.
    pub common_name: Option<String>,
    /// The subject alternative names the certificate carries.
    pub alt_names: Vec<AltName>,
    /// The verified leaf certificate, DER-encoded.
    pub certificate: Bytes,
}

impl PeerIdentity {
    /// A readable name for logs: the common name, else the first DNS
    /// alternative name, else the subject.
    pub fn name(&self) -> &str {
        if let Some(cn) = &self.common_name {
            return cn;
        }
        self.alt_names
            .iter()
            .find_map(|n| match n {
                AltName::Dns(d) => Some(d.as_str()),
                _ => None,
            })
            .unwrap_or(&self.subject)
    }

    /// The DNS alternative names.
    pub fn dns_names(&self) -> impl Iterator<Item = &str> {
        self.alt_names.iter().filter_map(|n| match n {
            AltName::Dns(d) => Some(d.as_str()),
            _ => None,
        })
    }
}

/// One subject alternative name of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AltName {
    /// A DNS name.
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
    /// A URI (a SPIFFE id, for example).
    Uri(String),
    /// An e-mail address (RFC 822 name).
    Email(String),
}

/// What a handler knows about the call it is running.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The method being called.
    pub method: &'static MethodInfo,
    /// The caller's session id (0 when the transport has none, e.g. a
    /// plain gRPC client).
    pub session_id: u64,
    /// The request id within the session.
    pub request_id: u64,
    /// Which copy of the request this is (1 for the first).
    pub attempt: u32,
    /// The caller's deadline, converted to this host's clock.
    pub deadline: Option<Instant>,
    /// Metadata sent by the caller.
    pub metadata: Metadata,
    /// The caller's address, when the transport knows it.
    pub peer: Option<SocketAddr>,
    /// The transport the call arrived on.
    pub transport: TransportKind,
    /// The caller's verified client certificate, when the call came through
    /// a TLS door that required one (mutual TLS); `None` otherwise.
    pub identity: Option<Arc<PeerIdentity>>,
    /// Object instance named by the caller (empty: the default instance).
    pub instance: String,
}

impl CallContext {
    /// A context for calling a handler directly (tests, in-process use).
    pub fn local(method: &'static MethodInfo) -> CallContext {
        CallContext {
            method,
            session_id: 0,
            request_id: 0,
            attempt: 1,
            deadline: None,
            metadata: Metadata::new(),
            peer: None,
            transport: TransportKind::Memory,
            identity: None,
            instance: String::new(),
        }
    }

    /// The metadata value for `key`.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// Whether the caller's deadline has passed.
    pub fn is_expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// A service a server can host: generated `<Name>Server<S>` implements it.
pub trait Service: Send + Sync + 'static {
    /// The static description (name, methods).
    fn info(&self) -> &'static ServiceInfo;

    /// Runs method `method_id` on the protobuf-encoded `request` and returns
    /// the encoded reply, or a status (typed `raises` errors travel as a
    /// status with details). An unknown id yields [`Code::Unimplemented`](crate::Code::Unimplemented).
    fn call(
        &self,
        method_id: u32,
        ctx: CallContext,
        request: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, Status>>;

    /// The gRPC face of this service over `door`: generated services return
    /// their generated tonic server; `None` (the default) serves the
    /// service through a generic route that finds methods by name.
    #[cfg(feature = "grpc")]
    fn grpc_route(&self, door: crate::grpc::Door) -> Option<crate::grpc::Route> {
        let _ = door;
        None
    }
}

impl<S: Service + ?Sized> Service for std::sync::Arc<S> {
    fn info(&self) -> &'static ServiceInfo {
        (**self).info()
    }
    fn call(
        &self,
        method_id: u32,
        ctx: CallContext,
        request: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, Status>> {
        (**self).call(method_id, ctx, request)
    }
    #[cfg(feature = "grpc")]
    fn grpc_route(&self, door: crate::grpc::Door) -> Option<crate::grpc::Route> {
        (**self).grpc_route(door)
    }
}
