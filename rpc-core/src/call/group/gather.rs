//! Gathering the members' answers of one group call: one exchange per
//! fan-out member and one call on the group's one-to-many transport (IP
//! multicast), polled together on the caller's task until the completion
//! policy is met or the deadline passes.

#[allow(clippy::wildcard_imports)] // the group call's parts share its imports
use super::*;

/// An untyped member result.
#[derive(Debug)]
pub(super) enum Raw {
    Answer(crate::call::RawResult),
    Accepted,
    Sent,
    Failed(Error),
    Timeout,
    Unreachable(Error),
}

impl Raw {
    pub(super) fn is_success(&self) -> bool {
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

    pub(super) fn typed<R: prost::Message + Default, E: Raisable>(self) -> MemberResult<R, E> {
        match self {
            Raw::Answer(Ok(reply)) => match R::decode(reply.payload) {
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

pub(super) fn is_refused(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}

pub(super) type MemberFuture = BoxFuture<'static, (usize, Result<Outcome, Error>)>;

/// One member's row in a running call.
pub(super) struct Row {
    pub(super) name: String,
    pub(super) addr: Option<SocketAddr>,
    pub(super) result: Option<(Raw, Duration)>,
    /// It has a result (which a stream may have handed out already).
    pub(super) done: bool,
}

/// A running group call: the members' exchanges and what each has done.
pub(super) struct Gather {
    pub(super) rows: Vec<Row>,
    /// Multicast members by address.
    pub(super) by_addr: HashMap<SocketAddr, usize>,
    /// Whoever answers the multicast is a member.
    pub(super) open: bool,
    pub(super) fanout: FuturesUnordered<MemberFuture>,
    pub(super) ip: Option<Box<dyn GroupTransportCall>>,
    pub(super) start: Instant,
    pub(super) sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    pub(super) expired: bool,
    /// Rows without a result.
    pub(super) waiting: usize,
    /// Rows settled and not yet handed out by a stream, in order.
    pub(super) settled: std::collections::VecDeque<usize>,
    pub(super) successes: usize,
}

impl Gather {
    pub(super) fn start(call: Untyped) -> (Gather, Completion, Stragglers) {
        let Untyped {
            group,
            invocation,
            completion,
            stragglers,
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
        let ip = match group.transport() {
            Some(transport) => {
                let open = expected.is_empty();
                let one_way = invocation.options.style == Style::OneWay;
                match transport.start(invocation, expected) {
                    Ok(call) => {
                        if one_way {
                            if open {
                                early.push((
                                    group_row(&mut rows, transport.group_addr()),
                                    Raw::Sent,
                                ));
                            }
                            for &i in by_addr.values() {
                                early.push((i, Raw::Sent));
                            }
                            None
                        } else {
                            if open && deadline.is_none() {
                                // Whoever answers by the end of the call.
                                deadline = Some(call.give_up_at());
                            }
                            Some(call)
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "multicast request not sent");
                        if open {
                            early.push((
                                group_row(&mut rows, transport.group_addr()),
                                Raw::of_error(clone_error(&e)),
                            ));
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
    pub(super) fn poll_next_row(&mut self, cx: &mut Context<'_>) -> Poll<Option<usize>> {
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
                            MemberEvent::Answer(r) => Raw::Answer(r),
                            MemberEvent::OutcomeUnknown => Raw::Failed(Error::OutcomeUnknown),
                            MemberEvent::Accepted => Raw::Accepted,
                            MemberEvent::Unreachable(attempts) => {
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

    pub(super) fn needed(&self, completion: Completion) -> Option<usize> {
        match completion {
            Completion::All => None,
            Completion::First => Some(1),
            Completion::Quorum(k) => Some(k),
        }
    }

    /// Lets the members still out finish in a background task, or drops
    /// them.
    pub(super) fn release(self, stragglers: Stragglers) {
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
    pub(super) fn outcome<R: prost::Message + Default, E: Raisable>(
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

/// A row standing for the whole group at `group` (open membership, when
/// there is nobody to report but the request itself).
pub(super) fn group_row(rows: &mut Vec<Row>, group: SocketAddr) -> usize {
    rows.push(Row {
        name: group.to_string(),
        addr: Some(group),
        result: None,
        done: false,
    });
    rows.len() - 1
}

pub(super) fn clone_error(e: &Error) -> Error {
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
