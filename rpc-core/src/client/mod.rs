//! The client side of the datagram protocol (`notes/wire.md`): a
//! [`UdpChannel`] runs R, RR and RRA for every call style over one socket.
//!
//! How the pieces fit:
//! - one channel is one client *session*: a random non-zero session id,
//!   request ids from 1 (module `session`), one socket to one server address;
//! - a calling future (from [`Channel::invoke`]) sends its own REQUEST
//!   copies and drives its own retransmission timer (module `rto`: adaptive
//!   timeout per Jacobson/Karels with Karn's rule, exponential backoff
//!   with jitter), so the hot path has no task hop on the sending side;
//! - one receive task per channel drains the socket and routes every
//!   envelope by request id to the pending call, waking it; it sends the
//!   ACKs of RRA replies itself, without waiting for the caller;
//! - [`ClientStats`] counts what happened ([`UdpChannel::stats`]).
//!
//! Dropping the last clone of a channel stops its receive task; calls still
//! in flight then fail with [`Error::Closed`].

mod exchange;
mod rto;
mod session;
mod stats;

pub use stats::ClientStats;

use crate::call::{Channel, Invocation, Outcome};
use crate::envelope::{Envelope, MessageType, VERSION};
use crate::error::Error;
use crate::transport::DatagramSocket;
use futures::future::{BoxFuture, FutureExt};
use prost::Message;
use rto::RtoEstimator;
use session::{Routed, Session};
use stats::{bump, Counters};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// Size of the receive buffer: the largest UDP payload fits.
const RECV_BUFFER: usize = 65_536;

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
        self
    }
}

/// What a channel's calls and its receive task share.
struct Shared<S> {
    socket: S,
    server: SocketAddr,
    session_id: u64,
    config: ChannelConfig,
    state: Mutex<Session>,
    counters: Counters,
    closed: AtomicBool,
}

impl<S> Shared<S> {
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
        let wakers = self.lock().take_all_wakers();
        for w in wakers {
            w.wake();
        }
    }

    /// Whether a datagram from `from` comes from the server.
    fn is_server(&self, from: SocketAddr) -> bool {
        let server = self.server;
        from.port() == server.port()
            && (server.ip().is_unspecified() || from.ip().to_canonical() == server.ip().to_canonical())
    }
}

/// Stops the receive task when the last clone of the channel is dropped.
struct Lifeline<S> {
    shared: Arc<Shared<S>>,
    receiver: tokio::task::AbortHandle,
}

impl<S> Drop for Lifeline<S> {
    fn drop(&mut self) {
        self.receiver.abort();
        self.shared.close();
    }
}

/// A client session over a datagram socket (UDP, or the in-memory network)
/// talking to one server: implements [`Channel`] for every call style and
/// the protocols R, RR and RRA of `notes/wire.md`.
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
    life: Arc<Lifeline<S>>,
}

impl<S: DatagramSocket> Clone for UdpChannel<S> {
    fn clone(&self) -> Self {
        UdpChannel { life: self.life.clone() }
    }
}

impl<S: DatagramSocket> fmt::Debug for UdpChannel<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &self.life.shared;
        f.debug_struct("UdpChannel")
            .field("server", &shared.server)
            .field("local", &shared.socket.local_addr().ok())
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
    pub async fn connect_with(server: SocketAddr, config: ChannelConfig) -> Result<UdpChannel<UdpSocket>, Error> {
        let local: SocketAddr = match server.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => (Ipv4Addr::LOCALHOST, 0).into(),
            IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(ip) if ip.is_loopback() => (Ipv6Addr::LOCALHOST, 0).into(),
            IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local).await.map_err(Error::Io)?;
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
        let config = config.normalized();
        let session_id = loop {
            let id: u64 = rand::random();
            if id != 0 {
                break id;
            }
        };
        let rto = RtoEstimator::new(config.initial_rto, config.min_rto, config.max_rto);
        let shared = Arc::new(Shared {
            socket,
            server,
            session_id,
            config,
            state: Mutex::new(Session::new(rto)),
            counters: Counters::default(),
            closed: AtomicBool::new(false),
        });
        let receiver = tokio::spawn(receive_loop(shared.clone())).abort_handle();
        tracing::debug!(session_id = format_args!("{session_id:016x}"), %server, "client session started");
        UdpChannel { life: Arc::new(Lifeline { shared, receiver }) }
    }

    /// A snapshot of the channel's counters and round-trip estimate.
    pub fn stats(&self) -> ClientStats {
        let shared = &self.life.shared;
        let mut stats = ClientStats::default();
        shared.counters.fill(&mut stats);
        let session = shared.lock();
        (stats.srtt, stats.rto) = session.rtt();
        stats.incarnation = session.incarnation();
        stats.session_id = shared.session_id;
        stats
    }

    /// The session id this channel puts on every message.
    pub fn session_id(&self) -> u64 {
        self.life.shared.session_id
    }

    /// The server's address.
    pub fn server_addr(&self) -> SocketAddr {
        self.life.shared.server
    }

    /// The local address of the socket.
    ///
    /// # Errors
    /// When the socket cannot tell.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.life.shared.socket.local_addr()
    }

    /// The configuration in use (after normalization).
    pub fn config(&self) -> &ChannelConfig {
        &self.life.shared.config
    }
}

impl<S: DatagramSocket> Channel for UdpChannel<S> {
    /// Runs one invocation: R for [`Style::OneWay`](crate::Style::OneWay),
    /// RR or RRA with retransmission for the other styles; see
    /// `notes/wire.md`.
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
        Box::pin(exchange::invoke(self.life.shared.clone(), invocation))
    }
}

/// Receives datagrams until the channel is dropped (the task is aborted).
///
/// The socket is drained before anything else: a ready socket answers at
/// once, so the loop goes on until nothing is queued (tokio's budget
/// permitting). ACKs of RRA replies are collected meanwhile and sent only
/// when the socket is empty, after one yield, so the callers woken by the
/// replies run first and the ACK's syscall is not on their path.
async fn receive_loop<S: DatagramSocket>(shared: Arc<Shared<S>>) {
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut ack_buf = Vec::with_capacity(64);
    let mut acks: Vec<u64> = Vec::new();
    let mut errors = 0u32;
    loop {
        let received = if acks.is_empty() {
            shared.socket.recv_from(&mut buf).await
        } else {
            // `recv_from` is cancel safe: polling it once loses nothing.
            match shared.socket.recv_from(&mut buf).now_or_never() {
                Some(received) => received,
                None => {
                    tokio::task::yield_now().await;
                    send_acks(&shared, &mut acks, &mut ack_buf).await;
                    continue;
                }
            }
        };
        match received {
            Ok((n, from)) => {
                errors = 0;
                if let Some(id) = on_datagram(&shared, buf.get(..n).unwrap_or_default(), from) {
                    acks.push(id);
                }
            }
            Err(e) => {
                bump(&shared.counters.io_errors);
                errors += 1;
                tracing::debug!(error = %e, "client receive error");
                send_acks(&shared, &mut acks, &mut ack_buf).await;
                if errors > 8 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                } else {
                    tokio::task::yield_now().await;
                }
            }
        }
    }
}

/// Checks and routes one datagram; returns the request id to ACK.
fn on_datagram<S>(shared: &Shared<S>, bytes: &[u8], from: SocketAddr) -> Option<u64> {
    let counters = &shared.counters;
    if !shared.is_server(from) {
        bump(&counters.foreign_drops);
        tracing::debug!(%from, "dropped datagram from a foreign address");
        return None;
    }
    let env = match Envelope::decode(bytes) {
        Ok(env) => env,
        Err(e) => {
            bump(&counters.malformed_drops);
            tracing::debug!(len = bytes.len(), error = %e, "dropped undecodable datagram");
            return None;
        }
    };
    if env.version != VERSION {
        bump(&counters.malformed_drops);
        tracing::debug!(version = env.version, "dropped datagram of another version");
        return None;
    }
    let kind = match MessageType::try_from(env.r#type) {
        Ok(
            k @ (MessageType::Reply
            | MessageType::Error
            | MessageType::Accept
            | MessageType::InProgress
            | MessageType::Pong),
        ) => k,
        _ => {
            bump(&counters.malformed_drops);
            tracing::debug!(r#type = env.r#type, "dropped datagram of a type a client does not take");
            return None;
        }
    };
    if env.session_id != shared.session_id {
        bump(&counters.unknown_replies);
        tracing::debug!(session_id = env.session_id, "dropped datagram for another session");
        return None;
    }
    let id = env.request_id;
    let delivery = shared.lock().deliver(env, kind, Instant::now());
    match delivery.kind {
        Routed::Completed => bump(&counters.replies),
        Routed::Accepted => bump(&counters.accepts),
        Routed::InProgress => bump(&counters.in_progress),
        Routed::Pong => {}
        Routed::Late => {
            bump(&counters.late_replies);
            tracing::debug!(request_id = id, ?kind, "late answer for a completed call");
        }
        Routed::Unknown => {
            bump(&counters.unknown_replies);
            tracing::debug!(request_id = id, ?kind, "answer for an unknown request id");
        }
    }
    if let Some(w) = delivery.waker {
        w.wake();
    }
    for w in delivery.more_wakers {
        w.wake();
    }
    delivery.ack
}

/// Sends an ACK for every id in `acks` (emptied), each with the current
/// low-water mark.
async fn send_acks<S: DatagramSocket>(shared: &Shared<S>, acks: &mut Vec<u64>, buf: &mut Vec<u8>) {
    if acks.is_empty() {
        return;
    }
    let ack_up_to = shared.lock().ack_up_to();
    for request_id in acks.drain(..) {
        let ack = Envelope {
            version: VERSION,
            r#type: MessageType::Ack as i32,
            request_id,
            session_id: shared.session_id,
            ack_up_to,
            ..Default::default()
        };
        buf.clear();
        if ack.encode(buf).is_err() {
            continue;
        }
        match shared.socket.send_to(buf, shared.server).await {
            Ok(_) => bump(&shared.counters.acks_sent),
            Err(e) => {
                bump(&shared.counters.io_errors);
                tracing::debug!(error = %e, request_id, "could not send ACK");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_normalized() {
        let c = ChannelConfig {
            min_rto: Duration::ZERO,
            max_rto: Duration::MAX,
            initial_rto: Duration::MAX,
            max_wait: Duration::MAX,
            ..ChannelConfig::default()
        };
        let n = c.normalized();
        assert_eq!(n.min_rto, Duration::from_millis(1));
        assert_eq!((n.max_rto, n.initial_rto, n.max_wait), (MAX_WAIT_LIMIT, MAX_WAIT_LIMIT, MAX_WAIT_LIMIT));
        let c = ChannelConfig {
            min_rto: Duration::from_millis(50),
            max_rto: Duration::from_millis(10),
            ..ChannelConfig::default()
        };
        let n = c.normalized();
        let fifty = Duration::from_millis(50);
        assert_eq!((n.min_rto, n.max_rto, n.initial_rto), (fifty, fifty, fifty));
        assert_eq!(ChannelConfig::default().normalized(), ChannelConfig::default());
    }

    #[test]
    fn server_address_match() {
        let shared = |server: &str| Shared {
            socket: (),
            server: server.parse().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
            session_id: 1,
            config: ChannelConfig::default(),
            state: Mutex::new(Session::new(RtoEstimator::new(
                Duration::from_millis(1),
                Duration::from_millis(1),
                Duration::from_millis(1),
            ))),
            counters: Counters::default(),
            closed: AtomicBool::new(false),
        };
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap_or_else(|_| SocketAddr::from(([9, 9, 9, 9], 9)));
        let s = shared("127.0.0.1:7000");
        assert!(s.is_server(addr("127.0.0.1:7000")));
        assert!(s.is_server(addr("[::ffff:127.0.0.1]:7000")), "v4-mapped");
        assert!(!s.is_server(addr("127.0.0.1:7001")));
        assert!(!s.is_server(addr("127.0.0.2:7000")));
        let any = shared("0.0.0.0:7000");
        assert!(any.is_server(addr("10.1.2.3:7000")));
        assert!(!any.is_server(addr("10.1.2.3:7001")));
    }
}
