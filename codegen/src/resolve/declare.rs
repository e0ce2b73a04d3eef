//! Declaring every message, enum and service of every file, and the rules
//! on names at the package level.
//!
//! Diagnostics from here: invalid package name parts; a type defined twice
//! in a package; a type name Rust cannot take or two that collide once
//! converted to UpperCamelCase; a type taking a name generated for a
//! service (`<S>Server`, `<S>Client`, `<S>GroupClient`) or two items (or
//! an item and a package) needing the same Rust module; duplicate enum
//! values, and enum values clashing in the package scope protobuf gives
//! them.

use super::names;
use super::resolver::{full_name, Decl, DeclKind, Resolver};
use crate::ast;
use crate::span::Span;
use std::collections::HashMap;

impl Resolver<'_> {
    /// Every part of a package name must be a snake_case Rust module name.
    pub(super) fn check_packages(&mut self) {
        for (i, input) in self.inputs.iter().enumerate() {
            let Some(pkg) = &input.ast.package else {
                continue;
            };
            for part in &pkg.parts {
                let rust = names::snake_case(&part.name);
                if names::is_forbidden(&rust) || rust != part.name {
                    let why = if names::is_forbidden(&rust) {
                        format!("`{}` cannot be a Rust module name", part.name)
                    } else {
                        format!("would become the Rust module `{rust}`: write package parts in snake_case")
                    };
                    self.err(
                        i,
                        part.span,
                        format!("invalid package name part `{}`", part.name),
                        why,
                    );
                }
            }
        }
    }

    /// Declares every message, enum and service; reports duplicates (also
    /// after case conversion) and enum values colliding in the package scope.
    pub(super) fn declare(&mut self) {
        let mut camel: HashMap<(Vec<String>, String), (usize, String, Span)> = HashMap::new();
        // protobuf scopes enum values next to their enum, i.e. in the package.
        let mut values: HashMap<(Vec<String>, String), (usize, String, Span)> = HashMap::new();
        for (fi, input) in self.inputs.iter().enumerate() {
            let pkg = self.packages[fi].clone();
            for item in &input.ast.items {
                let (kind, name) = match item {
                    ast::Item::Message(m) => (DeclKind::Message, &m.name),
                    ast::Item::Enum(e) => (DeclKind::Enum, &e.name),
                    ast::Item::Service(s) => (DeclKind::Service, &s.name),
                };
                let key = (pkg.clone(), name.name.clone());
                if let Some(first) = self.decls.get(&key) {
                    let msg = format!(
                        "`{}` is defined more than once in {}",
                        name.name,
                        pkg_words(&pkg)
                    );
                    let label = format!(
                        "{} `{}` first defined at {}",
                        first.kind.word(),
                        name.name,
                        self.place(fi, first.file, first.span)
                    );
                    self.err(fi, name.span, msg, label);
                    continue;
                }
                let rust = names::upper_camel_case(&name.name);
                if names::is_forbidden(&rust) {
                    self.err(
                        fi,
                        name.span,
                        format!("`{}` cannot be used as a name", name.name),
                        format!("it becomes `{rust}` in Rust, which is reserved"),
                    );
                } else if let Some((ff, other, span)) = camel.get(&(pkg.clone(), rust.clone())) {
                    let label = format!(
                        "`{other}` (at {}) also becomes `{rust}`",
                        self.place(fi, *ff, *span)
                    );
                    self.err(fi, name.span, format!("`{}` collides with `{other}` after conversion to Rust's UpperCamelCase", name.name), label);
                } else {
                    camel.insert((pkg.clone(), rust), (fi, name.name.clone(), name.span));
                }
                self.by_full.insert(full_name(&key.0, &key.1), key.clone());
                self.decls.insert(
                    key,
                    Decl {
                        file: fi,
                        kind,
                        span: name.span,
                    },
                );
            }
        }
        self.check_generated_names(&camel);
        for (fi, input) in self.inputs.iter().enumerate() {
            let pkg = self.packages[fi].clone();
            for item in &input.ast.items {
                let ast::Item::Enum(e) = item else { continue };
                let mut seen_here: HashMap<&str, Span> = HashMap::new();
                for v in &e.values {
                    let first = self.check_unique(
                        fi,
                        &mut seen_here,
                        v.name.name.as_str(),
                        v.name.span,
                        || {
                            format!(
                                "duplicate enum value `{}` in enum `{}`",
                                v.name.name, e.name.name
                            )
                        },
                        "first defined at",
                    );
                    if !first {
                        continue;
                    }
                    let key = (pkg.clone(), v.name.name.clone());
                    if let Some(decl) = self.decls.get(&key) {
                        let label = format!(
                            "{} `{}` is defined at {}; protobuf puts enum values in the package scope",
                            decl.kind.word(),
                            v.name.name,
                            self.place(fi, decl.file, decl.span)
                        );
                        self.err(
                            fi,
                            v.name.span,
                            format!(
                                "enum value `{}` clashes with a type of the same name",
                                v.name.name
                            ),
                            label,
                        );
                    } else if let Some((ff, other_enum, span)) = values.get(&key) {
                        let label = format!(
                            "also a value of enum `{other_enum}` ({}); protobuf scopes enum values at the package level: prefix them, e.g. `{}_{}`",
                            self.place(fi, *ff, *span),
                            to_screaming(&e.name.name),
                            v.name.name
                        );
                        self.err(
                            fi,
                            v.name.span,
                            format!(
                                "enum value `{}` is already defined in {}",
                                v.name.name,
                                pkg_words(&pkg)
                            ),
                            label,
                        );
                    } else {
                        values.insert(key, (fi, e.name.name.clone(), v.name.span));
                    }
                }
            }
        }
    }

    /// Every service also becomes `<S>Server`, `<S>Client`, `<S>GroupClient`
    /// and a module `snake(S)` in Rust; messages with oneofs become a module
    /// `snake(M)`. Reports a declared type that takes one of those names, and
    /// two items wanting the same module.
    fn check_generated_names(
        &mut self,
        camel: &HashMap<(Vec<String>, String), (usize, String, Span)>,
    ) {
        let mut modules: HashMap<(Vec<String>, String), (usize, String, Span)> = HashMap::new();
        let mut errors = Vec::new();
        for (fi, input) in self.inputs.iter().enumerate() {
            let pkg = self.packages[fi].clone();
            for item in &input.ast.items {
                let (name, module_wanted, kind) = match item {
                    ast::Item::Service(s) => (&s.name, true, "service"),
                    ast::Item::Message(m) => (
                        &m.name,
                        m.members.iter().any(|x| matches!(x, ast::Member::Oneof(_))),
                        "message",
                    ),
                    ast::Item::Enum(_) => continue,
                };
                let rust = names::upper_camel_case(&name.name);
                if let ast::Item::Service(_) = item {
                    for suffix in ["Server", "Client", "GroupClient"] {
                        let generated = format!("{rust}{suffix}");
                        if let Some((ff, other, span)) =
                            camel.get(&(pkg.clone(), generated.clone()))
                        {
                            errors.push((
                                *ff,
                                *span,
                                format!("`{other}` collides with the `{generated}` generated for service `{}`", name.name),
                                format!("service `{}` (at {}) generates `{generated}`: rename one of them", name.name, self.place(*ff, fi, name.span)),
                            ));
                        }
                    }
                }
                if module_wanted {
                    let module = names::snake_case(&name.name);
                    if let Some((ff, other, span)) = modules.get(&(pkg.clone(), module.clone())) {
                        if *other == name.name {
                            // Same name twice: already reported as a duplicate.
                            continue;
                        }
                        errors.push((
                            fi,
                            name.span,
                            format!(
                                "{kind} `{}` and `{other}` both need the Rust module `{module}`",
                                name.name
                            ),
                            format!(
                                "`{other}` is at {}: rename one of them",
                                self.place(fi, *ff, *span)
                            ),
                        ));
                    } else {
                        modules.insert((pkg.clone(), module), (fi, name.name.clone(), name.span));
                    }
                }
            }
        }
        // A package `a.b` next to an item wanting module `b` inside package `a`.
        for (fi, pkg) in self.packages.iter().enumerate() {
            if let Some((last, parent)) = pkg.split_last() {
                if let Some((ff, other, span)) = modules.get(&(parent.to_vec(), last.clone())) {
                    errors.push((
                        *ff,
                        *span,
                        format!("`{other}` needs the Rust module `{last}`, which is also the module of package `{}`", pkg.join(".")),
                        format!("package `{}` is declared in {}: rename one of them", pkg.join("."), self.inputs[fi].path.display()),
                    ));
                }
            }
        }
        errors.sort_by_key(|e| (e.0, e.1.start));
        errors.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1 && a.2 == b.2);
        for (fi, span, msg, label) in errors {
            self.err(fi, span, msg, label);
        }
    }
}

/// "package `a.b`", or the files without one.
fn pkg_words(pkg: &[String]) -> String {
    if pkg.is_empty() {
        "the files without a package".to_owned()
    } else {
        format!("package `{}`", pkg.join("."))
    }
}

/// `SCREAMING_SNAKE_CASE`, for a suggested enum value prefix.
fn to_screaming(name: &str) -> String {
    names::snake_case(name).to_uppercase()
}
