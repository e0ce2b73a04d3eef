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

mod body;
mod door;
mod listen;
mod serve;

use super::codec::BytesCodec;
use super::metadata::{self as md, get_str, put_static};
use super::status::to_tonic;
use crate::counter::bump;
use crate::envelope::{Envelope, ExchangeProtocol, MessageType};
use crate::server::budget::{ByteBudget, Reservation};
use crate::server::{DoorKind, Engine, ReplySink, ServerError, Untracked};
use crate::service::{MethodInfo, PeerIdentity, Service, ServiceInfo, TransportKind};
use crate::status::Status;
use body::*;
use bytes::Bytes;
pub use door::Door;
use door::*;
use futures::future::BoxFuture;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use listen::bind;
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

/// The message of the DEADLINE_EXCEEDED status that means "refused before
/// it ran" (the engine uses the same text).
pub(crate) const NOT_RUN: &str = "deadline passed before the request ran";
