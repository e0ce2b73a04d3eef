//! Reading files and following imports.
//!
//! The loader reads each root, parses it, resolves its `import "x.idl";`
//! statements relative to the importing file's directory, and repeats for
//! every file reached (each file once, in the order first reached: roots
//! first, then imports breadth first). Then it checks the import graph for
//! cycles, runs [`resolve`](crate::resolve::resolve) over everything, and
//! renders every error of every file.

use crate::diag::{self, Diagnostic, Diagnostics};
use crate::model::Model;
use crate::span::Span;
use crate::{ast, parser, resolve};
use std::collections::{HashMap, VecDeque};
use std::path::{Component, Path, PathBuf};

/// Parses and checks `root` and everything it imports.
///
/// # Errors
/// Every mistake found, in every file.
pub fn load(root: &Path) -> Result<Model, Diagnostics> {
    load_many(&[root])
}

/// Parses and checks several roots (imports shared between them appear once).
///
/// # Errors
/// Every mistake found, in every file.
pub fn load_many(roots: &[&Path]) -> Result<Model, Diagnostics> {
    let roots: Vec<(PathBuf, Option<String>)> =
        roots.iter().map(|p| (p.to_path_buf(), None)).collect();
    run(roots)
}

/// Parses and checks `source` as if it were the file `path` (imports are
/// resolved relative to `path` on disk).
///
/// # Errors
/// Every mistake found.
pub fn load_source(path: &Path, source: &str) -> Result<Model, Diagnostics> {
    run(vec![(path.to_path_buf(), Some(source.to_owned()))])
}

/// One file reached.
struct Unit {
    /// Path shown in diagnostics and stored in the model.
    path: PathBuf,
    /// Its text, if it could be read as UTF-8.
    source: String,
    ast: ast::File,
    imports: Vec<Option<usize>>,
    imported: bool,
    errors: Vec<diag::Error>,
    /// Errors about the whole file (cannot be read, not UTF-8).
    fatal: Vec<Diagnostic>,
}

impl Unit {
    /// A file to parse: its text, or the diagnostic that says why it has
    /// none.
    fn new(path: PathBuf, imported: bool, source: Result<String, Box<Diagnostic>>) -> Unit {
        let (source, fatal) = match source {
            Ok(s) => (s, Vec::new()),
            Err(d) => (String::new(), vec![*d]),
        };
        Unit {
            path,
            source,
            ast: ast::File::default(),
            imports: Vec::new(),
            imported,
            errors: Vec::new(),
            fatal,
        }
    }
}

fn identity(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| normalize(path))
}

/// Removes `.` components and folds `dir/..` (lexically).
fn normalize(path: &Path) -> PathBuf {
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(c),
            },
            other => out.push(other),
        }
    }
    if out.is_empty() {
        PathBuf::from(".")
    } else {
        out.iter().collect()
    }
}

/// The text of `bytes`, or a diagnostic pointing at the first invalid byte.
fn decode(path: &Path, bytes: Vec<u8>) -> Result<String, Box<Diagnostic>> {
    match String::from_utf8(bytes) {
        Ok(s) => Ok(s),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let bytes = e.into_bytes();
            let valid = String::from_utf8_lossy(&bytes[..at]).into_owned();
            let line_end = bytes[at..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |i| at + i);
            let shown = format!("{valid}{}", String::from_utf8_lossy(&bytes[at..line_end]));
            let err = diag::Error::new(
                Span::new(at, at + 1),
                "file is not valid UTF-8",
                "invalid byte here",
            );
            Err(Box::new(Diagnostic::from_error(path, &shown, &err)))
        }
    }
}

fn run(roots: Vec<(PathBuf, Option<String>)>) -> Result<Model, Diagnostics> {
    let mut units: Vec<Unit> = Vec::new();
    let mut by_key: HashMap<PathBuf, usize> = HashMap::new();
    let mut queue: VecDeque<usize> = VecDeque::new();
    // Errors found in a file about its imports: (file, error).
    for (path, text) in roots {
        let key = identity(&path);
        if by_key.contains_key(&key) {
            continue;
        }
        let idx = units.len();
        by_key.insert(key, idx);
        let source = match text {
            Some(t) => Ok(t),
            None => match std::fs::read(&path) {
                Ok(bytes) => decode(&path, bytes),
                Err(e) => Err(Box::new(Diagnostic::whole_file(
                    &path,
                    format!("cannot read `{}`: {e}", path.display()),
                ))),
            },
        };
        units.push(Unit::new(path, false, source));
        queue.push_back(idx);
    }

    while let Some(idx) = queue.pop_front() {
        if !units[idx].fatal.is_empty() {
            continue;
        }
        let (file, errors) = parser::parse(&units[idx].source);
        units[idx].errors = errors;
        let dir = units[idx]
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut imports = Vec::new();
        for imp in &file.imports {
            let target = normalize(&dir.join(&imp.path));
            if imp.path.is_empty() {
                units[idx].errors.push(diag::Error::new(
                    imp.span,
                    "empty import path",
                    "name an `.idl` file",
                ));
                imports.push(None);
                continue;
            }
            let key = identity(&target);
            if let Some(&t) = by_key.get(&key) {
                imports.push(Some(t));
                continue;
            }
            let bytes = match std::fs::read(&target) {
                Ok(b) => b,
                Err(e) => {
                    let message = if e.kind() == std::io::ErrorKind::NotFound {
                        format!("import not found: `{}`", imp.path)
                    } else {
                        format!("cannot read import `{}`: {e}", imp.path)
                    };
                    let label = format!("resolved to `{}`", target.display());
                    units[idx]
                        .errors
                        .push(diag::Error::new(imp.span, message, label));
                    imports.push(None);
                    continue;
                }
            };
            let t = units.len();
            by_key.insert(key, t);
            let source = decode(&target, bytes);
            units.push(Unit::new(target, true, source));
            queue.push_back(t);
            imports.push(Some(t));
        }
        units[idx].ast = file;
        units[idx].imports = imports;
    }

    report_cycles(&mut units);

    let inputs: Vec<resolve::Input<'_>> = units
        .iter()
        .map(|u| resolve::Input {
            path: u.path.clone(),
            source: &u.source,
            ast: &u.ast,
            imports: u.imports.clone(),
            imported: u.imported,
        })
        .collect();
    let (model, resolve_errors) = resolve::resolve(&inputs);
    drop(inputs);
    for (fi, e) in resolve_errors {
        if let Some(u) = units.get_mut(fi) {
            u.errors.push(e);
        }
    }

    let mut diagnostics = Diagnostics::default();
    for u in &mut units {
        diagnostics.items.append(&mut u.fatal);
        u.errors.sort_by_key(|e| e.span.start);
        for e in &u.errors {
            diagnostics
                .items
                .push(Diagnostic::from_error(&u.path, &u.source, e));
        }
    }
    match model {
        Some(model) if diagnostics.is_empty() => Ok(model),
        _ => {
            if diagnostics.is_empty() {
                // Cannot happen (resolve returns no model only with errors),
                // but never hand out an empty error list.
                diagnostics.items.push(Diagnostic::whole_file(
                    Path::new("<input>"),
                    "internal error: no model and no diagnostics",
                ));
            }
            Err(diagnostics)
        }
    }
}

/// Reports every import that closes a cycle, at its string literal.
fn report_cycles(units: &mut [Unit]) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let n = units.len();
    let mut mark = vec![Mark::New; n];
    let mut found: Vec<(usize, usize, Vec<usize>)> = Vec::new(); // (file, import index, cycle)
    for start in 0..n {
        if mark[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next import index), with the active path.
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        mark[start] = Mark::Active;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let imports = &units[node].imports;
            if *next >= imports.len() {
                mark[node] = Mark::Done;
                stack.pop();
                continue;
            }
            let i = *next;
            *next += 1;
            let Some(target) = imports[i] else { continue };
            match mark[target] {
                Mark::New => {
                    mark[target] = Mark::Active;
                    stack.push((target, 0));
                }
                Mark::Active => {
                    let from = stack.iter().position(|&(f, _)| f == target).unwrap_or(0);
                    let mut cycle: Vec<usize> = stack[from..].iter().map(|&(f, _)| f).collect();
                    cycle.push(target);
                    found.push((node, i, cycle));
                }
                Mark::Done => {}
            }
        }
    }
    for (node, i, cycle) in found {
        let chain = cycle
            .iter()
            .map(|&f| units[f].path.display().to_string())
            .collect::<Vec<_>>()
            .join(" -> ");
        let span = units[node]
            .ast
            .imports
            .get(i)
            .map(|imp| imp.span)
            .unwrap_or_default();
        let message = if cycle.len() == 2 {
            format!("`{}` imports itself", units[node].path.display())
        } else {
            format!("import cycle: {chain}")
        };
        units[node].errors.push(diag::Error::new(
            span,
            message,
            "this import closes the cycle",
        ));
        // The model must not contain a cycle's edge twice over; dropping it
        // is harmless since an error is reported anyway.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_lexically() {
        assert_eq!(
            normalize(Path::new("idl/./a/../b.idl")),
            PathBuf::from("idl/b.idl")
        );
        assert_eq!(normalize(Path::new("../x.idl")), PathBuf::from("../x.idl"));
        assert_eq!(
            normalize(Path::new("a/../../x.idl")),
            PathBuf::from("../x.idl")
        );
    }
}
