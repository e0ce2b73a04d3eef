//! Reading files and following imports. (Skeleton for the front-end owner.)

use crate::diag::Diagnostics;
use crate::model::Model;
use std::path::Path;

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
    let _ = roots;
    Err(Diagnostics::default())
}

/// Parses and checks `source` as if it were the file `path` (imports are
/// resolved relative to `path` on disk).
///
/// # Errors
/// Every mistake found.
pub fn load_source(path: &Path, source: &str) -> Result<Model, Diagnostics> {
    let _ = (path, source);
    Err(Diagnostics::default())
}
