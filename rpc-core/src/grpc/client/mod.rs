//! [`GrpcChannel`]: a [`Channel`] over gRPC, so that every generated
//! client can call any gRPC server (ours or another implementation's).
//!
//! How the pieces fit:
//! - this file: the channel, its configuration and session state (request
//!   ids, the acknowledgement floor, what the peer is), and
//!   [`Channel::invoke`], which picks how a call runs by its style;
//! - `connect.rs`: the endpoint for a URI and, with TLS, the connector
//!   that makes the channel's connections;
//! - `exchange.rs`: one call: its requests with the `rpc-call` header, the
//!   retries while the connection fails, and what the answer means;
//! - `cancel.rs`: the CANCEL of a call abandoned after a copy went out.

mod cancel;
mod connect;
mod exchange;

use super::metadata as md;
use crate::call::{Channel, Invocation, Outcome};
use crate::error::Error;
use crate::hash::FastMap;
use crate::service::Style;
use cancel::{Abandon, Progress};
use connect::endpoint;
#[cfg(feature = "tls")]
use connect::tls_endpoint;
use exchange::{Call, Ended};
use futures::future::BoxFuture;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel as TonicChannel;

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
            max_message_len: crate::grpc::server::MAX_MESSAGE_LEN,
        }
    }
}
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
