//! The gRPC face of a service: `tonic_build`'s server generator run over
//! our model, as `tonic_build::manual` does for hand-written descriptions
//! (no protoc).
//!
//! For a service `Counter` of package `demo.v1` this emits, next to the
//! other items of the service:
//! - `counter_grpc_server`: tonic-build's module, with the trait
//!   `CounterGrpc` (one `async fn` per method) and the tower service
//!   `CounterGrpcServer<T>`, routing `/demo.v1.Counter/<Method>`. The codec
//!   is `rpc_core`'s `BytesCodec`: requests and replies stay encoded, the
//!   dispatcher (`CounterServer`) decodes them as it does for UDP and TCP.
//! - in that module, `impl CounterGrpc for ::rpc_core::codegen::grpc::Door`:
//!   every method hands its request to `Door::unary` with its `MethodInfo`
//!   (so the engine, its history and the handler's `CallContext` are the
//!   same as on the other transports);
//! - `Service::grpc_route` of `CounterServer<S>`, returning that server over
//!   the door it is given: what `serve_grpc` mounts.
//!
//! Paths: tonic-build writes `tonic::...` and `std::...` and relies on the
//! prelude (`Box`, `Ok`, `Default`, ...). The emitted module therefore starts
//! with `use ::rpc_core::codegen::grpc::{std, tonic};` and a glob import of
//! `::rpc_core::codegen::grpc::prelude::*`, so it still compiles under
//! `#![no_implicit_prelude]` and without a `tonic` dependency of the user's
//! crate; everything outside that module names `::rpc_core::codegen` only.

use super::names::{bare_type_name, method_const, snake_ident};
use crate::model::Service;
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

/// Our service as tonic-build sees it.
struct GrpcService {
    /// Name of the generated trait (`CounterGrpc`); the server is
    /// `<name>Server` in the module `<snake name>_server`.
    name: String,
    package: String,
    /// The service's name in the route (`Counter`).
    identifier: String,
    methods: Vec<GrpcMethod>,
    comment: Vec<String>,
}

/// One of our methods as tonic-build sees it (always unary).
struct GrpcMethod {
    /// The Rust name of the trait method (may be raw: `r#type`).
    name: String,
    /// The method's name in the route (`Increment`).
    identifier: String,
    comment: Vec<String>,
}

/// Where generated code finds the codec.
const CODEC_PATH: &str = "::rpc_core::codegen::grpc::BytesCodec";

impl tonic_build::Service for GrpcService {
    type Comment = String;
    type Method = GrpcMethod;

    fn name(&self) -> &str {
        &self.name
    }
    fn package(&self) -> &str {
        &self.package
    }
    fn identifier(&self) -> &str {
        &self.identifier
    }
    fn methods(&self) -> &[GrpcMethod] {
        &self.methods
    }
    fn comment(&self) -> &[String] {
        &self.comment
    }
}

impl tonic_build::Method for GrpcMethod {
    type Comment = String;

    fn name(&self) -> &str {
        &self.name
    }
    fn identifier(&self) -> &str {
        &self.identifier
    }
    fn codec_path(&self) -> &str {
        CODEC_PATH
    }
    fn client_streaming(&self) -> bool {
        false
    }
    fn server_streaming(&self) -> bool {
        false
    }
    fn comment(&self) -> &[String] {
        &self.comment
    }
    fn request_response_name(
        &self,
        _proto_path: &str,
        _compile_well_known_types: bool,
    ) -> (TokenStream, TokenStream) {
        (
            quote!(::rpc_core::codegen::Bytes),
            quote!(::rpc_core::codegen::Bytes),
        )
    }
}

fn adapter(package: &[String], s: &Service) -> GrpcService {
    let bare = bare_type_name(&s.name);
    GrpcService {
        name: format!("{bare}Grpc"),
        package: package.join("."),
        identifier: s.name.clone(),
        comment: vec![format!(
            " The gRPC face of `{}`: mounted by `serve_grpc` through `{bare}Server`.",
            s.name
        )],
        methods: s
            .methods
            .iter()
            .map(|m| GrpcMethod {
                name: snake_ident(&m.name).to_string(),
                identifier: m.name.clone(),
                comment: vec![format!(" `{}`: handed to `Door::unary`.", m.name)],
            })
            .collect(),
    }
}

/// The names of what [`module`] emits: its module and its server type.
pub(super) struct Names {
    pub(super) module: syn::Ident,
    pub(super) server: syn::Ident,
}

/// tonic-build's server module for `s`, with the imports it needs and the
/// implementation of its trait for `Door`, plus the names of the module and
/// its server type.
pub(super) fn module(package: &[String], s: &Service) -> (TokenStream, Names) {
    let adapter = adapter(package, s);
    let tokens = tonic_build::CodeGenBuilder::new()
        .emit_package(true)
        .build_transport(false)
        .generate_server(&adapter, "");
    let trait_name = format_ident!("{}", adapter.name);
    let server = format_ident!("{}Server", adapter.name);
    let mut module: syn::ItemMod = match syn::parse2(tokens) {
        Ok(m) => m,
        Err(e) => {
            let names = Names {
                module: format_ident!("{}_grpc_server", snake_ident(&s.name).to_string()),
                server,
            };
            return (e.to_compile_error(), names);
        }
    };
    let info = snake_ident(&s.name);
    let methods = s.methods.iter().map(|m| {
        let fname = snake_ident(&m.name);
        let c = method_const(&m.name);
        quote! {
            async fn #fname(
                &self,
                request: tonic::Request<::rpc_core::codegen::Bytes>,
            ) -> std::result::Result<tonic::Response<::rpc_core::codegen::Bytes>, tonic::Status> {
                ::rpc_core::codegen::grpc::Door::unary(self, &super::#info::#c, request).await
            }
        }
    });
    let door_impl: syn::Item = syn::parse_quote! {
        #[async_trait]
        impl #trait_name for ::rpc_core::codegen::grpc::Door {
            #(#methods)*
        }
    };
    if let Some((_, items)) = &mut module.content {
        items.insert(
            0,
            syn::parse_quote!(
                use ::rpc_core::codegen::grpc::prelude::*;
            ),
        );
        items.insert(
            0,
            syn::parse_quote!(
                use ::rpc_core::codegen::grpc::{std, tonic};
            ),
        );
        items.push(door_impl);
    }
    let names = Names {
        module: module.ident.clone(),
        server,
    };
    (quote!(#module), names)
}

/// `Service::grpc_route` for the dispatcher's `impl Service`.
pub(super) fn route_method(names: &Names) -> TokenStream {
    let Names { module, server } = names;
    quote! {
        fn grpc_route(
            &self,
            door: ::rpc_core::codegen::grpc::Door,
        ) -> ::rpc_core::codegen::Option<::rpc_core::codegen::grpc::Route> {
            let limit = door.max_message_len();
            ::rpc_core::codegen::Some(::rpc_core::codegen::grpc::route(
                #module::#server::new(door)
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(limit),
            ))
        }
    }
}
