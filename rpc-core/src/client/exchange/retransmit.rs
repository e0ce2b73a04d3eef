//! The retransmission timer of one exchange (its timeout comes from
//! `client/rto.rs`), and the exchange's phases once the call has its
//! request id: PING until the server's incarnation is known, REQUEST
//! copies on the retransmission timer (RTO with jitter, Karn's rule) until
//! an answer, then POLL until the REPLY of an accepted call; and what ends
//! the call in the session whatever happens to the calling future (`Drop`).
//!
//! Over a reliable link (TCP: [`Link::reliable`]) nothing is lost while the
//! connection lives, so the request and the PING go out once, and the
//! timer only polls: a copy of the request leaves only once the connection
//! that carried the first one was replaced ([`Link::connection`]), because
//! an answer sent to the old connection is lost with it. (The link sends
//! waiting requests and PINGs again on the new connection by itself; the
//! polls fetch what the server finished afterwards.) The waits keep their
//! length: a PING unanswered for as long as a datagram channel would have
//! retried fails the call as unreachable, as over UDP.

use super::super::link::Link;
use super::super::rto::{jitter_factor, PollInterval};
use super::super::session::{flag, Final};
use super::super::stats::bump;
use super::super::Shared;
use super::request_envelope;
use crate::call::{Invocation, Outcome, RawResult};
use crate::envelope::deadline_us;
use crate::envelope::{Envelope, ExchangeProtocol};
use crate::error::Error;
use crate::service::Style;
use prost::Message;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};
use tracing::Instrument;

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
pub(super) struct Exchange<S: Link> {
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
    /// The connection of the link that carried the first copy (see
    /// [`Link::connection`]).
    carrier: u64,
    /// Progress flags already acted on.
    seen: u8,
    timer: Pin<Box<Sleep>>,
    /// When the call started (one clock reading shared by the set-up).
    started: Instant,
    /// The server's final answer reached the caller.
    answered: std::sync::atomic::AtomicBool,
}

impl<S: Link> Drop for Exchange<S> {
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

impl<S: Link> Exchange<S> {
    pub(super) fn new(
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
            // Set per copy (`send_request`).
            attempt: 0,
            ..request_envelope(shared.session_id, id, inv)
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
            carrier: 0,
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
        self.env
            .widest_copy_len(self.id, deadline_us(self.deadline, now))
    }

    // Not an `async fn`: an async fn keeps its arguments in its state
    // twice (as passed, and moved into the body; rust-lang/rust#62958),
    // and `self` is the largest part of every call's state.
    #[allow(clippy::manual_async_fn)] // deliberate: see `Exchange::run`
    pub(super) fn run(
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
        // Over a reliable link one PING of this call's own is enough: the
        // link sends it again on a new connection until its PONG.
        let mut pinged = false;
        loop {
            sent += 1;
            if !(pinged && self.shared.link.reliable()) {
                pinged = self.send_ping(sent).await?;
            }
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
        // Over a reliable link the timer only polls, from the first copy
        // on, and counts no attempts (see the module docs).
        let mut polling = self
            .shared
            .link
            .reliable()
            .then(|| PollInterval::start(&self.shared.lock().rto));
        let mut sent_at = self.send_request().await?;
        loop {
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
            sent_at = if self.shared.link.reliable() {
                self.poll_if_lost().await?
            } else {
                tracing::debug!(attempt = self.copies + 1, "no answer; retransmitting");
                self.send_request().await?
            };
        }
    }

    /// At a poll: sends a copy of the request, unless the link is reliable
    /// and the connection that carried the request still lives (its answer
    /// will come on it). Returns when (as `send_request`).
    async fn poll_if_lost(&mut self) -> Result<Instant, Error> {
        let link = &self.shared.link;
        if link.reliable() && link.connection() == self.carrier {
            return Ok(Instant::now());
        }
        tracing::debug!(attempt = self.copies + 1, "no result yet; polling");
        self.send_request().await
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
                    self.poll_if_lost().await?;
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
        if self.copies == 0 {
            // Read before sending: a connection replaced meanwhile then
            // shows as replaced (a poll too many, never one too few).
            self.carrier = self.shared.link.connection();
        }
        self.copies += 1;
        self.env.attempt = self.copies;
        self.env.deadline_us = deadline_us(self.deadline, now);
        {
            let mut session = self.shared.lock();
            let ack_up_to = session.ack_up_to();
            self.env.ack_up_to = session.advertise(ack_up_to);
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

    /// Sends PING number `n`, unless another call's PING is outstanding;
    /// returns whether it was sent (or given up as lost).
    async fn send_ping(&mut self, n: u32) -> Result<bool, Error> {
        let now = Instant::now();
        let ack_up_to = {
            let mut session = self.shared.lock();
            // Many calls may start before the incarnation is known: while
            // one PING is outstanding the others only wait for its PONG (the
            // window is shorter than any jittered backoff of the sender).
            let wait = session.rto.backoff(n, 0.5);
            if !session.claim_ping(now.into_std(), wait) {
                return Ok(false);
            }
            if let Some(e) = session.entry(self.id) {
                e.sample_from = (n == 1).then(|| now.into_std());
            }
            let ack_up_to = session.ack_up_to();
            session.advertise(ack_up_to)
        };
        self.buf.clear();
        // Not kept across the send: the envelope would enlarge the state
        // of every call.
        let _ = Envelope::ping(self.shared.session_id, self.id, n, ack_up_to).encode(&mut self.buf);
        bump(&self.shared.counters.pings);
        match self.shared.send_datagram(&self.buf, None).await {
            Ok(_) => Ok(true),
            Err(e) => {
                bump(&self.shared.counters.io_errors);
                if n == 1 {
                    Err(Error::Io(e))
                } else {
                    tracing::debug!(error = %e, "could not send PING");
                    Ok(true)
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
