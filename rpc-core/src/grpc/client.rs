//! [`GrpcChannel`]: a [`Channel`] over gRPC, so that every generated
//! client can call any gRPC server (ours or another implementation's).

use super::codec::BytesCodec;
use super::metadata as md;
use super::status::from_tonic;
use crate::call::{Channel, Invocation, Outcome, RawReply, RawResult};
use crate::envelope::SERVER_RESTARTED;
use crate::error::Error;
use crate::hash::FastMap;
use crate::service::{Protocol, Style};
use bytes::Bytes;
use futures::future::BoxFuture;
use std::collections::BTreeSet;
use std::error::Error as _;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel as TonicChannel, Endpoint};

/// Errors of creating a [`GrpcChannel`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrpcError {
    /// The URI is not valid (`http://host:port`).
    #[error("invalid grpc uri {0:?}")]
    InvalidUri(String),
    /// The server could not be reached.
    #[error("cannot connect to the grpc server")]
    Connect(#[source] tonic::transport::Error),
}

/// Retries and timeouts of a [`GrpcChannel`].
///
/// Defaults: 3 retries, backoff from 20 ms doubling up to 1 s, no default
/// deadline, session metadata sent, messages up to 16 MiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcClientConfig {
    /// Attempts after the first when the connection fails (a call's
    /// `retries` option overrides it).
    pub retries: u32,
    /// Pause before the first retry; doubles per retry.
    pub initial_backoff: Duration,
    /// Longest pause between retries.
    pub max_backoff: Duration,
    /// Deadline of calls that set none.
    pub default_timeout: Option<Duration>,
    /// Send the `rpc-*` session metadata (session, request id, attempt,
    /// ...). Harmless to other gRPC servers, which ignore it.
    pub session_metadata: bool,
    /// The largest request message sent and reply message accepted, in
    /// bytes. A larger request fails with [`Error::MessageTooLarge`] before
    /// anything is sent. Default 16 MiB, the server's limit.
    pub max_message_len: usize,
}

impl Default for GrpcClientConfig {
    fn default() -> Self {
        GrpcClientConfig {
            retries: 3,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(1),
            default_timeout: None,
            session_metadata: true,
            max_message_len: super::server::MAX_MESSAGE_LEN,
        }
    }
}

/// A transport failure this close to the deadline is the deadline.
const DEADLINE_SLACK: Duration = Duration::from_millis(20);

/// How long a CANCEL may take to be sent (it is best effort, never
/// retried).
const CANCEL_TIMEOUT: Duration = Duration::from_secs(1);

const PEER_UNKNOWN: u8 = 0;
const PEER_OURS: u8 = 1;
const PEER_FOREIGN: u8 = 2;

/// The highest request id up to which every call has ended.
#[derive(Debug, Default)]
struct AckFloor {
    floor: u64,
    done: BTreeSet<u64>,
}

impl AckFloor {
    fn complete(&mut self, id: u64) {
        if id <= self.floor {
            return;
        }
        self.done.insert(id);
        while self.done.remove(&(self.floor + 1)) {
            self.floor += 1;
        }
    }
}

#[derive(Debug)]
struct Inner {
    channel: TonicChannel,
    config: GrpcClientConfig,
    session: u64,
    next_id: AtomicU64,
    /// Last incarnation seen in a response (0: none yet).
    incarnation: AtomicU64,
    peer: AtomicU8,
    acks: Mutex<AckFloor>,
    /// `/<package>.<Service>/<Method>` by method (its `MethodInfo`'s
    /// address): built and checked once, not per call.
    paths: Mutex<FastMap<usize, PathAndQuery>>,
}

/// A [`Channel`] over gRPC (HTTP/2, through tonic).
///
/// Each invocation is a unary gRPC call of `/<service full name>/<method>`
/// with the encoded request as the message. The caller's metadata map
/// travels as ASCII gRPC metadata (keys lowercase, not `rpc-`/`grpc-`
/// prefixed, values visible ASCII; anything else is an
/// [`Error::InvalidCall`]), the deadline as `grpc-timeout`, and the
/// session fields as `rpc-*` metadata (see [`super::metadata`]), so that our
/// servers filter duplicates and keep replies: a call whose connection
/// fails is retried with the same request id and runs at most once.
///
/// - Retries happen only when no answer came (connection failure), for
///   idempotent methods always, for others unless the server is known to
///   be foreign (it answered without `rpc-incarnation`): a foreign server
///   has no history, so a retry could run the call twice.
/// - Asynchronous and deferred calls ask our server to answer at ACCEPT
///   (flag `a` of `rpc-call`); a deferred result is then collected by sending the
///   same request id again, which the server answers from its history. A
///   foreign server just answers with the result.
/// - One-way calls are sent in a background task; [`Outcome::Sent`] is
///   returned at once.
/// - A retry that reaches a restarted server of ours gets
///   [`Error::OutcomeUnknown`].
#[derive(Debug, Clone)]
pub struct GrpcChannel {
    inner: Arc<Inner>,
}

impl GrpcChannel {
    /// Connects to `uri` (e.g. `http://127.0.0.1:50051`) now.
    ///
    /// # Errors
    /// [`GrpcError::InvalidUri`], [`GrpcError::Connect`].
    pub async fn connect(uri: &str) -> Result<GrpcChannel, GrpcError> {
        let channel = endpoint(uri)?.connect().await.map_err(GrpcError::Connect)?;
        Ok(GrpcChannel::from_channel(channel))
    }

    /// A channel to `uri` that connects on its first call (and reconnects
    /// after a failure).
    ///
    /// # Errors
    /// [`GrpcError::InvalidUri`].
    pub fn lazy(uri: &str) -> Result<GrpcChannel, GrpcError> {
        Ok(GrpcChannel::from_channel(endpoint(uri)?.connect_lazy()))
    }

    /// Connects to `uri` (`https://host:port` or `host:port`; the host is
    /// only used to connect, the certificate is verified for `tls`'s
    /// server name) over TLS now, offering ALPN `h2`.
    ///
    /// # Errors
    /// [`GrpcError::InvalidUri`], [`GrpcError::Connect`] (a refused
    /// handshake included).
    #[cfg(feature = "tls")]
    pub async fn connect_tls(
        uri: &str,
        tls: crate::tls::TlsClientConfig,
    ) -> Result<GrpcChannel, GrpcError> {
        let (endpoint, connector) = tls_endpoint(uri, tls)?;
        let channel = endpoint
            .connect_with_connector(connector)
            .await
            .map_err(GrpcError::Connect)?;
        Ok(GrpcChannel::from_channel(channel))
    }

    /// As [`GrpcChannel::connect_tls`], connecting on the first call (and
    /// reconnecting after a failure). A call whose first copy meets a TLS
    /// handshake refused by either side fails with UNAUTHENTICATED
    /// ([`Error::Status`], not run).
    ///
    /// # Errors
    /// [`GrpcError::InvalidUri`].
    #[cfg(feature = "tls")]
    pub fn lazy_tls(uri: &str, tls: crate::tls::TlsClientConfig) -> Result<GrpcChannel, GrpcError> {
        let (endpoint, connector) = tls_endpoint(uri, tls)?;
        Ok(GrpcChannel::from_channel(
            endpoint.connect_with_connector_lazy(connector),
        ))
    }

    /// A channel over an existing tonic channel (TLS, load balancing, ...).
    pub fn from_channel(channel: TonicChannel) -> GrpcChannel {
        let session = loop {
            let n: u64 = rand::random();
            if n != 0 {
                break n;
            }
        };
        GrpcChannel {
            inner: Arc::new(Inner {
                channel,
                config: GrpcClientConfig::default(),
                session,
                next_id: AtomicU64::new(1),
                incarnation: AtomicU64::new(0),
                peer: AtomicU8::new(PEER_UNKNOWN),
                acks: Mutex::new(AckFloor::default()),
                paths: Mutex::new(FastMap::default()),
            }),
        }
    }

    /// The same connection with other retry settings (and a new session).
    pub fn with_config(self, config: GrpcClientConfig) -> GrpcChannel {
        let mut channel = GrpcChannel::from_channel(self.inner.channel.clone());
        if let Some(inner) = Arc::get_mut(&mut channel.inner) {
            inner.config = config;
        }
        channel
    }

    /// This client's session id (random, non-zero).
    pub fn session_id(&self) -> u64 {
        self.inner.session
    }

    /// The server incarnation of the last answer (0: none yet, or a foreign
    /// server).
    pub fn server_incarnation(&self) -> u64 {
        self.inner.incarnation.load(Ordering::Relaxed)
    }
}

fn endpoint(uri: &str) -> Result<Endpoint, GrpcError> {
    Endpoint::from_shared(uri.to_owned())
        .map(|e| e.tcp_nodelay(true))
        .map_err(|_| GrpcError::InvalidUri(uri.to_owned()))
}

/// An endpoint for `uri` whose connections a [`TlsConnect`] makes: the
/// connector gets a plain `http://` URI (so that no TLS of tonic's own is
/// ever tried on it), requests carry the `https://` origin.
#[cfg(feature = "tls")]
fn tls_endpoint(
    uri: &str,
    tls: crate::tls::TlsClientConfig,
) -> Result<(Endpoint, TlsConnect), GrpcError> {
    let invalid = || GrpcError::InvalidUri(uri.to_owned());
    let authority = uri
        .strip_prefix("https://")
        .unwrap_or(uri)
        .trim_end_matches('/')
        .to_owned();
    if authority.is_empty() || authority.contains('/') {
        return Err(invalid());
    }
    let origin = tonic::codegen::http::Uri::try_from(format!("https://{authority}"))
        .map_err(|_| invalid())?;
    let endpoint = endpoint(&format!("http://{authority}"))?.origin(origin);
    let connect = TlsConnect {
        connector: tls.connector(crate::tls::ALPN_H2),
        server_name: tls.server_name().clone(),
    };
    Ok((endpoint, connect))
}

/// Makes a channel's connections: TCP, then TLS offering ALPN `h2`, the
/// stream wrapped so that a server's refusal of the client certificate
/// (TLS 1.3: an alert on the first read) is recognised in the call's error.
#[cfg(feature = "tls")]
#[derive(Clone)]
struct TlsConnect {
    connector: tokio_rustls::TlsConnector,
    server_name: rustls_pki_types::ServerName<'static>,
}

#[cfg(feature = "tls")]
impl fmt::Debug for TlsConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnect")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "tls")]
type TlsIo = hyper_util::rt::TokioIo<
    crate::tls::Refusable<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
>;

#[cfg(feature = "tls")]
impl tower::Service<tonic::codegen::http::Uri> for TlsConnect {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = BoxFuture<'static, Result<TlsIo, std::io::Error>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), std::io::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, target: tonic::codegen::http::Uri) -> Self::Future {
        let (connector, server_name) = (self.connector.clone(), self.server_name.clone());
        Box::pin(async move {
            // An IPv6 literal comes bracketed in a URI.
            let host = target.host().unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = target.port_u16().unwrap_or(443);
            let tcp = tokio::net::TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            let stream = connector.connect(server_name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(crate::tls::Refusable::new(
                stream,
            )))
        })
    }
}

/// Marks a request id as ended (for the acknowledgement floor) when
/// dropped, however the call ends.
struct Ended {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for Ended {
    fn drop(&mut self) {
        self.inner
            .acks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .complete(self.id);
    }
}

/// What an exchange ended with.
struct Answer {
    result: RawResult,
    accepted: bool,
    /// The attempt number of the last copy sent.
    attempt: u32,
}

/// A request whose answer did not come: the connection failed, or the
/// client gave up waiting.
fn is_transport_failure(status: &tonic::Status) -> bool {
    status.metadata().get(md::INCARNATION).is_none()
        && (status.source().is_some()
            || (status.code() == tonic::Code::Unavailable && status.metadata().is_empty()))
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Answer")
            .field("accepted", &self.accepted)
            .field("attempt", &self.attempt)
            .finish()
    }
}

struct Call {
    inner: Arc<Inner>,
    invocation: Invocation,
    path: PathAndQuery,
    metadata: MetadataMap,
    request_id: u64,
    deadline: Option<Instant>,
    /// The server incarnation known when the call began, named by every
    /// copy: a retry that reaches a restarted server must be recognised as
    /// meant for the old one, even if another call learned the new one.
    incarnation: u64,
}

/// Where one exchange of a call stands, for its [`Abandon`]: whether a
/// copy of the request went out, and whether the server answered it (with
/// anything: a reply, a status, an ACCEPT, a refused handshake).
#[derive(Debug, Default)]
struct Progress {
    sent: AtomicBool,
    answered: AtomicBool,
}

impl Progress {
    /// The collection of a deferred result: the request went out before.
    fn already_sent() -> Progress {
        Progress {
            sent: AtomicBool::new(true),
            answered: AtomicBool::new(false),
        }
    }
}

/// Sends the CANCEL of an exchange when dropped after a copy went out and
/// before an answer came: the caller abandoned the call (dropped its
/// future or its deferred handle) or gave up on it (its deadline, its last
/// attempt). Best effort (idl/PROTOCOL.md, 11.1): one unary request with
/// flag `c`, in a task of its own, never retried; only to a server known
/// to be ours (a foreign one would take the empty message as a request),
/// and only with session metadata.
struct Abandon {
    inner: Arc<Inner>,
    path: PathAndQuery,
    request_id: u64,
    incarnation: u64,
    progress: Progress,
}

impl Abandon {
    fn new(call: &Call, progress: Progress) -> Abandon {
        Abandon {
            inner: Arc::clone(&call.inner),
            path: call.path.clone(),
            request_id: call.request_id,
            incarnation: call.incarnation,
            progress,
        }
    }

    fn abandoned(&self) -> bool {
        self.progress.sent.load(Ordering::Relaxed)
            && !self.progress.answered.load(Ordering::Relaxed)
            && self.inner.config.session_metadata
            && self.inner.peer.load(Ordering::Relaxed) == PEER_OURS
    }
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if !self.abandoned() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!(
                request_id = self.request_id,
                "abandoned grpc call: no runtime to send its CANCEL from"
            );
            return;
        };
        let mut request = tonic::Request::new(Bytes::new());
        md::CallHeader {
            session: self.inner.session,
            request_id: self.request_id,
            attempt: 1,
            incarnation: self.incarnation,
            cancel: true,
            ..md::CallHeader::default()
        }
        .put(request.metadata_mut());
        put_timeout(&mut request, CANCEL_TIMEOUT);
        let send = unary(&self.inner, request, self.path.clone());
        let request_id = self.request_id;
        runtime.spawn(async move {
            match tokio::time::timeout(CANCEL_TIMEOUT, send).await {
                Ok(Ok(_)) => tracing::trace!(request_id, "CANCEL sent"),
                Ok(Err(status)) => tracing::debug!(request_id, %status, "CANCEL not taken"),
                Err(_) => tracing::debug!(request_id, "CANCEL not sent in time"),
            }
        });
    }
}

/// `grpc-timeout` of `left` on `request`.
fn put_timeout(request: &mut tonic::Request<Bytes>, left: Duration) {
    if let Ok(v) = tonic::metadata::MetadataValue::try_from(md::format_timeout(left)) {
        request.metadata_mut().insert(md::GRPC_TIMEOUT, v);
    }
}

/// One unary gRPC request of `path` on the channel, within the message
/// limits.
fn unary(
    inner: &Inner,
    request: tonic::Request<Bytes>,
    path: PathAndQuery,
) -> impl std::future::Future<Output = Result<tonic::Response<Bytes>, tonic::Status>> + Send + 'static
{
    let mut grpc = tonic::client::Grpc::new(inner.channel.clone())
        .max_decoding_message_size(inner.config.max_message_len)
        .max_encoding_message_size(inner.config.max_message_len);
    async move {
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::from_error(Box::new(e)))?;
        grpc.unary(request, path, BytesCodec::default()).await
    }
}

impl Call {
    fn request(&self, attempt: u32, want_accept: bool, collect: bool) -> tonic::Request<Bytes> {
        let mut request = tonic::Request::new(self.invocation.payload.clone());
        let meta = request.metadata_mut();
        if !self.metadata.is_empty() {
            *meta = self.metadata.clone();
        }
        let options = &self.invocation.options;
        if self.inner.config.session_metadata {
            let ack_up_to = self
                .inner
                .acks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .floor;
            md::CallHeader {
                session: self.inner.session,
                request_id: self.request_id,
                attempt,
                // Every copy, the first included, names the incarnation
                // known when the call began (0 before the first answer): a
                // server refuses a copy meant for an earlier incarnation
                // instead of running it again (a proxy may deliver a first
                // copy late).
                incarnation: self.incarnation,
                ack_up_to,
                protocol_r: options.protocol == Protocol::R,
                protocol_rra: options.protocol == Protocol::RRA,
                accept: want_accept,
                // Collecting a deferred result must look the request up in
                // the history, never run it again.
                idempotent: options.idempotent && !collect,
                cancel: false,
            }
            .put(meta);
            if !self.invocation.instance.is_empty() {
                if let Ok(v) =
                    tonic::metadata::MetadataValue::try_from(self.invocation.instance.as_str())
                {
                    meta.insert(md::INSTANCE, v);
                }
            }
        }
        if let Some(deadline) = self.deadline {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_micros(1));
            put_timeout(&mut request, left);
        }
        request
    }

    fn learn(&self, meta: &MetadataMap) {
        match md::get_u64(meta, md::INCARNATION) {
            Some(incarnation) => {
                self.inner.incarnation.store(incarnation, Ordering::Relaxed);
                self.inner.peer.store(PEER_OURS, Ordering::Relaxed);
            }
            None => {
                let _ = self.inner.peer.compare_exchange(
                    PEER_UNKNOWN,
                    PEER_FOREIGN,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
        }
    }

    /// Whether the call's deadline has come (within [`DEADLINE_SLACK`]): an
    /// answer that ends the call now is the deadline, whoever noticed first.
    fn at_deadline(&self) -> bool {
        self.deadline
            .is_some_and(|d| Instant::now() + DEADLINE_SLACK >= d)
    }

    /// [`Call::exchange`], sending the call's CANCEL if it is abandoned
    /// (this future dropped) or given up (an error short of an answer)
    /// after a copy was sent.
    async fn exchange_or_cancel(
        &self,
        first_attempt: u32,
        want_accept: bool,
        collect: bool,
    ) -> Result<Answer, Error> {
        let abandon = Abandon::new(self, Progress::default());
        self.exchange(first_attempt, want_accept, collect, &abandon.progress)
            .await
    }

    /// Sends the request (again, with the same id, while the connection
    /// fails and retries are left) until an answer comes.
    async fn exchange(
        &self,
        first_attempt: u32,
        want_accept: bool,
        collect: bool,
        progress: &Progress,
    ) -> Result<Answer, Error> {
        let options = &self.invocation.options;
        let retries = options.retries.unwrap_or(self.inner.config.retries);
        let mut backoff = self.inner.config.initial_backoff;
        let mut attempt = first_attempt;
        let mut sent = 0u32;
        loop {
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::DeadlineExceeded {
                    may_have_run: sent > 0 || first_attempt > 1,
                    attempts: sent,
                });
            }
            let request = self.request(attempt, want_accept, collect);
            let call = unary(&self.inner, request, self.path.clone());
            sent += 1;
            progress.sent.store(true, Ordering::Relaxed);
            let result = match self.deadline {
                Some(d) => match tokio::time::timeout_at(d.into(), call).await {
                    Ok(r) => r,
                    Err(_) => {
                        return Err(Error::DeadlineExceeded {
                            may_have_run: true,
                            attempts: sent,
                        })
                    }
                },
                None => call.await,
            };
            match result {
                Ok(response) => {
                    progress.answered.store(true, Ordering::Relaxed);
                    self.learn(response.metadata());
                    let accepted = response.metadata().get(md::ACCEPTED).is_some();
                    let metadata = md::user_metadata(response.metadata());
                    return Ok(Answer {
                        result: Ok(RawReply {
                            payload: response.into_inner(),
                            metadata,
                        }),
                        accepted,
                        attempt,
                    });
                }
                Err(status) if !is_transport_failure(&status) => {
                    progress.answered.store(true, Ordering::Relaxed);
                    self.learn(status.metadata());
                    let ours = from_tonic(&status);
                    if ours.details_type() == SERVER_RESTARTED {
                        return Err(Error::OutcomeUnknown);
                    }
                    // The server ends the call at the same grpc-timeout the
                    // client set, so its DEADLINE_EXCEEDED may arrive just
                    // before the client's own timer fires: that is the
                    // deadline, and the handler may have run, unless the
                    // server says it refused the work before starting it. A
                    // DEADLINE_EXCEEDED well before the deadline is the
                    // handler's own answer and stays a status.
                    if ours.code() == crate::Code::DeadlineExceeded
                        && self.at_deadline()
                        && ours.message() != super::server::NOT_RUN
                    {
                        return Err(Error::DeadlineExceeded {
                            may_have_run: true,
                            attempts: sent,
                        });
                    }
                    return Ok(Answer {
                        result: Err(ours),
                        accepted: false,
                        attempt,
                    });
                }
                Err(status) => {
                    // A TLS handshake refused by either side: the server
                    // ran nothing on that connection. Only the first copy
                    // can say "not run" (an earlier one may have reached
                    // the server on a connection it accepted).
                    #[cfg(feature = "tls")]
                    if sent == 1 && first_attempt == 1 {
                        if let Some(reason) = crate::tls::rejection(&status) {
                            progress.answered.store(true, Ordering::Relaxed);
                            tracing::debug!(%reason, "grpc call refused at the tls layer");
                            return Err(Error::Status(crate::Status::unauthenticated(reason)));
                        }
                    }
                    // A server resets the stream at the deadline (gRPC's
                    // own servers do): that is the deadline, not a failure.
                    if self.at_deadline() {
                        return Err(Error::DeadlineExceeded {
                            may_have_run: true,
                            attempts: sent,
                        });
                    }
                    let foreign = self.inner.peer.load(Ordering::Relaxed) == PEER_FOREIGN;
                    let may_retry =
                        options.idempotent || !foreign || !self.inner.config.session_metadata;
                    tracing::debug!(status = %status, attempt, "grpc call failed in transport");
                    if sent > retries || !may_retry || options.protocol == Protocol::R {
                        return Err(Error::Unreachable {
                            may_have_run: true,
                            attempts: sent,
                        });
                    }
                    let pause = match self.deadline {
                        Some(d) => backoff.min(d.saturating_duration_since(Instant::now())),
                        None => backoff,
                    };
                    tokio::time::sleep(pause).await;
                    backoff = (backoff * 2).min(self.inner.config.max_backoff);
                    attempt += 1;
                }
            }
        }
    }
}

impl GrpcChannel {
    /// The request path of the invoked method (cached per method).
    fn path(&self, invocation: &Invocation) -> Result<PathAndQuery, Error> {
        let key = std::ptr::from_ref(invocation.method) as usize;
        let mut paths = self
            .inner
            .paths
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(path) = paths.get(&key) {
            return Ok(path.clone());
        }
        let text = format!(
            "/{}/{}",
            invocation.service.full_name, invocation.method.name
        );
        let path = PathAndQuery::try_from(text.as_str())
            .map_err(|_| Error::InvalidCall(format!("not a valid grpc path: {text:?}")))?;
        paths.insert(key, path.clone());
        Ok(path)
    }

    async fn run(self, invocation: Invocation) -> Result<Outcome, Error> {
        let limit = self.inner.config.max_message_len;
        let size = invocation.payload.len();
        if size > limit {
            tracing::debug!(size, limit, "request over the message limit, not sent");
            return Err(Error::MessageTooLarge { size, limit });
        }
        let path = self.path(&invocation)?;
        let mut metadata = MetadataMap::new();
        md::put_user_metadata(&mut metadata, &invocation.metadata)
            .map_err(|e| Error::InvalidCall(e.to_string()))?;
        let deadline = invocation.options.deadline.or_else(|| {
            self.inner
                .config
                .default_timeout
                .map(|t| Instant::now() + t)
        });
        let request_id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let ended = Ended {
            inner: Arc::clone(&self.inner),
            id: request_id,
        };
        let style = invocation.options.style;
        let call = Call {
            incarnation: self.inner.incarnation.load(Ordering::Relaxed),
            inner: Arc::clone(&self.inner),
            invocation,
            path,
            metadata,
            request_id,
            deadline,
        };
        match style {
            Style::OneWay => {
                tokio::spawn(async move {
                    let _ended = ended;
                    // One-way calls are never cancelled: no `Abandon`.
                    let progress = Progress::default();
                    if let Err(error) = call.exchange(1, false, false, &progress).await {
                        tracing::debug!(%error, "one-way grpc call failed");
                    }
                });
                Ok(Outcome::Sent)
            }
            Style::Sync => {
                let answer = call.exchange_or_cancel(1, false, false).await?;
                drop(ended);
                Ok(Outcome::Reply(answer.result))
            }
            Style::Async | Style::Deferred => {
                let answer = call.exchange_or_cancel(1, true, false).await?;
                if !answer.accepted {
                    return Ok(Outcome::Reply(answer.result));
                }
                let next = answer.attempt + 1;
                // A deferred result not collected is abandoned (its handle
                // dropped, maybe before this future was first polled); an
                // asynchronous call's result is never collected, and is not
                // abandoned by that.
                let abandon = (style == Style::Deferred)
                    .then(|| Abandon::new(&call, Progress::already_sent()));
                Ok(Outcome::Accepted(Box::pin(async move {
                    let _ended = ended;
                    let progress = Progress::default();
                    let progress = abandon.as_ref().map_or(&progress, |a| &a.progress);
                    let answer = call.exchange(next, false, true, progress).await?;
                    Ok(answer.result)
                })))
            }
        }
    }
}

impl Channel for GrpcChannel {
    fn invoke(&self, invocation: Invocation) -> BoxFuture<'static, Result<Outcome, Error>> {
        Box::pin(self.clone().run(invocation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ack_floor_only_rises_over_contiguous_ids() {
        let mut a = AckFloor::default();
        a.complete(2);
        assert_eq!(a.floor, 0);
        a.complete(1);
        assert_eq!(a.floor, 2);
        a.complete(4);
        a.complete(3);
        assert_eq!(a.floor, 4);
        assert!(a.done.is_empty());
    }
}
