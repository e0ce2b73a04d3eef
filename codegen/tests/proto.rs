//! The `.proto` back end against the official protoc.
//!
//! Runs protoc (from the `grpcio-tools` Python package) on the `.proto` of
//! every valid fixture and of `idl/rpc/envelope.idl` (with the Python and
//! the gRPC Python plugins, as a user of the `.proto` would) when the
//! environment variable `RPC_PROTOC_PYTHON` (or `RPC_TEST_PYTHON`, which
//! `tests/run.sh` sets) names a Python that has `grpc_tools`
//! (`python3 -m venv v && v/bin/pip install grpcio-tools`). Without it, the
//! protoc part says on stderr that it was skipped (the checks that need no
//! protoc still run).
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::path::{Path, PathBuf};

fn inputs() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("tests/fixtures/valid")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "idl"))
        .collect();
    files.sort();
    files.push(PathBuf::from("../idl/rpc/envelope.idl"));
    files
}

/// Writes the `.proto` set of `root` under `dir`; returns the names.
fn write_protos(root: &Path, dir: &Path) -> Vec<String> {
    let model = rpc_codegen::load(root).unwrap_or_else(|d| panic!("{d}"));
    let mut names = Vec::new();
    for f in rpc_codegen::proto::generate(&model) {
        let path = dir.join(&f.name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &f.contents).unwrap();
        names.push(f.name.to_string_lossy().replace('\\', "/"));
    }
    names
}

#[test]
fn protoc_accepts_every_generated_proto() {
    let Some(python) =
        std::env::var_os("RPC_PROTOC_PYTHON").or_else(|| std::env::var_os("RPC_TEST_PYTHON"))
    else {
        // Not through `eprintln!`, which the test harness captures.
        let _ = writeln!(
            std::io::stderr(),
            "protoc_accepts_every_generated_proto: SKIPPED, neither RPC_PROTOC_PYTHON nor RPC_TEST_PYTHON is set (a python with grpcio-tools)"
        );
        return;
    };
    let base = std::env::temp_dir().join(format!("rpc-front-protoc-{}", std::process::id()));
    for root in inputs() {
        let dir = base.join(root.file_stem().unwrap());
        let out = dir.join("python_out");
        std::fs::create_dir_all(&out).unwrap();
        let names = write_protos(&root, &dir);
        let result = std::process::Command::new(&python)
            .arg("-m")
            .arg("grpc_tools.protoc")
            .arg(format!("-I{}", dir.display()))
            .arg(format!("--python_out={}", out.display()))
            .arg(format!("--grpc_python_out={}", out.display()))
            .args(names.iter().map(|n| dir.join(n)))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(
            result.status.success(),
            "protoc rejected the .proto of {}:\n{stderr}",
            root.display()
        );
        // Warnings about unused imports are fine (the demo imports common.idl
        // without using it); anything else is not.
        for line in stderr.lines() {
            assert!(
                line.contains("warning: Import") && line.ends_with("is unused."),
                "protoc said: {line}"
            );
        }
    }
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn proto_names_follow_the_idl_layout() {
    let model = rpc_codegen::load(Path::new("tests/fixtures/valid/uses_subdir.idl")).unwrap();
    let names: Vec<String> = rpc_codegen::proto::generate(&model)
        .iter()
        .map(|f| f.name.to_string_lossy().replace('\\', "/"))
        .collect();
    assert_eq!(
        names,
        ["uses_subdir.proto", "sub/types.proto", "no_package.proto"]
    );
}

#[test]
fn other_packages_are_fully_qualified_and_oneway_returns_empty() {
    let model = rpc_codegen::load(Path::new("tests/fixtures/valid/cross_package.idl")).unwrap();
    let files = rpc_codegen::proto::generate(&model);
    let text = &files[0].contents;
    assert!(
        text.contains("  .demo.common.Timestamp taken_at = 3;"),
        "{text}"
    );
    assert!(text.contains("  TimeReading reading = 1;"));
    assert!(text.contains("import \"demo.proto\";"));
    let demo = files
        .iter()
        .find(|f| f.name == Path::new("demo.proto"))
        .unwrap();
    assert!(demo
        .contents
        .contains("import \"google/protobuf/empty.proto\";"));
    assert!(demo
        .contents
        .contains("  rpc Hint(Offset) returns (google.protobuf.Empty);"));
    assert!(demo
        .contents
        .contains("  // raises demo.v1.NotSynchronised\n"));
    let id = rpc_codegen::model::method_id("demo.v1", "Clock", "Hint");
    assert!(demo
        .contents
        .contains(&format!("  // method id {id:#010x}\n")));
}
