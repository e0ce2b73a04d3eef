//! `build.rs` entry point: [`Builder`] compiles `.idl` files to Rust in
//! `OUT_DIR`, which the crate then includes with
//! `rpc_core::include_idl!("<stem>")`.
//!
//! ```no_run
//! // build.rs: `fn main() { .. }` around this line
//! rpc_codegen::Builder::new().compile(&["idl/clock.idl"]).unwrap();
//! ```
//! An `unwrap` is enough: the error's `Debug` is the rendered diagnostics.

use crate::diag::Diagnostics;
use crate::model::Model;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Why [`Builder::compile`] failed.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The IDL has mistakes; every one found, in every root.
    #[error("invalid idl\n{0}")]
    Idl(Diagnostics),
    /// Neither [`Builder::out_dir`] nor the `OUT_DIR` variable (set by
    /// cargo for build scripts) says where to write.
    #[error("no output directory: OUT_DIR is not set and out_dir(..) was not called")]
    NoOutDir,
    /// A root path has no file name to derive the output's name from.
    #[error("{0} has no file stem")]
    NoFileStem(PathBuf),
    /// Reading or writing a generated file, or printing to cargo, failed.
    #[error("cannot write {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl fmt::Debug for BuildError {
    /// The rendered diagnostics, so that `build.rs` can `unwrap()`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Idl(d) => write!(f, "invalid idl\n{}", d.render()),
            BuildError::Io { path, source } => {
                write!(f, "cannot write {}: {source}", path.display())
            }
            other => write!(f, "{other}"),
        }
    }
}

/// Compiles `.idl` files to Rust in `OUT_DIR` from a `build.rs`.
///
/// Each root `x.idl` becomes `$OUT_DIR/x.rs` holding the Rust for it and
/// everything it imports (see [`crate::rust`]); a file whose content would
/// not change is not rewritten, so that cargo does not rebuild for nothing.
#[derive(Debug, Clone)]
pub struct Builder {
    out_dir: Option<PathBuf>,
    emit_rerun_if_changed: bool,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            out_dir: None,
            emit_rerun_if_changed: true,
        }
    }
}

impl Builder {
    /// A builder with default settings: output to `OUT_DIR`, printing
    /// `cargo:rerun-if-changed` lines.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Writes into `dir` instead of `OUT_DIR`.
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Builder {
        self.out_dir = Some(dir.into());
        self
    }

    /// Whether to print `cargo:rerun-if-changed=<path>` for every input
    /// file, imports included (default: yes).
    pub fn emit_rerun_if_changed(mut self, emit: bool) -> Builder {
        self.emit_rerun_if_changed = emit;
        self
    }

    /// Compiles every root: `idl/clock.idl` -> `<out>/clock.rs`. Relative
    /// paths are relative to `CARGO_MANIFEST_DIR` when it is set (as in
    /// a build script), else to the current directory.
    ///
    /// # Errors
    /// [`BuildError::Idl`] with every diagnostic of every root; I/O errors.
    pub fn compile(&self, roots: &[impl AsRef<Path>]) -> Result<(), BuildError> {
        let base = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
        let out_dir = match (&self.out_dir, std::env::var_os("OUT_DIR")) {
            (Some(d), _) => d.clone(),
            (None, Some(d)) => PathBuf::from(d),
            (None, None) => return Err(BuildError::NoOutDir),
        };
        let mut diagnostics = Diagnostics::default();
        for root in roots {
            let root = root.as_ref();
            let path = match &base {
                Some(b) if root.is_relative() => b.join(root),
                _ => root.to_path_buf(),
            };
            let stem = path
                .file_stem()
                .ok_or_else(|| BuildError::NoFileStem(path.clone()))?;
            let target = out_dir.join(stem).with_extension("rs");
            match crate::loader::load(&path) {
                Ok(model) => {
                    self.rerun_if_changed(model.files.iter().map(|f| f.path.as_path()))?;
                    let text = crate::rust::generate_with_base(&model, base.as_deref());
                    write_if_changed(&target, &text)?;
                }
                Err(d) => {
                    // Rerun when any file involved changes, so that fixing
                    // the mistake rebuilds.
                    let mut files = vec![path.clone()];
                    files.extend(d.items.iter().map(|i| i.path.clone()));
                    files.sort();
                    files.dedup();
                    self.rerun_if_changed(files.iter().map(PathBuf::as_path))?;
                    diagnostics.items.extend(d.items);
                }
            }
        }
        if diagnostics.items.is_empty() {
            Ok(())
        } else {
            Err(BuildError::Idl(diagnostics))
        }
    }

    /// The Rust for one root, as [`compile`](Builder::compile) would write
    /// it (header paths relative to `CARGO_MANIFEST_DIR` when set), without
    /// writing or printing anything.
    ///
    /// # Errors
    /// [`BuildError::Idl`] with every diagnostic.
    pub fn generate(&self, root: impl AsRef<Path>) -> Result<(Model, String), BuildError> {
        let base = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
        let root = root.as_ref();
        let path = match &base {
            Some(b) if root.is_relative() => b.join(root),
            _ => root.to_path_buf(),
        };
        let model = crate::loader::load(&path).map_err(BuildError::Idl)?;
        let text = crate::rust::generate_with_base(&model, base.as_deref());
        Ok((model, text))
    }

    fn rerun_if_changed<'a>(
        &self,
        files: impl Iterator<Item = &'a Path>,
    ) -> Result<(), BuildError> {
        if !self.emit_rerun_if_changed {
            return Ok(());
        }
        // Cargo reads these lines from the build script's stdout.
        let mut out = io::stdout().lock();
        for f in files {
            writeln!(out, "cargo:rerun-if-changed={}", f.display()).map_err(|source| {
                BuildError::Io {
                    path: PathBuf::from("<stdout>"),
                    source,
                }
            })?;
        }
        Ok(())
    }
}

/// Writes `text` to `path` unless the file already holds exactly `text`.
/// Returns whether it wrote.
fn write_if_changed(path: &Path, text: &str) -> Result<bool, BuildError> {
    match std::fs::read(path) {
        Ok(old) if old == text.as_bytes() => return Ok(false),
        _ => {}
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| BuildError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(path, text).map_err(|source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_output_is_not_rewritten() {
        let dir = std::env::temp_dir().join(format!("rpc-codegen-builder-{}", std::process::id()));
        let path = dir.join("x.rs");
        assert!(write_if_changed(&path, "a").is_ok_and(|w| w));
        assert!(write_if_changed(&path, "a").is_ok_and(|w| !w));
        assert!(write_if_changed(&path, "b").is_ok_and(|w| w));
        assert_eq!(std::fs::read_to_string(&path).ok().as_deref(), Some("b"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn debug_of_idl_errors_is_the_rendered_text() {
        let err = crate::diag::Error::new(
            crate::span::Span { start: 0, end: 1 },
            "unknown type `X`",
            "",
        );
        let d = crate::diag::Diagnostic::from_error(Path::new("a.idl"), "X", &err);
        let e = BuildError::Idl(Diagnostics { items: vec![d] });
        assert!(format!("{e:?}").contains("--> a.idl:1:1"), "{e:?}");
    }
}
