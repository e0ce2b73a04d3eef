//! Method attributes: `[idempotent, protocol = RRA, timeout = 250ms,
//! retries = 3, style = deferred]`.
//!
//! Diagnostics from here: unknown attributes (with a suggestion), an
//! attribute given twice, a missing or illegal value (with a suggestion for
//! a misspelt one), timeouts without a unit, with an unknown unit, zero or
//! too large, and combinations that make no sense: `oneway` with a reply
//! protocol, retries or a style; `protocol = R` without `oneway`;
//! `idempotent` with `protocol = RRA`.

use super::resolver::Resolver;
use super::suggest::did_you_mean;
use crate::ast::{self, AttrValue};
use crate::model::{Protocol, Style};
use crate::span::Span;
use std::collections::HashMap;

/// The words of `protocol = ..` and what they mean.
const PROTOCOLS: &[(&str, Protocol)] = &[
    ("R", Protocol::R),
    ("RR", Protocol::RR),
    ("RRA", Protocol::RRA),
];

/// The words of `style = ..` and what they mean.
const STYLES: &[(&str, Style)] = &[
    ("sync", Style::Sync),
    ("async", Style::Async),
    ("deferred", Style::Deferred),
];

/// Highest `retries` value.
pub const MAX_RETRIES: u32 = 100;
/// The attributes a method can have.
pub const ATTRIBUTES: [&str; 5] = ["idempotent", "protocol", "timeout", "retries", "style"];

#[derive(Debug, Default)]
/// A method's attributes, checked (defaults not applied yet).
pub(super) struct Attrs {
    /// `idempotent` was given.
    pub(super) idempotent: bool,
    /// `protocol = ..`, if given.
    pub(super) protocol: Option<Protocol>,
    /// `timeout = ..`, in milliseconds, if given.
    pub(super) timeout_ms: Option<u64>,
    /// `retries = ..`, if given.
    pub(super) retries: Option<u32>,
    /// `style = ..`, if given.
    pub(super) style: Option<Style>,
}

impl Resolver<'_> {
    /// Checks a method's attributes; `None` after reporting an error.
    pub(super) fn attributes(&mut self, fi: usize, m: &ast::Method) -> Option<Attrs> {
        let mut a = Attrs::default();
        let mut ok = true;
        let mut seen: HashMap<&str, Span> = HashMap::new();
        let mut protocol_span = None;
        let mut idempotent_span = None;
        for attr in &m.attributes {
            let name = attr.name.name.as_str();
            if !ATTRIBUTES.contains(&name) {
                let candidates: Vec<String> = ATTRIBUTES.iter().map(|s| (*s).to_owned()).collect();
                let label = did_you_mean(
                    name,
                    &candidates,
                    "expected `idempotent`, `protocol`, `timeout`, `retries` or `style`",
                );
                self.err(
                    fi,
                    attr.name.span,
                    format!("unknown attribute `{name}`"),
                    label,
                );
                ok = false;
                continue;
            }
            if !self.check_unique(
                fi,
                &mut seen,
                name,
                attr.name.span,
                || format!("duplicate attribute `{name}`"),
                "already given at",
            ) {
                ok = false;
                continue;
            }
            if name == "idempotent" {
                if let Some(v) = &attr.value {
                    self.err(
                        fi,
                        v.span(),
                        "`idempotent` takes no value",
                        "write just `idempotent`",
                    );
                    ok = false;
                }
                a.idempotent = true;
                idempotent_span = Some(attr.name.span);
                continue;
            }
            let Some(value) = &attr.value else {
                let example = match name {
                    "protocol" => "protocol = RRA",
                    "timeout" => "timeout = 250ms",
                    "retries" => "retries = 3",
                    _ => "style = deferred",
                };
                self.err(
                    fi,
                    attr.name.span,
                    format!("`{name}` needs a value"),
                    format!("e.g. `{example}`"),
                );
                ok = false;
                continue;
            };
            match name {
                "protocol" => match self.one_of(fi, value, name, PROTOCOLS) {
                    Some(p) => a.protocol = Some(p),
                    None => ok = false,
                },
                "style" => match self.one_of(fi, value, name, STYLES) {
                    Some(st) => a.style = Some(st),
                    None => ok = false,
                },
                "timeout" => match value {
                    AttrValue::Int(lit, span) => match self.timeout(fi, lit, *span) {
                        Some(ms) => a.timeout_ms = Some(ms),
                        None => ok = false,
                    },
                    _ => {
                        self.err(
                            fi,
                            value.span(),
                            "illegal value for `timeout`",
                            "expected a duration such as `250ms` or `5s`",
                        );
                        ok = false;
                    }
                },
                _ => match value {
                    // "retries"
                    AttrValue::Int(lit, span)
                        if lit.suffix.is_none()
                            && !lit.negative
                            && lit.magnitude.is_some_and(|n| n <= u64::from(MAX_RETRIES)) =>
                    {
                        let _ = span;
                        a.retries = lit.magnitude.and_then(|n| u32::try_from(n).ok());
                    }
                    _ => {
                        self.err(
                            fi,
                            value.span(),
                            "illegal value for `retries`",
                            format!("expected a number from 0 to {MAX_RETRIES}"),
                        );
                        ok = false;
                    }
                },
            }
            if name == "protocol" {
                protocol_span = Some(value.span());
            }
            if m.oneway.is_some() {
                match name {
                    "protocol" if matches!(a.protocol, Some(Protocol::RR | Protocol::RRA)) => {
                        self.err(
                            fi,
                            value.span(),
                            "a `oneway` method always uses protocol R",
                            "it has no reply: remove this, or remove `oneway`",
                        );
                        ok = false;
                    }
                    "retries" => {
                        self.err(
                            fi,
                            attr.name.span,
                            "a `oneway` method is never retried",
                            "protocol R sends the request once: remove `retries`",
                        );
                        ok = false;
                    }
                    "style" => {
                        self.err(
                            fi,
                            attr.name.span,
                            "a `oneway` method has no call style to choose",
                            "it is always one-way: remove `style`",
                        );
                        ok = false;
                    }
                    _ => {}
                }
            }
        }
        if m.oneway.is_none() && a.protocol == Some(Protocol::R) {
            let span = protocol_span.unwrap_or(m.name.span);
            self.err(
                fi,
                span,
                "protocol = R has no reply: declare the method `oneway`",
                "R sends only the request",
            );
            ok = false;
        }
        if a.idempotent && a.protocol == Some(Protocol::RRA) {
            let span = protocol_span.or(idempotent_span).unwrap_or(m.name.span);
            self.err(
                fi,
                span,
                "idempotent methods keep no reply history, so there is nothing to acknowledge",
                "use `protocol = RR`, or remove `idempotent`",
            );
            ok = false;
        }
        ok.then_some(a)
    }

    /// What the word `value` of attribute `name` means among `allowed`,
    /// or `None` once its error is reported.
    fn one_of<T: Copy>(
        &mut self,
        fi: usize,
        value: &AttrValue,
        name: &str,
        allowed: &[(&str, T)],
    ) -> Option<T> {
        let found = match value {
            AttrValue::Ident(i) => allowed.iter().find(|(w, _)| *w == i.name),
            _ => None,
        };
        if found.is_none() {
            let words: Vec<&str> = allowed.iter().map(|(w, _)| *w).collect();
            self.bad_value(fi, value, name, &words);
        }
        found.map(|(_, v)| *v)
    }

    fn bad_value(&mut self, fi: usize, value: &AttrValue, name: &str, allowed: &[&str]) {
        let list = allowed.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>();
        let expected = format!(
            "expected {} or {}",
            list[..list.len() - 1].join(", "),
            list[list.len() - 1]
        );
        let label = match value {
            AttrValue::Ident(i) => {
                let candidates: Vec<String> = allowed.iter().map(|s| (*s).to_owned()).collect();
                did_you_mean(&i.name, &candidates, &expected)
            }
            _ => expected,
        };
        self.err(
            fi,
            value.span(),
            format!("illegal value for `{name}`"),
            label,
        );
    }

    fn timeout(&mut self, fi: usize, lit: &ast::IntLit, span: Span) -> Option<u64> {
        let factor = match lit.suffix.as_deref() {
            Some("ms") => 1,
            Some("s") => 1000,
            None => {
                self.err(
                    fi,
                    span,
                    "`timeout` needs a unit",
                    format!("write `{lit}ms` or `{lit}s`"),
                );
                return None;
            }
            Some(other) => {
                self.err(
                    fi,
                    span,
                    format!("unknown unit `{other}` in `timeout`"),
                    "the units are `ms` and `s`",
                );
                return None;
            }
        };
        if lit.negative || lit.magnitude == Some(0) {
            self.err(
                fi,
                span,
                "`timeout` must be greater than zero",
                "a call needs time to run",
            );
            return None;
        }
        match lit.magnitude.and_then(|n| n.checked_mul(factor)) {
            Some(ms) => Some(ms),
            None => {
                self.err(
                    fi,
                    span,
                    "`timeout` is too large",
                    "it must fit in 64 bits of milliseconds",
                );
                None
            }
        }
    }
}
