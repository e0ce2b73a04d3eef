//! One call's exchange, driven by the calling future itself: PING until
//! the server's incarnation is known (non-idempotent calls), REQUEST copies
//! on the retransmission schedule until an answer, then (asynchronous and
//! deferred calls) polls until the REPLY.

use super::rto::{jitter_factor, PollInterval};
use super::session::{flag, Final, Session};
use super::stats::bump;
use super::Shared;
use crate::call::{Invocation, Outcome, RawResult};
use crate::envelope::{Envelope, ExchangeProtocol, MAX_METADATA_BYTES, MAX_METADATA_ENTRIES};
use crate::error::Error;
use crate::service::{Protocol, Style};
use crate::transport::DatagramSocket;
use prost::Message;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};
use tracing::Instrument;

/// Runs one invocation on the channel's session.
// Not an `async fn`, for the reason given at `Exchange::run`.
#[allow(clippy::manual_async_fn)] // deliberate: see `Exchange::run`
pub(super) fn invoke<S: DatagramSocket>(
    shared: Arc<Shared<S>>,
    inv: Invocation,
) -> impl Future<Output = Result<Outcome, Error>> + Send {
    async move {
        if shared.is_closed() {
            return Err(Error::Closed);
        }
        bump(&shared.counters.calls);
        let (entries, bytes) = (
            inv.metadata.len(),
            inv.metadata
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>(),
        );
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
async fn take_id<S: DatagramSocket>(
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
async fn wait_for_window<S: DatagramSocket>(
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
async fn one_way<S: DatagramSocket>(shared: &Shared<S>, inv: Invocation) -> Result<Outcome, Error> {
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
        Some(d) => micros_left(d, now),
        None => 0,
    };
    let (ack_up_to, incarnation, cookie) = {
        let session = shared.lock();
        // Never acknowledge the one-way request itself in its own datagram,
        // so that the server keeps its tombstone against network duplicates.
        (
            session.ack_up_to().min(id - 1),
            session.incarnation(),
            session.cookie(),
        )
    };
    let env = Envelope {
        instance: inv.instance,
        incarnation,
        deadline_us,
        metadata: inv.metadata,
        protocol: ExchangeProtocol::R as i32,
        ack_up_to,
        idempotent: inv.options.idempotent,
        cookie,
        ..Envelope::request(
            shared.session_id,
            id,
            inv.service.full_name,
            inv.method.id,
            inv.payload,
        )
    };
    let size = env.encoded_len();
    let limit = shared.config.max_datagram;
    if size > limit {
        bump(&shared.counters.too_large);
        return Err(Error::MessageTooLarge { size, limit });
    }
    let buf = env.encode_to_vec();
    bump(&shared.counters.attempts);
    shared
        .socket
        .send_to(&buf, shared.server)
        .await
        .map_err(|e| {
            bump(&shared.counters.io_errors);
            Error::Io(e)
        })?;
    tracing::trace!(
        request_id = id,
        method = inv.method.name,
        "one-way request sent"
    );
    Ok(Outcome::Sent)
}

/// Remaining budget until `deadline` in microseconds, at least 1 (0 would
/// mean "no deadline").
fn micros_left(deadline: Instant, now: Instant) -> u64 {
    u64::try_from(deadline.saturating_duration_since(now).as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// What woke a waiting call.
enum Event {
    /// The answer arrived.
    Final(Final),
    /// ACCEPT or IN_PROGRESS arrived (new since the last look).
    Progress,
    /// The server's incarnation is known (PONG, or any other message).
    PingDone,
    /// The timer fired.
    Timer,
    /// A PONG came in place of the answer: send again with the cookie.
    Retry,
    /// The channel was dropped.
    Closed,
}

/// What a call waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Ping,
    Request,
    Poll,
}

/// Where the request phase ended.
enum Step {
    Done(RawResult),
    Accepted,
}

/// The state of one call; dropping it ends the call in the session.
struct Exchange<S: DatagramSocket> {
    shared: Arc<Shared<S>>,
    id: u64,
    env: Envelope,
    buf: Vec<u8>,
    deadline: Option<Instant>,
    /// The caller's deadline, or the channel's cap on waiting.
    give_up_at: Instant,
    max_attempts: u32,
    /// REQUEST copies counted against `max_attempts` (not the polls after
    /// IN_PROGRESS).
    counted: u32,
    /// REQUEST copies sent.
    copies: u32,
    /// Progress flags already acted on.
    seen: u8,
    timer: Pin<Box<Sleep>>,
    /// When the call started (one clock reading shared by the set-up).
    started: Instant,
    /// The server's final answer reached the caller.
    answered: std::sync::atomic::AtomicBool,
}

impl<S: DatagramSocket> Drop for Exchange<S> {
    fn drop(&mut self) {
        self.shared.lock().end_call(self.id);
        let answered = self.answered.load(std::sync::atomic::Ordering::Relaxed);
        let oneway = self.env.protocol == ExchangeProtocol::R as i32;
        if answered || oneway || self.copies == 0 || self.shared.is_closed() {
            return;
        }
        // Abandoned (the caller dropped the call, or gave up) while the
        // server may still run it: tell it, best effort.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = Arc::clone(&self.shared);
        let id = self.id;
        bump(&shared.counters.cancels_sent);
        runtime.spawn(async move {
            let cancel = Envelope::cancel(shared.session_id, id);
            let mut buf = Vec::with_capacity(cancel.encoded_len());
            cancel.encode_unchecked(&mut buf);
            if let Err(error) = shared.send_datagram(&buf, Some(&cancel)).await {
                tracing::debug!(request_id = id, %error, "CANCEL not sent");
            }
        });
    }
}

impl<S: DatagramSocket> Exchange<S> {
    fn new(
        shared: Arc<Shared<S>>,
        id: u64,
        inv: Invocation,
        now: Instant,
        deadline: Option<Instant>,
    ) -> Exchange<S> {
        let give_up_at = deadline.unwrap_or_else(|| now + shared.config.max_wait);
        let max_attempts = inv
            .options
            .retries
            .unwrap_or(shared.config.default_retries)
            .saturating_add(1);
        let env = Envelope {
            instance: inv.instance,
            // Set per copy (`send_request`).
            attempt: 0,
            metadata: inv.metadata,
            protocol: ExchangeProtocol::from(inv.options.protocol) as i32,
            want_accept: matches!(inv.options.style, Style::Async | Style::Deferred),
            idempotent: inv.options.idempotent,
            ..Envelope::request(
                shared.session_id,
                id,
                inv.service.full_name,
                inv.method.id,
                inv.payload,
            )
        };
        Exchange {
            shared,
            id,
            env,
            buf: Vec::new(),
            deadline,
            give_up_at,
            max_attempts,
            counted: 0,
            copies: 0,
            seen: 0,
            timer: Box::pin(tokio::time::sleep_until(give_up_at)),
            started: now,
            answered: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The largest any copy of the request can be: the varint fields at
    /// their widest (`ack_up_to` is always below the request id), with a
    /// cookie.
    fn max_size(&mut self, now: Instant) -> usize {
        let saved = (
            self.env.attempt,
            self.env.ack_up_to,
            self.env.incarnation,
            self.env.deadline_us,
            self.env.cookie,
        );
        self.env.attempt = u32::MAX;
        self.env.ack_up_to = self.id;
        self.env.incarnation = u64::MAX;
        self.env.deadline_us = self.deadline.map_or(0, |d| micros_left(d, now));
        self.env.cookie = u64::MAX;
        let size = self.env.encoded_len();
        (
            self.env.attempt,
            self.env.ack_up_to,
            self.env.incarnation,
            self.env.deadline_us,
            self.env.cookie,
        ) = saved;
        size
    }

    // Not an `async fn`: an async fn keeps its arguments in its state
    // twice (as passed, and moved into the body; rust-lang/rust#62958),
    // and `self` is the largest part of every call's state.
    #[allow(clippy::manual_async_fn)] // deliberate: see `Exchange::run`
    fn run(
        mut self,
        style: Style,
        span: tracing::Span,
    ) -> impl Future<Output = Result<Outcome, Error>> + Send {
        async move {
            let size = self.max_size(self.started);
            let limit = self.shared.config.max_datagram;
            if size > limit {
                bump(&self.shared.counters.too_large);
                return Err(Error::MessageTooLarge { size, limit });
            }
            // Every copy fits without growing the buffer again.
            self.buf.reserve(size);
            let needs_ping = !self.env.idempotent && self.shared.lock().incarnation() == 0;
            if needs_ping {
                // Boxed: PING happens once per session (and after a server
                // restart), and its state would otherwise enlarge every call.
                if let Some(f) = Box::pin(self.ping_phase()).await? {
                    return self.finish(f).map(Outcome::Reply);
                }
            }
            // Every copy of this request carries the incarnation known now: a
            // copy that reaches a restarted server must be recognised as such
            // even if another call learned the new incarnation meanwhile.
            self.env.incarnation = self.shared.lock().incarnation();
            match self.request_phase().await? {
                Step::Done(result) => Ok(Outcome::Reply(result)),
                Step::Accepted => Ok(self.accepted(style, span)),
            }
        }
    }

    /// The rest of a call the server accepted, as the caller gets it.
    /// A plain function, not part of `run`: the future it builds would
    /// otherwise be part of the state of every call.
    fn accepted(self, style: Style, span: tracing::Span) -> Outcome {
        if style != Style::Async {
            return Outcome::Accepted(Box::pin(self.poll_phase().instrument(span)));
        }
        // Nobody will poll the rest of an asynchronous call: finish the
        // exchange in a task of its own (so the server's history entry is
        // acknowledged), and hand out its result anyway.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                handle.spawn(
                    async move {
                        let result = self.poll_phase().await;
                        if let Err(e) = &result {
                            tracing::debug!(error = %e, "asynchronous call did not complete");
                        }
                        let _ = tx.send(result);
                    }
                    .instrument(span),
                );
                Outcome::Accepted(Box::pin(
                    async move { rx.await.unwrap_or(Err(Error::Closed)) },
                ))
            }
            Err(_) => Outcome::Accepted(Box::pin(self.poll_phase().instrument(span))),
        }
    }

    /// PING until the server's incarnation is known. `Some` when the server
    /// answered the PING with an ERROR.
    async fn ping_phase(&mut self) -> Result<Option<Final>, Error> {
        if let Some(e) = self.shared.lock().entry(self.id) {
            e.pinging = true;
        }
        let mut sent = 0u32;
        loop {
            sent += 1;
            self.send_ping(sent).await?;
            let interval = self.shared.lock().rto.backoff(sent, jitter_factor());
            let until = (Instant::now() + interval).min(self.give_up_at);
            loop {
                match self.wait(Phase::Ping, until).await {
                    Event::PingDone => {
                        if let Some(e) = self.shared.lock().entry(self.id) {
                            e.pinging = false;
                        }
                        return Ok(None);
                    }
                    Event::Final(f) => return Ok(Some(f)),
                    Event::Closed => return Err(Error::Closed),
                    Event::Progress | Event::Retry => {}
                    Event::Timer => break,
                }
            }
            if Instant::now() >= self.give_up_at {
                return Err(self.timed_out());
            }
            if sent >= self.max_attempts {
                bump(&self.shared.counters.unreachable);
                return Err(Error::Unreachable {
                    may_have_run: false,
                    attempts: 0,
                });
            }
            tracing::debug!(ping = sent + 1, "no PONG; sending PING again");
        }
    }

    /// Sends REQUEST copies until REPLY/ERROR, or ACCEPT when the call wants
    /// one.
    async fn request_phase(&mut self) -> Result<Step, Error> {
        let mut polling: Option<PollInterval> = None;
        loop {
            let sent_at = self.send_request().await?;
            let interval = match &mut polling {
                Some(p) => p.next(jitter_factor()),
                None => {
                    self.counted += 1;
                    self.shared
                        .lock()
                        .rto
                        .backoff(self.counted, jitter_factor())
                }
            };
            let mut until = (sent_at + interval).min(self.give_up_at);
            loop {
                match self.wait(Phase::Request, until).await {
                    Event::Final(f) => return self.finish(f).map(Step::Done),
                    Event::Retry => {
                        tracing::debug!("server asked for its cookie; sending again");
                        self.send_request().await?;
                    }
                    Event::Progress if self.env.want_accept => return Ok(Step::Accepted),
                    Event::Progress => {
                        if polling.is_none() {
                            let mut p = PollInterval::start(&self.shared.lock().rto);
                            let next = p.next(jitter_factor());
                            tracing::debug!(poll_in = ?next, "server is running the request; polling");
                            until = (Instant::now() + next).min(self.give_up_at);
                            polling = Some(p);
                        }
                    }
                    Event::Timer => break,
                    Event::Closed => return Err(Error::Closed),
                    Event::PingDone => {}
                }
            }
            if Instant::now() >= self.give_up_at {
                return Err(self.timed_out());
            }
            if polling.is_none() && self.counted >= self.max_attempts {
                bump(&self.shared.counters.unreachable);
                tracing::debug!(attempts = self.copies, "no answer; giving up");
                return Err(Error::Unreachable {
                    may_have_run: true,
                    attempts: self.copies,
                });
            }
            tracing::debug!(attempt = self.copies + 1, "no answer; retransmitting");
        }
    }

    /// After ACCEPT: polls (REQUEST copies) until the REPLY arrives.
    async fn poll_phase(mut self) -> Result<RawResult, Error> {
        let mut interval = PollInterval::start(&self.shared.lock().rto);
        loop {
            let until = (Instant::now() + interval.next(jitter_factor())).min(self.give_up_at);
            match self.wait(Phase::Poll, until).await {
                Event::Final(f) => return self.finish(f),
                Event::Closed => return Err(Error::Closed),
                Event::Timer => {
                    if Instant::now() >= self.give_up_at {
                        return Err(self.timed_out());
                    }
                    tracing::debug!(attempt = self.copies + 1, "no result yet; polling");
                    self.send_request().await?;
                }
                Event::Retry => {
                    self.send_request().await?;
                }
                Event::Progress | Event::PingDone => {}
            }
        }
    }

    fn finish(&self, f: Final) -> Result<RawResult, Error> {
        self.answered
            .store(true, std::sync::atomic::Ordering::Relaxed);
        match f {
            Final::Reply(result) => Ok(result),
            Final::OutcomeUnknown => {
                bump(&self.shared.counters.outcome_unknown);
                Err(Error::OutcomeUnknown)
            }
        }
    }

    fn timed_out(&self) -> Error {
        bump(&self.shared.counters.timeouts);
        tracing::debug!(attempts = self.copies, "deadline passed");
        Error::DeadlineExceeded {
            may_have_run: self.copies > 0,
            attempts: self.copies,
        }
    }

    /// Sends the next copy of the request; returns when (the clock reading
    /// the copy's deadline and RTT sample are taken from).
    async fn send_request(&mut self) -> Result<Instant, Error> {
        let now = Instant::now();
        self.copies += 1;
        self.env.attempt = self.copies;
        self.env.deadline_us = self.deadline.map_or(0, |d| micros_left(d, now));
        {
            let mut session = self.shared.lock();
            self.env.ack_up_to = session.ack_up_to();
            self.env.cookie = session.cookie();
            let first = self.copies == 1;
            if let Some(e) = session.entry(self.id) {
                e.sample_from = first.then(|| now.into_std());
            }
        }
        self.buf.clear();
        // `run` checked the largest copy against the limit.
        self.env.encode_unchecked(&mut self.buf);
        let counters = &self.shared.counters;
        bump(&counters.attempts);
        if self.copies > 1 {
            bump(&counters.retransmissions);
        }
        match self.shared.send_datagram(&self.buf, Some(&self.env)).await {
            Ok(_) => Ok(now),
            Err(e) => {
                bump(&counters.io_errors);
                if self.copies == 1 {
                    self.copies = 0;
                    Err(Error::Io(e))
                } else {
                    // Like a lost datagram: the schedule sends another.
                    tracing::debug!(error = %e, "could not send a copy of the request");
                    Ok(now)
                }
            }
        }
    }

    async fn send_ping(&mut self, n: u32) -> Result<(), Error> {
        let now = Instant::now();
        let ack_up_to = {
            let mut session = self.shared.lock();
            // Many calls may start before the incarnation is known: while
            // one PING is outstanding the others only wait for its PONG (the
            // window is shorter than any jittered backoff of the sender).
            let wait = session.rto.backoff(n, 0.5);
            if !session.claim_ping(now.into_std(), wait) {
                return Ok(());
            }
            if let Some(e) = session.entry(self.id) {
                e.sample_from = (n == 1).then(|| now.into_std());
            }
            session.ack_up_to()
        };
        self.buf.clear();
        // Not kept across the send: the envelope would enlarge the state
        // of every call.
        let _ = Envelope::ping(self.shared.session_id, self.id, n, ack_up_to).encode(&mut self.buf);
        bump(&self.shared.counters.pings);
        match self.shared.send_datagram(&self.buf, None).await {
            Ok(_) => Ok(()),
            Err(e) => {
                bump(&self.shared.counters.io_errors);
                if n == 1 {
                    Err(Error::Io(e))
                } else {
                    tracing::debug!(error = %e, "could not send PING");
                    Ok(())
                }
            }
        }
    }

    /// Waits for news about this call or for `until`.
    ///
    /// When the timer fires, the call first yields once (until the runtime
    /// has polled its I/O driver) and looks again. If the process was not
    /// running for a while (preempted on a busy machine), the timer and the
    /// answer become due together; on a current-thread runtime the server
    /// may even be on this thread and not have read the request yet. The
    /// yield lets the tasks that were woken with the timer, and then the
    /// receive task woken by the answer they sent, run before this call
    /// decides that a copy was lost. It costs one scheduling round on a
    /// real timeout, nothing otherwise.
    async fn wait(&mut self, phase: Phase, until: Instant) -> Event {
        self.timer.as_mut().reset(until);
        match poll_fn(|cx| self.poll_event(cx, phase)).await {
            Event::Timer => {
                tokio::task::yield_now().await;
                // The timer has fired: this returns at once.
                poll_fn(|cx| self.poll_event(cx, phase)).await
            }
            event => event,
        }
    }

    fn poll_event(&mut self, cx: &mut Context<'_>, phase: Phase) -> Poll<Event> {
        {
            let mut session = self.shared.lock();
            let incarnation_known = session.incarnation() != 0;
            // Read under the lock: `Shared::close` sets the flag before it
            // takes the wakers under the same lock, so no wake-up is lost.
            let closed = self.shared.is_closed();
            let Some(entry) = session.entry(self.id) else {
                return Poll::Ready(Event::Closed);
            };
            if let Some(f) = entry.result.take() {
                return Poll::Ready(Event::Final(f));
            }
            if closed {
                return Poll::Ready(Event::Closed);
            }
            match phase {
                Phase::Ping => {
                    if incarnation_known || entry.flags & flag::PONG != 0 {
                        return Poll::Ready(Event::PingDone);
                    }
                }
                Phase::Request => {
                    let new = entry.flags & !self.seen & (flag::ACCEPTED | flag::IN_PROGRESS);
                    if new != 0 {
                        self.seen |= new;
                        return Poll::Ready(Event::Progress);
                    }
                }
                Phase::Poll => {}
            }
            // A PONG in place of the answer: at most one prompt copy per
            // call (a forged PONG cannot make a call send more than that).
            if phase != Phase::Ping && entry.flags & flag::RETRY != 0 {
                entry.flags &= !flag::RETRY;
                if self.seen & flag::RETRY == 0 {
                    self.seen |= flag::RETRY;
                    return Poll::Ready(Event::Retry);
                }
            }
            match &mut entry.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Event::Timer),
            Poll::Pending => Poll::Pending,
        }
    }
}
