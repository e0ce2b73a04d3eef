//! What a file can see, and type names resolved to types.
//!
//! A file sees its own declarations and those of the files it imports
//! directly. Diagnostics from here: a file imported twice; an unknown type
//! (with a suggestion); a type declared in a file that is not imported; a
//! service used as a type.

use super::resolver::{full_name, DeclKind, Resolver};
use super::suggest::did_you_mean;
use crate::ast;
use crate::model::{Scalar, Type, TypeRef};
use crate::span::Span;
use std::collections::HashMap;

impl Resolver<'_> {
    /// Reports a file imported twice by file `fi`.
    pub(super) fn check_imports(&mut self, fi: usize) {
        let input = &self.inputs[fi];
        let ast_file: &ast::File = input.ast;
        let mut seen_imports: HashMap<usize, Span> = HashMap::new();
        for (imp, target) in ast_file.imports.iter().zip(&input.imports) {
            if let Some(t) = target {
                self.check_unique(
                    fi,
                    &mut seen_imports,
                    *t,
                    imp.span,
                    || format!("`{}` is imported twice", imp.path),
                    "already imported at",
                );
            }
        }
    }

    /// Files whose declarations `file` can see.
    fn visible(&self, file: usize) -> Vec<usize> {
        let mut v = vec![file];
        for i in self.inputs[file].imports.iter().flatten() {
            if !v.contains(i) {
                v.push(*i);
            }
        }
        v
    }

    fn import_failed(&self, file: usize) -> bool {
        self.inputs[file].imports.iter().any(Option::is_none)
    }

    /// Resolves a type name used in `file`; `None` after reporting.
    pub(super) fn lookup(&mut self, file: usize, path: &ast::Path) -> Option<Type> {
        let dotted = path.dotted();
        if path.parts.len() == 1 {
            if let Some(s) = Scalar::from_keyword(&dotted) {
                return Some(Type::Scalar(s));
            }
        }
        let here = self.packages[file].clone();
        let visible = self.visible(file);
        // The simple name in this file's package first (as protobuf's inner
        // scope), then the full name; a declaration this file cannot see is
        // remembered for a better message.
        let mut keys = Vec::new();
        if path.parts.len() == 1 {
            keys.push((here.clone(), dotted.clone()));
        }
        if let Some(key) = self.by_full.get(&dotted) {
            keys.push(key.clone());
        }
        let mut found: Option<(Vec<String>, String, DeclKind)> = None;
        let mut elsewhere = None;
        for key in keys {
            let Some(decl) = self.decls.get(&key) else {
                continue;
            };
            if visible.contains(&decl.file) {
                found = Some((key.0, key.1, decl.kind));
                break;
            }
            if elsewhere.is_none() && decl.kind != DeclKind::Service {
                elsewhere = Some(decl.file);
            }
        }
        match found {
            Some((package, name, DeclKind::Message)) => {
                Some(Type::Message(TypeRef { package, name }))
            }
            Some((package, name, DeclKind::Enum)) => Some(Type::Enum(TypeRef { package, name })),
            Some((_, name, DeclKind::Service)) => {
                self.err(
                    file,
                    path.span,
                    format!("`{name}` is a service, not a type"),
                    "expected a message, an enum or a scalar type",
                );
                None
            }
            None => {
                if let Some(other) = elsewhere {
                    let other_path = self.inputs[other].path.display().to_string();
                    self.err(
                        file,
                        path.span,
                        format!("type `{dotted}` is not imported"),
                        format!(
                            "it is declared in `{other_path}`, which this file does not import"
                        ),
                    );
                    return None;
                }
                let mut candidates: Vec<String> =
                    Scalar::ALL.iter().map(|s| s.keyword().to_owned()).collect();
                for ((pkg, name), d) in &self.decls {
                    if d.kind == DeclKind::Service || !visible.contains(&d.file) {
                        continue;
                    }
                    if pkg == &here {
                        candidates.push(name.clone());
                    }
                    candidates.push(full_name(pkg, name));
                }
                let otherwise = if self.import_failed(file) {
                    "not found here; it may be declared in an import that could not be loaded"
                } else {
                    "no message or enum of this name is visible here"
                };
                let label = did_you_mean(&dotted, &candidates, otherwise);
                self.err(file, path.span, format!("unknown type `{dotted}`"), label);
                None
            }
        }
    }
}
