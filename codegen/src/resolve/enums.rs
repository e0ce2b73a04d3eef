//! Enums: their values and numbers.
//!
//! Diagnostics from here: an enum without values, a first value that is not
//! 0, value numbers out of range or used twice, value names Rust cannot
//! take or that collide once converted. (Duplicate value names and values
//! clashing in the package scope are found when declaring, in
//! [`declare`](super::declare).)

use super::names;
use super::resolver::Resolver;
use crate::ast;
use crate::model;
use crate::span::Span;
use std::collections::HashMap;

impl Resolver<'_> {
    /// The model of enum `e` of file `fi`, every error reported.
    pub(super) fn enumeration(&mut self, fi: usize, e: &ast::Enum) -> model::Enum {
        let mut out = model::Enum {
            name: e.name.name.clone(),
            docs: e.docs.clone(),
            values: Vec::new(),
        };
        if e.values.is_empty() {
            self.err(
                fi,
                e.name.span,
                format!("enum `{}` has no values", e.name.name),
                "an enum needs at least its zero value",
            );
        }
        let mut by_number: HashMap<i32, (&str, Span)> = HashMap::new();
        let mut by_rust: HashMap<String, (&str, Span)> = HashMap::new();
        for (i, v) in e.values.iter().enumerate() {
            let number = v.number.as_i64().and_then(|n| i32::try_from(n).ok());
            let Some(number) = number else {
                if v.number.magnitude.is_none() {
                    continue; // reported by the lexer
                }
                self.err(
                    fi,
                    v.number_span,
                    format!("enum value number `{}` is out of range", v.number),
                    "enum numbers are 32-bit signed integers",
                );
                continue;
            };
            if i == 0 && number != 0 {
                self.err(
                    fi,
                    v.number_span,
                    format!("the first value of enum `{}` must be 0", e.name.name),
                    "proto3 enums start with their default value, 0",
                );
            }
            if let Some((other, span)) = by_number.get(&number) {
                let label = format!(
                    "already used by `{other}` at {}; aliases are not supported",
                    self.place(fi, fi, *span)
                );
                self.err(
                    fi,
                    v.number_span,
                    format!("duplicate enum number {number} in enum `{}`", e.name.name),
                    label,
                );
            } else {
                by_number.insert(number, (&v.name.name, v.name.span));
            }
            let rust = names::enum_value(&e.name.name, &v.name.name);
            if names::is_forbidden(&rust) {
                self.err(
                    fi,
                    v.name.span,
                    format!("enum value name `{}` cannot be used in Rust", v.name.name),
                    format!("it becomes `{rust}`, which cannot be an identifier"),
                );
            } else if let Some((other, span)) = by_rust.get(&rust) {
                if *other != v.name.name {
                    let label = format!(
                        "`{other}` (at {}) also becomes `{rust}`",
                        self.place(fi, fi, *span)
                    );
                    self.err(
                        fi,
                        v.name.span,
                        format!(
                            "enum value `{}` collides with `{other}` in Rust",
                            v.name.name
                        ),
                        format!("{label} (UpperCamelCase, enum name prefix stripped)"),
                    );
                }
            } else {
                by_rust.insert(rust, (&v.name.name, v.name.span));
            }
            out.values.push(model::EnumValue {
                name: v.name.name.clone(),
                docs: v.docs.clone(),
                number,
            });
        }
        out
    }
}
