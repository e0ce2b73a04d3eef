//! Multicast: one logical call to a group of members, complete when a
//! [`Completion`] policy says so, within one deadline.
//!
//! A [`GroupClient`] holds two kinds of members, which one call reaches at
//! the same time:
//! - fan-out members, each a [`Client`] over any [`Channel`](super::Channel)
//!   (UDP, TCP, in-memory, ...): the call runs one ordinary call per
//!   member, all concurrently on the caller's task (no task per member;
//!   the request is encoded once and its bytes shared);
//! - an IP multicast group ([`GroupClient::with_multicast`]): the request
//!   is sent once to the group address and the members answer by unicast;
//!   the expected members are named with
//!   [`GroupClient::add_multicast_member`], or, when none is named, whoever
//!   answers by the deadline is a member.
//!
//! Each member keeps single-call semantics (retransmission, duplicate
//! filtering, at-most-once), because each member's exchange is that of a
//! unicast call with the member's own reply history.
//!
//! ```text
//! group.call(..)                  GroupCall            .await -> GroupOutcome (every member)
//!     .first() / .quorum(k) / .all()                   when it is complete
//!     .timeout(d)                                      one deadline for the whole call
//!     .asynchronous()                                  members count at their ACCEPT
//!     .stragglers(Stragglers::Cancel | Finish)         what happens to the members still out
//!     .stream()                   GroupStream          yields MemberOutcome as they arrive
//! ```

use super::{CallOptions, Client, Invocation, Outcome};
use crate::error::{CallError, Error, Raisable};
use crate::multicast::{IpCall, IpEvent, MulticastClient};
use crate::service::{Metadata, MethodInfo, Protocol, ServiceInfo, Style};
use crate::status::Status;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use std::collections::HashMap;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// When a group call is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// Every member has answered (or failed, or the deadline passed).
    All,
    /// The first success.
    First,
    /// At least `k` successes.
    Quorum(usize),
}

/// What happens to the members still out when the policy is met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stragglers {
    /// Their exchanges go on in a background task until they end (answer,
    /// attempts or deadline) and their results are discarded: at-most-once
    /// exchanges complete and RRA replies are acknowledged, so the members'
    /// histories are released at once. The default.
    #[default]
    Finish,
    /// Their exchanges are dropped at once: no more retransmissions; a late
    /// answer is discarded (and still acknowledged when RRA), and the
    /// members drop their history entries when the client's later requests
    /// show that it has given up on them (or at the history's age limit).
    Cancel,
}

#[derive(Clone)]
enum Target {
    Client(Client),
    Multicast(SocketAddr),
}

#[derive(Clone)]
struct Member {
    name: String,
    target: Target,
}

#[derive(Default)]
struct Inner {
    members: RwLock<Vec<Member>>,
    multicast: Option<MulticastClient>,
}

/// A group of members: fan-out members (a [`Client`] each, any transport)
/// and optionally an IP multicast group. Members can be added and removed
/// while calls run; a call uses the members present when it starts.
///
/// Cheap to clone; clones share the member list.
#[derive(Clone, Default)]
pub struct GroupClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for GroupClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupClient")
            .field("members", &self.member_names())
            .field("multicast", &self.inner.multicast)
            .finish()
    }
}

impl GroupClient {
    /// An empty group.
    pub fn new() -> GroupClient {
        GroupClient::default()
    }

    /// A group of named fan-out members.
    pub fn from_members(members: impl IntoIterator<Item = (String, Client)>) -> GroupClient {
        let g = GroupClient::new();
        for (name, client) in members {
            g.add(name, client);
        }
        g
    }

    /// A group reached by IP multicast through `client` (plus any fan-out
    /// members added later). Without members named by
    /// [`GroupClient::add_multicast_member`], whoever answers by the
    /// deadline is a member, named by its address.
    pub fn with_multicast(client: MulticastClient) -> GroupClient {
        GroupClient {
            inner: Arc::new(Inner {
                members: RwLock::default(),
                multicast: Some(client),
            }),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Member>> {
        self.inner
            .members
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Member>> {
        self.inner.members.read().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, name: String, target: Target) {
        let mut m = self.write();
        m.retain(|x| x.name != name);
        m.push(Member { name, target });
    }

    /// Adds (or replaces) the fan-out member called `name`.
    pub fn add(&self, name: impl Into<String>, client: Client) {
        self.insert(name.into(), Target::Client(client));
    }

    /// Adds (or replaces) the IP multicast member called `name`, which
    /// answers from `addr`: calls then wait for the named members only (an
    /// answer from another address is ignored), and re-send to the group
    /// while one of them is missing.
    ///
    /// # Errors
    /// [`Error::InvalidCall`] when the group has no multicast client.
    pub fn add_multicast_member(
        &self,
        name: impl Into<String>,
        addr: SocketAddr,
    ) -> Result<(), Error> {
        if self.inner.multicast.is_none() {
            return Err(Error::InvalidCall(
                "the group has no multicast client".into(),
            ));
        }
        self.insert(name.into(), Target::Multicast(addr));
        Ok(())
    }

    /// Removes the member called `name`; returns whether it was there.
    pub fn remove(&self, name: &str) -> bool {
        let mut m = self.write();
        let before = m.len();
        m.retain(|x| x.name != name);
        m.len() != before
    }

    /// The current fan-out members.
    pub fn members(&self) -> Vec<(String, Client)> {
        self.read()
            .iter()
            .filter_map(|m| match &m.target {
                Target::Client(c) => Some((m.name.clone(), c.clone())),
                Target::Multicast(_) => None,
            })
            .collect()
    }

    /// The names of every member (fan-out and named multicast members).
    pub fn member_names(&self) -> Vec<String> {
        self.read().iter().map(|m| m.name.clone()).collect()
    }

    /// The multicast client, if the group has one.
    pub fn multicast(&self) -> Option<&MulticastClient> {
        self.inner.multicast.as_ref()
    }

    /// A typed group call; generated group stubs call this. The style
    /// starts from the IDL (one-way methods are one-way, asynchronous ones
    /// asynchronous, everything else synchronous: a group has no deferred
    /// style).
    pub fn call<Req, Resp, E>(
        &self,
        service: &'static ServiceInfo,
        method: &'static MethodInfo,
        request: &Req,
    ) -> GroupCall<Resp, E>
    where
        Req: prost::Message,
    {
        let options = CallOptions::for_method(method);
        let style = match (method.oneway, method.style) {
            (true, _) | (_, Style::OneWay) => Style::OneWay,
            (false, Style::Async) => Style::Async,
            _ => Style::Sync,
        };
        let protocol = if style == Style::OneWay {
            Protocol::R
        } else {
            options.protocol
        };
        GroupCall {
            group: self.clone(),
            invocation: Invocation {
                service,
                method,
                instance: String::new(),
                payload: Bytes::from(request.encode_to_vec()),
                metadata: Metadata::new(),
                options: CallOptions {
                    style,
                    protocol,
                    ..options
                },
            },
            completion: Completion::All,
            stragglers: Stragglers::default(),
            _marker: PhantomData,
        }
    }
}

/// What one member did in a group call.
#[derive(Debug)]
#[non_exhaustive]
pub enum MemberResult<R, E: fmt::Debug> {
    /// It replied (synchronous calls).
    Reply(R),
    /// It accepted the request (asynchronous calls); the result is not
    /// collected.
    Accepted,
    /// The request was handed to the network for it (one-way calls).
    Sent,
    /// It answered with an error (typed or a status), or its call failed
    /// in another definite way (for example "outcome unknown: server
    /// restarted", or a malformed reply).
    Error(CallError<E>),
    /// The deadline passed before it answered: a slow member, or one that
    /// cannot be told from a slow one.
    Timeout,
    /// Dead as far as the transport can tell: every attempt went
    /// unanswered, or the transport refused the connection. The request
    /// may have run (a reply may have been lost).
    Unreachable(Error),
    /// The policy was met before it answered: its exchange was cancelled
    /// or finishes in the background ([`Stragglers`]); its result is not
    /// reported.
    Cancelled,
}

impl<R, E: fmt::Debug> MemberResult<R, E> {
    /// Whether this counts towards the policy: a reply, an ACCEPT, or a
    /// one-way request sent.
    pub fn is_success(&self) -> bool {
        matches!(
            self,
            MemberResult::Reply(_) | MemberResult::Accepted | MemberResult::Sent
        )
    }

    /// The reply, if there is one.
    pub fn reply(&self) -> Option<&R> {
        match self {
            MemberResult::Reply(r) => Some(r),
            _ => None,
        }
    }
}

/// One member's line in a [`GroupOutcome`] (and an item of a
/// [`GroupStream`]).
#[derive(Debug)]
pub struct MemberOutcome<R, E: fmt::Debug> {
    /// The member's name (for an unnamed IP multicast member, its address).
    pub member: String,
    /// The member's address, for IP multicast members.
    pub addr: Option<SocketAddr>,
    /// What it did.
    pub result: MemberResult<R, E>,
    /// When its answer arrived, from the start of the call.
    pub latency: Option<Duration>,
}

/// The outcome of a group call: every member, in group order (IP multicast
/// members that were not named follow, in the order they answered).
#[derive(Debug)]
pub struct GroupOutcome<R, E: fmt::Debug> {
    /// One entry per member.
    pub members: Vec<MemberOutcome<R, E>>,
    /// Whether the completion policy was met.
    pub complete: bool,
    /// How long the call took.
    pub elapsed: Duration,
}

impl<R, E: fmt::Debug> GroupOutcome<R, E> {
    /// The successful replies, with their members.
    pub fn replies(&self) -> impl Iterator<Item = (&str, &R)> {
        self.members
            .iter()
            .filter_map(|m| m.result.reply().map(|r| (m.member.as_str(), r)))
    }

    /// How many members count as successes (replies, ACCEPTs, sends).
    pub fn successes(&self) -> usize {
        self.members
            .iter()
            .filter(|m| m.result.is_success())
            .count()
    }

    /// The line of the member called `name`.
    pub fn member(&self, name: &str) -> Option<&MemberOutcome<R, E>> {
        self.members.iter().find(|m| m.member == name)
    }
}

/// A group call being built; `.await` it for a [`GroupOutcome`], or turn
/// it into a [`GroupStream`] with [`GroupCall::stream`].
#[must_use = "a call does nothing until it is awaited"]
pub struct GroupCall<Resp, E> {
    group: GroupClient,
    invocation: Invocation,
    completion: Completion,
    stragglers: Stragglers,
    _marker: PhantomData<fn() -> (Resp, E)>,
}

impl<Resp, E> fmt::Debug for GroupCall<Resp, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupCall")
            .field("invocation", &self.invocation)
            .field("completion", &self.completion)
            .field("stragglers", &self.stragglers)
            .finish()
    }
}

impl<Resp, E> GroupCall<Resp, E> {
    /// Complete when every member has answered (the default).
    pub fn all(mut self) -> Self {
        self.completion = Completion::All;
        self
    }
    /// Complete at the first success.
    pub fn first(mut self) -> Self {
        self.completion = Completion::First;
        self
    }
    /// Complete at `k` successes.
    pub fn quorum(mut self, k: usize) -> Self {
        self.completion = Completion::Quorum(k);
        self
    }
    /// The completion policy.
    pub fn completion(mut self, completion: Completion) -> Self {
        self.completion = completion;
        self
    }
    /// Absolute deadline of the whole group call (every member's exchange
    /// included).
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.invocation.options.deadline = Some(deadline);
        self
    }
    /// Deadline `timeout` from now.
    pub fn timeout(self, timeout: Duration) -> Self {
        self.deadline(Instant::now() + timeout)
    }
    /// Exchange protocol of every member call (RR or RRA).
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.invocation.options.protocol = protocol;
        self
    }
    /// Attempts after the first, for every fan-out member.
    pub fn retries(mut self, retries: u32) -> Self {
        self.invocation.options.retries = Some(retries);
        self
    }
    /// Wait for the members' replies (the default unless the IDL says
    /// otherwise).
    pub fn synchronous(mut self) -> Self {
        self.invocation.options.style = Style::Sync;
        if self.invocation.options.protocol == Protocol::R {
            self.invocation.options.protocol = Protocol::RR;
        }
        self
    }
    /// Members count when they have ACCEPTed, not when they have finished
    /// ([`MemberResult::Accepted`]).
    pub fn asynchronous(mut self) -> Self {
        self.invocation.options.style = Style::Async;
        if self.invocation.options.protocol == Protocol::R {
            self.invocation.options.protocol = Protocol::RR;
        }
        self
    }
    /// No replies: the request is sent once to every member (protocol R,
    /// maybe semantics); members count when it is sent
    /// ([`MemberResult::Sent`]).
    pub fn one_way(mut self) -> Self {
        self.invocation.options.style = Style::OneWay;
        self.invocation.options.protocol = Protocol::R;
        self
    }
    /// What happens to the members still out when the policy is met.
    pub fn stragglers(mut self, stragglers: Stragglers) -> Self {
        self.stragglers = stragglers;
        self
    }
    /// Adds a metadata entry.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.invocation.metadata.insert(key.into(), value.into());
        self
    }
    /// Calls a named object instance of the service on every member.
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.invocation.instance = instance.into();
        self
    }
    /// The invocation as every member gets it.
    pub fn invocation(&self) -> &Invocation {
        &self.invocation
    }
}

impl<Resp, E> GroupCall<Resp, E>
where
    Resp: prost::Message + Default + Send + 'static,
    E: Raisable,
{
    /// Starts the call and yields each member's outcome as it arrives;
    /// at the deadline, every member still out yields
    /// [`MemberResult::Timeout`], then the stream ends. The completion
    /// policy does not apply: the caller decides when it has enough, and
    /// dropping the stream treats the members still out as the call's
    /// [`Stragglers`] setting says.
    ///
    /// # Panics
    /// When polled outside a tokio runtime.
    pub fn stream(self) -> GroupStream<Resp, E> {
        GroupStream {
            state: StreamState::NotStarted(Some(self)),
            _marker: PhantomData,
        }
    }
}

/// An untyped member result.
#[derive(Debug)]
enum Raw {
    Answer(Result<Bytes, Status>),
    Accepted,
    Sent,
    Failed(Error),
    Timeout,
    Unreachable(Error),
}

impl Raw {
    fn is_success(&self) -> bool {
        matches!(self, Raw::Answer(Ok(_)) | Raw::Accepted | Raw::Sent)
    }

    fn of_call(result: Result<Outcome, Error>) -> Raw {
        match result {
            Ok(Outcome::Reply(r)) => Raw::Answer(r),
            Ok(Outcome::Accepted(_)) => Raw::Accepted,
            Ok(Outcome::Sent) => Raw::Sent,
            Err(e) => Raw::of_error(e),
        }
    }

    fn of_error(e: Error) -> Raw {
        match e {
            Error::DeadlineExceeded { .. } => Raw::Timeout,
            e @ Error::Unreachable { .. } => Raw::Unreachable(e),
            Error::Io(io) if is_refused(&io) => Raw::Unreachable(Error::Io(io)),
            e => Raw::Failed(e),
        }
    }

    fn typed<R: prost::Message + Default, E: Raisable>(self) -> MemberResult<R, E> {
        match self {
            Raw::Answer(Ok(bytes)) => match R::decode(bytes) {
                Ok(r) => MemberResult::Reply(r),
                Err(e) => MemberResult::Error(CallError::Rpc(Error::Decode(e))),
            },
            Raw::Answer(Err(status)) => MemberResult::Error(CallError::from_status(status)),
            Raw::Accepted => MemberResult::Accepted,
            Raw::Sent => MemberResult::Sent,
            Raw::Failed(e) => MemberResult::Error(CallError::Rpc(e)),
            Raw::Timeout => MemberResult::Timeout,
            Raw::Unreachable(e) => MemberResult::Unreachable(e),
        }
    }
}

fn is_refused(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}

type MemberFuture = BoxFuture<'static, (usize, Result<Outcome, Error>)>;

/// One member's row in a running call.
struct Row {
    name: String,
    addr: Option<SocketAddr>,
    result: Option<(Raw, Duration)>,
    /// It has a result (which a stream may have handed out already).
    done: bool,
}

/// A running group call: the members' exchanges and what each has done.
struct Gather {
    rows: Vec<Row>,
    /// Multicast members by address.
    by_addr: HashMap<SocketAddr, usize>,
    /// Whoever answers the multicast is a member.
    open: bool,
    fanout: FuturesUnordered<MemberFuture>,
    ip: Option<IpCall>,
    start: Instant,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    expired: bool,
    /// Rows without a result.
    waiting: usize,
    /// Rows settled and not yet handed out by a stream, in order.
    settled: std::collections::VecDeque<usize>,
    successes: usize,
}

impl Gather {
    fn start<Resp, E>(call: GroupCall<Resp, E>) -> (Gather, Completion, Stragglers) {
        let GroupCall {
            group,
            invocation,
            completion,
            stragglers,
            ..
        } = call;
        let start = Instant::now();
        let members = group.read().clone();
        let mut rows = Vec::with_capacity(members.len());
        let mut by_addr = HashMap::new();
        let fanout = FuturesUnordered::new();
        let mut expected = Vec::new();
        let mut early: Vec<(usize, Raw)> = Vec::new();
        for (i, m) in members.into_iter().enumerate() {
            match m.target {
                Target::Client(client) => {
                    let fut = client.channel().invoke(invocation.clone());
                    fanout.push(Box::pin(async move { (i, fut.await) }) as MemberFuture);
                    rows.push(Row {
                        name: m.name,
                        addr: None,
                        result: None,
                        done: false,
                    });
                }
                Target::Multicast(addr) => {
                    by_addr.insert(addr, i);
                    expected.push(addr);
                    rows.push(Row {
                        name: m.name,
                        addr: Some(addr),
                        result: None,
                        done: false,
                    });
                }
            }
        }
        let mut deadline = invocation.options.deadline;
        let ip = match &group.inner.multicast {
            Some(mc) => {
                let open = expected.is_empty();
                let Invocation {
                    service,
                    method,
                    instance,
                    payload,
                    metadata,
                    options,
                } = invocation;
                match mc.start(
                    service, method, instance, payload, metadata, &options, expected,
                ) {
                    Ok(call) => {
                        if options.style == Style::OneWay {
                            if open {
                                early.push((group_row(&mut rows, mc), Raw::Sent));
                            }
                            for &i in by_addr.values() {
                                early.push((i, Raw::Sent));
                            }
                            None
                        } else {
                            if open && deadline.is_none() {
                                // Whoever answers by the end of the call.
                                deadline = Some(call.give_up_at().into_std());
                            }
                            Some(call)
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "multicast request not sent");
                        if open {
                            early.push((group_row(&mut rows, mc), Raw::of_error(clone_error(&e))));
                        }
                        for &i in by_addr.values() {
                            early.push((i, Raw::of_error(clone_error(&e))));
                        }
                        None
                    }
                }
            }
            None => None,
        };
        // Open membership: members are whoever answers (the group's own
        // row, when a one-way or failed request has one, is not one).
        let open = ip.is_some() && by_addr.is_empty();
        let waiting = rows.len();
        let mut g = Gather {
            rows,
            by_addr,
            open,
            fanout,
            ip,
            start,
            sleep: deadline.map(|d| Box::pin(tokio::time::sleep_until(d.into()))),
            expired: false,
            waiting,
            successes: 0,
            settled: std::collections::VecDeque::new(),
        };
        for (i, raw) in early {
            g.record(i, raw);
        }
        (g, completion, stragglers)
    }

    fn record(&mut self, i: usize, raw: Raw) -> bool {
        let elapsed = self.start.elapsed();
        match self.rows.get_mut(i) {
            Some(row) if !row.done => {
                if raw.is_success() {
                    self.successes += 1;
                }
                row.result = Some((raw, elapsed));
                row.done = true;
                self.waiting -= 1;
                self.settled.push_back(i);
                true
            }
            _ => false,
        }
    }

    /// The row index of multicast member `addr` (a new row with open
    /// membership).
    fn row_of(&mut self, addr: SocketAddr) -> Option<usize> {
        if let Some(&i) = self.by_addr.get(&addr) {
            return Some(i);
        }
        if !self.open {
            return None;
        }
        let i = self.rows.len();
        self.rows.push(Row {
            name: addr.to_string(),
            addr: Some(addr),
            result: None,
            done: false,
        });
        self.by_addr.insert(addr, i);
        self.waiting += 1;
        Some(i)
    }

    /// Whether nothing more can come in.
    fn exhausted(&self) -> bool {
        self.expired || (self.waiting == 0 && !(self.open && self.ip.is_some()))
    }

    /// Waits for the next member to finish; `None` when nothing more can
    /// come in (everybody answered, or the deadline passed).
    fn poll_next_row(&mut self, cx: &mut Context<'_>) -> Poll<Option<usize>> {
        loop {
            if self.exhausted() {
                return Poll::Ready(None);
            }
            let mut progress = false;
            if let Poll::Ready(Some((i, result))) = self.fanout.poll_next_unpin(cx) {
                if self.record(i, Raw::of_call(result)) {
                    return Poll::Ready(Some(i));
                }
                progress = true;
            }
            if let Some(ip) = &mut self.ip {
                match ip.poll_event(cx) {
                    Poll::Ready(Some((addr, event))) => {
                        progress = true;
                        let raw = match event {
                            IpEvent::Answer(r) => Raw::Answer(r),
                            IpEvent::OutcomeUnknown => Raw::Failed(Error::OutcomeUnknown),
                            IpEvent::Accepted => Raw::Accepted,
                            IpEvent::Unreachable(attempts) => {
                                Raw::Unreachable(Error::Unreachable {
                                    may_have_run: true,
                                    attempts,
                                })
                            }
                        };
                        if let Some(i) = self.row_of(addr) {
                            if self.record(i, raw) {
                                return Poll::Ready(Some(i));
                            }
                        }
                    }
                    Poll::Ready(None) => {
                        progress = true;
                        let copies = self.ip.take().map_or(0, |c| c.copies());
                        // The call ended (deadline): named members still silent timed out.
                        let silent: Vec<usize> = self
                            .by_addr
                            .values()
                            .copied()
                            .filter(|&i| self.rows.get(i).is_some_and(|r| !r.done))
                            .collect();
                        tracing::trace!(copies, silent = silent.len(), "multicast call over");
                        if let Some(&i) = silent.first() {
                            for &j in &silent {
                                self.record(j, Raw::Timeout);
                            }
                            return Poll::Ready(Some(i));
                        }
                    }
                    Poll::Pending => {}
                }
            }
            if progress {
                continue;
            }
            if let Some(sleep) = &mut self.sleep {
                if sleep.as_mut().poll(cx).is_ready() {
                    self.expired = true;
                    return Poll::Ready(None);
                }
            }
            return Poll::Pending;
        }
    }

    fn needed(&self, completion: Completion) -> Option<usize> {
        match completion {
            Completion::All => None,
            Completion::First => Some(1),
            Completion::Quorum(k) => Some(k),
        }
    }

    /// Lets the members still out finish in a background task, or drops
    /// them.
    fn release(self, stragglers: Stragglers) {
        let Gather {
            fanout, ip, open, ..
        } = self;
        let ip = ip.filter(|_| !open);
        if stragglers == Stragglers::Cancel || (fanout.is_empty() && ip.is_none()) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    let mut fanout = fanout;
                    let mut ip = ip;
                    let drain_ip = std::future::poll_fn(|cx| match &mut ip {
                        Some(call) => match call.poll_event(cx) {
                            Poll::Ready(Some(_)) => {
                                cx.waker().wake_by_ref();
                                Poll::Pending
                            }
                            Poll::Ready(None) => Poll::Ready(()),
                            Poll::Pending => Poll::Pending,
                        },
                        None => Poll::Ready(()),
                    });
                    let drain_fanout = async { while fanout.next().await.is_some() {} };
                    futures::join!(drain_ip, drain_fanout);
                });
            }
            Err(_) => tracing::debug!("no runtime to finish the stragglers in; cancelled"),
        }
    }

    /// Marks the rows still out and builds the outcome.
    fn outcome<R: prost::Message + Default, E: Raisable>(
        mut self,
        complete: bool,
        stragglers: Stragglers,
    ) -> GroupOutcome<R, E> {
        let expired = self.expired || self.sleep.as_ref().is_some_and(|s| s.is_elapsed());
        let rows = std::mem::take(&mut self.rows);
        let elapsed = self.start.elapsed();
        self.release(stragglers);
        let members = rows
            .into_iter()
            .map(|row| match row.result {
                Some((raw, latency)) => MemberOutcome {
                    member: row.name,
                    addr: row.addr,
                    result: raw.typed(),
                    latency: Some(latency),
                },
                None => MemberOutcome {
                    member: row.name,
                    addr: row.addr,
                    result: if expired {
                        MemberResult::Timeout
                    } else {
                        MemberResult::Cancelled
                    },
                    latency: None,
                },
            })
            .collect();
        GroupOutcome {
            members,
            complete,
            elapsed,
        }
    }
}

/// A row standing for the whole multicast group (open membership, when
/// there is nobody to report but the request itself).
fn group_row(rows: &mut Vec<Row>, mc: &MulticastClient) -> usize {
    let group = mc.group();
    rows.push(Row {
        name: group.to_string(),
        addr: Some(group),
        result: None,
        done: false,
    });
    rows.len() - 1
}

fn clone_error(e: &Error) -> Error {
    match e {
        Error::DeadlineExceeded {
            may_have_run,
            attempts,
        } => Error::DeadlineExceeded {
            may_have_run: *may_have_run,
            attempts: *attempts,
        },
        Error::MessageTooLarge { size, limit } => Error::MessageTooLarge {
            size: *size,
            limit: *limit,
        },
        Error::Io(io) => Error::Io(io::Error::new(io.kind(), io.to_string())),
        Error::InvalidCall(s) => Error::InvalidCall(s.clone()),
        other => Error::InvalidCall(other.to_string()),
    }
}

impl<Resp, E> IntoFuture for GroupCall<Resp, E>
where
    Resp: prost::Message + Default + Send + 'static,
    E: Raisable,
{
    type Output = GroupOutcome<Resp, E>;
    type IntoFuture = BoxFuture<'static, Self::Output>;

    /// Runs the call. The outcome is ready as soon as the policy is met,
    /// or can no longer be met (too many members failed for the quorum),
    /// or every member has answered, or the deadline passed.
    ///
    /// # Cancel safety
    /// Dropping the future cancels every member's exchange (as
    /// [`Stragglers::Cancel`]).
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let (mut g, completion, stragglers) = Gather::start(self);
            let needed = g.needed(completion);
            let met = |g: &Gather| needed.is_some_and(|k| g.successes >= k);
            // A quorum that the members still out can no longer reach ends
            // the call at once (whoever answers an open multicast group is
            // not counted in advance, so it never ends early).
            let hopeless = |g: &Gather| {
                needed.is_some_and(|k| g.successes + g.waiting < k) && !(g.open && g.ip.is_some())
            };
            while !met(&g) && !hopeless(&g) {
                if std::future::poll_fn(|cx| g.poll_next_row(cx))
                    .await
                    .is_none()
                {
                    break;
                }
            }
            if met(&g) {
                if let Some(ip) = &mut g.ip {
                    if g.open {
                        ip.stop_resending();
                    }
                }
            }
            let complete = match needed {
                Some(k) => g.successes >= k,
                None => {
                    g.waiting == 0
                        && g.rows
                            .iter()
                            .all(|r| r.result.as_ref().is_some_and(|(raw, _)| raw.is_success()))
                }
            };
            g.outcome(complete, stragglers)
        })
    }
}

enum StreamState<Resp, E> {
    NotStarted(Option<GroupCall<Resp, E>>),
    Running(Box<Gather>, Stragglers),
    /// The deadline passed: hand out the members still out as timed out.
    Draining(std::vec::IntoIter<(String, Option<SocketAddr>)>),
    Done,
}

/// The members' outcomes of a group call, as they arrive: see
/// [`GroupCall::stream`].
#[must_use = "streams do nothing unless polled"]
pub struct GroupStream<Resp, E> {
    state: StreamState<Resp, E>,
    _marker: PhantomData<fn() -> (Resp, E)>,
}

impl<Resp, E> fmt::Debug for GroupStream<Resp, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            StreamState::NotStarted(_) => "not started",
            StreamState::Running(..) => "running",
            StreamState::Draining(_) => "draining",
            StreamState::Done => "done",
        };
        f.debug_struct("GroupStream")
            .field("state", &state)
            .finish()
    }
}

impl<Resp, E> Unpin for GroupStream<Resp, E> {}

impl<Resp, E> Drop for GroupStream<Resp, E> {
    fn drop(&mut self) {
        if let StreamState::Running(g, stragglers) =
            std::mem::replace(&mut self.state, StreamState::Done)
        {
            g.release(stragglers);
        }
    }
}

impl<Resp, E> Stream for GroupStream<Resp, E>
where
    Resp: prost::Message + Default + Send + 'static,
    E: Raisable,
{
    type Item = MemberOutcome<Resp, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match &mut self.state {
                StreamState::NotStarted(call) => {
                    let Some(call) = call.take() else {
                        self.state = StreamState::Done;
                        continue;
                    };
                    let (g, _, stragglers) = Gather::start(call);
                    self.state = StreamState::Running(Box::new(g), stragglers);
                    // Members settled at the start (a multicast request that
                    // could not be sent, one-way sends) come out first.
                }
                StreamState::Running(g, _) => {
                    while let Some(i) = g.settled.pop_front() {
                        let Some(row) = g.rows.get_mut(i) else {
                            continue;
                        };
                        if let Some((raw, latency)) = row.result.take() {
                            return Poll::Ready(Some(MemberOutcome {
                                member: row.name.clone(),
                                addr: row.addr,
                                result: raw.typed(),
                                latency: Some(latency),
                            }));
                        }
                    }
                    match g.poll_next_row(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Some(_)) => continue,
                        Poll::Ready(None) => {
                            let left: Vec<_> = g
                                .rows
                                .drain(..)
                                .filter(|r| !r.done)
                                .map(|r| (r.name, r.addr))
                                .collect();
                            if let StreamState::Running(g, stragglers) = std::mem::replace(
                                &mut self.state,
                                StreamState::Draining(left.into_iter()),
                            ) {
                                g.release(stragglers);
                            }
                        }
                    }
                }
                StreamState::Draining(left) => match left.next() {
                    Some((member, addr)) => {
                        return Poll::Ready(Some(MemberOutcome {
                            member,
                            addr,
                            result: MemberResult::Timeout,
                            latency: None,
                        }))
                    }
                    None => {
                        self.state = StreamState::Done;
                    }
                },
                StreamState::Done => return Poll::Ready(None),
            }
        }
    }
}
