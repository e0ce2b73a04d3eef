//! [`GroupStream`]: the members' outcomes as they arrive.

#[allow(clippy::wildcard_imports)] // the group call's parts share its imports
use super::*;

pub(super) enum StreamState {
    NotStarted(Option<Untyped>),
    Running(Box<Gather>, Stragglers),
    /// The deadline passed: hand out the members still out as timed out.
    Draining(std::vec::IntoIter<(String, Option<SocketAddr>)>),
    Done,
}

/// The members' outcomes of a group call, as they arrive: see
/// [`GroupCall::stream`].
#[must_use = "streams do nothing unless polled"]
pub struct GroupStream<Resp, E> {
    pub(super) state: StreamState,
    pub(super) _marker: PhantomData<fn() -> (Resp, E)>,
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
