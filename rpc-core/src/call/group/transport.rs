//! The seam between a group call and a one-to-many transport: a request
//! sent once reaches several members, who answer one by one.
//!
//! The group call (`Gather`, in `gather.rs`) knows nothing of how
//! the request travels: it starts a [`GroupTransportCall`] through a
//! [`GroupTransport`] and turns each [`MemberEvent`] into a member's row.
//! IP multicast ([`crate::multicast`]) implements these traits; so could any
//! other transport where one send reaches many (a broadcast, a pub/sub
//! bus). One boxed call object per group call; events are polled through
//! it without allocating.

use crate::call::{Invocation, RawResult};
use crate::error::Error;
use std::any::Any;
use std::fmt;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Instant;

/// What happened for one member of a one-to-many call.
#[derive(Debug)]
pub(crate) enum MemberEvent {
    /// Its reply, or the status it answered with.
    Answer(RawResult),
    /// It said "outcome unknown: server restarted".
    OutcomeUnknown,
    /// It accepted an asynchronous request.
    Accepted,
    /// It stayed silent through every attempt (how many were made).
    Unreachable(u32),
}

/// A transport on which one request reaches a whole group, as a
/// [`GroupClient`](super::GroupClient) uses it.
pub(crate) trait GroupTransport: fmt::Debug + Send + Sync + 'static {
    /// The group's own address: names the group's row when there is no
    /// member to report but the request itself (a one-way request, or one
    /// that could not be sent, with open membership).
    fn group_addr(&self) -> SocketAddr;

    /// Starts a call: the request leaves now. `expected` names the members
    /// that must answer, by the address they answer from (empty: whoever
    /// answers is a member). A one-way call is sent and needs no polling.
    ///
    /// # Errors
    /// When the request cannot be sent at all (deadline already passed,
    /// message too large, a protocol the style does not take, the socket's
    /// error).
    fn start(
        &self,
        invocation: Invocation,
        expected: Vec<SocketAddr>,
    ) -> Result<Box<dyn GroupTransportCall>, Error>;

    /// The transport as [`Any`], so that the transport's own module can
    /// hand back its concrete client.
    fn as_any(&self) -> &dyn Any;
}

/// One call in progress on a [`GroupTransport`], driven by whoever polls
/// it (the group call, or the task that lets stragglers finish). Dropping
/// it ends the call.
pub(crate) trait GroupTransportCall: fmt::Debug + Send {
    /// The next member event, with the address the member answered from;
    /// `None` when the call is over (every expected member answered, or
    /// the transport gave up, or its time ran out).
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<(SocketAddr, MemberEvent)>>;

    /// When the call stops by itself (the deadline, or the transport's
    /// longest wait when the call has none).
    fn give_up_at(&self) -> Instant;

    /// Stops re-sending: the caller has what it needs and nobody in
    /// particular is awaited (open membership).
    fn stop_resending(&mut self);

    /// How many copies of the request were sent (for the logs).
    fn copies(&self) -> u32;
}
