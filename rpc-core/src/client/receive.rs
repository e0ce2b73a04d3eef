//! The channel's receive task: it drains the link in batches, routes
//! each envelope to its call ([`on_datagram`]), lets a burst's woken
//! callers queue their next requests, then sends the ACKs due and the
//! queued datagrams together ([`flush`]). ACKs wait up to
//! [`ChannelConfig::ack_delay`](super::ChannelConfig::ack_delay) for a
//! request that carries them ([`HeldAcks`]).

use super::link::{Link, OutgoingBatch};
use super::session::{Advertised, Routed};
use super::stats::bump;
use super::Shared;
use crate::envelope::{Envelope, MessageType, VERSION};
use crate::transport::RecvBatch;
use futures::future::FutureExt;
use prost::Message;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

/// Size of each receive buffer: the largest UDP payload fits.
const RECV_BUFFER: usize = 65_536;

/// Datagrams taken from the socket per receive call (the buffers take
/// `RECV_SLOTS * RECV_BUFFER` bytes per channel).
const RECV_SLOTS: usize = 16;

/// Receive batches routed in a row before the woken callers get to run.
const DRAIN_BATCHES: usize = 8;

/// Receives datagrams until the channel is dropped (the task is aborted).
///
/// Each batch from the socket is routed (waking the calls it answers);
/// then, if more than one call was woken, the task steps back once to the
/// end of the run queue so that the woken callers run first and queue
/// their next REQUESTs (see [`Shared::send_datagram`]); finally it sends
/// the burst's ACKs and the queued datagrams together, and reads again.
/// (A lone woken caller sends its next REQUEST itself: one system call
/// either way, without the extra scheduling round.)
pub(super) async fn receive_loop<S: Link>(shared: Arc<Shared<S>>) {
    // Transports with messages above a UDP datagram get one slot of
    // `max_datagram` bytes, UDP many datagram-sized slots. (TCP hands its
    // frames over whole, `RecvBatch::push_frame`, and never writes the
    // slot, so its pages are never touched.)
    let size = shared
        .config
        .max_datagram
        .saturating_add(1)
        .min(u32::MAX as usize);
    let mut batch = if size > RECV_BUFFER {
        RecvBatch::new(1, size)
    } else {
        RecvBatch::new(RECV_SLOTS, RECV_BUFFER)
    };
    let mut acks: Vec<u64> = Vec::new();
    let mut held = HeldAcks::default();
    let mut sending = OutgoingBatch::default();
    let mut errors = 0u32;
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    loop {
        let received = if held.ids.is_empty() {
            Some(shared.link.recv_batch(&mut batch).await)
        } else {
            tokio::select! {
                biased;
                received = shared.link.recv_batch(&mut batch) => Some(received),
                () = &mut timer => None,
            }
        };
        let Some(received) = received else {
            // The held ACKs are due: those no REQUEST or PING carried go now.
            held.take_due(&shared);
            flush(&shared, &mut held.due, &mut sending).await;
            continue;
        };
        match received {
            Ok(_) => {
                errors = 0;
                shared.outbox().flush_due = true;
                let mut woke = 0usize;
                // Route everything already queued (a bounded number of
                // batches) before the woken callers run: a caller whose
                // timer fired at the same time (after a preemption) must
                // find its answer routed, not retransmit.
                for round in 1..=DRAIN_BATCHES {
                    // One clock reading per batch (RTT samples of a batch
                    // differ by less than its routing takes).
                    let now = Instant::now();
                    let mut note = |routed: RoutedDatagram| {
                        woke += usize::from(routed.woke);
                        acks.extend(routed.ack);
                    };
                    for (bytes, from) in batch.copied() {
                        note(on_datagram(&shared, bytes, from, now));
                    }
                    // Whole frames from a stream: the envelopes share their
                    // bytes (the payload is not copied out).
                    for (frame, from) in batch.take_frames() {
                        note(on_datagram(&shared, frame, from, now));
                    }
                    if round == DRAIN_BATCHES {
                        break;
                    }
                    // `recv_batch` is cancel safe: polling it once loses nothing.
                    match shared.link.recv_batch(&mut batch).now_or_never() {
                        Some(Ok(_)) => {}
                        _ => break,
                    }
                }
                batch.clear();
                // One woken caller sends at most one REQUEST: it goes out as
                // cheaply on its own (no batch to wait for), so only a burst
                // makes the task step back.
                if woke > 1 {
                    requeue().await;
                } else {
                    shared.outbox().flush_due = false;
                }
                if !acks.is_empty() && !shared.config.ack_delay.is_zero() {
                    held.hold(&shared, &mut acks, timer.as_mut());
                }
                flush(&shared, &mut acks, &mut sending).await;
            }
            Err(e) => {
                bump(&shared.counters.io_errors);
                errors += 1;
                tracing::debug!(error = %e, "client receive error");
                flush(&shared, &mut acks, &mut sending).await;
                if errors > 8 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                } else {
                    tokio::task::yield_now().await;
                }
            }
        }
    }
}

/// ACKs held back for a REQUEST or PING that carries them
/// ([`ChannelConfig::ack_delay`](super::ChannelConfig::ack_delay)); the receive loop's timer says when the
/// oldest is due.
#[derive(Debug, Default)]
struct HeldAcks {
    /// Each answer's id, with what had been advertised when it arrived:
    /// only a message sent after it covers it (a message sent before
    /// crossed the answer, or was lost if the server answered again).
    ids: Vec<(u64, Advertised)>,
    /// The ids due now, for [`flush`].
    due: Vec<u64>,
}

impl HeldAcks {
    /// Takes the burst's ACKs; arms `timer` if none were held.
    fn hold<S>(
        &mut self,
        shared: &Shared<S>,
        acks: &mut Vec<u64>,
        timer: std::pin::Pin<&mut tokio::time::Sleep>,
    ) {
        let was_empty = self.ids.is_empty();
        let now = shared.lock().advertised();
        self.ids.extend(acks.drain(..).map(|id| (id, now)));
        if was_empty && !self.ids.is_empty() {
            timer.reset(tokio::time::Instant::now() + shared.config.ack_delay);
        }
    }

    /// Moves the held ACKs that no later REQUEST or PING carried to
    /// `self.due` (the others are counted as piggybacked).
    fn take_due<S>(&mut self, shared: &Shared<S>) {
        let now = shared.lock().advertised();
        let before = self.ids.len();
        self.due.clear();
        self.due.extend(
            self.ids
                .drain(..)
                .filter(|&(id, then)| !now.covers_since(then, id))
                .map(|(id, _)| id),
        );
        let carried = (before - self.due.len()) as u64;
        if carried > 0 {
            shared
                .counters
                .acks_piggybacked
                .fetch_add(carried, Ordering::Relaxed);
        }
    }
}

/// Returns `Pending` once after waking its own task: the task goes to the
/// end of the run queue, behind the tasks it woke, without a trip through
/// the I/O driver (unlike [`tokio::task::yield_now`], which defers the
/// wake-up until the driver was polled).
async fn requeue() {
    let mut done = false;
    poll_fn(|cx| {
        if done {
            return Poll::Ready(());
        }
        done = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}

/// Ends the burst: the ACKs due (coalesced, see the module docs), then
/// every datagram the callers queued meanwhile, in one batch.
async fn flush<S: Link>(shared: &Shared<S>, acks: &mut Vec<u64>, sending: &mut OutgoingBatch) {
    sending.clear();
    if !acks.is_empty() {
        let ack_up_to = shared.lock().ack_up_to();
        let mut own = 0usize;
        for &request_id in acks.iter().filter(|&&id| id > ack_up_to) {
            push_ack(shared, sending, request_id, ack_up_to);
            own += 1;
        }
        if own == 0 {
            if let Some(&largest) = acks.iter().max() {
                push_ack(shared, sending, largest, ack_up_to);
                own = 1;
            }
        }
        let coalesced = acks.len().saturating_sub(own) as u64;
        shared
            .counters
            .acks_coalesced
            .fetch_add(coalesced, Ordering::Relaxed);
        acks.clear();
    }
    {
        let mut outbox = shared.outbox();
        outbox.flush_due = false;
        sending.append(&mut outbox.batch);
    }
    if sending.is_empty() {
        return;
    }
    let report = shared.link.send_batch(sending).await;
    if report.failed > 0 {
        shared
            .counters
            .io_errors
            .fetch_add(report.failed as u64, Ordering::Relaxed);
        if let Some(e) = &report.error {
            tracing::debug!(error = %e, failed = report.failed, "could not send some datagrams of a burst");
        }
    }
}

/// Queues an ACK of `request_id` carrying `ack_up_to`.
fn push_ack<S>(shared: &Shared<S>, sending: &mut OutgoingBatch, request_id: u64, ack_up_to: u64) {
    let ack = Envelope::ack(shared.session_id, request_id, ack_up_to);
    // Encoding into a Vec cannot run out of room.
    let _ = sending.push_with(shared.server, |buf| ack.encode(buf));
    bump(&shared.counters.acks_sent);
}

/// What routing one datagram asks of the receive task.
#[derive(Debug, Default)]
struct RoutedDatagram {
    /// A call was woken.
    woke: bool,
    /// Send an ACK for this request id.
    ack: Option<u64>,
}

/// Checks and routes one datagram.
fn on_datagram<S, B: bytes::Buf>(
    shared: &Shared<S>,
    bytes: B,
    from: SocketAddr,
    now: Instant,
) -> RoutedDatagram {
    let counters = &shared.counters;
    if !shared.is_server(from) {
        bump(&counters.foreign_drops);
        tracing::debug!(%from, "dropped datagram from a foreign address");
        return RoutedDatagram::default();
    }
    let len = bytes.remaining();
    let env = match Envelope::decode(bytes) {
        Ok(env) => env,
        Err(e) => {
            bump(&counters.malformed_drops);
            tracing::debug!(len, error = %e, "dropped undecodable datagram");
            return RoutedDatagram::default();
        }
    };
    if env.version != VERSION {
        bump(&counters.malformed_drops);
        tracing::debug!(version = env.version, "dropped datagram of another version");
        return RoutedDatagram::default();
    }
    let kind = match answer_kind(env.r#type) {
        Some(k) => k,
        None => {
            bump(&counters.malformed_drops);
            tracing::debug!(
                r#type = env.r#type,
                "dropped datagram of a type a client does not take"
            );
            return RoutedDatagram::default();
        }
    };
    if env.session_id != shared.session_id {
        bump(&counters.unknown_replies);
        tracing::debug!(
            session_id = env.session_id,
            "dropped datagram for another session"
        );
        return RoutedDatagram::default();
    }
    let id = env.request_id;
    let delivery = shared.lock().deliver(env, kind, now);
    match delivery.kind {
        Routed::Completed => bump(&counters.replies),
        Routed::Accepted => bump(&counters.accepts),
        Routed::InProgress => bump(&counters.in_progress),
        Routed::Pong => {}
        Routed::Late => {
            bump(&counters.late_replies);
            tracing::debug!(request_id = id, ?kind, "late answer for a completed call");
        }
        Routed::Unknown => {
            bump(&counters.unknown_replies);
            tracing::debug!(request_id = id, ?kind, "answer for an unknown request id");
        }
    }
    let woke = delivery.waker.is_some() || !delivery.more_wakers.is_empty();
    if let Some(w) = delivery.waker {
        w.wake();
    }
    for w in delivery.more_wakers {
        w.wake();
    }
    RoutedDatagram {
        woke,
        ack: delivery.ack,
    }
}

/// The type of a message a client takes (REPLY, ERROR, ACCEPT,
/// IN_PROGRESS, PONG); `None` for any other (a request, a control message,
/// an unknown number).
pub(crate) fn answer_kind(r#type: i32) -> Option<MessageType> {
    match MessageType::try_from(r#type) {
        Ok(
            k @ (MessageType::Reply
            | MessageType::Error
            | MessageType::Accept
            | MessageType::InProgress
            | MessageType::Pong),
        ) => Some(k),
        _ => None,
    }
}
