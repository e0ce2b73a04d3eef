//! Procedural macros of the RPC framework.
//!
//! [`idl!`] expands an `.idl` file (path relative to the calling crate's
//! `CARGO_MANIFEST_DIR`) into the same Rust that `rpc_codegen::Builder`
//! writes from `build.rs`. Use it through `rpc_core::idl!`.
#![forbid(unsafe_code)]

use proc_macro::TokenStream;

/// Expands an `.idl` file into Rust: `rpc_core::idl!("idl/clock.idl");`.
///
/// IDL errors become compile errors that quote the file, line and column.
#[proc_macro]
pub fn idl(input: TokenStream) -> TokenStream {
    let lit = syn::parse_macro_input!(input as syn::LitStr);
    syn::Error::new(lit.span(), "idl! is not implemented yet").into_compile_error().into()
}
