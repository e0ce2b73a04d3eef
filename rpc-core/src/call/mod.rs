//! The caller's side, independent of the transport: a [`Client`] wraps any
//! [`Channel`]; generated stubs turn each method into a typed [`Call`]
//! builder whose style is chosen by a type parameter.
//!
//! ```text
//! stub.adjust(req)              Call<Resp, E, Sync>      .await -> Result<Resp, CallError<E>>
//!     .asynchronous()           Call<Resp, E, Async>     .await -> Result<(), CallError<E>>   (at ACCEPT)
//!     .deferred()               Call<Resp, E, Deferred>  .await -> Result<Deferred<Resp, E>, CallError<E>>
//! stub.hint(req)                OneWay                   .await -> Result<(), Error>          (once sent)
//! ```
//!
//! Group calls ([`GroupCall`]) carry their style the same way, with the
//! same markers ([`style`]).
//!
//! Options (`deadline`, `timeout`, `protocol`, `retries`, `metadata`,
//! `instance`) start from the IDL's attributes and can be overridden per
//! call. The [`Channel`] (UDP, TCP, gRPC, in-memory) runs the exchange
//! protocol; this module only encodes, decodes and shapes the results.

mod deferred;
mod group;

pub use deferred::Deferred;
pub use group::{
    Completion, GroupCall, GroupClient, GroupOutcome, GroupStream, MemberOutcome, MemberResult,
    Stragglers,
};
pub(crate) use group::{GroupTransport, GroupTransportCall, MemberEvent};

use crate::error::{CallError, Error, Raisable};
use crate::service::{Metadata, MethodInfo, Protocol, ServiceInfo, Style};
use crate::status::Status;
use bytes::Bytes;
use futures::future::BoxFuture;
use std::fmt;
use std::future::IntoFuture;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Per-call options; start from the method's IDL attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOptions {
    /// Exchange protocol.
    pub protocol: Protocol,
    /// How the caller waits.
    pub style: Style,
    /// Absolute deadline of the whole call (all attempts).
    pub deadline: Option<Instant>,
    /// Attempts after the first; `None`: the channel's default.
    pub retries: Option<u32>,
    /// Whether the server may run the request again instead of keeping a
    /// reply history (at-least-once instead of at-most-once).
    pub idempotent: bool,
}

impl CallOptions {
    /// The defaults declared in the IDL for `method`, with the deadline
    /// counted from now when the IDL gives a timeout.
    pub fn for_method(method: &MethodInfo) -> CallOptions {
        CallOptions {
            protocol: method.protocol,
            style: method.style,
            deadline: (method.timeout_ms > 0)
                .then(|| Instant::now() + Duration::from_millis(method.timeout_ms)),
            retries: method.retries,
            idempotent: method.idempotent,
        }
    }
}

/// One call handed to a [`Channel`].
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The service called.
    pub service: &'static ServiceInfo,
    /// The method called.
    pub method: &'static MethodInfo,
    /// Object instance (empty: the default instance).
    pub instance: String,
    /// Encoded request.
    pub payload: Bytes,
    /// Metadata sent with the request.
    pub metadata: Metadata,
    /// Protocol, style, deadline, retries.
    pub options: CallOptions,
}

impl Invocation {
    /// A call of `method` with `request` in `style`, with the options the
    /// method declares (a one-way call goes with protocol R).
    pub(crate) fn new<Req: prost::Message>(
        service: &'static ServiceInfo,
        method: &'static MethodInfo,
        request: &Req,
        style: Style,
    ) -> Invocation {
        let options = CallOptions::for_method(method);
        let protocol = if style == Style::OneWay {
            Protocol::R
        } else {
            options.protocol
        };
        Invocation {
            service,
            method,
            instance: String::new(),
            payload: Bytes::from(request.encode_to_vec()),
            metadata: Metadata::new(),
            options: CallOptions {
                style,
                protocol,
                ..options
            },
        }
    }
}

/// A server's reply: the encoded message and the metadata the server
/// attached to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawReply {
    /// The encoded reply message.
    pub payload: Bytes,
    /// The answer's metadata (empty when the server attached none).
    pub metadata: Metadata,
}

impl RawReply {
    /// A reply without metadata.
    pub fn new(payload: Bytes) -> RawReply {
        RawReply {
            payload,
            metadata: Metadata::new(),
        }
    }
}

/// The result a server produced: the reply, or a status (which carries
/// the answer's metadata, [`Status::metadata`]).
pub type RawResult = Result<RawReply, Status>;

/// What a [`Channel`] reports for one invocation.
pub enum Outcome {
    /// [`Style::Sync`]: the server's answer.
    Reply(RawResult),
    /// [`Style::Async`] and [`Style::Deferred`]: the server accepted the
    /// request. The future yields the result later; it keeps working (for
    /// example retransmitting result queries) for as long as it is polled,
    /// and dropping it abandons the result.
    Accepted(BoxFuture<'static, Result<RawResult, Error>>),
    /// [`Style::OneWay`]: the request was handed to the network.
    Sent,
}

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Reply(r) => f.debug_tuple("Reply").field(r).finish(),
            Outcome::Accepted(_) => f.write_str("Accepted(..)"),
            Outcome::Sent => f.write_str("Sent"),
        }
    }
}

/// A way to reach a server: UDP, TCP, gRPC or in-memory. It runs the
/// exchange protocol (retransmission, deadlines, acknowledgements).
pub trait Channel: Send + Sync + fmt::Debug + 'static {
    /// Runs one invocation as its options say.
    ///
    /// # Errors
    /// Every way a call can fail short of a server status: see [`Error`].
    fn invoke(&self, invocation: Invocation) -> BoxFuture<'static, Result<Outcome, Error>>;
}

/// The channel inside a client's interceptors, and the interceptors
/// (outermost first).
type Layered = (
    Arc<dyn Channel>,
    Arc<[Arc<dyn crate::intercept::ClientInterceptor>]>,
);

/// A cheap, cloneable handle on a [`Channel`]; what generated stubs hold.
#[derive(Clone)]
pub struct Client {
    channel: Arc<dyn Channel>,
    /// With interceptors: the channel inside them and the interceptors,
    /// outermost first (one more is added to the same layer).
    layered: Option<Layered>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("channel", &self.channel)
            .finish()
    }
}

impl Client {
    /// A client over `channel`.
    pub fn new(channel: impl Channel) -> Client {
        Client {
            channel: Arc::new(channel),
            layered: None,
        }
    }

    /// A client over a shared channel.
    pub fn from_arc(channel: Arc<dyn Channel>) -> Client {
        Client {
            channel,
            layered: None,
        }
    }

    /// The channel underneath.
    pub fn channel(&self) -> &Arc<dyn Channel> {
        &self.channel
    }

    /// This client with `interceptor` around its calls. Called several
    /// times, the first added is the outermost: its `before` runs first
    /// and its `after` last (see [`crate::intercept`]).
    ///
    /// ```
    /// # fn f(client: rpc_core::Client) -> rpc_core::Client {
    /// use rpc_core::intercept::{auth::BearerToken, trace::TracePropagation};
    /// client
    ///     .intercepted(TracePropagation)
    ///     .intercepted(BearerToken::new("s3cret"))
    /// # }
    /// ```
    #[must_use]
    pub fn intercepted(self, interceptor: impl crate::intercept::ClientInterceptor) -> Client {
        let interceptor: Arc<dyn crate::intercept::ClientInterceptor> = Arc::new(interceptor);
        // One layer for all of them: one boxed future per call, not one
        // per interceptor.
        let (inner, mut list) = match self.layered {
            Some((inner, list)) => (inner, list.to_vec()),
            None => (self.channel, Vec::new()),
        };
        list.insert(0, interceptor);
        let list: Arc<[_]> = list.into();
        Client {
            channel: Arc::new(crate::intercept::Intercepted::new(
                Arc::clone(&inner),
                Arc::clone(&list),
            )),
            layered: Some((inner, list)),
        }
    }

    /// Runs `invocation` through this client's interceptors, if any, and
    /// its channel. The interceptors run here, inside the call's own
    /// future, rather than through [`Client::channel`] (which boxes one
    /// more future per call).
    async fn invoke(&self, invocation: Invocation) -> Result<Outcome, Error> {
        match &self.layered {
            None => self.channel.invoke(invocation).await,
            Some((inner, interceptors)) => {
                crate::intercept::around(inner, interceptors, invocation).await
            }
        }
    }

    /// A typed call of `method` with `request`; generated stubs call this.
    pub fn call<Req, Resp, E>(
        &self,
        service: &'static ServiceInfo,
        method: &'static MethodInfo,
        request: &Req,
    ) -> Call<Resp, E, style::Sync>
    where
        Req: prost::Message,
    {
        Call {
            client: self.clone(),
            invocation: Invocation::new(service, method, request, Style::Sync),
            _marker: PhantomData,
        }
    }

    /// A one-way call of `method` with `request`; generated stubs call this.
    pub fn one_way<Req>(
        &self,
        service: &'static ServiceInfo,
        method: &'static MethodInfo,
        request: &Req,
    ) -> OneWay
    where
        Req: prost::Message,
    {
        OneWay {
            client: self.clone(),
            invocation: Invocation::new(service, method, request, Style::OneWay),
        }
    }
}

/// Marker types for the style of a [`Call`] and a [`GroupCall`]: the
/// style is a type parameter of both, changed by `.synchronous()`,
/// `.asynchronous()`, `.deferred()` (unicast only) and `.one_way()`
/// (groups only; a unicast one-way call is a [`OneWay`]).
pub mod style {
    /// Wait for the result.
    #[derive(Debug, Clone, Copy)]
    pub struct Sync;
    /// Return at the server's ACCEPT.
    #[derive(Debug, Clone, Copy)]
    pub struct Async;
    /// Return a [`Deferred`](super::Deferred) handle at the server's ACCEPT.
    #[derive(Debug, Clone, Copy)]
    pub struct Deferred;
    /// Send without waiting for any answer ([`GroupCall`](super::GroupCall)).
    #[derive(Debug, Clone, Copy)]
    pub struct OneWay;
}

/// The style switches, written once for the builders whose style is a
/// type parameter ([`Call`], [`GroupCall`]): `name => Marker` becomes
/// `pub fn name(self) -> Builder<Resp, E, style::Marker>`, through the
/// builder's own `restyle` with [`Style`]`::Marker` (each marker of
/// [`style`] is named after its [`Style`]).
macro_rules! style_setters {
    ($builder:ident: $($(#[$doc:meta])* $name:ident => $marker:ident,)*) => {
        $(
            $(#[$doc])*
            pub fn $name(self) -> $builder<Resp, E, $crate::call::style::$marker> {
                self.restyle($crate::service::Style::$marker)
            }
        )*
    };
}
pub(crate) use style_setters;

/// A typed call being built; `.await` it to run it. `S` is the style.
#[must_use = "a call does nothing until it is awaited"]
pub struct Call<Resp, E, S> {
    client: Client,
    invocation: Invocation,
    _marker: Typed<Resp, E, S>,
}

/// What a [`Call`] or a [`GroupCall`] yields and how it runs, without
/// owning any of it.
pub(crate) type Typed<Resp, E, S> = PhantomData<fn() -> (Resp, E, S)>;

impl<Resp, E, S> fmt::Debug for Call<Resp, E, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("invocation", &self.invocation)
            .finish()
    }
}

impl<Resp, E, S> Call<Resp, E, S> {
    fn restyle<T>(mut self, style: Style) -> Call<Resp, E, T> {
        self.invocation.options.style = style;
        Call {
            client: self.client,
            invocation: self.invocation,
            _marker: PhantomData,
        }
    }

    style_setters!(Call:
        /// Wait for the result (the default unless the IDL says otherwise).
        synchronous => Sync,
        /// Return as soon as the server has accepted the request.
        asynchronous => Async,
        /// Return a handle at the server's ACCEPT; collect the result later.
        deferred => Deferred,
    );

    /// The invocation, to hand to a channel by other means (group calls).
    pub fn into_invocation(self) -> Invocation {
        self.invocation
    }
}

/// The per-call option setters, written once for every builder that holds
/// an `invocation` ([`Call`], [`OneWay`], [`GroupCall`]): `common` for all
/// of them, `exchange` for those that wait for answers.
macro_rules! option_setters {
    (common) => {
        /// Absolute deadline of the call, every attempt (and every member
        /// of a group) included; the server does not start work past it.
        pub fn deadline(mut self, deadline: std::time::Instant) -> Self {
            self.invocation.options.deadline = Some(deadline);
            self
        }

        /// Deadline `timeout` from now.
        pub fn timeout(self, timeout: std::time::Duration) -> Self {
            self.deadline(std::time::Instant::now() + timeout)
        }

        /// Adds a metadata entry.
        pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
            self.invocation.metadata.insert(key.into(), value.into());
            self
        }

        /// Calls a named object instance of the service.
        pub fn instance(mut self, instance: impl Into<String>) -> Self {
            self.invocation.instance = instance.into();
            self
        }

        /// The invocation as it will be sent.
        pub fn invocation(&self) -> &$crate::call::Invocation {
            &self.invocation
        }
    };
    (exchange) => {
        /// Exchange protocol (RR or RRA; R is for one-way calls).
        pub fn protocol(mut self, protocol: $crate::service::Protocol) -> Self {
            self.invocation.options.protocol = protocol;
            self
        }

        /// Attempts after the first (for every member of a group).
        pub fn retries(mut self, retries: u32) -> Self {
            self.invocation.options.retries = Some(retries);
            self
        }
    };
}
pub(crate) use option_setters;

impl<Resp, E, S> Call<Resp, E, S> {
    option_setters!(common);
    option_setters!(exchange);
}

fn decode_result<Resp, E>(raw: RawResult) -> Result<Resp, CallError<E>>
where
    Resp: prost::Message + Default,
    E: Raisable,
{
    decode_with_metadata(raw).map(|(reply, _)| reply)
}

fn decode_with_metadata<Resp, E>(raw: RawResult) -> Result<(Resp, Metadata), CallError<E>>
where
    Resp: prost::Message + Default,
    E: Raisable,
{
    match raw {
        Ok(reply) => Resp::decode(reply.payload)
            .map(|r| (r, reply.metadata))
            .map_err(|e| CallError::Rpc(Error::Decode(e))),
        Err(status) => Err(CallError::from_status(status)),
    }
}

impl<Resp, E> Call<Resp, E, style::Sync>
where
    Resp: prost::Message + Default + 'static,
    E: Raisable,
{
    /// Runs the call and returns the reply with the metadata the server
    /// attached to it. On failure the metadata is on the status
    /// ([`CallError::into_status`], [`Status::metadata`]).
    pub fn with_metadata(self) -> BoxFuture<'static, Result<(Resp, Metadata), CallError<E>>> {
        Box::pin(async move {
            match self.client.invoke(self.invocation).await? {
                Outcome::Reply(raw) => decode_with_metadata(raw),
                other => Err(CallError::Rpc(unexpected(&other, "synchronous"))),
            }
        })
    }
}

fn unexpected(outcome: &Outcome, style: &str) -> Error {
    Error::InvalidCall(format!("channel answered {outcome:?} to a {style} call"))
}

impl<Resp, E> IntoFuture for Call<Resp, E, style::Sync>
where
    Resp: prost::Message + Default + 'static,
    E: Raisable,
{
    type Output = Result<Resp, CallError<E>>;
    type IntoFuture = BoxFuture<'static, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            match self.client.invoke(self.invocation).await? {
                Outcome::Reply(raw) => decode_result(raw),
                other => Err(CallError::Rpc(unexpected(&other, "synchronous"))),
            }
        })
    }
}

impl<Resp, E> IntoFuture for Call<Resp, E, style::Async>
where
    Resp: prost::Message + Default + 'static,
    E: Raisable,
{
    type Output = Result<(), CallError<E>>;
    type IntoFuture = BoxFuture<'static, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            match self.client.invoke(self.invocation).await? {
                Outcome::Accepted(_) => Ok(()),
                // A server may answer with the result straight away, or
                // refuse (unknown method): both are definite answers.
                Outcome::Reply(Ok(_)) => Ok(()),
                Outcome::Reply(Err(status)) => Err(CallError::from_status(status)),
                other => Err(CallError::Rpc(unexpected(&other, "asynchronous"))),
            }
        })
    }
}

impl<Resp, E> IntoFuture for Call<Resp, E, style::Deferred>
where
    Resp: prost::Message + Default + Send + 'static,
    E: Raisable,
{
    type Output = Result<Deferred<Resp, E>, CallError<E>>;
    type IntoFuture = BoxFuture<'static, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            match self.client.invoke(self.invocation).await? {
                Outcome::Accepted(rest) => Ok(Deferred::spawn(async move {
                    match rest.await {
                        Ok(raw) => decode_result(raw),
                        Err(e) => Err(CallError::Rpc(e)),
                    }
                })),
                Outcome::Reply(raw) => Ok(Deferred::ready(decode_result(raw))),
                other => Err(CallError::Rpc(unexpected(&other, "deferred"))),
            }
        })
    }
}

/// A one-way call being built; `.await` it to send it. Protocol R: no
/// reply, no retransmission; whether it ran is unknown.
#[must_use = "a call does nothing until it is awaited"]
#[derive(Debug)]
pub struct OneWay {
    client: Client,
    invocation: Invocation,
}

impl OneWay {
    option_setters!(common);

    /// The invocation, to hand to a channel by other means.
    pub fn into_invocation(self) -> Invocation {
        self.invocation
    }
}

impl IntoFuture for OneWay {
    type Output = Result<(), Error>;
    type IntoFuture = BoxFuture<'static, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            match self.client.invoke(self.invocation).await? {
                Outcome::Sent => Ok(()),
                // Refused before it was sent (a client interceptor).
                Outcome::Reply(Err(status)) => Err(Error::Status(status)),
                other => Err(unexpected(&other, "one-way")),
            }
        })
    }
}
