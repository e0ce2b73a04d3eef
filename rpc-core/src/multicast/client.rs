//! The caller's side of IP multicast: one UDP socket, one client session,
//! REQUEST datagrams sent to a group address, answers gathered by unicast
//! from every member.
//!
//! A call ([`IpCall`]) is driven by whoever polls it (the group call, or a
//! background task that lets stragglers finish): it sends the first copy
//! to the group when it is created, re-sends to the group on a backoff
//! schedule while an expected member (or, with open membership, anybody)
//! is still missing, and turns every first answer of a member into one
//! event. The receive task routes datagrams by request id and acknowledges
//! RRA replies at once, from whichever member they come.

use crate::call::{RawReply, RawResult};
use crate::counter::bump;
use crate::envelope::{Envelope, ExchangeProtocol, MessageType, SERVER_RESTARTED, VERSION};
use crate::error::Error;
use crate::service::{Metadata, MethodInfo, Protocol, ServiceInfo, Style};
use crate::status::Status;
use bytes::Bytes;
use prost::Message;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

/// How many completed RRA request ids are remembered, so that a late or
/// duplicate REPLY for one of them is acknowledged again.
const RECENT_RRA: usize = 4096;

/// Where the re-sends of a multicast call go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Resend {
    /// To the group again: one datagram however many members are missing;
    /// members that already answered answer again from their history. The
    /// copies carry no incarnation (see the module docs). The default.
    #[default]
    Group,
    /// By unicast to each expected member still missing, carrying the
    /// incarnation that member last showed, so that a member restarted
    /// since does not run a non-idempotent request blindly ("outcome
    /// unknown: server restarted"); also reaches a member that has left
    /// the group but still serves its unicast address. With open
    /// membership there is nobody to name: re-sends go to the group.
    Missing,
}

/// Configuration of a [`MulticastClient`]. Start from
/// [`MulticastConfig::default`] and change fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MulticastConfig {
    /// IP TTL of the group datagrams: 0 keeps them on this host, 1 (the
    /// default) on the local link.
    pub ttl: u32,
    /// Deliver the group datagrams to sockets of this host too
    /// (`IP_MULTICAST_LOOP`); default on, so that servers in the same
    /// network namespace receive them.
    pub loopback: bool,
    /// Interface (by its IPv4 address) the group datagrams leave by;
    /// `0.0.0.0` (the default) lets the routing table choose.
    pub interface: Ipv4Addr,
    /// Interval before the first re-send to the group. Default 20 ms.
    pub initial_rto: Duration,
    /// Largest re-send interval (the backoff doubles up to it). Default 1 s.
    pub max_rto: Duration,
    /// Copies sent to the group before the members still silent are
    /// reported unreachable (a member that said IN_PROGRESS is polled on
    /// until the deadline). Default 8.
    pub attempts: u32,
    /// Where re-sends go. Default [`Resend::Group`].
    pub resend: Resend,
    /// Largest datagram sent; a bigger request fails with
    /// [`Error::MessageTooLarge`] before anything is sent. Default 65,000.
    pub max_datagram: usize,
    /// How long a call without deadline gathers answers (and how long a
    /// member running a request is polled). Default 30 s.
    pub max_wait: Duration,
}

impl Default for MulticastConfig {
    fn default() -> Self {
        MulticastConfig {
            ttl: 1,
            loopback: true,
            interface: Ipv4Addr::UNSPECIFIED,
            initial_rto: Duration::from_millis(20),
            max_rto: Duration::from_secs(1),
            attempts: 8,
            resend: Resend::Group,
            max_datagram: 65_000,
            max_wait: Duration::from_secs(30),
        }
    }
}

/// Counters of a [`MulticastClient`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MulticastStats {
    /// Calls started.
    pub calls: u64,
    /// REQUEST datagrams sent to the group (first copies and re-sends).
    pub group_datagrams: u64,
    /// Re-sends (to the group, or one round of unicast copies).
    pub resends: u64,
    /// Unicast copies sent to missing members ([`Resend::Missing`]).
    pub unicast_copies: u64,
    /// First answers (REPLY or ERROR) of a member.
    pub replies: u64,
    /// Answers from a member that had already answered (re-sends answered
    /// from its history).
    pub duplicates: u64,
    /// Answers for a call that had ended.
    pub late: u64,
    /// ACKs sent for RRA replies.
    pub acks: u64,
    /// Datagrams dropped: undecodable, another version or session, a type a
    /// client does not take.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    group_datagrams: AtomicU64,
    resends: AtomicU64,
    unicast_copies: AtomicU64,
    replies: AtomicU64,
    duplicates: AtomicU64,
    late: AtomicU64,
    acks: AtomicU64,
    dropped: AtomicU64,
}

/// What the receive task hands a call.
#[derive(Debug)]
struct Incoming {
    from: SocketAddr,
    kind: MessageType,
    env: Envelope,
}

#[derive(Debug)]
struct Slot {
    tx: mpsc::UnboundedSender<Incoming>,
    rra: bool,
}

#[derive(Debug)]
struct State {
    next_id: u64,
    unfinished: BTreeSet<u64>,
    calls: HashMap<u64, Slot>,
    recent_rra: HashSet<u64>,
    recent_rra_order: VecDeque<u64>,
    /// The last incarnation each member showed.
    incarnations: HashMap<SocketAddr, u64>,
    /// The address-validation cookie each member gave (in a PONG).
    cookies: HashMap<SocketAddr, u64>,
}

impl State {
    fn ack_up_to(&self) -> u64 {
        match self.unfinished.first() {
            Some(first) => first - 1,
            None => self.next_id - 1,
        }
    }

    fn end_call(&mut self, id: u64) {
        if let Some(slot) = self.calls.remove(&id) {
            if slot.rra {
                if self.recent_rra_order.len() >= RECENT_RRA {
                    if let Some(old) = self.recent_rra_order.pop_front() {
                        self.recent_rra.remove(&old);
                    }
                }
                self.recent_rra_order.push_back(id);
                self.recent_rra.insert(id);
            }
        }
        self.unfinished.remove(&id);
    }
}

struct Shared {
    socket: UdpSocket,
    group: SocketAddr,
    session_id: u64,
    config: MulticastConfig,
    state: Mutex<State>,
    counters: Counters,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Lifeline {
    receiver: tokio::task::AbortHandle,
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        self.receiver.abort();
    }
}

/// A client session that sends each request once to an IPv4 multicast
/// group and gathers the members' unicast answers. Use it through
/// [`GroupClient::with_multicast`](crate::GroupClient::with_multicast).
///
/// Cheap to clone; clones share the session. Dropping the last clone stops
/// the receive task.
#[derive(Clone)]
pub struct MulticastClient {
    shared: Arc<Shared>,
    _life: Arc<Lifeline>,
}

impl fmt::Debug for MulticastClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MulticastClient")
            .field("group", &self.shared.group)
            .field("local", &self.shared.socket.local_addr().ok())
            .field(
                "session_id",
                &format_args!("{:016x}", self.shared.session_id),
            )
            .finish()
    }
}

impl MulticastClient {
    /// A client of `group` (an address in 224.0.0.0/4 and the port the
    /// servers joined on) with a socket bound to `local` (for example
    /// `127.0.0.1:0`): TTL, loopback and interface from `config`.
    ///
    /// # Errors
    /// [`Error::InvalidCall`] when `group` is not a multicast address;
    /// [`Error::Io`] when the socket cannot be bound or configured.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub async fn connect(
        group: SocketAddrV4,
        local: SocketAddr,
        config: MulticastConfig,
    ) -> Result<Self, Error> {
        if !group.ip().is_multicast() {
            return Err(Error::InvalidCall(format!(
                "{} is not an IPv4 multicast address",
                group.ip()
            )));
        }
        let socket = UdpSocket::bind(local).await.map_err(Error::Io)?;
        socket.set_multicast_ttl_v4(config.ttl).map_err(Error::Io)?;
        socket
            .set_multicast_loop_v4(config.loopback)
            .map_err(Error::Io)?;
        if !config.interface.is_unspecified() {
            socket2::SockRef::from(&socket)
                .set_multicast_if_v4(&config.interface)
                .map_err(Error::Io)?;
        }
        let session_id = loop {
            let id: u64 = rand::random();
            if id != 0 {
                break id;
            }
        };
        let shared = Arc::new(Shared {
            socket,
            group: SocketAddr::V4(group),
            session_id,
            config,
            state: Mutex::new(State {
                next_id: 1,
                unfinished: BTreeSet::new(),
                calls: HashMap::new(),
                recent_rra: HashSet::new(),
                recent_rra_order: VecDeque::new(),
                incarnations: HashMap::new(),
                cookies: HashMap::new(),
            }),
            counters: Counters::default(),
        });
        let receiver = tokio::spawn(receive_loop(Arc::clone(&shared))).abort_handle();
        tracing::debug!(session_id = format_args!("{session_id:016x}"), %group, "multicast session started");
        Ok(MulticastClient {
            shared,
            _life: Arc::new(Lifeline { receiver }),
        })
    }

    /// The group address.
    pub fn group(&self) -> SocketAddr {
        self.shared.group
    }

    /// The session id on every request.
    pub fn session_id(&self) -> u64 {
        self.shared.session_id
    }

    /// The local address of the socket (where the members answer).
    ///
    /// # Errors
    /// When the socket cannot tell.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.shared.socket.local_addr()
    }

    /// The configuration.
    pub fn config(&self) -> &MulticastConfig {
        &self.shared.config
    }

    /// The last incarnation `member` showed, if it ever answered.
    pub fn incarnation_of(&self, member: SocketAddr) -> Option<u64> {
        self.shared.lock().incarnations.get(&member).copied()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MulticastStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MulticastStats {
            calls: get(&c.calls),
            group_datagrams: get(&c.group_datagrams),
            resends: get(&c.resends),
            unicast_copies: get(&c.unicast_copies),
            replies: get(&c.replies),
            duplicates: get(&c.duplicates),
            late: get(&c.late),
            acks: get(&c.acks),
            dropped: get(&c.dropped),
        }
    }

    /// Starts a call: sends its first copy to the group now. `expected`:
    /// the members that must answer (empty: whoever answers). One-way
    /// calls (protocol R) are sent once and need no polling.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        &self,
        service: &'static ServiceInfo,
        method: &'static MethodInfo,
        instance: String,
        payload: Bytes,
        metadata: Metadata,
        options: &crate::call::CallOptions,
        expected: Vec<SocketAddr>,
    ) -> Result<IpCall, Error> {
        let shared = &self.shared;
        let now = Instant::now();
        let deadline = options.deadline.map(Instant::from_std);
        if deadline.is_some_and(|d| d <= now) {
            return Err(Error::DeadlineExceeded {
                may_have_run: false,
                attempts: 0,
            });
        }
        let one_way = options.style == Style::OneWay;
        match (one_way, options.protocol) {
            (true, Protocol::R) | (false, Protocol::RR | Protocol::RRA) => {}
            (true, p) => {
                return Err(Error::InvalidCall(format!(
                    "a one-way call uses protocol R, not {p:?}"
                )))
            }
            (false, _) => {
                return Err(Error::InvalidCall(
                    "protocol R has no reply: use RR or RRA".into(),
                ))
            }
        }
        bump(&shared.counters.calls);
        let (tx, rx) = mpsc::unbounded_channel();
        let (id, ack_up_to) = {
            let mut st = shared.lock();
            let id = st.next_id;
            st.next_id += 1;
            if !one_way {
                st.unfinished.insert(id);
                st.calls.insert(
                    id,
                    Slot {
                        tx,
                        rra: options.protocol == Protocol::RRA,
                    },
                );
            }
            // A one-way request never acknowledges itself (the servers keep
            // their tombstone against network duplicates).
            (id, st.ack_up_to().min(id - 1))
        };
        // No incarnation and no cookie: members have their own, and a group
        // copy cannot carry one right for all of them (see the module docs).
        let env = Envelope {
            instance,
            // Set per copy.
            attempt: 0,
            metadata,
            protocol: ExchangeProtocol::from(options.protocol) as i32,
            ack_up_to,
            want_accept: options.style == Style::Async,
            idempotent: options.idempotent,
            ..Envelope::request(shared.session_id, id, service.full_name, method.id, payload)
        };
        let give_up_at = deadline.unwrap_or(now + shared.config.max_wait);
        let mut call = IpCall {
            shared: Arc::clone(shared),
            id,
            env,
            buf: Vec::new(),
            deadline,
            give_up_at,
            rx,
            expected: expected.iter().copied().collect(),
            answered: HashSet::new(),
            in_progress: HashSet::new(),
            cookied: HashSet::new(),
            copies: 0,
            interval: shared.config.initial_rto,
            timer: Box::pin(tokio::time::sleep_until(give_up_at)),
            resending: !one_way,
            gave_up: false,
            out: VecDeque::new(),
            ended: one_way,
        };
        let size = call.max_size(now);
        if size > shared.config.max_datagram {
            return Err(Error::MessageTooLarge {
                size,
                limit: shared.config.max_datagram,
            });
        }
        call.send().map_err(Error::Io)?;
        call.arm();
        Ok(call)
    }
}

/// What happened for one member of an IP multicast call.
#[derive(Debug)]
pub(crate) enum IpEvent {
    /// Its REPLY or ERROR.
    Answer(RawResult),
    /// It said "outcome unknown: server restarted".
    OutcomeUnknown,
    /// It ACCEPTed an asynchronous request.
    Accepted,
    /// It stayed silent through every copy.
    Unreachable(u32),
}

/// One call to the group, driven by polling [`IpCall::poll_event`].
/// Dropping it ends the call: later answers are counted as late (and
/// acknowledged for RRA).
pub(crate) struct IpCall {
    shared: Arc<Shared>,
    id: u64,
    env: Envelope,
    buf: Vec<u8>,
    deadline: Option<Instant>,
    give_up_at: Instant,
    rx: mpsc::UnboundedReceiver<Incoming>,
    expected: HashSet<SocketAddr>,
    answered: HashSet<SocketAddr>,
    in_progress: HashSet<SocketAddr>,
    /// Members sent a copy with their cookie (after their PONG).
    cookied: HashSet<SocketAddr>,
    copies: u32,
    interval: Duration,
    timer: Pin<Box<Sleep>>,
    /// Re-sends are still wanted.
    resending: bool,
    /// The silent members were reported unreachable.
    gave_up: bool,
    out: VecDeque<(SocketAddr, IpEvent)>,
    ended: bool,
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
        self.shared.lock().end_call(self.id);
    }
}

impl IpCall {
    /// How many copies were sent to the group.
    pub(crate) fn copies(&self) -> u32 {
        self.copies
    }

    /// When this call stops by itself.
    pub(crate) fn give_up_at(&self) -> Instant {
        self.give_up_at
    }

    /// Stops re-sending: the caller has what it needs and nobody in
    /// particular is awaited (open membership).
    pub(crate) fn stop_resending(&mut self) {
        self.resending = false;
    }

    /// Whether every expected member has answered (always false with open
    /// membership).
    fn all_expected_answered(&self) -> bool {
        !self.expected.is_empty() && self.expected.iter().all(|m| self.answered.contains(m))
    }

    fn max_size(&mut self, now: Instant) -> usize {
        let saved = (self.env.attempt, self.env.ack_up_to, self.env.deadline_us);
        self.env.attempt = u32::MAX;
        self.env.ack_up_to = self.id;
        self.env.deadline_us = self.deadline.map_or(0, |d| micros_left(d, now));
        let size = self.env.encoded_len();
        (self.env.attempt, self.env.ack_up_to, self.env.deadline_us) = saved;
        size
    }

    /// Sends one copy to the group (without waiting: a full socket buffer
    /// is a lost datagram, which the schedule covers).
    fn send(&mut self) -> io::Result<()> {
        let now = Instant::now();
        self.copies += 1;
        self.env.attempt = self.copies;
        self.env.deadline_us = self.deadline.map_or(0, |d| micros_left(d, now));
        if self.copies > 1 || !self.ended {
            self.env.ack_up_to = self.shared.lock().ack_up_to();
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
        self.env.deadline_us = self.deadline.map_or(0, |d| micros_left(d, now));
        let missing: Vec<(SocketAddr, u64, u64)> = {
            let st = self.shared.lock();
            self.env.ack_up_to = st.ack_up_to();
            self.expected
                .iter()
                .filter(|m| !self.answered.contains(m))
                .map(|m| {
                    let incarnation = st.incarnations.get(m).copied().unwrap_or(0);
                    (*m, incarnation, st.cookies.get(m).copied().unwrap_or(0))
                })
                .collect()
        };
        bump(&self.shared.counters.resends);
        for (member, incarnation, cookie) in missing {
            self.env.incarnation = incarnation;
            self.env.cookie = cookie;
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
        self.env.deadline_us = self.deadline.map_or(0, |d| micros_left(d, now));
        {
            let st = self.shared.lock();
            self.env.ack_up_to = st.ack_up_to();
            self.env.incarnation = st.incarnations.get(&member).copied().unwrap_or(0);
            self.env.cookie = st.cookies.get(&member).copied().unwrap_or(0);
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
    fn arm(&mut self) {
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
                let event = match env.status {
                    Some(s) if s.details_type == SERVER_RESTARTED => IpEvent::OutcomeUnknown,
                    Some(s) => IpEvent::Answer(Err(Status::from(s).with_metadata(env.metadata))),
                    None if kind == MessageType::Reply => IpEvent::Answer(Ok(RawReply {
                        payload: env.payload,
                        metadata: env.metadata,
                    })),
                    None => {
                        IpEvent::Answer(Err(Status::unknown("server sent ERROR without a status")))
                    }
                };
                self.out.push_back((from, event));
            }
            MessageType::Accept if self.env.want_accept => {
                // An asynchronous member is done for the caller at its
                // ACCEPT; its REPLY (kept in its history) is not awaited.
                self.answered.insert(from);
                self.out.push_back((from, IpEvent::Accepted));
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

    /// The next member event; `None` when the call is over (every expected
    /// member answered, or the deadline passed, or the silent members were
    /// given up and nobody is running the request any more).
    pub(crate) fn poll_event(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<(SocketAddr, IpEvent)>> {
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
                self.out.push_back((m, IpEvent::Unreachable(self.copies)));
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

/// Remaining budget until `deadline` in microseconds, at least 1.
fn micros_left(deadline: Instant, now: Instant) -> u64 {
    u64::try_from(deadline.saturating_duration_since(now).as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

async fn receive_loop(shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65_536];
    let mut ack_buf = Vec::with_capacity(64);
    let mut errors = 0u32;
    loop {
        let (n, from) = match shared.socket.recv_from(&mut buf).await {
            Ok(r) => {
                errors = 0;
                r
            }
            Err(e) => {
                errors = errors.saturating_add(1);
                tracing::debug!(error = %e, "multicast client receive error");
                if errors > 8 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                continue;
            }
        };
        let Some(ack) = route(&shared, buf.get(..n).unwrap_or_default(), from) else {
            continue;
        };
        let ack_up_to = shared.lock().ack_up_to();
        let env = Envelope::ack(shared.session_id, ack, ack_up_to);
        ack_buf.clear();
        let _ = env.encode(&mut ack_buf);
        bump(&shared.counters.acks);
        if let Err(e) = shared.socket.send_to(&ack_buf, from).await {
            tracing::debug!(error = %e, %from, "could not send ACK");
        }
    }
}

/// Routes one datagram to its call; returns a request id to ACK to `from`.
fn route(shared: &Shared, bytes: &[u8], from: SocketAddr) -> Option<u64> {
    let env = match Envelope::decode(bytes) {
        Ok(env) if env.version == VERSION && env.session_id == shared.session_id => env,
        _ => {
            bump(&shared.counters.dropped);
            tracing::debug!(%from, len = bytes.len(), "dropped datagram (undecodable, other version or session)");
            return None;
        }
    };
    let kind = match MessageType::try_from(env.r#type) {
        Ok(
            k @ (MessageType::Reply
            | MessageType::Error
            | MessageType::Accept
            | MessageType::InProgress
            | MessageType::Pong),
        ) => k,
        _ => {
            bump(&shared.counters.dropped);
            return None;
        }
    };
    let id = env.request_id;
    let is_answer = matches!(kind, MessageType::Reply | MessageType::Error);
    let mut st = shared.lock();
    if env.incarnation != 0 {
        st.incarnations.insert(from, env.incarnation);
    }
    if kind == MessageType::Pong && env.cookie != 0 {
        st.cookies.insert(from, env.cookie);
    }
    match st.calls.get(&id) {
        Some(slot) => {
            let rra = slot.rra;
            if slot.tx.send(Incoming { from, kind, env }).is_err() {
                bump(&shared.counters.late);
            }
            (is_answer && rra).then_some(id)
        }
        None => {
            bump(&shared.counters.late);
            (is_answer && st.recent_rra.contains(&id)).then_some(id)
        }
    }
}
