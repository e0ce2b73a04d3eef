//! Byte spans: where a token, a name or an error is in one file's text.
//!
//! The lexer gives every token a [`Span`], the parser keeps them in the
//! syntax tree, and diagnostics ([`diag`](crate::diag)) turn them into line
//! and column once the file's text is known. Living apart from both, the
//! type lets the lexer report errors and the diagnostics locate them without
//! either module depending on the other.

/// A byte range `start..end` in one file's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte (`start == end` for a position, e.g. end of file).
    pub end: usize,
}

impl Span {
    /// The span `start..end`.
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The smallest span covering `self` and `other`.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}
