//! Resolution and validation: parsed files to a [`Model`].
//!
//! [`resolve`] takes every file reached from the roots (already parsed, with
//! their imports already matched to files by the loader), resolves every
//! type name, checks every rule of the language (see `idl/README.md`) and
//! collects every error. It returns a [`Model`] only when there is none.
//!
//! Name visibility: a type is visible in a file if it is declared in that
//! file or in a file it imports directly. It can be named by its simple name
//! when the declaring file has the same package, and always by its full
//! dotted name `pkg.Name`.
//!
//! # Where each rule is checked
//! The work is split by what is checked; each module says which
//! diagnostics it produces:
//! - `declare`: every message, enum and service declared, with the rules
//!   on names at the package level (duplicates, collisions after conversion
//!   to Rust, generated names, package names, enum values in the package
//!   scope);
//! - `lookup`: what a file can see (its imports) and type names resolved
//!   (unknown, not imported, not a type);
//! - `messages`, `enums`, `services` and `attributes`: the rules of
//!   each kind of item, each building its part of the model;
//! - `suggest`: "did you mean" for misspelt names ([`suggest()`]);
//! - [`names`]: how IDL names become Rust names (shared with the Rust back
//!   end);
//! - `resolver`: the state all of them share (the files, the table of
//!   declarations, the errors) and how an error is recorded.
//!
//! [`resolve()`] first checks the package names and declares the items of
//! every file, so that a type may be used before its declaration (or in a
//! file read before the declaring one); then, file by file, it checks the
//! imports and builds each item in order.

mod attributes;
mod declare;
mod enums;
mod lookup;
mod messages;
pub mod names;
mod resolver;
mod services;
mod suggest;

use crate::ast;
use crate::diag;
use crate::model::{self, Model};
use resolver::Resolver;

pub use attributes::{ATTRIBUTES, MAX_RETRIES};
pub use messages::{MAX_FIELD_NUMBER, PROTOBUF_RESERVED};
pub use resolver::Input;
pub use services::RESERVED_STUB_METHODS;
pub use suggest::suggest;

/// Resolves and checks `inputs`: the model when every rule holds, and every
/// error as `(index of the file in inputs, error)`.
pub fn resolve(inputs: &[Input<'_>]) -> (Option<Model>, Vec<(usize, diag::Error)>) {
    let mut r = Resolver::new(inputs);
    r.check_packages();
    r.declare();
    let files: Vec<model::File> = (0..inputs.len()).map(|i| file(&mut r, i)).collect();
    if r.errors.is_empty() {
        (Some(Model { files }), r.errors)
    } else {
        (None, r.errors)
    }
}

/// The model of file `fi`: its imports checked, then its items in order.
fn file(r: &mut Resolver<'_>, fi: usize) -> model::File {
    let input = &r.inputs[fi];
    let mut file = model::File {
        path: input.path.clone(),
        package: r.packages[fi].clone(),
        docs: input.ast.docs.clone(),
        imports: input
            .imports
            .iter()
            .flatten()
            .map(|&i| r.inputs[i].path.clone())
            .collect(),
        messages: Vec::new(),
        enums: Vec::new(),
        services: Vec::new(),
        imported: input.imported,
    };
    r.check_imports(fi);
    for item in &input.ast.items {
        match item {
            ast::Item::Message(m) => {
                let msg = r.message(fi, m);
                file.messages.push(msg);
            }
            ast::Item::Enum(e) => {
                let en = r.enumeration(fi, e);
                file.enums.push(en);
            }
            ast::Item::Service(s) => {
                let sv = r.service(fi, s);
                file.services.push(sv);
            }
        }
    }
    file
}
