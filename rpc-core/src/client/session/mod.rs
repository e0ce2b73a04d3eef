//! The state of one client session: the request-id counter, the map of
//! pending calls, the acknowledgement low-water mark, the server's last
//! known incarnation and the round-trip estimator.
//!
//! It lives behind one mutex shared by the calling futures and the receive
//! task. Everything here is synchronous and never blocks: the receive task
//! routes a decoded envelope with [`Session::deliver`] and gets back what to
//! do outside the lock (wake a call, send an ACK).
//!
//! Files: this one (one server's session: round trips, PINGs, the send
//! window), `calls.rs` (ids, pending calls, the low-water mark, recent RRA
//! ids: [`Calls`], shared with the multicast client) and `peer.rs` (a
//! server's incarnation and cookie: [`Peer`]).

use super::rto::RtoEstimator;
use crate::call::{RawReply, RawResult};
use crate::envelope::{Envelope, MessageType, SERVER_RESTARTED};
use crate::status::Status;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Progress flags of a pending call.
pub(crate) mod flag {
    /// An ACCEPT arrived.
    pub(crate) const ACCEPTED: u8 = 1;
    /// An IN_PROGRESS arrived.
    pub(crate) const IN_PROGRESS: u8 = 2;
    /// A PONG arrived for this call's PING.
    pub(crate) const PONG: u8 = 4;
    /// A PONG arrived in place of this request's answer (its address was
    /// not verified yet, and the answer was too big): send it again, now
    /// with the cookie.
    pub(crate) const RETRY: u8 = 8;
}

/// How a call ended, as seen by the receive task.
#[derive(Debug, Clone)]
pub(crate) enum Final {
    /// A REPLY or ERROR: the server's answer.
    Reply(RawResult),
    /// An ERROR saying "outcome unknown: server restarted".
    OutcomeUnknown,
}

/// One call in flight (whether it uses RRA and whether it finished are
/// kept by [`Calls`]).
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The call is waiting for a PONG.
    pub(crate) pinging: bool,
    /// Progress flags ([`flag`]).
    pub(crate) flags: u8,
    /// The answer, once it arrived.
    pub(crate) result: Option<Final>,
    /// When the only copy of the current exchange (PING or REQUEST) was
    /// sent; `None` once a second copy went out (Karn) or a sample was
    /// taken.
    pub(crate) sample_from: Option<Instant>,
    /// The calling future, to wake on news.
    pub(crate) waker: Option<Waker>,
}

/// What the receive task should do after routing one datagram.
#[derive(Debug, Default)]
pub(crate) struct Delivery {
    /// How the datagram was classified.
    pub(crate) kind: Routed,
    /// The call to wake.
    pub(crate) waker: Option<Waker>,
    /// Calls to wake because the server's incarnation became known.
    pub(crate) more_wakers: Vec<Waker>,
    /// Send an ACK for this request id (with the low-water mark current
    /// when it is sent).
    pub(crate) ack: Option<u64>,
}

/// Classification of a received datagram.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Routed {
    /// Completed a pending call (REPLY or ERROR).
    Completed,
    /// ACCEPT for a pending call.
    Accepted,
    /// IN_PROGRESS for a pending call.
    InProgress,
    /// PONG for a pending call.
    Pong,
    /// For a call that had already completed.
    Late,
    /// For an id this session never used.
    #[default]
    Unknown,
}

/// The `ack_up_to` that REQUESTs and PINGs carried
/// ([`Session::advertise`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Advertised {
    /// Messages sent with an `ack_up_to`.
    pub(crate) sent: u64,
    /// The largest `ack_up_to` among them.
    pub(crate) up_to: u64,
}

impl Advertised {
    /// Whether a message sent after `earlier` carried an `ack_up_to` of at
    /// least `id` (`ack_up_to` only grows, so the largest is the latest).
    pub(crate) fn covers_since(&self, earlier: Advertised, id: u64) -> bool {
        self.sent > earlier.sent && self.up_to >= id
    }
}

/// The session state.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// Ids, pending calls, the low-water mark, recent RRA ids.
    calls: Calls<Entry>,
    /// The server's incarnation and its address-validation cookie for this
    /// client.
    server: Peer,
    /// Until when a PING sent by some call is still expected to be
    /// answered: other calls waiting for the incarnation do not send one.
    ping_window: Option<Instant>,
    /// The send window: a new id N is handed out only while
    /// `N - ack_up_to <= window` (0: unlimited).
    window: u64,
    /// Calls waiting for the window to open.
    window_waiters: usize,
    /// Woken (all waiters) when `ack_up_to` advances while calls wait, and
    /// when the channel closes.
    window_open: Arc<Notify>,
    /// The largest `ack_up_to` put on an outgoing REQUEST or PING, and how
    /// many such messages were sent: an answer with an id up to it needs no
    /// ACK of its own if such a message left after the answer arrived (the
    /// server drops its stored answer when that message arrives).
    advertised: Advertised,
    /// The round-trip estimator of the channel.
    pub(crate) rto: RtoEstimator,
}

impl Session {
    /// A fresh session: request ids start at 1; at most `window` ids past
    /// the low-water mark (0: unlimited).
    pub(crate) fn new(rto: RtoEstimator, window: u64) -> Session {
        Session {
            window,
            window_waiters: 0,
            window_open: Arc::new(Notify::new()),
            calls: Calls::new(),
            server: Peer::default(),
            ping_window: None,
            advertised: Advertised::default(),
            rto,
        }
    }

    /// Whether the next id may be handed out now: it is at most `window`
    /// past the low-water mark. `queued`: the caller is one of the waiters
    /// (a new caller does not overtake calls already waiting).
    pub(crate) fn window_open(&self, queued: bool) -> bool {
        if self.window == 0 {
            return true;
        }
        if !queued && self.window_waiters > 0 {
            return false;
        }
        self.calls.next_id() - self.ack_up_to() <= self.window
    }

    /// A call starts waiting for the window; returns what wakes it.
    pub(crate) fn wait_for_window(&mut self) -> Arc<Notify> {
        self.window_waiters += 1;
        self.window_open.clone()
    }

    /// A call stops waiting for the window (it got an id, gave up or was
    /// dropped).
    pub(crate) fn stop_waiting_for_window(&mut self) {
        self.window_waiters = self.window_waiters.saturating_sub(1);
    }

    /// After a waiter took an id: if the window is still open and calls
    /// still wait, wakes the next one (an advance of `ack_up_to` wakes one
    /// waiter, which passes the turn on while there is room).
    pub(crate) fn pass_window_on(&self) {
        if self.window_waiters > 0 && self.window_open(true) {
            self.window_open.notify_one();
        }
    }

    /// Wakes every call waiting for the window (the channel is closing).
    pub(crate) fn wake_window_waiters(&self) {
        self.window_open.notify_waiters();
    }

    /// Hands out the next request id and registers a pending call for it,
    /// if the window is open (see [`Session::window_open`]).
    pub(crate) fn try_start_call(&mut self, rra: bool, queued: bool) -> Option<u64> {
        self.window_open(queued).then(|| self.start_call(rra))
    }

    /// Hands out the next request id for a one-way call, if the window is
    /// open (see [`Session::window_open`]).
    pub(crate) fn try_start_one_way(&mut self, queued: bool) -> Option<u64> {
        self.window_open(queued).then(|| self.start_one_way())
    }

    /// Hands out the next request id and registers a pending call for it.
    pub(crate) fn start_call(&mut self, rra: bool) -> u64 {
        self.calls.start(
            rra,
            Entry {
                pinging: false,
                flags: 0,
                result: None,
                sample_from: None,
                waker: None,
            },
        )
    }

    /// Hands out the next request id for a call that is finished as soon as
    /// it is sent (one-way).
    pub(crate) fn start_one_way(&mut self) -> u64 {
        self.calls.start_one_way()
    }

    /// The cumulative acknowledgement: the largest L such that every call
    /// with an id up to L has finished on this side.
    pub(crate) fn ack_up_to(&self) -> u64 {
        self.calls.ack_up_to()
    }

    /// Notes that a message carrying `ack_up_to` = `l` is being sent, and
    /// returns `l`.
    pub(crate) fn advertise(&mut self, l: u64) -> u64 {
        self.advertised.sent += 1;
        self.advertised.up_to = self.advertised.up_to.max(l);
        l
    }

    /// What REQUESTs and PINGs have carried so far
    /// ([`Session::advertise`]).
    pub(crate) fn advertised(&self) -> Advertised {
        self.advertised
    }

    /// The last incarnation the server showed (0: unknown).
    pub(crate) fn incarnation(&self) -> u64 {
        self.server.incarnation()
    }

    /// The cookie the server last gave in a PONG (0: none), which every
    /// REQUEST carries.
    pub(crate) fn cookie(&self) -> u64 {
        self.server.cookie()
    }

    /// Whether a call waiting for the incarnation should send a PING now
    /// (no other call's PING is outstanding); if so, opens a window of
    /// `wait` for its answer.
    pub(crate) fn claim_ping(&mut self, now: Instant, wait: Duration) -> bool {
        if self.ping_window.is_some_and(|until| now < until) {
            return false;
        }
        self.ping_window = Some(now + wait);
        true
    }

    /// The pending call `id`.
    pub(crate) fn entry(&mut self, id: u64) -> Option<&mut Entry> {
        self.calls.get_mut(id)
    }

    /// After a call finished or ended: if that `advanced` `ack_up_to`, the
    /// window may have opened. One waiter is woken (in arrival order) and
    /// passes the turn on.
    fn after_finish(&self, advanced: bool) {
        if advanced && self.window_waiters > 0 {
            self.window_open.notify_one();
        }
    }

    /// Forgets call `id`: it completed, failed or was dropped. Its id counts
    /// as finished from now on.
    pub(crate) fn end_call(&mut self, id: u64) {
        let advanced = self.calls.end(id);
        self.after_finish(advanced);
    }

    /// Takes the waker of every pending call (the channel is closing).
    pub(crate) fn take_all_wakers(&mut self) -> Vec<Waker> {
        self.calls
            .calls_mut()
            .filter_map(|e| e.waker.take())
            .collect()
    }

    /// Routes one envelope from the server (already checked: version,
    /// session, a client-bound message type `kind`) received at `now`.
    pub(crate) fn deliver(&mut self, env: Envelope, kind: MessageType, now: Instant) -> Delivery {
        let mut delivery = Delivery::default();
        if self.server.saw_incarnation(env.incarnation) {
            delivery.more_wakers = self
                .calls
                .calls_mut()
                .filter(|e| e.pinging)
                .filter_map(|e| e.waker.take())
                .collect();
        }
        // A PONG carries the cookie, and so does any answer to a request
        // that was not yet from a verified source (section 7.4).
        self.server.saw_cookie(env.cookie);
        let id = env.request_id;
        let is_answer = matches!(kind, MessageType::Reply | MessageType::Error);
        // A call ended, finished (its answer not collected yet) or one-way.
        if !self.calls.is_unfinished(id) {
            if self.calls.issued(id) {
                delivery.kind = Routed::Late;
                if is_answer && self.calls.acknowledges(id) {
                    delivery.ack = Some(id);
                }
            }
            return delivery;
        }
        let Some(entry) = self.calls.get_mut(id) else {
            // Unreachable: an unfinished call is pending.
            return delivery;
        };
        let mut sample = None;
        match kind {
            MessageType::Reply | MessageType::Error => {
                if !entry.pinging {
                    sample = entry.sample_from.take();
                }
                entry.result = Some(final_of(kind, env));
                delivery.kind = Routed::Completed;
            }
            MessageType::Accept => {
                if !entry.pinging {
                    sample = entry.sample_from.take();
                }
                entry.flags |= flag::ACCEPTED;
                delivery.kind = Routed::Accepted;
            }
            MessageType::InProgress => {
                entry.flags |= flag::IN_PROGRESS;
                delivery.kind = Routed::InProgress;
            }
            _ => {
                // PONG (the caller filters the other types out).
                if entry.pinging {
                    sample = entry.sample_from.take();
                    entry.flags |= flag::PONG;
                } else if env.cookie != 0 {
                    entry.flags |= flag::RETRY;
                }
                delivery.kind = Routed::Pong;
            }
        }
        delivery.waker = entry.waker.take();
        if let Some(sent) = sample {
            self.rto.sample(now.saturating_duration_since(sent));
        }
        if delivery.kind == Routed::Completed {
            let advanced = self.calls.finish(id);
            self.after_finish(advanced);
            if self.calls.acknowledges(id) {
                delivery.ack = Some(id);
            }
        }
        delivery
    }

    /// Feeds what decides the session's future behaviour into `h` (not the
    /// round-trip estimator or the clock readings): for the protocol model
    /// checker.
    #[cfg(test)]
    pub(crate) fn fingerprint<H: std::hash::Hasher>(&self, h: &mut H) {
        use std::hash::Hash;
        self.server.incarnation().hash(h);
        self.calls.fingerprint(h, |e, h| {
            (e.pinging, e.flags).hash(h);
            match &e.result {
                None => 0u8.hash(h),
                Some(Final::OutcomeUnknown) => 1u8.hash(h),
                Some(Final::Reply(Ok(reply))) => (2u8, &reply.payload).hash(h),
                Some(Final::Reply(Err(status))) => (3u8, status.code()).hash(h),
            }
        });
    }

    /// Current smoothed round trip and timeout.
    pub(crate) fn rtt(&self) -> (Option<Duration>, Duration) {
        (self.rto.srtt(), self.rto.rto())
    }
}

/// What an answer (a REPLY or ERROR `env` of type `kind`) says about its
/// call: a result, or "outcome unknown: server restarted". The multicast
/// client reads each member's answer with it too.
pub(crate) fn final_of(kind: MessageType, env: Envelope) -> Final {
    match (kind, env.status) {
        (_, Some(status)) if status.details_type == SERVER_RESTARTED => Final::OutcomeUnknown,
        (MessageType::Reply, None) => Final::Reply(Ok(RawReply {
            payload: env.payload,
            metadata: env.metadata,
        })),
        (_, Some(status)) => Final::Reply(Err(Status::from(status).with_metadata(env.metadata))),
        (_, None) => Final::Reply(Err(Status::unknown("server sent ERROR without a status"))),
    }
}

mod calls;
mod peer;
#[cfg(test)]
mod tests;

pub(crate) use calls::Calls;
pub(crate) use peer::Peer;
