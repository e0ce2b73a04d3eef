//! The gRPC door of a server: an HTTP/2 listener whose requests reach the
//! server's [`Engine`] (callers that send a session) or the service itself
//! (plain gRPC callers).
//!
//! Each hosted service contributes a [`Route`]: its generated tonic server
//! (`tonic_build`'s output, see `rpc_codegen::rust`) over a [`Door`], or, for
//! services without a generated gRPC face, a generic route that finds the
//! method by name in the [`ServiceInfo`]. A request's path
//! `/<package>.<Service>/<Method>` selects the route; an unknown service or
//! method gets UNIMPLEMENTED.

use super::codec::BytesCodec;
use super::metadata::{self as md, get_str, put_static};
use super::status::to_tonic;
use crate::envelope::{Envelope, ExchangeProtocol, MessageType, VERSION};
use crate::server::{Engine, ReplySink, ServerError};
use crate::service::{CallContext, MethodInfo, Service, ServiceInfo, TransportKind};
use crate::status::Status;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use prost::Message;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tonic::body::Body;
use tonic::codegen::http;
use tower::util::BoxCloneSyncService;

/// Largest gRPC message the door takes or sends (16 MiB).
pub const MAX_MESSAGE_LEN: usize = 16 << 20;

/// How one service is reached over gRPC: a tower service from HTTP/2
/// requests to responses (a generated tonic server, boxed).
pub type Route = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;

/// Boxes a tower service (a generated tonic server) as a [`Route`].
pub fn route<S>(service: S) -> Route
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    BoxCloneSyncService::new(service)
}

/// The caller's address, put in each request's extensions by the door.
#[derive(Debug, Clone, Copy)]
struct PeerAddr(SocketAddr);

/// One hosted service seen from gRPC: what the generated tonic trait is
/// implemented for. Each method hands its request to [`Door::unary`].
#[derive(Clone)]
pub struct Door {
    engine: Arc<Engine>,
    service: Arc<dyn Service>,
    /// `rpc-incarnation` of every response, made once.
    incarnation: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

impl fmt::Debug for Door {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Door")
            .field("service", &self.service.info().full_name)
            .finish_non_exhaustive()
    }
}

impl Door {
    /// The door of `service` (hosted by `engine`).
    pub fn new(engine: Arc<Engine>, service: Arc<dyn Service>) -> Door {
        let incarnation = tonic::metadata::MetadataValue::from(engine.incarnation());
        Door {
            engine,
            service,
            incarnation,
        }
    }

    /// The service behind this door.
    pub fn info(&self) -> &'static ServiceInfo {
        self.service.info()
    }

    /// Largest message taken or sent ([`MAX_MESSAGE_LEN`]).
    pub fn max_message_len(&self) -> usize {
        MAX_MESSAGE_LEN
    }

    /// Runs one unary gRPC call of `method`.
    ///
    /// - With `rpc-call` metadata (our client): the request goes
    ///   through the engine, exactly as a UDP or TCP request would (the
    ///   duplicate filter and reply history give at-most-once across
    ///   retries and reconnects); a duplicate of a request still running
    ///   waits for its result.
    /// - Without (a plain gRPC client): the handler runs once per request,
    ///   with session and request id 0; no history.
    ///
    /// The deadline from `grpc-timeout` is the handler's `ctx.deadline`; when
    /// it passes, the call ends with DEADLINE_EXCEEDED. Every response
    /// carries `rpc-incarnation`.
    ///
    /// # Errors
    /// The handler's status, or the door's (UNAVAILABLE when shutting down,
    /// DEADLINE_EXCEEDED, ...), as a tonic status.
    pub async fn unary(
        &self,
        method: &'static MethodInfo,
        request: tonic::Request<Bytes>,
    ) -> Result<tonic::Response<Bytes>, tonic::Status> {
        let arrival = Instant::now();
        let (meta, extensions, payload) = request.into_parts();
        let timeout = get_str(&meta, md::GRPC_TIMEOUT).and_then(md::parse_timeout);
        let deadline = timeout.and_then(|t| arrival.checked_add(t));
        let peer = extensions.get::<PeerAddr>().map(|p| p.0);
        let work = async {
            match meta.get(md::CALL) {
                None => self.plain(method, &meta, payload, deadline, peer).await,
                Some(value) => match value
                    .to_str()
                    .ok()
                    .and_then(md::CallHeader::parse)
                    .filter(|h| h.session != 0 && h.attempt != 0)
                {
                    Some(call) => {
                        self.tracked(call, method, &meta, payload, timeout, peer)
                            .await
                    }
                    // Never run a request whose at-most-once fields cannot
                    // be read as a plain one: the caller expects them.
                    None => {
                        tracing::debug!(?peer, "malformed rpc-call metadata");
                        Err(Status::invalid_argument(format!(
                            "malformed {} metadata (expected session.request_id.attempt.incarnation.ack_up_to.flags, session and attempt non-zero)",
                            md::CALL
                        )))
                    }
                },
            }
        };
        let result = match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), work)
                .await
                .unwrap_or_else(|_| Err(Status::deadline_exceeded("deadline exceeded"))),
            None => work.await,
        };
        let incarnation = self.incarnation.clone();
        match result {
            Ok((reply, accepted)) => {
                let mut response = tonic::Response::new(reply);
                response.metadata_mut().insert(md::INCARNATION, incarnation);
                if accepted {
                    put_static(response.metadata_mut(), md::ACCEPTED, "1");
                }
                Ok(response)
            }
            Err(status) => {
                let mut status = to_tonic(&status);
                status.metadata_mut().insert(md::INCARNATION, incarnation);
                Err(status)
            }
        }
    }

    /// A plain gRPC call: run the handler once.
    async fn plain(
        &self,
        method: &'static MethodInfo,
        meta: &tonic::metadata::MetadataMap,
        payload: Bytes,
        deadline: Option<Instant>,
        peer: Option<SocketAddr>,
    ) -> Result<(Bytes, bool), Status> {
        if self.engine.is_stopping() {
            return Err(Status::unavailable("shutting down"));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Status::deadline_exceeded(NOT_RUN));
        }
        let ctx = CallContext {
            method,
            session_id: 0,
            request_id: 0,
            attempt: 1,
            deadline,
            metadata: md::user_metadata(meta),
            peer,
            transport: TransportKind::Grpc,
            instance: get_str(meta, md::INSTANCE).unwrap_or_default().to_owned(),
        };
        let service = &self.service;
        let handler =
            std::panic::catch_unwind(AssertUnwindSafe(|| service.call(method.id, ctx, payload)))
                .map_err(|_| Status::internal("handler panicked"))?;
        if method.oneway {
            // One-way over gRPC: the empty reply is the ACCEPT; the handler
            // goes on in its own task.
            tokio::spawn(async move {
                match AssertUnwindSafe(handler).catch_unwind().await {
                    Ok(Ok(_)) => {}
                    Ok(Err(status)) => {
                        tracing::debug!(method = method.name, %status, "one-way call failed")
                    }
                    Err(_) => tracing::warn!(method = method.name, "one-way handler panicked"),
                }
            });
            return Ok((Bytes::new(), true));
        }
        match AssertUnwindSafe(handler).catch_unwind().await {
            Ok(result) => result.map(|reply| (reply, false)),
            Err(_) => {
                tracing::warn!(method = method.name, "handler panicked");
                Err(Status::internal("handler panicked"))
            }
        }
    }

    /// A call from our client: through the engine (history, at-most-once).
    async fn tracked(
        &self,
        call: md::CallHeader,
        method: &'static MethodInfo,
        meta: &tonic::metadata::MetadataMap,
        payload: Bytes,
        timeout: Option<Duration>,
        peer: Option<SocketAddr>,
    ) -> Result<(Bytes, bool), Status> {
        let protocol = if call.protocol_r {
            ExchangeProtocol::R
        } else if call.protocol_rra {
            ExchangeProtocol::Rra
        } else {
            ExchangeProtocol::Rr
        };
        let user_metadata = md::user_metadata(meta);
        let instance = get_str(meta, md::INSTANCE).unwrap_or_default();
        let envelope = || Envelope {
            version: VERSION,
            r#type: MessageType::Request as i32,
            request_id: call.request_id,
            session_id: call.session,
            service: self.service.info().full_name.into(),
            instance: instance.to_owned(),
            method_id: method.id,
            incarnation: call.incarnation,
            deadline_us: timeout.map_or(0, |t| {
                u64::try_from(t.as_micros()).unwrap_or(u64::MAX).max(1)
            }),
            attempt: call.attempt.max(1),
            status: None,
            payload: payload.clone(),
            metadata: user_metadata.clone(),
            protocol: protocol as i32,
            ack_up_to: call.ack_up_to,
            want_accept: call.accept,
            idempotent: call.idempotent,
        };
        let oneway = protocol == ExchangeProtocol::R;
        let mut pause = Duration::from_millis(1);
        loop {
            // Only the engine's first answer matters (ACCEPT, REPLY, ERROR
            // or IN_PROGRESS); a later one (the REPLY after ACCEPT) is
            // collected by a new request.
            let (tx, rx) = oneshot::channel();
            let sink = Sink {
                tx: Arc::new(Mutex::new(Some(tx))),
                peer,
            };
            // The envelope is rebuilt from the metadata for a retry (rare)
            // rather than cloned for every call.
            self.engine.handle_envelope(envelope(), &sink).await;
            drop(sink);
            if oneway {
                // R: the engine never answers; the empty reply says the
                // request was taken (ACCEPT), not that it ran.
                return Ok((Bytes::new(), true));
            }
            let Ok(message) = rx.await else {
                return Err(Status::aborted(
                    "request dropped by the server: a duplicate of one already answered and acknowledged",
                ));
            };
            let reply = Envelope::decode(message)
                .map_err(|e| Status::internal(format!("engine reply: {e}")))?;
            match MessageType::try_from(reply.r#type) {
                Ok(MessageType::Reply) => {
                    return match reply.status {
                        Some(status) => Err(status.into()),
                        None => Ok((reply.payload, false)),
                    };
                }
                Ok(MessageType::Error) => {
                    return Err(reply
                        .status
                        .map_or_else(|| Status::internal("error without status"), Status::from));
                }
                Ok(MessageType::Accept) => return Ok((Bytes::new(), true)),
                Ok(MessageType::InProgress) => {
                    // A retry of a request still running (its first copy
                    // came on a connection that broke): wait for the
                    // result, which the history will then replay.
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                _ => {
                    return Err(Status::internal(format!(
                        "unexpected engine message type {}",
                        reply.r#type
                    )))
                }
            }
        }
    }
}

/// The engine's way back to one gRPC call: its first answer.
#[derive(Clone)]
struct Sink {
    /// Taken by the first answer.
    tx: Arc<Mutex<Option<oneshot::Sender<Bytes>>>>,
    peer: Option<SocketAddr>,
}

impl ReplySink for Sink {
    async fn send(&self, message: &[u8]) -> io::Result<()> {
        self.send_shared(Bytes::copy_from_slice(message)).await
    }

    async fn send_shared(&self, message: Bytes) -> io::Result<()> {
        let tx = self
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match tx {
            Some(tx) => tx
                .send(message)
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "grpc call gone")),
            // A later answer of the same request: collected by a new one.
            None => Ok(()),
        }
    }

    fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    fn transport(&self) -> TransportKind {
        TransportKind::Grpc
    }

    fn max_message_len(&self) -> usize {
        MAX_MESSAGE_LEN
    }
}

/// One method of a service without a generated gRPC face.
#[derive(Clone)]
struct DoorMethod {
    door: Door,
    method: &'static MethodInfo,
}

impl tonic::server::UnaryService<Bytes> for DoorMethod {
    type Response = Bytes;
    type Future = BoxFuture<'static, Result<tonic::Response<Bytes>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.door.unary(this.method, request).await })
    }
}

/// The route of a service without a generated gRPC face: the method is
/// found by name in its [`ServiceInfo`].
#[derive(Clone)]
struct GenericRoute {
    door: Door,
}

impl tower::Service<http::Request<Body>> for GenericRoute {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let method_name = request.uri().path().rsplit('/').next().unwrap_or_default();
        let Some(method) = self.door.info().method_by_name(method_name) else {
            let status = tonic::Status::unimplemented(format!(
                "{} has no method {method_name:?}",
                self.door.info().full_name
            ));
            return Box::pin(async move { Ok(status.into_http()) });
        };
        let svc = DoorMethod {
            door: self.door.clone(),
            method,
        };
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(BytesCodec::default())
                .apply_max_message_size_config(Some(MAX_MESSAGE_LEN), Some(MAX_MESSAGE_LEN));
            Ok(grpc.unary(svc, request).await)
        })
    }
}

/// Every route of a server, by service name; one clone per connection.
#[derive(Clone)]
struct Router {
    routes: Arc<HashMap<&'static str, Route>>,
    peer: Option<SocketAddr>,
}

impl Router {
    fn new(engine: &Arc<Engine>) -> Router {
        let routes = engine
            .services()
            .map(|service| {
                let door = Door::new(Arc::clone(engine), Arc::clone(service));
                let route = service
                    .grpc_route(door.clone())
                    .unwrap_or_else(|| route(GenericRoute { door }));
                (service.info().full_name, route)
            })
            .collect();
        Router {
            routes: Arc::new(routes),
            peer: None,
        }
    }
}

impl tower::Service<http::Request<Incoming>> for Router {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Incoming>) -> Self::Future {
        let mut request = request.map(Body::new);
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(PeerAddr(peer));
        }
        let path = request.uri().path();
        let service = path
            .strip_prefix('/')
            .and_then(|p| p.split('/').next())
            .unwrap_or_default();
        match self.routes.get(service) {
            // Routes are always ready (generated tonic servers and the
            // generic route both are).
            Some(route) => route.clone().call(request),
            None => {
                let status = tonic::Status::unimplemented(format!("unknown service {service:?}"));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

/// Binds `addr` and starts the gRPC door of `engine` in a task. Aborting
/// the task closes the listener and every connection.
pub(crate) async fn bind(
    engine: Arc<Engine>,
    addr: impl tokio::net::ToSocketAddrs,
) -> Result<(SocketAddr, JoinHandle<()>), ServerError> {
    let listener = TcpListener::bind(addr).await.map_err(ServerError::Bind)?;
    let local_addr = listener.local_addr().map_err(ServerError::LocalAddr)?;
    let router = Router::new(&engine);
    tracing::debug!(%local_addr, services = router.routes.len(), "grpc door open");
    Ok((local_addr, tokio::spawn(accept_loop(listener, router))))
}

async fn accept_loop(listener: TcpListener, router: Router) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    if let Err(error) = tcp.set_nodelay(true) {
                        tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
                    }
                    let service = TowerToHyperService::new(Router { peer: Some(peer), ..router.clone() });
                    connections.spawn(async move {
                        let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .max_frame_size(1 << 20)
                            .serve_connection(TokioIo::new(tcp), service)
                            .await;
                        if let Err(error) = served {
                            tracing::debug!(%peer, %error, "grpc connection ended with an error");
                        }
                    });
                }
                Err(error) => {
                    // Out of file descriptors and the like: wait a little.
                    tracing::debug!(%error, "grpc accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// The message of the DEADLINE_EXCEEDED status that means "refused before
/// it ran" (the engine uses the same text).
pub(crate) const NOT_RUN: &str = "deadline passed before the request ran";
