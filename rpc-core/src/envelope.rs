//! The envelope of `idl/rpc/envelope.idl` (package `rpc.v1`): one per
//! datagram or frame.
//!
//! These prost types are what `rpcgen rust idl/rpc/envelope.idl` generates
//! for the messages of that file; a test in `tests/` checks that they
//! agree, field by field, with the IDL.

/// Version of the envelope format described here.
pub const VERSION: u32 = 1;

/// `details_type` of the status that says "outcome unknown: server restarted".
pub const SERVER_RESTARTED: &str = "rpc.v1.ServerRestarted";

/// What a message is. Numbers are part of the wire format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MessageType {
    /// Never sent; a receiver drops it.
    Unspecified = 0,
    /// Client to server: run `method_id` on `payload`.
    Request = 1,
    /// Server to client: the result or a failure.
    Reply = 2,
    /// Client to server (RRA): the client has the reply to `request_id`.
    Ack = 3,
    /// Server to client: the request is registered and will run.
    Accept = 4,
    /// Server to client: the request was refused before it ran.
    Error = 5,
    /// Server to client: a duplicate of a request that is still running.
    InProgress = 6,
    /// Client to server: tell me your incarnation.
    Ping = 7,
    /// Server to client: the answer to PING.
    Pong = 8,
}

/// The exchange protocol a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ExchangeProtocol {
    /// Not given: the server assumes RR.
    Unspecified = 0,
    /// Request only.
    R = 1,
    /// Request, reply.
    Rr = 2,
    /// Request, reply, acknowledgement.
    Rra = 3,
}

/// A status: gRPC's code numbers, a message, an optional typed error.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    /// gRPC status code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// Human-readable message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// Full protobuf name of the typed error in `details`.
    #[prost(string, tag = "3")]
    pub details_type: String,
    /// The typed error, protobuf-encoded.
    #[prost(bytes = "bytes", tag = "4")]
    pub details: bytes::Bytes,
}

/// One message of the protocol (see the field docs in the IDL).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Envelope {
    /// Protocol version ([`VERSION`]).
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// What this message is ([`MessageType`]).
    #[prost(enumeration = "MessageType", tag = "2")]
    pub r#type: i32,
    /// Unique per client session and increasing.
    #[prost(uint64, tag = "3")]
    pub request_id: u64,
    /// The client session.
    #[prost(fixed64, tag = "4")]
    pub session_id: u64,
    /// Object reference: the service's full name.
    #[prost(string, tag = "5")]
    pub service: String,
    /// Object reference: the instance (empty: default).
    #[prost(string, tag = "6")]
    pub instance: String,
    /// Stable method id.
    #[prost(uint32, tag = "7")]
    pub method_id: u32,
    /// The server's incarnation.
    #[prost(fixed64, tag = "8")]
    pub incarnation: u64,
    /// Remaining time budget in microseconds (0: none).
    #[prost(uint64, tag = "9")]
    pub deadline_us: u64,
    /// Which copy of the request this is (1 for the first).
    #[prost(uint32, tag = "10")]
    pub attempt: u32,
    /// The failure, in REPLY and ERROR.
    #[prost(message, optional, tag = "11")]
    pub status: Option<Status>,
    /// Arguments or result.
    #[prost(bytes = "bytes", tag = "12")]
    pub payload: bytes::Bytes,
    /// Metadata carried with the call.
    #[prost(map = "string, string", tag = "13")]
    pub metadata: std::collections::HashMap<String, String>,
    /// Exchange protocol of the request ([`ExchangeProtocol`]).
    #[prost(enumeration = "ExchangeProtocol", tag = "14")]
    pub protocol: i32,
    /// Cumulative acknowledgement.
    #[prost(uint64, tag = "15")]
    pub ack_up_to: u64,
    /// Answer with ACCEPT as soon as the request is registered.
    #[prost(bool, tag = "16")]
    pub want_accept: bool,
    /// The method is idempotent.
    #[prost(bool, tag = "17")]
    pub idempotent: bool,
}

impl From<&crate::Status> for Status {
    fn from(s: &crate::Status) -> Status {
        Status {
            code: s.code().as_i32(),
            message: s.message().to_owned(),
            details_type: s.details_type().to_owned(),
            details: s.details().clone(),
        }
    }
}

impl From<Status> for crate::Status {
    fn from(s: Status) -> crate::Status {
        crate::Status::with_details(
            crate::Code::from_i32(s.code),
            s.message,
            s.details_type,
            s.details,
        )
    }
}

impl From<crate::Protocol> for ExchangeProtocol {
    fn from(p: crate::Protocol) -> ExchangeProtocol {
        match p {
            crate::Protocol::R => ExchangeProtocol::R,
            crate::Protocol::RR => ExchangeProtocol::Rr,
            crate::Protocol::RRA => ExchangeProtocol::Rra,
        }
    }
}
