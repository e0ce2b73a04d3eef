//! The listener: accepting connections (the cap, TLS handshakes), serving
//! each over HTTP/2 with the door's limits, idle connections closed, and
//! the router that hands each request to its service's route.

#[allow(clippy::wildcard_imports)] // the door's parts share its imports
use super::*;

/// Every route of a server, by service name; one clone per connection.
#[derive(Clone)]
pub(super) struct Router {
    routes: Arc<HashMap<&'static str, Route>>,
    door: Arc<GrpcDoor>,
    conn: Option<ConnInfo>,
    /// The connection's allowance: bytes its requests hold without budget.
    allowance: Arc<AtomicUsize>,
    /// The connection's calls, for the idle timeout.
    activity: Arc<Activity>,
}

/// The calls of one connection: open now, and begun so far.
#[derive(Debug, Default)]
pub(super) struct Activity {
    open: AtomicUsize,
    begun: AtomicU64,
}

/// One open call of a connection; closed when dropped.
pub(super) struct OpenCall(Arc<Activity>);

impl OpenCall {
    fn new(activity: &Arc<Activity>) -> OpenCall {
        activity.open.fetch_add(1, Ordering::AcqRel);
        activity.begun.fetch_add(1, Ordering::AcqRel);
        OpenCall(Arc::clone(activity))
    }
}

impl Drop for OpenCall {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Router {
    fn new(engine: &Arc<Engine>, door: Arc<GrpcDoor>) -> Router {
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
            door,
            conn: None,
            allowance: Arc::default(),
            activity: Arc::default(),
        }
    }

    /// The router of one new connection (with its own allowance and
    /// activity).
    fn for_connection(&self, conn: ConnInfo) -> Router {
        Router {
            conn: Some(conn),
            allowance: Arc::default(),
            activity: Arc::default(),
            ..self.clone()
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
        let deadline = tokio::time::Instant::now() + self.door.config.receive_timeout;
        let peer = self.conn.as_ref().map(|c| c.peer);
        let mut request = request.map(|body| {
            Body::new(Counted {
                inner: body,
                door: Arc::clone(&self.door),
                allowance: Arc::clone(&self.allowance),
                peer,
                deadline,
                timer: None,
                prefix: [0; 5],
                prefix_len: 0,
                len: 0,
                left: 0,
                hold: Hold::Nothing,
                failed: false,
            })
        });
        if let Some(conn) = &self.conn {
            request.extensions_mut().insert(conn.clone());
        }
        let path = request.uri().path();
        let service = path
            .strip_prefix('/')
            .and_then(|p| p.split('/').next())
            .unwrap_or_default();
        match self.routes.get(service) {
            // Routes are always ready (generated tonic servers and the
            // generic route both are).
            Some(route) => {
                let open = OpenCall::new(&self.activity);
                let call = route.clone().call(request);
                Box::pin(async move {
                    let response = call.await;
                    drop(open);
                    response
                })
            }
            None => {
                let status = tonic::Status::unimplemented(format!("unknown service {service:?}"));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

/// Binds `addr` and starts a gRPC door of `engine` in a task. Aborting the
/// task closes the listener and every connection.
pub(crate) async fn bind(
    engine: Arc<Engine>,
    budget: &Arc<ByteBudget>,
    addr: impl tokio::net::ToSocketAddrs,
    config: GrpcServerConfig,
) -> Result<(SocketAddr, Arc<GrpcDoor>, JoinHandle<()>), ServerError> {
    config.validate(budget.limit())?;
    #[cfg(feature = "tls")]
    let acceptor = crate::tls::door_acceptor(config.tls.as_ref(), crate::tls::ALPN_H2)
        .map_err(|e| ServerError::InvalidConfig(e.to_string()))?;
    let (listener, local_addr) = crate::server::listen(addr).await?;
    let door = Arc::new(GrpcDoor {
        config,
        budget: Arc::clone(budget),
        incarnation: tonic::metadata::MetadataValue::from(engine.incarnation()),
        accepted: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        open: AtomicUsize::new(0),
        no_budget: AtomicU64::new(0),
        timeouts: AtomicU64::new(0),
        handshake_failures: AtomicU64::new(0),
        closed_idle: AtomicU64::new(0),
        #[cfg(feature = "tls")]
        acceptor,
    });
    let router = Router::new(&engine, Arc::clone(&door));
    tracing::debug!(%local_addr, services = router.routes.len(), kind = %door.config.door_kind(), "grpc door open");
    let task = tokio::spawn(accept_loop(listener, router));
    Ok((local_addr, door, task))
}

/// Counts an open connection.
pub(super) struct Open(Arc<GrpcDoor>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(super) type Http2 = hyper::server::conn::http2::Builder<TokioExecutor>;

pub(super) async fn accept_loop(listener: TcpListener, router: Router) {
    let door = Arc::clone(&router.door);
    let config = &door.config;
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_frame_size(1 << 20)
        .adaptive_window(false)
        .initial_stream_window_size(config.stream_window)
        .initial_connection_window_size(config.connection_window)
        .max_concurrent_streams(config.max_concurrent_streams)
        .max_header_list_size(MAX_HEADER_LIST)
        .keep_alive_interval(config.keepalive_interval)
        .keep_alive_timeout(config.keepalive_timeout);
    let http2 = Arc::new(http2);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        bump(&door.refused);
                        tracing::debug!(%peer, limit = config.max_connections, "grpc connection refused: too many open");
                        drop(tcp);
                        continue;
                    };
                    bump(&door.accepted);
                    door.open.fetch_add(1, Ordering::AcqRel);
                    let open = Open(Arc::clone(&door));
                    if let Err(error) = tcp.set_nodelay(true) {
                        tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
                    }
                    let (router, http2) = (router.clone(), Arc::clone(&http2));
                    connections.spawn(async move {
                        connection(router, &http2, tcp, peer).await;
                        drop((slot, open));
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

/// One connection: the TLS handshake (when the door has TLS), then HTTP/2
/// until the peer closes it, an error, or the idle timeout.
pub(super) async fn connection(
    router: Router,
    http2: &Http2,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    #[cfg(feature = "tls")]
    if let Some(acceptor) = router.door.acceptor.clone() {
        let door = Arc::clone(&router.door);
        let timeout = door.config.handshake_timeout;
        let failures = &door.handshake_failures;
        let shaken =
            crate::tls::handshake(acceptor, tcp, timeout, peer, failures, "grpc tls").await;
        if let Some((stream, identity)) = shaken {
            let conn = ConnInfo {
                peer,
                transport: TransportKind::GrpcTls,
                identity,
            };
            serve(router.for_connection(conn), http2, stream, peer).await;
        }
        return;
    }
    let conn = ConnInfo {
        peer,
        transport: TransportKind::Grpc,
        identity: None,
    };
    serve(router.for_connection(conn), http2, tcp, peer).await;
}

/// Serves HTTP/2 on `io`; closes the connection gracefully (GOAWAY, open
/// calls finish) once no call has been open or begun for `idle_timeout`.
pub(super) async fn serve<IO>(router: Router, http2: &Http2, io: IO, peer: SocketAddr)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let door = Arc::clone(&router.door);
    let activity = Arc::clone(&router.activity);
    let served = http2.serve_connection(TokioIo::new(io), TowerToHyperService::new(router));
    tokio::pin!(served);
    let result = match door.config.idle_timeout {
        None => served.await,
        Some(idle) => {
            let mut seen = activity.begun.load(Ordering::Acquire);
            loop {
                // One timer per idle period, not per call.
                tokio::select! {
                    result = served.as_mut() => break result,
                    () = tokio::time::sleep(idle) => {
                        let begun = activity.begun.load(Ordering::Acquire);
                        if begun == seen && activity.open.load(Ordering::Acquire) == 0 {
                            bump(&door.closed_idle);
                            tracing::debug!(%peer, ?idle, "idle grpc connection closed");
                            served.as_mut().graceful_shutdown();
                            break served.await;
                        }
                        seen = begun;
                    }
                }
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "grpc connection ended with an error");
    }
}
