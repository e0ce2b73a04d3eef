//! The TCP door of a server (optionally TLS): length-delimited frames
//! (`transport::tcp`), many calls multiplexed per connection, fed to the
//! same [`Engine`] as every other door of the server, so the reply history
//! and the counters are shared (a request retried on a new connection, or
//! arriving through another door with the same session, finds its stored
//! reply).
//!
//! Per connection, one task reads frames and hands each to the engine on
//! that task (handlers ready at their first poll answer without a task
//! hop) and, in the same task, a writer takes all the replies queued since
//! its last write and writes them in one call. A slow reader of replies
//! slows its own connection down (the queue is bounded), nobody else's.
//!
//! With TLS (feature `tls`) the door offers ALPN `rpc.v1` (a client that
//! offers none is served too), gives the handshake `handshake_timeout`,
//! and its calls carry [`TransportKind::Tls`] and, when it required a
//! client certificate, the verified identity, made once per connection.
//!
//! Limits ([`TcpServerConfig`]): frame size (a length prefix over it
//! closes the connection at once, after answering RESOURCE_EXHAUSTED when
//! the bytes that came with the prefix name a request), number of
//! connections (more are closed at once), idle timeout, TLS handshake
//! timeout, frame timeout (a frame must arrive whole within it). Graceful
//! shutdown ([`ServerHandle::shutdown`]) stops accepting, lets running
//! handlers finish and their replies be written, then closes every
//! connection.
//!
//! # Memory a stranger can make the server hold
//! A frame is read into the connection's buffer until it is whole. Frames
//! of up to [`UNBUDGETED_FRAME`] bytes (prefix included) are read into the
//! connection's read buffer as they come (a connection holds at most that
//! much of them); a larger frame first reserves its announced length from
//! the server-wide budget ([`ServerConfig::buffer_budget`]) and only then is
//! its body read, each read bounded by what is still missing of it. When
//! the budget is spent, the connection stops reading (TCP flow control
//! holds the sender back) and waits, first come first served, for bytes to
//! be given back; if its frame's timeout passes first, it is closed and
//! counted ([`TcpStats::closed_no_budget`]). The reservation is given back
//! when the frame is handed to the engine or the connection closes, for
//! whatever reason. So partly received frames hold at most
//! `buffer_budget + max_connections × UNBUDGETED_FRAME` bytes, whatever
//! the peers do, and a frame holds its bytes for at most `frame_timeout`.
//!
//! Files: this one (the door's configuration, counters, binding, and the
//! serving verbs on the builder and the handle), `conn.rs` (accepting
//! connections; reading, answering and closing one).
//!
//! [`ServerConfig::buffer_budget`]: super::ServerConfig::buffer_budget

use super::budget::ByteBudget;
use super::engine::Engine;
use super::{ServerBuilder, ServerError, ServerHandle};
use crate::transport::tcp::{WriteCounters, DEFAULT_MAX_FRAME, READ_CHUNK};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify, Semaphore};

/// Queued reply bytes per connection above which handlers wait for the
/// writer (a single frame is always accepted).
const OUTBOX_HIGH_WATER: usize = 1 << 20;

/// How long a closing connection may take to write its queued replies.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Frames of at most this many bytes, length prefix included, are read
/// without a reservation from the server's buffer budget: they fit in the
/// connection's read buffer (64 KiB). Larger ones reserve their length
/// first (see the module's documentation).
pub const UNBUDGETED_FRAME: usize = READ_CHUNK;

/// Limits of a TCP door.
///
/// Defaults: `max_frame` 16 MiB, `max_connections` 10,000, `idle_timeout`
/// 5 minutes, `handshake_timeout` 10 s, `frame_timeout` 30 s, no TLS.
///
/// The bytes that partly received frames hold are bounded by the server's
/// [`buffer_budget`](super::ServerConfig::buffer_budget) plus
/// `max_connections` × [`UNBUDGETED_FRAME`] (see the module's
/// documentation).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TcpServerConfig {
    /// Largest frame (one envelope) received or sent. A length prefix over
    /// it closes the connection at once (the request does not run; when
    /// the bytes that came with the prefix name it, it is answered with
    /// RESOURCE_EXHAUSTED first); a bigger reply becomes a
    /// RESOURCE_EXHAUSTED reply. Default 16 MiB; at least 256, at most the
    /// server's [`buffer_budget`](super::ServerConfig::buffer_budget).
    pub max_frame: usize,
    /// Connections open at the same time; more are closed as soon as they
    /// are accepted (and counted). Default 10,000.
    pub max_connections: usize,
    /// A connection that neither sent nor received a frame for this long is
    /// closed (a client reconnects and retries what it still waits for).
    /// `None`: never. Default 5 minutes.
    pub idle_timeout: Option<Duration>,
    /// Longest TLS handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// Longest time a frame may take to arrive, from its first byte to its
    /// last (any wait for buffer budget included); a connection whose
    /// frame is still incomplete then is closed (counted in
    /// [`TcpStats::closed_frame_timeout`], or
    /// [`TcpStats::closed_no_budget`] when it was waiting for budget).
    /// Default 30 s; must be positive.
    pub frame_timeout: Duration,
    /// Serve TLS instead of plain TCP.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::TlsServerConfig>,
}

impl Default for TcpServerConfig {
    fn default() -> Self {
        TcpServerConfig {
            max_frame: DEFAULT_MAX_FRAME,
            max_connections: 10_000,
            idle_timeout: Some(Duration::from_secs(300)),
            handshake_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(30),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl TcpServerConfig {
    /// The same limits, serving TLS.
    #[cfg(feature = "tls")]
    pub fn with_tls(mut self, tls: crate::tls::TlsServerConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// What the authentication policy sees of a door with this
    /// configuration.
    pub fn door_kind(&self) -> super::DoorKind {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return super::DoorKind::Tls {
                client_auth: tls.requires_client_auth(),
            };
        }
        super::DoorKind::Tcp
    }

    /// The same limits with another frame timeout.
    pub fn with_frame_timeout(mut self, frame_timeout: Duration) -> Self {
        self.frame_timeout = frame_timeout;
        self
    }

    fn validate(&self, budget: usize) -> Result<(), ServerError> {
        if self.max_frame > budget {
            return Err(ServerError::InvalidConfig(format!(
                "max_frame ({}) must not exceed the server's buffer_budget ({budget}): such a frame could never be read",
                self.max_frame
            )));
        }
        if self.frame_timeout.is_zero() {
            return Err(ServerError::InvalidConfig(
                "frame_timeout must be positive".into(),
            ));
        }
        if self.max_frame < 256 || u32::try_from(self.max_frame).is_err() {
            return Err(ServerError::InvalidConfig(format!(
                "max_frame must be between 256 bytes and u32::MAX, is {}",
                self.max_frame
            )));
        }
        if self.max_connections == 0 || self.max_connections > Semaphore::MAX_PERMITS {
            return Err(ServerError::InvalidConfig(format!(
                "max_connections must be at least 1, is {}",
                self.max_connections
            )));
        }
        if self.idle_timeout.is_some_and(|t| t.is_zero()) {
            return Err(ServerError::InvalidConfig(
                "idle_timeout must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Counters of a server's TCP doors (all of them together), from
/// [`ServerHandle::tcp_stats`]. The engine's counters
/// ([`ServerHandle::stats`]) count the messages themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpStats {
    /// Connections accepted and served.
    pub connections_accepted: u64,
    /// Connections closed at once because `max_connections` were open.
    pub connections_refused: u64,
    /// Connections open now.
    pub connections_open: usize,
    /// Connections closed by the idle timeout.
    pub closed_idle: u64,
    /// TLS handshakes that failed or timed out.
    pub handshake_failures: u64,
    /// Frames received (within the limit).
    pub frames_received: u64,
    /// Connections closed because a frame's length prefix was over
    /// `max_frame` (also in the engine's `too_large_requests`).
    pub oversized_frames: u64,
    /// Of `oversized_frames`, those whose length was more than four times
    /// `max_frame` (rather garbage than a request: a port scan, TLS spoken
    /// to a plain port, ...).
    pub absurd_lengths: u64,
    /// Connections closed because of a read error or a stream cut inside a
    /// frame.
    pub read_errors: u64,
    /// Connections closed because a frame did not arrive whole within
    /// `frame_timeout` (after it got its buffer budget, if it needed any).
    pub closed_frame_timeout: u64,
    /// Connections closed because their frame waited for buffer budget
    /// until its `frame_timeout` passed.
    pub closed_no_budget: u64,
    /// Frames that had to wait for buffer budget (whether they got it or
    /// not).
    pub budget_waits: u64,
    /// Frames queued for sending.
    pub frames_sent: u64,
    /// Write calls (each carries every frame queued since the last one).
    pub writes: u64,
    /// Errors accepting a connection.
    pub accept_errors: u64,
}

#[derive(Debug, Default)]
struct DoorCounters {
    accepted: AtomicU64,
    refused: AtomicU64,
    closed_idle: AtomicU64,
    handshake_failures: AtomicU64,
    frames_received: AtomicU64,
    oversized: AtomicU64,
    absurd: AtomicU64,
    read_errors: AtomicU64,
    frame_timeouts: AtomicU64,
    no_budget: AtomicU64,
    budget_waits: AtomicU64,
    accept_errors: AtomicU64,
    write: WriteCounters,
}

/// One listening TCP socket of a server.
pub(crate) struct TcpDoor {
    local_addr: SocketAddr,
    config: TcpServerConfig,
    /// The TLS side (with ALPN [`ALPN_RPC`](crate::tls::ALPN_RPC)), made
    /// once from `config.tls`.
    #[cfg(feature = "tls")]
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    /// The server's, shared with its other doors.
    budget: Arc<ByteBudget>,
    counters: DoorCounters,
    open: AtomicUsize,
    closed: Notify,
    closing: watch::Sender<bool>,
}

impl fmt::Debug for TcpDoor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpDoor")
            .field("local_addr", &self.local_addr)
            .field("open", &self.open.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl TcpDoor {
    fn add_to(&self, s: &mut TcpStats) {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        s.connections_accepted += get(&c.accepted);
        s.connections_refused += get(&c.refused);
        s.connections_open += self.open.load(Ordering::Relaxed);
        s.closed_idle += get(&c.closed_idle);
        s.handshake_failures += get(&c.handshake_failures);
        s.frames_received += get(&c.frames_received);
        s.oversized_frames += get(&c.oversized);
        s.absurd_lengths += get(&c.absurd);
        s.read_errors += get(&c.read_errors);
        s.closed_frame_timeout += get(&c.frame_timeouts);
        s.closed_no_budget += get(&c.no_budget);
        s.budget_waits += get(&c.budget_waits);
        s.frames_sent += get(&c.write.frames);
        s.writes += get(&c.write.writes);
        s.accept_errors += get(&c.accept_errors);
    }

    /// Stops accepting and closes every connection once it has written
    /// what is queued; waits for them at most `timeout`.
    pub(crate) async fn drain(&self, timeout: Duration) {
        self.closing.send_replace(true);
        let wait = async {
            loop {
                let closed = self.closed.notified();
                tokio::pin!(closed);
                closed.as_mut().enable();
                if self.open.load(Ordering::Acquire) == 0 {
                    return;
                }
                closed.await;
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
    }
}

/// Binds `addr` and starts accepting; returns the door and its task.
async fn bind(
    engine: &Arc<Engine>,
    budget: &Arc<ByteBudget>,
    addr: impl tokio::net::ToSocketAddrs,
    config: TcpServerConfig,
) -> Result<(Arc<TcpDoor>, tokio::task::JoinHandle<()>), ServerError> {
    config.validate(budget.limit())?;
    #[cfg(feature = "tls")]
    let acceptor = crate::tls::door_acceptor(config.tls.as_ref(), crate::tls::ALPN_RPC)
        .map_err(|e| ServerError::InvalidConfig(e.to_string()))?;
    let (listener, local_addr) = super::listen(addr).await?;
    let door = Arc::new(TcpDoor {
        local_addr,
        config,
        #[cfg(feature = "tls")]
        acceptor,
        budget: Arc::clone(budget),
        counters: DoorCounters::default(),
        open: AtomicUsize::new(0),
        closed: Notify::new(),
        closing: watch::channel(false).0,
    });
    let task = tokio::spawn(accept_loop(Arc::clone(engine), Arc::clone(&door), listener));
    tracing::debug!(%local_addr, tls = door.is_tls(), "tcp door open");
    Ok((door, task))
}

impl TcpDoor {
    fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        {
            self.config.tls.is_some()
        }
        #[cfg(not(feature = "tls"))]
        {
            false
        }
    }
}

impl ServerBuilder {
    /// Starts the server with a TCP door bound to `addr`, with the
    /// default [`TcpServerConfig`].
    ///
    /// # Errors
    /// As [`ServerBuilder::serve_tcp_with`].
    pub async fn serve_tcp(
        self,
        addr: impl tokio::net::ToSocketAddrs,
    ) -> Result<ServerHandle, ServerError> {
        self.serve_tcp_with(addr, TcpServerConfig::default()).await
    }

    /// Starts the server with a TCP door bound to `addr` (TLS when
    /// `config.tls` says so). More doors can be added to the running
    /// server with the handle's verbs of the same names
    /// ([`ServerHandle::serve_udp`], [`ServerHandle::serve_tcp_with`], ...).
    ///
    /// # Errors
    /// [`ServerError::Bind`] when the address cannot be bound,
    /// [`ServerError::InvalidConfig`] for a limit out of range,
    /// [`ServerError::DuplicateService`] when two services share a name,
    /// [`ServerError::DoorRefused`] when the door (TLS or not, client
    /// certificates or not) cannot meet the server's
    /// [`AuthPolicy`](super::AuthPolicy).
    pub async fn serve_tcp_with(
        self,
        addr: impl tokio::net::ToSocketAddrs,
        config: TcpServerConfig,
    ) -> Result<ServerHandle, ServerError> {
        let handle = self.start(config.door_kind())?;
        handle.serve_tcp_with(addr, config).await?;
        Ok(handle)
    }
}

impl ServerHandle {
    /// Serves the same services, with the same engine (history, counters,
    /// incarnation), on a TCP listener bound to `addr` as well, with the
    /// default [`TcpServerConfig`]. Returns the listener's address.
    ///
    /// # Errors
    /// As [`ServerHandle::serve_tcp_with`].
    pub async fn serve_tcp(
        &self,
        addr: impl tokio::net::ToSocketAddrs,
    ) -> Result<SocketAddr, ServerError> {
        self.serve_tcp_with(addr, TcpServerConfig::default()).await
    }

    /// Serves the same services, with the same engine (history, counters,
    /// incarnation), on a TCP listener bound to `addr` as well (TLS when
    /// `config.tls` says so). Returns the listener's address.
    ///
    /// # Errors
    /// [`ServerError::Bind`], [`ServerError::LocalAddr`],
    /// [`ServerError::InvalidConfig`], [`ServerError::DoorRefused`].
    pub async fn serve_tcp_with(
        &self,
        addr: impl tokio::net::ToSocketAddrs,
        config: TcpServerConfig,
    ) -> Result<SocketAddr, ServerError> {
        self.auth.admit(config.door_kind())?;
        let (door, task) = bind(&self.engine, &self.budget, addr, config).await?;
        let local = door.local_addr;
        self.add_door(local, task);
        self.tcp_doors.push(door);
        Ok(local)
    }

    /// The counters of the server's TCP doors, summed (all zero without
    /// one).
    pub fn tcp_stats(&self) -> TcpStats {
        self.tcp_doors.sum(TcpDoor::add_to)
    }

    /// The addresses of the server's TCP listeners.
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.tcp_doors.all().iter().map(|d| d.local_addr).collect()
    }

    /// Closes the TCP doors gracefully (part of [`ServerHandle::shutdown`]).
    pub(super) async fn drain_tcp(&self, timeout: Duration) {
        for door in self.tcp_doors.all() {
            door.drain(timeout).await;
        }
    }
}

mod conn;

use conn::accept_loop;
