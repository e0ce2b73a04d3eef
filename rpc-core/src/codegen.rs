//! The one module generated code refers to, always through absolute paths
//! (`::rpc_core::codegen::...`), so that it compiles whatever the user has
//! imported, even under `#![no_implicit_prelude]`. Not a stable API.

pub use ::bytes::Bytes;
pub use ::futures::future::BoxFuture;
pub use ::prost;
pub use ::std::boxed::Box;
// Traits and their derives (a `use` brings both), for generated impls and
// `#[derive]`s that must not rely on the prelude.
pub use ::std::clone::Clone;
pub use ::std::cmp::{Eq, Ord, PartialEq, PartialOrd};
pub use ::std::collections::HashMap;
pub use ::std::convert::{From, Into};
pub use ::std::default::Default;
pub use ::std::fmt::Debug;
pub use ::std::future::Future;
pub use ::std::hash::Hash;
pub use ::std::marker::Copy;
pub use ::std::marker::{Send, Sync};
pub use ::std::option::Option::{self, None, Some};
pub use ::std::result::Result::{self, Err, Ok};
pub use ::std::string::String;
pub use ::std::sync::Arc;
pub use ::std::vec::Vec;

/// Names that prost-derive's output uses without a path (`Some` for
/// message and oneof fields, `Ok`/`Err`/`Default`/`Iterator` for enum
/// fields): every generated module holding messages glob-imports this, so
/// that it compiles without the prelude.
pub mod derive_prelude {
    pub use ::std::default::Default;
    pub use ::std::iter::Iterator;
    pub use ::std::option::Option::{None, Some};
    pub use ::std::result::Result::{Err, Ok};
}

/// What the generated gRPC face (tonic-build's server, over a
/// [`Door`](crate::grpc::Door)) names: tonic-build writes `tonic::...` and
/// `std::...` paths and relies on the prelude, so its module imports
/// `tonic`, `std` and [`grpc::prelude`](self::grpc::prelude) from here.
#[cfg(feature = "grpc")]
pub mod grpc {
    pub use crate::grpc::{route, BytesCodec, Door, Route};
    pub use ::std;
    pub use ::tonic;
    pub use ::tonic::codegen::async_trait;

    /// The standard prelude, for tonic-build's output under
    /// `#![no_implicit_prelude]`.
    pub mod prelude {
        pub use ::std::prelude::rust_2021::*;
    }
}

pub use crate::call::{style, Call, Client, GroupCall, GroupClient, OneWay};
pub use crate::client::ConnectError;
pub use crate::error::{CallError, MethodError, Never, Raisable};
pub use crate::service::{CallContext, MethodInfo, Protocol, Service, ServiceInfo, Style};
pub use crate::status::{Code, Status};

/// Decodes a request for a dispatcher; a malformed one becomes
/// `INVALID_ARGUMENT`, refused before the method ran (answered with ERROR).
///
/// # Errors
/// When `bytes` is not a valid encoding of `T`.
pub fn decode_request<T: prost::Message + Default>(bytes: Bytes) -> Result<T, Status> {
    T::decode(bytes)
        .map_err(|e| Status::refused(Code::InvalidArgument, format!("malformed request: {e}")))
}

/// Encodes a reply for a dispatcher.
pub fn encode_reply<T: prost::Message>(reply: &T) -> Bytes {
    Bytes::from(reply.encode_to_vec())
}

/// The answer to a method id the service does not have.
pub fn unimplemented(
    service: &ServiceInfo,
    method_id: u32,
) -> BoxFuture<'static, Result<Bytes, Status>> {
    let status = Status::unimplemented(format!(
        "{} has no method with id {method_id:#010x}",
        service.full_name
    ));
    Box::pin(async move { Err(status) })
}
