//! One call to the group: its copies, the members' answers, and what
//! it hands the caller ([`IpCall`], a [`GroupTransportCall`] yielding
//! [`MemberEvent`]s).

#[allow(clippy::wildcard_imports)]
// a part of the multicast client: its types are the parent's
use super::*;
use crate::call::{GroupTransportCall, MemberEvent};
use crate::client::session::{final_of, Final};
use crate::counter::bump;
use crate::envelope::{deadline_us, Envelope, MessageType};
use prost::Message;
use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

/// One call to the group, driven by polling
/// [`GroupTransportCall::poll_event`].
/// Dropping it ends the call: later answers are counted as late (and
/// acknowledged for RRA).
pub(super) struct IpCall {
    pub(super) shared: Arc<Shared>,
    pub(super) id: u64,
    pub(super) env: Envelope,
    pub(super) buf: Vec<u8>,
    pub(super) deadline: Option<Instant>,
    pub(super) give_up_at: Instant,
    pub(super) rx: mpsc::UnboundedReceiver<Incoming>,
    pub(super) expected: HashSet<SocketAddr>,
    pub(super) answered: HashSet<SocketAddr>,
    pub(super) in_progress: HashSet<SocketAddr>,
    /// Members sent a copy with their cookie (after their PONG).
    pub(super) cookied: HashSet<SocketAddr>,
    pub(super) copies: u32,
    pub(super) interval: Duration,
    pub(super) timer: Pin<Box<Sleep>>,
    /// Re-sends are still wanted.
    pub(super) resending: bool,
    /// The silent members were reported unreachable.
    pub(super) gave_up: bool,
    pub(super) out: VecDeque<(SocketAddr, MemberEvent)>,
    pub(super) ended: bool,
}

impl fmt::Debug for IpCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpCall")
            .field("id", &self.id)
            .field("copies", &self.copies)
            .finish_non_exhaustive()
    }
}

impl Drop for IpCall {
    fn drop(&mut self) {
        self.shared.lock().calls.end(self.id);
    }
}

impl IpCall {
    /// Whether every expected member has answered (always false with open
    /// membership).
    fn all_expected_answered(&self) -> bool {
        !self.expected.is_empty() && self.expected.iter().all(|m| self.answered.contains(m))
    }

    /// The largest any copy of the request can be, unicast copies (with a
    /// member's incarnation and cookie) included.
    pub(super) fn max_size(&mut self, now: Instant) -> usize {
        self.env
            .widest_copy_len(self.id, deadline_us(self.deadline, now))
    }

    /// Sends one copy to the group (without waiting: a full socket buffer
    /// is a lost datagram, which the schedule covers).
    pub(super) fn send(&mut self) -> io::Result<()> {
        let now = Instant::now();
        self.copies += 1;
        self.env.attempt = self.copies;
        self.env.deadline_us = deadline_us(self.deadline, now);
        if self.copies > 1 || !self.ended {
            self.env.ack_up_to = self.shared.lock().calls.ack_up_to();
        }
        self.buf.clear();
        // Encoding into a Vec cannot run out of room.
        let _ = self.env.encode(&mut self.buf);
        let counters = &self.shared.counters;
        bump(&counters.group_datagrams);
        if self.copies > 1 {
            bump(&counters.resends);
        }
        // A direct non-blocking `sendto`: tokio's `try_send_to` reports
        // WouldBlock until its reactor has seen the socket writable once.
        let target = socket2::SockAddr::from(self.shared.group);
        match socket2::SockRef::from(&self.shared.socket).send_to(&self.buf, &target) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && self.copies > 1 => Ok(()),
            Err(e) if self.copies == 1 => Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "could not re-send to the group");
                Ok(())
            }
        }
    }

    /// Sends one copy by unicast to every expected member that has not
    /// answered, with the incarnation it last showed.
    fn send_to_missing(&mut self) {
        let now = Instant::now();
        self.copies += 1;
        self.env.attempt = self.copies;
        self.env.deadline_us = deadline_us(self.deadline, now);
        let missing: Vec<(SocketAddr, Peer)> = {
            let st = self.shared.lock();
            self.env.ack_up_to = st.calls.ack_up_to();
            self.expected
                .iter()
                .filter(|m| !self.answered.contains(m))
                .map(|m| (*m, st.member(m)))
                .collect()
        };
        bump(&self.shared.counters.resends);
        for (member, peer) in missing {
            self.env.incarnation = peer.incarnation();
            self.env.cookie = peer.cookie();
            self.buf.clear();
            let _ = self.env.encode(&mut self.buf);
            bump(&self.shared.counters.unicast_copies);
            let target = socket2::SockAddr::from(member);
            if let Err(e) = socket2::SockRef::from(&self.shared.socket).send_to(&self.buf, &target)
            {
                tracing::debug!(error = %e, %member, "could not re-send to a member");
            }
        }
        self.env.incarnation = 0;
        self.env.cookie = 0;
    }

    /// Sends a copy by unicast to `member`, which answered the group copy
    /// with a PONG: its answer was too big for a source it had not
    /// verified, and this copy carries the cookie it gave (and the
    /// incarnation it showed).
    fn send_with_cookie(&mut self, member: SocketAddr) {
        let now = Instant::now();
        self.copies += 1;
        self.env.attempt = self.copies;
        self.env.deadline_us = deadline_us(self.deadline, now);
        {
            let st = self.shared.lock();
            self.env.ack_up_to = st.calls.ack_up_to();
            let peer = st.member(&member);
            self.env.incarnation = peer.incarnation();
            self.env.cookie = peer.cookie();
        }
        self.buf.clear();
        let _ = self.env.encode(&mut self.buf);
        self.env.incarnation = 0;
        self.env.cookie = 0;
        bump(&self.shared.counters.unicast_copies);
        let target = socket2::SockAddr::from(member);
        if let Err(e) = socket2::SockRef::from(&self.shared.socket).send_to(&self.buf, &target) {
            tracing::debug!(error = %e, %member, "could not send a copy with the cookie");
        }
    }

    /// Arms the timer for the next re-send (or the end of the call).
    pub(super) fn arm(&mut self) {
        let at = if self.resending && !self.ended {
            (Instant::now() + self.interval).min(self.give_up_at)
        } else {
            self.give_up_at
        };
        self.timer.as_mut().reset(at);
    }

    fn on_incoming(&mut self, inc: Incoming) {
        let Incoming { from, kind, env } = inc;
        if !self.expected.is_empty() && !self.expected.contains(&from) {
            tracing::debug!(%from, "answer from a member that is not expected; ignored");
            return;
        }
        if self.answered.contains(&from) {
            bump(&self.shared.counters.duplicates);
            return;
        }
        match kind {
            MessageType::Reply | MessageType::Error => {
                bump(&self.shared.counters.replies);
                self.answered.insert(from);
                self.in_progress.remove(&from);
                let event = match final_of(kind, env) {
                    Final::Reply(result) => MemberEvent::Answer(result),
                    Final::OutcomeUnknown => MemberEvent::OutcomeUnknown,
                };
                self.out.push_back((from, event));
            }
            MessageType::Accept if self.env.want_accept => {
                // An asynchronous member is done for the caller at its
                // ACCEPT; its REPLY (kept in its history) is not awaited.
                self.answered.insert(from);
                self.out.push_back((from, MemberEvent::Accepted));
            }
            MessageType::Accept | MessageType::InProgress => {
                self.in_progress.insert(from);
            }
            // At most one copy per member and PONG: a member sends a PONG
            // only in place of an answer to a copy without its cookie.
            MessageType::Pong if env.cookie != 0 && !self.cookied.contains(&from) => {
                self.cookied.insert(from);
                self.send_with_cookie(from);
            }
            _ => {}
        }
    }

    fn on_timer(&mut self) {
        if !self.resending {
            self.arm();
            return;
        }
        let attempts = self.shared.config.attempts.max(1);
        if self.copies >= attempts && !self.gave_up {
            self.gave_up = true;
            let silent: Vec<SocketAddr> = self
                .expected
                .iter()
                .filter(|m| !self.answered.contains(m) && !self.in_progress.contains(m))
                .copied()
                .collect();
            for m in silent {
                self.answered.insert(m);
                self.out
                    .push_back((m, MemberEvent::Unreachable(self.copies)));
            }
            let still_running = self.in_progress.iter().any(|m| !self.answered.contains(m));
            if !still_running {
                // The events queued above are still handed out first.
                self.ended = true;
                return;
            }
        }
        if self.gave_up {
            // Only members running the request are left: poll slowly.
            self.interval = self.shared.config.max_rto;
        } else {
            self.interval = (self.interval * 2).min(self.shared.config.max_rto);
        }
        if self.shared.config.resend == Resend::Missing && !self.expected.is_empty() {
            tracing::debug!(
                request_id = self.id,
                attempt = self.copies + 1,
                "members missing; re-sending to each"
            );
            self.send_to_missing();
        } else {
            tracing::debug!(
                request_id = self.id,
                attempt = self.copies + 1,
                "members missing; re-sending to the group"
            );
            let _ = self.send();
        }
        self.arm();
    }
}

impl GroupTransportCall for IpCall {
    /// The next member event; `None` when the call is over (every expected
    /// member answered, or the deadline passed, or the silent members were
    /// given up and nobody is running the request any more).
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<(SocketAddr, MemberEvent)>> {
        loop {
            if let Some(ev) = self.out.pop_front() {
                return Poll::Ready(Some(ev));
            }
            if self.ended || self.all_expected_answered() {
                self.ended = true;
                return Poll::Ready(None);
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(inc)) => {
                    self.on_incoming(inc);
                    continue;
                }
                Poll::Ready(None) => {
                    self.ended = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => {}
            }
            match self.timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => {
                    if Instant::now() >= self.give_up_at {
                        self.ended = true;
                        return Poll::Ready(None);
                    }
                    self.on_timer();
                }
            }
        }
    }

    /// When this call stops by itself.
    fn give_up_at(&self) -> std::time::Instant {
        self.give_up_at.into_std()
    }

    /// Stops re-sending: the caller has what it needs and nobody in
    /// particular is awaited (open membership).
    fn stop_resending(&mut self) {
        self.resending = false;
    }

    /// How many copies were sent (to the group and by unicast).
    fn copies(&self) -> u32 {
        self.copies
    }
}
