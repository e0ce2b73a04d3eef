//! The gRPC door of a server: an HTTP/2 listener whose requests reach the
//! server's [`Engine`] (callers that send a session) or the service itself
//! (plain gRPC callers).
//!
//! Each hosted service contributes a [`Route`]: its generated tonic server
//! (`tonic_build`'s output, see `rpc_codegen::rust`) over a [`Door`], or, for
//! services without a generated gRPC face, a generic route that finds the
//! method by name in the [`ServiceInfo`]. A request's path
//! `/<package>.<Service>/<Method>` selects the route; an unknown service or
//! method gets UNIMPLEMENTED.
//!
//! Calls with an `rpc-call` header go through the engine as requests of
//! their session; plain calls go through the engine as requests without a
//! session (the engine's `run_untracked`): both take the engine's handler
//! permits and waiting slots (`max_concurrent`, `max_pending`), so a flood
//! of plain calls waits or is refused with RESOURCE_EXHAUSTED like any
//! other, and both are counted in the server's statistics.
//!
//! # TLS
//! With `GrpcServerConfig::tls` (feature `tls`) the door speaks HTTP/2
//! over TLS, offering ALPN `h2`, with a handshake timeout; a client
//! certificate verified by the door is every call's
//! [`CallContext::identity`](crate::CallContext::identity) and the calls'
//! transport is [`TransportKind::GrpcTls`].
//!
//! # Memory a stranger can make the door hold
//! Limits ([`GrpcServerConfig`]): connections (more are closed as soon as
//! they are accepted), HTTP/2 streams per connection, flow-control windows
//! (no adaptive growth), header list size, message size
//! ([`MAX_MESSAGE_LEN`]: tonic refuses a longer one from its 5-byte prefix,
//! before buffering it), the time a request may take to arrive whole
//! (`receive_timeout`, from its headers to its end), the TLS handshake
//! (`handshake_timeout`), idle connections (`idle_timeout`) and dead peers
//! (HTTP/2 PING every `keepalive_interval`, the connection closed when one
//! is not answered within `keepalive_timeout`).
//!
//! A request body reaches tonic (which buffers a message until it is whole)
//! through a counting wrapper that reads each message's length prefix
//! first. A message of at most [`CONNECTION_ALLOWANCE`] bytes is taken
//! from its connection's allowance of that many bytes; a larger one (or
//! one that does not fit in what is left of the allowance) reserves its
//! length from the server-wide buffer budget
//! ([`ServerConfig::buffer_budget`], shared with the TCP doors) and, when
//! the budget is spent, the request is refused at once with
//! RESOURCE_EXHAUSTED (HTTP/2 can refuse one stream without closing the
//! connection, and holding the chunk while waiting would itself cost
//! memory). What a message holds is given back once it has passed whole
//! to tonic, or when the request ends in any way.
//!
//! So partly received requests hold at most `buffer_budget` + per
//! connection `CONNECTION_ALLOWANCE` + `connection_window` (data HTTP/2
//! has received but tonic not read yet) + `max_concurrent_streams` × 16 KiB
//! (header lists), times `max_connections`. With the defaults: budget +
//! 1,000 × (64 KiB + 1 MiB + 100 × 16 KiB) ≈ budget + 2.6 GiB in the worst
//! case (every connection open with every stream carrying full headers
//! and a full window unread); lower `max_connections` for a tighter bound.
//!
//! [`ServerConfig::buffer_budget`]: crate::server::ServerConfig::buffer_budget

use super::codec::BytesCodec;
use super::metadata::{self as md, get_str, put_static};
use super::status::to_tonic;
use crate::counter::bump;
use crate::envelope::{Envelope, ExchangeProtocol, MessageType};
use crate::server::budget::{ByteBudget, Reservation};
use crate::server::{DoorKind, Engine, ReplySink, ServerError, Untracked};
use crate::service::{MethodInfo, PeerIdentity, Service, ServiceInfo, TransportKind};
use crate::status::Status;
use bytes::Bytes;
use futures::future::BoxFuture;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prost::Message;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tonic::body::Body;
use tonic::codegen::http;
use tower::util::BoxCloneSyncService;

/// Largest gRPC message the door takes or sends (16 MiB).
pub const MAX_MESSAGE_LEN: usize = 16 << 20;

/// Bytes of request messages each connection may hold without reserving
/// from the server's buffer budget (64 KiB, as a TCP connection's read
/// buffer): small calls keep working while large messages have spent the
/// budget.
pub const CONNECTION_ALLOWANCE: usize = 64 << 10;

/// Largest header list (all the headers of one request) taken: 16 KiB.
pub const MAX_HEADER_LIST: u32 = 16 << 10;

/// Limits of a gRPC door.
///
/// Defaults: `max_connections` 1,000, `max_concurrent_streams` 100,
/// `stream_window` 1 MiB, `connection_window` 1 MiB, `receive_timeout`
/// 30 s, `handshake_timeout` 10 s, `idle_timeout` 5 minutes,
/// `keepalive_interval` 60 s, `keepalive_timeout` 20 s, no TLS. See the
/// module's documentation for the memory they bound.
///
/// The timeouts are what a deployment facing the open network would pick:
/// a handshake has 10 s, as on the TCP door (enough for a slow mobile
/// link, short enough that half-open handshakes cannot pile up); a
/// connection without any call for 5 minutes is closed (HTTP/2 GOAWAY,
/// our client and gRPC's reconnect on their next call), as the TCP door
/// does, so forgotten connections do not hold `max_connections` slots;
/// a PING after 60 s without any frame from the peer (shorter than the
/// idle timeouts of common NATs and load balancers, and one small frame a
/// minute) finds a peer that vanished without closing, and 20 s without
/// its answer (gRPC's own keepalive timeout) closes the connection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GrpcServerConfig {
    /// Connections open at the same time; more are closed as soon as they
    /// are accepted (and counted). Default 1,000.
    pub max_connections: usize,
    /// HTTP/2 streams (calls) open at the same time on one connection
    /// (SETTINGS_MAX_CONCURRENT_STREAMS); a client queues more. Default
    /// 100 (what gRPC asks a server to allow at least).
    pub max_concurrent_streams: u32,
    /// HTTP/2 flow-control window of each stream: request bytes a client
    /// may send on one call ahead of the server reading them. Default
    /// 1 MiB; between 65,535 and 2^31 - 1.
    pub stream_window: u32,
    /// HTTP/2 flow-control window of the connection, all its streams
    /// together. Default 1 MiB; between 65,535 and 2^31 - 1.
    pub connection_window: u32,
    /// Longest time a request may take to arrive whole, from its headers
    /// to the end of its body; it is refused with RESOURCE_EXHAUSTED
    /// then. Default 30 s; must be positive.
    pub receive_timeout: Duration,
    /// Longest TLS handshake; the connection is closed then (counted in
    /// [`GrpcStats::handshake_failures`]). Default 10 s; must be positive.
    pub handshake_timeout: Duration,
    /// A connection with no call open and none begun for this long is
    /// closed gracefully (HTTP/2 GOAWAY; counted in
    /// [`GrpcStats::closed_idle`]). `None`: never. Default 5 minutes.
    pub idle_timeout: Option<Duration>,
    /// The door sends an HTTP/2 PING when it has received nothing from the
    /// peer for this long. `None`: never. Default 60 s.
    pub keepalive_interval: Option<Duration>,
    /// A PING not answered within this closes the connection. Default
    /// 20 s; must be positive.
    pub keepalive_timeout: Duration,
    /// Serve HTTP/2 over TLS (ALPN `h2`) instead of plain-text HTTP/2.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::TlsServerConfig>,
}

impl Default for GrpcServerConfig {
    fn default() -> Self {
        GrpcServerConfig {
            max_connections: 1_000,
            max_concurrent_streams: 100,
            stream_window: 1 << 20,
            connection_window: 1 << 20,
            receive_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(300)),
            keepalive_interval: Some(Duration::from_secs(60)),
            keepalive_timeout: Duration::from_secs(20),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl GrpcServerConfig {
    /// The same limits with another receive timeout.
    pub fn with_receive_timeout(mut self, receive_timeout: Duration) -> Self {
        self.receive_timeout = receive_timeout;
        self
    }

    /// The same limits, serving HTTP/2 over TLS.
    #[cfg(feature = "tls")]
    pub fn with_tls(mut self, tls: crate::tls::TlsServerConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The same limits with another idle timeout (`None`: never).
    pub fn with_idle_timeout(mut self, idle_timeout: Option<Duration>) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }

    /// What the authentication policy sees of a door with this
    /// configuration.
    pub fn door_kind(&self) -> DoorKind {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return DoorKind::GrpcTls {
                client_auth: tls.requires_client_auth(),
            };
        }
        DoorKind::Grpc
    }

    pub(crate) fn validate(&self, budget: usize) -> Result<(), ServerError> {
        let bad = |what: String| Err(ServerError::InvalidConfig(what));
        if budget < MAX_MESSAGE_LEN {
            return bad(format!(
                "the server's buffer_budget ({budget}) must be at least the gRPC message limit ({MAX_MESSAGE_LEN})"
            ));
        }
        if self.max_connections == 0 || self.max_connections > Semaphore::MAX_PERMITS {
            return bad(format!(
                "max_connections must be at least 1, is {}",
                self.max_connections
            ));
        }
        if self.max_concurrent_streams == 0 {
            return bad("max_concurrent_streams must be at least 1".into());
        }
        let window = 65_535..=(i32::MAX.unsigned_abs());
        if !window.contains(&self.stream_window) || !window.contains(&self.connection_window) {
            return bad(format!(
                "stream_window and connection_window must be between 65,535 and 2^31 - 1, are {} and {}",
                self.stream_window, self.connection_window
            ));
        }
        if self.receive_timeout.is_zero()
            || self.handshake_timeout.is_zero()
            || self.keepalive_timeout.is_zero()
            || self.idle_timeout.is_some_and(|t| t.is_zero())
            || self.keepalive_interval.is_some_and(|t| t.is_zero())
        {
            return bad(
                "receive_timeout, handshake_timeout, keepalive_timeout, idle_timeout and keepalive_interval must be positive".into(),
            );
        }
        Ok(())
    }
}

/// Counters of a server's gRPC doors (all of them together), from
/// [`ServerHandle::grpc_stats`](crate::server::ServerHandle::grpc_stats).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GrpcStats {
    /// Connections accepted and served.
    pub connections_accepted: u64,
    /// Connections closed at once because `max_connections` were open.
    pub connections_refused: u64,
    /// Connections open now.
    pub connections_open: usize,
    /// Requests refused with RESOURCE_EXHAUSTED because a message needed
    /// buffer budget and none was left.
    pub refused_no_budget: u64,
    /// Requests refused with RESOURCE_EXHAUSTED because they did not
    /// arrive whole within `receive_timeout`.
    pub receive_timeouts: u64,
    /// TLS handshakes that failed or timed out.
    pub handshake_failures: u64,
    /// Connections closed by the idle timeout.
    pub closed_idle: u64,
}

/// One gRPC listener of a server: its limits and counters.
pub(crate) struct GrpcDoor {
    config: GrpcServerConfig,
    budget: Arc<ByteBudget>,
    /// `rpc-incarnation` of the door's own refusals, as on every response.
    incarnation: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    accepted: AtomicU64,
    refused: AtomicU64,
    open: AtomicUsize,
    no_budget: AtomicU64,
    timeouts: AtomicU64,
    handshake_failures: AtomicU64,
    closed_idle: AtomicU64,
    /// The TLS side (with ALPN `h2`), made once from `config.tls`.
    #[cfg(feature = "tls")]
    acceptor: Option<tokio_rustls::TlsAcceptor>,
}

impl fmt::Debug for GrpcDoor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcDoor")
            .field("config", &self.config)
            .field("open", &self.open.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl GrpcDoor {
    /// Adds this door's counters to `s`.
    pub(crate) fn add_to(&self, s: &mut GrpcStats) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        s.connections_accepted += get(&self.accepted);
        s.connections_refused += get(&self.refused);
        s.connections_open += self.open.load(Ordering::Relaxed);
        s.refused_no_budget += get(&self.no_budget);
        s.receive_timeouts += get(&self.timeouts);
        s.handshake_failures += get(&self.handshake_failures);
        s.closed_idle += get(&self.closed_idle);
    }
}

/// How one service is reached over gRPC: a tower service from HTTP/2
/// requests to responses (a generated tonic server, boxed).
pub type Route = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;

/// Boxes a tower service (a generated tonic server) as a [`Route`].
pub fn route<S>(service: S) -> Route
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    BoxCloneSyncService::new(service)
}

/// What the door knows of a request's connection, put in each request's
/// extensions: the caller's address, the transport, and the client
/// certificate verified for the connection.
#[derive(Debug, Clone)]
struct ConnInfo {
    peer: SocketAddr,
    transport: TransportKind,
    identity: Option<Arc<PeerIdentity>>,
}

/// One hosted service seen from gRPC: what the generated tonic trait is
/// implemented for. Each method hands its request to [`Door::unary`].
#[derive(Clone)]
pub struct Door {
    engine: Arc<Engine>,
    service: Arc<dyn Service>,
    /// `rpc-incarnation` of every response, made once.
    incarnation: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

impl fmt::Debug for Door {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Door")
            .field("service", &self.service.info().full_name)
            .finish_non_exhaustive()
    }
}

impl Door {
    /// The door of `service` (hosted by `engine`).
    pub fn new(engine: Arc<Engine>, service: Arc<dyn Service>) -> Door {
        let incarnation = tonic::metadata::MetadataValue::from(engine.incarnation());
        Door {
            engine,
            service,
            incarnation,
        }
    }

    /// The service behind this door.
    pub fn info(&self) -> &'static ServiceInfo {
        self.service.info()
    }

    /// Largest message taken or sent ([`MAX_MESSAGE_LEN`]).
    pub fn max_message_len(&self) -> usize {
        MAX_MESSAGE_LEN
    }

    /// Runs one unary gRPC call of `method`.
    ///
    /// - With `rpc-call` metadata (our client): the request goes
    ///   through the engine, exactly as a UDP or TCP request would (the
    ///   duplicate filter and reply history give at-most-once across
    ///   retries and reconnects); a duplicate of a request still running
    ///   waits for its result.
    /// - Without (a plain gRPC client): the request goes through the
    ///   engine without a session: no duplicate filter and no history
    ///   (the handler runs once per request, with session and request id
    ///   0), but the same handler permits, waiting slots and counters as
    ///   every request. A one-way method is answered once the request has
    ///   a handler slot or a waiting slot.
    ///
    /// The deadline from `grpc-timeout` is the handler's `ctx.deadline`; when
    /// it passes, the call ends with DEADLINE_EXCEEDED. Every response
    /// carries `rpc-incarnation`.
    ///
    /// # Errors
    /// The handler's status, or the door's (UNAVAILABLE when shutting down,
    /// RESOURCE_EXHAUSTED when the server can neither run nor queue it,
    /// DEADLINE_EXCEEDED, ...), as a tonic status.
    pub async fn unary(
        &self,
        method: &'static MethodInfo,
        request: tonic::Request<Bytes>,
    ) -> Result<tonic::Response<Bytes>, tonic::Status> {
        let arrival = Instant::now();
        let (meta, mut extensions, payload) = request.into_parts();
        let timeout = get_str(&meta, md::GRPC_TIMEOUT).and_then(md::parse_timeout);
        let deadline = timeout.and_then(|t| arrival.checked_add(t));
        let conn = extensions.remove::<ConnInfo>();
        let sink = |tx| Sink {
            tx: Arc::new(Mutex::new(Some(tx))),
            peer: conn.as_ref().map(|c| c.peer),
            transport: conn.as_ref().map_or(TransportKind::Grpc, |c| c.transport),
            identity: conn.as_ref().and_then(|c| c.identity.clone()),
        };
        let peer = conn.as_ref().map(|c| c.peer);
        let work = async {
            match meta.get(md::CALL) {
                None => self.plain(method, &meta, payload, deadline, sink).await,
                Some(value) => match value
                    .to_str()
                    .ok()
                    .and_then(md::CallHeader::parse)
                    .filter(|h| h.session != 0 && h.attempt != 0)
                {
                    Some(call) => {
                        self.tracked(call, method, &meta, payload, timeout, sink)
                            .await
                    }
                    // Never run a request whose at-most-once fields cannot
                    // be read as a plain one: the caller expects them.
                    None => {
                        tracing::debug!(?peer, "malformed rpc-call metadata");
                        Err(Status::invalid_argument(format!(
                            "malformed {} metadata (expected session.request_id.attempt.incarnation.ack_up_to.flags, session and attempt non-zero)",
                            md::CALL
                        )))
                    }
                },
            }
        };
        let result = match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), work)
                .await
                .unwrap_or_else(|_| Err(Status::deadline_exceeded("deadline exceeded"))),
            None => work.await,
        };
        let incarnation = self.incarnation.clone();
        match result {
            Ok((reply, accepted)) => {
                let mut response = tonic::Response::new(reply);
                response.metadata_mut().insert(md::INCARNATION, incarnation);
                if accepted {
                    put_static(response.metadata_mut(), md::ACCEPTED, "1");
                }
                Ok(response)
            }
            Err(status) => {
                let mut status = to_tonic(&status);
                status.metadata_mut().insert(md::INCARNATION, incarnation);
                Err(status)
            }
        }
    }

    /// A plain gRPC call: through the engine without a session.
    async fn plain(
        &self,
        method: &'static MethodInfo,
        meta: &tonic::metadata::MetadataMap,
        payload: Bytes,
        deadline: Option<Instant>,
        sink: impl FnOnce(oneshot::Sender<Bytes>) -> Sink,
    ) -> Result<(Bytes, bool), Status> {
        let call = Untracked {
            service: Arc::clone(&self.service),
            method,
            deadline,
            payload,
            metadata: md::user_metadata(meta),
            instance: get_str(meta, md::INSTANCE).unwrap_or_default().to_owned(),
            accept: method.oneway,
        };
        let (tx, rx) = oneshot::channel();
        let sink = sink(tx);
        self.engine.run_untracked(call, &sink).await;
        drop(sink);
        // The engine always answers a request it took, unless shutdown
        // cancelled its handler.
        let Ok(message) = rx.await else {
            return Err(Status::unavailable(
                "the server cancelled the call (shutting down)",
            ));
        };
        match read_answer(message)? {
            Answer::Done(result) => result,
            Answer::InProgress => Err(Status::internal(
                "unexpected IN_PROGRESS for a call without a session",
            )),
        }
    }

    /// A call from our client: through the engine (history, at-most-once).
    async fn tracked(
        &self,
        call: md::CallHeader,
        method: &'static MethodInfo,
        meta: &tonic::metadata::MetadataMap,
        payload: Bytes,
        timeout: Option<Duration>,
        sink: impl Fn(oneshot::Sender<Bytes>) -> Sink,
    ) -> Result<(Bytes, bool), Status> {
        let protocol = if call.protocol_r {
            ExchangeProtocol::R
        } else if call.protocol_rra {
            ExchangeProtocol::Rra
        } else {
            ExchangeProtocol::Rr
        };
        let user_metadata = md::user_metadata(meta);
        let instance = get_str(meta, md::INSTANCE).unwrap_or_default();
        let envelope = || Envelope {
            instance: instance.to_owned(),
            incarnation: call.incarnation,
            deadline_us: timeout.map_or(0, |t| {
                u64::try_from(t.as_micros()).unwrap_or(u64::MAX).max(1)
            }),
            attempt: call.attempt.max(1),
            metadata: user_metadata.clone(),
            protocol: protocol as i32,
            ack_up_to: call.ack_up_to,
            want_accept: call.accept,
            idempotent: call.idempotent,
            ..Envelope::request(
                call.session,
                call.request_id,
                self.service.info().full_name,
                method.id,
                payload.clone(),
            )
        };
        let oneway = protocol == ExchangeProtocol::R;
        let mut pause = Duration::from_millis(1);
        loop {
            // Only the engine's first answer matters (ACCEPT, REPLY, ERROR
            // or IN_PROGRESS); a later one (the REPLY after ACCEPT) is
            // collected by a new request.
            let (tx, rx) = oneshot::channel();
            let sink = sink(tx);
            // The envelope is rebuilt from the metadata for a retry (rare)
            // rather than cloned for every call.
            self.engine.handle_envelope(envelope(), &sink).await;
            drop(sink);
            if oneway {
                // R: the engine never answers; the empty reply says the
                // request was taken (ACCEPT), not that it ran.
                return Ok((Bytes::new(), true));
            }
            let Ok(message) = rx.await else {
                return Err(Status::aborted(
                    "request dropped by the server: a duplicate of one already answered and acknowledged",
                ));
            };
            match read_answer(message)? {
                Answer::Done(result) => return result,
                Answer::InProgress => {
                    // A retry of a request still running (its first copy
                    // came on a connection that broke): wait for the
                    // result, which the history will then replay.
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
            }
        }
    }
}

/// The engine's first answer to a gRPC call.
enum Answer {
    /// The call's result: a reply (and whether it is an ACCEPT) or a status.
    Done(Result<(Bytes, bool), Status>),
    /// The request is still running (a retry of a tracked request).
    InProgress,
}

/// Reads the envelope the engine answered with.
fn read_answer(message: Bytes) -> Result<Answer, Status> {
    let reply =
        Envelope::decode(message).map_err(|e| Status::internal(format!("engine reply: {e}")))?;
    Ok(match MessageType::try_from(reply.r#type) {
        Ok(MessageType::Reply) => Answer::Done(match reply.status {
            Some(status) => Err(status.into()),
            None => Ok((reply.payload, false)),
        }),
        Ok(MessageType::Error) => Answer::Done(Err(reply
            .status
            .map_or_else(|| Status::internal("error without status"), Status::from))),
        Ok(MessageType::Accept) => Answer::Done(Ok((Bytes::new(), true))),
        Ok(MessageType::InProgress) => Answer::InProgress,
        _ => {
            return Err(Status::internal(format!(
                "unexpected engine message type {}",
                reply.r#type
            )))
        }
    })
}

/// The engine's way back to one gRPC call: its first answer.
#[derive(Clone)]
struct Sink {
    /// Taken by the first answer.
    tx: Arc<Mutex<Option<oneshot::Sender<Bytes>>>>,
    peer: Option<SocketAddr>,
    transport: TransportKind,
    identity: Option<Arc<PeerIdentity>>,
}

impl ReplySink for Sink {
    async fn send(&self, message: &[u8]) -> io::Result<()> {
        self.send_shared(Bytes::copy_from_slice(message)).await
    }

    async fn send_shared(&self, message: Bytes) -> io::Result<()> {
        let tx = self
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match tx {
            Some(tx) => tx
                .send(message)
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "grpc call gone")),
            // A later answer of the same request: collected by a new one.
            None => Ok(()),
        }
    }

    fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    fn transport(&self) -> TransportKind {
        self.transport
    }

    fn identity(&self) -> Option<Arc<PeerIdentity>> {
        self.identity.clone()
    }

    fn max_message_len(&self) -> usize {
        MAX_MESSAGE_LEN
    }
}

/// One method of a service without a generated gRPC face.
#[derive(Clone)]
struct DoorMethod {
    door: Door,
    method: &'static MethodInfo,
}

impl tonic::server::UnaryService<Bytes> for DoorMethod {
    type Response = Bytes;
    type Future = BoxFuture<'static, Result<tonic::Response<Bytes>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.door.unary(this.method, request).await })
    }
}

/// The route of a service without a generated gRPC face: the method is
/// found by name in its [`ServiceInfo`].
#[derive(Clone)]
struct GenericRoute {
    door: Door,
}

impl tower::Service<http::Request<Body>> for GenericRoute {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let method_name = request.uri().path().rsplit('/').next().unwrap_or_default();
        let Some(method) = self.door.info().method_by_name(method_name) else {
            let status = tonic::Status::unimplemented(format!(
                "{} has no method {method_name:?}",
                self.door.info().full_name
            ));
            return Box::pin(async move { Ok(status.into_http()) });
        };
        let svc = DoorMethod {
            door: self.door.clone(),
            method,
        };
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(BytesCodec::default())
                .apply_max_message_size_config(Some(MAX_MESSAGE_LEN), Some(MAX_MESSAGE_LEN));
            Ok(grpc.unary(svc, request).await)
        })
    }
}

/// Every route of a server, by service name; one clone per connection.
#[derive(Clone)]
struct Router {
    routes: Arc<HashMap<&'static str, Route>>,
    door: Arc<GrpcDoor>,
    conn: Option<ConnInfo>,
    /// The connection's allowance: bytes its requests hold without budget.
    allowance: Arc<AtomicUsize>,
    /// The connection's calls, for the idle timeout.
    activity: Arc<Activity>,
}

/// The calls of one connection: open now, and begun so far.
#[derive(Debug, Default)]
struct Activity {
    open: AtomicUsize,
    begun: AtomicU64,
}

/// One open call of a connection; closed when dropped.
struct OpenCall(Arc<Activity>);

impl OpenCall {
    fn new(activity: &Arc<Activity>) -> OpenCall {
        activity.open.fetch_add(1, Ordering::AcqRel);
        activity.begun.fetch_add(1, Ordering::AcqRel);
        OpenCall(Arc::clone(activity))
    }
}

impl Drop for OpenCall {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Router {
    fn new(engine: &Arc<Engine>, door: Arc<GrpcDoor>) -> Router {
        let routes = engine
            .services()
            .map(|service| {
                let door = Door::new(Arc::clone(engine), Arc::clone(service));
                let route = service
                    .grpc_route(door.clone())
                    .unwrap_or_else(|| route(GenericRoute { door }));
                (service.info().full_name, route)
            })
            .collect();
        Router {
            routes: Arc::new(routes),
            door,
            conn: None,
            allowance: Arc::default(),
            activity: Arc::default(),
        }
    }

    /// The router of one new connection (with its own allowance and
    /// activity).
    fn for_connection(&self, conn: ConnInfo) -> Router {
        Router {
            conn: Some(conn),
            allowance: Arc::default(),
            activity: Arc::default(),
            ..self.clone()
        }
    }
}

impl tower::Service<http::Request<Incoming>> for Router {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Incoming>) -> Self::Future {
        let deadline = tokio::time::Instant::now() + self.door.config.receive_timeout;
        let peer = self.conn.as_ref().map(|c| c.peer);
        let mut request = request.map(|body| {
            Body::new(Counted {
                inner: body,
                door: Arc::clone(&self.door),
                allowance: Arc::clone(&self.allowance),
                peer,
                deadline,
                timer: None,
                prefix: [0; 5],
                prefix_len: 0,
                len: 0,
                left: 0,
                hold: Hold::Nothing,
                failed: false,
            })
        });
        if let Some(conn) = &self.conn {
            request.extensions_mut().insert(conn.clone());
        }
        let path = request.uri().path();
        let service = path
            .strip_prefix('/')
            .and_then(|p| p.split('/').next())
            .unwrap_or_default();
        match self.routes.get(service) {
            // Routes are always ready (generated tonic servers and the
            // generic route both are).
            Some(route) => {
                let open = OpenCall::new(&self.activity);
                let call = route.clone().call(request);
                Box::pin(async move {
                    let response = call.await;
                    drop(open);
                    response
                })
            }
            None => {
                let status = tonic::Status::unimplemented(format!("unknown service {service:?}"));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

/// What the message being received holds; given back on drop.
enum Hold {
    Nothing,
    /// Bytes of the connection's allowance.
    Allowance(#[allow(dead_code)] Allowance),
    /// Bytes of the server's budget.
    Budget(#[allow(dead_code)] Reservation),
}

/// Bytes taken from a connection's allowance, given back on drop.
struct Allowance {
    counter: Arc<AtomicUsize>,
    bytes: usize,
}

impl Allowance {
    /// `bytes` of `counter`'s [`CONNECTION_ALLOWANCE`], if that many are
    /// left.
    fn take(counter: &Arc<AtomicUsize>, bytes: usize) -> Option<Allowance> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|&total| total <= CONNECTION_ALLOWANCE)
            })
            .ok()?;
        Some(Allowance {
            counter: Arc::clone(counter),
            bytes,
        })
    }
}

impl Drop for Allowance {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A request body on its way to tonic: every message's length is read
/// from its 5-byte prefix and covered (connection allowance or buffer
/// budget) before its bytes are passed on, and the whole body must arrive
/// by `deadline`.
struct Counted {
    inner: Incoming,
    door: Arc<GrpcDoor>,
    allowance: Arc<AtomicUsize>,
    peer: Option<SocketAddr>,
    deadline: tokio::time::Instant,
    /// Made the first time the body is not all there.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The prefix of the next message, as far as it came.
    prefix: [u8; 5],
    prefix_len: usize,
    /// Bytes of the current message: all, and still to come.
    len: usize,
    left: usize,
    hold: Hold,
    /// An error was returned: the body ends.
    failed: bool,
}

impl Counted {
    /// Walks `data` (the next bytes of the body) through the messages'
    /// prefixes and bodies, covering each message as its prefix completes.
    /// Each turn consumes at least one byte of `data`.
    fn account(&mut self, mut data: &[u8]) -> Result<(), tonic::Status> {
        while !data.is_empty() {
            if self.left > 0 {
                let n = self.left.min(data.len());
                self.left -= n;
                data = &data[n..];
                if self.left == 0 {
                    // Passed on whole: tonic decodes it now.
                    self.hold = Hold::Nothing;
                } else if let Hold::Budget(r) = &mut self.hold {
                    r.set_filled(self.len - self.left);
                }
                continue;
            }
            let n = (self.prefix.len() - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[..n]);
            self.prefix_len += n;
            data = &data[n..];
            if self.prefix_len == self.prefix.len() {
                self.prefix_len = 0;
                let p = self.prefix;
                let len = usize::try_from(u32::from_be_bytes([p[1], p[2], p[3], p[4]]))
                    .unwrap_or(usize::MAX);
                self.cover(len)?;
                (self.len, self.left) = (len, len);
            }
        }
        Ok(())
    }

    /// Covers a message of `len` bytes: from the connection's allowance if
    /// it fits, from the budget otherwise, or refuses it.
    fn cover(&mut self, len: usize) -> Result<(), tonic::Status> {
        self.hold = Hold::Nothing;
        if len == 0 || len > MAX_MESSAGE_LEN {
            // Nothing to buffer, or tonic refuses it from its prefix.
            return Ok(());
        }
        if len <= CONNECTION_ALLOWANCE {
            if let Some(a) = Allowance::take(&self.allowance, len) {
                self.hold = Hold::Allowance(a);
                return Ok(());
            }
        }
        match self.door.budget.try_reserve(len) {
            Some(r) => {
                self.hold = Hold::Budget(r);
                Ok(())
            }
            None => {
                self.door.budget.count_refused();
                bump(&self.door.no_budget);
                tracing::debug!(
                    peer = ?self.peer,
                    len,
                    budget = self.door.budget.limit(),
                    "no buffer budget for a grpc request; refused"
                );
                Err(tonic::Status::resource_exhausted(format!(
                    "server busy: no room to receive a message of {len} bytes now"
                )))
            }
        }
    }

    /// Ends the body with `status` (tonic answers the call with it).
    fn fail(
        &mut self,
        mut status: tonic::Status,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        status
            .metadata_mut()
            .insert(md::INCARNATION, self.door.incarnation.clone());
        self.failed = true;
        self.hold = Hold::Nothing;
        self.timer = None;
        Poll::Ready(Some(Err(status)))
    }
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if let Err(status) = this.account(data) {
                        return this.fail(status);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.hold = Hold::Nothing;
                this.timer = None;
                Poll::Ready(Some(Err(tonic::Status::from_error(Box::new(error)))))
            }
            Poll::Ready(None) => {
                this.hold = Hold::Nothing;
                this.timer = None;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if std::future::Future::poll(timer.as_mut(), cx).is_pending() {
                    return Poll::Pending;
                }
                bump(&this.door.timeouts);
                let timeout = this.door.config.receive_timeout;
                tracing::debug!(peer = ?this.peer, ?timeout, "grpc request not received in time; refused");
                this.fail(tonic::Status::resource_exhausted(format!(
                    "request not received whole within {timeout:?}"
                )))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Binds `addr` and starts a gRPC door of `engine` in a task. Aborting the
/// task closes the listener and every connection.
pub(crate) async fn bind(
    engine: Arc<Engine>,
    budget: &Arc<ByteBudget>,
    addr: impl tokio::net::ToSocketAddrs,
    config: GrpcServerConfig,
) -> Result<(SocketAddr, Arc<GrpcDoor>, JoinHandle<()>), ServerError> {
    config.validate(budget.limit())?;
    #[cfg(feature = "tls")]
    let acceptor = match &config.tls {
        Some(tls) => Some(
            tls.acceptor(crate::tls::ALPN_H2)
                .map_err(|e| ServerError::InvalidConfig(e.to_string()))?,
        ),
        None => None,
    };
    let listener = TcpListener::bind(addr).await.map_err(ServerError::Bind)?;
    let local_addr = listener.local_addr().map_err(ServerError::LocalAddr)?;
    let door = Arc::new(GrpcDoor {
        config,
        budget: Arc::clone(budget),
        incarnation: tonic::metadata::MetadataValue::from(engine.incarnation()),
        accepted: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        open: AtomicUsize::new(0),
        no_budget: AtomicU64::new(0),
        timeouts: AtomicU64::new(0),
        handshake_failures: AtomicU64::new(0),
        closed_idle: AtomicU64::new(0),
        #[cfg(feature = "tls")]
        acceptor,
    });
    let router = Router::new(&engine, Arc::clone(&door));
    tracing::debug!(%local_addr, services = router.routes.len(), kind = %door.config.door_kind(), "grpc door open");
    let task = tokio::spawn(accept_loop(listener, router));
    Ok((local_addr, door, task))
}

/// Counts an open connection.
struct Open(Arc<GrpcDoor>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

type Http2 = hyper::server::conn::http2::Builder<TokioExecutor>;

async fn accept_loop(listener: TcpListener, router: Router) {
    let door = Arc::clone(&router.door);
    let config = &door.config;
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_frame_size(1 << 20)
        .adaptive_window(false)
        .initial_stream_window_size(config.stream_window)
        .initial_connection_window_size(config.connection_window)
        .max_concurrent_streams(config.max_concurrent_streams)
        .max_header_list_size(MAX_HEADER_LIST)
        .keep_alive_interval(config.keepalive_interval)
        .keep_alive_timeout(config.keepalive_timeout);
    let http2 = Arc::new(http2);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        bump(&door.refused);
                        tracing::debug!(%peer, limit = config.max_connections, "grpc connection refused: too many open");
                        drop(tcp);
                        continue;
                    };
                    bump(&door.accepted);
                    door.open.fetch_add(1, Ordering::AcqRel);
                    let open = Open(Arc::clone(&door));
                    if let Err(error) = tcp.set_nodelay(true) {
                        tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
                    }
                    let (router, http2) = (router.clone(), Arc::clone(&http2));
                    connections.spawn(async move {
                        connection(router, &http2, tcp, peer).await;
                        drop((slot, open));
                    });
                }
                Err(error) => {
                    // Out of file descriptors and the like: wait a little.
                    tracing::debug!(%error, "grpc accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// One connection: the TLS handshake (when the door has TLS), then HTTP/2
/// until the peer closes it, an error, or the idle timeout.
async fn connection(router: Router, http2: &Http2, tcp: tokio::net::TcpStream, peer: SocketAddr) {
    #[cfg(feature = "tls")]
    if let Some(acceptor) = router.door.acceptor.clone() {
        let door = Arc::clone(&router.door);
        let accepted =
            tokio::time::timeout(door.config.handshake_timeout, acceptor.accept(tcp)).await;
        match accepted {
            Ok(Ok(stream)) => {
                // Verified once per connection; every call shares it.
                let identity = crate::tls::peer_identity(stream.get_ref().1);
                if let Some(id) = &identity {
                    tracing::debug!(%peer, client = id.name(), "grpc tls client authenticated");
                }
                let conn = ConnInfo {
                    peer,
                    transport: TransportKind::GrpcTls,
                    identity,
                };
                serve(router.for_connection(conn), http2, stream, peer).await;
            }
            Ok(Err(error)) => {
                bump(&door.handshake_failures);
                tracing::debug!(%peer, %error, "grpc tls handshake failed");
            }
            Err(_) => {
                bump(&door.handshake_failures);
                tracing::debug!(%peer, "grpc tls handshake timed out");
            }
        }
        return;
    }
    let conn = ConnInfo {
        peer,
        transport: TransportKind::Grpc,
        identity: None,
    };
    serve(router.for_connection(conn), http2, tcp, peer).await;
}

/// Serves HTTP/2 on `io`; closes the connection gracefully (GOAWAY, open
/// calls finish) once no call has been open or begun for `idle_timeout`.
async fn serve<IO>(router: Router, http2: &Http2, io: IO, peer: SocketAddr)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let door = Arc::clone(&router.door);
    let activity = Arc::clone(&router.activity);
    let served = http2.serve_connection(TokioIo::new(io), TowerToHyperService::new(router));
    tokio::pin!(served);
    let result = match door.config.idle_timeout {
        None => served.await,
        Some(idle) => {
            let mut seen = activity.begun.load(Ordering::Acquire);
            loop {
                // One timer per idle period, not per call.
                tokio::select! {
                    result = served.as_mut() => break result,
                    () = tokio::time::sleep(idle) => {
                        let begun = activity.begun.load(Ordering::Acquire);
                        if begun == seen && activity.open.load(Ordering::Acquire) == 0 {
                            bump(&door.closed_idle);
                            tracing::debug!(%peer, ?idle, "idle grpc connection closed");
                            served.as_mut().graceful_shutdown();
                            break served.await;
                        }
                        seen = begun;
                    }
                }
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "grpc connection ended with an error");
    }
}

/// The message of the DEADLINE_EXCEEDED status that means "refused before
/// it ran" (the engine uses the same text).
pub(crate) const NOT_RUN: &str = "deadline passed before the request ran";
