//! Recovery from syntax errors, so that one mistake does not hide the
//! next.
//!
//! A `;` missing at the end of a line is reported and taken as written; a
//! broken statement is skipped up to its `;`, the `}` closing its block or
//! over a whole `{ .. }` block; and in a block, a member that fails is
//! skipped while the others are still read. (The "expected X after Y,
//! found Z" message itself is written by `cursor`.)

use super::cursor::{PResult, Parser, Reported};
use crate::lexer::TokenKind;
use crate::span::Span;

impl Parser<'_> {
    /// The token `kind`, or "expected {kind} {context}" (a missing `;` at
    /// the end of a line is reported and taken as present).
    pub(super) fn expect(&mut self, kind: &TokenKind, context: &str) -> PResult<Span> {
        if self.kind() == kind {
            return Ok(self.bump().span);
        }
        let what = kind.describe();
        // A `;` missing at the end of a line: report it and go on as if it
        // were there, so that the next line is still parsed and checked.
        let prev_end = self.prev_end();
        let next_line = self
            .src
            .get(prev_end..self.tok().span.start)
            .is_some_and(|gap| gap.contains('\n'));
        if *kind == TokenKind::Semi && self.pos > 0 && next_line {
            let _ = self.expected(&what, context);
            return Ok(Span::new(prev_end, prev_end));
        }
        Err(self.expected(&what, context))
    }

    /// The identifier `word`, or "expected `{word}` {context}".
    pub(super) fn expect_word(&mut self, word: &str, context: &str) -> PResult<Span> {
        if self.is_word(word) {
            Ok(self.bump().span)
        } else {
            Err(self.expected(&format!("`{word}`"), context))
        }
    }

    /// Skips the rest of a broken statement: up to and including the next
    /// `;`, or up to (not including) a `}` closing the current block, or
    /// over a whole `{ .. }` block.
    pub(super) fn recover(&mut self) {
        let mut depth = 0usize;
        loop {
            match self.kind() {
                TokenKind::Eof => return,
                TokenKind::Semi if depth == 0 => {
                    self.bump();
                    return;
                }
                TokenKind::LBrace => depth += 1,
                TokenKind::RBrace => {
                    if depth == 0 {
                        return;
                    }
                    depth -= 1;
                    if depth == 0 {
                        self.bump();
                        return;
                    }
                }
                _ => {}
            }
            self.bump();
        }
    }

    /// `{`, then members until `}`; `member` is called with the docs.
    pub(super) fn block<T>(
        &mut self,
        what: &str,
        mut member: impl FnMut(&mut Self, Vec<String>) -> PResult<Option<T>>,
    ) -> PResult<(Vec<T>, Span)> {
        self.expect(&TokenKind::LBrace, &format!("after the name of {what}"))?;
        let mut items = Vec::new();
        loop {
            let docs = self.docs();
            match self.kind() {
                TokenKind::RBrace => {
                    let close = self.bump().span;
                    return Ok((items, close));
                }
                TokenKind::Eof => {
                    let close = self.tok().span;
                    let _ = self.expected("`}`", &format!("to close {what}"));
                    return Ok((items, close));
                }
                _ => {}
            }
            let before = self.pos;
            match member(self, docs) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => {}
                Err(Reported) => {
                    self.recover();
                    // Never loop without progress.
                    if self.pos == before
                        && !matches!(self.kind(), TokenKind::RBrace | TokenKind::Eof)
                    {
                        self.bump();
                    }
                }
            }
        }
    }
}
