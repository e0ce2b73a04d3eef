//! trybuild: the Rust generated for every valid fixture compiles on its
//! own under `#![no_implicit_prelude]`, and `idl!` turns IDL mistakes into
//! compile errors on its string literal (`ui/*.rs` with `.stderr`).

use std::path::{Path, PathBuf};

/// Every `.idl` under `dir` that loads without errors (imports of other
/// fixtures are roots too: each must compile alone).
fn idl_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "idl"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn ui() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("generated-fixtures");
    std::fs::create_dir_all(&out).expect("create the output directory");
    let t = trybuild::TestCases::new();
    let mut roots = idl_files(&root.join("../codegen/tests/fixtures/valid"));
    roots.extend(idl_files(&root.join("tests/idl")));
    assert!(!roots.is_empty());
    for idl in &roots {
        let model = match rpc_codegen::load(idl) {
            Ok(m) => m,
            Err(d) => panic!(
                "valid fixture {} does not load:\n{}",
                idl.display(),
                d.render()
            ),
        };
        let code = rpc_codegen::rust::generate(&model);
        let stem = idl
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("fixture");
        let parent = idl
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|s| s.to_str())
            .unwrap_or("x");
        let file = out.join(format!("{parent}_{stem}.rs"));
        let text = format!(
            "#![no_implicit_prelude]\n#![allow(dead_code, unreachable_pub, missing_docs)]\n\n{code}\nfn main() {{}}\n"
        );
        std::fs::write(&file, text).expect("write the generated file");
        t.pass(&file);
    }
    t.compile_fail("tests/ui/*.rs");
}
