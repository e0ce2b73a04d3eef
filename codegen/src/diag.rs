//! Diagnostics: every mistake found in the input, rendered like rustc.
//! (Skeleton: the front-end owner replaces the internals; keep the public
//! names `Diagnostic`, `Diagnostics`, `Diagnostics::render`.)

use std::fmt;
use std::path::PathBuf;

/// One error, located in a file.
#[derive(Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// What is wrong, e.g. "unknown type `TimeReadng`".
    pub message: String,
    /// The file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// Rendered text (`error: ...`, `--> file:L:C`, source line, caret).
    pub rendered: String,
}

impl fmt::Debug for Diagnostic {
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
    /// All errors rendered, separated by blank lines, with a summary line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for d in &self.items {
            out.push_str(&d.rendered);
            out.push('\n');
        }
        out
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
