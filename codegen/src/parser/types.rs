//! Fields and their types: labels (`optional`, `repeated`), named types
//! (`demo.v1.Mode`), `map<K, V>`, then the name and the number.
//!
//! Syntax errors from here: a type name starting with `.`, a map as a map
//! value, and what a field lacks (name, `=`, number, `;`).

use super::cursor::{PResult, Parser};
use crate::ast::{self, FieldType, Label};
use crate::lexer::TokenKind;

impl Parser<'_> {
    /// A type name, dotted or not.
    pub(super) fn path(&mut self, what: &str, context: &str) -> PResult<ast::Path> {
        if matches!(self.kind(), TokenKind::Dot) {
            return Err(self.reject(
                "a type name cannot start with `.`",
                "remove the leading `.`: names are resolved from the root already",
            ));
        }
        let first = self.ident(what, context)?;
        let mut span = first.span;
        let mut parts = vec![first];
        while matches!(self.kind(), TokenKind::Dot) {
            self.bump();
            let part = self.ident("a name", "after `.`")?;
            span = span.to(part.span);
            parts.push(part);
        }
        Ok(ast::Path { parts, span })
    }

    /// A field: `[optional|repeated] type name = number;`.
    pub(super) fn field(&mut self, docs: Vec<String>) -> PResult<ast::Field> {
        // `optional`/`repeated` are labels only when a type follows them.
        let label = if self.is_word("optional")
            && matches!(self.kind_at(1), TokenKind::Ident(_))
            && !matches!(self.kind_at(2), TokenKind::Eq)
        {
            Label::Optional(self.bump().span)
        } else if self.is_word("repeated")
            && matches!(self.kind_at(1), TokenKind::Ident(_))
            && !matches!(self.kind_at(2), TokenKind::Eq)
        {
            Label::Repeated(self.bump().span)
        } else {
            Label::None
        };
        let ty = self.field_type()?;
        let name = self.ident("a field name", "after the field's type")?;
        self.expect(&TokenKind::Eq, "after the field name")?;
        let (number, number_span) = self.number("a field number", "after `=`")?;
        self.expect(&TokenKind::Semi, "after field")?;
        Ok(ast::Field {
            docs,
            label,
            ty,
            name,
            number,
            number_span,
        })
    }

    /// A named type or `map<K, V>`.
    fn field_type(&mut self) -> PResult<FieldType> {
        if self.is_word("map") && matches!(self.kind_at(1), TokenKind::Lt) {
            let start = self.bump().span;
            self.bump(); // `<`
            let key = self.path("a map key type", "after `map<`")?;
            self.expect(&TokenKind::Comma, "after the map key type")?;
            if self.is_word("map") && matches!(self.kind_at(1), TokenKind::Lt) {
                return Err(self.reject(
                    "a map value cannot be a map",
                    "wrap the inner map in a message",
                ));
            }
            let value = self.path("a map value type", "after `,`")?;
            let end = self.expect(&TokenKind::Gt, "to close the map type")?;
            return Ok(FieldType::Map {
                key,
                value,
                span: start.to(end),
            });
        }
        Ok(FieldType::Named(self.path("a type", "for field")?))
    }
}
