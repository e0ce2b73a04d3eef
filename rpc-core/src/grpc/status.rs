//! Our [`Status`] to and from tonic's: same code numbers; the typed error
//! payload travels in `grpc-status-details-bin` as a `google.rpc.Status`
//! whose `details` hold one `google.protobuf.Any` with the type URL
//! `type.googleapis.com/<full name of the raises message>`.

use crate::status::{Code, Status};
use bytes::Bytes;
use prost::Message;

/// Prefix of the `Any` type URL of a typed error payload.
pub const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

/// `google.rpc.Status`, as in `google/rpc/status.proto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    /// The status code (gRPC's numbers).
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// The message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// Typed details.
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    /// `type.googleapis.com/<full message name>`.
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// The encoded message.
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

/// The gRPC code with the same number.
pub fn to_tonic_code(code: Code) -> tonic::Code {
    tonic::Code::from_i32(code.as_i32())
}

/// Our status as tonic's: code and message as they are; a typed payload
/// becomes the `google.rpc.Status` details described in the module docs.
pub fn to_tonic(status: &Status) -> tonic::Status {
    let mut out = to_tonic_bare(status);
    if let Some(metadata) = status.metadata() {
        crate::grpc::metadata::put_reply_metadata(out.metadata_mut(), metadata);
    }
    out
}

fn to_tonic_bare(status: &Status) -> tonic::Status {
    let code = to_tonic_code(status.code());
    if status.details_type().is_empty() {
        return tonic::Status::new(code, status.message());
    }
    let details = RpcStatus {
        code: status.code().as_i32(),
        message: status.message().to_owned(),
        details: vec![Any {
            type_url: format!("{TYPE_URL_PREFIX}{}", status.details_type()),
            value: status.details().clone(),
        }],
    };
    tonic::Status::with_details(code, status.message(), Bytes::from(details.encode_to_vec()))
}

/// Tonic's status as ours: the first `Any` of the details (if they are a
/// `google.rpc.Status`) becomes the typed payload. Details that are not a
/// `google.rpc.Status` are ignored (logged at debug).
pub fn from_tonic(status: &tonic::Status) -> Status {
    from_tonic_bare(status).with_metadata(crate::grpc::metadata::user_metadata(status.metadata()))
}

fn from_tonic_bare(status: &tonic::Status) -> Status {
    let code = Code::from_i32(status.code() as i32);
    let message = status.message().to_owned();
    if status.details().is_empty() {
        return Status::new(code, message);
    }
    match RpcStatus::decode(status.details()) {
        Ok(rpc) => match rpc.details.into_iter().next() {
            Some(any) => {
                let name = any
                    .type_url
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                Status::with_details(code, message, name, any.value)
            }
            None => Status::new(code, message),
        },
        Err(error) => {
            tracing::debug!(%error, "grpc-status-details-bin is not a google.rpc.Status");
            Status::new(code, message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_payload_round_trips_through_tonic() {
        let ours = Status::with_details(
            Code::FailedPrecondition,
            "no",
            "demo.v1.Overdrawn",
            Bytes::from_static(b"\x08\x01"),
        );
        let theirs = to_tonic(&ours);
        assert_eq!(theirs.code(), tonic::Code::FailedPrecondition);
        assert_eq!(from_tonic(&theirs), ours);
        let plain = Status::not_found("gone");
        assert_eq!(from_tonic(&to_tonic(&plain)), plain);
        for n in 0..=16 {
            assert_eq!(to_tonic_code(Code::from_i32(n)) as i32, n);
        }
    }

    #[test]
    fn foreign_details_are_ignored() {
        let theirs = tonic::Status::with_details(
            tonic::Code::Internal,
            "x",
            Bytes::from_static(b"\xff\xff"),
        );
        assert_eq!(from_tonic(&theirs), Status::internal("x"));
    }
}
