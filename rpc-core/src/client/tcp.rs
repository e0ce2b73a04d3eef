//! The client over TCP (optionally TLS): [`TcpChannel`].
//!
//! The exchange logic is the datagram client's, unchanged: the channel is
//! a [`UdpChannel`] over a *link* that presents a reconnecting, framed TCP
//! connection as a [`DatagramSocket`]. So sessions, request ids, PING and
//! incarnations, RRA acknowledgements, ACCEPT for asynchronous calls,
//! deadlines and the error mapping are the same on both transports. What
//! the link adds for a stream:
//!
//! - **Framing and multiplexing.** Every message is one length-delimited
//!   frame (`transport::tcp`) on one connection; replies are matched to
//!   calls by request id, in any order. A writer queue per connection
//!   sends every frame queued since its last write in one write.
//! - **Bursts.** The link hands the channel's receive task every frame
//!   already received in one batch (`recv_batch`), so a burst of replies
//!   is routed at once; the requests the woken callers make meanwhile come
//!   back in one `send_batch`, which queues them under one lock with one
//!   wake-up of the writer: they leave in one write.
//! - **Reconnects.** A broken connection is re-established in the
//!   background with exponential backoff (jittered, bounded by
//!   [`TcpConfig::backoff_max`]) as long as calls are waiting. Every
//!   request still waiting for its answer is then sent again on the new
//!   connection with the same session and request id (attempt + 1, the
//!   deadline reduced by the time spent): the server's history answers it
//!   with the stored reply, or IN_PROGRESS while it still runs, never with
//!   a second execution.
//! - **No retransmission on a healthy connection.** TCP does not lose
//!   frames, so a copy of a request that the current connection already
//!   carried is not written again; the link answers it locally with an
//!   IN_PROGRESS, which moves the call from retransmission to polling (no
//!   attempts counted). A call then waits for its reply, its deadline, or a
//!   reconnect. Only requests first written on an older connection are
//!   polled on the wire (their reply may have gone to the dead one).
//! - **Dead peer.** A call made while no connection is up waits for one, at
//!   most until its deadline (or the channel's `max_wait`) or until as
//!   many connection attempts as the call has attempts have failed; it
//!   then fails with [`Error::DeadlineExceeded`] or [`Error::Unreachable`]
//!   with `may_have_run: false` (nothing was sent).
//! - **Refused credentials (TLS).** A TLS handshake that fails at the TLS
//!   layer (the server refused this client's certificate, or this client
//!   did not accept the server's) is a refusal, not a dead peer: the calls
//!   waiting for a connection, and those whose requests went only to
//!   connections refused that way, fail at once with UNAUTHENTICATED
//!   ([`Error::Status`], `may_have_run: false`). With TLS 1.3 the server
//!   refuses a client certificate after the client has finished its side
//!   of the handshake and written its first requests: the refusal arrives
//!   as an alert on the first read, before any frame, and is taken the
//!   same way (a server processes no request before its handshake is
//!   done, so those requests did not run).

use super::{ChannelConfig, ClientStats, UdpChannel};
use crate::call::{Channel, Invocation, Outcome};
use crate::counter::bump;
use crate::envelope::{
    peek_header, peek_type_and_id, Envelope, EnvelopeHeader, ExchangeProtocol, MessageType,
};
use crate::error::Error;
use crate::status::Status;
use crate::transport::tcp::{
    write_loop, Frame, FrameError, FrameReader, Outbox, WriteCounters, DEFAULT_MAX_FRAME,
};
use crate::transport::{DatagramSocket, RecvBatch, SendBatch, SendReport};
use bytes::Bytes;
use futures::future::BoxFuture;
use prost::Message;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

/// Queued bytes per connection above which callers wait for the writer.
const OUTBOX_HIGH_WATER: usize = 1 << 20;

/// Most frames one receive hands to the channel's receive task (as they
/// were read: the envelopes decoded from them share their bytes).
const RECV_BATCH_FRAMES: usize = 256;

/// A connection that lived shorter than this counts as a failed attempt
/// for the backoff (a server that accepts and closes at once).
const STABLE_CONNECTION: Duration = Duration::from_secs(1);

/// Configuration of a [`TcpChannel`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpConfig {
    /// The exchange settings (retries, RTO, `max_wait`). Its
    /// `max_datagram` is replaced by `max_frame`.
    pub channel: ChannelConfig,
    /// Largest frame (one envelope) sent or received: a bigger request
    /// fails with [`Error::MessageTooLarge`] before anything is sent; a
    /// bigger reply fails its call with RESOURCE_EXHAUSTED. Default 16 MiB;
    /// between 256 and `u32::MAX`.
    pub max_frame: usize,
    /// Longest wait for one connection attempt (TCP and TLS handshakes).
    /// Default 5 s.
    pub connect_timeout: Duration,
    /// Wait after the first failed connection attempt; doubles (with
    /// +-25% jitter) after each further failure. Default 10 ms.
    pub backoff_initial: Duration,
    /// Longest wait between connection attempts. Default 2 s.
    pub backoff_max: Duration,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            channel: ChannelConfig::default(),
            max_frame: DEFAULT_MAX_FRAME,
            connect_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_secs(2),
        }
    }
}

impl TcpConfig {
    fn normalized(mut self) -> TcpConfig {
        self.max_frame = self.max_frame.clamp(256, u32::MAX as usize);
        self.channel.max_datagram = self.max_frame;
        self.backoff_initial = self.backoff_initial.max(Duration::from_millis(1));
        self.backoff_max = self.backoff_max.max(self.backoff_initial);
        self.connect_timeout = self.connect_timeout.max(Duration::from_millis(1));
        self
    }
}

/// Counters of a [`TcpChannel`]'s connections ([`TcpChannel::link_stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpLinkStats {
    /// Whether a connection is up now.
    pub connected: bool,
    /// Connections established (the first and every reconnect).
    pub connects: u64,
    /// Connection attempts that failed (refused, timed out, TLS refused).
    pub connect_failures: u64,
    /// Connections that broke (closed by the peer, reset, read or write
    /// error).
    pub disconnects: u64,
    /// Requests sent again on a new connection (same session and id).
    pub replayed: u64,
    /// Copies of requests not written because the healthy connection had
    /// already carried the request.
    pub suppressed: u64,
    /// Frames queued for sending.
    pub frames_sent: u64,
    /// Write calls (each carries every frame queued since the last one).
    pub writes: u64,
    /// Frames received.
    pub frames_received: u64,
    /// Replies over `max_frame`, skipped (their calls fail with
    /// RESOURCE_EXHAUSTED).
    pub oversized_replies: u64,
}

#[derive(Debug, Default)]
struct LinkCounters {
    connects: AtomicU64,
    connect_failures: AtomicU64,
    disconnects: AtomicU64,
    replayed: AtomicU64,
    suppressed: AtomicU64,
    frames_received: AtomicU64,
    oversized: AtomicU64,
    write: WriteCounters,
}

/// What the calls see of the connection.
#[derive(Debug, Clone, Copy, Default)]
struct LinkStatus {
    connected: bool,
    /// Failed connection attempts so far.
    failures: u64,
    /// Connection attempts refused at the TLS layer so far.
    rejections: u64,
}

/// What a pending message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request { want_accept: bool },
    Ping,
    OneWay,
}

/// A message to send again on a new connection.
#[derive(Debug)]
struct Pending {
    /// The last copy the call sent (an encoded envelope).
    frame: Bytes,
    kind: Kind,
    /// The connection (generation) that first carried it.
    first_gen: Option<u64>,
    /// When `frame` was made (its `deadline_us` counts from then).
    stored_at: Instant,
    /// The connection on which an IN_PROGRESS was made up for it.
    synthesized: Option<u64>,
    /// Its REPLY or ERROR arrived (and is on its way to the call): later
    /// copies are not sent. Kept until the session's low-water mark
    /// passes it.
    answered: bool,
}

#[derive(Debug, Default)]
struct LinkState {
    /// The connection up now: its generation and outbox.
    conn: Option<(u64, Arc<Outbox>)>,
    gen: u64,
    local: Option<SocketAddr>,
    /// Requests (and PINGs, and one-way requests not sent yet) without an
    /// answer, by request id.
    outstanding: Outstanding,
}

/// The pending messages by request id: a deque sorted by id. Ids are
/// handed out in increasing order and leave in increasing order (below the
/// session's low-water mark), so entries are appended at the back and
/// dropped from the front; a lookup is a binary search.
#[derive(Debug, Default)]
struct Outstanding(VecDeque<(u64, Pending)>);

impl Outstanding {
    fn find(&self, id: u64) -> Result<usize, usize> {
        match self.0.back() {
            Some(&(last, _)) if last < id => Err(self.0.len()),
            _ => self.0.binary_search_by_key(&id, |&(k, _)| k),
        }
    }

    /// Drops every entry at or below `ack_up_to`.
    fn drop_through(&mut self, ack_up_to: u64) {
        while self.0.front().is_some_and(|&(id, _)| id <= ack_up_to) {
            self.0.pop_front();
        }
    }

    fn get(&self, id: u64) -> Option<&Pending> {
        self.find(id)
            .ok()
            .and_then(|i| self.0.get(i))
            .map(|(_, p)| p)
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut Pending> {
        let i = self.find(id).ok()?;
        self.0.get_mut(i).map(|(_, p)| p)
    }

    /// The entry of `id`, made by `make` if there is none.
    fn get_or_insert_with(&mut self, id: u64, make: impl FnOnce() -> Pending) -> &mut Pending {
        let i = match self.find(id) {
            Ok(i) => i,
            Err(i) => {
                self.0.insert(i, (id, make()));
                i
            }
        };
        // `i` is in range: found, or just inserted there.
        &mut self.0[i].1
    }

    fn remove(&mut self, id: u64) {
        if let Ok(i) = self.find(id) {
            self.0.remove(i);
        }
    }

    fn any_unanswered(&self) -> bool {
        self.0.iter().any(|(_, p)| !p.answered)
    }
}

#[derive(Debug)]
enum Connector {
    Plain,
    #[cfg(feature = "tls")]
    Tls(crate::tls::TlsClientConfig),
}

/// What the link's socket face, its manager task and the channel share.
#[derive(Debug)]
struct LinkShared {
    server: SocketAddr,
    config: TcpConfig,
    connector: Connector,
    state: Mutex<LinkState>,
    inbound_tx: mpsc::UnboundedSender<Bytes>,
    inbound_rx: tokio::sync::Mutex<Inbound>,
    status: watch::Sender<LinkStatus>,
    /// `status.connected`, readable without the watch channel's lock (read
    /// by every call).
    connected: AtomicBool,
    /// Wakes the manager (a call needs a connection).
    wake: Notify,
    /// Calls waiting for a connection.
    waiters: AtomicUsize,
    /// Why the last connection attempt refused at the TLS layer was.
    rejection: Mutex<String>,
    counters: LinkCounters,
}

impl LinkShared {
    fn lock(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn needed(&self) -> bool {
        self.waiters.load(Ordering::Acquire) > 0 || self.lock().outstanding.any_unanswered()
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
        self.status.send_modify(|s| s.connected = connected);
    }

    /// Waits until a connection is up; fails at `deadline` or after
    /// `attempts` failed connection attempts.
    async fn wait_connected(&self, deadline: Instant, attempts: u32) -> Result<(), Error> {
        let _waiting = Waiting::new(self);
        let mut rx = self.status.subscribe();
        let start = *rx.borrow();
        loop {
            let s = *rx.borrow_and_update();
            if s.connected {
                return Ok(());
            }
            if s.rejections > start.rejections {
                // Nothing was sent for this call.
                return Err(Error::Status(self.unauthenticated()));
            }
            if s.failures.saturating_sub(start.failures) >= u64::from(attempts) {
                return Err(Error::Unreachable {
                    may_have_run: false,
                    attempts: 0,
                });
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Err(_) => {
                    return Err(Error::DeadlineExceeded {
                        may_have_run: false,
                        attempts: 0,
                    })
                }
                Ok(Err(_)) => return Err(Error::Closed),
                Ok(Ok(())) => {}
            }
        }
    }
}

impl LinkShared {
    /// The status of a call refused with the last TLS refusal.
    fn unauthenticated(&self) -> Status {
        let why = self
            .rejection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Status::unauthenticated(why)
    }

    /// A connection attempt was refused at the TLS layer (`gen`: the
    /// connection, when the refusal came after the client's side of the
    /// handshake). Every request that was written on no connection but
    /// refused ones is answered with UNAUTHENTICATED, which the calls take
    /// as "did not run", and is never sent again; the calls waiting for a
    /// connection fail the same way. Requests written before on a
    /// connection that was not refused may have run: they are left to
    /// their exchange (reconnects, deadline).
    #[cfg(feature = "tls")]
    fn reject(&self, gen: Option<u64>, reason: String) {
        tracing::debug!(server = %self.server, ?gen, %reason, "tls refused; calls fail with UNAUTHENTICATED");
        *self
            .rejection
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = reason.clone();
        let status = crate::envelope::Status::from(&Status::unauthenticated(reason));
        let mut answers = Vec::new();
        {
            let mut st = self.lock();
            let mut one_way = Vec::new();
            for (id, p) in st.outstanding.0.iter_mut() {
                let refused_only = p.first_gen.is_none() || p.first_gen == gen;
                if p.answered || !refused_only {
                    continue;
                }
                if p.kind == Kind::OneWay {
                    one_way.push(*id);
                    continue;
                }
                let header = peek_header(&p.frame);
                p.answered = true;
                p.frame = Bytes::new();
                let env = Envelope::error(header.session_id, *id, 0, status.clone());
                answers.push(Bytes::from(env.encode_to_vec()));
            }
            // Not sent later: a one-way call is "maybe" anyway, and its
            // server refuses this client.
            for id in one_way {
                st.outstanding.remove(id);
            }
        }
        for answer in answers {
            let _ = self.inbound_tx.send(answer);
        }
        self.status.send_modify(|s| s.rejections += 1);
    }
}

/// The frames for the channel's receive task.
#[derive(Debug)]
struct Inbound {
    rx: mpsc::UnboundedReceiver<Bytes>,
}

impl Inbound {
    /// The next frame; `None` once the link is gone.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is taken until it is returned.
    async fn next(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }
}

struct Waiting<'a>(&'a LinkShared);

impl<'a> Waiting<'a> {
    fn new(link: &'a LinkShared) -> Waiting<'a> {
        link.waiters.fetch_add(1, Ordering::AcqRel);
        link.wake.notify_one();
        Waiting(link)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The datagram face of a reconnecting TCP connection; owned by the
/// channel's session. Dropping it stops the connection manager.
pub(crate) struct TcpLink {
    shared: Arc<LinkShared>,
    manager: tokio::task::AbortHandle,
}

impl fmt::Debug for TcpLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpLink")
            .field("server", &self.shared.server)
            .finish_non_exhaustive()
    }
}

impl Drop for TcpLink {
    fn drop(&mut self) {
        self.manager.abort();
    }
}

impl TcpLink {
    /// Routes one outgoing message (see [`route`]) and writes it, keeps it,
    /// or answers it locally.
    fn send_routed<'a>(
        &self,
        buf: &'a [u8],
        header: Option<&EnvelopeHeader>,
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a {
        let link = Arc::clone(&self.shared);
        let keep = || Bytes::copy_from_slice(buf);
        let decided = route(&mut link.lock(), header, buf, keep, Instant::now());
        async move {
            match decided {
                Route::Write(outbox) => {
                    // A broken connection loses the frame; requests are
                    // kept and sent again on the next one.
                    if outbox.push(buf).await.is_ok() {
                        bump(&link.counters.write.frames);
                    }
                }
                other => link.route_aside(other),
            }
            Ok(buf.len())
        }
    }
}

impl DatagramSocket for TcpLink {
    fn send_to(
        &self,
        buf: &[u8],
        _target: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        self.send_routed(buf, None)
    }

    fn send_encoded(
        &self,
        buf: &[u8],
        _target: SocketAddr,
        envelope: &crate::envelope::Envelope,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        self.send_routed(buf, Some(&EnvelopeHeader::of(envelope)))
    }

    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
        let link = Arc::clone(&self.shared);
        async move {
            let mut inbound = link.inbound_rx.lock().await;
            match inbound.next().await {
                Some(frame) => {
                    let n = frame.len().min(buf.len());
                    buf[..n].copy_from_slice(&frame[..n]);
                    Ok((n, link.server))
                }
                None => Err(io::Error::from(io::ErrorKind::BrokenPipe)),
            }
        }
    }

    /// Waits for one frame, then takes every frame already received (up to
    /// what fits in `batch`), so that a burst of replies is routed in one
    /// go and the callers' next requests leave together.
    fn recv_batch(&self, batch: &mut RecvBatch) -> impl Future<Output = io::Result<usize>> + Send {
        let link = Arc::clone(&self.shared);
        async move {
            batch.clear();
            let mut inbound = link.inbound_rx.lock().await;
            let Some(first) = inbound.next().await else {
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            };
            // Nothing below waits: the batch is taken whole or not at all.
            batch.push_frame(first, link.server);
            while batch.len() < RECV_BATCH_FRAMES {
                let Ok(frame) = inbound.rx.try_recv() else {
                    break;
                };
                batch.push_frame(frame, link.server);
            }
            Ok(batch.len())
        }
    }

    /// Routes every message of the burst under one lock and queues those
    /// for the wire in one go (one wake-up of the connection's writer, so
    /// they leave in one write).
    fn send_batch(&self, batch: &SendBatch) -> impl Future<Output = SendReport> + Send {
        let link = Arc::clone(&self.shared);
        async move {
            // As `send_to`, nothing fails: a message that cannot go out now
            // is kept for the next connection (or not worth keeping).
            let report = SendReport {
                sent: batch.len(),
                ..SendReport::default()
            };
            let mut writes: Vec<&[u8]> = Vec::with_capacity(batch.len());
            let mut outbox: Option<Arc<Outbox>> = None;
            let mut aside = Vec::new();
            // The requests kept for a new connection share one copy of the
            // batch (made when the first is kept): one allocation and one
            // copy per burst, not per request.
            let mut kept: Option<Bytes> = None;
            {
                let now = Instant::now();
                let mut st = link.lock();
                for (message, at, header) in batch.iter_with_headers() {
                    let keep = || {
                        kept.get_or_insert_with(|| Bytes::copy_from_slice(batch.buffer()))
                            .slice(at)
                    };
                    match route(&mut st, header, message, keep, now) {
                        Route::Write(o) => {
                            writes.push(message);
                            outbox.get_or_insert(o);
                        }
                        other => aside.push(other),
                    }
                }
            }
            for other in aside {
                link.route_aside(other);
            }
            let Some(outbox) = outbox else {
                return report;
            };
            // A broken connection loses the frames; requests are kept and
            // sent again on the next one (as for `send_to`).
            let mut queued = 0usize;
            if let Ok(true) = outbox.try_push_all(&writes) {
                queued = writes.len();
            } else {
                // No room (or a refused message): frame by frame, waiting
                // for room as `send_to` does.
                for message in &writes {
                    if outbox.push(message).await.is_ok() {
                        queued += 1;
                    }
                }
            }
            // No system call here: the connection's writer, woken once,
            // writes them together (`syscalls` stays 0).
            link.counters
                .write
                .frames
                .fetch_add(queued as u64, Ordering::Relaxed);
            report
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.shared
            .lock()
            .local
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl LinkShared {
    /// Does what a route other than [`Route::Write`] asks.
    fn route_aside(&self, route: Route) {
        match route {
            Route::Write(_) | Route::Dropped => {}
            Route::Suppressed { in_progress } => {
                bump(&self.counters.suppressed);
                if let Some(frame) = in_progress {
                    let _ = self.inbound_tx.send(frame);
                }
            }
            Route::Kept => self.wake.notify_one(),
        }
    }
}

/// What to do with one outgoing message.
enum Route {
    Write(Arc<Outbox>),
    /// Already carried by the healthy connection; maybe answer locally.
    Suppressed {
        in_progress: Option<Bytes>,
    },
    /// No connection: kept for the next one.
    Kept,
    /// No connection, and not worth keeping (ACK).
    Dropped,
}

/// Routes one outgoing message `buf`; `header` is its envelope's header
/// when the sender gave it (else it is read from `buf`); `keep` makes the
/// copy of `buf` kept for a new connection (asked for at most once, and
/// only when the message is kept).
fn route(
    st: &mut LinkState,
    header: Option<&EnvelopeHeader>,
    buf: &[u8],
    keep: impl FnOnce() -> Bytes,
    now: Instant,
) -> Route {
    let h = header.copied().unwrap_or_else(|| peek_header(buf));
    let kind = match MessageType::try_from(h.r#type) {
        Ok(MessageType::Request) if h.protocol == ExchangeProtocol::R as i32 => Some(Kind::OneWay),
        Ok(MessageType::Request) => Some(Kind::Request {
            want_accept: h.want_accept,
        }),
        Ok(MessageType::Ping) => Some(Kind::Ping),
        _ => None,
    };
    // The session needs nothing at or below its low-water mark.
    st.outstanding.drop_through(h.ack_up_to);
    if h.r#type == MessageType::Cancel as i32 {
        // An abandoned call's request is not sent again on a new connection.
        st.outstanding.remove(h.request_id);
    }
    let conn = st.conn.clone();
    let Some(kind) = kind else {
        return match conn {
            Some((_, outbox)) => Route::Write(outbox),
            None => Route::Dropped,
        };
    };
    let entry = st.outstanding.get_or_insert_with(h.request_id, || Pending {
        frame: Bytes::new(),
        kind,
        first_gen: None,
        stored_at: now,
        synthesized: None,
        answered: false,
    });
    if entry.answered {
        return Route::Suppressed { in_progress: None };
    }
    entry.frame = keep();
    entry.kind = kind;
    entry.stored_at = now;
    let Some((gen, outbox)) = conn else {
        return Route::Kept;
    };
    match kind {
        Kind::Request { want_accept } if entry.first_gen == Some(gen) => {
            let synthesize = !want_accept && entry.synthesized != Some(gen);
            if synthesize {
                entry.synthesized = Some(gen);
            }
            let in_progress = synthesize.then(|| {
                let env =
                    Envelope::answer(MessageType::InProgress, h.session_id, h.request_id, 0, None);
                Bytes::from(env.encode_to_vec())
            });
            Route::Suppressed { in_progress }
        }
        Kind::OneWay => {
            st.outstanding.remove(h.request_id);
            Route::Write(outbox)
        }
        _ => {
            entry.first_gen.get_or_insert(gen);
            Route::Write(outbox)
        }
    }
}

/// A copy of `frame` for a new connection: attempt + 1, the deadline
/// reduced by `elapsed`. `None` when its deadline has passed.
fn refreshed(frame: &Bytes, elapsed: Duration) -> Option<Bytes> {
    let mut env = Envelope::decode(frame.clone()).ok()?;
    env.attempt = env.attempt.saturating_add(1);
    if env.deadline_us > 0 {
        let spent = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        if spent >= env.deadline_us {
            return None;
        }
        env.deadline_us -= spent;
    }
    Some(Bytes::from(env.encode_to_vec()))
}

/// Connects whenever calls need a connection, until aborted.
async fn manage(link: Arc<LinkShared>) {
    let mut failures: u32 = 0;
    loop {
        loop {
            let woken = link.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if link.needed() {
                break;
            }
            woken.await;
        }
        match connect(&link).await {
            Ok(()) => {
                // `connect` returns when the connection ends.
                failures = 0;
            }
            Err(Some(lived)) if lived >= STABLE_CONNECTION => failures = 0,
            Err(Some(_)) => failures = failures.saturating_add(1),
            Err(None) => {
                failures = failures.saturating_add(1);
                bump(&link.counters.connect_failures);
                link.status.send_modify(|s| s.failures += 1);
            }
        }
        if failures > 0 {
            let exp = failures.saturating_sub(1).min(20);
            let base = link
                .config
                .backoff_initial
                .saturating_mul(1u32 << exp)
                .min(link.config.backoff_max);
            let wait = super::rto::jittered(base, super::rto::jitter_factor())
                .min(link.config.backoff_max);
            tokio::time::sleep(wait).await;
        }
    }
}

/// One connection, from connecting to its end. `Err(None)`: it could not
/// be established; `Err(Some(lived))`: it broke after `lived`.
async fn connect(link: &Arc<LinkShared>) -> Result<(), Option<Duration>> {
    let timeout = link.config.connect_timeout;
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(link.server)).await {
        Ok(Ok(s)) => s,
        Ok(Err(error)) => {
            tracing::debug!(server = %link.server, %error, "connection failed");
            return Err(None);
        }
        Err(_) => {
            tracing::debug!(server = %link.server, "connection timed out");
            return Err(None);
        }
    };
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().ok();
    let started = Instant::now();
    match &link.connector {
        Connector::Plain => {
            let (r, w) = stream.into_split();
            run(link, r, w, local).await;
        }
        #[cfg(feature = "tls")]
        Connector::Tls(tls) => {
            let handshake = tls
                .connector(crate::tls::ALPN_RPC)
                .connect(tls.server_name().clone(), stream);
            match tokio::time::timeout(timeout, handshake).await {
                Ok(Ok(stream)) => {
                    let (r, w) = tokio::io::split(stream);
                    run(link, r, w, local).await;
                }
                Ok(Err(error)) => {
                    tracing::debug!(server = %link.server, %error, "tls handshake failed");
                    if let Some(reason) = crate::tls::rejection(&error) {
                        link.reject(None, reason);
                    }
                    return Err(None);
                }
                Err(_) => {
                    tracing::debug!(server = %link.server, "tls handshake timed out");
                    return Err(None);
                }
            }
        }
    }
    Err(Some(started.elapsed()))
}

/// Serves one established connection until it breaks.
async fn run<R, W>(link: &Arc<LinkShared>, r: R, w: W, local: Option<SocketAddr>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let outbox = Arc::new(Outbox::new(OUTBOX_HIGH_WATER));
    let gen = {
        let mut st = link.lock();
        st.gen += 1;
        let gen = st.gen;
        st.conn = Some((gen, Arc::clone(&outbox)));
        st.local = local;
        let now = Instant::now();
        let max_wait = link.config.channel.max_wait;
        let mut expired = Vec::new();
        let mut replayed = 0u64;
        for (id, p) in st.outstanding.0.iter_mut() {
            let id = *id;
            if p.answered {
                expired.push(id);
                continue;
            }
            let elapsed = now.saturating_duration_since(p.stored_at);
            if p.first_gen.is_some() && p.kind != Kind::Ping {
                match refreshed(&p.frame, elapsed) {
                    Some(frame) if elapsed <= max_wait => {
                        p.frame = frame;
                        p.stored_at = now;
                        replayed += 1;
                    }
                    _ => {
                        expired.push(id);
                        continue;
                    }
                }
            }
            p.first_gen.get_or_insert(gen);
            // The writer is not running yet: queue regardless of length.
            let _ = outbox.push_now(&p.frame);
            bump(&link.counters.write.frames);
            if p.kind == Kind::OneWay {
                expired.push(id);
            }
        }
        for id in expired {
            st.outstanding.remove(id);
        }
        link.counters
            .replayed
            .fetch_add(replayed, Ordering::Relaxed);
        if replayed > 0 {
            tracing::debug!(server = %link.server, replayed, "requests sent again on the new connection");
        }
        gen
    };
    bump(&link.counters.connects);
    link.set_connected(true);
    tracing::debug!(server = %link.server, gen, "connected");
    let writer = write_loop(&outbox, w, &link.counters.write);
    tokio::pin!(writer);
    let reader = read_loop(link, r);
    tokio::pin!(reader);
    tokio::select! {
        result = &mut writer => {
            if let Err(error) = result {
                tracing::debug!(server = %link.server, %error, "write failed");
            }
        }
        ended = &mut reader => {
            // TLS 1.3: the server's refusal of the client's certificate is
            // an alert on the first read, before any frame.
            #[cfg(feature = "tls")]
            if let ReadEnd::Failed { frames: 0, error } = ended {
                if let Some(reason) = crate::tls::rejection(&error) {
                    link.reject(Some(gen), reason);
                }
            }
            #[cfg(not(feature = "tls"))]
            let _ = ended;
        }
    }
    outbox.close();
    {
        let mut st = link.lock();
        if st.conn.as_ref().is_some_and(|(g, _)| *g == gen) {
            st.conn = None;
        }
    }
    bump(&link.counters.disconnects);
    link.set_connected(false);
    tracing::debug!(server = %link.server, gen, "disconnected");
}

/// How a connection's reading ended (what TLS makes of it: see `run`).
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
enum ReadEnd {
    /// The server closed it, or sent something that ends it.
    Closed,
    /// A read failed after `frames` frames.
    Failed { frames: u64, error: FrameError },
}

async fn read_loop<R: AsyncRead + Unpin>(link: &LinkShared, r: R) -> ReadEnd {
    let mut frames = FrameReader::new(r, link.config.max_frame);
    let mut received = 0u64;
    loop {
        let frame = match frames.next().await {
            Ok(Some(frame)) => frame,
            Ok(None) => return ReadEnd::Closed,
            Err(FrameError::Absurd { len, limit }) => {
                bump(&link.counters.oversized);
                tracing::debug!(server = %link.server, len, limit, "absurd frame length from the server");
                return ReadEnd::Closed;
            }
            Err(error) => {
                tracing::debug!(server = %link.server, %error, "read failed");
                return ReadEnd::Failed {
                    frames: received,
                    error,
                };
            }
        };
        received += 1;
        match frame {
            Frame::Data(bytes) => {
                bump(&link.counters.frames_received);
                let (r#type, request_id) = peek_type_and_id(&bytes);
                match MessageType::try_from(r#type) {
                    Ok(MessageType::Reply | MessageType::Error) => {
                        if let Some(p) = link.lock().outstanding.get_mut(request_id) {
                            p.answered = true;
                            p.frame = Bytes::new();
                        }
                    }
                    Ok(MessageType::Pong) => {
                        let mut st = link.lock();
                        if st
                            .outstanding
                            .get(request_id)
                            .is_some_and(|p| p.kind == Kind::Ping)
                        {
                            st.outstanding.remove(request_id);
                        }
                    }
                    _ => {}
                }
                let _ = link.inbound_tx.send(bytes);
            }
            Frame::TooLarge { len, head } => {
                let header = peek_header(&head);
                bump(&link.counters.oversized);
                tracing::debug!(server = %link.server, len, request_id = header.request_id, "reply over max_frame skipped");
                let is_answer = header.r#type == MessageType::Reply as i32
                    || header.r#type == MessageType::Error as i32;
                if is_answer && header.request_id != 0 {
                    if let Some(p) = link.lock().outstanding.get_mut(header.request_id) {
                        p.answered = true;
                        p.frame = Bytes::new();
                    }
                    let status = Status::resource_exhausted(format!(
                        "reply of {len} bytes exceeds the client's limit of {} bytes",
                        link.config.max_frame
                    ));
                    let env = Envelope::error(
                        header.session_id,
                        header.request_id,
                        header.incarnation,
                        crate::envelope::Status::from(&status),
                    );
                    let _ = link.inbound_tx.send(Bytes::from(env.encode_to_vec()));
                }
            }
        }
    }
}

/// A client session over TCP (or TLS over TCP) to one server: implements
/// [`Channel`] for every call style and the protocols R, RR and RRA, with
/// the datagram client's exchange logic (see the module docs for what a
/// stream changes: no retransmission on a healthy connection, reconnects
/// with the same session, requests sent again on the new connection).
///
/// Cheap to clone; clones share the session and the connection. Dropping
/// the last clone closes the connection; calls still in flight fail with
/// [`Error::Closed`].
///
/// ```no_run
/// # async fn demo() -> Result<(), rpc_core::Error> {
/// use rpc_core::client::TcpChannel;
/// let channel = TcpChannel::connect("127.0.0.1:7000".parse().unwrap()).await?;
/// let client = rpc_core::Client::new(channel);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TcpChannel {
    inner: UdpChannel<TcpLink>,
    link: Arc<LinkShared>,
}

impl fmt::Debug for TcpChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpChannel")
            .field("server", &self.link.server)
            .field(
                "session_id",
                &format_args!("{:016x}", self.inner.session_id()),
            )
            .field("connected", &self.link.is_connected())
            .finish()
    }
}

impl TcpChannel {
    /// A channel to `server` with the default [`TcpConfig`]; waits for the
    /// first connection.
    ///
    /// # Errors
    /// [`Error::Unreachable`] when the first connection attempts (one plus
    /// the configured default retries) fail, [`Error::DeadlineExceeded`]
    /// when they take longer than `max_wait`.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub async fn connect(server: SocketAddr) -> Result<TcpChannel, Error> {
        TcpChannel::connect_with(server, TcpConfig::default()).await
    }

    /// As [`TcpChannel::connect`], with `config`.
    ///
    /// # Errors
    /// As [`TcpChannel::connect`].
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub async fn connect_with(server: SocketAddr, config: TcpConfig) -> Result<TcpChannel, Error> {
        let channel = TcpChannel::lazy(server, config, Connector::Plain);
        channel.wait_first().await?;
        Ok(channel)
    }

    /// A channel to `server` that connects when the first call needs it
    /// (and never fails to be made).
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn connect_lazy(server: SocketAddr, config: TcpConfig) -> TcpChannel {
        TcpChannel::lazy(server, config, Connector::Plain)
    }

    /// A channel to `server` over TLS: the server's certificate is verified
    /// for `tls`'s server name against its roots; `tls` may carry a client
    /// identity for mutual TLS. The client offers ALPN `rpc.v1` and also
    /// takes a server that picks no protocol. Waits for the first
    /// connection.
    ///
    /// # Errors
    /// As [`TcpChannel::connect`]; a handshake refused at the TLS layer
    /// (this client did not accept the server's certificate, or the server
    /// refused this client's) is [`Error::Status`] UNAUTHENTICATED at once,
    /// with `may_have_run` false. With TLS 1.3 a server's refusal of the
    /// client certificate comes after this returns: the first calls fail
    /// with that status instead (see the module's documentation).
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    #[cfg(feature = "tls")]
    pub async fn connect_tls(
        server: SocketAddr,
        tls: crate::tls::TlsClientConfig,
        config: TcpConfig,
    ) -> Result<TcpChannel, Error> {
        let channel = TcpChannel::lazy(server, config, Connector::Tls(tls));
        channel.wait_first().await?;
        Ok(channel)
    }

    /// As [`TcpChannel::connect_tls`], connecting when the first call needs it.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    #[cfg(feature = "tls")]
    pub fn connect_tls_lazy(
        server: SocketAddr,
        tls: crate::tls::TlsClientConfig,
        config: TcpConfig,
    ) -> TcpChannel {
        TcpChannel::lazy(server, config, Connector::Tls(tls))
    }

    fn lazy(server: SocketAddr, config: TcpConfig, connector: Connector) -> TcpChannel {
        let config = config.normalized();
        let (inbound_tx, inbound_rx) = mpsc::unbounded_channel();
        let link = Arc::new(LinkShared {
            server,
            config: config.clone(),
            connector,
            state: Mutex::new(LinkState::default()),
            inbound_tx,
            inbound_rx: tokio::sync::Mutex::new(Inbound { rx: inbound_rx }),
            status: watch::channel(LinkStatus::default()).0,
            connected: AtomicBool::new(false),
            wake: Notify::new(),
            waiters: AtomicUsize::new(0),
            rejection: Mutex::new(String::new()),
            counters: LinkCounters::default(),
        });
        let manager = tokio::spawn(manage(Arc::clone(&link))).abort_handle();
        let socket = TcpLink {
            shared: Arc::clone(&link),
            manager,
        };
        let inner = UdpChannel::with_socket(socket, server, config.channel);
        TcpChannel { inner, link }
    }

    async fn wait_first(&self) -> Result<(), Error> {
        let c = &self.link.config.channel;
        let deadline = Instant::now() + c.max_wait;
        self.link
            .wait_connected(deadline, c.default_retries.saturating_add(1))
            .await
    }

    /// The exchange counters and round-trip estimate (as for UDP; the
    /// IN_PROGRESS made up for suppressed copies count in `in_progress`).
    pub fn stats(&self) -> ClientStats {
        self.inner.stats()
    }

    /// The connection counters.
    pub fn link_stats(&self) -> TcpLinkStats {
        let c = &self.link.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TcpLinkStats {
            connected: self.link.is_connected(),
            connects: get(&c.connects),
            connect_failures: get(&c.connect_failures),
            disconnects: get(&c.disconnects),
            replayed: get(&c.replayed),
            suppressed: get(&c.suppressed),
            frames_sent: get(&c.write.frames),
            writes: get(&c.write.writes),
            frames_received: get(&c.frames_received),
            oversized_replies: get(&c.oversized),
        }
    }

    /// Whether a connection is up now.
    pub fn is_connected(&self) -> bool {
        self.link.is_connected()
    }

    /// The session id this channel puts on every message (the same across
    /// reconnects).
    pub fn session_id(&self) -> u64 {
        self.inner.session_id()
    }

    /// The server's address.
    pub fn server_addr(&self) -> SocketAddr {
        self.link.server
    }

    /// The local address of the current connection.
    ///
    /// # Errors
    /// [`io::ErrorKind::NotConnected`] before the first connection.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// The configuration in use (after normalization).
    pub fn config(&self) -> &TcpConfig {
        &self.link.config
    }
}

impl Channel for TcpChannel {
    /// Runs one invocation as [`UdpChannel`] does, over the connection;
    /// without a connection, first waits for one (see the module docs).
    ///
    /// # Errors
    /// As [`UdpChannel`]'s; besides, [`Error::Unreachable`] or
    /// [`Error::DeadlineExceeded`] with `may_have_run: false` when no
    /// connection could be made for the call.
    ///
    /// # Cancel safety
    /// As [`UdpChannel`]'s.
    fn invoke(&self, invocation: Invocation) -> BoxFuture<'static, Result<Outcome, Error>> {
        if self.link.is_connected() {
            return self.inner.invoke(invocation);
        }
        let inner = self.inner.clone();
        let link = Arc::clone(&self.link);
        Box::pin(async move {
            let c = &link.config.channel;
            let deadline = invocation
                .options
                .deadline
                .map_or_else(|| Instant::now() + c.max_wait, Instant::from_std);
            let attempts = invocation
                .options
                .retries
                .unwrap_or(c.default_retries)
                .saturating_add(1);
            link.wait_connected(deadline, attempts).await?;
            inner.invoke(invocation).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(frame: &'static [u8]) -> Pending {
        Pending {
            frame: Bytes::from_static(frame),
            kind: Kind::Ping,
            first_gen: None,
            stored_at: Instant::now(),
            synthesized: None,
            answered: false,
        }
    }

    #[test]
    fn outstanding_stays_sorted_and_drops_through_the_low_water_mark() {
        let mut o = Outstanding::default();
        for id in [3u64, 5, 4, 1, 9] {
            o.get_or_insert_with(id, || pending(b"x"));
        }
        // an existing entry is found, not made again
        o.get_or_insert_with(4, || pending(b"again")).answered = true;
        let ids: Vec<u64> = o.0.iter().map(|&(id, _)| id).collect();
        assert_eq!(ids, vec![1, 3, 4, 5, 9]);
        assert!(o
            .get(4)
            .is_some_and(|p| p.answered && p.frame[..] == b"x"[..]));
        assert!(o.get(2).is_none() && o.get_mut(10).is_none());
        o.remove(5);
        o.remove(6);
        o.drop_through(3);
        let ids: Vec<u64> = o.0.iter().map(|&(id, _)| id).collect();
        assert_eq!(ids, vec![4, 9]);
        assert!(o.any_unanswered(), "9 is not answered");
        o.drop_through(u64::MAX);
        assert!(o.0.is_empty() && !o.any_unanswered());
    }

    #[test]
    fn frames_join_a_batch_whole_and_uncopied() {
        let from: SocketAddr = ([127, 0, 0, 1], 9).into();
        let mut batch = RecvBatch::new(1, 4);
        let long = Bytes::from_static(b"longer than a slot");
        batch.push_frame(Bytes::from_static(b"abcd"), from);
        batch.push_frame(long.clone(), from);
        assert_eq!(batch.len(), 2);
        let got: Vec<&[u8]> = batch.iter().map(|(d, _)| d).collect();
        assert_eq!(
            got,
            vec![&b"abcd"[..], &long[..]],
            "not truncated to the slot"
        );
        let taken: Vec<Bytes> = batch.take_frames().map(|(f, _)| f).collect();
        assert_eq!(
            taken[1].as_ptr(),
            long.as_ptr(),
            "the same bytes, not a copy"
        );
        assert!(batch.is_empty());
        batch.push_frame(long, from);
        batch.clear();
        assert!(batch.is_empty());
    }
}
