//! Procedural macros of the RPC framework.
//!
//! [`idl!`] expands an `.idl` file (path relative to the calling crate's
//! `CARGO_MANIFEST_DIR`) into the same Rust that `rpc_codegen::Builder`
//! writes from `build.rs`. Use it through `rpc_core::idl!`.
#![forbid(unsafe_code)]

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::quote;
use std::path::{Path, PathBuf};

/// Expands an `.idl` file into Rust: `rpc_core::idl!("idl/clock.idl");`.
///
/// The path is relative to the calling crate's `CARGO_MANIFEST_DIR`. The
/// expansion is exactly the items `rpc_codegen::Builder` would write for
/// the file (see `rpc_codegen::rust`), plus one `const _: &[u8] =
/// include_bytes!(..)` per input file so that cargo recompiles the crate
/// when any of them changes.
///
/// IDL errors become compile errors on the string literal, one per
/// diagnostic, each quoting `file:line:col` and the rendered diagnostic.
#[proc_macro]
pub fn idl(input: TokenStream) -> TokenStream {
    let lit = match syn::parse::<syn::LitStr>(input) {
        Ok(lit) => lit,
        Err(e) => {
            let e = syn::Error::new(
                e.span(),
                "expected the path of an .idl file: idl!(\"idl/clock.idl\")",
            );
            return e.into_compile_error().into();
        }
    };
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    match expand(&lit.value(), manifest_dir.as_deref()) {
        Ok(tokens) => tokens.into(),
        Err(messages) => {
            let mut errors = messages.into_iter().map(|m| syn::Error::new(lit.span(), m));
            let mut first = match errors.next() {
                Some(e) => e,
                None => syn::Error::new(lit.span(), "the idl could not be compiled"),
            };
            for e in errors {
                first.combine(e);
            }
            first.into_compile_error().into()
        }
    }
}

/// The expansion for the file `rel` (relative to `manifest_dir` when
/// relative and known), or one message per diagnostic. Paths in messages
/// are shown relative to `manifest_dir`, as the user wrote them.
fn expand(rel: &str, manifest_dir: Option<&Path>) -> Result<TokenStream2, Vec<String>> {
    let rel_path = Path::new(rel);
    let path = match manifest_dir {
        Some(dir) if rel_path.is_relative() => dir.join(rel_path),
        _ => rel_path.to_path_buf(),
    };
    let shorten = |text: &str| match manifest_dir {
        Some(dir) => {
            let mut prefix = dir.display().to_string();
            if !prefix.ends_with(std::path::MAIN_SEPARATOR) {
                prefix.push(std::path::MAIN_SEPARATOR);
            }
            text.replace(&prefix, "")
        }
        None => text.to_owned(),
    };
    match rpc_codegen::load(&path) {
        Ok(model) => {
            let code = rpc_codegen::rust::tokens(&model);
            let deps = model.files.iter().map(|f| {
                let p = f.path.to_string_lossy().into_owned();
                quote!(
                    const _: &[u8] = ::core::include_bytes!(#p);
                )
            });
            Ok(quote!(#code #(#deps)*))
        }
        Err(diagnostics) if diagnostics.items.is_empty() => Err(vec![format!(
            "{}: the idl could not be compiled (no diagnostic given)",
            shorten(&path.display().to_string())
        )]),
        Err(diagnostics) => Err(diagnostics
            .items
            .iter()
            .map(|d| {
                let at = if d.line == 0 {
                    shorten(&d.path.display().to_string())
                } else {
                    format!(
                        "{}:{}:{}",
                        shorten(&d.path.display().to_string()),
                        d.line,
                        d.column
                    )
                };
                format!("{at}: {}\n{}", shorten(&d.message), shorten(&d.rendered))
            })
            .collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_an_error_not_a_panic() {
        let r = expand(
            "no/such/file.idl",
            Some(Path::new(env!("CARGO_MANIFEST_DIR"))),
        );
        let messages = r.err().unwrap_or_default();
        assert!(!messages.is_empty());
        assert!(
            messages
                .iter()
                .all(|m| !m.contains(env!("CARGO_MANIFEST_DIR"))),
            "{messages:?}"
        );
    }

    /// `idl!` emits exactly the items `Builder` writes (plus one
    /// `const _ = include_bytes!(..)` per input file).
    #[test]
    fn idl_and_builder_produce_the_same_code() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        for name in ["tests/idl/clock.idl", "tests/idl/kitchen.idl"] {
            let tokens = expand(name, Some(dir)).unwrap_or_else(|e| panic!("{e:?}"));
            let builder = rpc_codegen::Builder::new().generate(dir.join(name));
            let (model, text) = builder.unwrap_or_else(|e| panic!("{e:?}"));
            let file: syn::File = syn::parse2(tokens).unwrap_or_else(|e| panic!("{e}"));
            let (deps, items): (Vec<_>, Vec<_>) = file
                .items
                .into_iter()
                .partition(|i| matches!(i, syn::Item::Const(c) if c.ident == "_"));
            assert_eq!(deps.len(), model.files.len());
            let from_macro = prettyplease::unparse(&syn::File {
                shebang: None,
                attrs: vec![],
                items,
            });
            let (header, from_builder) = text.split_once('\n').unwrap_or_default();
            assert!(
                header.starts_with("// Generated by rpc-codegen from ")
                    && header.ends_with("DO NOT EDIT.")
            );
            assert_eq!(from_macro, from_builder, "{name}");
        }
    }
}
