//! Interceptors: code that runs around every call, on the server before
//! and after the handler ([`Interceptor`]), on the client before and after
//! the exchange ([`ClientInterceptor`]). They read and change metadata,
//! refuse calls, and observe outcomes; the same on every door (UDP, TCP,
//! TCP+TLS, gRPC).
//!
//! Three ship with the crate:
//! - [`auth`]: bearer tokens checked per service and method (server),
//!   added to every call (client);
//! - [`trace`]: W3C `traceparent` propagated from the caller's span to the
//!   handler's and on to the calls the handler makes;
//! - [`metrics`]: calls, errors by code and a latency histogram per method,
//!   in the Prometheus text format.
//!
//! # Order
//! Server interceptors run `before` in the order they were added to the
//! [`ServerBuilder`](crate::server::ServerBuilder) and `after` in reverse
//! order, as layers of an onion: the first added is the outermost. A
//! refusal stops the `before` chain; the interceptors whose `before` ran
//! (not the one that refused) then see the refusal in `after`. Client
//! interceptors work the same way around the channel
//! ([`Client::intercepted`](crate::Client::intercepted)); their `before`
//! runs when the call's future is first polled (not when the call is
//! built), inside that future.
//!
//! # A refused call never runs
//! A server interceptor's refusal is answered with ERROR (the request did
//! not run) and stored as the request's answer in the reply history, so a
//! late copy of the request gets the refusal again instead of running.
//!
//! ```
//! use rpc_core::intercept::{Completed, Interceptor};
//! use rpc_core::{CallContext, Status};
//!
//! /// Refuses calls without a `tenant` entry; tells the caller which
//! /// tenant was served.
//! struct Tenant;
//!
//! impl Interceptor for Tenant {
//!     fn before(&self, ctx: &mut CallContext) -> Result<(), Status> {
//!         match ctx.metadata("tenant") {
//!             Some(t) => {
//!                 ctx.set_reply_metadata("served-tenant", t.to_owned());
//!                 Ok(())
//!             }
//!             None => Err(Status::invalid_argument("no tenant")),
//!         }
//!     }
//! }
//! ```
//!
//! Interceptors are synchronous: a check that needs I/O belongs in the
//! handler (or in a cache the interceptor reads).

pub mod auth;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod trace;

use crate::call::{Channel, Invocation, Outcome, RawResult};
use crate::error::Error;
use crate::service::{CallContext, Metadata, MethodInfo, ServiceInfo, TransportKind};
use crate::status::Status;
use futures::future::BoxFuture;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// What a server interceptor sees after a call: the method, who called,
/// how it ended, and the answer's metadata (which it may add to).
#[derive(Debug)]
pub struct Completed<'a> {
    /// The service called.
    pub service: &'static ServiceInfo,
    /// The method called.
    pub method: &'static MethodInfo,
    /// The door it came through.
    pub transport: TransportKind,
    /// The caller's address, when the door knows it.
    pub peer: Option<SocketAddr>,
    /// When the request arrived (before any queueing).
    pub received_at: Instant,
    /// `None`: the handler returned a reply. Otherwise the status the
    /// caller gets (the handler's, a panic's INTERNAL, or a refusal).
    pub status: Option<&'a Status>,
    /// Whether the handler ran (false when an interceptor refused).
    pub ran: bool,
    /// The answer's metadata, sent with it and stored with it.
    pub reply_metadata: &'a mut Metadata,
}

/// Runs around every call a server takes (see the [module docs](self)).
pub trait Interceptor: Send + Sync + 'static {
    /// Before the handler, with the call's context: it may read and change
    /// the request's metadata, set [`CallContext::identity`], add reply
    /// metadata, or refuse the call with a status (it then does not run;
    /// the caller is told it did not run).
    ///
    /// # Errors
    /// The refusal.
    fn before(&self, ctx: &mut CallContext) -> Result<(), Status> {
        let _ = ctx;
        Ok(())
    }

    /// After the call ended (only if `before` returned `Ok`).
    fn after(&self, call: &mut Completed<'_>) {
        let _ = call;
    }
}

/// The server's interceptors, outermost first.
#[derive(Clone, Default)]
pub(crate) struct Chain(pub(crate) Arc<[Arc<dyn Interceptor>]>);

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} interceptors", self.0.len())
    }
}

impl Chain {
    /// Runs every `before` in order; returns how many passed, and the
    /// refusal if one refused (marked as a refusal: answered with ERROR).
    pub(crate) fn before(&self, ctx: &mut CallContext) -> (usize, Option<Status>) {
        for (i, interceptor) in self.0.iter().enumerate() {
            if let Err(mut status) = interceptor.before(ctx) {
                let metadata = status.take_metadata();
                let refused = Status::refused(status.code(), status.message().to_owned())
                    .with_metadata(metadata);
                return (i, Some(refused));
            }
        }
        (self.0.len(), None)
    }

    /// Runs the `after` of the first `passed` interceptors, innermost first.
    pub(crate) fn after(&self, passed: usize, call: &mut Completed<'_>) {
        for interceptor in self.0[..passed.min(self.0.len())].iter().rev() {
            interceptor.after(call);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How a call ended, as a client interceptor sees it.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientOutcome<'a> {
    /// The server's answer (a synchronous call, or any call the server
    /// answered at once): the reply with its metadata, or a status.
    Answer(&'a RawResult),
    /// The server accepted the request (asynchronous and deferred calls;
    /// the result, collected later, is not seen here).
    Accepted,
    /// A one-way request was sent.
    Sent,
    /// The call failed short of an answer (deadline, unreachable, ...).
    Failed(&'a Error),
    /// An interceptor refused the call before it was sent.
    Refused(&'a Status),
}

/// Runs around every call a [`Client`](crate::Client) makes (see the
/// [module docs](self)).
pub trait ClientInterceptor: Send + Sync + 'static {
    /// Before the call is handed to the channel: it may change the
    /// invocation (metadata, deadline, ...) or refuse the call with a
    /// status (nothing is sent; the caller gets the status).
    ///
    /// # Errors
    /// The refusal.
    fn before(&self, invocation: &mut Invocation) -> Result<(), Status> {
        let _ = invocation;
        Ok(())
    }

    /// After the call ended (only if `before` returned `Ok`).
    fn after(&self, invocation: &InvocationInfo, outcome: &ClientOutcome<'_>) {
        let _ = (invocation, outcome);
    }
}

/// What a client interceptor's `after` knows about the invocation.
#[derive(Debug, Clone, Copy)]
pub struct InvocationInfo {
    /// The service called.
    pub service: &'static ServiceInfo,
    /// The method called.
    pub method: &'static MethodInfo,
    /// When the call was handed to the interceptors.
    pub started: Instant,
}

/// A channel with client interceptors around it
/// ([`Client::intercepted`](crate::Client::intercepted)).
pub struct Intercepted {
    inner: Arc<dyn Channel>,
    interceptors: Arc<[Arc<dyn ClientInterceptor>]>,
}

impl fmt::Debug for Intercepted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Intercepted")
            .field("inner", &self.inner)
            .field("interceptors", &self.interceptors.len())
            .finish()
    }
}

impl Intercepted {
    /// `inner` with `interceptors` around it, outermost first.
    pub fn new(
        inner: Arc<dyn Channel>,
        interceptors: impl Into<Arc<[Arc<dyn ClientInterceptor>]>>,
    ) -> Intercepted {
        Intercepted {
            inner,
            interceptors: interceptors.into(),
        }
    }

    /// The channel inside.
    pub fn inner(&self) -> &Arc<dyn Channel> {
        &self.inner
    }

    /// The interceptors, outermost first.
    pub fn interceptors(&self) -> &[Arc<dyn ClientInterceptor>] {
        &self.interceptors
    }
}

impl Channel for Intercepted {
    fn invoke(&self, invocation: Invocation) -> BoxFuture<'static, Result<Outcome, Error>> {
        let inner = Arc::clone(&self.inner);
        let interceptors = Arc::clone(&self.interceptors);
        Box::pin(async move { around(&inner, &interceptors, invocation).await })
    }
}

/// Runs `invocation` on `inner` with `interceptors` around it (outermost
/// first): every `before` in order until one refuses, the call unless one
/// refused, then the `after` of those whose `before` passed, innermost
/// first.
pub(crate) async fn around(
    inner: &Arc<dyn Channel>,
    interceptors: &[Arc<dyn ClientInterceptor>],
    mut invocation: Invocation,
) -> Result<Outcome, Error> {
    let info = InvocationInfo {
        service: invocation.service,
        method: invocation.method,
        started: Instant::now(),
    };
    let mut passed = 0;
    for interceptor in interceptors {
        if let Err(status) = interceptor.before(&mut invocation) {
            for interceptor in interceptors[..passed].iter().rev() {
                interceptor.after(&info, &ClientOutcome::Refused(&status));
            }
            tracing::debug!(method = info.method.name, %status, "call refused by a client interceptor");
            return Ok(Outcome::Reply(Err(status)));
        }
        passed += 1;
    }
    let result = inner.invoke(invocation).await;
    let outcome = match &result {
        Ok(Outcome::Reply(raw)) => ClientOutcome::Answer(raw),
        Ok(Outcome::Accepted(_)) => ClientOutcome::Accepted,
        Ok(Outcome::Sent) => ClientOutcome::Sent,
        Err(e) => ClientOutcome::Failed(e),
    };
    for interceptor in interceptors[..passed].iter().rev() {
        interceptor.after(&info, &outcome);
    }
    result
}
