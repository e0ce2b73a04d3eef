//! Services: the static description (`<service>::SERVICE` and one
//! `MethodInfo` const per method), the server trait, the dispatcher
//! `<Name>Server<S>`, the client stub `<Name>Client` and the group client
//! `<Name>GroupClient`.

use super::context::Context;
use super::docs::docs;
use super::grpc;
use super::names::{bare_type_name, method_const, snake_ident, type_ident};
use super::types::type_path;
use crate::model::{Method, Protocol, Service, Style};
use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote};

fn protocol_tokens(p: Protocol) -> TokenStream {
    match p {
        Protocol::R => quote!(::rpc_core::codegen::Protocol::R),
        Protocol::RR => quote!(::rpc_core::codegen::Protocol::RR),
        Protocol::RRA => quote!(::rpc_core::codegen::Protocol::RRA),
    }
}

fn style_tokens(s: Style) -> TokenStream {
    match s {
        Style::Sync => quote!(::rpc_core::codegen::Style::Sync),
        Style::Async => quote!(::rpc_core::codegen::Style::Async),
        Style::Deferred => quote!(::rpc_core::codegen::Style::Deferred),
        Style::OneWay => quote!(::rpc_core::codegen::Style::OneWay),
    }
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::R => "R",
        Protocol::RR => "RR",
        Protocol::RRA => "RRA",
    }
}

fn style_name(s: Style) -> &'static str {
    match s {
        Style::Sync => "sync",
        Style::Async => "async",
        Style::Deferred => "deferred",
        Style::OneWay => "oneway",
    }
}

/// The method's signature as written in the IDL, e.g.
/// `rpc Adjust(Offset) returns (TimeReading) raises (NotSynchronised)`.
fn signature(m: &Method) -> String {
    if m.oneway {
        return format!("oneway rpc {}({})", m.name, m.request.name);
    }
    let mut s = format!("rpc {}({})", m.name, m.request.name);
    if let Some(r) = &m.response {
        s.push_str(&format!(" returns ({})", r.name));
    }
    if let Some(e) = &m.raises {
        s.push_str(&format!(" raises ({})", e.name));
    }
    s
}

/// The semantics of a method in one sentence, for its docs.
fn semantics(m: &Method) -> String {
    let invocation = match (m.protocol, m.idempotent) {
        (Protocol::R, _) => "maybe (sent once, no reply)",
        (_, true) => "at-least-once (idempotent: run again on a retransmission, no reply history)",
        (_, false) => "at-most-once (duplicates filtered, reply history)",
    };
    let mut s = format!(
        "`{}`: protocol {}, {}, default style {}",
        signature(m),
        protocol_name(m.protocol),
        invocation,
        style_name(m.style)
    );
    if let Some(t) = m.timeout_ms {
        s.push_str(&format!(", timeout {t} ms"));
    }
    if let Some(r) = m.retries {
        s.push_str(&format!(", {r} retries"));
    }
    s.push_str(&format!(", method id {:#010x}.", m.id));
    s
}

/// IDL docs of a method, then a blank line and its semantics.
fn method_docs(m: &Method) -> TokenStream {
    let mut lines = m.docs.clone();
    if !lines.is_empty() {
        lines.push(String::new());
    }
    lines.push(semantics(m));
    docs(&lines)
}

fn hex(id: u32) -> syn::LitInt {
    syn::LitInt::new(&format!("{id:#010x}"), Span::call_site())
}

/// `pub mod clock { pub static SERVICE; pub const GET_TIME: MethodInfo; .. }`.
fn info_module(cx: &Context<'_>, s: &Service) -> TokenStream {
    let module = snake_ident(&s.name);
    let package = cx.package.join(".");
    let name = &s.name;
    let full_name = if package.is_empty() {
        s.name.clone()
    } else {
        format!("{package}.{}", s.name)
    };
    let consts: Vec<Ident> = s.methods.iter().map(|m| method_const(&m.name)).collect();
    let infos = s.methods.iter().zip(&consts).map(|(m, c)| {
        let doc = format!(" `{}`: {}", m.name, semantics(m));
        let mname = &m.name;
        let id = hex(m.id);
        let request = m.request.full_name();
        let response = m
            .response
            .as_ref()
            .map(|r| r.full_name())
            .unwrap_or_default();
        let raises = m.raises.as_ref().map(|r| r.full_name()).unwrap_or_default();
        let oneway = m.oneway;
        let idempotent = m.idempotent;
        let protocol = protocol_tokens(m.protocol);
        let style = style_tokens(m.style);
        let timeout = m.timeout_ms.unwrap_or(0);
        let retries = match m.retries {
            Some(r) => quote!(::rpc_core::codegen::Some(#r)),
            None => quote!(::rpc_core::codegen::None),
        };
        quote! {
            #[doc = #doc]
            pub const #c: ::rpc_core::codegen::MethodInfo = ::rpc_core::codegen::MethodInfo {
                name: #mname,
                id: #id,
                request_type: #request,
                response_type: #response,
                raises_type: #raises,
                oneway: #oneway,
                idempotent: #idempotent,
                protocol: #protocol,
                style: #style,
                timeout_ms: #timeout,
                retries: #retries,
            };
        }
    });
    let module_doc =
        format!(" Static description of the service `{full_name}` and of each of its methods.");
    let service_doc =
        format!(" The service `{full_name}`: what a server hosts and a client calls.");
    quote! {
        #[doc = #module_doc]
        pub mod #module {
            #[doc = #service_doc]
            pub static SERVICE: ::rpc_core::codegen::ServiceInfo = ::rpc_core::codegen::ServiceInfo {
                package: #package,
                name: #name,
                full_name: #full_name,
                methods: &[#(#consts),*],
            };
            #(#infos)*
        }
    }
}

/// The error type of a method's handler and of its caller: the `raises`
/// type, or `Never`.
fn raises_type(cx: &Context<'_>, m: &Method) -> TokenStream {
    match &m.raises {
        Some(r) => type_path(cx.package, 0, r),
        None => quote!(::rpc_core::codegen::Never),
    }
}

fn response_type(cx: &Context<'_>, m: &Method) -> TokenStream {
    match (&m.response, m.oneway) {
        (Some(r), false) => type_path(cx.package, 0, r),
        _ => quote!(()),
    }
}

/// The server trait: one method per IDL method, returning a `Send` future.
fn server_trait(cx: &Context<'_>, s: &Service) -> TokenStream {
    let name = type_ident(&s.name);
    let idl_docs = docs(&s.docs);
    let blank = (!s.docs.is_empty()).then(|| quote!(#[doc = ""]));
    let usage = format!(
        " Implement this trait (with `async fn`s) to serve `{}`; host it with [`{}Server`].",
        s.name,
        bare_type_name(&s.name)
    );
    let doc = quote!(#idl_docs #blank #[doc = #usage]);
    let methods = s.methods.iter().map(|m| {
        let doc = method_docs(m);
        let fname = snake_ident(&m.name);
        let req = type_path(cx.package, 0, &m.request);
        let resp = response_type(cx, m);
        let err = match &m.raises {
            Some(_) => {
                let e = raises_type(cx, m);
                quote!(::rpc_core::codegen::MethodError<#e>)
            }
            None => quote!(::rpc_core::codegen::Status),
        };
        quote! {
            #doc
            fn #fname(
                &self,
                ctx: ::rpc_core::codegen::CallContext,
                request: #req,
            ) -> impl ::rpc_core::codegen::Future<Output = ::rpc_core::codegen::Result<#resp, #err>>
                   + ::rpc_core::codegen::Send;
        }
    });
    quote! {
        #doc
        pub trait #name: ::rpc_core::codegen::Send + ::rpc_core::codegen::Sync + 'static {
            #(#methods)*
        }
    }
}

/// `<Name>Server<S>`: the dispatcher, routing by method id.
fn server(cx: &Context<'_>, s: &Service, grpc_route: &TokenStream) -> TokenStream {
    let idl_docs = service_docs(s);
    let trait_name = type_ident(&s.name);
    let bare = bare_type_name(&s.name);
    let server = format_ident!("{}Server", bare);
    let module = snake_ident(&s.name);
    let doc = format!(
        " Hosts an implementation of [`{bare}`]: decodes each request, runs the method its id names, encodes the reply."
    );
    let arms = s.methods.iter().map(|m| {
        let id = hex(m.id);
        let fname = snake_ident(&m.name);
        let req = type_path(cx.package, 0, &m.request);
        // Fully qualified, so that no other trait in scope (say a user's
        // `use rpc_core::Service` next to package-less generated code, whose
        // `call` could shadow a method named `Call`) is picked instead.
        let invoke = quote!(<S as #trait_name>::#fname(&inner, ctx, request).await);
        let call = if m.raises.is_some() {
            quote!(#invoke.map_err(::rpc_core::codegen::MethodError::into_status)?)
        } else {
            quote!(#invoke?)
        };
        let finish = if m.oneway || m.response.is_none() {
            quote! {
                let () = #call;
                ::rpc_core::codegen::Ok(::rpc_core::codegen::Bytes::new())
            }
        } else {
            quote! {
                let reply = #call;
                ::rpc_core::codegen::Ok(::rpc_core::codegen::encode_reply(&reply))
            }
        };
        quote! {
            #id => {
                let inner = <::rpc_core::codegen::Arc<S> as ::rpc_core::codegen::Clone>::clone(&self.inner);
                ::rpc_core::codegen::Box::pin(async move {
                    let request = ::rpc_core::codegen::decode_request::<#req>(request)?;
                    #finish
                })
            }
        }
    });
    let dispatch = if s.methods.is_empty() {
        // Nothing to route to: no match (clippy would call it needless).
        quote! {
            let _ = (ctx, request);
            ::rpc_core::codegen::unimplemented(&#module::SERVICE, method_id)
        }
    } else {
        quote! {
            match method_id {
                #(#arms)*
                _ => ::rpc_core::codegen::unimplemented(&#module::SERVICE, method_id),
            }
        }
    };
    quote! {
        #idl_docs #[doc = #doc]
        #[derive(::rpc_core::codegen::Debug)]
        pub struct #server<S> {
            inner: ::rpc_core::codegen::Arc<S>,
        }

        impl<S: #trait_name> #server<S> {
            /// Hosts `service`.
            pub fn new(service: S) -> Self {
                Self { inner: ::rpc_core::codegen::Arc::new(service) }
            }

            /// Hosts a shared `service`.
            pub fn from_arc(service: ::rpc_core::codegen::Arc<S>) -> Self {
                Self { inner: service }
            }

            /// The hosted implementation.
            pub fn get_ref(&self) -> &S {
                &self.inner
            }
        }

        impl<S> ::rpc_core::codegen::Clone for #server<S> {
            fn clone(&self) -> Self {
                Self { inner: <::rpc_core::codegen::Arc<S> as ::rpc_core::codegen::Clone>::clone(&self.inner) }
            }
        }

        impl<S: #trait_name> ::rpc_core::codegen::Service for #server<S> {
            fn info(&self) -> &'static ::rpc_core::codegen::ServiceInfo {
                &#module::SERVICE
            }

            fn call(
                &self,
                method_id: u32,
                ctx: ::rpc_core::codegen::CallContext,
                request: ::rpc_core::codegen::Bytes,
            ) -> ::rpc_core::codegen::BoxFuture<
                'static,
                ::rpc_core::codegen::Result<::rpc_core::codegen::Bytes, ::rpc_core::codegen::Status>,
            > {
                #dispatch
            }

            #grpc_route
        }
    }
}

/// Which stub a method is generated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stub {
    /// `<Name>Client`: calls one server.
    Unicast,
    /// `<Name>GroupClient`: calls every member of a group.
    Group,
}

/// One stub method per IDL method, returning a call in the method's
/// style (the type says which): `Call<Resp, E, style::_>` (`OneWay` for a
/// one-way method) in a unicast stub, `GroupCall<Resp, E, style::_>` in a
/// group stub, where a deferred method is called synchronously (a group
/// call has no deferred style).
fn stub_methods(cx: &Context<'_>, s: &Service, stub: Stub) -> Vec<TokenStream> {
    let module = snake_ident(&s.name);
    s.methods
        .iter()
        .map(|m| {
            let doc = method_docs(m);
            let fname = snake_ident(&m.name);
            let c = method_const(&m.name);
            let req = type_path(cx.package, 0, &m.request);
            let args = quote!(&#module::SERVICE, &#module::#c, &request);
            if stub == Stub::Unicast && m.oneway {
                return quote! {
                    #doc
                    pub fn #fname(&self, request: #req) -> ::rpc_core::codegen::OneWay {
                        self.inner.one_way(#args)
                    }
                };
            }
            let resp = response_type(cx, m);
            let err = raises_type(cx, m);
            let call = match stub {
                Stub::Unicast => quote!(Call),
                Stub::Group => quote!(GroupCall),
            };
            let (style, switch) = match (stub, m.style) {
                (_, Style::Async) => (quote!(Async), quote!(.asynchronous())),
                (Stub::Unicast, Style::Deferred) => (quote!(Deferred), quote!(.deferred())),
                (Stub::Group, Style::OneWay) => (quote!(OneWay), quote!(.one_way())),
                // Synchronous; and so is a deferred method in a group.
                _ => (quote!(Sync), quote!()),
            };
            quote! {
                #doc
                pub fn #fname(
                    &self,
                    request: #req,
                ) -> ::rpc_core::codegen::#call<#resp, #err, ::rpc_core::codegen::style::#style> {
                    self.inner.call(#args)#switch
                }
            }
        })
        .collect()
}

/// A stub struct: `<Name>Client` over a `Client` or `<Name>GroupClient`
/// over a `GroupClient`, with one method per IDL method returning a call
/// in the method's default style.
fn stub(cx: &Context<'_>, s: &Service, stub: Stub) -> TokenStream {
    let idl_docs = service_docs(s);
    let bare = bare_type_name(&s.name);
    let (name, doc, inner, arg, own) = match stub {
        Stub::Unicast => (
            format_ident!("{}Client", bare),
            format!(
                " Client stub of `{}`: each method returns a call in the IDL's default style; \
                 `.await` it, or change style and options first (`.deferred()`, `.timeout(..)`, ..).",
                s.name
            ),
            quote!(Client),
            quote!(client),
            quote! {
                /// A stub calling through `client` (a `Client`, or any channel:
                /// `UdpChannel`, `TcpChannel`, `GrpcChannel`).
                pub fn new(client: impl ::rpc_core::codegen::Into<::rpc_core::codegen::Client>) -> Self {
                    Self { inner: ::rpc_core::codegen::Into::into(client) }
                }

                /// A stub over a new client for `uri` (`udp://host:port`,
                /// `tcp://host:port`, `grpc://host:port`): see `Client::connect`.
                ///
                /// # Errors
                /// When the URI is invalid or its channel cannot be made.
                pub async fn connect(uri: &str) -> ::rpc_core::codegen::Result<Self, ::rpc_core::codegen::ConnectError> {
                    ::rpc_core::codegen::Result::Ok(Self::new(::rpc_core::codegen::Client::connect(uri).await?))
                }

                /// The client underneath.
                pub fn client(&self) -> &::rpc_core::codegen::Client {
                    &self.inner
                }
            },
        ),
        Stub::Group => (
            format_ident!("{}GroupClient", bare),
            format!(
                " Multicast stub of `{}`: each method calls every member of a group and completes \
                 as the call's policy says (`.all()`, `.first()`, `.quorum(k)`).",
                s.name
            ),
            quote!(GroupClient),
            quote!(group),
            quote! {
                /// A stub calling every member of `group`.
                pub fn new(group: ::rpc_core::codegen::GroupClient) -> Self {
                    Self { inner: group }
                }

                /// The group underneath (add and remove members through it).
                pub fn group(&self) -> &::rpc_core::codegen::GroupClient {
                    &self.inner
                }
            },
        ),
    };
    let methods = stub_methods(cx, s, stub);
    quote! {
        #idl_docs #[doc = #doc]
        #[derive(::rpc_core::codegen::Clone, ::rpc_core::codegen::Debug)]
        pub struct #name {
            inner: ::rpc_core::codegen::#inner,
        }

        impl #name {
            #own

            #(#methods)*
        }

        impl ::rpc_core::codegen::From<::rpc_core::codegen::#inner> for #name {
            fn from(#arg: ::rpc_core::codegen::#inner) -> Self {
                Self::new(#arg)
            }
        }
    }
}

/// The IDL docs of a service followed by a blank doc line (nothing when
/// it has none), to put before a generated item's own doc.
fn service_docs(s: &Service) -> TokenStream {
    if s.docs.is_empty() {
        return TokenStream::new();
    }
    let d = docs(&s.docs);
    quote!(#d #[doc = ""])
}

/// Everything generated for one service.
pub(super) fn service(cx: &Context<'_>, s: &Service) -> TokenStream {
    let info = info_module(cx, s);
    let tr = server_trait(cx, s);
    let (grpc, names) = grpc::module(cx.package, s);
    let srv = server(cx, s, &grpc::route_method(&names));
    let cl = stub(cx, s, Stub::Unicast);
    let gc = stub(cx, s, Stub::Group);
    quote! { #info #tr #srv #cl #gc #grpc }
}
