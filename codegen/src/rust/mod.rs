//! The Rust back end: a [`Model`] to Rust source.
//!
//! One `quote!` function per generated item (`types` for messages, enums
//! and oneofs; `service` for the service description, server trait,
//! dispatcher, client stub and group client; `grpc` for the service's gRPC
//! face) builds a token stream ([`tokens`]); `build.rs`
//! ([`crate::Builder`]) writes it out through `syn` and `prettyplease`
//! ([`generate`]); the `idl!` macro of `rpc-macros` emits the same tokens
//! directly.
//!
//! The modules depend one way: this one (the package module tree and the
//! entry points) uses `types` and `service`; `service` uses `grpc`; all of
//! them use the shared helpers `names` (Rust names of IDL names, the
//! `MethodInfo` const of a method), `docs` (doc attributes) and `context`
//! (the package being generated and which fields are boxed).
//!
//! # The generated code
//! - One Rust module per package path: `package demo.v1;` becomes
//!   `pub mod demo { pub mod v1 { .. } }` and a file without a package puts
//!   its items at the top level. Every file of the model (imports
//!   included) is generated into the same output, so a type of another
//!   package is referred to by a relative path
//!   (`super::super::common::v1::Status`): the output can be included into
//!   any module of the user's crate.
//! - Paths are absolute through `::rpc_core::codegen` only, so the output
//!   compiles under `#![no_implicit_prelude]` (derives included: they are
//!   given `prost_path = "::rpc_core::codegen::prost"`).
//! - Messages, enums and oneofs are what prost-build would write for the
//!   equivalent `.proto` (names, attributes, `Option<T>` for message
//!   fields, `Box` only for recursive ones), except: `bytes` is
//!   `::rpc_core::codegen::Bytes` (`Vec<u8>` as a map value, the only form
//!   prost-derive supports there), and `prost::Name` relies on its default
//!   `full_name`/`type_url`.
//! - Per service `Clock`: `clock::SERVICE` and one `MethodInfo` const per
//!   method (`clock::GET_TIME`), the trait `Clock`, the dispatcher
//!   `ClockServer<S>`, the stub `ClockClient` and the multicast stub
//!   `ClockGroupClient`. Stub methods take the request by value (as tonic).
//! - Per service, its gRPC face: tonic-build's server module
//!   `clock_grpc_server` generated from our model (see `grpc`), and
//!   `Service::grpc_route` on `ClockServer<S>` (needs `rpc-core`'s `grpc`
//!   feature, on by default).

mod context;
mod docs;
mod grpc;
mod names;
mod service;
mod types;

use crate::model::Model;
use context::{reachability, Context};
use docs::docs;
use proc_macro2::TokenStream;
use quote::quote;
use std::path::Path;

/// A tree of modules, one per package segment, in order of first appearance.
#[derive(Default)]
struct ModuleTree {
    docs: Vec<String>,
    /// Whether prost-derive's output (which names `Some`, `Ok`, .. without
    /// a path) needs [`types::derive_prelude`] here.
    needs_prelude: bool,
    items: Vec<TokenStream>,
    children: Vec<(String, ModuleTree)>,
}

impl ModuleTree {
    fn at(&mut self, path: &[String]) -> &mut ModuleTree {
        let Some((first, rest)) = path.split_first() else {
            return self;
        };
        let pos = match self.children.iter().position(|(n, _)| n == first) {
            Some(p) => p,
            None => {
                self.children.push((first.clone(), ModuleTree::default()));
                self.children.len() - 1
            }
        };
        self.children[pos].1.at(rest)
    }

    fn into_tokens(self) -> TokenStream {
        let prelude = self.needs_prelude.then(types::derive_prelude);
        let items = self.items;
        let children = self.children.into_iter().map(|(name, child)| {
            let ident = names::snake_ident(&name);
            let doc = if child.docs.is_empty() {
                let text = format!(" Package segment `{name}`.");
                quote!(#[doc = #text])
            } else {
                docs(&child.docs)
            };
            let body = child.into_tokens();
            quote! {
                #doc
                pub mod #ident {
                    #body
                }
            }
        });
        quote!(#prelude #(#items)* #(#children)*)
    }
}

/// The generated items for `model`, as tokens: what the `idl!` macro
/// emits and what [`generate`] formats.
pub fn tokens(model: &Model) -> TokenStream {
    let reach = reachability(model);
    let mut root = ModuleTree::default();
    for file in &model.files {
        let cx = Context::new(&file.package, &reach);
        let mut items = Vec::new();
        for m in &file.messages {
            items.push(types::message(&cx, m));
        }
        for e in &file.enums {
            items.push(types::enumeration(e));
        }
        for s in &file.services {
            items.push(service::service(&cx, s));
        }
        let module = root.at(&file.package);
        module.needs_prelude |= !file.messages.is_empty();
        if !file.package.is_empty() && !file.docs.is_empty() {
            if !module.docs.is_empty() {
                module.docs.push(String::new());
            }
            module.docs.extend(file.docs.iter().cloned());
        }
        module.items.extend(items);
    }
    root.into_tokens()
}

/// The header line: `// Generated by rpc-codegen from a.idl, b.idl. DO NOT EDIT.`
/// naming every file of the model; paths under `base` are shown relative to it.
pub fn header(model: &Model, base: Option<&Path>) -> String {
    let canonical_base = base.and_then(|b| b.canonicalize().ok());
    let files: Vec<String> = model
        .files
        .iter()
        .map(|f| {
            let relative = base
                .and_then(|b| f.path.strip_prefix(b).ok())
                .map(Path::to_path_buf)
                .or_else(|| {
                    // Imports may be resolved to canonical paths while the root
                    // is not (or the other way round): compare canonically too.
                    let cb = canonical_base.as_deref()?;
                    f.path
                        .canonicalize()
                        .ok()?
                        .strip_prefix(cb)
                        .ok()
                        .map(Path::to_path_buf)
                });
            let shown = relative.as_deref().unwrap_or(&f.path);
            shown.display().to_string().replace('\\', "/")
        })
        .collect();
    format!(
        "// Generated by rpc-codegen from {}. DO NOT EDIT.\n",
        files.join(", ")
    )
}

/// The generated code as a `syn::File`.
///
/// # Errors
/// Only on a bug of this back end (tokens that are not a Rust file).
pub fn syntax(model: &Model) -> Result<syn::File, syn::Error> {
    syn::parse2(tokens(model))
}

/// The generated Rust for `model`, formatted with prettyplease, starting
/// with a `// Generated by rpc-codegen from <file>. DO NOT EDIT.` header.
pub fn generate(model: &Model) -> String {
    generate_with_base(model, None)
}

/// As [`generate`], with the header's paths shown relative to `base`.
pub fn generate_with_base(model: &Model, base: Option<&Path>) -> String {
    let mut out = header(model, base);
    match syntax(model) {
        Ok(file) => out.push_str(&prettyplease::unparse(&file)),
        Err(e) => {
            // A bug of the back end, never of the input: make it a compile
            // error of the including crate rather than a panic of build.rs.
            let msg = format!("rpc-codegen produced invalid Rust (a bug, please report): {e}");
            out.push_str(&format!("::core::compile_error!({msg:?});\n"));
        }
    }
    out
}
