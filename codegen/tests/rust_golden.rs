//! Keeps `rpc-macros/tests/generated/*.rs` equal to what the back end
//! generates for the hand-built models, so that the runtime tests of
//! `rpc-macros` compile and run exactly this code. Set `RPC_BLESS=1` to
//! rewrite the files.

#[path = "support/models.rs"]
mod models;

use rpc_codegen::rust;
use std::path::PathBuf;

fn check(name: &str, text: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rpc-macros/tests/generated").join(name);
    if std::env::var_os("RPC_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(on_disk == text, "{} is stale: rerun with RPC_BLESS=1", path.display());
}

#[test]
fn generated_files_are_current() {
    check("clock.rs", &rust::generate(&models::clock_model()));
    check("kitchen.rs", &rust::generate(&models::kitchen_model()));
}
