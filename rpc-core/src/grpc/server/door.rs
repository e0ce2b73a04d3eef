//! A hosted service's way in: [`Door`] takes a gRPC request and runs it
//! through the engine, as a request of its session (`rpc-call`) or as a
//! plain call; the sink that carries the engine's first answer back; the
//! routes of generated and generic services.

#[allow(clippy::wildcard_imports)] // the door's parts share its imports
use super::*;
use crate::service::{Metadata, ReplyMetadata};

/// What the door knows of a request's connection, put in each request's
/// extensions: the caller's address, the transport, and the client
/// certificate verified for the connection.
#[derive(Debug, Clone)]
pub(super) struct ConnInfo {
    pub(super) peer: SocketAddr,
    pub(super) transport: TransportKind,
    pub(super) identity: Option<Arc<PeerIdentity>>,
}

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
    /// - Without (a plain gRPC client): the request goes through the
    ///   engine without a session: no duplicate filter and no history
    ///   (the handler runs once per request, with session and request id
    ///   0), but the same handler permits, waiting slots and counters as
    ///   every request. A one-way method is answered once the request has
    ///   a handler slot or a waiting slot.
    ///
    /// The deadline from `grpc-timeout` is the handler's `ctx.deadline`; when
    /// it passes, the call ends with DEADLINE_EXCEEDED. Every response
    /// carries `rpc-incarnation`.
    ///
    /// # Errors
    /// The handler's status, or the door's (UNAVAILABLE when shutting down,
    /// RESOURCE_EXHAUSTED when the server can neither run nor queue it,
    /// DEADLINE_EXCEEDED, ...), as a tonic status.
    pub async fn unary(
        &self,
        method: &'static MethodInfo,
        request: tonic::Request<Bytes>,
    ) -> Result<tonic::Response<Bytes>, tonic::Status> {
        let arrival = Instant::now();
        let (meta, mut extensions, payload) = request.into_parts();
        let timeout = get_str(&meta, md::GRPC_TIMEOUT).and_then(md::parse_timeout);
        let deadline = timeout.and_then(|t| arrival.checked_add(t));
        let conn = extensions.remove::<ConnInfo>();
        let sink = |tx| Sink {
            tx: Arc::new(Mutex::new(Some(tx))),
            peer: conn.as_ref().map(|c| c.peer),
            transport: conn.as_ref().map_or(TransportKind::Grpc, |c| c.transport),
            identity: conn.as_ref().and_then(|c| c.identity.clone()),
        };
        let peer = conn.as_ref().map(|c| c.peer);
        let work = async {
            match meta.get(md::CALL) {
                None => {
                    self.plain(method, &meta, payload, deadline, arrival, sink)
                        .await
                }
                Some(value) => match value
                    .to_str()
                    .ok()
                    .and_then(md::CallHeader::parse)
                    .filter(|h| h.session != 0 && h.attempt != 0)
                {
                    Some(call) if call.cancel => Ok(self.cancel(call, sink).await),
                    Some(call) => {
                        self.tracked(call, method, &meta, payload, timeout, sink)
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
            Ok((reply, accepted, metadata)) => {
                let mut response = tonic::Response::new(reply);
                md::put_reply_metadata(response.metadata_mut(), &metadata);
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

    /// A plain gRPC call: through the engine without a session.
    async fn plain(
        &self,
        method: &'static MethodInfo,
        meta: &tonic::metadata::MetadataMap,
        payload: Bytes,
        deadline: Option<Instant>,
        received_at: Instant,
        sink: impl FnOnce(oneshot::Sender<Bytes>) -> Sink,
    ) -> Result<(Bytes, bool, Metadata), Status> {
        let call = Untracked {
            service: Arc::clone(&self.service),
            method,
            deadline,
            payload,
            metadata: md::user_metadata(meta),
            instance: get_str(meta, md::INSTANCE).unwrap_or_default().to_owned(),
            accept: method.oneway,
            received_at,
            call: ReplyMetadata::default(),
        };
        // Until the answer is in, the caller going away (the stream reset,
        // which drops this future) cancels the call: the handler is told,
        // never dropped.
        let mut abandon = Abandon(Some(call.call.clone()));
        let (tx, rx) = oneshot::channel();
        let sink = sink(tx);
        self.engine.run_untracked(call, &sink).await;
        drop(sink);
        // The engine always answers a request it took, unless shutdown
        // cancelled its handler.
        let answer = rx.await;
        abandon.0 = None;
        let Ok(message) = answer else {
            return Err(Status::unavailable(
                "the server cancelled the call (shutting down)",
            ));
        };
        match read_answer(message)? {
            Answer::Done(result) => result,
            Answer::InProgress => Err(Status::internal(
                "unexpected IN_PROGRESS for a call without a session",
            )),
        }
    }

    /// A CANCEL from our client (flag `c`): the engine takes it as the
    /// CANCEL envelope of the session's request (only from the session's
    /// owner); it answers nothing, so the door answers an empty message at
    /// once.
    async fn cancel(
        &self,
        call: md::CallHeader,
        sink: impl FnOnce(oneshot::Sender<Bytes>) -> Sink,
    ) -> (Bytes, bool, Metadata) {
        let (tx, _unanswered) = oneshot::channel();
        let sink = sink(tx);
        self.engine
            .handle_envelope(Envelope::cancel(call.session, call.request_id), &sink)
            .await;
        (Bytes::new(), false, Metadata::new())
    }

    /// A call from our client: through the engine (history, at-most-once).
    async fn tracked(
        &self,
        call: md::CallHeader,
        method: &'static MethodInfo,
        meta: &tonic::metadata::MetadataMap,
        payload: Bytes,
        timeout: Option<Duration>,
        sink: impl Fn(oneshot::Sender<Bytes>) -> Sink,
    ) -> Result<(Bytes, bool, Metadata), Status> {
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
            instance: instance.to_owned(),
            incarnation: call.incarnation,
            deadline_us: timeout.map_or(0, |t| {
                u64::try_from(t.as_micros()).unwrap_or(u64::MAX).max(1)
            }),
            attempt: call.attempt.max(1),
            metadata: user_metadata.clone(),
            protocol: protocol as i32,
            ack_up_to: call.ack_up_to,
            want_accept: call.accept,
            idempotent: call.idempotent,
            ..Envelope::request(
                call.session,
                call.request_id,
                self.service.info().full_name,
                method.id,
                payload.clone(),
            )
        };
        let oneway = protocol == ExchangeProtocol::R;
        let mut pause = Duration::from_millis(1);
        loop {
            // Only the engine's first answer matters (ACCEPT, REPLY, ERROR
            // or IN_PROGRESS); a later one (the REPLY after ACCEPT) is
            // collected by a new request.
            let (tx, rx) = oneshot::channel();
            let sink = sink(tx);
            // The envelope is rebuilt from the metadata for a retry (rare)
            // rather than cloned for every call.
            self.engine.handle_envelope(envelope(), &sink).await;
            drop(sink);
            if oneway {
                // R: the engine never answers; the empty reply says the
                // request was taken (ACCEPT), not that it ran.
                return Ok((Bytes::new(), true, Metadata::new()));
            }
            let Ok(message) = rx.await else {
                return Err(Status::aborted(
                    "request dropped by the server: a duplicate of one already answered and acknowledged",
                ));
            };
            match read_answer(message)? {
                Answer::Done(result) => return result,
                Answer::InProgress => {
                    // A retry of a request still running (its first copy
                    // came on a connection that broke): wait for the
                    // result, which the history will then replay.
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
            }
        }
    }
}

/// Cancels a plain call whose caller went away before its answer.
struct Abandon(Option<ReplyMetadata>);

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some(call) = self.0.take() {
            tracing::debug!("plain gRPC call abandoned by its caller: cancelled");
            call.cancel();
        }
    }
}

/// The engine's first answer to a gRPC call.
pub(super) enum Answer {
    /// The call's result: a reply (and whether it is an ACCEPT) or a status.
    Done(Result<(Bytes, bool, Metadata), Status>),
    /// The request is still running (a retry of a tracked request).
    InProgress,
}

/// Reads the envelope the engine answered with.
pub(super) fn read_answer(message: Bytes) -> Result<Answer, Status> {
    let reply =
        Envelope::decode(message).map_err(|e| Status::internal(format!("engine reply: {e}")))?;
    Ok(match MessageType::try_from(reply.r#type) {
        Ok(MessageType::Reply) => Answer::Done(match reply.status {
            Some(status) => Err(Status::from(status).with_metadata(reply.metadata)),
            None => Ok((reply.payload, false, reply.metadata)),
        }),
        Ok(MessageType::Error) => Answer::Done(Err(reply
            .status
            .map_or_else(|| Status::internal("error without status"), Status::from)
            .with_metadata(reply.metadata))),
        Ok(MessageType::Accept) => Answer::Done(Ok((Bytes::new(), true, Metadata::new()))),
        Ok(MessageType::InProgress) => Answer::InProgress,
        _ => {
            return Err(Status::internal(format!(
                "unexpected engine message type {}",
                reply.r#type
            )))
        }
    })
}

/// The engine's way back to one gRPC call: its first answer.
#[derive(Clone)]
pub(super) struct Sink {
    /// Taken by the first answer.
    tx: Arc<Mutex<Option<oneshot::Sender<Bytes>>>>,
    peer: Option<SocketAddr>,
    transport: TransportKind,
    identity: Option<Arc<PeerIdentity>>,
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
        self.transport
    }

    fn identity(&self) -> Option<Arc<PeerIdentity>> {
        self.identity.clone()
    }

    fn max_message_len(&self) -> usize {
        MAX_MESSAGE_LEN
    }
}

/// One method of a service without a generated gRPC face.
#[derive(Clone)]
pub(super) struct DoorMethod {
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
pub(super) struct GenericRoute {
    pub(super) door: Door,
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
