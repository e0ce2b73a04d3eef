//! Request bodies under the door's memory limits: each message's length
//! prefix read first, small messages from the connection's allowance,
//! larger ones from the server's buffer budget, and the receive timeout.

#[allow(clippy::wildcard_imports)] // the door's parts share its imports
use super::*;

/// What the message being received holds; given back on drop.
pub(super) enum Hold {
    Nothing,
    /// Bytes of the connection's allowance.
    Allowance(#[allow(dead_code)] Allowance),
    /// Bytes of the server's budget.
    Budget(#[allow(dead_code)] Reservation),
}

/// Bytes taken from a connection's allowance, given back on drop.
pub(super) struct Allowance {
    counter: Arc<AtomicUsize>,
    bytes: usize,
}

impl Allowance {
    /// `bytes` of `counter`'s [`CONNECTION_ALLOWANCE`], if that many are
    /// left.
    fn take(counter: &Arc<AtomicUsize>, bytes: usize) -> Option<Allowance> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|&total| total <= CONNECTION_ALLOWANCE)
            })
            .ok()?;
        Some(Allowance {
            counter: Arc::clone(counter),
            bytes,
        })
    }
}

impl Drop for Allowance {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A request body on its way to tonic: every message's length is read
/// from its 5-byte prefix and covered (connection allowance or buffer
/// budget) before its bytes are passed on, and the whole body must arrive
/// by `deadline`.
pub(super) struct Counted {
    pub(super) inner: Incoming,
    pub(super) door: Arc<GrpcDoor>,
    pub(super) allowance: Arc<AtomicUsize>,
    pub(super) peer: Option<SocketAddr>,
    pub(super) deadline: tokio::time::Instant,
    /// Made the first time the body is not all there.
    pub(super) timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The prefix of the next message, as far as it came.
    pub(super) prefix: [u8; 5],
    pub(super) prefix_len: usize,
    /// Bytes of the current message: all, and still to come.
    pub(super) len: usize,
    pub(super) left: usize,
    pub(super) hold: Hold,
    /// An error was returned: the body ends.
    pub(super) failed: bool,
}

impl Counted {
    /// Walks `data` (the next bytes of the body) through the messages'
    /// prefixes and bodies, covering each message as its prefix completes.
    /// Each turn consumes at least one byte of `data`.
    fn account(&mut self, mut data: &[u8]) -> Result<(), tonic::Status> {
        while !data.is_empty() {
            if self.left > 0 {
                let n = self.left.min(data.len());
                self.left -= n;
                data = &data[n..];
                if self.left == 0 {
                    // Passed on whole: tonic decodes it now.
                    self.hold = Hold::Nothing;
                } else if let Hold::Budget(r) = &mut self.hold {
                    r.set_filled(self.len - self.left);
                }
                continue;
            }
            let n = (self.prefix.len() - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[..n]);
            self.prefix_len += n;
            data = &data[n..];
            if self.prefix_len == self.prefix.len() {
                self.prefix_len = 0;
                let p = self.prefix;
                let len = usize::try_from(u32::from_be_bytes([p[1], p[2], p[3], p[4]]))
                    .unwrap_or(usize::MAX);
                self.cover(len)?;
                (self.len, self.left) = (len, len);
            }
        }
        Ok(())
    }

    /// Covers a message of `len` bytes: from the connection's allowance if
    /// it fits, from the budget otherwise, or refuses it.
    fn cover(&mut self, len: usize) -> Result<(), tonic::Status> {
        self.hold = Hold::Nothing;
        if len == 0 || len > MAX_MESSAGE_LEN {
            // Nothing to buffer, or tonic refuses it from its prefix.
            return Ok(());
        }
        if len <= CONNECTION_ALLOWANCE {
            if let Some(a) = Allowance::take(&self.allowance, len) {
                self.hold = Hold::Allowance(a);
                return Ok(());
            }
        }
        match self.door.budget.try_reserve(len) {
            Some(r) => {
                self.hold = Hold::Budget(r);
                Ok(())
            }
            None => {
                self.door.budget.count_refused();
                bump(&self.door.no_budget);
                tracing::debug!(
                    peer = ?self.peer,
                    len,
                    budget = self.door.budget.limit(),
                    "no buffer budget for a grpc request; refused"
                );
                Err(tonic::Status::resource_exhausted(format!(
                    "server busy: no room to receive a message of {len} bytes now"
                )))
            }
        }
    }

    /// Ends the body with `status` (tonic answers the call with it).
    fn fail(
        &mut self,
        mut status: tonic::Status,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        status
            .metadata_mut()
            .insert(md::INCARNATION, self.door.incarnation.clone());
        self.failed = true;
        self.hold = Hold::Nothing;
        self.timer = None;
        Poll::Ready(Some(Err(status)))
    }
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if let Err(status) = this.account(data) {
                        return this.fail(status);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.hold = Hold::Nothing;
                this.timer = None;
                Poll::Ready(Some(Err(tonic::Status::from_error(Box::new(error)))))
            }
            Poll::Ready(None) => {
                this.hold = Hold::Nothing;
                this.timer = None;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if std::future::Future::poll(timer.as_mut(), cx).is_pending() {
                    return Poll::Pending;
                }
                bump(&this.door.timeouts);
                let timeout = this.door.config.receive_timeout;
                tracing::debug!(peer = ?this.peer, ?timeout, "grpc request not received in time; refused");
                this.fail(tonic::Status::resource_exhausted(format!(
                    "request not received whole within {timeout:?}"
                )))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
