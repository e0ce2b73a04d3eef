//! Status codes and the [`Status`] a server returns instead of a reply.
//!
//! The codes are gRPC's, number for number, so the gRPC face of a service
//! and its UDP/TCP faces agree on what went wrong.

use crate::service::Metadata;
use bytes::Bytes;
use std::fmt;

/// A status code; the numbers are gRPC's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Code {
    /// Not an error.
    Ok = 0,
    /// The operation was cancelled, typically by the caller.
    Cancelled = 1,
    /// Unknown error (also: the outcome of the call is unknown).
    Unknown = 2,
    /// The client specified an invalid argument.
    InvalidArgument = 3,
    /// The deadline expired before the operation could complete.
    DeadlineExceeded = 4,
    /// Some requested entity was not found.
    NotFound = 5,
    /// The entity that a client attempted to create already exists.
    AlreadyExists = 6,
    /// The caller does not have permission.
    PermissionDenied = 7,
    /// Some resource has been exhausted (also: a message over the size limit).
    ResourceExhausted = 8,
    /// The system is not in a state required for the operation.
    FailedPrecondition = 9,
    /// The operation was aborted (also: the outcome is unknown because the
    /// server restarted).
    Aborted = 10,
    /// The operation was attempted past the valid range.
    OutOfRange = 11,
    /// The operation is not implemented (unknown service or method).
    Unimplemented = 12,
    /// Internal error: an invariant of the server broke.
    Internal = 13,
    /// The service is currently unavailable (the peer could not be reached).
    Unavailable = 14,
    /// Unrecoverable data loss or corruption (also: a malformed message).
    DataLoss = 15,
    /// The request does not have valid authentication credentials. Callers
    /// take it as "refused before it ran" ([`Error::may_have_run`]): a
    /// handler should return it only before it acts.
    ///
    /// [`Error::may_have_run`]: crate::Error::may_have_run
    Unauthenticated = 16,
}

impl Code {
    /// The code with this number; numbers gRPC does not define map to
    /// [`Code::Unknown`], as gRPC itself does.
    pub fn from_i32(n: i32) -> Code {
        match n {
            0 => Code::Ok,
            1 => Code::Cancelled,
            2 => Code::Unknown,
            3 => Code::InvalidArgument,
            4 => Code::DeadlineExceeded,
            5 => Code::NotFound,
            6 => Code::AlreadyExists,
            7 => Code::PermissionDenied,
            8 => Code::ResourceExhausted,
            9 => Code::FailedPrecondition,
            10 => Code::Aborted,
            11 => Code::OutOfRange,
            12 => Code::Unimplemented,
            13 => Code::Internal,
            14 => Code::Unavailable,
            15 => Code::DataLoss,
            16 => Code::Unauthenticated,
            _ => Code::Unknown,
        }
    }

    /// The code's number (gRPC's).
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The name gRPC uses, e.g. `DEADLINE_EXCEEDED`.
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a server returns instead of a reply: a code, a message, and
/// optionally a typed error payload (the `raises` message of the method,
/// protobuf-encoded, with its full type name).
#[derive(Clone)]
pub struct Status {
    code: Code,
    message: String,
    details: Bytes,
    details_type: String,
    /// Returned before the method's own code ran (not on the wire: the
    /// server answers such a status with ERROR instead of REPLY).
    refused: bool,
    /// The answer's metadata (beside the status on the wire: the
    /// envelope's `metadata`, gRPC trailers). Boxed: most statuses have none.
    metadata: Option<Box<Metadata>>,
}

/// Two statuses are equal when what travels on the wire is.
impl PartialEq for Status {
    fn eq(&self, other: &Status) -> bool {
        self.code == other.code
            && self.message == other.message
            && self.details == other.details
            && self.details_type == other.details_type
    }
}

impl Eq for Status {}

macro_rules! status_ctor {
    ($($(#[$doc:meta])* $name:ident => $code:ident),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $name(message: impl Into<String>) -> Status {
                Status::new(Code::$code, message)
            }
        )*
    };
}

impl Status {
    /// A status with `code` and `message` and no typed payload.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
            details: Bytes::new(),
            details_type: String::new(),
            refused: false,
            metadata: None,
        }
    }

    /// A status for a request refused before the method's own code ran
    /// (for example a payload that cannot be decoded): the server answers
    /// it with ERROR, which tells the caller that the request did not run,
    /// where a method's failure is a REPLY with a status.
    pub fn refused(code: Code, message: impl Into<String>) -> Status {
        Status {
            refused: true,
            ..Status::new(code, message)
        }
    }

    /// Whether this status refuses the request before it ran
    /// ([`Status::refused`]).
    pub fn is_refusal(&self) -> bool {
        self.refused
    }

    /// A status carrying a typed error payload: `details` is the encoded
    /// message whose full protobuf name is `details_type`.
    pub fn with_details(
        code: Code,
        message: impl Into<String>,
        details_type: impl Into<String>,
        details: Bytes,
    ) -> Status {
        Status {
            code,
            message: message.into(),
            details,
            details_type: details_type.into(),
            refused: false,
            metadata: None,
        }
    }

    /// This status with the answer's metadata (what the server attached to
    /// its REPLY or ERROR; an empty map is none).
    #[must_use]
    pub fn with_metadata(mut self, metadata: Metadata) -> Status {
        self.metadata = (!metadata.is_empty()).then(|| Box::new(metadata));
        self
    }

    /// The metadata the server attached to this answer, if any.
    pub fn metadata(&self) -> Option<&Metadata> {
        self.metadata.as_deref()
    }

    /// Takes the metadata out of this status (the server's engine moves a
    /// handler's failure's metadata into the answer's envelope).
    pub fn take_metadata(&mut self) -> Metadata {
        self.metadata.take().map(|m| *m).unwrap_or_default()
    }

    status_ctor! {
        /// [`Code::Cancelled`].
        cancelled => Cancelled,
        /// [`Code::Unknown`].
        unknown => Unknown,
        /// [`Code::InvalidArgument`].
        invalid_argument => InvalidArgument,
        /// [`Code::DeadlineExceeded`].
        deadline_exceeded => DeadlineExceeded,
        /// [`Code::NotFound`].
        not_found => NotFound,
        /// [`Code::AlreadyExists`].
        already_exists => AlreadyExists,
        /// [`Code::PermissionDenied`].
        permission_denied => PermissionDenied,
        /// [`Code::ResourceExhausted`].
        resource_exhausted => ResourceExhausted,
        /// [`Code::FailedPrecondition`].
        failed_precondition => FailedPrecondition,
        /// [`Code::Aborted`].
        aborted => Aborted,
        /// [`Code::OutOfRange`].
        out_of_range => OutOfRange,
        /// [`Code::Unimplemented`].
        unimplemented => Unimplemented,
        /// [`Code::Internal`].
        internal => Internal,
        /// [`Code::Unavailable`].
        unavailable => Unavailable,
        /// [`Code::DataLoss`].
        data_loss => DataLoss,
        /// [`Code::Unauthenticated`].
        unauthenticated => Unauthenticated,
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The encoded typed error payload (empty when there is none).
    pub fn details(&self) -> &Bytes {
        &self.details
    }

    /// Full protobuf name of the payload's type (empty when there is none).
    pub fn details_type(&self) -> &str {
        &self.details_type
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Status");
        d.field("code", &self.code).field("message", &self.message);
        if !self.details_type.is_empty() {
            d.field("details_type", &self.details_type)
                .field("details_len", &self.details.len());
        }
        d.finish()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

impl std::error::Error for Status {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_numbers() {
        for n in 0..=16 {
            assert_eq!(Code::from_i32(n).as_i32(), n);
        }
        assert_eq!(Code::from_i32(99), Code::Unknown);
        assert_eq!(
            Status::unimplemented("no such method").to_string(),
            "UNIMPLEMENTED: no such method"
        );
    }
}
