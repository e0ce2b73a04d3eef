//! The `.proto` back end. (Skeleton for the front-end owner.)

use crate::model::Model;
use std::path::PathBuf;

/// One generated `.proto` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoFile {
    /// File name relative to the output directory, e.g. `clock.proto`.
    pub name: PathBuf,
    /// Its text.
    pub contents: String,
}

/// One `.proto` per `.idl` file of `model`.
pub fn generate(model: &Model) -> Vec<ProtoFile> {
    let _ = model;
    Vec::new()
}
