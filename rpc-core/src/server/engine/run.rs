//! Running a request's job: a handler slot or a waiting slot (or a
//! refusal), the handler's first poll on the receiving task, the task that
//! finishes it, and the answer it leaves in the history.

#[cfg(feature = "grpc")]
use super::Untracked;
use super::{too_large, Ending, Engine, Handler, Job, ReplySink};
use crate::envelope::{self, MessageType};
use crate::intercept::trace::InContext;
use crate::server::stats::bump;
use crate::service::{CallContext, Metadata, ReplyMetadata};
use crate::status::Status;
use bytes::Bytes;
use futures::FutureExt;
use prost::Message;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

/// A log event at `level` about `job`: its method, session and request id,
/// then the rest.
macro_rules! job_event {
    ($level:ident, $job:expr, $($rest:tt)+) => {
        tracing::$level!(
            method = $job.method.name,
            session = $job.session,
            request_id = $job.request_id,
            $($rest)+
        )
    };
}

impl Engine {
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
                received_at: call.received_at,
                passed: 0,
                call: call.call,
            };
            self.start(job, sink).await;
        }
    }

    /// Takes a concurrency permit (or a waiting slot), sends ACCEPT when
    /// asked, and runs the job: inline when a permit is free, else in a
    /// task that waits for one.
    #[allow(clippy::manual_async_fn)] // deliberate: see `handle_envelope`
    pub(super) fn start<'a, K: ReplySink>(
        self: &'a Arc<Self>,
        job: Job,
        sink: &'a K,
    ) -> impl Future<Output = ()> + 'a {
        async move {
            let permits = Arc::clone(self.permits_for(&job));
            let (permit, reservation) = match Arc::clone(&permits).try_acquire_owned() {
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
                    let running = self.register_running(&job);
                    self.spawn_tracked(async move {
                        let _running = running;
                        let mut job = job;
                        let acquired = permits.acquire_owned().await;
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
                        let (ending, metadata) = match engine.begin(&mut job, &sink) {
                            Ok((handler, metadata)) => (catch(handler).await, metadata.take()),
                            Err(ending) => (ending, Metadata::new()),
                        };
                        drop(permit);
                        engine.finish(&job, ending, metadata, &sink).await;
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
            let (mut handler, metadata) = match self.begin(&mut job, sink) {
                Ok(h) => h,
                Err(ending) => {
                    drop(permit);
                    self.finish(&job, ending, Metadata::new(), sink).await;
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
                    let running = self.register_running(&job);
                    self.spawn_tracked(async move {
                        let _running = running;
                        let ending = catch(handler).await;
                        drop(permit);
                        engine.finish(&job, ending, metadata.take(), &sink).await;
                    });
                    return;
                }
            };
            drop(permit);
            self.finish(&job, ending, metadata.take(), sink).await;
        }
    }

    /// Checks the deadline and creates the handler's future (with its span).
    fn begin<K: ReplySink>(
        &self,
        job: &mut Job,
        sink: &K,
    ) -> Result<(Handler, ReplyMetadata), Ending> {
        if job.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Ending::Expired);
        }
        let mut ctx = CallContext {
            service: job.service.info().full_name,
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
            received_at: job.received_at,
            reply_metadata: job.call.clone(),
            trace: None,
        };
        let reply_metadata = ctx.reply_metadata.clone();
        if !self.interceptors.is_empty() {
            let (passed, refusal) = self.interceptors.before(&mut ctx);
            job.passed = passed;
            if let Some(mut status) = refusal {
                // What the interceptors put in the answer's metadata before
                // one refused goes with the refusal.
                let mut metadata = reply_metadata.take();
                metadata.extend(&status.take_metadata());
                return Err(Ending::Refused(status.with_metadata(metadata)));
            }
        }
        bump(&self.counters.executions);
        let trace = ctx.trace;
        let span = tracing::debug_span!(
            "rpc_call",
            service = %job.service.info().full_name,
            method = %job.method.name,
            session = job.session,
            request_id = job.request_id,
            attempt = job.attempt,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            parent_id = tracing::field::Empty,
        );
        if let Some(t) = trace.filter(|_| !span.is_disabled()) {
            span.record(
                "trace_id",
                tracing::field::display(format_args!("{:032x}", t.trace_id)),
            );
            span.record(
                "span_id",
                tracing::field::display(format_args!("{:016x}", t.span_id)),
            );
            span.record(
                "parent_id",
                tracing::field::display(format_args!("{:016x}", t.parent_id)),
            );
        }
        let call = {
            let _entered = span.enter();
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                let payload = std::mem::take(&mut job.payload);
                match trace {
                    // The synchronous part of the handler runs in the call's
                    // trace context too.
                    Some(t) => t.sync_scope(|| job.service.call(job.method.id, ctx, payload)),
                    None => job.service.call(job.method.id, ctx, payload),
                }
            }))
        };
        match call {
            Ok(future) => {
                let fut = InContext {
                    context: trace,
                    future,
                };
                Ok((fut.instrument(span), reply_metadata))
            }
            Err(_) => Err(Ending::Panicked),
        }
    }

    /// Encodes the outcome with the handler's reply `metadata`, stores it
    /// in the history and sends it.
    async fn finish<K: ReplySink>(
        &self,
        job: &Job,
        ending: Ending,
        mut metadata: Metadata,
        sink: &K,
    ) {
        let ending = match ending {
            // A failure's own metadata joins what the handler set.
            Ending::Done(Err(mut status)) => {
                metadata.extend(&status.take_metadata());
                Ending::Done(Err(status))
            }
            Ending::Refused(mut status) => {
                metadata.extend(&status.take_metadata());
                Ending::Refused(status)
            }
            other => other,
        };
        if job.passed > 0 {
            self.intercept_after(job, &ending, &mut metadata, sink);
        }
        let (ty, status, payload) = match ending {
            Ending::Refused(status) => {
                bump(&self.counters.intercept_refused);
                job_event!(debug, job, %status, "refused by an interceptor");
                (MessageType::Error, Some(status), Bytes::new())
            }
            Ending::Done(Ok(payload)) => (MessageType::Reply, None, payload),
            // Refused before the method's code ran (an undecodable
            // payload): ERROR says it did not run.
            Ending::Done(Err(status)) if status.is_refusal() => {
                (MessageType::Error, Some(status), Bytes::new())
            }
            Ending::Done(Err(status)) => (MessageType::Reply, Some(status), Bytes::new()),
            Ending::Panicked => {
                bump(&self.counters.handler_panics);
                job_event!(warn, job, "handler panicked");
                (
                    MessageType::Reply,
                    Some(Status::internal("handler panicked")),
                    Bytes::new(),
                )
            }
            Ending::Expired => {
                bump(&self.counters.deadline_exceeded);
                job_event!(debug, job, "deadline passed before the request ran");
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
        if !metadata.is_empty() {
            if envelope::metadata_within_caps(&metadata) {
                env.metadata = metadata;
            } else {
                // The caller would refuse the whole answer: say why instead.
                bump(&self.counters.too_large_replies);
                tracing::warn!(
                    method = job.method.name,
                    entries = metadata.len(),
                    "reply metadata over its caps (64 entries, 16 KiB)"
                );
                env.r#type = MessageType::Reply as i32;
                env.payload = Bytes::new();
                env.status = Some(Box::new(envelope::WireStatus::from(&Status::internal(
                    "reply metadata over its caps (64 entries, 16 KiB)",
                ))));
            }
        }
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
            env.status = Some(Box::new(envelope::WireStatus::from(&too_large(len, limit))));
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

    /// Runs the `after` of the interceptors whose `before` passed.
    fn intercept_after<K: ReplySink>(
        &self,
        job: &Job,
        ending: &Ending,
        metadata: &mut Metadata,
        sink: &K,
    ) {
        let panicked;
        let (status, ran) = match ending {
            Ending::Done(Ok(_)) => (None, true),
            Ending::Done(Err(status)) => (Some(status), true),
            Ending::Refused(status) => (Some(status), false),
            Ending::Panicked => {
                panicked = Status::internal("handler panicked");
                (Some(&panicked), true)
            }
            // Never passed an interceptor (checked before them).
            Ending::Expired => return,
        };
        let mut call = crate::intercept::Completed {
            service: job.service.info(),
            method: job.method,
            transport: sink.transport(),
            peer: sink.peer(),
            received_at: job.received_at,
            status,
            ran,
            reply_metadata: metadata,
        };
        self.interceptors.after(job.passed, &mut call);
    }

    /// Spawns a handler task that shutdown can wait for and cancel.
    pub(super) fn spawn_tracked<F: Future<Output = ()> + Send + 'static>(
        self: &Arc<Self>,
        work: F,
    ) {
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
