//! One call of a [`GrpcChannel`](super::GrpcChannel): its requests (the
//! `rpc-call` header, the deadline as `grpc-timeout`), sent again with the
//! same request id while the connection fails and retries are left, and
//! what the answer means (a reply, a status, an ACCEPT, the deadline).

use super::cancel::{Abandon, Progress};
use super::{md, Inner, PEER_FOREIGN, PEER_OURS, PEER_UNKNOWN};
use crate::call::{Invocation, RawReply, RawResult};
use crate::envelope::SERVER_RESTARTED;
use crate::error::Error;
use crate::grpc::codec::BytesCodec;
use crate::grpc::status::from_tonic;
use crate::service::Protocol;
use bytes::Bytes;
use std::error::Error as _;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataMap;

/// A transport failure this close to the deadline is the deadline.
const DEADLINE_SLACK: Duration = Duration::from_millis(20);

/// Marks a request id as ended (for the acknowledgement floor) when
/// dropped, however the call ends.
pub(super) struct Ended {
    pub(super) inner: Arc<Inner>,
    pub(super) id: u64,
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
pub(super) struct Answer {
    pub(super) result: RawResult,
    pub(super) accepted: bool,
    /// The attempt number of the last copy sent.
    pub(super) attempt: u32,
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

/// One call in flight: what every copy of its request carries.
pub(super) struct Call {
    pub(super) inner: Arc<Inner>,
    pub(super) invocation: Invocation,
    pub(super) path: PathAndQuery,
    pub(super) metadata: MetadataMap,
    pub(super) request_id: u64,
    pub(super) deadline: Option<Instant>,
    /// The server incarnation known when the call began, named by every
    /// copy: a retry that reaches a restarted server must be recognised as
    /// meant for the old one, even if another call learned the new one.
    pub(super) incarnation: u64,
}

/// `grpc-timeout` of `left` on `request`.
pub(super) fn put_timeout(request: &mut tonic::Request<Bytes>, left: Duration) {
    if let Ok(v) = tonic::metadata::MetadataValue::try_from(md::format_timeout(left)) {
        request.metadata_mut().insert(md::GRPC_TIMEOUT, v);
    }
}

/// One unary gRPC request of `path` on the channel, within the message
/// limits.
pub(super) fn unary(
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
    pub(super) async fn exchange_or_cancel(
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
    pub(super) async fn exchange(
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
                        && ours.message() != crate::grpc::server::NOT_RUN
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
