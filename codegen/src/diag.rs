//! Diagnostics: every mistake found in the input, rendered like rustc.
//!
//! The lexer, parser and resolver produce [`Error`]s located by a byte
//! [`Span`] in one file. The loader turns them into [`Diagnostic`]s (with
//! path, line, column and the rendered text) once it knows the file's text,
//! and returns them all as [`Diagnostics`]:
//!
//! ```text
//! error: unknown type `TimeReadng`
//!   --> idl/clock.idl:14:31
//!    |
//! 14 |   rpc GetTime(Empty) returns (TimeReadng);
//!    |                               ^^^^^^^^^^ did you mean `TimeReading`?
//! ```
//!
//! Columns count characters (not bytes), starting at 1. Tabs in the quoted
//! source line are shown as four spaces, and the caret line follows.

use crate::span::Span;
use std::fmt;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Tabs in quoted source lines are shown as this many spaces.
const TAB_WIDTH: usize = 4;

/// An error located by a byte span in one file, before rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Where (bytes of the file's text).
    pub span: Span,
    /// What is wrong, e.g. "unknown type `TimeReadng`".
    pub message: String,
    /// Text shown after the carets (may be empty).
    pub label: String,
}

impl Error {
    /// An error at `span`.
    pub fn new(span: Span, message: impl Into<String>, label: impl Into<String>) -> Error {
        Error {
            span,
            message: message.into(),
            label: label.into(),
        }
    }
}

/// One error, located in a file.
#[derive(Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// What is wrong, e.g. "unknown type `TimeReadng`".
    pub message: String,
    /// Text under the carets, e.g. "did you mean `TimeReading`?" (may be empty).
    pub label: String,
    /// The file, as given by the caller (roots) or resolved relative to the
    /// importing file (imports).
    pub path: PathBuf,
    /// Byte span in the file (`0..0` when the error concerns the whole file).
    pub span: Span,
    /// 1-based line (0 when the error concerns the whole file, e.g. it
    /// cannot be read).
    pub line: usize,
    /// 1-based column, in characters (0 when `line` is 0).
    pub column: usize,
    /// Rendered text (`error: ...`, `--> file:L:C`, source line, caret).
    pub rendered: String,
}

impl Diagnostic {
    /// Locates `error` in `source` (the text of `path`) and renders it.
    pub fn from_error(path: &Path, source: &str, error: &Error) -> Diagnostic {
        let (line, column, line_text, caret_col, caret_len) = locate(source, error.span);
        let mut rendered = String::new();
        let number = line.to_string();
        let pad = " ".repeat(number.len());
        let _ = writeln!(rendered, "error: {}", error.message);
        let _ = writeln!(rendered, "{pad}--> {}:{line}:{column}", path.display());
        let _ = writeln!(rendered, "{pad} |");
        let _ = writeln!(rendered, "{number} | {line_text}");
        let _ = write!(
            rendered,
            "{pad} | {}{}",
            " ".repeat(caret_col),
            "^".repeat(caret_len)
        );
        if !error.label.is_empty() {
            let _ = write!(rendered, " {}", error.label);
        }
        Diagnostic {
            message: error.message.clone(),
            label: error.label.clone(),
            path: path.to_path_buf(),
            span: error.span,
            line,
            column,
            rendered,
        }
    }

    /// An error about a whole file (it cannot be read, it is not UTF-8, ..).
    pub fn whole_file(path: &Path, message: impl Into<String>) -> Diagnostic {
        let message = message.into();
        let rendered = format!("error: {message}\n --> {}", path.display());
        Diagnostic {
            message,
            label: String::new(),
            path: path.to_path_buf(),
            span: Span::default(),
            line: 0,
            column: 0,
            rendered,
        }
    }
}

/// Line (1-based), column (1-based, characters), the displayed line text
/// (tabs expanded, no line break), the caret's display column (0-based) and
/// the number of carets.
fn locate(source: &str, span: Span) -> (usize, usize, String, usize, usize) {
    let start = floor_char_boundary(source, span.start.min(source.len()));
    let end = floor_char_boundary(source, span.end.min(source.len())).max(start);
    let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = source[start..]
        .find('\n')
        .map_or(source.len(), |i| start + i);
    let line = source[..start].matches('\n').count() + 1;
    let raw_line = &source[line_start..line_end];
    let raw_line = raw_line.strip_suffix('\r').unwrap_or(raw_line);
    let column = source[line_start..start].chars().count() + 1;

    let width = |s: &str| {
        s.chars()
            .map(|c| if c == '\t' { TAB_WIDTH } else { 1 })
            .sum::<usize>()
    };
    let shown: String = raw_line
        .chars()
        .map(|c| match c {
            '\t' => " ".repeat(TAB_WIDTH),
            c if c.is_control() => "\u{fffd}".to_owned(),
            c => c.to_string(),
        })
        .collect();
    let caret_col = width(&source[line_start..start]);
    // The underline stops at the end of the first line of the span.
    let underline_end = end.min(line_start + raw_line.len()).max(start);
    let caret_len = width(&source[start..underline_end]).max(1);
    (
        line,
        column,
        shown.trim_end().to_owned(),
        caret_col,
        caret_len,
    )
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl fmt::Debug for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rendered)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rendered)
    }
}

/// Every error found; never empty when returned as an `Err`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Diagnostics {
    /// The errors, in file and position order.
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// All errors rendered, separated by blank lines, followed by a summary
    /// line (`error: aborting due to 2 previous errors`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for d in &self.items {
            out.push_str(&d.rendered);
            out.push_str("\n\n");
        }
        match self.items.len() {
            0 => {}
            1 => out.push_str("error: aborting due to 1 previous error\n"),
            n => {
                let _ = writeln!(out, "error: aborting due to {n} previous errors");
            }
        }
        out
    }

    /// Number of errors.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when there is no error.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl fmt::Debug for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_rustc() {
        let src =
            "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\nl\nm\n  rpc GetTime(Empty) returns (TimeReadng);\n";
        let start = src.find("TimeReadng").unwrap_or(0);
        let err = Error::new(
            Span::new(start, start + 10),
            "unknown type `TimeReadng`",
            "did you mean `TimeReading`?",
        );
        let d = Diagnostic::from_error(Path::new("idl/clock.idl"), src, &err);
        assert_eq!(
            d.rendered,
            "error: unknown type `TimeReadng`\n  --> idl/clock.idl:14:31\n   |\n14 |   rpc GetTime(Empty) returns (TimeReadng);\n   |                               ^^^^^^^^^^ did you mean `TimeReading`?"
        );
        assert_eq!((d.line, d.column), (14, 31));
    }

    #[test]
    fn tabs_and_multibyte_characters() {
        let src = "\té x";
        let at = src.find('x').unwrap_or(0);
        let d = Diagnostic::from_error(
            Path::new("f"),
            src,
            &Error::new(Span::new(at, at + 1), "m", ""),
        );
        // Column counts characters: tab, é, space, x.
        assert_eq!(d.column, 4);
        assert!(
            d.rendered.ends_with("1 |     é x\n  |       ^"),
            "{}",
            d.rendered
        );
    }

    #[test]
    fn spans_past_the_end_and_inside_characters_do_not_panic() {
        let src = "é";
        for (s, e) in [(0, 0), (1, 1), (1, 2), (5, 9), (2, 1)] {
            let d =
                Diagnostic::from_error(Path::new("f"), src, &Error::new(Span::new(s, e), "m", "l"));
            assert_eq!(d.line, 1);
        }
    }
}
