//! The IDL compiler: `.idl` files in, Rust and `.proto` out.
//!
//! The pipeline: text -> tokens with byte spans ([`lexer`], [`span`]) -> AST
//! ([`parser`]) -> resolution and validation, every error collected
//! ([`resolve`]) -> a [`model::Model`] -> back ends: Rust ([`rust`], through
//! `quote!`, `syn` and `prettyplease`) and proto3 ([`proto`]). Every
//! stage reports its mistakes as [`diag::Error`]s; the loader renders them
//! as [`Diagnostics`].
//!
//! Entry points: [`load`] (parse and check a file and its imports),
//! [`Builder`] (for `build.rs`), the `rpcgen` binary, and the `idl!` macro
//! of `rpc-macros`.
#![forbid(unsafe_code)]

pub mod ast;
mod builder;
pub mod diag;
pub mod lexer;
mod loader;
pub mod model;
pub mod parser;
pub mod proto;
pub mod resolve;
pub mod rust;
pub mod span;

pub use builder::{BuildError, Builder};
pub use diag::{Diagnostic, Diagnostics};
pub use loader::{load, load_many, load_source};
