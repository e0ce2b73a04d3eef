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
//! Limits ([`TcpServerConfig`]): frame size (a bigger request is skipped
//! and answered with RESOURCE_EXHAUSTED when its header names it; an
//! absurd length closes the connection), number of connections (more are
//! closed at once), idle timeout, TLS handshake timeout. Graceful shutdown
//! ([`ServerHandle::shutdown`]) stops accepting, lets running handlers
//! finish and their replies be written, then closes every connection.

use super::engine::{Engine, ReplySink};
use super::stats::bump;
use super::{ServerBuilder, ServerError, ServerHandle};
use crate::envelope::{self, Envelope, ExchangeProtocol, MessageType, VERSION};
use crate::service::TransportKind;
use crate::status::Status;
use crate::transport::tcp::{
    write_loop, Frame, FrameError, FrameReader, Outbox, WriteCounters, DEFAULT_MAX_FRAME,
};
use prost::Message;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;

/// Queued reply bytes per connection above which handlers wait for the
/// writer (a single frame is always accepted).
const OUTBOX_HIGH_WATER: usize = 1 << 20;

/// How long a closing connection may take to write its queued replies.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Limits of a TCP door.
///
/// Defaults: `max_frame` 16 MiB, `max_connections` 10,000, `idle_timeout`
/// 5 minutes, `handshake_timeout` 10 s, no TLS.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TcpServerConfig {
    /// Largest frame (one envelope) received or sent. A bigger request is
    /// refused with RESOURCE_EXHAUSTED (it does not run); a bigger reply
    /// becomes a RESOURCE_EXHAUSTED reply. Default 16 MiB; at least 256.
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

    fn validate(&self) -> Result<(), ServerError> {
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
    /// Frames over `max_frame` skipped (also in the engine's
    /// `too_large_requests`).
    pub oversized_frames: u64,
    /// Connections closed because the peer announced a length far beyond
    /// the limit (also in the engine's `too_large_requests`).
    pub absurd_lengths: u64,
    /// Connections closed because of a read error or a stream cut inside a
    /// frame.
    pub read_errors: u64,
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
    accept_errors: AtomicU64,
    write: WriteCounters,
}

/// One listening TCP socket of a server.
pub(crate) struct TcpDoor {
    local_addr: SocketAddr,
    config: TcpServerConfig,
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
    addr: impl tokio::net::ToSocketAddrs,
    config: TcpServerConfig,
) -> Result<(Arc<TcpDoor>, tokio::task::JoinHandle<()>), ServerError> {
    config.validate()?;
    let listener = TcpListener::bind(addr).await.map_err(ServerError::Bind)?;
    let local_addr = listener.local_addr().map_err(ServerError::LocalAddr)?;
    let door = Arc::new(TcpDoor {
        local_addr,
        config,
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
    /// Binds a TCP listener on `addr` and serves on it with the default
    /// [`TcpServerConfig`].
    ///
    /// # Errors
    /// As [`ServerBuilder::serve_tcp_with`].
    pub async fn serve_tcp(
        self,
        addr: impl tokio::net::ToSocketAddrs,
    ) -> Result<ServerHandle, ServerError> {
        self.serve_tcp_with(addr, TcpServerConfig::default()).await
    }

    /// Binds a TCP listener on `addr` and serves on it (TLS when
    /// `config.tls` says so). More doors (UDP, TCP) can be added to the
    /// running server: [`ServerHandle::serve_also_on`],
    /// [`ServerHandle::serve_tcp_also`].
    ///
    /// # Errors
    /// [`ServerError::Bind`] when the address cannot be bound,
    /// [`ServerError::InvalidConfig`] for a limit out of range,
    /// [`ServerError::DuplicateService`] when two services share a name.
    pub async fn serve_tcp_with(
        self,
        addr: impl tokio::net::ToSocketAddrs,
        config: TcpServerConfig,
    ) -> Result<ServerHandle, ServerError> {
        config.validate()?;
        let engine = self.build()?;
        let (door, task) = bind(&engine, addr, config).await?;
        let handle = ServerHandle::with_door(engine, door.local_addr, task);
        handle
            .tcp_doors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(door);
        Ok(handle)
    }
}

impl ServerHandle {
    /// Serves the same services, with the same engine (history, counters,
    /// incarnation), on a TCP listener bound to `addr` as well. Returns the
    /// listener's address.
    ///
    /// # Errors
    /// [`ServerError::Bind`], [`ServerError::LocalAddr`],
    /// [`ServerError::InvalidConfig`].
    pub async fn serve_tcp_also(
        &self,
        addr: impl tokio::net::ToSocketAddrs,
        config: TcpServerConfig,
    ) -> Result<SocketAddr, ServerError> {
        let (door, task) = bind(&self.engine, addr, config).await?;
        let local = door.local_addr;
        self.add_door(task);
        self.tcp_doors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(door);
        Ok(local)
    }

    /// The counters of the server's TCP doors, summed (all zero without
    /// one).
    pub fn tcp_stats(&self) -> TcpStats {
        let mut stats = TcpStats::default();
        for door in self
            .tcp_doors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            door.add_to(&mut stats);
        }
        stats
    }

    /// The addresses of the server's TCP listeners.
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.tcp_doors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|d| d.local_addr)
            .collect()
    }

    /// Closes the TCP doors gracefully (part of [`ServerHandle::shutdown`]).
    pub(super) async fn drain_tcp(&self, timeout: Duration) {
        let doors: Vec<Arc<TcpDoor>> = self
            .tcp_doors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for door in doors {
            door.drain(timeout).await;
        }
    }
}

/// Accepts connections until the door closes (or the task is aborted,
/// which ends every connection task with it).
async fn accept_loop(engine: Arc<Engine>, door: Arc<TcpDoor>, listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(door.config.max_connections));
    let mut conns = JoinSet::new();
    let mut closing = door.closing.subscribe();
    let mut failures = 0u32;
    loop {
        tokio::select! {
            () = closed(&mut closing) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    failures = 0;
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        bump(&door.counters.refused);
                        tracing::debug!(%peer, limit = door.config.max_connections, "connection refused: too many open");
                        drop(stream);
                        continue;
                    };
                    bump(&door.counters.accepted);
                    door.open.fetch_add(1, Ordering::AcqRel);
                    let (engine, door) = (Arc::clone(&engine), Arc::clone(&door));
                    conns.spawn(async move {
                        let _open = Open(Arc::clone(&door));
                        connection(engine, door, stream, peer).await;
                        drop(slot);
                    });
                }
                Err(error) => {
                    // Out of descriptors and the like: back off, do not spin.
                    bump(&door.counters.accept_errors);
                    failures = failures.saturating_add(1);
                    tracing::debug!(%error, "accept failed");
                    let ms = 1u64 << failures.min(7);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
            },
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// Counts an open connection; wakes a draining door when the last closes.
struct Open(Arc<TcpDoor>);

impl Drop for Open {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.closed.notify_waiters();
        }
    }
}

async fn connection(engine: Arc<Engine>, door: Arc<TcpDoor>, stream: TcpStream, peer: SocketAddr) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
    }
    #[cfg(feature = "tls")]
    if let Some(tls) = door.config.tls.clone() {
        let acceptor = tls.acceptor();
        let accepted =
            tokio::time::timeout(door.config.handshake_timeout, acceptor.accept(stream)).await;
        match accepted {
            Ok(Ok(stream)) => {
                let (r, w) = tokio::io::split(stream);
                serve(engine, door, r, w, peer).await;
            }
            Ok(Err(error)) => {
                bump(&door.counters.handshake_failures);
                tracing::debug!(%peer, %error, "tls handshake failed");
            }
            Err(_) => {
                bump(&door.counters.handshake_failures);
                tracing::debug!(%peer, "tls handshake timed out");
            }
        }
        return;
    }
    let (r, w) = stream.into_split();
    serve(engine, door, r, w, peer).await;
}

/// The way back to one connection: its outbox.
#[derive(Clone)]
struct TcpReply {
    outbox: Arc<Outbox>,
    peer: SocketAddr,
    limit: usize,
    /// Frames queued on this connection (for the idle check).
    sent: Arc<AtomicU64>,
    door: Arc<TcpDoor>,
}

impl ReplySink for TcpReply {
    async fn send(&self, message: &[u8]) -> io::Result<()> {
        self.outbox.push(message).await?;
        self.sent.fetch_add(1, Ordering::Relaxed);
        bump(&self.door.counters.write.frames);
        Ok(())
    }

    fn peer(&self) -> Option<SocketAddr> {
        Some(self.peer)
    }

    fn transport(&self) -> TransportKind {
        TransportKind::Tcp
    }

    fn max_message_len(&self) -> usize {
        self.limit
    }
}

/// Serves one connection (after the TLS handshake, if any) until the peer
/// closes it, an error, the idle timeout or the door's drain.
async fn serve<R, W>(engine: Arc<Engine>, door: Arc<TcpDoor>, r: R, w: W, peer: SocketAddr)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let outbox = Arc::new(Outbox::new(OUTBOX_HIGH_WATER));
    let sink = TcpReply {
        outbox: Arc::clone(&outbox),
        peer,
        limit: door.config.max_frame,
        sent: Arc::new(AtomicU64::new(0)),
        door: Arc::clone(&door),
    };
    tracing::debug!(%peer, "connection open");
    let writer = write_loop(&outbox, w, &door.counters.write);
    tokio::pin!(writer);
    let reader = read_loop(&engine, &door, r, &sink);
    tokio::pin!(reader);
    tokio::select! {
        result = &mut writer => {
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "write failed; connection closed");
            }
            outbox.close();
            return;
        }
        () = &mut reader => {}
    }
    // Write what is queued (replies of this connection's last requests),
    // then shut the stream down.
    outbox.close();
    let _ = tokio::time::timeout(FLUSH_TIMEOUT, writer).await;
    tracing::debug!(%peer, "connection closed");
}

async fn read_loop<R: AsyncRead + Unpin>(
    engine: &Arc<Engine>,
    door: &TcpDoor,
    r: R,
    sink: &TcpReply,
) {
    let mut frames = FrameReader::new(r, door.config.max_frame);
    let mut closing = door.closing.subscribe();
    // One wait for the door's closing, polled across reads: a new one per
    // read would register (and unregister) with the watch channel each time.
    let closing = closed(&mut closing);
    tokio::pin!(closing);
    let counters = &door.counters;
    // One timer for the connection, reset only when it fires: no timer
    // registration per read.
    let idle = door.config.idle_timeout;
    let far = Duration::from_secs(365 * 24 * 3600);
    let idle_timer = tokio::time::sleep(idle.unwrap_or(far));
    tokio::pin!(idle_timer);
    let mut received = 0u64;
    let mut seen = (received, sink.sent.load(Ordering::Relaxed));
    loop {
        // Frames already buffered are taken without polling anything else.
        let next = if frames.has_frame() {
            frames.next().await
        } else {
            let next = frames.next();
            tokio::pin!(next);
            loop {
                tokio::select! {
                    biased;
                    () = &mut closing => return,
                    () = &mut idle_timer, if idle.is_some() => {
                        let now = (received, sink.sent.load(Ordering::Relaxed));
                        if now == seen {
                            bump(&counters.closed_idle);
                            tracing::debug!(peer = %sink.peer, "idle connection closed");
                            return;
                        }
                        seen = now;
                        idle_timer.as_mut().reset(tokio::time::Instant::now() + idle.unwrap_or(far));
                    }
                    next = &mut next => break next,
                }
            }
        };
        received += 1;
        let frame = match next {
            Ok(None) => return,
            Ok(Some(frame)) => frame,
            Err(FrameError::Absurd { len, limit }) => {
                bump(&counters.absurd);
                bump(&engine.counters().too_large_requests);
                tracing::debug!(peer = %sink.peer, len, limit, "absurd frame length; connection closed");
                return;
            }
            Err(error) => {
                bump(&counters.read_errors);
                bump(&engine.counters().recv_errors);
                tracing::debug!(peer = %sink.peer, %error, "read failed; connection closed");
                return;
            }
        };
        match frame {
            Frame::Data(bytes) => {
                bump(&counters.frames_received);
                bump(&engine.counters().received);
                let len = bytes.len();
                // Decoding from `Bytes` shares the payload, no copy.
                match Envelope::decode_naming(bytes, |name| engine.service_name(name)) {
                    Ok(env) => engine.handle_envelope(env, sink).await,
                    Err(error) => {
                        bump(&engine.counters().malformed_dropped);
                        tracing::debug!(peer = %sink.peer, len, %error, "dropped undecodable frame");
                    }
                }
            }
            Frame::TooLarge { len, header } => {
                bump(&counters.oversized);
                bump(&engine.counters().received);
                bump(&engine.counters().too_large_requests);
                tracing::debug!(peer = %sink.peer, len, limit = sink.limit, request_id = header.request_id, "oversized frame skipped");
                let answerable = header.r#type == MessageType::Request as i32
                    && header.session_id != 0
                    && header.request_id != 0
                    && header.protocol != ExchangeProtocol::R as i32;
                if answerable {
                    let status = Status::resource_exhausted(format!(
                        "request of {len} bytes exceeds the limit of {} bytes",
                        sink.limit
                    ));
                    let error = Envelope {
                        version: VERSION,
                        r#type: MessageType::Error as i32,
                        request_id: header.request_id,
                        session_id: header.session_id,
                        incarnation: engine.incarnation(),
                        status: Some(Box::new(envelope::Status::from(&status))),
                        ..Envelope::default()
                    };
                    bump(&engine.counters().errors);
                    if sink.send(&error.encode_to_vec()).await.is_err() {
                        bump(&engine.counters().send_errors);
                    }
                }
            }
        }
    }
}

/// Resolves once the door is closing.
async fn closed(closing: &mut watch::Receiver<bool>) {
    if closing.wait_for(|c| *c).await.is_err() {
        // The door is gone: never resolve (the task is being aborted).
        std::future::pending::<()>().await;
    }
}
