//! The front end's models of `rpc-macros/tests/idl/*.idl` generate the
//! same Rust as the hand-built models the back end was written against.

#[path = "support/models.rs"]
mod models;

use rpc_codegen::rust;
use std::path::{Path, PathBuf};

fn idl_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../rpc-macros/tests/idl")
}

fn load(name: &str) -> rpc_codegen::model::Model {
    match rpc_codegen::load(&idl_dir().join(name)) {
        Ok(m) => m,
        Err(d) => panic!("{name} does not load:\n{}", d.render()),
    }
}

#[test]
fn clock_idl_generates_what_the_hand_built_model_does() {
    let a = rust::tokens(&load("clock.idl")).to_string();
    let b = rust::tokens(&models::clock_model()).to_string();
    assert_eq!(a, b);
}

#[test]
fn kitchen_idl_generates_what_the_hand_built_model_does() {
    let a = rust::tokens(&load("kitchen.idl")).to_string();
    let b = rust::tokens(&models::kitchen_model()).to_string();
    assert_eq!(a, b);
}
