//! Errors: [`Error`] for everything the runtime can report, [`CallError`]
//! for what a caller of a generated stub sees, [`MethodError`] for what a
//! handler may return, and [`Raisable`] for the typed `raises` messages.

use crate::status::{Code, Status};
use bytes::Bytes;
use std::fmt;

/// An error of the runtime (not a typed application error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with a status instead of a reply.
    #[error("{0}")]
    Status(Status),
    /// The call's deadline passed before a reply arrived.
    #[error("deadline exceeded after {attempts} attempt(s); the request {}", if *.may_have_run { "may have run" } else { "did not run" })]
    DeadlineExceeded {
        /// Whether the server may have run the request (at least one copy
        /// was sent and none was answered with a definite outcome).
        may_have_run: bool,
        /// How many copies of the request were sent.
        attempts: u32,
    },
    /// Every allowed attempt was sent and none was answered.
    #[error("no reply after {attempts} attempt(s); the request {}", if *.may_have_run { "may have run" } else { "did not run" })]
    Unreachable {
        /// Whether the server may have run the request.
        may_have_run: bool,
        /// How many copies of the request were sent.
        attempts: u32,
    },
    /// A retransmitted non-idempotent request reached a server with a
    /// different incarnation: it was not run again, and whether the first
    /// copy ran before the restart cannot be known.
    #[error("outcome unknown: server restarted")]
    OutcomeUnknown,
    /// A message is larger than the transport's limit; nothing was sent.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// Encoded size of the message.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A reply could not be decoded as the method's reply type.
    #[error("malformed reply")]
    Decode(#[source] prost::DecodeError),
    /// The client (or its transport) was shut down.
    #[error("client closed")]
    Closed,
    /// An I/O error on the transport.
    #[error("transport error")]
    Io(#[source] std::io::Error),
    /// The call's configuration is not valid (for example `oneway` with RR).
    #[error("invalid call: {0}")]
    InvalidCall(String),
}

impl Error {
    /// The gRPC code that describes this error.
    pub fn code(&self) -> Code {
        match self {
            Error::Status(s) => s.code(),
            Error::DeadlineExceeded { .. } => Code::DeadlineExceeded,
            Error::Unreachable { .. } => Code::Unavailable,
            Error::OutcomeUnknown => Code::Aborted,
            Error::MessageTooLarge { .. } => Code::ResourceExhausted,
            Error::Decode(_) => Code::DataLoss,
            Error::Closed => Code::Cancelled,
            Error::Io(_) => Code::Unavailable,
            Error::InvalidCall(_) => Code::InvalidArgument,
        }
    }

    /// Whether the request may have run on the server. `false` only when it
    /// certainly did not (never sent, or refused before running).
    ///
    /// A status counts as "did not run" when its code is one a server uses
    /// to refuse a request before running it: UNIMPLEMENTED,
    /// DEADLINE_EXCEEDED (the client reports a deadline that passed while
    /// the request ran as [`Error::DeadlineExceeded`] instead) and
    /// UNAUTHENTICATED (credentials are checked before anything runs; a
    /// TLS handshake refused by either side is reported with it).
    pub fn may_have_run(&self) -> bool {
        match self {
            Error::DeadlineExceeded { may_have_run, .. }
            | Error::Unreachable { may_have_run, .. } => *may_have_run,
            Error::OutcomeUnknown => true,
            Error::MessageTooLarge { .. } | Error::Closed | Error::InvalidCall(_) => false,
            Error::Status(s) => !matches!(
                s.code(),
                Code::Unimplemented | Code::DeadlineExceeded | Code::Unauthenticated
            ),
            Error::Decode(_) | Error::Io(_) => true,
        }
    }

    /// This error as a [`Status`] (what a gRPC peer would be told).
    pub fn to_status(&self) -> Status {
        match self {
            Error::Status(s) => s.clone(),
            other => Status::new(other.code(), other.to_string()),
        }
    }
}

impl From<Status> for Error {
    fn from(s: Status) -> Error {
        Error::Status(s)
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        e.to_status()
    }
}

/// A typed application error: the message type of a method's `raises`.
///
/// Generated code implements it for every message (through
/// [`prost::Name`]); [`Never`] implements it for methods without `raises`.
pub trait Raisable: Sized + Send + Sync + fmt::Debug + 'static {
    /// Full protobuf name, carried as the status' `details_type`.
    fn type_name() -> String;
    /// Protobuf encoding of the error.
    fn encode_raise(&self) -> Bytes;
    /// Decodes an error of this type; `None` when the bytes are not a valid
    /// encoding.
    fn decode_raise(bytes: &[u8]) -> Option<Self>;
}

impl<T> Raisable for T
where
    T: prost::Message + prost::Name + Default + fmt::Debug + 'static,
{
    fn type_name() -> String {
        T::full_name()
    }
    fn encode_raise(&self) -> Bytes {
        Bytes::from(self.encode_to_vec())
    }
    fn decode_raise(bytes: &[u8]) -> Option<Self> {
        T::decode(bytes).ok()
    }
}

/// The error type of methods without `raises`: it has no values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Never {}

impl fmt::Display for Never {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

impl std::error::Error for Never {}

impl prost::Message for Never {
    fn encode_raw(&self, _: &mut impl bytes::BufMut) {
        match *self {}
    }
    fn merge_field(
        &mut self,
        _: u32,
        _: prost::encoding::wire_type::WireType,
        _: &mut impl bytes::Buf,
        _: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match *self {}
    }
    fn encoded_len(&self) -> usize {
        match *self {}
    }
    fn clear(&mut self) {
        match *self {}
    }
}

impl Raisable for Never {
    fn type_name() -> String {
        String::new()
    }
    fn encode_raise(&self) -> Bytes {
        match *self {}
    }
    fn decode_raise(_: &[u8]) -> Option<Self> {
        None
    }
}

/// What a handler of a method with `raises (E)` returns on failure: the
/// typed error, or a plain status.
#[derive(Debug)]
pub enum MethodError<E> {
    /// The method's typed error; travels as the status' details with
    /// [`Code::FailedPrecondition`] unless [`MethodError::raised_with`] chose
    /// another code.
    Raised(E, Code, String),
    /// A plain status.
    Status(Status),
}

impl<E: Raisable> MethodError<E> {
    /// The typed error, with [`Code::FailedPrecondition`] and an empty message.
    pub fn raised(e: E) -> Self {
        MethodError::Raised(e, Code::FailedPrecondition, String::new())
    }

    /// The typed error with a code and message of the caller's choice.
    pub fn raised_with(e: E, code: Code, message: impl Into<String>) -> Self {
        MethodError::Raised(e, code, message.into())
    }

    /// The status that carries this error on the wire.
    pub fn into_status(self) -> Status {
        match self {
            MethodError::Raised(e, code, message) => {
                Status::with_details(code, message, E::type_name(), e.encode_raise())
            }
            MethodError::Status(s) => s,
        }
    }
}

impl<E> From<Status> for MethodError<E> {
    fn from(s: Status) -> Self {
        MethodError::Status(s)
    }
}

impl<E> From<Error> for MethodError<E> {
    fn from(e: Error) -> Self {
        MethodError::Status(e.to_status())
    }
}

/// What a caller of a generated stub gets on failure: the method's typed
/// error (`E` is [`Never`] without `raises`), or a runtime [`Error`].
#[derive(Debug, thiserror::Error)]
pub enum CallError<E: fmt::Debug = Never> {
    /// The server raised the method's typed error.
    #[error("raised {0:?}")]
    Raised(E, Status),
    /// Anything else.
    #[error(transparent)]
    Rpc(#[from] Error),
}

impl<E: fmt::Debug> CallError<E> {
    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            CallError::Raised(_, s) => s.code(),
            CallError::Rpc(e) => e.code(),
        }
    }

    /// The typed error, if that is what this is.
    pub fn raised(&self) -> Option<&E> {
        match self {
            CallError::Raised(e, _) => Some(e),
            CallError::Rpc(_) => None,
        }
    }

    /// The runtime error, if that is what this is.
    pub fn rpc(&self) -> Option<&Error> {
        match self {
            CallError::Raised(..) => None,
            CallError::Rpc(e) => Some(e),
        }
    }
}

impl<E: fmt::Debug> CallError<E> {
    /// This error as the status a handler answers with when a call it made
    /// to a peer failed, keeping what its caller needs to know:
    /// - a status from the peer (typed errors included, with their payload)
    ///   as it is;
    /// - the peer unreachable: UNAVAILABLE when the request certainly did
    ///   not run there, UNKNOWN when it may have;
    /// - the deadline passed: DEADLINE_EXCEEDED, the message saying whether
    ///   the request may have run;
    /// - outcome unknown (the peer restarted): UNKNOWN.
    pub fn into_status(self) -> Status {
        match self {
            CallError::Raised(_, status) | CallError::Rpc(Error::Status(status)) => status,
            CallError::Rpc(
                e @ (Error::Unreachable {
                    may_have_run: true, ..
                }
                | Error::OutcomeUnknown),
            ) => Status::unknown(format!("a call to a peer: {e}")),
            CallError::Rpc(e @ Error::Unreachable { .. }) => {
                Status::unavailable(format!("a call to a peer: {e}"))
            }
            CallError::Rpc(e) => Status::new(e.code(), format!("a call to a peer: {e}")),
        }
    }
}

/// A handler can `?` the error of a call it made ([`CallError::into_status`]).
impl<E: fmt::Debug> From<CallError<E>> for Status {
    fn from(e: CallError<E>) -> Status {
        e.into_status()
    }
}

/// A handler with a typed error can `?` the error of a call it made
/// ([`CallError::into_status`]).
impl<E: fmt::Debug, E2> From<CallError<E>> for MethodError<E2> {
    fn from(e: CallError<E>) -> MethodError<E2> {
        MethodError::Status(e.into_status())
    }
}

impl<E: Raisable> CallError<E> {
    /// Turns a status received from a server into a typed error when it
    /// carries a payload of type `E`, else into [`Error::Status`].
    pub fn from_status(status: Status) -> Self {
        if !status.details_type().is_empty() && status.details_type() == E::type_name() {
            match E::decode_raise(status.details()) {
                Some(e) => return CallError::Raised(e, status),
                None => {
                    tracing::debug!(
                        details_type = status.details_type(),
                        "undecodable typed error payload"
                    );
                }
            }
        }
        CallError::Rpc(Error::Status(status))
    }
}
