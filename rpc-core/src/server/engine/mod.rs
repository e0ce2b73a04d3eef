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
//! Files: this one (the engine, a message's first checks and the decision
//! about a request), `sink.rs` (the way back to the sender), `act.rs` (from the decision to its
//! counter and answer), `run.rs` (slots, the handler's run, the answer it
//! leaves), `tests.rs`.
//!
//! Hot path: decoding, the history decision and the handler's first poll
//! all happen on the task that received the message (no cross-thread hop);
//! only a handler that is not ready on its first poll is spawned.

mod act;
mod run;
mod sink;
#[cfg(test)]
mod tests;

use super::admit::{self, admit, Admission};
use super::budget::ByteBudget;
use super::history::{History, Ownership};
use super::stats::{bump, Counters, ServerStats};
use super::verify::{Unverified, Verifier};
use super::ServerConfig;
use crate::envelope::{self, Envelope, ExchangeProtocol, MessageType, VERSION};
use crate::hash::FastMap;
use crate::service::{Metadata, MethodInfo, ReplyMetadata, Service};
use crate::status::Status;
use bytes::Bytes;
use futures::future::BoxFuture;
use prost::Message;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify, Semaphore};

use sink::owner_of;
pub use sink::ReplySink;

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
    /// Run around every handler, outermost first.
    pub(crate) interceptors: crate::intercept::Chain,
    /// Tracked calls whose handler did not finish at its first poll (or
    /// waits for a slot), by (session, request id): what a CANCEL finds.
    running: Mutex<FastMap<(u64, u64), ReplyMetadata>>,
    /// Methods with their own pool of handler slots instead of
    /// `max_concurrent`'s, by (service, method id).
    pub(crate) method_permits: FastMap<(&'static str, u32), Arc<Semaphore>>,
}

/// Takes a job off [`Engine::running`] when its task ends (or is dropped).
struct RunningGuard {
    engine: Arc<Engine>,
    key: (u64, u64),
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.engine
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
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
    /// When the request arrived (before any queueing).
    received_at: Instant,
    /// Interceptors whose `before` passed (their `after` runs at the end).
    passed: usize,
    /// Shared with the handler's context: the answer's metadata and the
    /// cancellation.
    call: ReplyMetadata,
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
    /// When the call arrived at the door.
    pub(crate) received_at: Instant,
    /// The call's shared state; the door cancels it when the caller goes.
    pub(crate) call: ReplyMetadata,
    /// Answer ACCEPT once the call has a handler slot or a waiting slot
    /// (a one-way method: the caller is not told the outcome); otherwise
    /// the answer is the result.
    pub(crate) accept: bool,
}

/// How a job ended.
enum Ending {
    Done(Result<Bytes, Status>),
    /// An interceptor refused the call before the handler ran.
    Refused(Status),
    Panicked,
    Expired,
}

/// A handler's future, in its call's trace context when there is one.
type Handler = tracing::instrument::Instrumented<
    crate::intercept::trace::InContext<BoxFuture<'static, Result<Bytes, Status>>>,
>;

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
            interceptors: crate::intercept::Chain::default(),
            running: Mutex::new(FastMap::default()),
            method_permits: FastMap::default(),
        }
    }

    /// Tells the running handler of (`session`, `request_id`), if any,
    /// that its caller abandoned it. Nothing else changes: a completed
    /// call is untouched.
    pub(crate) fn cancel_running(&self, session: u64, request_id: u64) {
        let call = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(session, request_id))
            .cloned();
        match call {
            Some(call) => {
                bump(&self.counters.cancels_applied);
                tracing::debug!(session, request_id, "call cancelled by its caller");
                call.cancel();
            }
            None => tracing::trace!(session, request_id, "CANCEL for no running call"),
        }
    }

    /// Registers a tracked job that goes on beyond its first poll, so that
    /// a CANCEL finds it; the guard takes it off.
    fn register_running(self: &Arc<Self>, job: &Job) -> Option<RunningGuard> {
        if !job.tracked {
            return None;
        }
        let key = (job.session, job.request_id);
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, job.call.clone());
        Some(RunningGuard {
            engine: Arc::clone(self),
            key,
        })
    }

    /// The pool of handler slots of `job`'s method.
    fn permits_for(&self, job: &Job) -> &Arc<Semaphore> {
        if self.method_permits.is_empty() {
            return &self.permits;
        }
        self.method_permits
            .get(&(job.service.info().full_name, job.method.id))
            .unwrap_or(&self.permits)
    }

    /// Cookies and rate limits for unverified datagram sources.
    pub(crate) fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The hosted services (for transports that route by name, like gRPC).
    #[cfg(feature = "grpc")]
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
        let (size, evicted, forgotten, sessions_evicted) = {
            let h = self.history();
            (
                h.size(),
                h.evictions(),
                h.sessions_forgotten(),
                h.sessions_evicted(),
            )
        };
        self.counters
            .snapshot(size, evicted, forgotten, sessions_evicted)
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
                Ok(MessageType::Cancel) => {
                    bump(&self.counters.cancels);
                    let owner = owner_of(sink);
                    let own = matches!(
                        self.history().ownership(env.session_id, &owner, &|| false),
                        Ownership::Own { .. }
                    );
                    if !own {
                        bump(&self.counters.foreign_refused);
                        tracing::debug!(peer = ?sink.peer(), session = env.session_id, "ignored a CANCEL for a session this peer does not own");
                        return;
                    }
                    self.cancel_running(env.session_id, env.request_id);
                }
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
            status.as_ref().map(envelope::WireStatus::from),
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
