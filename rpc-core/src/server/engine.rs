//! The transport-agnostic request engine: given one message from a peer,
//! it decides and sends what `idl/PROTOCOL.md` (section 9, "Serving a
//! message") says (PONG, ACCEPT, IN_PROGRESS, a stored REPLY, an ERROR, or
//! runs the handler and sends its REPLY) through a [`ReplySink`]; the
//! duplicate filter's part of the decision is [`admit`](super::admit).
//!
//! A transport only has to turn its input into messages and give the
//! engine a way back to the peer:
//! - UDP (`udp.rs`): one datagram is one message; the sink sends a datagram
//!   to the sender's address.
//! - TCP (`tcp.rs`, optionally TLS): one frame is one message; the sink queues a frame on
//!   the connection's writer. The history is keyed by (session, request
//!   id), not by connection, so a request retransmitted on a new connection
//!   finds its stored reply (at-most-once survives a reconnect); a reply
//!   produced for a connection that broke is simply lost and replayed on
//!   the retransmission.
//!
//! Whether a method is idempotent comes from its declaration
//! ([`MethodInfo::idempotent`]), never from the request's flag: a client
//! cannot make the server store (and replay) what needs no storing. Every
//! session belongs to the peer that created it (see
//! [`history`](super::history)), and on datagram doors answers to a source
//! whose address is not verified are screened ([`verify`](super::verify)).
//!
//! Hot path: decoding, the history decision and the handler's first poll
//! all happen on the task that received the message (no cross-thread hop);
//! only a handler that is not ready on its first poll is spawned.

use super::admit::{self, admit, Admission};
use super::budget::ByteBudget;
use super::history::{History, Owner, Ownership, RegisterError};
use super::stats::{bump, Counters, ServerStats};
use super::verify::{Unverified, Verifier};
use super::ServerConfig;
use crate::envelope::{self, Envelope, ExchangeProtocol, MessageType, VERSION};
use crate::hash::FastMap;
use crate::service::{CallContext, Metadata, MethodInfo, PeerIdentity, Service, TransportKind};
use crate::status::{Code, Status};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use prost::Message;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

/// The way back to the peer a message came from.
///
/// Cloned when a handler outlives the first poll (the clone moves into the
/// spawned task), so it should be cheap: an `Arc` and an address, or a
/// queue sender.
pub trait ReplySink: Clone + Send + Sync + 'static {
    /// Sends one encoded envelope to the peer.
    ///
    /// # Errors
    /// When the transport cannot send; the engine counts and logs it (the
    /// peer will retransmit).
    fn send(&self, message: &[u8]) -> impl Future<Output = io::Result<()>> + Send;

    /// Sends one encoded envelope the engine holds as [`Bytes`] (a reply,
    /// also kept in the history): a transport that passes messages on
    /// whole takes the handle instead of copying. By default, [`Self::send`].
    ///
    /// # Errors
    /// As [`Self::send`].
    fn send_shared(&self, message: Bytes) -> impl Future<Output = io::Result<()>> + Send {
        async move { self.send(&message).await }
    }

    /// The peer's address, when the transport knows it.
    fn peer(&self) -> Option<SocketAddr>;

    /// The transport, as handlers see it in [`CallContext::transport`].
    fn transport(&self) -> TransportKind;

    /// The peer's verified identity (a TLS door that required a client
    /// certificate), as handlers see it in [`CallContext::identity`]. Made
    /// once per connection: this is an `Arc` clone per request at most. By
    /// default, none.
    fn identity(&self) -> Option<Arc<PeerIdentity>> {
        None
    }

    /// The largest message this transport carries: bigger incoming messages
    /// are dropped, bigger replies become a RESOURCE_EXHAUSTED reply.
    fn max_message_len(&self) -> usize;

    /// Whether the transport itself shows that the peer receives what is
    /// sent to its address (a connection does; a datagram's source address
    /// can be forged). By default `true`; datagram doors say `false`, and
    /// the engine then screens answers to sources not yet verified.
    fn address_proven(&self) -> bool {
        true
    }
}

/// The peer a message's session must belong to: the verified client
/// certificate on mutual TLS, the address and port on datagrams, the host
/// on other connections (a reconnect comes from another port), anyone in
/// process.
fn owner_of<K: ReplySink>(sink: &K) -> Owner {
    if let Some(identity) = sink.identity() {
        return Owner::Identity(identity);
    }
    match sink.peer() {
        None => Owner::Local,
        Some(addr) if !sink.address_proven() => Owner::Addr(addr),
        Some(addr) => Owner::Host(addr.ip()),
    }
}

/// The request engine of one server: its services, reply history, limits
/// and counters, shared by all the server's transports.
pub struct Engine {
    services: FastMap<&'static str, Arc<dyn Service>>,
    config: ServerConfig,
    incarnation: u64,
    history: Mutex<History>,
    counters: Counters,
    permits: Arc<Semaphore>,
    pending: AtomicUsize,
    /// The server's buffer budget: a request waiting for a handler slot
    /// holds its payload's bytes from it.
    budget: Arc<ByteBudget>,
    stopping: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
    cancel: watch::Sender<bool>,
    verifier: Verifier,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.services.keys().copied().collect();
        names.sort_unstable();
        f.debug_struct("Engine")
            .field("services", &names)
            .field("incarnation", &format_args!("{:#018x}", self.incarnation))
            .field("config", &self.config)
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What the engine decided for a request.
enum Decision {
    UnknownService,
    UnknownMethod,
    /// The duplicate filter's decision (known service and method).
    Admitted(Admission),
}

/// What was decided about a request, for [`Engine::act`].
struct Asked<'a> {
    decision: Decision,
    target: Option<(&'a Arc<dyn Service>, Option<&'static MethodInfo>)>,
    arrival: Instant,
    oneway: bool,
    tracked: bool,
}

/// A request about to run.
struct Job {
    service: Arc<dyn Service>,
    method: &'static MethodInfo,
    session: u64,
    request_id: u64,
    attempt: u32,
    /// Store the result in the history (everything but idempotent-sync).
    tracked: bool,
    /// Protocol R: never answer.
    oneway: bool,
    want_accept: bool,
    deadline: Option<Instant>,
    payload: Bytes,
    metadata: Metadata,
    instance: String,
}

/// A call without a session (a plain gRPC caller's): it bypasses the
/// duplicate filter and the history, and runs under the same limits as
/// every request ([`Engine::run_untracked`]).
#[cfg(feature = "grpc")]
pub(crate) struct Untracked {
    pub(crate) service: Arc<dyn Service>,
    pub(crate) method: &'static MethodInfo,
    pub(crate) deadline: Option<Instant>,
    pub(crate) payload: Bytes,
    pub(crate) metadata: Metadata,
    pub(crate) instance: String,
    /// Answer ACCEPT once the call has a handler slot or a waiting slot
    /// (a one-way method: the caller is not told the outcome); otherwise
    /// the answer is the result.
    pub(crate) accept: bool,
}

/// How a job ended.
enum Ending {
    Done(Result<Bytes, Status>),
    Panicked,
    Expired,
}

type Handler = tracing::instrument::Instrumented<BoxFuture<'static, Result<Bytes, Status>>>;

impl Engine {
    /// An engine for these services (names already checked unique).
    pub(crate) fn new(
        config: ServerConfig,
        services: Vec<Arc<dyn Service>>,
        incarnation: u64,
        budget: Arc<ByteBudget>,
    ) -> Engine {
        let services = services
            .into_iter()
            .map(|s| (s.info().full_name, s))
            .collect();
        let config_rate = config.unverified_rate;
        Engine {
            services,
            history: Mutex::new(History::new(config.history.clone())),
            permits: Arc::new(Semaphore::new(config.max_concurrent)),
            config,
            incarnation,
            counters: Counters::default(),
            pending: AtomicUsize::new(0),
            budget,
            stopping: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            cancel: watch::channel(false).0,
            verifier: Verifier::new(config_rate),
        }
    }

    /// Cookies and rate limits for unverified datagram sources.
    pub(crate) fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The hosted services (for transports that route by name, like gRPC).
    pub(crate) fn services(&self) -> impl Iterator<Item = &Arc<dyn Service>> {
        self.services.values()
    }

    /// This server's incarnation (random, non-zero, new on every start).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// A snapshot of the counters and the history's size.
    pub fn stats(&self) -> ServerStats {
        let (size, evicted, forgotten, sessions_evicted, tombstones_dropped) = {
            let h = self.history();
            (
                h.size(),
                h.evictions(),
                h.sessions_forgotten(),
                h.sessions_evicted(),
                h.tombstones_dropped(),
            )
        };
        self.counters.snapshot(
            size,
            evicted,
            forgotten,
            sessions_evicted,
            tombstones_dropped,
        )
    }

    /// Handler tasks running or waiting for a permit outside the
    /// receiving task.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Whether a graceful shutdown has begun (new requests are refused).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// The static name of a service served here, from its bytes on the
    /// wire (see [`Envelope::decode_naming`]).
    pub(crate) fn service_name(&self, name: &[u8]) -> Option<&'static str> {
        let name = std::str::from_utf8(name).ok()?;
        self.services.get_key_value(name).map(|(&k, _)| k)
    }

    fn history(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Evicts what has aged out of the history (called on a timer).
    pub(crate) fn sweep(&self) {
        self.history().sweep(Instant::now());
    }

    /// Starts a graceful shutdown: new requests get UNAVAILABLE.
    pub(crate) fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Cancels every spawned handler at its next await point.
    pub(crate) fn cancel_all(&self) {
        self.cancel.send_replace(true);
    }

    /// Waits until no handler task is left, at most `timeout`. Returns
    /// whether none is left.
    pub(crate) async fn wait_idle(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.idle.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.in_flight() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// Handles one encoded message (a datagram or a frame) from the peer
    /// behind `sink`. Never panics on any input; bad input is counted and
    /// logged at debug.
    ///
    /// # Cancel safety
    /// Dropping the future may lose the answer being sent and, if it is
    /// dropped while a handler's first poll is done, that handler's result;
    /// the history then keeps the request as running. Transports drive it
    /// to completion.
    pub async fn handle_message<K: ReplySink>(self: &Arc<Self>, message: &[u8], sink: &K) {
        bump(&self.counters.received);
        if message.len() > sink.max_message_len() {
            bump(&self.counters.too_large_requests);
            tracing::debug!(peer = ?sink.peer(), len = message.len(), limit = sink.max_message_len(), "dropped message over the size limit");
            return;
        }
        match Envelope::decode_naming(message, |name| self.service_name(name)) {
            Ok(env) => self.handle_decoded(env, message.len(), sink).await,
            Err(error) => {
                bump(&self.counters.malformed_dropped);
                tracing::debug!(peer = ?sink.peer(), len = message.len(), %error, "dropped undecodable message");
            }
        }
    }

    /// Handles one decoded envelope (for transports that decode themselves).
    ///
    /// # Cancel safety
    /// As [`Engine::handle_message`].
    #[allow(clippy::manual_async_fn)] // deliberate: see `handle_envelope`
    pub fn handle_envelope<'a, K: ReplySink>(
        self: &'a Arc<Self>,
        env: Envelope,
        sink: &'a K,
    ) -> impl Future<Output = ()> + 'a {
        // Only datagram doors screen answers against the request's size.
        let len = if sink.address_proven() {
            0
        } else {
            env.encoded_len()
        };
        self.handle_decoded(env, len, sink)
    }

    /// Handles one envelope that arrived as `len` bytes.
    #[allow(clippy::manual_async_fn)] // deliberate: see below
    fn handle_decoded<'a, K: ReplySink>(
        self: &'a Arc<Self>,
        env: Envelope,
        len: usize,
        sink: &'a K,
    ) -> impl Future<Output = ()> + 'a {
        // Not an `async fn`: an async fn keeps by-value arguments in its
        // state twice (rust-lang/rust#62958), and the envelope and the job
        // pass through four of them per request.
        async move {
            if env.version != VERSION {
                bump(&self.counters.version_dropped);
                tracing::debug!(peer = ?sink.peer(), version = env.version, "dropped message of unknown version");
                return;
            }
            if env.session_id == 0 {
                bump(&self.counters.unexpected_dropped);
                tracing::debug!(peer = ?sink.peer(), "dropped message without session id");
                return;
            }
            match MessageType::try_from(env.r#type) {
                Ok(MessageType::Request) => self.request(env, len, sink).await,
                Ok(MessageType::Ack) => {
                    bump(&self.counters.acks);
                    let owner = owner_of(sink);
                    let found = {
                        let mut history = self.history();
                        match history.ownership(env.session_id, &owner, &|| false) {
                            Ownership::Foreign => None,
                            _ => Some(history.ack(
                                env.session_id,
                                env.request_id,
                                env.ack_up_to,
                                Instant::now(),
                            )),
                        }
                    };
                    let Some(found) = found else {
                        bump(&self.counters.foreign_refused);
                        tracing::debug!(peer = ?sink.peer(), session = env.session_id, "ignored an ACK for a session of another peer");
                        return;
                    };
                    if !found {
                        bump(&self.counters.unknown_acks);
                        tracing::debug!(peer = ?sink.peer(), session = env.session_id, request_id = env.request_id, "ack for a request not in the history");
                    }
                }
                Ok(MessageType::Ping) => {
                    bump(&self.counters.pings);
                    let mut pong =
                        self.control(MessageType::Pong, env.session_id, env.request_id, None);
                    if sink.address_proven() {
                        self.send_envelope(sink, &pong).await;
                        return;
                    }
                    // A PING is how a datagram source gets its cookie; the
                    // PONG is screened like any answer to an unknown source.
                    if let Some(peer) = sink.peer() {
                        pong.cookie = self.verifier.cookie(peer);
                    }
                    let pong = Bytes::from(pong.encode_to_vec());
                    let screened =
                        self.screen(sink.peer(), pong.len(), len, env.session_id, env.request_id);
                    if matches!(screened, super::verify::Screened::Pass) {
                        self.send_shared(sink, pong).await;
                    }
                }
                other => {
                    bump(&self.counters.unexpected_dropped);
                    tracing::debug!(peer = ?sink.peer(), r#type = env.r#type, known = other.is_ok(), "dropped message of a type a server does not take");
                }
            }
        }
    }

    pub(crate) fn control(
        &self,
        ty: MessageType,
        session: u64,
        request_id: u64,
        status: Option<Status>,
    ) -> Envelope {
        Envelope::answer(
            ty,
            session,
            request_id,
            self.incarnation,
            status.as_ref().map(envelope::Status::from),
        )
    }

    async fn send_envelope<K: ReplySink>(&self, sink: &K, env: &Envelope) {
        self.send_shared(sink, Bytes::from(env.encode_to_vec()))
            .await;
    }

    async fn send_shared<K: ReplySink>(&self, sink: &K, bytes: Bytes) {
        if let Err(error) = sink.send_shared(bytes).await {
            bump(&self.counters.send_errors);
            tracing::debug!(peer = ?sink.peer(), %error, "send failed");
        }
    }

    async fn send_error<K: ReplySink>(
        &self,
        sink: &K,
        session: u64,
        request_id: u64,
        status: Status,
    ) {
        bump(&self.counters.errors);
        let env = self.control(MessageType::Error, session, request_id, Some(status));
        self.send_envelope(sink, &env).await;
    }

    #[allow(clippy::manual_async_fn)] // deliberate: see `handle_envelope`
    fn request<'a, K: ReplySink>(
        self: &'a Arc<Self>,
        env: Envelope,
        len: usize,
        sink: &'a K,
    ) -> impl Future<Output = ()> + 'a {
        async move {
            let arrival = Instant::now();
            let protocol = match ExchangeProtocol::try_from(env.protocol) {
                Ok(ExchangeProtocol::Unspecified | ExchangeProtocol::Rr) => ExchangeProtocol::Rr,
                Ok(p) => p,
                Err(_) => {
                    bump(&self.counters.unexpected_dropped);
                    tracing::debug!(peer = ?sink.peer(), protocol = env.protocol, "dropped request with unknown exchange protocol");
                    return;
                }
            };
            bump(&self.counters.requests);
            let oneway = protocol == ExchangeProtocol::R;
            let (session, request_id) = (env.session_id, env.request_id);
            let target = self
                .services
                .get(&*env.service)
                .map(|svc| (svc, svc.info().method(env.method_id)));
            let request = admit::Request {
                session,
                request_id,
                attempt: env.attempt,
                incarnation: env.incarnation,
                ack_up_to: env.ack_up_to,
                oneway,
                // The declaration decides, not the request's flag.
                idempotent: matches!(target, Some((_, Some(m))) if m.idempotent),
                want_accept: env.want_accept,
            };
            let owner = owner_of(sink);
            let proven = sink.address_proven();
            let cookie = env.cookie;
            // Asked only for a session not verified yet (a keyed hash).
            let proves = || {
                proven
                    || (cookie != 0
                        && sink
                            .peer()
                            .is_some_and(|p| self.verifier.is_valid(p, cookie)))
            };
            let (decision, verified) = match target {
                None | Some((_, None)) => {
                    let mut history = self.history();
                    match history.ownership(session, &owner, &proves) {
                        Ownership::Foreign => (Decision::Admitted(Admission::Foreign), false),
                        own => {
                            if env.ack_up_to > 0 {
                                history.ack(session, 0, env.ack_up_to, arrival);
                            }
                            let unknown = if target.is_none() {
                                Decision::UnknownService
                            } else {
                                Decision::UnknownMethod
                            };
                            let verified = match own {
                                Ownership::Own { verified } => verified,
                                _ => proves(),
                            };
                            (unknown, verified)
                        }
                    }
                }
                Some(_) => {
                    let verdict = admit(
                        &mut self.history(),
                        &request,
                        &owner,
                        &proves,
                        self.incarnation,
                        self.is_stopping(),
                        arrival,
                    );
                    (Decision::Admitted(verdict.admission), verdict.verified)
                }
            };
            let ask = Asked {
                decision,
                target,
                arrival,
                oneway,
                tracked: request.tracked(),
            };
            if verified || proven {
                self.act(ask, env, sink).await;
            } else {
                let guarded = Unverified {
                    inner: sink.clone(),
                    engine: Arc::clone(self),
                    received: len,
                    session,
                    request_id,
                };
                self.act(ask, env, &guarded).await;
            }
        }
    }

    /// Carries out the decision for a request: answers it, refuses it or
    /// starts its job.
    #[allow(clippy::manual_async_fn)] // deliberate: see `handle_envelope`
    fn act<'a, K: ReplySink>(
        self: &'a Arc<Self>,
        ask: Asked<'a>,
        env: Envelope,
        sink: &'a K,
    ) -> impl Future<Output = ()> + 'a {
        async move {
            let Asked {
                decision,
                target,
                arrival,
                oneway,
                tracked,
            } = ask;
            let (session, request_id) = (env.session_id, env.request_id);
            match decision {
                Decision::Admitted(Admission::Run) => {}
                Decision::UnknownService | Decision::UnknownMethod => {
                    let message = match target {
                        Some((svc, _)) => {
                            format!(
                                "{} has no method with id {:#010x}",
                                svc.info().full_name,
                                env.method_id
                            )
                        }
                        None => format!("unknown service {:?}", clip(&env.service, 128)),
                    };
                    bump(&self.counters.unimplemented);
                    tracing::debug!(peer = ?sink.peer(), %message, "unimplemented");
                    if !oneway {
                        self.send_error(sink, session, request_id, Status::unimplemented(message))
                            .await;
                    }
                    return;
                }
                Decision::Admitted(Admission::Stale) => {
                    bump(&self.counters.stale_dropped);
                    tracing::debug!(peer = ?sink.peer(), session, request_id, "dropped request at or below the acknowledged floor");
                    return;
                }
                Decision::Admitted(Admission::Acked) => {
                    bump(&self.counters.acked_dropped);
                    tracing::debug!(peer = ?sink.peer(), session, request_id, "dropped a late copy of an acknowledged request");
                    return;
                }
                Decision::Admitted(Admission::Replay(reply)) => {
                    bump(&self.counters.duplicates_replayed);
                    if reply.len() > sink.max_message_len() {
                        // Stored through a transport with a larger limit.
                        // The request ran: a REPLY with a status says so
                        // (an ERROR would say it was refused before).
                        bump(&self.counters.too_large_replies);
                        let status = too_large(reply.len(), sink.max_message_len());
                        let env =
                            self.control(MessageType::Reply, session, request_id, Some(status));
                        self.send_envelope(sink, &env).await;
                    } else {
                        self.send_shared(sink, reply).await;
                    }
                    return;
                }
                Decision::Admitted(Admission::DuplicateDropped) => {
                    bump(&self.counters.duplicates_dropped);
                    return;
                }
                Decision::Admitted(Admission::InProgress) => {
                    bump(&self.counters.in_progress_hits);
                    if !oneway {
                        let ty = if env.want_accept {
                            MessageType::Accept
                        } else {
                            MessageType::InProgress
                        };
                        if env.want_accept {
                            bump(&self.counters.accepts);
                        }
                        let msg = self.control(ty, session, request_id, None);
                        self.send_envelope(sink, &msg).await;
                    }
                    return;
                }
                Decision::Admitted(Admission::Evicted) => {
                    bump(&self.counters.evicted_refused);
                    if !oneway {
                        let status = Status::aborted("reply no longer in history; outcome unknown");
                        self.send_error(sink, session, request_id, status).await;
                    }
                    return;
                }
                Decision::Admitted(Admission::Restarted) => {
                    bump(&self.counters.outcome_unknown);
                    if oneway {
                        tracing::debug!(peer = ?sink.peer(), session, request_id, "dropped a one-way request meant for another incarnation");
                        return;
                    }
                    let status = Status::with_details(
                        Code::Aborted,
                        "outcome unknown: server restarted",
                        envelope::SERVER_RESTARTED,
                        Bytes::new(),
                    );
                    self.send_error(sink, session, request_id, status).await;
                    return;
                }
                Decision::Admitted(Admission::ShuttingDown) => {
                    bump(&self.counters.shutdown_refused);
                    if !oneway {
                        self.send_error(
                            sink,
                            session,
                            request_id,
                            Status::unavailable("shutting down"),
                        )
                        .await;
                    }
                    return;
                }
                Decision::Admitted(Admission::Foreign) => {
                    bump(&self.counters.foreign_refused);
                    tracing::debug!(peer = ?sink.peer(), session, request_id, "refused a request for a session of another peer");
                    if !oneway {
                        let status = Status::permission_denied("session belongs to another peer");
                        self.send_error(sink, session, request_id, status).await;
                    }
                    return;
                }
                Decision::Admitted(Admission::OverQuota(why)) => {
                    bump(&self.counters.quota_refused);
                    let what = match why {
                        RegisterError::SourceSessions => "sessions",
                        _ => "stored replies",
                    };
                    tracing::debug!(peer = ?sink.peer(), session, request_id, what, "refused: source over its quota");
                    if !oneway {
                        let status = Status::resource_exhausted(format!(
                            "too many {what} held for this source"
                        ));
                        self.send_error(sink, session, request_id, status).await;
                    }
                    return;
                }
                Decision::Admitted(Admission::TooManySessions) => {
                    bump(&self.counters.sessions_refused);
                    if !oneway {
                        let status = Status::resource_exhausted(
                            "too many client sessions with running requests",
                        );
                        self.send_error(sink, session, request_id, status).await;
                    }
                    return;
                }
            }

            let Some((service, Some(method))) = target else {
                return;
            };
            let deadline = match env.deadline_us {
                0 => None,
                us => arrival.checked_add(Duration::from_micros(us)),
            };
            let job = Job {
                service: Arc::clone(service),
                method,
                session,
                request_id,
                attempt: env.attempt,
                tracked,
                oneway,
                want_accept: env.want_accept,
                deadline,
                payload: env.payload,
                metadata: env.metadata,
                instance: env.instance,
            };
            self.start(job, sink).await;
        }
    }

    /// Runs a call without a session (see [`Untracked`]) as a request
    /// that is not tracked: counted, refused while shutting down, then
    /// through the same permits, waiting slots and buffer budget as every
    /// request ([`Engine::start`]). Its answer goes to `sink` as an
    /// envelope with session and request id 0: ACCEPT (when asked), REPLY
    /// or ERROR (RESOURCE_EXHAUSTED when it can neither run nor wait,
    /// DEADLINE_EXCEEDED when its deadline passed before it ran).
    ///
    /// # Cancel safety
    /// As [`Engine::handle_message`].
    #[cfg(feature = "grpc")]
    #[allow(clippy::manual_async_fn)] // deliberate: see `handle_envelope`
    pub(crate) fn run_untracked<'a, K: ReplySink>(
        self: &'a Arc<Self>,
        call: Untracked,
        sink: &'a K,
    ) -> impl Future<Output = ()> + 'a {
        async move {
            bump(&self.counters.requests);
            if self.is_stopping() {
                bump(&self.counters.shutdown_refused);
                self.send_error(sink, 0, 0, Status::unavailable("shutting down"))
                    .await;
                return;
            }
            let job = Job {
                service: call.service,
                method: call.method,
                session: 0,
                request_id: 0,
                attempt: 1,
                tracked: false,
                // Not `oneway` even for a one-way method: its ACCEPT, or
                // its refusal, is the caller's answer.
                oneway: false,
                want_accept: call.accept,
                deadline: call.deadline,
                payload: call.payload,
                metadata: call.metadata,
                instance: call.instance,
            };
            self.start(job, sink).await;
        }
    }

    /// Takes a concurrency permit (or a waiting slot), sends ACCEPT when
    /// asked, and runs the job: inline when a permit is free, else in a
    /// task that waits for one.
    #[allow(clippy::manual_async_fn)] // deliberate: see `handle_envelope`
    fn start<'a, K: ReplySink>(
        self: &'a Arc<Self>,
        job: Job,
        sink: &'a K,
    ) -> impl Future<Output = ()> + 'a {
        async move {
            let (permit, reservation) = match Arc::clone(&self.permits).try_acquire_owned() {
                Ok(p) => (Some(p), None),
                Err(_) => {
                    let waiting = self.pending.fetch_add(1, Ordering::AcqRel);
                    // A waiting request holds its payload: its bytes come
                    // from the buffer budget, or it is refused.
                    let held = if waiting >= self.config.max_pending {
                        Err(format!(
                            "{} requests running and {waiting} waiting",
                            self.config.max_concurrent
                        ))
                    } else if job.payload.is_empty() {
                        Ok(None)
                    } else {
                        match self.budget.try_reserve(job.payload.len()) {
                            Some(reservation) => Ok(Some(reservation)),
                            None => {
                                self.budget.count_refused();
                                Err(format!(
                                    "no buffer budget for a waiting request of {} bytes",
                                    job.payload.len()
                                ))
                            }
                        }
                    };
                    match held {
                        Ok(reservation) => (None, reservation),
                        Err(why) => {
                            self.pending.fetch_sub(1, Ordering::AcqRel);
                            self.refuse_waiting(&job, &why, sink).await;
                            return;
                        }
                    }
                }
            };
            if job.want_accept && !job.oneway {
                bump(&self.counters.accepts);
                let msg = self.control(MessageType::Accept, job.session, job.request_id, None);
                self.send_envelope(sink, &msg).await;
            }
            match permit {
                Some(permit) => self.run_inline(job, permit, sink).await,
                None => {
                    let engine = Arc::clone(self);
                    let sink = sink.clone();
                    self.spawn_tracked(async move {
                        let mut job = job;
                        let acquired = Arc::clone(&engine.permits).acquire_owned().await;
                        engine.pending.fetch_sub(1, Ordering::AcqRel);
                        // Running now: its bytes no longer wait.
                        drop(reservation);
                        let Ok(permit) = acquired else {
                            // The semaphore is never closed; treat it as a refusal.
                            if job.tracked {
                                engine.history().unregister(job.session, job.request_id);
                            }
                            return;
                        };
                        let ending = match engine.begin(&mut job, &sink) {
                            Ok(handler) => catch(handler).await,
                            Err(ending) => ending,
                        };
                        drop(permit);
                        engine.finish(&job, ending, &sink).await;
                    });
                }
            }
        }
    }

    /// Refuses a request that cannot wait for a handler slot (too many
    /// wait, or no buffer budget for its payload). The refusal is stored as
    /// its answer: a late copy gets it again instead of running after the
    /// caller was told it did not run. A one-way request keeps its
    /// tombstone, so a copy of it never runs later either.
    async fn refuse_waiting<K: ReplySink>(&self, job: &Job, why: &str, sink: &K) {
        bump(&self.counters.overloaded);
        tracing::debug!(
            session = job.session,
            request_id = job.request_id,
            why,
            "refused: cannot wait for a handler slot"
        );
        if job.oneway {
            return;
        }
        bump(&self.counters.errors);
        let status = Status::resource_exhausted(format!("server overloaded: {why}"));
        let env = self.control(
            MessageType::Error,
            job.session,
            job.request_id,
            Some(status),
        );
        let bytes = Bytes::from(env.encode_to_vec());
        if job.tracked {
            self.history()
                .complete(job.session, job.request_id, bytes.clone(), Instant::now());
        }
        self.send_shared(sink, bytes).await;
    }

    /// Runs the job with its first poll on this task; spawns the rest only
    /// if the handler is not ready at once.
    #[allow(clippy::manual_async_fn)] // deliberate: see `handle_envelope`
    fn run_inline<'a, K: ReplySink>(
        self: &'a Arc<Self>,
        mut job: Job,
        permit: OwnedSemaphorePermit,
        sink: &'a K,
    ) -> impl Future<Output = ()> + 'a {
        async move {
            let mut handler = match self.begin(&mut job, sink) {
                Ok(h) => h,
                Err(ending) => {
                    drop(permit);
                    self.finish(&job, ending, sink).await;
                    return;
                }
            };
            let ending = match poll_once(&mut handler) {
                Ok(Poll::Ready(result)) => Ending::Done(result),
                Err(_) => Ending::Panicked,
                Ok(Poll::Pending) => {
                    // The spawned task polls again at once, registering its own
                    // waker; the no-op waker of the first poll is never needed.
                    let engine = Arc::clone(self);
                    let sink = sink.clone();
                    self.spawn_tracked(async move {
                        let ending = catch(handler).await;
                        drop(permit);
                        engine.finish(&job, ending, &sink).await;
                    });
                    return;
                }
            };
            drop(permit);
            self.finish(&job, ending, sink).await;
        }
    }

    /// Checks the deadline and creates the handler's future (with its span).
    fn begin<K: ReplySink>(&self, job: &mut Job, sink: &K) -> Result<Handler, Ending> {
        if job.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Ending::Expired);
        }
        bump(&self.counters.executions);
        let ctx = CallContext {
            method: job.method,
            session_id: job.session,
            request_id: job.request_id,
            attempt: job.attempt,
            deadline: job.deadline,
            metadata: std::mem::take(&mut job.metadata),
            peer: sink.peer(),
            transport: sink.transport(),
            identity: sink.identity(),
            instance: std::mem::take(&mut job.instance),
        };
        let span = tracing::debug_span!(
            "rpc_call",
            service = %job.service.info().full_name,
            method = %job.method.name,
            session = job.session,
            request_id = job.request_id,
            attempt = job.attempt,
        );
        let call = {
            let _entered = span.enter();
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                job.service
                    .call(job.method.id, ctx, std::mem::take(&mut job.payload))
            }))
        };
        match call {
            Ok(fut) => Ok(fut.instrument(span)),
            Err(_) => Err(Ending::Panicked),
        }
    }

    /// Encodes the outcome, stores it in the history and sends it.
    async fn finish<K: ReplySink>(&self, job: &Job, ending: Ending, sink: &K) {
        let (ty, status, payload) = match ending {
            Ending::Done(Ok(payload)) => (MessageType::Reply, None, payload),
            // Refused before the method's code ran (an undecodable
            // payload): ERROR says it did not run.
            Ending::Done(Err(status)) if status.is_refusal() => {
                (MessageType::Error, Some(status), Bytes::new())
            }
            Ending::Done(Err(status)) => (MessageType::Reply, Some(status), Bytes::new()),
            Ending::Panicked => {
                bump(&self.counters.handler_panics);
                tracing::warn!(
                    method = job.method.name,
                    session = job.session,
                    request_id = job.request_id,
                    "handler panicked"
                );
                (
                    MessageType::Reply,
                    Some(Status::internal("handler panicked")),
                    Bytes::new(),
                )
            }
            Ending::Expired => {
                bump(&self.counters.deadline_exceeded);
                tracing::debug!(
                    method = job.method.name,
                    session = job.session,
                    request_id = job.request_id,
                    "deadline passed before the request ran"
                );
                (
                    MessageType::Error,
                    Some(Status::deadline_exceeded(
                        "deadline passed before the request ran",
                    )),
                    Bytes::new(),
                )
            }
        };
        if job.oneway {
            // The tombstone is already in the history; R never answers.
            if let Some(status) = status {
                tracing::debug!(method = job.method.name, %status, "one-way call failed");
            }
            return;
        }
        let mut env = self.control(ty, job.session, job.request_id, status);
        env.attempt = job.attempt;
        env.payload = payload;
        let mut len = env.encoded_len();
        let limit = sink.max_message_len();
        if len > limit {
            bump(&self.counters.too_large_replies);
            tracing::debug!(
                method = job.method.name,
                len,
                limit,
                "reply over the size limit"
            );
            env.r#type = MessageType::Reply as i32;
            env.payload = Bytes::new();
            env.status = Some(Box::new(envelope::Status::from(&too_large(len, limit))));
            len = env.encoded_len();
        }
        let mut encoded = Vec::with_capacity(len);
        env.encode_unchecked(&mut encoded);
        let bytes = Bytes::from(encoded);
        if job.tracked {
            self.history()
                .complete(job.session, job.request_id, bytes.clone(), Instant::now());
        }
        if env.r#type == MessageType::Error as i32 {
            bump(&self.counters.errors);
        } else {
            bump(&self.counters.replies);
        }
        self.send_shared(sink, bytes).await;
    }

    /// Spawns a handler task that shutdown can wait for and cancel.
    fn spawn_tracked<F: Future<Output = ()> + Send + 'static>(self: &Arc<Self>, work: F) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(Arc::clone(self));
        let mut cancel = self.cancel.subscribe();
        tokio::spawn(async move {
            let _guard = guard;
            tokio::select! {
                biased;
                _ = cancel.wait_for(|c| *c) => {}
                () = work => {}
            }
        });
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn clip(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn too_large(len: usize, limit: usize) -> Status {
    Status::resource_exhausted(format!(
        "reply of {len} bytes exceeds the limit of {limit} bytes"
    ))
}

/// Polls the handler once on this task, with a waker that does nothing
/// (whoever polls it next registers a real one). A panic is caught.
fn poll_once(handler: &mut Handler) -> std::thread::Result<Poll<Result<Bytes, Status>>> {
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(handler).poll(&mut cx)))
}

async fn catch(handler: Handler) -> Ending {
    match AssertUnwindSafe(handler).catch_unwind().await {
        Ok(result) => Ending::Done(result),
        Err(_) => Ending::Panicked,
    }
}

/// Counts a spawned handler task; wakes shutdown when the last one ends.
struct InFlight(Arc<Engine>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    //! The engine without sockets: a sink that collects what it is given.
    use super::*;
    use crate::service::{Protocol, ServiceInfo, Style};

    const FAST: u32 = 1;
    const GATED: u32 = 2;

    static METHODS: [MethodInfo; 2] = [method("Fast", FAST), method("Gated", GATED)];
    static INFO: ServiceInfo = ServiceInfo {
        package: "t",
        name: "S",
        full_name: "t.S",
        methods: &METHODS,
    };

    const fn method(name: &'static str, id: u32) -> MethodInfo {
        MethodInfo {
            name,
            id,
            request_type: "",
            response_type: "",
            raises_type: "",
            oneway: false,
            idempotent: false,
            protocol: Protocol::RR,
            style: Style::Sync,
            timeout_ms: 0,
            retries: None,
        }
    }

    #[derive(Default)]
    struct Svc {
        runs: std::sync::atomic::AtomicU64,
        gate: Arc<Notify>,
    }

    impl Service for Arc<Svc> {
        fn info(&self) -> &'static ServiceInfo {
            &INFO
        }
        fn call(
            &self,
            method_id: u32,
            _ctx: CallContext,
            _req: Bytes,
        ) -> BoxFuture<'static, Result<Bytes, Status>> {
            let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
            let gate = Arc::clone(&self.gate);
            Box::pin(async move {
                if method_id == GATED {
                    gate.notified().await;
                }
                Ok(Bytes::copy_from_slice(&n.to_be_bytes()))
            })
        }
    }

    /// A "connection": collects every message sent to it.
    #[derive(Clone, Default)]
    struct Conn {
        out: Arc<Mutex<Vec<Vec<u8>>>>,
        peer: Option<SocketAddr>,
        identity: Option<Arc<crate::service::PeerIdentity>>,
    }

    impl Conn {
        fn taken(&self) -> Vec<Envelope> {
            std::mem::take(&mut *self.out.lock().unwrap())
                .iter()
                .map(|b| Envelope::decode(b.as_slice()).unwrap())
                .collect()
        }
    }

    impl ReplySink for Conn {
        async fn send(&self, message: &[u8]) -> io::Result<()> {
            self.out.lock().unwrap().push(message.to_vec());
            Ok(())
        }
        fn peer(&self) -> Option<SocketAddr> {
            self.peer
        }
        fn transport(&self) -> TransportKind {
            TransportKind::Tcp
        }
        fn identity(&self) -> Option<Arc<crate::service::PeerIdentity>> {
            self.identity.clone()
        }
        fn max_message_len(&self) -> usize {
            16 << 20
        }
    }

    fn tls_conn(host: [u8; 4], name: &str) -> Conn {
        Conn {
            peer: Some(SocketAddr::from((host, 4000))),
            identity: Some(Arc::new(crate::service::PeerIdentity {
                subject: format!("CN={name}"),
                common_name: Some(name.to_owned()),
                alt_names: Vec::new(),
                certificate: Bytes::new(),
            })),
            ..Conn::default()
        }
    }

    #[tokio::test]
    async fn under_mutual_tls_a_session_belongs_to_the_certificate() {
        let (engine, svc) = engine();
        let alice = tls_conn([10, 0, 0, 1], "alice");
        engine.handle_message(&req(1, FAST, 1), &alice).await;
        let first = alice.taken();
        // Alice from another host (a new connection, a new Arc) continues.
        let moved = tls_conn([10, 0, 0, 2], "alice");
        engine.handle_message(&req(1, FAST, 2), &moved).await;
        assert_eq!(moved.taken(), first);
        // Mallory on Alice's host is another peer.
        let mallory = tls_conn([10, 0, 0, 1], "mallory");
        engine.handle_message(&req(1, FAST, 3), &mallory).await;
        let refused = mallory.taken();
        assert_eq!(refused.len(), 1);
        let code = refused[0].status.as_ref().map(|s| s.code);
        assert_eq!(code, Some(Code::PermissionDenied.as_i32()));
        assert_eq!(svc.runs.load(Ordering::SeqCst), 1);
        assert_eq!(engine.stats().foreign_refused, 1);
    }

    fn engine() -> (Arc<Engine>, Arc<Svc>) {
        let svc = Arc::new(Svc::default());
        let engine = Engine::new(
            ServerConfig::default(),
            vec![Arc::new(Arc::clone(&svc))],
            77,
            ByteBudget::new(256 << 20),
        );
        (Arc::new(engine), svc)
    }

    fn req(id: u64, method: u32, attempt: u32) -> Vec<u8> {
        Envelope {
            version: VERSION,
            r#type: MessageType::Request as i32,
            request_id: id,
            session_id: 5,
            service: "t.S".into(),
            method_id: method,
            attempt,
            incarnation: if attempt > 1 { 77 } else { 0 },
            ..Envelope::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn clip_cuts_at_char_boundaries() {
        assert_eq!(clip("héllo", 2), "h");
        assert_eq!(clip("héllo", 3), "hé");
        assert_eq!(clip("abc", 10), "abc");
    }

    #[tokio::test]
    async fn a_ready_handler_is_answered_on_the_receiving_task() {
        let (engine, svc) = engine();
        let conn = Conn::default();
        engine.handle_message(&req(1, FAST, 1), &conn).await;
        // No spawn, no yield: the reply is out when handle_message returns.
        let out = conn.taken();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].r#type, MessageType::Reply as i32);
        assert_eq!(engine.in_flight(), 0);
        assert_eq!(svc.runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn at_most_once_survives_a_reconnect() {
        let (engine, svc) = engine();
        let (first, second) = (Conn::default(), Conn::default());
        engine.handle_message(&req(1, GATED, 1), &first).await;
        assert_eq!(engine.in_flight(), 1);
        // The first connection breaks; the client retries on a new one.
        engine.handle_message(&req(1, GATED, 2), &second).await;
        assert_eq!(
            second.taken().iter().map(|e| e.r#type).collect::<Vec<_>>(),
            vec![MessageType::InProgress as i32]
        );
        svc.gate.notify_one();
        assert!(engine.wait_idle(Duration::from_secs(2)).await);
        // The reply went to the broken connection; the retry gets it from
        // the history, without a second execution.
        let lost = first.taken();
        assert_eq!(lost.len(), 1);
        engine.handle_message(&req(1, GATED, 3), &second).await;
        let replayed = second.taken();
        assert_eq!(replayed, lost);
        assert_eq!(svc.runs.load(Ordering::SeqCst), 1);
        let s = engine.stats();
        assert_eq!(
            (s.executions, s.in_progress_hits, s.duplicates_replayed),
            (1, 1, 1)
        );
    }

    #[tokio::test]
    async fn shutdown_refuses_new_work_but_replays() {
        let (engine, svc) = engine();
        let conn = Conn::default();
        engine.handle_message(&req(1, FAST, 1), &conn).await;
        let reply = conn.taken();
        engine.begin_shutdown();
        engine.handle_message(&req(2, FAST, 1), &conn).await;
        let refused = conn.taken();
        assert_eq!(refused[0].r#type, MessageType::Error as i32);
        assert_eq!(
            refused[0].status.as_ref().map(|s| s.code),
            Some(Code::Unavailable as i32)
        );
        engine.handle_message(&req(1, FAST, 2), &conn).await;
        assert_eq!(conn.taken(), reply);
        assert_eq!(svc.runs.load(Ordering::SeqCst), 1);
    }
}
