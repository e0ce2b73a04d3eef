//! What the engine does with its decision about a request: the table
//! from each [`Decision`] to its counter and its answer (nothing, a stored
//! answer, ACCEPT or IN_PROGRESS, or an ERROR with its status), or the
//! start of the request's job.

use super::{clip, too_large, Asked, Decision, Engine, Job, ReplySink};
use crate::envelope::{self, Envelope, MessageType};
use crate::server::admit::Admission;
use crate::server::history::RegisterError;
use crate::server::stats::bump;
use crate::status::{Code, Status};
use bytes::Bytes;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

impl Engine {
    /// Carries out the decision for a request: answers it, refuses it or
    /// starts its job.
    #[allow(clippy::manual_async_fn)] // deliberate: see `handle_envelope`
    pub(super) fn act<'a, K: ReplySink>(
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
                            "too many client sessions (running, or forgotten less than a ttl ago)",
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
                received_at: arrival,
                passed: 0,
                call: crate::service::ReplyMetadata::default(),
            };
            self.start(job, sink).await;
        }
    }
}
