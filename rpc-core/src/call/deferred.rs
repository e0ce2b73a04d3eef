//! [`Deferred`]: the handle of a deferred-synchronous call.

use crate::error::CallError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

type Callback<R, E> = Box<dyn FnOnce(Result<R, CallError<E>>) + Send>;

enum Slot<R, E: fmt::Debug> {
    Pending {
        waker: Option<Waker>,
        callback: Option<Callback<R, E>>,
    },
    Ready(Result<R, CallError<E>>),
    Taken,
}

struct Shared<R, E: fmt::Debug> {
    slot: Mutex<Slot<R, E>>,
}

impl<R, E: fmt::Debug> Shared<R, E> {
    fn lock(&self) -> MutexGuard<'_, Slot<R, E>> {
        // A poisoned lock only means a callback panicked; the slot itself
        // is always left in a valid state.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn complete(&self, result: Result<R, CallError<E>>) {
        let mut slot = self.lock();
        match std::mem::replace(&mut *slot, Slot::Taken) {
            Slot::Pending {
                callback: Some(cb), ..
            } => {
                drop(slot);
                cb(result);
            }
            Slot::Pending {
                waker,
                callback: None,
            } => {
                *slot = Slot::Ready(result);
                drop(slot);
                if let Some(w) = waker {
                    w.wake();
                }
            }
            other => *slot = other,
        }
    }
}

/// The result of a deferred-synchronous call, to be collected later.
///
/// It is returned at the server's ACCEPT. A background task keeps the call
/// alive (retransmitting result queries if the reply is lost) until the
/// result arrives or the deadline passes, whether or not anybody polls the
/// handle. Collect the result by awaiting the handle, by polling it with
/// [`Deferred::try_take`], or with a callback ([`Deferred::on_complete`]).
///
/// # Cancel safety
/// Dropping an awaiting future of the handle loses nothing: the handle can
/// be awaited again. Dropping the handle itself before the result arrived
/// abandons the call, as dropping a synchronous call's future does: the
/// background task stops and the server is told, best effort (CANCEL on
/// UDP and TCP, the stream's reset on gRPC), so that a handler still
/// running sees [`CallContext::cancelled`](crate::CallContext::cancelled).
/// To let the call finish without keeping the handle, give it a callback
/// ([`Deferred::on_complete`]).
pub struct Deferred<R, E: fmt::Debug> {
    shared: Arc<Shared<R, E>>,
    /// The task driving the call, stopped if the handle is dropped before
    /// the result arrived (`None`: nothing to stop).
    task: Option<tokio::task::AbortHandle>,
}

impl<R, E: fmt::Debug> Drop for Deferred<R, E> {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            if matches!(*self.shared.lock(), Slot::Pending { .. }) {
                task.abort();
            }
        }
    }
}

impl<R, E: fmt::Debug> fmt::Debug for Deferred<R, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deferred")
            .field("ready", &self.is_ready())
            .finish()
    }
}

impl<R: Send + 'static, E: fmt::Debug + Send + 'static> Deferred<R, E> {
    /// A handle whose result is produced by `fut`, driven by a task of its own.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn spawn(fut: impl Future<Output = Result<R, CallError<E>>> + Send + 'static) -> Self {
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot::Pending {
                waker: None,
                callback: None,
            }),
        });
        let task_shared = shared.clone();
        let task = tokio::spawn(async move {
            let result = fut.await;
            task_shared.complete(result);
        })
        .abort_handle();
        Deferred {
            shared,
            task: Some(task),
        }
    }

    /// A handle that already holds its result.
    pub fn ready(result: Result<R, CallError<E>>) -> Self {
        Deferred {
            shared: Arc::new(Shared {
                slot: Mutex::new(Slot::Ready(result)),
            }),
            task: None,
        }
    }
}

impl<R, E: fmt::Debug> Deferred<R, E> {
    /// Whether the result has arrived (and was not taken yet).
    pub fn is_ready(&self) -> bool {
        matches!(*self.shared.lock(), Slot::Ready(_))
    }

    /// The result if it has arrived, without waiting; `None` otherwise (or
    /// when it was taken already).
    pub fn try_take(&mut self) -> Option<Result<R, CallError<E>>> {
        let mut slot = self.shared.lock();
        match std::mem::replace(&mut *slot, Slot::Taken) {
            Slot::Ready(r) => Some(r),
            other => {
                *slot = other;
                None
            }
        }
    }

    /// Runs `callback` with the result when it arrives (at once, on this
    /// thread, if it already has; otherwise on the task that receives it).
    pub fn on_complete(mut self, callback: impl FnOnce(Result<R, CallError<E>>) + Send + 'static) {
        // The call goes on without the handle.
        self.task = None;
        let mut slot = self.shared.lock();
        match std::mem::replace(&mut *slot, Slot::Taken) {
            Slot::Ready(r) => {
                drop(slot);
                callback(r);
            }
            Slot::Pending { .. } => {
                *slot = Slot::Pending {
                    waker: None,
                    callback: Some(Box::new(callback)),
                };
            }
            Slot::Taken => {}
        }
    }
}

impl<R, E: fmt::Debug> Future for Deferred<R, E> {
    type Output = Result<R, CallError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.shared.lock();
        match std::mem::replace(&mut *slot, Slot::Taken) {
            Slot::Ready(r) => Poll::Ready(r),
            Slot::Pending { callback, .. } => {
                *slot = Slot::Pending {
                    waker: Some(cx.waker().clone()),
                    callback,
                };
                Poll::Pending
            }
            Slot::Taken => Poll::Ready(Err(CallError::Rpc(crate::error::Error::InvalidCall(
                "deferred result already taken".into(),
            )))),
        }
    }
}

impl<R, E: fmt::Debug> Unpin for Deferred<R, E> {}
