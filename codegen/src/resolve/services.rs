//! Services and their methods (the attributes are in
//! [`attributes`](super::attributes)).
//!
//! Diagnostics from here: duplicate method names, method names Rust cannot
//! take, that collide once converted or that the generated stubs define
//! themselves, two methods with the same method id, and a request, reply
//! or raised type that is not a message.

use super::names;
use super::resolver::Resolver;
use crate::ast;
use crate::model::{self, Protocol, Style, Type, TypeRef};
use crate::span::Span;
use std::collections::HashMap;

/// Rust method names the generated client and group-client stubs define
/// themselves (constructors, accessors, derived `Clone`), so an IDL method
/// may not become one of them.
pub const RESERVED_STUB_METHODS: [&str; 4] = ["new", "client", "group", "clone"];

impl Resolver<'_> {
    /// Resolves a method's request, response or raises type: must be a message.
    fn message_type(&mut self, fi: usize, path: &ast::Path, role: &str) -> Option<TypeRef> {
        match self.lookup(fi, path)? {
            Type::Message(t) => Some(t),
            Type::Scalar(s) => {
                self.err(
                    fi,
                    path.span,
                    format!(
                        "the {role} of a method must be a message, not `{}`",
                        s.keyword()
                    ),
                    format!(
                        "wrap it in a message, e.g. `message Wrapped {{ {} value = 1; }}`",
                        s.keyword()
                    ),
                );
                None
            }
            Type::Enum(t) => {
                self.err(
                    fi,
                    path.span,
                    format!(
                        "the {role} of a method must be a message, not enum `{}`",
                        t.name
                    ),
                    "wrap it in a message",
                );
                None
            }
        }
    }

    /// The model of service `s` of file `fi`, every error reported.
    pub(super) fn service(&mut self, fi: usize, s: &ast::Service) -> model::Service {
        let mut out = model::Service {
            name: s.name.name.clone(),
            docs: s.docs.clone(),
            methods: Vec::new(),
        };
        let package = self.packages[fi].join(".");
        let mut by_name: HashMap<&str, Span> = HashMap::new();
        let mut by_rust: HashMap<String, (&str, Span)> = HashMap::new();
        let mut by_id: HashMap<u32, (&str, Span)> = HashMap::new();
        for m in &s.methods {
            let name = m.name.name.as_str();
            let mut ok = self.check_unique(
                fi,
                &mut by_name,
                name,
                m.name.span,
                || format!("duplicate method `{name}` in service `{}`", s.name.name),
                "first defined at",
            );
            if ok {
                let _ = self.check_rust_name(
                    fi,
                    &m.name,
                    "method",
                    &mut by_rust,
                    names::snake_case(name),
                    "snake_case",
                );
                let rust = names::snake_case(name);
                if RESERVED_STUB_METHODS.contains(&rust.as_str()) {
                    let label = format!(
                        "it becomes `{rust}`, which the generated client stubs define themselves"
                    );
                    self.err(
                        fi,
                        m.name.span,
                        format!("method `{name}` cannot be used in Rust"),
                        label,
                    );
                    ok = false;
                }
                let id = model::method_id(&package, &s.name.name, name);
                if let Some((other, span)) = by_id.get(&id) {
                    let label = format!(
                        "`{other}` (at {}) has the same id: rename one of them",
                        self.place(fi, fi, *span)
                    );
                    self.err(
                        fi,
                        m.name.span,
                        format!(
                            "methods `{other}` and `{name}` have the same method id {id:#010x}"
                        ),
                        label,
                    );
                    ok = false;
                } else {
                    by_id.insert(id, (name, m.name.span));
                }
            }
            let request = self.message_type(fi, &m.request, "request");
            let response = m
                .response
                .as_ref()
                .map(|p| self.message_type(fi, p, "reply"));
            let raises = m
                .raises
                .as_ref()
                .map(|p| self.message_type(fi, p, "raised error"));
            let attrs = self.attributes(fi, m);
            let (Some(request), Some(attrs)) = (request, attrs) else {
                continue;
            };
            let response = match response {
                Some(Some(t)) => Some(t),
                Some(None) => continue,
                None => None,
            };
            let raises = match raises {
                Some(Some(t)) => Some(t),
                Some(None) => continue,
                None => None,
            };
            if !ok {
                continue;
            }
            let oneway = m.oneway.is_some();
            out.methods.push(model::Method {
                name: name.to_owned(),
                docs: m.docs.clone(),
                id: model::method_id(&package, &s.name.name, name),
                request,
                response,
                raises,
                oneway,
                idempotent: attrs.idempotent,
                protocol: attrs
                    .protocol
                    .unwrap_or(if oneway { Protocol::R } else { Protocol::RR }),
                timeout_ms: attrs.timeout_ms,
                retries: attrs.retries,
                style: attrs
                    .style
                    .unwrap_or(if oneway { Style::OneWay } else { Style::Sync }),
            });
        }
        out
    }
}
