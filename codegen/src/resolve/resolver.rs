//! The resolver's state, shared by every check: the files, the table of
//! declarations, the errors collected so far, and how an error is recorded
//! and another place in the input is named ("first defined at line 3").
//!
//! The checks live in the sibling modules, each an `impl Resolver` block:
//! they read the state defined here and add errors through [`Resolver::err`].
//! They import this module, `suggest` and `names`, never each other. The
//! one check every member name goes through (fields, oneofs, methods),
//! [`Resolver::check_rust_name`], is here for that reason.

use super::names;
use crate::ast::{self, Ident};
use crate::diag;
use crate::span::Span;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::path::PathBuf;

/// One parsed file, as the loader hands it over.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    /// The file's path (as given, or resolved relative to the importer).
    pub path: PathBuf,
    /// Its text (for line numbers in "first defined at" labels).
    pub source: &'a str,
    /// Its syntax tree.
    pub ast: &'a ast::File,
    /// For each `import` of `ast`, the index in the input list of the file
    /// it names, or `None` when it could not be loaded (already reported).
    pub imports: Vec<Option<usize>>,
    /// True when the file was reached only through imports.
    pub imported: bool,
}

/// What a declared name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DeclKind {
    /// A `message`.
    Message,
    /// An `enum`.
    Enum,
    /// A `service`.
    Service,
}

impl DeclKind {
    /// The keyword that declares it.
    pub(super) fn word(self) -> &'static str {
        match self {
            DeclKind::Message => "message",
            DeclKind::Enum => "enum",
            DeclKind::Service => "service",
        }
    }
}

/// The first declaration of a name: in which file, what, and where.
#[derive(Debug, Clone)]
pub(super) struct Decl {
    /// Index of the declaring file.
    pub(super) file: usize,
    /// Message, enum or service.
    pub(super) kind: DeclKind,
    /// The name in the declaration.
    pub(super) span: Span,
}

/// Everything the checks share; see the module doc.
pub(super) struct Resolver<'a> {
    /// The files, as the loader handed them over.
    pub(super) inputs: &'a [Input<'a>],
    /// Every error so far, with the index of its file.
    pub(super) errors: Vec<(usize, diag::Error)>,
    /// (package, name) -> the first declaration.
    pub(super) decls: BTreeMap<(Vec<String>, String), Decl>,
    /// Full dotted name -> key of `decls`.
    pub(super) by_full: HashMap<String, (Vec<String>, String)>,
    /// The package of each file (empty for none).
    pub(super) packages: Vec<Vec<String>>,
}

impl<'a> Resolver<'a> {
    /// A resolver over `inputs`, with nothing declared and no error yet.
    pub(super) fn new(inputs: &'a [Input<'a>]) -> Resolver<'a> {
        Resolver {
            inputs,
            errors: Vec::new(),
            decls: BTreeMap::new(),
            by_full: HashMap::new(),
            packages: inputs.iter().map(|i| package_of(i.ast)).collect(),
        }
    }

    /// Records an error at `span` of file `file`.
    pub(super) fn err(
        &mut self,
        file: usize,
        span: Span,
        message: impl Into<String>,
        label: impl Into<String>,
    ) {
        self.errors
            .push((file, diag::Error::new(span, message, label)));
    }

    /// "line 3" in the same file, "`common.idl`:3:5" in another.
    pub(super) fn place(&self, from: usize, file: usize, span: Span) -> String {
        let src = self.inputs[file].source;
        let at = span.start.min(src.len());
        let before = src.get(..at).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        if from == file {
            format!("line {line}")
        } else {
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("{}:{line}:{col}", self.inputs[file].path.display())
        }
    }

    /// Whether `key` is seen for the first time in `seen` (it is then
    /// remembered at `span`). If not, reports `message()` at `span`, with
    /// the label `already` followed by where the first one is (`"first
    /// defined at"` gives "first defined at line 3").
    pub(super) fn check_unique<K: Hash + Eq>(
        &mut self,
        fi: usize,
        seen: &mut HashMap<K, Span>,
        key: K,
        span: Span,
        message: impl FnOnce() -> String,
        already: &str,
    ) -> bool {
        if let Some(first) = seen.get(&key) {
            let label = format!("{already} {}", self.place(fi, fi, *first));
            self.err(fi, span, message(), label);
            return false;
        }
        seen.insert(key, span);
        true
    }

    /// Checks that `rust` (the converted name of `ident`) is a legal Rust
    /// identifier and unique in `seen`.
    pub(super) fn check_rust_name<'n>(
        &mut self,
        fi: usize,
        ident: &'n Ident,
        what: &str,
        seen: &mut HashMap<String, (&'n str, Span)>,
        rust: String,
        case: &str,
    ) -> bool {
        if names::is_forbidden(&rust) {
            let shown = if rust.is_empty() {
                "nothing".to_owned()
            } else {
                format!("`{rust}`")
            };
            self.err(
                fi,
                ident.span,
                format!("{what} name `{}` cannot be used in Rust", ident.name),
                format!("it becomes {shown}, which cannot be an identifier, not even a raw one"),
            );
            return false;
        }
        if let Some((other, span)) = seen.get(&rust) {
            let label = format!(
                "`{other}` (at {}) also becomes `{rust}`",
                self.place(fi, fi, *span)
            );
            self.err(
                fi,
                ident.span,
                format!(
                    "{what} `{}` collides with `{other}` after conversion to {case}",
                    ident.name
                ),
                label,
            );
            return false;
        }
        seen.insert(rust, (ident.name.as_str(), ident.span));
        true
    }
}

/// The package parts of `file` (none without a `package` line).
fn package_of(file: &ast::File) -> Vec<String> {
    file.package
        .as_ref()
        .map(|p| p.parts.iter().map(|i| i.name.clone()).collect())
        .unwrap_or_default()
}

/// `pkg.Name`, or `Name` without a package.
pub(super) fn full_name(pkg: &[String], name: &str) -> String {
    if pkg.is_empty() {
        name.to_owned()
    } else {
        format!("{}.{name}", pkg.join("."))
    }
}
