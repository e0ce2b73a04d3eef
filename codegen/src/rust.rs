//! The Rust back end. (Skeleton for the back-end owner.)

use crate::model::Model;

/// The generated Rust for `model`, formatted with prettyplease, starting
/// with a "generated from <file>, DO NOT EDIT" header.
pub fn generate(model: &Model) -> String {
    let _ = model;
    String::new()
}
