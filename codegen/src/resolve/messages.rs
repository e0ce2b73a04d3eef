//! Messages: fields, oneofs, reserved numbers and names, map fields.
//!
//! Diagnostics from here: field numbers out of range, reserved by protobuf,
//! reserved by the message or used twice; reserved ranges and names that
//! are malformed, empty, overlapping or given twice; duplicate field and
//! oneof names, names Rust cannot take or that collide once converted, and
//! JSON name collisions; empty oneofs and oneof fields that are
//! `optional`, `repeated` or maps; map fields with a label or an illegal
//! key type.

use super::names;
use super::resolver::Resolver;
use crate::ast::{self, FieldType, Label, Member, ReservedItem};
use crate::model::{self, Type};
use crate::span::Span;
use std::collections::HashMap;

/// Highest field number protobuf allows.
pub const MAX_FIELD_NUMBER: u32 = 536_870_911;
/// Field numbers protobuf keeps for itself.
pub const PROTOBUF_RESERVED: std::ops::RangeInclusive<u32> = 19_000..=19_999;

/// The value of a literal written without `-`, if it fits in a `u32`.
fn plain_u32(lit: &ast::IntLit) -> Option<u32> {
    if lit.negative {
        return None;
    }
    lit.magnitude.and_then(|m| u32::try_from(m).ok())
}

/// A field's name, number and where they are, for the per-message checks.
struct FieldSite<'f> {
    field: &'f ast::Field,
}

impl Resolver<'_> {
    fn field_type(&mut self, fi: usize, field: &ast::Field) -> Option<model::FieldKind> {
        match &field.ty {
            FieldType::Named(path) => {
                let ty = self.lookup(fi, path)?;
                Some(match field.label {
                    Label::None => model::FieldKind::Single(ty),
                    Label::Optional(_) => model::FieldKind::Optional(ty),
                    Label::Repeated(_) => model::FieldKind::Repeated(ty),
                })
            }
            FieldType::Map { key, value, .. } => {
                if let Label::Optional(s) | Label::Repeated(s) = field.label {
                    self.err(
                        fi,
                        s,
                        "a map field cannot be `optional` or `repeated`",
                        "remove this label: a map is already a collection",
                    );
                }
                let key_ty = self.lookup(fi, key);
                let value_ty = self.lookup(fi, value);
                let key_scalar = match key_ty {
                    Some(Type::Scalar(s)) if s.is_valid_map_key() => Some(s),
                    Some(_) => {
                        self.err(
                            fi,
                            key.span,
                            format!("illegal map key type `{}`", key.dotted()),
                            "map keys must be an integer type, `bool` or `string`",
                        );
                        None
                    }
                    None => None,
                };
                Some(model::FieldKind::Map(key_scalar?, value_ty?))
            }
        }
    }

    /// The model of message `m` of file `fi`, every error reported.
    pub(super) fn message(&mut self, fi: usize, m: &ast::Message) -> model::Message {
        let mut out = model::Message {
            name: m.name.name.clone(),
            docs: m.docs.clone(),
            fields: Vec::new(),
            oneofs: Vec::new(),
            reserved_ranges: Vec::new(),
            reserved_names: Vec::new(),
        };
        // Reserved first: they apply to every field, wherever written.
        let mut reserved_spans: Vec<(u32, u32, Span)> = Vec::new();
        let mut reserved_names: HashMap<String, Span> = HashMap::new();
        for member in &m.members {
            let Member::Reserved(r) = member else {
                continue;
            };
            for item in &r.items {
                match item {
                    ReservedItem::Range { start, end, span } => {
                        let lo = plain_u32(start).filter(|n| (1..=MAX_FIELD_NUMBER).contains(n));
                        let hi = match end {
                            None => Some(MAX_FIELD_NUMBER),
                            Some(e) => plain_u32(e).filter(|n| (1..=MAX_FIELD_NUMBER).contains(n)),
                        };
                        let (Some(lo), Some(hi)) = (lo, hi) else {
                            if start.magnitude.is_none()
                                || end.as_ref().is_some_and(|e| e.magnitude.is_none())
                            {
                                continue; // reported by the lexer
                            }
                            self.err(
                                fi,
                                *span,
                                "reserved field number out of range",
                                format!("field numbers are 1 to {MAX_FIELD_NUMBER}"),
                            );
                            continue;
                        };
                        if lo > hi {
                            self.err(
                                fi,
                                *span,
                                format!("empty reserved range `{lo} to {hi}`"),
                                "the first number must not exceed the last",
                            );
                            continue;
                        }
                        if let Some((a, b, s)) =
                            reserved_spans.iter().find(|(a, b, _)| lo <= *b && *a <= hi)
                        {
                            let label = format!(
                                "overlaps `{a} to {b}` reserved at {}",
                                self.place(fi, fi, *s)
                            );
                            self.err(fi, *span, "reserved ranges overlap", label);
                            continue;
                        }
                        reserved_spans.push((lo, hi, *span));
                        out.reserved_ranges.push((lo, hi));
                    }
                    ReservedItem::Name { name, span } => {
                        if !is_identifier(name) {
                            self.err(
                                fi,
                                *span,
                                format!("reserved name `{name}` is not a valid field name"),
                                "reserved names are identifiers",
                            );
                        } else if self.check_unique(
                            fi,
                            &mut reserved_names,
                            name.clone(),
                            *span,
                            || format!("field name `{name}` is reserved twice"),
                            "already reserved at",
                        ) {
                            out.reserved_names.push(name.clone());
                        }
                    }
                }
            }
        }

        // Every field, in or out of oneofs, shares the message's names and numbers.
        let mut sites: Vec<FieldSite<'_>> = Vec::new();
        for member in &m.members {
            match member {
                Member::Field(f) => sites.push(FieldSite { field: f }),
                Member::Oneof(o) => sites.extend(o.fields.iter().map(|f| FieldSite { field: f })),
                Member::Reserved(_) => {}
            }
        }
        let mut by_name: HashMap<&str, Span> = HashMap::new();
        let mut by_rust: HashMap<String, (&str, Span)> = HashMap::new();
        let mut by_json: HashMap<String, (&str, Span)> = HashMap::new();
        let mut by_number: HashMap<u32, (&str, Span)> = HashMap::new();
        let mut tags: HashMap<*const ast::Field, u32> = HashMap::new();
        for site in &sites {
            let f = site.field;
            let name = f.name.name.as_str();
            if self.check_unique(
                fi,
                &mut by_name,
                name,
                f.name.span,
                || format!("duplicate field `{name}` in message `{}`", m.name.name),
                "first defined at",
            ) {
                let _ = self.check_rust_name(
                    fi,
                    &f.name,
                    "field",
                    &mut by_rust,
                    names::snake_case(name),
                    "snake_case",
                );
                let json = names::json_name(name);
                if let Some((other, span)) = by_json.get(&json) {
                    let label = format!(
                        "`{other}` (at {}) has the same JSON name `{json}`, which protoc rejects",
                        self.place(fi, fi, *span)
                    );
                    if names::snake_case(other) != names::snake_case(name) {
                        self.err(
                            fi,
                            f.name.span,
                            format!("field `{name}` collides with `{other}`"),
                            label,
                        );
                    }
                } else {
                    by_json.insert(json, (name, f.name.span));
                }
                if reserved_names.contains_key(name) {
                    let label = format!("reserved at {}", self.place(fi, fi, reserved_names[name]));
                    self.err(
                        fi,
                        f.name.span,
                        format!("field name `{name}` is reserved"),
                        label,
                    );
                }
            }
            // Numbers.
            let number_text = f.number.to_string();
            let Some(n) = plain_u32(&f.number).filter(|n| (1..=MAX_FIELD_NUMBER).contains(n))
            else {
                if f.number.magnitude.is_none() {
                    continue; // too large for 64 bits: reported by the lexer
                }
                self.err(
                    fi,
                    f.number_span,
                    format!("field number `{number_text}` is out of range"),
                    format!("field numbers are 1 to {MAX_FIELD_NUMBER}"),
                );
                continue;
            };
            if PROTOBUF_RESERVED.contains(&n) {
                self.err(
                    fi,
                    f.number_span,
                    format!("field number {n} is reserved by protobuf"),
                    "19000 to 19999 are reserved for the protobuf implementation",
                );
                continue;
            }
            if let Some((a, b, s)) = reserved_spans
                .iter()
                .find(|(a, b, _)| (*a..=*b).contains(&n))
            {
                let range = if a == b {
                    a.to_string()
                } else {
                    format!("{a} to {b}")
                };
                let label = format!("`reserved {range}` at {}", self.place(fi, fi, *s));
                self.err(
                    fi,
                    f.number_span,
                    format!("field number {n} is reserved"),
                    label,
                );
                continue;
            }
            if let Some((other, span)) = by_number.get(&n) {
                let label = format!("already used by `{other}` at {}", self.place(fi, fi, *span));
                self.err(
                    fi,
                    f.number_span,
                    format!("duplicate field number {n} in message `{}`", m.name.name),
                    label,
                );
                continue;
            }
            by_number.insert(n, (name, f.number_span));
            tags.insert(f as *const ast::Field, n);
        }

        // Oneof names: against each other and against field names (prost
        // makes the oneof a snake_case struct field and an UpperCamelCase enum).
        let mut oneof_rust: HashMap<String, (&str, Span)> = HashMap::new();
        for member in &m.members {
            let Member::Oneof(o) = member else { continue };
            let name = o.name.name.as_str();
            if let Some(first) = by_name.get(name) {
                let label = format!(
                    "a field or oneof `{name}` is defined at {}",
                    self.place(fi, fi, *first)
                );
                self.err(
                    fi,
                    o.name.span,
                    format!("duplicate name `{name}` in message `{}`", m.name.name),
                    label,
                );
                continue;
            }
            by_name.insert(name, o.name.span);
            if self.check_rust_name(
                fi,
                &o.name,
                "oneof",
                &mut by_rust,
                names::snake_case(name),
                "snake_case",
            ) {
                self.check_rust_name(
                    fi,
                    &o.name,
                    "oneof",
                    &mut oneof_rust,
                    names::upper_camel_case(name),
                    "UpperCamelCase",
                );
            }
            if o.fields.is_empty() {
                self.err(
                    fi,
                    o.name.span,
                    format!("oneof `{name}` has no fields"),
                    "a oneof needs at least one field",
                );
            }
        }

        // Types, in declaration order; oneof fields must be plain.
        for member in &m.members {
            match member {
                Member::Field(f) => {
                    let kind = self.field_type(fi, f);
                    if let (Some(kind), Some(&tag)) = (kind, tags.get(&(f as *const ast::Field))) {
                        out.fields.push(model::Field {
                            name: f.name.name.clone(),
                            docs: f.docs.clone(),
                            tag,
                            kind,
                        });
                    }
                }
                Member::Oneof(o) => {
                    let mut fields = Vec::new();
                    for f in &o.fields {
                        let plain = match (&f.label, &f.ty) {
                            (Label::Optional(s), _) => {
                                self.err(
                                    fi,
                                    *s,
                                    "a oneof field cannot be `optional`",
                                    "oneof fields already have presence: remove `optional`",
                                );
                                false
                            }
                            (Label::Repeated(s), _) => {
                                self.err(
                                    fi,
                                    *s,
                                    "a oneof field cannot be `repeated`",
                                    "wrap the list in a message",
                                );
                                false
                            }
                            (_, FieldType::Map { span, .. }) => {
                                self.err(
                                    fi,
                                    *span,
                                    "a oneof field cannot be a map",
                                    "wrap the map in a message",
                                );
                                false
                            }
                            _ => true,
                        };
                        let FieldType::Named(path) = &f.ty else {
                            continue;
                        };
                        let ty = self.lookup(fi, path);
                        if let (true, Some(ty), Some(&tag)) =
                            (plain, ty, tags.get(&(f as *const ast::Field)))
                        {
                            fields.push(model::OneofField {
                                name: f.name.name.clone(),
                                docs: f.docs.clone(),
                                tag,
                                ty,
                            });
                        }
                    }
                    out.oneofs.push(model::Oneof {
                        name: o.name.name.clone(),
                        docs: o.docs.clone(),
                        fields,
                    });
                }
                Member::Reserved(_) => {}
            }
        }
        let _ = sites;
        out
    }
}

/// Whether `s` is an identifier of the IDL (ASCII letters, digits, `_`).
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
