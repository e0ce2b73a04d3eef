//! What a group call returns: each member's [`MemberResult`], as a
//! [`MemberOutcome`] when it arrives and in a [`GroupOutcome`] at the end.

#[allow(clippy::wildcard_imports)] // the group call's parts share its imports
use super::*;

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
