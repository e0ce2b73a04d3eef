//! Snapshots of the generated Rust for hand-built models (equal to the
//! front end's output for `rpc-macros/tests/idl/*.idl`).

#[path = "support/models.rs"]
mod models;

use rpc_codegen::rust;

#[test]
fn clock_rust() {
    let out = rust::generate(&models::clock_model());
    insta::assert_snapshot!("rust_clock", out);
}

#[test]
fn kitchen_rust() {
    let out = rust::generate(&models::kitchen_model());
    insta::assert_snapshot!("rust_kitchen", out);
}
