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
//! The group call does not know IP multicast: it drives a one-to-many
//! transport through a small trait of its own (`transport.rs`), which
//! [`crate::multicast`] implements and plugs in with
//! [`GroupClient::with_multicast`].
//!
//! Each member keeps single-call semantics (retransmission, duplicate
//! filtering, at-most-once), because each member's exchange is that of a
//! unicast call with the member's own reply history.
//!
//! ```text
//! group.call(..)                  GroupCall<Resp, E, Sync>     .await -> GroupOutcome (every member)
//!     .first() / .quorum(k) / .all()                           when it is complete
//!     .timeout(d)                                              one deadline for the whole call
//!     .asynchronous()             GroupCall<Resp, E, Async>    members count at their ACCEPT
//!     .one_way()                  GroupCall<Resp, E, OneWay>   members count once it is sent
//!     .stragglers(Stragglers::Cancel | Finish)                 what happens to the members still out
//!     .stream()                   GroupStream<Resp, E>         yields MemberOutcome as they arrive
//! ```
//!
//! The style is a type parameter, as on a unicast [`Call`](super::Call),
//! with the same markers ([`style`](super::style)); a group has no
//! deferred style (a method the IDL declares `deferred` is called
//! synchronously in a group).

mod call;
mod gather;
mod outcome;
mod stream;
mod transport;

use super::{Client, Invocation, Outcome};
use crate::error::{CallError, Error, Raisable};
use crate::service::{MethodInfo, Protocol, ServiceInfo, Style};
pub use call::GroupCall;
use call::Untyped;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use gather::*;
pub use outcome::{GroupOutcome, MemberOutcome, MemberResult};
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
pub use stream::GroupStream;
use stream::StreamState;
pub(crate) use transport::{GroupTransport, GroupTransportCall, MemberEvent};

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
    /// The one-to-many transport (IP multicast), if any.
    transport: Option<Arc<dyn GroupTransport>>,
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
            .field("transport", &self.inner.transport)
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

    /// A group reached through a one-to-many `transport` (plus any fan-out
    /// members added later). The transport's module offers the public
    /// constructor: [`GroupClient::with_multicast`] for IP multicast.
    pub(crate) fn with_transport(transport: Arc<dyn GroupTransport>) -> GroupClient {
        GroupClient {
            inner: Arc::new(Inner {
                members: RwLock::default(),
                transport: Some(transport),
            }),
        }
    }

    /// The one-to-many transport, if the group has one.
    pub(crate) fn transport(&self) -> Option<&Arc<dyn GroupTransport>> {
        self.inner.transport.as_ref()
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
        if self.inner.transport.is_none() {
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

    /// A typed group call of `method` with `request`, synchronous (as
    /// [`Client::call`] is); generated group stubs call this and then
    /// change the style to the IDL's: `.asynchronous()` for asynchronous
    /// methods, `.one_way()` for one-way ones. A deferred method stays
    /// synchronous: a group call has no deferred style.
    pub fn call<Req, Resp, E>(
        &self,
        service: &'static ServiceInfo,
        method: &'static MethodInfo,
        request: &Req,
    ) -> GroupCall<Resp, E, super::style::Sync>
    where
        Req: prost::Message,
    {
        GroupCall {
            group: self.clone(),
            invocation: Invocation::new(service, method, request, Style::Sync),
            completion: Completion::All,
            stragglers: Stragglers::default(),
            _marker: PhantomData,
        }
    }
}
