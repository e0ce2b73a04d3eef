//! Method attributes as written: `[name, name = value, ..]` after a
//! method. What they mean and which values are legal is checked later, by
//! the resolver (`resolve/attributes.rs`).
//!
//! Syntax errors from here: a missing attribute name or value, and a
//! missing `,` or `]`.

use super::cursor::{PResult, Parser};
use crate::ast::{AttrValue, Attribute, Ident};
use crate::lexer::TokenKind;

impl Parser<'_> {
    /// The attribute list of a method, if there is one (else empty).
    pub(super) fn attributes(&mut self) -> PResult<Vec<Attribute>> {
        let mut attributes = Vec::new();
        if matches!(self.kind(), TokenKind::LBracket) {
            self.bump();
            loop {
                if matches!(self.kind(), TokenKind::RBracket) {
                    self.bump();
                    break;
                }
                let name = self.ident("an attribute name", "in `[..]`")?;
                let value = if matches!(self.kind(), TokenKind::Eq) {
                    self.bump();
                    let value = match self.kind().clone() {
                        TokenKind::Ident(w) => AttrValue::Ident(Ident {
                            name: w,
                            span: self.bump().span,
                        }),
                        TokenKind::Int(lit) => AttrValue::Int(lit, self.bump().span),
                        TokenKind::Str(s) => AttrValue::Str(s, self.bump().span),
                        _ => {
                            return Err(self.expected(
                                "an attribute value",
                                &format!("after `{} =`", name.name),
                            ))
                        }
                    };
                    Some(value)
                } else {
                    None
                };
                attributes.push(Attribute { name, value });
                match self.kind() {
                    TokenKind::Comma => {
                        self.bump();
                    }
                    TokenKind::RBracket => {
                        self.bump();
                        break;
                    }
                    _ => return Err(self.expected("`,` or `]`", "after an attribute")),
                }
            }
        }
        Ok(attributes)
    }
}
