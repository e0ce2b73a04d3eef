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

/// Every valid fixture of the front end and of `rpc-macros/tests/idl`,
/// through the real front end: one snapshot each (`rust_<dir>_<stem>`).
#[test]
fn valid_fixtures_rust() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for dir in ["tests/fixtures/valid", "../rpc-macros/tests/idl"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        let mut files: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "idl"))
            .collect();
        files.sort();
        for path in files {
            let model = match rpc_codegen::load(&path) {
                Ok(m) => m,
                Err(d) => panic!("{} does not load:\n{}", path.display(), d.render()),
            };
            let base = path.parent().unwrap_or(root);
            let text = rust::generate_with_base(&model, Some(base));
            let group = if dir.starts_with("..") {
                "macros"
            } else {
                "fixture"
            };
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("x");
            insta::assert_snapshot!(format!("rust_{group}_{stem}"), text);
            seen += 1;
        }
    }
    assert!(seen >= 3, "no fixtures found");
}
