//! Text to tokens, each with its byte span.
//!
//! [`lex`] never fails and never panics: whatever it cannot make sense of
//! becomes a [`diag::Error`] and lexing goes on, so that the
//! parser sees as much of the file as possible. `//` and `/* */` comments are
//! skipped; `///` doc comments are kept as tokens because they attach to the
//! next item.

use crate::diag;
use crate::span::Span;
use std::fmt;

/// What a token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    /// `[A-Za-z_][A-Za-z0-9_]*` (keywords are identifiers too; the parser
    /// decides by context).
    Ident(String),
    /// A decimal integer, optionally negative, optionally with a suffix
    /// directly attached (`250ms`, `5s`; any other suffix is kept and
    /// rejected by whoever reads the number).
    Int(IntLit),
    /// A string literal, escapes already decoded.
    Str(String),
    /// A `///` doc comment line: the text after `///`, one leading space
    /// removed.
    Doc(String),
    /// `{`
    LBrace,
    /// `}`
    RBrace,
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `[`
    LBracket,
    /// `]`
    RBracket,
    /// `<`
    Lt,
    /// `>`
    Gt,
    /// `;`
    Semi,
    /// `,`
    Comma,
    /// `=`
    Eq,
    /// `.`
    Dot,
    /// End of input (always the last token).
    Eof,
}

/// An integer literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntLit {
    /// Written with a leading `-`.
    pub negative: bool,
    /// The magnitude; `None` when it does not fit in a `u64` (already
    /// reported by the lexer).
    pub magnitude: Option<u64>,
    /// Letters directly after the digits (`ms` in `250ms`), if any.
    pub suffix: Option<String>,
}

impl IntLit {
    /// The value as an `i64`, if it has no suffix and fits.
    pub fn as_i64(&self) -> Option<i64> {
        let m = i128::from(self.magnitude?);
        let v = if self.negative { -m } else { m };
        i64::try_from(v).ok()
    }
}

impl fmt::Display for IntLit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negative {
            f.write_str("-")?;
        }
        match self.magnitude {
            Some(m) => write!(f, "{m}")?,
            None => f.write_str("<huge>")?,
        }
        if let Some(s) = &self.suffix {
            f.write_str(s)?;
        }
        Ok(())
    }
}

impl TokenKind {
    /// How the token is named in "expected .., found .." messages.
    pub fn describe(&self) -> String {
        match self {
            TokenKind::Ident(s) => format!("`{s}`"),
            TokenKind::Int(i) => format!("`{i}`"),
            TokenKind::Str(_) => "string literal".to_owned(),
            TokenKind::Doc(_) => "doc comment".to_owned(),
            TokenKind::Eof => "end of file".to_owned(),
            other => format!("`{}`", other.punct()),
        }
    }

    fn punct(&self) -> &'static str {
        match self {
            TokenKind::LBrace => "{",
            TokenKind::RBrace => "}",
            TokenKind::LParen => "(",
            TokenKind::RParen => ")",
            TokenKind::LBracket => "[",
            TokenKind::RBracket => "]",
            TokenKind::Lt => "<",
            TokenKind::Gt => ">",
            TokenKind::Semi => ";",
            TokenKind::Comma => ",",
            TokenKind::Eq => "=",
            TokenKind::Dot => ".",
            _ => "",
        }
    }
}

/// A token and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// What it is.
    pub kind: TokenKind,
    /// Where it is.
    pub span: Span,
}

/// Splits `src` into tokens (the last one is always [`TokenKind::Eof`]) and
/// lexical errors (unexpected characters, unterminated strings and
/// comments, bad escapes, integers too large).
pub fn lex(src: &str) -> (Vec<Token>, Vec<diag::Error>) {
    let mut lx = Lexer {
        src,
        bytes: src.as_bytes(),
        pos: 0,
        tokens: Vec::new(),
        errors: Vec::new(),
    };
    lx.run();
    (lx.tokens, lx.errors)
}

struct Lexer<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    tokens: Vec<Token>,
    errors: Vec<diag::Error>,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_ident_continue(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl Lexer<'_> {
    fn peek(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.pos + ahead).copied()
    }

    fn push(&mut self, kind: TokenKind, start: usize) {
        self.tokens.push(Token {
            kind,
            span: Span::new(start, self.pos),
        });
    }

    fn error(
        &mut self,
        start: usize,
        end: usize,
        message: impl Into<String>,
        label: impl Into<String>,
    ) {
        self.errors
            .push(diag::Error::new(Span::new(start, end), message, label));
    }

    fn run(&mut self) {
        // A byte-order mark is not content.
        if self.src.starts_with('\u{feff}') {
            self.pos = '\u{feff}'.len_utf8();
        }
        while let Some(b) = self.peek(0) {
            let start = self.pos;
            match b {
                b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => self.pos += 1,
                b'/' if self.peek(1) == Some(b'/') => self.line_comment(),
                b'/' if self.peek(1) == Some(b'*') => self.block_comment(),
                b'"' | b'\'' => self.string(b),
                b'0'..=b'9' => self.number(start, false),
                b'-' if matches!(self.peek(1), Some(b'0'..=b'9')) => {
                    self.pos += 1;
                    self.number(start, true);
                }
                _ if is_ident_start(b) => {
                    while self.peek(0).is_some_and(is_ident_continue) {
                        self.pos += 1;
                    }
                    let word = self.src[start..self.pos].to_owned();
                    self.push(TokenKind::Ident(word), start);
                }
                _ => {
                    let kind = match b {
                        b'{' => Some(TokenKind::LBrace),
                        b'}' => Some(TokenKind::RBrace),
                        b'(' => Some(TokenKind::LParen),
                        b')' => Some(TokenKind::RParen),
                        b'[' => Some(TokenKind::LBracket),
                        b']' => Some(TokenKind::RBracket),
                        b'<' => Some(TokenKind::Lt),
                        b'>' => Some(TokenKind::Gt),
                        b';' => Some(TokenKind::Semi),
                        b',' => Some(TokenKind::Comma),
                        b'=' => Some(TokenKind::Eq),
                        b'.' => Some(TokenKind::Dot),
                        _ => None,
                    };
                    match kind {
                        Some(kind) => {
                            self.pos += 1;
                            self.push(kind, start);
                        }
                        None => {
                            let ch = self.src[start..].chars().next().unwrap_or('\u{fffd}');
                            self.pos += ch.len_utf8();
                            let shown = if ch.is_control() || ch.is_whitespace() {
                                format!("{:?}", ch)
                            } else {
                                format!("`{ch}`")
                            };
                            self.error(
                                start,
                                self.pos,
                                format!("unexpected character {shown}"),
                                "not valid here",
                            );
                        }
                    }
                }
            }
        }
        let end = self.bytes.len();
        self.tokens.push(Token {
            kind: TokenKind::Eof,
            span: Span::new(end, end),
        });
    }

    fn line_comment(&mut self) {
        let start = self.pos;
        let line_end = self.src[start..]
            .find('\n')
            .map_or(self.bytes.len(), |i| start + i);
        self.pos = line_end;
        let text = &self.src[start..line_end];
        // `///` is a doc comment, `////...` is an ordinary one (as in Rust).
        if let Some(rest) = text.strip_prefix("///") {
            if !rest.starts_with('/') {
                let rest = rest.strip_suffix('\r').unwrap_or(rest);
                let rest = rest.strip_prefix(' ').unwrap_or(rest);
                self.push(TokenKind::Doc(rest.trim_end().to_owned()), start);
            }
        }
    }

    fn block_comment(&mut self) {
        let start = self.pos;
        self.pos += 2;
        let mut depth = 1usize;
        while depth > 0 {
            match (self.peek(0), self.peek(1)) {
                (None, _) => {
                    self.error(
                        start,
                        start + 2,
                        "unterminated block comment",
                        "this comment is never closed with `*/`",
                    );
                    return;
                }
                (Some(b'*'), Some(b'/')) => {
                    depth -= 1;
                    self.pos += 2;
                }
                (Some(b'/'), Some(b'*')) => {
                    depth += 1;
                    self.pos += 2;
                }
                _ => self.pos += 1,
            }
        }
    }

    fn string(&mut self, quote: u8) {
        let start = self.pos;
        self.pos += 1;
        let mut value = String::new();
        loop {
            let c = match self.src[self.pos..].chars().next() {
                Some(c) if c != '\n' => c,
                end => {
                    let label = if end.is_none() {
                        "this string is never closed"
                    } else {
                        "this string is not closed on its line"
                    };
                    self.error(start, start + 1, "unterminated string literal", label);
                    self.push(TokenKind::Str(value), start);
                    return;
                }
            };
            if c as u32 == u32::from(quote) {
                self.pos += 1;
                self.push(TokenKind::Str(value), start);
                return;
            }
            if c == '\\' {
                let esc_start = self.pos;
                self.pos += 1;
                let Some(e) = self.src[self.pos..].chars().next() else {
                    continue;
                };
                if e == '\n' {
                    // Reported as unterminated on the next round.
                    continue;
                }
                self.pos += e.len_utf8();
                let decoded = match e {
                    'n' => Some('\n'),
                    'r' => Some('\r'),
                    't' => Some('\t'),
                    '0' => Some('\0'),
                    '\\' => Some('\\'),
                    '"' => Some('"'),
                    '\'' => Some('\''),
                    'x' => {
                        let hex = self
                            .src
                            .get(self.pos..self.pos + 2)
                            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
                        match hex
                            .and_then(|h| u8::from_str_radix(h, 16).ok())
                            .filter(u8::is_ascii)
                        {
                            Some(v) => {
                                self.pos += 2;
                                Some(char::from(v))
                            }
                            None => None,
                        }
                    }
                    _ => None,
                };
                match decoded {
                    Some(ch) => value.push(ch),
                    None => self.error(
                        esc_start,
                        self.pos,
                        format!("unknown escape `\\{}` in string literal", e.escape_debug()),
                        "expected one of `\\n`, `\\r`, `\\t`, `\\0`, `\\\\`, `\\\"`, `\\'` or `\\x00`..`\\x7f`",
                    ),
                }
                continue;
            }
            self.pos += c.len_utf8();
            value.push(c);
        }
    }

    fn number(&mut self, start: usize, negative: bool) {
        let digits_start = self.pos;
        let mut magnitude: Option<u64> = Some(0);
        while let Some(d @ b'0'..=b'9') = self.peek(0) {
            magnitude = magnitude
                .and_then(|m| m.checked_mul(10))
                .and_then(|m| m.checked_add(u64::from(d - b'0')));
            self.pos += 1;
        }
        let digits_end = self.pos;
        let suffix = if self.peek(0).is_some_and(is_ident_start) {
            let s = self.pos;
            while self.peek(0).is_some_and(is_ident_continue) {
                self.pos += 1;
            }
            Some(self.src[s..self.pos].to_owned())
        } else {
            None
        };
        if magnitude.is_none() {
            self.error(
                start,
                digits_end,
                "integer literal is too large",
                "does not fit in 64 bits",
            );
        }
        let _ = digits_start;
        self.push(
            TokenKind::Int(IntLit {
                negative,
                magnitude,
                suffix,
            }),
            start,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<TokenKind> {
        let (tokens, errors) = lex(src);
        assert!(errors.is_empty(), "unexpected errors: {errors:?}");
        tokens.into_iter().map(|t| t.kind).collect()
    }

    fn int(negative: bool, m: u64, suffix: Option<&str>) -> TokenKind {
        TokenKind::Int(IntLit {
            negative,
            magnitude: Some(m),
            suffix: suffix.map(str::to_owned),
        })
    }

    #[test]
    fn identifiers_punctuation_and_spans() {
        let (tokens, errors) = lex("message A{}");
        assert!(errors.is_empty());
        assert_eq!(tokens[0].kind, TokenKind::Ident("message".into()));
        assert_eq!(tokens[0].span, Span::new(0, 7));
        assert_eq!(tokens[1].span, Span::new(8, 9));
        assert_eq!(tokens[2].kind, TokenKind::LBrace);
        assert_eq!(tokens[3].kind, TokenKind::RBrace);
        assert_eq!(tokens[4].kind, TokenKind::Eof);
        assert_eq!(tokens[4].span, Span::new(11, 11));
    }

    #[test]
    fn integers_negative_and_suffixes() {
        assert_eq!(
            kinds("1 -2 250ms 5s 0"),
            vec![
                int(false, 1, None),
                int(true, 2, None),
                int(false, 250, Some("ms")),
                int(false, 5, Some("s")),
                int(false, 0, None),
                TokenKind::Eof
            ]
        );
        // A lone minus is not a number.
        let (_, errors) = lex("- 1");
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn huge_integer_is_an_error_not_a_panic() {
        let (tokens, errors) = lex("99999999999999999999999999");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].message, "integer literal is too large");
        assert!(matches!(
            &tokens[0].kind,
            TokenKind::Int(IntLit {
                magnitude: None,
                ..
            })
        ));
    }

    #[test]
    fn strings_with_escapes() {
        assert_eq!(
            kinds(r#""a\"b\n\x41""#),
            vec![TokenKind::Str("a\"b\nA".into()), TokenKind::Eof]
        );
        let (_, errors) = lex(r#""bad \q""#);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("unknown escape"));
    }

    #[test]
    fn unterminated_string_and_comment() {
        let (tokens, errors) = lex("\"abc\nx");
        assert_eq!(errors[0].message, "unterminated string literal");
        assert_eq!(tokens.last().map(|t| &t.kind), Some(&TokenKind::Eof));
        let (_, errors) = lex("a /* b");
        assert_eq!(errors[0].message, "unterminated block comment");
        let (_, errors) = lex("\"abc\\");
        assert_eq!(errors[0].message, "unterminated string literal");
    }

    #[test]
    fn comments_skipped_docs_kept() {
        assert_eq!(
            kinds("// no\n/// yes\n//// no\n/* a /* nested */ b */ x"),
            vec![
                TokenKind::Doc("yes".into()),
                TokenKind::Ident("x".into()),
                TokenKind::Eof
            ]
        );
        assert_eq!(
            kinds("///\r\n"),
            vec![TokenKind::Doc(String::new()), TokenKind::Eof]
        );
    }

    #[test]
    fn unexpected_characters_are_reported_and_skipped() {
        let (tokens, errors) = lex("a @ é b");
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].message, "unexpected character `@`");
        assert_eq!(errors[1].span, Span::new(4, 6));
        assert_eq!(tokens.len(), 3);
    }
}
