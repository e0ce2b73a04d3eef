//! Multicast by fan-out: one logical call to a group of members, each a
//! [`Client`] on any transport, complete when a [`Completion`] policy says so.
//!
//! Each member keeps single-call semantics (retransmission, duplicate
//! filtering, at-most-once) because each member call is an ordinary call on
//! that member's channel; the fan-out runs them concurrently.

use super::{CallOptions, Client, Invocation, Outcome, RawResult};
use crate::error::{CallError, Error, Raisable};
use crate::service::{Metadata, MethodInfo, Protocol, ServiceInfo, Style};
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use std::fmt;
use std::future::IntoFuture;
use std::marker::PhantomData;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// When a group call is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// Every member has answered (or failed, or the deadline passed).
    All,
    /// The first successful reply.
    First,
    /// At least `k` successful replies.
    Quorum(usize),
}

/// A set of members, each reached through its own [`Client`]. Members can
/// be added and removed while calls run; a call uses the members present
/// when it starts.
#[derive(Clone, Default)]
pub struct GroupClient {
    members: Arc<RwLock<Vec<(String, Client)>>>,
}

impl fmt::Debug for GroupClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.members().into_iter().map(|(n, _)| n).collect();
        f.debug_struct("GroupClient").field("members", &names).finish()
    }
}

impl GroupClient {
    /// An empty group.
    pub fn new() -> GroupClient {
        GroupClient::default()
    }

    /// A group of named members.
    pub fn from_members(members: impl IntoIterator<Item = (String, Client)>) -> GroupClient {
        let g = GroupClient::new();
        for (name, client) in members {
            g.add(name, client);
        }
        g
    }

    /// Adds (or replaces) the member called `name`.
    pub fn add(&self, name: impl Into<String>, client: Client) {
        let name = name.into();
        let mut m = self.members.write().unwrap_or_else(|p| p.into_inner());
        m.retain(|(n, _)| *n != name);
        m.push((name, client));
    }

    /// Removes the member called `name`; returns whether it was there.
    pub fn remove(&self, name: &str) -> bool {
        let mut m = self.members.write().unwrap_or_else(|p| p.into_inner());
        let before = m.len();
        m.retain(|(n, _)| n != name);
        m.len() != before
    }

    /// The current members.
    pub fn members(&self) -> Vec<(String, Client)> {
        self.members.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A typed group call; generated group stubs call this.
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
        GroupCall {
            group: self.clone(),
            invocation: Invocation {
                service,
                method,
                instance: String::new(),
                payload: Bytes::from(request.encode_to_vec()),
                metadata: Metadata::new(),
                options: CallOptions { style: if method.oneway { Style::OneWay } else { Style::Sync }, ..options },
            },
            completion: Completion::All,
            _marker: PhantomData,
        }
    }
}

/// What one member did in a group call.
#[derive(Debug)]
pub enum MemberResult<R, E: fmt::Debug> {
    /// It replied (for one-way and asynchronous calls: it was sent / accepted).
    Reply(R),
    /// It answered with an error (typed or a status), or its call failed.
    Error(CallError<E>),
    /// The group deadline passed before it answered.
    Timeout,
    /// The policy was met before it answered; its call was cancelled.
    Cancelled,
}

/// One member's line in a [`GroupOutcome`].
#[derive(Debug)]
pub struct MemberOutcome<R, E: fmt::Debug> {
    /// The member's name.
    pub member: String,
    /// What it did.
    pub result: MemberResult<R, E>,
    /// When its answer arrived, from the start of the call.
    pub latency: Option<Duration>,
}

/// The outcome of a group call: every member, in group order.
#[derive(Debug)]
pub struct GroupOutcome<R, E: fmt::Debug> {
    /// One entry per member.
    pub members: Vec<MemberOutcome<R, E>>,
    /// Whether the completion policy was met.
    pub complete: bool,
}

impl<R, E: fmt::Debug> GroupOutcome<R, E> {
    /// The successful replies, with their members.
    pub fn replies(&self) -> impl Iterator<Item = (&str, &R)> {
        self.members.iter().filter_map(|m| match &m.result {
            MemberResult::Reply(r) => Some((m.member.as_str(), r)),
            _ => None,
        })
    }

    /// How many members replied successfully.
    pub fn successes(&self) -> usize {
        self.replies().count()
    }
}

/// A group call being built; `.await` it to run it.
#[must_use = "a call does nothing until it is awaited"]
pub struct GroupCall<Resp, E> {
    group: GroupClient,
    invocation: Invocation,
    completion: Completion,
    _marker: PhantomData<fn() -> (Resp, E)>,
}

impl<Resp, E> fmt::Debug for GroupCall<Resp, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupCall").field("invocation", &self.invocation).field("completion", &self.completion).finish()
    }
}

impl<Resp, E> GroupCall<Resp, E> {
    /// Complete when every member has answered (the default).
    pub fn all(mut self) -> Self {
        self.completion = Completion::All;
        self
    }
    /// Complete at the first successful reply.
    pub fn first(mut self) -> Self {
        self.completion = Completion::First;
        self
    }
    /// Complete at `k` successful replies.
    pub fn quorum(mut self, k: usize) -> Self {
        self.completion = Completion::Quorum(k);
        self
    }
    /// Deadline of the whole group call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.invocation.options.deadline = Some(Instant::now() + timeout);
        self
    }
    /// Exchange protocol of every member call.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.invocation.options.protocol = protocol;
        self
    }
    /// Complete when members have ACCEPTed, not when they have finished.
    pub fn asynchronous(mut self) -> Self {
        self.invocation.options.style = Style::Async;
        self
    }
    /// Adds a metadata entry.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.invocation.metadata.insert(key.into(), value.into());
        self
    }
}

fn decode<Resp: prost::Message + Default, E: Raisable>(raw: RawResult) -> MemberResult<Resp, E> {
    match raw {
        Ok(bytes) => match Resp::decode(bytes) {
            Ok(r) => MemberResult::Reply(r),
            Err(e) => MemberResult::Error(CallError::Rpc(Error::Decode(e))),
        },
        Err(status) => MemberResult::Error(CallError::from_status(status)),
    }
}

impl<Resp, E> IntoFuture for GroupCall<Resp, E>
where
    Resp: prost::Message + Default + Send + 'static,
    E: Raisable,
{
    type Output = GroupOutcome<Resp, E>;
    type IntoFuture = futures::future::BoxFuture<'static, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let members = self.group.members();
            let start = Instant::now();
            let deadline = self.invocation.options.deadline;
            let mut results: Vec<Option<(MemberResult<Resp, E>, Duration)>> = members.iter().map(|_| None).collect();
            let mut pending: FuturesUnordered<_> = members
                .iter()
                .enumerate()
                .map(|(i, (_, client))| {
                    let fut = client.channel().invoke(self.invocation.clone());
                    async move { (i, fut.await) }
                })
                .collect();
            let needed = match self.completion {
                Completion::All => usize::MAX,
                Completion::First => 1,
                Completion::Quorum(k) => k,
            };
            let mut successes = 0usize;
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    next = pending.next() => {
                        let Some((i, res)) = next else { break };
                        let result = match res {
                            Ok(Outcome::Reply(raw)) => decode::<Resp, E>(raw),
                            Ok(Outcome::Sent) | Ok(Outcome::Accepted(_)) => match Resp::decode(&[][..]) {
                                // One-way and asynchronous members have no reply
                                // body: report the empty message.
                                Ok(r) => MemberResult::Reply(r),
                                Err(e) => MemberResult::Error(CallError::Rpc(Error::Decode(e))),
                            },
                            Err(e) => MemberResult::Error(CallError::Rpc(e)),
                        };
                        if matches!(result, MemberResult::Reply(_)) {
                            successes += 1;
                        }
                        results[i] = Some((result, start.elapsed()));
                        if successes >= needed {
                            break;
                        }
                    }
                    () = &mut sleep => break,
                }
            }
            let timed_out = deadline.is_some_and(|d| Instant::now() >= d);
            let complete = match self.completion {
                Completion::All => results.iter().all(Option::is_some),
                _ => successes >= needed,
            };
            let members = members
                .into_iter()
                .zip(results)
                .map(|((member, _), r)| match r {
                    Some((result, latency)) => MemberOutcome { member, result, latency: Some(latency) },
                    None => MemberOutcome {
                        member,
                        result: if timed_out { MemberResult::Timeout } else { MemberResult::Cancelled },
                        latency: None,
                    },
                })
                .collect();
            GroupOutcome { members, complete }
        })
    }
}
