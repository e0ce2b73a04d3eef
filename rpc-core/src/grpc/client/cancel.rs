//! Cancellation: a call abandoned after a copy of its request went out,
//! and before an answer came, sends a CANCEL ([`Abandon`]).

use super::exchange::{put_timeout, unary, Call};
use super::{md, Inner, PEER_OURS};
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::codegen::http::uri::PathAndQuery;

/// How long a CANCEL may take to be sent (it is best effort, never
/// retried).
const CANCEL_TIMEOUT: Duration = Duration::from_secs(1);

/// Where one exchange of a call stands, for its [`Abandon`]: whether a
/// copy of the request went out, and whether the server answered it (with
/// anything: a reply, a status, an ACCEPT, a refused handshake).
#[derive(Debug, Default)]
pub(super) struct Progress {
    pub(super) sent: AtomicBool,
    pub(super) answered: AtomicBool,
}

impl Progress {
    /// The collection of a deferred result: the request went out before.
    pub(super) fn already_sent() -> Progress {
        Progress {
            sent: AtomicBool::new(true),
            answered: AtomicBool::new(false),
        }
    }
}

/// Sends the CANCEL of an exchange when dropped after a copy went out and
/// before an answer came: the caller abandoned the call (dropped its
/// future or its deferred handle) or gave up on it (its deadline, its last
/// attempt). Best effort (idl/PROTOCOL.md, 11.1): one unary request with
/// flag `c`, in a task of its own, never retried; only to a server known
/// to be ours (a foreign one would take the empty message as a request),
/// and only with session metadata.
pub(super) struct Abandon {
    inner: Arc<Inner>,
    path: PathAndQuery,
    request_id: u64,
    incarnation: u64,
    pub(super) progress: Progress,
}

impl Abandon {
    pub(super) fn new(call: &Call, progress: Progress) -> Abandon {
        Abandon {
            inner: Arc::clone(&call.inner),
            path: call.path.clone(),
            request_id: call.request_id,
            incarnation: call.incarnation,
            progress,
        }
    }

    fn abandoned(&self) -> bool {
        self.progress.sent.load(Ordering::Relaxed)
            && !self.progress.answered.load(Ordering::Relaxed)
            && self.inner.config.session_metadata
            && self.inner.peer.load(Ordering::Relaxed) == PEER_OURS
    }
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if !self.abandoned() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!(
                request_id = self.request_id,
                "abandoned grpc call: no runtime to send its CANCEL from"
            );
            return;
        };
        let mut request = tonic::Request::new(Bytes::new());
        md::CallHeader {
            session: self.inner.session,
            request_id: self.request_id,
            attempt: 1,
            incarnation: self.incarnation,
            cancel: true,
            ..md::CallHeader::default()
        }
        .put(request.metadata_mut());
        put_timeout(&mut request, CANCEL_TIMEOUT);
        let send = unary(&self.inner, request, self.path.clone());
        let request_id = self.request_id;
        runtime.spawn(async move {
            match tokio::time::timeout(CANCEL_TIMEOUT, send).await {
                Ok(Ok(_)) => tracing::trace!(request_id, "CANCEL sent"),
                Ok(Err(status)) => tracing::debug!(request_id, %status, "CANCEL not taken"),
                Err(_) => tracing::debug!(request_id, "CANCEL not sent in time"),
            }
        });
    }
}
