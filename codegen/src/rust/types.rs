//! Messages, enums and oneofs: prost types with exactly protobuf's wire
//! format, written the way prost-build writes them, with every path
//! absolute through `::rpc_core::codegen`.

use super::context::Context;
use super::docs::docs;
use super::names::{ident, snake_ident, type_ident, variant_name};
use crate::model::{Enum, Field, FieldKind, Message, Oneof, Scalar, Type, TypeRef};
use proc_macro2::TokenStream;
use quote::quote;

/// The `prost_path` every derive is told, so that the derives' own output
/// goes through `rpc-core` too.
const PROST_PATH: &str = "::rpc_core::codegen::prost";

/// The Rust path of `target` as seen from a module `extra` levels below
/// the module of package `from` (0 for the package module itself, 1 inside
/// a oneof module): `Name`, `super::Name`, or
/// `super::super::common::v1::Name` for another package.
pub(super) fn type_path(from: &[String], extra: usize, target: &TypeRef) -> TokenStream {
    let name = type_ident(&target.name);
    let ups = if from == target.package.as_slice() {
        extra
    } else {
        extra + from.len()
    };
    let supers = (0..ups).map(|_| quote!(super::));
    let segs = if from == target.package.as_slice() {
        Vec::new()
    } else {
        target.package.iter().map(|p| snake_ident(p)).collect()
    };
    quote!(#(#supers)* #(#segs::)* #name)
}

/// The same path as a string, for the `enumeration = "..."` and
/// `oneof = "..."` attributes of prost.
fn type_path_string(from: &[String], extra: usize, target: &TypeRef) -> String {
    type_path(from, extra, target).to_string().replace(' ', "")
}

/// The prost attribute word and the Rust type of a scalar.
fn scalar(s: Scalar) -> (TokenStream, TokenStream) {
    match s {
        Scalar::Double => (quote!(double), quote!(f64)),
        Scalar::Float => (quote!(float), quote!(f32)),
        Scalar::Int32 => (quote!(int32), quote!(i32)),
        Scalar::Int64 => (quote!(int64), quote!(i64)),
        Scalar::Uint32 => (quote!(uint32), quote!(u32)),
        Scalar::Uint64 => (quote!(uint64), quote!(u64)),
        Scalar::Sint32 => (quote!(sint32), quote!(i32)),
        Scalar::Sint64 => (quote!(sint64), quote!(i64)),
        Scalar::Fixed32 => (quote!(fixed32), quote!(u32)),
        Scalar::Fixed64 => (quote!(fixed64), quote!(u64)),
        Scalar::Sfixed32 => (quote!(sfixed32), quote!(i32)),
        Scalar::Sfixed64 => (quote!(sfixed64), quote!(i64)),
        Scalar::Bool => (quote!(bool), quote!(bool)),
        Scalar::String => (quote!(string), quote!(::rpc_core::codegen::String)),
        // `bytes` fields are `Bytes` (zero-copy slices of the received
        // datagram), as in the hand-written envelope.
        Scalar::Bytes => (quote!(bytes = "bytes"), quote!(::rpc_core::codegen::Bytes)),
    }
}

/// The prost kind word and Rust element type of a field's type, as seen
/// from `extra` levels below the package module. Messages are `boxed`
/// when `boxed` is set (recursive types).
fn element(cx: &Context<'_>, extra: usize, ty: &Type, boxed: bool) -> (TokenStream, TokenStream) {
    match ty {
        Type::Scalar(s) => scalar(*s),
        Type::Enum(r) => {
            let path = type_path_string(cx.package, extra, r);
            (quote!(enumeration = #path), quote!(i32))
        }
        Type::Message(r) => {
            let path = type_path(cx.package, extra, r);
            if boxed {
                (quote!(message), quote!(::rpc_core::codegen::Box<#path>))
            } else {
                (quote!(message), quote!(#path))
            }
        }
    }
}

/// The value part of prost's `map = "K, V"` attribute and the Rust value type.
fn map_value(cx: &Context<'_>, ty: &Type) -> (String, TokenStream) {
    match ty {
        // prost-derive only supports `Vec<u8>` for `bytes` map values.
        Type::Scalar(Scalar::Bytes) => ("bytes".to_owned(), quote!(::rpc_core::codegen::Vec<u8>)),
        Type::Scalar(s) => (s.keyword().to_owned(), scalar(*s).1),
        Type::Enum(r) => (
            format!("enumeration({})", type_path_string(cx.package, 0, r)),
            quote!(i32),
        ),
        Type::Message(r) => ("message".to_owned(), type_path(cx.package, 0, r)),
    }
}

fn field(cx: &Context<'_>, msg: &Message, f: &Field) -> TokenStream {
    let name = snake_ident(&f.name);
    let doc = docs(&f.docs);
    let tag = f.tag.to_string();
    let (attr, ty) = match &f.kind {
        FieldKind::Single(t @ Type::Message(r)) | FieldKind::Optional(t @ Type::Message(r)) => {
            let boxed = cx.is_recursive(msg, r);
            let (kind, elem) = element(cx, 0, t, boxed);
            let boxed_attr = boxed.then(|| quote!(boxed,));
            (
                quote!(#kind, optional, #boxed_attr tag = #tag),
                quote!(::rpc_core::codegen::Option<#elem>),
            )
        }
        FieldKind::Single(t) => {
            let (kind, elem) = element(cx, 0, t, false);
            (quote!(#kind, tag = #tag), elem)
        }
        FieldKind::Optional(t) => {
            let (kind, elem) = element(cx, 0, t, false);
            (
                quote!(#kind, optional, tag = #tag),
                quote!(::rpc_core::codegen::Option<#elem>),
            )
        }
        FieldKind::Repeated(t) => {
            // Numeric scalars and enums are packed: prost's default for
            // `repeated`, as proto3 requires.
            let (kind, elem) = element(cx, 0, t, false);
            (
                quote!(#kind, repeated, tag = #tag),
                quote!(::rpc_core::codegen::Vec<#elem>),
            )
        }
        FieldKind::Map(k, v) => {
            let (vs, vty) = map_value(cx, v);
            let spec = format!("{}, {}", k.keyword(), vs);
            let kty = scalar(*k).1;
            (
                quote!(map = #spec, tag = #tag),
                quote!(::rpc_core::codegen::HashMap<#kty, #vty>),
            )
        }
    };
    quote! {
        #doc
        #[prost(#attr)]
        pub #name: #ty,
    }
}

fn oneof_field(msg: &Message, o: &Oneof) -> TokenStream {
    let name = snake_ident(&o.name);
    let doc = docs(&o.docs);
    let module = snake_ident(&msg.name);
    let en = type_ident(&o.name);
    let path = format!("{}::{}", module, en);
    let tags = o
        .fields
        .iter()
        .map(|f| f.tag.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    quote! {
        #doc
        #[prost(oneof = #path, tags = #tags)]
        pub #name: ::rpc_core::codegen::Option<#module::#en>,
    }
}

/// The `pub mod <message> { pub enum <Oneof> {..} }` of a message's oneofs.
fn oneof_module(cx: &Context<'_>, msg: &Message) -> TokenStream {
    let module = snake_ident(&msg.name);
    let doc = format!(" Nested types of `{}`.", msg.name);
    let enums = msg.oneofs.iter().map(|o| {
        let doc = docs(&o.docs);
        let name = type_ident(&o.name);
        let variants = o.fields.iter().map(|f| {
            let doc = docs(&f.docs);
            let v = type_ident(&f.name);
            let tag = f.tag.to_string();
            let boxed = matches!(&f.ty, Type::Message(r) if cx.is_recursive(msg, r));
            let (kind, elem) = element(cx, 1, &f.ty, boxed);
            let boxed_attr = boxed.then(|| quote!(boxed,));
            quote! {
                #doc
                #[prost(#kind, #boxed_attr tag = #tag)]
                #v(#elem),
            }
        });
        quote! {
            #doc
            #[derive(::rpc_core::codegen::Clone, ::rpc_core::codegen::PartialEq, ::rpc_core::codegen::prost::Oneof)]
            #[prost(prost_path = #PROST_PATH)]
            pub enum #name {
                #(#variants)*
            }
        }
    });
    let prelude = derive_prelude();
    quote! {
        #[doc = #doc]
        pub mod #module {
            #prelude
            #(#enums)*
        }
    }
}

/// The glob import that prost-derive's output needs: it names `Some`,
/// `Ok`, `Err`, `Default` and `Iterator` without a path (message and oneof
/// fields, enum getters and `Debug`). Emitted in every module that holds
/// messages or oneofs.
pub(super) fn derive_prelude() -> TokenStream {
    quote! {
        #[allow(unused_imports)]
        use ::rpc_core::codegen::derive_prelude::*;
    }
}

/// A message: the struct, its `prost::Name`, and its oneof module.
pub(super) fn message(cx: &Context<'_>, msg: &Message) -> TokenStream {
    let name = type_ident(&msg.name);
    let doc = docs(&msg.docs);
    let fields = msg.fields.iter().map(|f| field(cx, msg, f));
    let oneofs = msg.oneofs.iter().map(|o| oneof_field(msg, o));
    let proto_name = &msg.name;
    let package = cx.package.join(".");
    let module = (!msg.oneofs.is_empty()).then(|| oneof_module(cx, msg));
    quote! {
        #doc
        #[derive(::rpc_core::codegen::Clone, ::rpc_core::codegen::PartialEq, ::rpc_core::codegen::prost::Message)]
        #[prost(prost_path = #PROST_PATH)]
        pub struct #name {
            #(#fields)*
            #(#oneofs)*
        }

        impl ::rpc_core::codegen::prost::Name for #name {
            const NAME: &'static str = #proto_name;
            const PACKAGE: &'static str = #package;
        }

        #module
    }
}

/// An enum: the `#[repr(i32)]` enum and its `as_str_name`/`from_str_name`.
pub(super) fn enumeration(e: &Enum) -> TokenStream {
    let name = type_ident(&e.name);
    let doc = docs(&e.docs);
    let variants: Vec<_> = e
        .values
        .iter()
        .map(|v| ident(&variant_name(&e.name, &v.name)))
        .collect();
    let decls = e.values.iter().zip(&variants).map(|(v, id)| {
        let doc = docs(&v.docs);
        let n = proc_macro2::Literal::i32_unsuffixed(v.number);
        quote! { #doc #id = #n, }
    });
    let strs: Vec<&str> = e.values.iter().map(|v| v.name.as_str()).collect();
    quote! {
        #doc
        #[derive(
            ::rpc_core::codegen::Clone,
            ::rpc_core::codegen::Copy,
            ::rpc_core::codegen::Debug,
            ::rpc_core::codegen::PartialEq,
            ::rpc_core::codegen::Eq,
            ::rpc_core::codegen::Hash,
            ::rpc_core::codegen::PartialOrd,
            ::rpc_core::codegen::Ord,
            ::rpc_core::codegen::prost::Enumeration
        )]
        #[prost(prost_path = #PROST_PATH)]
        #[repr(i32)]
        pub enum #name {
            #(#decls)*
        }

        impl #name {
            /// The value's name as declared in the IDL (and in `.proto`):
            /// stable, safe for programmatic use.
            pub fn as_str_name(&self) -> &'static str {
                match self {
                    #(Self::#variants => #strs,)*
                }
            }

            /// The value with this IDL name, if any.
            pub fn from_str_name(value: &str) -> ::rpc_core::codegen::Option<Self> {
                match value {
                    #(#strs => ::rpc_core::codegen::Some(Self::#variants),)*
                    _ => ::rpc_core::codegen::None,
                }
            }
        }
    }
}
