//! The client over TCP (optionally TLS): [`TcpChannel`].
//!
//! Files: this one (the link: its state, and the [`Link`] face the
//! exchange sends through), `route.rs` (where each outgoing message goes),
//! `conn.rs` (connecting, and one connection's reader and writer),
//! `channel.rs` ([`TcpChannel`]), `tests.rs`.
//!
//! The exchange logic is the datagram client's: the channel runs the same
//! session and exchanges as a [`UdpChannel`](super::UdpChannel), over a *link* (a
//! reconnecting, framed TCP connection) that says it is reliable. So
//! sessions, request ids, PING and incarnations, RRA acknowledgements,
//! ACCEPT for asynchronous calls, deadlines and the error mapping are the
//! same on both transports. What the link adds for a stream:
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
//!   frames: the link is [reliable](Link::reliable), and the exchange
//!   sends a request once, then waits for its answer, its deadline, or a
//!   reconnect (no attempts counted). The link numbers its connections
//!   ([`Link::connection`]); a call whose request was first written on a
//!   connection since replaced polls on the wire (its reply may have gone
//!   to the dead one). A copy the current connection has already carried
//!   is not written again (counted in [`TcpLinkStats::suppressed`]).
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

use super::link::{Link, Outgoing, OutgoingBatch};
use super::ChannelConfig;
use crate::counter::bump;
use crate::envelope::EnvelopeHeader;
use crate::error::Error;
use crate::status::Status;
use crate::transport::tcp::{Outbox, WriteCounters, DEFAULT_MAX_FRAME};
use crate::transport::{RecvBatch, SendReport};
use bytes::Bytes;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
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
    /// Longest time the connection's writer may make no progress while
    /// frames wait (a server that accepts but stops reading): the
    /// connection then counts as broken, and its requests are sent again
    /// on the next one. Default 10 s; at least 1 ms.
    pub write_stall: Duration,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            channel: ChannelConfig::default(),
            max_frame: DEFAULT_MAX_FRAME,
            connect_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_secs(2),
            write_stall: Duration::from_secs(10),
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
        self.write_stall = self.write_stall.max(Duration::from_millis(1));
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
    /// Connections given up because their writer made no progress for
    /// [`TcpConfig::write_stall`] (also counted in `disconnects`).
    pub write_stalls: u64,
    /// Requests sent again on a new connection (same session and id).
    pub replayed: u64,
    /// Copies of requests not written because the connection up had
    /// already carried the request, or its answer had arrived.
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
    write_stalls: AtomicU64,
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
    Request,
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
    /// [`Link::connection`]: the generation of the connection up, or of
    /// the next one; written under the state lock when a connection comes
    /// or goes, read by every call without it.
    connection: AtomicU64,
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
        use crate::envelope::{peek_header, Envelope};
        use prost::Message;
        tracing::debug!(server = %self.server, ?gen, %reason, "tls refused; calls fail with UNAUTHENTICATED");
        *self
            .rejection
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = reason.clone();
        let status = crate::envelope::WireStatus::from(&Status::unauthenticated(reason));
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

/// The [`Link`] face of a reconnecting TCP connection; owned by the
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

impl Link for TcpLink {
    /// Routes one outgoing message (see [`route()`]) and writes it or keeps
    /// it; never fails.
    fn send(&self, message: Outgoing<'_>) -> impl Future<Output = io::Result<usize>> + Send {
        let link = Arc::clone(&self.shared);
        let buf = message.bytes;
        let keep = || Bytes::copy_from_slice(buf);
        let header = message.envelope.map(EnvelopeHeader::of);
        let decided = route(&mut link.lock(), header.as_ref(), buf, keep, Instant::now());
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
    fn send_batch(&self, batch: &OutgoingBatch) -> impl Future<Output = SendReport> + Send {
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

    fn reliable(&self) -> bool {
        true
    }

    /// The generation of the connection up, or the next one's.
    fn connection(&self) -> u64 {
        self.shared.connection.load(Ordering::Acquire)
    }
}

impl LinkShared {
    /// Does what a route other than [`Route::Write`] asks.
    fn route_aside(&self, route: Route) {
        match route {
            Route::Write(_) | Route::Dropped => {}
            Route::Suppressed => bump(&self.counters.suppressed),
            Route::Kept => self.wake.notify_one(),
        }
    }
}

mod channel;
mod conn;
mod route;
#[cfg(test)]
mod tests;

pub use channel::TcpChannel;
use conn::manage;
use route::{route, Route};
