//! The parser's state and its reading of tokens: look at the current
//! token or a few ahead, take it, and read the small things every rule
//! needs (a name, a number, doc comments). When a token is not what a rule
//! needs, [`Parser::expected`] reports "expected X after Y, found Z" where
//! the missing thing belongs.
//!
//! The grammar rules (`items`, `types`, `attributes`) and the error
//! recovery (`recovery`) are `impl Parser` blocks in the sibling modules;
//! they build on this one, which needs none of them, and none imports
//! another.

use crate::ast::Ident;
use crate::diag;
use crate::lexer::{IntLit, Token, TokenKind};
use crate::span::Span;

/// The syntax error was reported; the caller recovers.
pub(super) struct Reported;

/// The result of a grammar rule: `Err` after a reported syntax error.
pub(super) type PResult<T> = Result<T, Reported>;

/// A recursive-descent parser over the tokens of one file.
pub(super) struct Parser<'a> {
    /// The file's text (to tell whether a token starts a new line).
    pub(super) src: &'a str,
    tokens: Vec<Token>,
    /// Index of the current token.
    pub(super) pos: usize,
    /// Syntax errors reported so far.
    pub(super) errors: Vec<diag::Error>,
}

const EOF_TOKEN: Token = Token {
    kind: TokenKind::Eof,
    span: Span { start: 0, end: 0 },
};

impl<'a> Parser<'a> {
    /// A parser at the first of `tokens` (the lexer's, ending with `Eof`).
    pub(super) fn new(src: &'a str, tokens: Vec<Token>) -> Parser<'a> {
        Parser {
            src,
            tokens,
            pos: 0,
            errors: Vec::new(),
        }
    }
}

impl Parser<'_> {
    /// The current token (`Eof` at the end).
    pub(super) fn tok(&self) -> &Token {
        self.tokens
            .get(self.pos)
            .or(self.tokens.last())
            .unwrap_or(&EOF_TOKEN)
    }

    /// What the current token is.
    pub(super) fn kind(&self) -> &TokenKind {
        &self.tok().kind
    }

    /// What the token `ahead` places after the current one is.
    pub(super) fn kind_at(&self, ahead: usize) -> &TokenKind {
        self.tokens
            .get(self.pos + ahead)
            .map_or(&TokenKind::Eof, |t| &t.kind)
    }

    /// Takes the current token and moves to the next (never past `Eof`).
    pub(super) fn bump(&mut self) -> Token {
        let t = self.tok().clone();
        if self.pos < self.tokens.len().saturating_sub(1) {
            self.pos += 1;
        }
        t
    }

    /// Whether the current token is the identifier `word`.
    pub(super) fn is_word(&self, word: &str) -> bool {
        matches!(self.kind(), TokenKind::Ident(w) if w == word)
    }

    /// Where the previous token ends (0 at the start).
    pub(super) fn prev_end(&self) -> usize {
        if self.pos == 0 {
            0
        } else {
            self.tokens.get(self.pos - 1).map_or(0, |t| t.span.end)
        }
    }

    /// Reports "expected {what} {context}, found {token}". When the found
    /// token is on a later line than the previous one, the error points just
    /// after the previous token (where the missing thing belongs).
    pub(super) fn expected(&mut self, what: &str, context: &str) -> Reported {
        let found = self.tok().clone();
        let prev_end = self.prev_end();
        let gap = self.src.get(prev_end..found.span.start).unwrap_or("");
        let sep = if context.is_empty() { "" } else { " " };
        let message = format!(
            "expected {what}{sep}{context}, found {}",
            found.kind.describe()
        );
        let (span, label) = if self.pos > 0 && gap.contains('\n') {
            (
                Span::new(prev_end, prev_end),
                format!("expected {what} here"),
            )
        } else {
            (found.span, format!("expected {what}"))
        };
        self.errors.push(diag::Error::new(span, message, label));
        Reported
    }

    /// Reports a syntax error at the current token, for a construct the
    /// IDL does not have; the caller recovers.
    pub(super) fn reject(
        &mut self,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> Reported {
        let span = self.tok().span;
        self.error(span, message, label);
        Reported
    }

    /// Reports a syntax error at `span`.
    pub(super) fn error(
        &mut self,
        span: Span,
        message: impl Into<String>,
        label: impl Into<String>,
    ) {
        self.errors.push(diag::Error::new(span, message, label));
    }

    /// An identifier, or "expected {what} {context}".
    pub(super) fn ident(&mut self, what: &str, context: &str) -> PResult<Ident> {
        match self.kind().clone() {
            TokenKind::Ident(name) => {
                let span = self.bump().span;
                Ok(Ident { name, span })
            }
            _ => Err(self.expected(what, context)),
        }
    }

    /// An integer without a suffix.
    pub(super) fn number(&mut self, what: &str, context: &str) -> PResult<(IntLit, Span)> {
        match self.kind().clone() {
            TokenKind::Int(lit) => {
                let span = self.bump().span;
                if let Some(suffix) = &lit.suffix {
                    self.error(
                        span,
                        format!("unexpected suffix `{suffix}` on {what}"),
                        "a plain number is expected here",
                    );
                }
                Ok((lit, span))
            }
            _ => Err(self.expected(what, context)),
        }
    }

    /// The `///` doc comment lines before an item, if any.
    pub(super) fn docs(&mut self) -> Vec<String> {
        let mut docs = Vec::new();
        while let TokenKind::Doc(text) = self.kind() {
            docs.push(text.clone());
            self.bump();
        }
        docs
    }
}
