//! What a server hosts: [`Service`]s described by static [`ServiceInfo`]
//! and [`MethodInfo`], called with a [`CallContext`].
//!
//! Generated code implements [`Service`] for `<Name>Server<S>`, which routes
//! by method id to the user's implementation of the generated trait.

use crate::status::Status;
use bytes::Bytes;
use futures::future::BoxFuture;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

pub use crate::metadata::Metadata;

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

impl Protocol {
    /// The name the IDL and the specification use: `R`, `RR`, `RRA`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::R => "R",
            Protocol::RR => "RR",
            Protocol::RRA => "RRA",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Style {
    /// The style's short name: `sync`, `async`, `deferred`, `one-way`.
    pub fn name(self) -> &'static str {
        match self {
            Style::Sync => "sync",
            Style::Async => "async",
            Style::Deferred => "deferred",
            Style::OneWay => "one-way",
        }
    }
}

impl std::fmt::Display for Style {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
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
    /// An identity established by other means than a certificate (an
    /// authentication interceptor's bearer token): `name` is its subject
    /// and common name; it has no certificate.
    pub fn principal(name: impl Into<String>) -> PeerIdentity {
        let name = name.into();
        PeerIdentity {
            subject: format!("CN={name}"),
            common_name: Some(name),
            alt_names: Vec::new(),
            certificate: Bytes::new(),
        }
    }

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
    /// The full name (`package.Service`) of the service called (empty in
    /// a [`CallContext::local`] context).
    pub service: &'static str,
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
    /// Who called: the verified client certificate when the call came
    /// through a TLS door that required one (mutual TLS), else the
    /// principal a server interceptor established (for example from a
    /// bearer token, [`PeerIdentity::principal`]); `None` otherwise.
    pub identity: Option<Arc<PeerIdentity>>,
    /// Object instance named by the caller (empty: the default instance).
    pub instance: String,
    /// The W3C trace context of the call, when the
    /// [`trace`](crate::intercept::trace) interceptor runs: the handler
    /// runs in it, and the calls it makes carry it on.
    pub trace: Option<crate::intercept::trace::TraceContext>,
    /// When the request arrived at the server, before any queueing.
    pub received_at: Instant,
    /// Metadata for the answer: what a handler or a server interceptor
    /// puts here travels with its REPLY or ERROR (and is stored with it in
    /// the reply history, so a replayed duplicate carries the same).
    pub reply_metadata: ReplyMetadata,
}

/// The metadata a handler attaches to its answer ([`CallContext::reply_metadata`]).
/// Clones share one map: the server reads it when the handler returns.
/// (The same shared state carries the call's cancellation, one allocation
/// per call for both.)
#[derive(Debug, Clone, Default)]
pub struct ReplyMetadata(Arc<CallShared>);

/// What a running call shares with the server: the answer's metadata and
/// whether the caller abandoned it.
#[derive(Debug, Default)]
struct CallShared {
    reply: std::sync::Mutex<Metadata>,
    cancelled: std::sync::atomic::AtomicBool,
    wake: tokio::sync::Notify,
}

impl ReplyMetadata {
    fn map(&self) -> std::sync::MutexGuard<'_, Metadata> {
        // A handler that panicked while holding the lock left a map that
        // is still a map: use it.
        self.0
            .reply
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tells the call that its caller abandoned it (CANCEL, or the gRPC
    /// stream reset): [`CallContext::cancelled`] completes.
    pub(crate) fn cancel(&self) {
        self.0
            .cancelled
            .store(true, std::sync::atomic::Ordering::Release);
        self.0.wake.notify_waiters();
    }

    fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(std::sync::atomic::Ordering::Acquire)
    }

    async fn abandoned(&self) {
        loop {
            let notified = self.0.wake.notified();
            tokio::pin!(notified);
            // Registered before the check: a cancel between the two wakes it.
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }

    /// Sets `key` to `value` (replacing an earlier value).
    pub fn insert(&self, key: impl Into<String>, value: impl Into<String>) {
        self.map().insert(key.into(), value.into());
    }

    /// The value set for `key`, if any.
    pub fn get(&self, key: &str) -> Option<String> {
        self.map().get(key).map(str::to_owned)
    }

    /// Whether nothing was set.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }

    /// Takes everything set so far, leaving the map empty.
    pub fn take(&self) -> Metadata {
        std::mem::take(&mut *self.map())
    }
}

impl CallContext {
    /// A context for calling a handler directly (tests, in-process use).
    pub fn local(method: &'static MethodInfo) -> CallContext {
        CallContext {
            service: "",
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
            trace: None,
            received_at: Instant::now(),
            reply_metadata: ReplyMetadata::default(),
        }
    }

    /// Attaches `key: value` to this call's answer (see
    /// [`CallContext::reply_metadata`]).
    pub fn set_reply_metadata(&self, key: impl Into<String>, value: impl Into<String>) {
        self.reply_metadata.insert(key, value);
    }

    /// Who called, when known ([`CallContext::identity`]).
    pub fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.identity.as_deref()
    }

    /// When the request arrived, before any queueing.
    pub fn received_at(&self) -> Instant {
        self.received_at
    }

    /// The metadata value for `key`.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key)
    }

    /// Whether the caller's deadline has passed.
    pub fn is_expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Whether the call is cancelled: its deadline passed, or its caller
    /// abandoned it.
    pub fn is_cancelled(&self) -> bool {
        self.reply_metadata.is_cancelled() || self.is_expired()
    }

    /// Completes when the call's deadline passes or its caller abandons it
    /// (a CANCEL on UDP, TCP and gRPC, sent by our clients when the caller
    /// drops the call's future; the stream reset of a plain gRPC call). A handler that waits
    /// long selects on it and stops early; the server never drops a
    /// running handler itself, on any door.
    ///
    /// ```
    /// # async fn grant() {}
    /// # async fn f(ctx: rpc_core::CallContext) -> Result<(), rpc_core::Status> {
    /// tokio::select! {
    ///     () = grant() => Ok(()),
    ///     () = ctx.cancelled() => Err(rpc_core::Status::cancelled("the caller gave up")),
    /// }
    /// # }
    /// ```
    pub async fn cancelled(&self) {
        match self.deadline {
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline.into()) => {}
                    () = self.reply_metadata.abandoned() => {}
                }
            }
            None => self.reply_metadata.abandoned().await,
        }
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
