//! The front end over the fixture corpus: rendered diagnostics of every
//! invalid fixture and the `.proto` of every valid one, as insta snapshots;
//! plus the exact rendering of the issue's example, the envelope IDL, the
//! model's contents and the `rpcgen` binary.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use rpc_codegen::model::{FieldKind, Protocol, Scalar, Style, Type};
use std::path::{Path, PathBuf};

/// Fixture files directly in `dir` (not in subfolders, which hold the
/// files they import), sorted, as paths relative to the crate (cargo runs
/// tests from the crate's directory, so diagnostics show these paths).
fn fixtures(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "idl"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {dir}");
    files
}

fn stem(p: &Path) -> String {
    p.file_stem().unwrap().to_string_lossy().into_owned()
}

fn protos_of(path: &Path) -> String {
    let model =
        rpc_codegen::load(path).unwrap_or_else(|d| panic!("{} should load:\n{d}", path.display()));
    let mut out = String::new();
    for f in rpc_codegen::proto::generate(&model) {
        out.push_str(&format!("=== {} ===\n{}\n", f.name.display(), f.contents));
    }
    out
}

#[test]
fn every_invalid_fixture_renders_its_diagnostics() {
    for path in fixtures("tests/fixtures/invalid") {
        let Err(diagnostics) = rpc_codegen::load(&path) else {
            panic!("{} should not load", path.display());
        };
        assert!(!diagnostics.is_empty());
        insta::assert_snapshot!(format!("invalid_{}", stem(&path)), diagnostics.render());
    }
}

#[test]
fn every_valid_fixture_gives_its_proto() {
    for path in fixtures("tests/fixtures/valid") {
        insta::assert_snapshot!(format!("valid_{}", stem(&path)), protos_of(&path));
    }
}

#[test]
fn envelope_idl_loads_and_gives_its_proto() {
    let path = Path::new("../idl/rpc/envelope.idl");
    insta::assert_snapshot!("envelope", protos_of(path));
    let model = rpc_codegen::load(path).unwrap();
    let file = &model.files[0];
    assert_eq!(file.package_name(), "rpc.v1");
    assert_eq!(
        file.messages
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>(),
        ["Status", "Envelope", "ServerRestarted"]
    );
    assert_eq!(file.enums.len(), 2);
}

#[test]
fn the_issue_example_renders_exactly() {
    let Err(d) = rpc_codegen::load(Path::new("tests/fixtures/invalid/unknown_type.idl")) else {
        panic!("should fail");
    };
    let first = &d.items[0];
    assert_eq!(
        first.rendered,
        "error: unknown type `TimeReadng`
  --> tests/fixtures/invalid/unknown_type.idl:14:31
   |
14 |   rpc GetTime(Empty) returns (TimeReadng);
   |                               ^^^^^^^^^^ did you mean `TimeReading`?"
    );
    assert_eq!((first.line, first.column), (14, 31));
    assert_eq!(first.label, "did you mean `TimeReading`?");
    // Debug shows the same text, so `build.rs` unwraps print it.
    assert_eq!(format!("{first:?}"), first.rendered);
    assert_eq!(format!("{d:?}"), d.render());
}

#[test]
fn every_mistake_of_a_file_is_reported() {
    let Err(d) = rpc_codegen::load(Path::new("tests/fixtures/invalid/many_errors.idl")) else {
        panic!("should fail");
    };
    let messages: Vec<&str> = d.items.iter().map(|i| i.message.as_str()).collect();
    for expected in [
        "import not found: `missing.idl`",
        "duplicate field `when` in message `Reading`",
        "expected `;` after field, found `map`",
        "illegal map key type `double`",
        "field number 19500 is reserved by protobuf",
        "the first value of enum `Mode` must be 0",
        "duplicate enum number 1 in enum `Mode`",
        "`timeout` must be greater than zero",
        "a `oneway` method is never retried",
        "protocol = R has no reply: declare the method `oneway`",
        "idempotent methods keep no reply history, so there is nothing to acknowledge",
        "unknown attribute `colour`",
    ] {
        assert!(
            messages.contains(&expected),
            "missing {expected:?} in {messages:#?}"
        );
    }
    // In position order.
    let lines: Vec<usize> = d.items.iter().map(|i| i.line).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
}

#[test]
fn errors_of_imported_files_are_reported_too() {
    let Err(d) = rpc_codegen::load(Path::new("tests/fixtures/invalid/imported_errors.idl")) else {
        panic!("should fail");
    };
    let paths: Vec<String> = d
        .items
        .iter()
        .map(|i| i.path.display().to_string())
        .collect();
    assert!(paths.contains(&"tests/fixtures/invalid/imported_errors.idl".to_owned()));
    assert!(paths.contains(&"tests/fixtures/invalid/support/broken.idl".to_owned()));
}

#[test]
fn the_demo_model_is_complete() {
    let model = rpc_codegen::load(Path::new("tests/fixtures/valid/demo.idl")).unwrap();
    assert_eq!(model.files.len(), 2);
    let demo = &model.files[0];
    assert!(!demo.imported);
    assert!(model.files[1].imported);
    assert_eq!(
        demo.imports,
        vec![PathBuf::from("tests/fixtures/valid/common.idl")]
    );
    assert_eq!(demo.docs, vec!["Time as a remote service.".to_owned()]);
    assert_eq!(demo.package, vec!["demo".to_owned(), "v1".to_owned()]);
    let reading = &demo.messages[0];
    assert_eq!(
        reading.docs,
        vec!["One reading of the server's clock.".to_owned()]
    );
    assert_eq!(reading.reserved_ranges, vec![(9, 9), (12, 15)]);
    assert_eq!(reading.reserved_names, vec!["legacy".to_owned()]);
    assert!(matches!(
        reading.fields[2].kind,
        FieldKind::Optional(Type::Scalar(Scalar::String))
    ));
    assert!(matches!(
        reading.fields[4].kind,
        FieldKind::Map(Scalar::String, Type::Scalar(Scalar::Int64))
    ));
    assert!(
        matches!(&reading.fields[5].kind, FieldKind::Single(Type::Enum(t)) if t.full_name() == "demo.v1.Mode")
    );
    assert_eq!(
        reading.oneofs[0]
            .fields
            .iter()
            .map(|f| f.tag)
            .collect::<Vec<_>>(),
        [6, 7]
    );

    let clock = &demo.services[0];
    let m = |name: &str| clock.methods.iter().find(|m| m.name == name).unwrap();
    let get = m("GetTime");
    assert!(get.idempotent);
    assert_eq!(
        (get.protocol, get.style, get.timeout_ms, get.retries),
        (Protocol::RR, Style::Sync, Some(250), None)
    );
    assert_eq!(
        get.id,
        rpc_codegen::model::method_id("demo.v1", "Clock", "GetTime")
    );
    assert_eq!(
        get.docs,
        vec!["Safe to retry: at-least-once, no reply history needed.".to_owned()]
    );
    let adjust = m("Adjust");
    assert_eq!((adjust.protocol, adjust.retries), (Protocol::RRA, Some(5)));
    assert_eq!(
        adjust.raises.as_ref().unwrap().full_name(),
        "demo.v1.NotSynchronised"
    );
    let hint = m("Hint");
    assert!(hint.oneway && hint.response.is_none());
    assert_eq!((hint.protocol, hint.style), (Protocol::R, Style::OneWay));
    assert_eq!(m("Resync").style, Style::Deferred);
}

#[test]
fn timeouts_in_seconds_become_milliseconds() {
    let model = rpc_codegen::load(Path::new("tests/fixtures/valid/attributes.idl")).unwrap();
    let at_most_once = model.files[0].services[0]
        .methods
        .iter()
        .find(|m| m.name == "AtMostOnce")
        .unwrap();
    assert_eq!(at_most_once.timeout_ms, Some(5000));
}

#[test]
fn load_source_and_load_many() {
    let src = "package p; import \"common.idl\"; message M { demo.common.Timestamp t = 1; }";
    let model =
        rpc_codegen::load_source(Path::new("tests/fixtures/valid/virtual.idl"), src).unwrap();
    assert_eq!(model.files.len(), 2);
    // Shared imports appear once; a root that is also imported stays a root.
    let roots = [
        Path::new("tests/fixtures/valid/demo.idl"),
        Path::new("tests/fixtures/valid/cross_package.idl"),
        Path::new("tests/fixtures/valid/common.idl"),
    ];
    let model = rpc_codegen::load_many(&roots).unwrap();
    let paths: Vec<String> = model
        .files
        .iter()
        .map(|f| f.path.display().to_string())
        .collect();
    assert_eq!(
        paths,
        [
            "tests/fixtures/valid/demo.idl",
            "tests/fixtures/valid/cross_package.idl",
            "tests/fixtures/valid/common.idl"
        ]
    );
    assert!(model.files.iter().all(|f| !f.imported));
}

#[test]
fn a_missing_root_is_reported_without_source() {
    let d = rpc_codegen::load(Path::new("tests/fixtures/nope.idl")).unwrap_err();
    assert_eq!(d.items.len(), 1);
    assert!(
        d.items[0]
            .rendered
            .starts_with("error: cannot read `tests/fixtures/nope.idl`: "),
        "{}",
        d.items[0].rendered
    );
    assert!(d.items[0]
        .rendered
        .ends_with("\n --> tests/fixtures/nope.idl"));
}

fn rpcgen(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_rpcgen"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn rpcgen_check_proto_and_usage() {
    let ok = rpcgen(&["check", "tests/fixtures/valid/demo.idl"]);
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout),
        "ok: 2 file(s), 5 message(s), 2 enum(s), 1 service(s), 4 method(s)\n"
    );
    let bad = rpcgen(&[
        "check",
        "tests/fixtures/invalid/many_errors.idl",
        "tests/fixtures/valid/demo.idl",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("error: unknown type `Readin`"), "{stderr}");
    assert!(stderr.ends_with("previous errors\n"));

    let out = std::env::temp_dir().join(format!("rpcgen-front-test-{}", std::process::id()));
    let status = rpcgen(&[
        "proto",
        "tests/fixtures/valid/uses_subdir.idl",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let sub = std::fs::read_to_string(out.join("sub/types.proto")).unwrap();
    assert!(sub.contains("package layout.sub;"));
    assert!(std::fs::read_to_string(out.join("uses_subdir.proto"))
        .unwrap()
        .contains("import \"sub/types.proto\";"));
    std::fs::remove_dir_all(&out).unwrap();

    assert_eq!(rpcgen(&[]).status.code(), Some(2));
    assert_eq!(rpcgen(&["check"]).status.code(), Some(2));
    assert_eq!(rpcgen(&["frobnicate", "x.idl"]).status.code(), Some(2));
    assert_eq!(
        rpcgen(&["proto", "tests/fixtures/valid/demo.idl"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn crlf_line_endings_give_the_same_model() {
    let lf = std::fs::read_to_string("tests/fixtures/valid/demo.idl").unwrap();
    let crlf = lf.replace('\n', "\r\n");
    let path = Path::new("tests/fixtures/valid/demo.idl");
    assert_eq!(
        rpc_codegen::load_source(path, &crlf).unwrap(),
        rpc_codegen::load_source(path, &lf).unwrap()
    );
    // Diagnostics do not show the carriage return.
    let d = rpc_codegen::load_source(path, "message A {\r\n  int32 a = 1\r\n}\r\n").unwrap_err();
    assert!(
        d.items[0].rendered.contains("2 |   int32 a = 1\n"),
        "{:?}",
        d.items[0].rendered
    );
}
