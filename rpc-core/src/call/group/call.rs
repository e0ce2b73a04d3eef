//! [`GroupCall`]: the options of one call to a group (completion,
//! deadline, style, stragglers) and awaiting it.

#[allow(clippy::wildcard_imports)] // the group call's parts share its imports
use super::*;
use crate::call::style;

/// A group call being built; `.await` it for a [`GroupOutcome`], or turn
/// it into a [`GroupStream`] with [`GroupCall::stream`].
///
/// `S` is the style, as for a unicast [`Call`](crate::Call): one of the
/// markers of [`style`] ([`style::Sync`], the default, [`style::Async`],
/// [`style::OneWay`]), changed with [`GroupCall::synchronous`],
/// [`GroupCall::asynchronous`] and [`GroupCall::one_way`]. A group call
/// has no deferred style: the stub of a method the IDL declares
/// `deferred` calls the group synchronously. Whatever the style, the
/// call yields a [`GroupOutcome`]; the style decides what a member's
/// success is ([`MemberResult::Reply`], [`MemberResult::Accepted`] or
/// [`MemberResult::Sent`]).
#[must_use = "a call does nothing until it is awaited"]
pub struct GroupCall<Resp, E, S = style::Sync> {
    pub(super) group: GroupClient,
    pub(super) invocation: Invocation,
    pub(super) completion: Completion,
    pub(super) stragglers: Stragglers,
    pub(super) _marker: crate::call::Typed<Resp, E, S>,
}

/// A group call without its types: what starts running.
pub(super) struct Untyped {
    pub(super) group: GroupClient,
    pub(super) invocation: Invocation,
    pub(super) completion: Completion,
    pub(super) stragglers: Stragglers,
}

impl<Resp, E, S> fmt::Debug for GroupCall<Resp, E, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupCall")
            .field("invocation", &self.invocation)
            .field("completion", &self.completion)
            .field("stragglers", &self.stragglers)
            .finish()
    }
}

impl<Resp, E, S> GroupCall<Resp, E, S> {
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
    crate::call::option_setters!(common);
    crate::call::option_setters!(exchange);

    /// This call in another style, with the protocol that style takes: R
    /// for one-way, else the current one (RR when it was R).
    fn restyle<T>(mut self, style: Style) -> GroupCall<Resp, E, T> {
        let options = &mut self.invocation.options;
        options.style = style;
        if style == Style::OneWay {
            options.protocol = Protocol::R;
        } else if options.protocol == Protocol::R {
            options.protocol = Protocol::RR;
        }
        GroupCall {
            group: self.group,
            invocation: self.invocation,
            completion: self.completion,
            stragglers: self.stragglers,
            _marker: PhantomData,
        }
    }
    crate::call::style_setters!(GroupCall:
        /// Wait for the members' replies (the default unless the IDL says
        /// otherwise).
        synchronous => Sync,
        /// Members count when they have ACCEPTed, not when they have
        /// finished ([`MemberResult::Accepted`]).
        asynchronous => Async,
        /// No replies: the request is sent once to every member (protocol
        /// R, maybe semantics); members count when it is sent
        /// ([`MemberResult::Sent`]).
        one_way => OneWay,
    );
    /// What happens to the members still out when the policy is met.
    pub fn stragglers(mut self, stragglers: Stragglers) -> Self {
        self.stragglers = stragglers;
        self
    }

    pub(super) fn untyped(self) -> Untyped {
        Untyped {
            group: self.group,
            invocation: self.invocation,
            completion: self.completion,
            stragglers: self.stragglers,
        }
    }
}

impl<Resp, E, S> GroupCall<Resp, E, S>
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
            state: StreamState::NotStarted(Some(self.untyped())),
            _marker: PhantomData,
        }
    }
}

impl<Resp, E, S> IntoFuture for GroupCall<Resp, E, S>
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
        let call = self.untyped();
        Box::pin(async move {
            let (mut g, completion, stragglers) = Gather::start(call);
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
