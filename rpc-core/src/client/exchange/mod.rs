//! One call's exchange, driven by the calling future itself: PING until
//! the server's incarnation is known (non-idempotent calls), REQUEST copies
//! on the retransmission schedule until an answer, then (asynchronous and
//! deferred calls) polls until the REPLY.

use super::link::{Link, Outgoing};
use super::session::Session;
use super::stats::bump;
use super::Shared;
use crate::call::{Invocation, Outcome};
use crate::envelope::{Envelope, ExchangeProtocol, MAX_METADATA_BYTES, MAX_METADATA_ENTRIES};
use crate::error::Error;
use crate::service::{Protocol, Style};
use prost::Message;
use std::future::{poll_fn, Future};
use std::sync::Arc;
use std::task::Poll;
use tokio::time::Instant;
use tracing::Instrument;

mod retransmit;

use retransmit::Exchange;

/// Runs one invocation on the channel's session.
// Not an `async fn`, for the reason given at `Exchange::run`.
#[allow(clippy::manual_async_fn)] // deliberate: see `Exchange::run`
pub(super) fn invoke<S: Link>(
    shared: Arc<Shared<S>>,
    inv: Invocation,
) -> impl Future<Output = Result<Outcome, Error>> + Send {
    async move {
        if shared.is_closed() {
            return Err(Error::Closed);
        }
        bump(&shared.counters.calls);
        let (entries, bytes) = (inv.metadata.len(), inv.metadata.text_len());
        if entries > MAX_METADATA_ENTRIES || bytes > MAX_METADATA_BYTES {
            return Err(Error::InvalidCall(format!(
                "{entries} metadata entries of {bytes} bytes: at most {MAX_METADATA_ENTRIES} entries and {MAX_METADATA_BYTES} bytes"
            )));
        }
        let style = inv.options.style;
        let protocol = inv.options.protocol;
        match (style, protocol) {
            (Style::OneWay, Protocol::R) => return one_way(&shared, inv).await,
            (Style::OneWay, _) => {
                return Err(Error::InvalidCall(format!(
                    "a one-way call uses protocol R, not {protocol:?}"
                )));
            }
            (_, Protocol::R) => {
                return Err(Error::InvalidCall(format!(
                    "protocol R has no reply: a {style:?} call needs RR or RRA"
                )));
            }
            _ => {}
        }
        let (now, deadline, give_up_at) = start_clock(&shared, &inv)?;
        let rra = protocol == Protocol::RRA;
        let id = take_id(&shared, give_up_at, |session, queued| {
            session.try_start_call(rra, queued)
        })
        .await?;
        let span = tracing::debug_span!(
            "rpc_call",
            service = inv.service.full_name,
            method = inv.method.name,
            request_id = id,
            ?style,
            ?protocol,
        );
        // From here on the exchange owns the pending entry: whatever happens
        // (including this future being dropped), its Drop ends the call.
        let exchange = Exchange::new(shared, id, inv, now, deadline);
        exchange.run(style, span.clone()).instrument(span).await
    }
}

/// Takes the next request id with `start` (one of the session's
/// `try_start_*`) once the send window allows it (see
/// `ChannelConfig::max_window`).
///
/// When the window is open this is one lock and one comparison, as before
/// there was a window. Otherwise the call waits, in arrival order, until
/// older calls finish (the session wakes one waiter per advance of
/// `ack_up_to`, which passes the turn on while there is room), the channel
/// closes, or `give_up_at` passes.
///
/// # Errors
/// [`Error::DeadlineExceeded`] (nothing sent) at `give_up_at`,
/// [`Error::Closed`] when the channel closes meanwhile.
///
/// # Cancel safety
/// Dropping the future while it waits leaves nothing behind: no id was
/// taken, the waiter count is restored, and a wake-up it received is passed
/// to the next waiter (`Notified` forwards it when dropped).
async fn take_id<S: Link>(
    shared: &Shared<S>,
    give_up_at: Instant,
    mut start: impl FnMut(&mut Session, bool) -> Option<u64> + Send,
) -> Result<u64, Error> {
    let notify = {
        let mut session = shared.lock();
        if let Some(id) = start(&mut session, false) {
            return Ok(id);
        }
        session.wait_for_window()
    };
    // The waiting state (timer, wake-up registration) lives in its own
    // allocation, so the calling future stays as small as without a window.
    Box::pin(wait_for_window(shared, give_up_at, notify, start)).await
}

/// The slow path of [`take_id`]: the session counts this call as a window
/// waiter already; waits for a turn.
async fn wait_for_window<S: Link>(
    shared: &Shared<S>,
    give_up_at: Instant,
    notify: Arc<tokio::sync::Notify>,
    mut start: impl FnMut(&mut Session, bool) -> Option<u64> + Send,
) -> Result<u64, Error> {
    let mut waiting = WindowWait {
        shared,
        done: false,
    };
    bump(&shared.counters.window_waits);
    tracing::debug!("send window full; waiting for older calls to finish");
    let mut timer = std::pin::pin!(tokio::time::sleep_until(give_up_at));
    loop {
        let mut notified = std::pin::pin!(notify.notified());
        {
            let mut session = shared.lock();
            // Read under the lock: `Shared::close` sets the flag before it
            // wakes the waiters under the same lock.
            if shared.is_closed() {
                return Err(Error::Closed);
            }
            // Registered before looking, under the lock every wake-up is
            // sent under: none is lost.
            notified.as_mut().enable();
            if let Some(id) = start(&mut session, true) {
                waiting.done = true;
                session.stop_waiting_for_window();
                session.pass_window_on();
                return Ok(id);
            }
        }
        let woken = poll_fn(|cx| {
            if notified.as_mut().poll(cx).is_ready() {
                return Poll::Ready(true);
            }
            timer.as_mut().poll(cx).map(|()| false)
        })
        .await;
        if !woken {
            bump(&shared.counters.timeouts);
            tracing::debug!("deadline passed while waiting for the send window");
            return Err(Error::DeadlineExceeded {
                may_have_run: false,
                attempts: 0,
            });
        }
    }
}

/// A call waiting for the send window; dropping it (the call got its id,
/// gave up, or was dropped) takes it off the session's waiter count.
struct WindowWait<'a, S> {
    shared: &'a Shared<S>,
    /// Already taken off (under the lock that handed out the id).
    done: bool,
}

impl<S> Drop for WindowWait<'_, S> {
    fn drop(&mut self) {
        if !self.done {
            self.shared.lock().stop_waiting_for_window();
        }
    }
}

/// A call's start: now, its deadline, and when it stops waiting (the
/// deadline, or the channel's `max_wait`).
///
/// # Errors
/// [`Error::DeadlineExceeded`] (nothing sent) when the deadline has passed.
fn start_clock<S>(
    shared: &Shared<S>,
    inv: &Invocation,
) -> Result<(Instant, Option<Instant>, Instant), Error> {
    let now = Instant::now();
    let deadline = inv.options.deadline.map(Instant::from_std);
    if deadline.is_some_and(|d| d <= now) {
        bump(&shared.counters.timeouts);
        return Err(Error::DeadlineExceeded {
            may_have_run: false,
            attempts: 0,
        });
    }
    let give_up_at = deadline.unwrap_or_else(|| now + shared.config.max_wait);
    Ok((now, deadline, give_up_at))
}

/// Protocol R: one datagram, no pending entry, finished at once.
async fn one_way<S: Link>(shared: &Shared<S>, inv: Invocation) -> Result<Outcome, Error> {
    let (_, deadline, give_up_at) = start_clock(shared, &inv)?;
    // A one-way request takes an id (and a tombstone in the server's
    // history) like any other: it waits for the window too.
    let id = take_id(shared, give_up_at, |session, queued| {
        session.try_start_one_way(queued)
    })
    .await?;
    let now = Instant::now();
    let deadline_us = match deadline {
        Some(d) if d <= now => {
            bump(&shared.counters.timeouts);
            return Err(Error::DeadlineExceeded {
                may_have_run: false,
                attempts: 0,
            });
        }
        Some(_) => crate::envelope::deadline_us(deadline, now),
        None => 0,
    };
    let (ack_up_to, incarnation, cookie) = {
        let mut session = shared.lock();
        // Never acknowledge the one-way request itself in its own datagram,
        // so that the server keeps its tombstone against network duplicates.
        let ack_up_to = session.ack_up_to().min(id - 1);
        (
            session.advertise(ack_up_to),
            session.incarnation(),
            session.cookie(),
        )
    };
    let method = inv.method.name;
    let env = Envelope {
        incarnation,
        deadline_us,
        ack_up_to,
        cookie,
        ..request_envelope(shared.session_id, id, inv)
    };
    let size = env.encoded_len();
    let limit = shared.config.max_datagram;
    if size > limit {
        bump(&shared.counters.too_large);
        return Err(Error::MessageTooLarge { size, limit });
    }
    let buf = env.encode_to_vec();
    bump(&shared.counters.attempts);
    let message = Outgoing {
        bytes: &buf,
        to: shared.server,
        envelope: Some(&env),
    };
    shared.link.send(message).await.map_err(|e| {
        bump(&shared.counters.io_errors);
        Error::Io(e)
    })?;
    tracing::trace!(request_id = id, method, "one-way request sent");
    Ok(Outcome::Sent)
}

/// The REQUEST of `inv`, numbered `id`, with what every copy of it
/// carries (the exchange sets the rest per copy).
fn request_envelope(session_id: u64, id: u64, inv: Invocation) -> Envelope {
    Envelope {
        instance: inv.instance,
        metadata: inv.metadata,
        protocol: ExchangeProtocol::from(inv.options.protocol) as i32,
        want_accept: matches!(inv.options.style, Style::Async | Style::Deferred),
        idempotent: inv.options.idempotent,
        ..Envelope::request(
            session_id,
            id,
            inv.service.full_name,
            inv.method.id,
            inv.payload,
        )
    }
}
