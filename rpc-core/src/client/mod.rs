//! The client side of the protocol (`idl/PROTOCOL.md`): a [`UdpChannel`]
//! (over one datagram socket) and a [`TcpChannel`] (over a reliable link)
//! run R, RR and RRA for every call style, with one session and exchange
//! logic written once over the link.
//!
//! How the pieces fit:
//! - one channel is one client *session*: a random non-zero session id,
//!   request ids from 1 (module `session`), one *link* to one server
//!   address (module `link`): a datagram socket, which may lose what it
//!   sends, or the reliable TCP link of [`TcpChannel`] (module `tcp`),
//!   which loses nothing while its connection lives and says when the
//!   connection was replaced;
//! - a calling future (from [`Channel::invoke`]) sends its own REQUEST
//!   copies and drives its own retransmission timer (module `exchange`;
//!   module `rto`: adaptive timeout per Jacobson/Karels with Karn's rule,
//!   exponential backoff with jitter), so the hot path has no task hop on
//!   the sending side. Over a reliable link it sends the request once and
//!   polls only after a reconnect;
//! - one receive task per channel (module `receive`) drains the link in batches
//!   ([`DatagramSocket::recv_batch`]) and routes every envelope by request
//!   id to the pending call, waking it; it sends the ACKs of RRA replies
//!   itself, without waiting for the caller;
//! - sends are coalesced per burst: while the receive task handles a batch
//!   that woke several callers and lets them run, REQUEST and PING copies
//!   are queued
//!   instead of sent; the receive task then sends them, with the burst's
//!   ACKs, in one [`DatagramSocket::send_batch`] (UDP segmentation offload
//!   on Linux). A call started outside a burst (a lone call, a
//!   retransmission timer) sends at once, so nothing waits to fill a batch.
//!   A queued copy that cannot be sent counts as lost (it is retransmitted
//!   on schedule) instead of failing the call with [`Error::Io`];
//! - ACKs are delayed, then coalesced: the ACK of an RRA answer waits up
//!   to [`ChannelConfig::ack_delay`] for a REQUEST or PING of the session
//!   whose `ack_up_to` reaches its id (a caller that calls again at once,
//!   as a lock's acquire then release, sends no ACK at all). When the
//!   delay ends, L is the current `ack_up_to`; every held answer with an
//!   id above L gets its own ACK (carrying L), and if there is none, one
//!   ACK carries the largest held id with L, which covers them all (their
//!   ids are at most L). Every RRA answer is thus acknowledged within the
//!   delay (plus a scheduling round), and a lost ACK is covered by the next
//!   ACK or REQUEST, whose `ack_up_to` only grows;
//! - a send window bounds how far request ids run ahead of `ack_up_to`
//!   ([`ChannelConfig::max_window`]): a call that would take an id more
//!   than the window past it waits (in arrival order, its deadline
//!   running) until older calls finish. The server's history then holds
//!   at most about a window of this session's entries, so its per-session
//!   cap never evicts the stored reply of a call that is still
//!   retransmitting. The check is one comparison under the session lock
//!   that hands out the id anyway;
//! - [`ClientStats`] counts what happened ([`UdpChannel::stats`]).
//!
//! Dropping the last clone of a channel stops its receive task; calls still
//! in flight then fail with [`Error::Closed`].

mod connect;
mod exchange;
mod link;
mod receive;
pub(crate) use receive::answer_kind;
pub(crate) mod rto;
pub(crate) mod session;
mod stats;
mod tcp;

pub use connect::ConnectError;
pub use stats::ClientStats;
pub use tcp::{TcpChannel, TcpConfig, TcpLinkStats};

use crate::call::{Channel, Invocation, Outcome};
use crate::error::Error;
use crate::transport::DatagramSocket;
use futures::future::BoxFuture;
use link::{Link, OutgoingBatch};
use rto::RtoEstimator;
use session::Session;
use stats::Counters;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::net::UdpSocket;

/// Largest `ChannelConfig::max_wait` and `max_rto` (tokio's timers reach
/// about two years).
const MAX_WAIT_LIMIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Configuration of a [`UdpChannel`]. Start from [`ChannelConfig::default`]
/// and change fields:
///
/// ```
/// # use std::time::Duration;
/// let mut config = rpc_core::client::ChannelConfig::default();
/// config.default_retries = 3;
/// config.min_rto = Duration::from_millis(2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelConfig {
    /// Retransmission timeout before the first round trip was measured.
    /// Default 100 ms.
    pub initial_rto: Duration,
    /// Smallest retransmission timeout, however fast the server answers.
    /// Default 5 ms; values below 1 ms are raised to 1 ms.
    pub min_rto: Duration,
    /// Largest retransmission timeout, backoff and poll interval. Default
    /// 1 s; never below `min_rto`, at most one year.
    pub max_rto: Duration,
    /// Attempts after the first for calls that do not say (neither per call
    /// nor in the IDL). Default 10: at 20% loss in each direction a call
    /// then fails for lack of an answer with a probability of about
    /// 1.3e-5.
    pub default_retries: u32,
    /// Largest datagram the channel sends: a request whose envelope would
    /// be larger fails with [`Error::MessageTooLarge`] before anything is
    /// sent. Default 65,000 bytes (the UDP limit is 65,507 over IPv4).
    pub max_datagram: usize,
    /// Cap on the whole waiting time of a call without deadline (polling a
    /// request the server is running, waiting for a deferred result).
    /// Default 30 s; at most one year.
    pub max_wait: Duration,
    /// Send window: a call may take request id N only while
    /// `N - ack_up_to <= max_window`; otherwise it waits (its deadline, or
    /// `max_wait` without one, runs meanwhile) until older calls finish.
    /// This keeps the server from evicting a slow call's stored reply by
    /// its per-session history cap while newer calls complete. Keep it at
    /// most the server's per-session cap; half of it leaves room for an
    /// `ack_up_to` the server has not heard of yet. Default 512 (half the
    /// server's default cap of 1024); 0 means unlimited.
    ///
    /// A call that is still running on the server (or a deferred call
    /// whose result has not arrived) holds the window: with one call
    /// outstanding, at most `max_window - 1` newer calls start before it
    /// finishes.
    pub max_window: u64,
    /// How long the ACK of an RRA answer may wait for a REQUEST or PING
    /// that carries it instead: when the caller's next call leaves within
    /// this time, its `ack_up_to` acknowledges the answer and no ACK
    /// datagram is sent (TCP's delayed acknowledgement, for the same
    /// reason: a client that calls again at once, such as acquire then
    /// release, costs the server one datagram less per call). The server
    /// keeps the stored answer that much longer. Default 10 ms;
    /// `Duration::ZERO` sends every ACK at the end of the burst that
    /// received its answer.
    pub ack_delay: Duration,
}

impl Default for ChannelConfig {
    fn default() -> ChannelConfig {
        ChannelConfig {
            initial_rto: Duration::from_millis(100),
            min_rto: Duration::from_millis(5),
            max_rto: Duration::from_secs(1),
            default_retries: 10,
            max_datagram: 65_000,
            max_wait: Duration::from_secs(30),
            max_window: 512,
            ack_delay: Duration::from_millis(10),
        }
    }
}

impl ChannelConfig {
    fn normalized(mut self) -> ChannelConfig {
        self.min_rto = self.min_rto.max(Duration::from_millis(1));
        self.min_rto = self.min_rto.min(MAX_WAIT_LIMIT);
        self.max_rto = self.max_rto.clamp(self.min_rto, MAX_WAIT_LIMIT);
        self.initial_rto = self.initial_rto.clamp(self.min_rto, self.max_rto);
        self.max_wait = self.max_wait.min(MAX_WAIT_LIMIT);
        self.ack_delay = self.ack_delay.min(self.max_rto);
        self
    }
}

/// What a channel's calls and its receive task share.
struct Shared<L> {
    link: L,
    server: SocketAddr,
    session_id: u64,
    config: ChannelConfig,
    state: Mutex<Session>,
    counters: Counters,
    closed: AtomicBool,
    /// Datagrams queued while the receive task handles a burst.
    outbox: Mutex<Outbox>,
}

/// Sends held back until the receive task flushes its burst.
#[derive(Debug, Default)]
struct Outbox {
    /// The receive task is handling a burst and will flush: queue.
    flush_due: bool,
    batch: OutgoingBatch,
}

impl<L> Shared<L> {
    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock(&self) -> MutexGuard<'_, Session> {
        // Nothing panics while holding the lock; should it happen anyway,
        // the session is still consistent enough to go on.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let wakers = {
            let mut session = self.lock();
            session.wake_window_waiters();
            session.take_all_wakers()
        };
        for w in wakers {
            w.wake();
        }
    }

    /// Sends `datagram` (the encoding of `envelope`, when given) to the
    /// server, or queues it when the receive task is about to flush a burst
    /// (see the module docs).
    ///
    /// # Errors
    /// The link's, for a datagram sent at once.
    async fn send_datagram(
        &self,
        datagram: &[u8],
        envelope: Option<&crate::envelope::Envelope>,
    ) -> io::Result<()>
    where
        L: Link,
    {
        {
            let mut outbox = self.outbox();
            if outbox.flush_due {
                let header = envelope.map(crate::envelope::EnvelopeHeader::of);
                outbox.batch.push(datagram, self.server, header);
                return Ok(());
            }
        }
        let message = link::Outgoing {
            bytes: datagram,
            to: self.server,
            envelope,
        };
        self.link.send(message).await.map(|_| ())
    }

    /// Whether a datagram from `from` comes from the server.
    fn is_server(&self, from: SocketAddr) -> bool {
        let server = self.server;
        from.port() == server.port()
            && (server.ip().is_unspecified()
                || from.ip().to_canonical() == server.ip().to_canonical())
    }
}

/// Stops the receive task when the last clone of the channel is dropped.
struct Lifeline<L> {
    shared: Arc<Shared<L>>,
    receiver: tokio::task::AbortHandle,
}

impl<L> Drop for Lifeline<L> {
    fn drop(&mut self) {
        self.receiver.abort();
        self.shared.close();
    }
}

/// One session over a link, with its receive task: what [`UdpChannel`]
/// and [`TcpChannel`] are made of. Cheap to clone; dropping the last clone
/// stops the receive task.
struct Core<L> {
    life: Arc<Lifeline<L>>,
}

impl<L> Clone for Core<L> {
    fn clone(&self) -> Self {
        Core {
            life: self.life.clone(),
        }
    }
}

impl<L: Link> Core<L> {
    /// A session to `server` over `link`; starts the receive task.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    fn new(link: L, server: SocketAddr, config: ChannelConfig) -> Core<L> {
        let config = config.normalized();
        let session_id = loop {
            let id: u64 = rand::random();
            if id != 0 {
                break id;
            }
        };
        let rto = RtoEstimator::new(config.initial_rto, config.min_rto, config.max_rto);
        let window = config.max_window;
        let shared = Arc::new(Shared {
            link,
            server,
            session_id,
            config,
            state: Mutex::new(Session::new(rto, window)),
            counters: Counters::default(),
            closed: AtomicBool::new(false),
            outbox: Mutex::new(Outbox::default()),
        });
        let receiver = tokio::spawn(receive::receive_loop(shared.clone())).abort_handle();
        tracing::debug!(session_id = format_args!("{session_id:016x}"), %server, "client session started");
        Core {
            life: Arc::new(Lifeline { shared, receiver }),
        }
    }

    fn shared(&self) -> &Shared<L> {
        &self.life.shared
    }

    fn stats(&self) -> ClientStats {
        let shared = self.shared();
        let mut stats = ClientStats::default();
        shared.counters.fill(&mut stats);
        let session = shared.lock();
        (stats.srtt, stats.rto) = session.rtt();
        stats.incarnation = session.incarnation();
        stats.session_id = shared.session_id;
        stats
    }

    fn invoke(&self, invocation: Invocation) -> BoxFuture<'static, Result<Outcome, Error>> {
        Box::pin(exchange::invoke(self.life.shared.clone(), invocation))
    }
}

/// A client session over a datagram socket (UDP, or the in-memory network)
/// talking to one server: implements [`Channel`] for every call style and
/// the protocols R, RR and RRA of `idl/PROTOCOL.md`.
///
/// Cheap to clone; clones share the session. Dropping the last clone stops
/// the receive task, and calls still in flight fail with [`Error::Closed`].
///
/// ```no_run
/// # async fn demo() -> Result<(), rpc_core::Error> {
/// use rpc_core::client::UdpChannel;
/// let channel = UdpChannel::connect("127.0.0.1:7000".parse().unwrap()).await?;
/// let client = rpc_core::Client::new(channel);
/// # Ok(()) }
/// ```
pub struct UdpChannel<S: DatagramSocket = UdpSocket> {
    core: Core<S>,
}

impl<S: DatagramSocket> Clone for UdpChannel<S> {
    fn clone(&self) -> Self {
        UdpChannel {
            core: self.core.clone(),
        }
    }
}

impl<S: DatagramSocket> fmt::Debug for UdpChannel<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = self.core.shared();
        f.debug_struct("UdpChannel")
            .field("server", &shared.server)
            .field("local", &shared.link.local_addr().ok())
            .field("session_id", &format_args!("{:016x}", shared.session_id))
            .field("closed", &shared.is_closed())
            .finish()
    }
}

impl UdpChannel<UdpSocket> {
    /// A channel to `server` over a new UDP socket with the default
    /// [`ChannelConfig`]. The socket is bound to an ephemeral port of the
    /// server's family: `127.0.0.1:0` / `[::1]:0` for a loopback server,
    /// else `0.0.0.0:0` / `[::]:0`.
    ///
    /// # Errors
    /// [`Error::Io`] when the socket cannot be bound.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub async fn connect(server: SocketAddr) -> Result<UdpChannel<UdpSocket>, Error> {
        UdpChannel::connect_with(server, ChannelConfig::default()).await
    }

    /// As [`UdpChannel::connect`], with `config`.
    ///
    /// # Errors
    /// [`Error::Io`] when the socket cannot be bound.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub async fn connect_with(
        server: SocketAddr,
        config: ChannelConfig,
    ) -> Result<UdpChannel<UdpSocket>, Error> {
        let local: SocketAddr = match server.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => (Ipv4Addr::LOCALHOST, 0).into(),
            IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(ip) if ip.is_loopback() => (Ipv6Addr::LOCALHOST, 0).into(),
            IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local).await.map_err(Error::Io)?;
        crate::transport::tune_socket(&socket);
        Ok(UdpChannel::with_socket(socket, server, config))
    }
}

impl<S: DatagramSocket> UdpChannel<S> {
    /// A channel to `server` over `socket` (a UDP socket, or a socket of
    /// the in-memory network). Starts the receive task. The socket must
    /// not be read by anybody else.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn with_socket(socket: S, server: SocketAddr, config: ChannelConfig) -> UdpChannel<S> {
        UdpChannel {
            core: Core::new(socket, server, config),
        }
    }

    /// A snapshot of the channel's counters and round-trip estimate.
    pub fn stats(&self) -> ClientStats {
        self.core.stats()
    }

    /// The session id this channel puts on every message.
    pub fn session_id(&self) -> u64 {
        self.core.shared().session_id
    }

    /// The server's address.
    pub fn server_addr(&self) -> SocketAddr {
        self.core.shared().server
    }

    /// The local address of the socket.
    ///
    /// # Errors
    /// When the socket cannot tell.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.core.shared().link.local_addr()
    }

    /// The configuration in use (after normalization).
    pub fn config(&self) -> &ChannelConfig {
        &self.core.shared().config
    }
}

impl<S: DatagramSocket> Channel for UdpChannel<S> {
    /// Runs one invocation: R for [`Style::OneWay`](crate::Style::OneWay),
    /// RR or RRA with retransmission for the other styles; see
    /// `idl/PROTOCOL.md`, section 8.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`] (nothing sent), [`Error::Unreachable`],
    /// [`Error::DeadlineExceeded`], [`Error::OutcomeUnknown`],
    /// [`Error::Closed`], [`Error::Io`] when the first copy cannot be sent,
    /// [`Error::InvalidCall`] for protocol R with a style that waits, or
    /// one-way with RR/RRA.
    ///
    /// # Cancel safety
    /// Dropping the returned future (or the rest-of-call future of
    /// [`Outcome::Accepted`] for a deferred call) abandons the call: its
    /// pending entry is removed and its id counts as finished for
    /// `ack_up_to`, so the server may drop its history entry; a reply that
    /// arrives later is counted as late (and ACKed for RRA). An
    /// asynchronous call's exchange runs in a task of its own and is not
    /// cancelled by dropping anything.
    fn invoke(&self, invocation: Invocation) -> BoxFuture<'static, Result<Outcome, Error>> {
        self.core.invoke(invocation)
    }
}

#[cfg(test)]
mod tests;
