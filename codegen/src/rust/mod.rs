//! The Rust back end: a [`Model`] to Rust source.
//!
//! One `quote!` function per generated item (`types` for messages, enums
//! and oneofs; `service` for the service description, server trait,
//! dispatcher, client stub and group client) builds a token stream
//! ([`tokens`]); `build.rs` ([`crate::Builder`]) writes it out through
//! `syn` and `prettyplease` ([`generate`]); the `idl!` macro of `rpc-macros`
//! emits the same tokens directly.
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

mod grpc;
mod names;
mod service;
mod types;

use crate::model::{Model, TypeRef};
use proc_macro2::TokenStream;
use quote::quote;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// What every item generator needs: the package being generated and the
/// recursion analysis of the whole model.
pub(crate) struct Context<'a> {
    /// The package whose module the items go into.
    package: &'a [String],
    /// For each message (full name), the messages reachable from it through
    /// non-repeated message fields (singular, optional, oneof).
    reach: &'a HashMap<TypeRef, HashSet<TypeRef>>,
}

impl Context<'_> {
    /// Whether a field of type `field_type` in `msg` (of this package) must
    /// be boxed: `msg` is reachable from `field_type` through non-repeated
    /// message fields, as prost-build decides.
    fn is_recursive(&self, msg: &crate::model::Message, field_type: &TypeRef) -> bool {
        let me = TypeRef {
            package: self.package.to_vec(),
            name: msg.name.clone(),
        };
        *field_type == me || self.reach.get(field_type).is_some_and(|r| r.contains(&me))
    }
}

/// For every message, the set of messages reachable through singular,
/// optional and oneof message fields (repeated and map fields are behind a
/// `Vec`/`HashMap` and need no box).
fn reachability(model: &Model) -> HashMap<TypeRef, HashSet<TypeRef>> {
    use crate::model::{FieldKind, Type};
    let mut edges: HashMap<TypeRef, Vec<TypeRef>> = HashMap::new();
    for file in &model.files {
        for m in &file.messages {
            let me = TypeRef {
                package: file.package.clone(),
                name: m.name.clone(),
            };
            let mut out = Vec::new();
            for f in &m.fields {
                if let FieldKind::Single(Type::Message(r)) | FieldKind::Optional(Type::Message(r)) =
                    &f.kind
                {
                    out.push(r.clone());
                }
            }
            for o in &m.oneofs {
                for f in &o.fields {
                    if let Type::Message(r) = &f.ty {
                        out.push(r.clone());
                    }
                }
            }
            edges.insert(me, out);
        }
    }
    let mut reach = HashMap::new();
    for start in edges.keys() {
        let mut seen: HashSet<TypeRef> = HashSet::new();
        let mut stack: Vec<&TypeRef> = edges
            .get(start)
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        while let Some(t) = stack.pop() {
            if seen.insert(t.clone()) {
                if let Some(next) = edges.get(t) {
                    stack.extend(next.iter());
                }
            }
        }
        reach.insert(start.clone(), seen);
    }
    reach
}

/// `#[doc = " line"]` for each doc line (with the leading space rustdoc
/// and prettyplease expect), made safe for rustdoc: outside code, brackets
/// are escaped (no broken intra-doc links) and indentation is dropped (no
/// accidental indented code block); an opening code fence without a
/// language becomes ```` ```text ```` (no accidental doctest).
pub(crate) fn docs(lines: &[String]) -> TokenStream {
    let mut in_fence = false;
    let attrs = lines.iter().map(|l| {
        let line = sanitize_doc(l, &mut in_fence);
        let text = if line.is_empty() {
            String::new()
        } else {
            format!(" {line}")
        };
        quote!(#[doc = #text])
    });
    let out = quote!(#(#attrs)*);
    out
}

fn sanitize_doc(line: &str, in_fence: &mut bool) -> String {
    let trimmed = line.trim();
    if let Some(lang) = trimmed.strip_prefix("```") {
        let opening = !*in_fence;
        *in_fence = opening;
        return if opening && lang.trim().is_empty() {
            "```text".to_owned()
        } else {
            trimmed.to_owned()
        };
    }
    if *in_fence {
        return line.trim_end().to_owned();
    }
    let mut out = String::with_capacity(trimmed.len());
    let mut in_code = false;
    for c in trimmed.chars() {
        match c {
            '`' => {
                in_code = !in_code;
                out.push(c);
            }
            '[' | ']' if !in_code => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

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
        let cx = Context {
            package: &file.package,
            reach: &reach,
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(lines: &[&str]) -> Vec<String> {
        let lines: Vec<String> = lines.iter().map(|s| (*s).to_owned()).collect();
        let tokens = docs(&lines);
        let item: syn::ItemStruct = match syn::parse2(quote!(#tokens struct X;)) {
            Ok(i) => i,
            Err(e) => panic!("{e}"),
        };
        item.attrs
            .iter()
            .filter_map(|a| match &a.meta {
                syn::Meta::NameValue(nv) => match &nv.value {
                    syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(s),
                        ..
                    }) => Some(s.value()),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    #[test]
    fn docs_are_made_safe_for_rustdoc() {
        assert_eq!(
            rendered(&["see [Foo] and `[bar]`"]),
            vec![" see \\[Foo\\] and `[bar]`"]
        );
        assert_eq!(rendered(&["", "    indented"]), vec!["", " indented"]);
        assert_eq!(
            rendered(&["```", "  [x] stays", "```", "```rust", "y", "```"]),
            vec![" ```text", "   [x] stays", " ```", " ```rust", " y", " ```"]
        );
    }
}
