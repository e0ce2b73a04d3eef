//! A fault-injecting TCP proxy between clients and one upstream address.
//!
//! [`TcpFaultProxy::start`] listens on an address; every client connection
//! it accepts gets its own connection to the upstream and two pump tasks,
//! one per [`Direction`]. A pump is a reader and a writer joined by a
//! bounded queue of chunks: the reader takes what the kernel has (at most
//! [`TcpProxyConfig::chunk_size`] bytes at a time) and the writer forwards
//! it, after the delay and at the rate of its direction. An end of stream
//! is forwarded as a half-close; a connection ends when both directions
//! have ended, or at the first error either way.
//!
//! The faults are changed while the proxy runs, from any task holding the
//! [`TcpFaultProxy`], and apply at once, also to live connections and to
//! chunks already queued:
//!
//! - [`TcpFaultProxy::set_delay`]: each chunk is held that long after it
//!   was read, order kept (counted in [`DirectionStats::delayed`]);
//! - [`TcpFaultProxy::set_throttle`]: at most so many bytes per second;
//! - [`TcpFaultProxy::cut`]: every live connection is closed both ways;
//! - [`TcpFaultProxy::blackhole`]: a partition as TCP peers see it: new
//!   connections are accepted and held open (the upstream is not dialled
//!   until the blackhole is lifted), nothing is forwarded either way, what
//!   arrives is read and discarded, and nobody gets a reset;
//! - [`TcpFaultProxy::pause`]: a paused peer: nothing is read from either
//!   side, bytes wait in the kernel's buffers and none is lost (the
//!   readers parked by it are counted in [`TcpProxyStats::parked`]);
//! - [`TcpFaultProxy::heal`]: no faults.
//!
//! [`TcpFaultProxy::stats`] reads the counters. Everything is bounded: at
//! most [`TcpProxyConfig::max_connections`] live connections (beyond, a
//! new connection is accepted and closed at once, and counted), at most
//! [`TcpProxyConfig::queue_chunks`] chunks queued per direction of a
//! connection. Dropping the proxy stops every task; [`TcpFaultProxy::shutdown`]
//! also waits for them.
//!
//! ```
//! use rpc_testkit::{Direction, TcpFaultProxy};
//! use std::time::Duration;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! // Any TCP server; this one says "hi" and keeps the connection open.
//! let server = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let upstream = server.local_addr()?;
//! tokio::spawn(async move {
//!     while let Ok((mut peer, _)) = server.accept().await {
//!         tokio::spawn(async move {
//!             let _ = peer.write_all(b"hi").await;
//!             let _ = peer.read(&mut [0; 1]).await; // until the proxy closes it
//!         });
//!     }
//! });
//!
//! let proxy = TcpFaultProxy::start("127.0.0.1:0".parse()?, upstream).await?;
//! proxy.set_delay(Direction::ServerToClient, Duration::from_millis(10));
//! let mut client = tokio::net::TcpStream::connect(proxy.local_addr()).await?;
//! let mut hi = [0; 2];
//! client.read_exact(&mut hi).await?;
//! assert_eq!(&hi, b"hi");
//! proxy.cut(); // the client now reads the end of the stream
//! assert_eq!(client.read(&mut hi).await?, 0);
//! let stats = proxy.shutdown().await;
//! assert_eq!((stats.accepted, stats.cut, stats.server_to_client.forwarded), (1, 1, 2));
//! # Ok(())
//! # })
//! # }
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

mod conn;
use conn::*;

/// A direction of traffic through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the clients to the upstream.
    ClientToServer,
    /// From the upstream to the clients.
    ServerToClient,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::ClientToServer => 0,
            Direction::ServerToClient => 1,
        }
    }
}

/// An error of the TCP fault proxy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// A setting that cannot work.
    #[error("invalid tcp proxy configuration: {0}")]
    Config(&'static str),
    /// Not called within a tokio runtime.
    #[error("the tcp proxy must be started within a tokio runtime")]
    NoRuntime,
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

/// How a [`TcpFaultProxy`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpProxyConfig {
    /// Most live connections; a new one beyond is closed at once and
    /// counted in [`TcpProxyStats::refused`] (default 1024).
    pub max_connections: usize,
    /// Most bytes read at once, the largest chunk (default 16 KiB).
    pub chunk_size: usize,
    /// Most chunks queued per direction of a connection (default 8); a
    /// full queue stops the reader, so the kernel's buffers fill and the
    /// sender is slowed, as by a slow peer.
    pub queue_chunks: usize,
    /// How long dialling the upstream may take (default 10 s).
    pub connect_timeout: Duration,
}

impl Default for TcpProxyConfig {
    fn default() -> TcpProxyConfig {
        TcpProxyConfig {
            max_connections: 1024,
            chunk_size: 16 * 1024,
            queue_chunks: 8,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

setters! {
    TcpProxyConfig {
        /// Sets [`TcpProxyConfig::max_connections`].
        max_connections(n: usize) => max_connections,
        /// Sets [`TcpProxyConfig::chunk_size`].
        chunk_size(bytes: usize) => chunk_size,
        /// Sets [`TcpProxyConfig::queue_chunks`].
        queue_chunks(n: usize) => queue_chunks,
        /// Sets [`TcpProxyConfig::connect_timeout`].
        connect_timeout(timeout: Duration) => connect_timeout,
    }
}

impl TcpProxyConfig {
    /// The defaults.
    pub fn new() -> TcpProxyConfig {
        TcpProxyConfig::default()
    }

    fn validate(&self) -> Result<(), ProxyError> {
        if self.max_connections == 0 {
            return Err(ProxyError::Config("max_connections must be at least 1"));
        }
        if self.max_connections > Semaphore::MAX_PERMITS {
            return Err(ProxyError::Config("max_connections is too large"));
        }
        if self.chunk_size == 0 {
            return Err(ProxyError::Config("chunk_size must be at least 1"));
        }
        if self.queue_chunks == 0 {
            return Err(ProxyError::Config("queue_chunks must be at least 1"));
        }
        if self.connect_timeout.is_zero() {
            return Err(ProxyError::Config("connect_timeout must not be zero"));
        }
        Ok(())
    }
}

/// Bytes of one direction, as a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Bytes written to the other side.
    pub forwarded: u64,
    /// Bytes read and dropped by the blackhole.
    pub discarded: u64,
    /// Chunks forwarded while a delay was set for the direction: each
    /// was held until at least that long after it was read. A test reads
    /// here that a delay took effect, not on the clock.
    pub delayed: u64,
}

/// Counters of a [`TcpFaultProxy`], as a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpProxyStats {
    /// Client connections taken in (within the cap), since the start.
    pub accepted: u64,
    /// Connections open now.
    pub live: u64,
    /// Readers (two per connection, one per direction) parked by
    /// [`TcpFaultProxy::pause`] now: a parked reader reads nothing until
    /// the pause is lifted, so a test that sees them all parked knows
    /// that nothing sent from then on is forwarded before the resume.
    pub parked: u64,
    /// Connections closed by [`TcpFaultProxy::cut`].
    pub cut: u64,
    /// Client connections closed at once because
    /// [`TcpProxyConfig::max_connections`] were live.
    pub refused: u64,
    /// Client connections closed because the upstream could not be
    /// reached (refused, or no answer within the connect timeout).
    pub upstream_failed: u64,
    /// From the clients to the upstream.
    pub client_to_server: DirectionStats,
    /// From the upstream to the clients.
    pub server_to_client: DirectionStats,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    live: AtomicU64,
    parked: AtomicU64,
    cut: AtomicU64,
    refused: AtomicU64,
    upstream_failed: AtomicU64,
    forwarded: [AtomicU64; 2],
    discarded: [AtomicU64; 2],
    delayed: [AtomicU64; 2],
}

impl Counters {
    fn snapshot(&self) -> TcpProxyStats {
        let dir = |i: usize| DirectionStats {
            forwarded: self.forwarded[i].load(Ordering::SeqCst),
            discarded: self.discarded[i].load(Ordering::SeqCst),
            delayed: self.delayed[i].load(Ordering::SeqCst),
        };
        TcpProxyStats {
            accepted: self.accepted.load(Ordering::SeqCst),
            live: self.live.load(Ordering::SeqCst),
            parked: self.parked.load(Ordering::SeqCst),
            cut: self.cut.load(Ordering::SeqCst),
            refused: self.refused.load(Ordering::SeqCst),
            upstream_failed: self.upstream_failed.load(Ordering::SeqCst),
            client_to_server: dir(0),
            server_to_client: dir(1),
        }
    }

    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::SeqCst);
    }
}

/// The faults and commands every task watches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Control {
    delay: [Duration; 2],
    throttle: [Option<u64>; 2],
    blackhole: bool,
    paused: bool,
    /// Bumped by every cut; a connection ends when it differs from the
    /// value it was accepted under.
    cut_epoch: u64,
    stopping: bool,
}

/// Counts a connection as live for as long as it exists.
#[derive(Debug)]
struct Live(Arc<Counters>);

impl Live {
    fn new(counters: Arc<Counters>) -> Live {
        counters.live.fetch_add(1, Ordering::SeqCst);
        Live(counters)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts a reader as parked by the pause for as long as it exists.
#[derive(Debug)]
struct Parked<'a>(&'a Counters);

impl Parked<'_> {
    fn new(counters: &Counters) -> Parked<'_> {
        counters.parked.fetch_add(1, Ordering::SeqCst);
        Parked(counters)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.parked.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running fault-injecting TCP proxy. Dropping it stops every task
/// (without waiting) and closes every connection;
/// [`TcpFaultProxy::shutdown`] stops them and waits.
#[derive(Debug)]
pub struct TcpFaultProxy {
    local: SocketAddr,
    upstream: SocketAddr,
    counters: Arc<Counters>,
    control: watch::Sender<Control>,
    task: Option<JoinHandle<()>>,
}

impl TcpFaultProxy {
    /// Starts a proxy listening on `listen` (port 0: an ephemeral port, see
    /// [`TcpFaultProxy::local_addr`]) forwarding to `upstream`, with the
    /// default [`TcpProxyConfig`].
    ///
    /// # Errors
    /// [`ProxyError::NoRuntime`] outside a tokio runtime,
    /// [`ProxyError::Bind`] if `listen` cannot be bound.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing runs until the proxy is returned.
    pub async fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
    ) -> Result<TcpFaultProxy, ProxyError> {
        TcpFaultProxy::start_with(listen, upstream, TcpProxyConfig::default()).await
    }

    /// Starts a proxy as [`TcpFaultProxy::start`] does, with `config`.
    ///
    /// # Errors
    /// As [`TcpFaultProxy::start`], and [`ProxyError::Config`] for a
    /// setting of zero.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing runs until the proxy is returned.
    pub async fn start_with(
        listen: SocketAddr,
        upstream: SocketAddr,
        config: TcpProxyConfig,
    ) -> Result<TcpFaultProxy, ProxyError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ProxyError::NoRuntime)?;
        let bind = |source| ProxyError::Bind {
            addr: listen,
            source,
        };
        let listener = TcpListener::bind(listen).await.map_err(bind)?;
        let local = listener.local_addr().map_err(bind)?;
        let counters = Arc::new(Counters::default());
        let (control, watcher) = watch::channel(Control::default());
        let acceptor = Acceptor {
            listener,
            upstream,
            config: Arc::new(config),
            counters: Arc::clone(&counters),
            control: watcher,
        };
        let task = runtime.spawn(acceptor.run());
        tracing::debug!(%local, %upstream, "tcp fault proxy started");
        Ok(TcpFaultProxy {
            local,
            upstream,
            counters,
            control,
            task: Some(task),
        })
    }

    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The address the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Holds each chunk of `direction` for `delay` after it was read before
    /// forwarding it (zero: no delay), order kept. Applies at once, also to
    /// chunks already queued.
    pub fn set_delay(&self, direction: Direction, delay: Duration) {
        self.control
            .send_modify(|c| c.delay[direction.index()] = delay);
        tracing::debug!(local = %self.local, ?direction, ?delay, "tcp fault proxy delay");
    }

    /// Forwards at most `bytes_per_sec` bytes per second in `direction`
    /// on each connection (`None`: no limit; `Some(0)`: nothing until it
    /// changes). Applies at once.
    pub fn set_throttle(&self, direction: Direction, bytes_per_sec: Option<u64>) {
        self.control
            .send_modify(|c| c.throttle[direction.index()] = bytes_per_sec);
        tracing::debug!(local = %self.local, ?direction, ?bytes_per_sec, "tcp fault proxy throttle");
    }

    /// Closes every live connection both ways (each is counted in
    /// [`TcpProxyStats::cut`]); connections accepted afterwards are served
    /// as usual.
    pub fn cut(&self) {
        self.control
            .send_modify(|c| c.cut_epoch = c.cut_epoch.wrapping_add(1));
        tracing::debug!(local = %self.local, "tcp fault proxy cut");
    }

    /// Turns the blackhole on or off. While on, nothing is forwarded either
    /// way on any connection: what arrives is read and discarded (counted
    /// in [`DirectionStats::discarded`]), new connections are accepted and
    /// held open, and no connection is reset.
    pub fn blackhole(&self, on: bool) {
        self.control.send_modify(|c| c.blackhole = on);
        tracing::debug!(local = %self.local, on, "tcp fault proxy blackhole");
    }

    /// Pauses or resumes reading from both sides of every connection.
    /// While paused, bytes wait in the kernel's buffers (and then slow the
    /// senders down); none is lost.
    pub fn pause(&self, on: bool) {
        self.control.send_modify(|c| c.paused = on);
        tracing::debug!(local = %self.local, on, "tcp fault proxy pause");
    }

    /// Back to no faults: no delay, no throttle, no blackhole, no pause.
    pub fn heal(&self) {
        self.control.send_modify(|c| {
            *c = Control {
                cut_epoch: c.cut_epoch,
                stopping: c.stopping,
                ..Control::default()
            }
        });
        tracing::debug!(local = %self.local, "tcp fault proxy healed");
    }

    /// The counters now.
    pub fn stats(&self) -> TcpProxyStats {
        self.counters.snapshot()
    }

    /// Stops accepting, closes every connection, waits for every task to
    /// end and returns the last counters.
    ///
    /// # Cancel safety
    /// Cancelling it drops the proxy, which stops every task without
    /// waiting.
    pub async fn shutdown(mut self) -> TcpProxyStats {
        self.control.send_modify(|c| c.stopping = true);
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                tracing::debug!(error = %e, "tcp fault proxy task ended abnormally");
            }
        }
        tracing::debug!(local = %self.local, "tcp fault proxy stopped");
        self.counters.snapshot()
    }
}

impl Drop for TcpFaultProxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            // The connection tasks are in the acceptor's `JoinSet`, and the
            // pumps in theirs: aborting the acceptor drops them all.
            task.abort();
        }
    }
}
