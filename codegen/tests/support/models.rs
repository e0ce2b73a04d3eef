//! Models built by hand, equal to what the front end makes of
//! `rpc-macros/tests/idl/{clock,common,kitchen}.idl`, so that the back end
//! can be tested on its own.
#![allow(dead_code)]

use rpc_codegen::model::*;
use std::path::PathBuf;

fn s(x: &str) -> String {
    x.to_owned()
}

fn lines(xs: &[&str]) -> Vec<String> {
    xs.iter().map(|x| s(x)).collect()
}

fn tr(pkg: &str, name: &str) -> TypeRef {
    TypeRef {
        package: if pkg.is_empty() {
            vec![]
        } else {
            pkg.split('.').map(s).collect()
        },
        name: s(name),
    }
}

fn field(name: &str, tag: u32, kind: FieldKind) -> Field {
    Field {
        name: s(name),
        docs: vec![],
        tag,
        kind,
    }
}

fn msg(name: &str, docs: &[&str], fields: Vec<Field>) -> Message {
    Message {
        name: s(name),
        docs: lines(docs),
        fields,
        oneofs: vec![],
        reserved_ranges: vec![],
        reserved_names: vec![],
    }
}

fn en(name: &str, docs: &[&str], values: &[(&str, i32)]) -> Enum {
    Enum {
        name: s(name),
        docs: lines(docs),
        values: values
            .iter()
            .map(|(n, v)| EnumValue {
                name: s(n),
                docs: vec![],
                number: *v,
            })
            .collect(),
    }
}

fn file(path: &str, package: &str, docs: &[&str], imported: bool) -> File {
    File {
        path: PathBuf::from(path),
        package: package
            .split('.')
            .filter(|p| !p.is_empty())
            .map(s)
            .collect(),
        docs: lines(docs),
        imports: vec![],
        messages: vec![],
        enums: vec![],
        services: vec![],
        imported,
    }
}

#[allow(clippy::too_many_arguments)]
fn method(
    pkg: &str,
    service: &str,
    name: &str,
    docs: &[&str],
    req: TypeRef,
    resp: Option<TypeRef>,
    raises: Option<TypeRef>,
    idempotent: bool,
    protocol: Protocol,
    timeout_ms: Option<u64>,
    retries: Option<u32>,
    style: Style,
) -> Method {
    Method {
        name: s(name),
        docs: lines(docs),
        id: method_id(pkg, service, name),
        request: req,
        oneway: resp.is_none(),
        response: resp,
        raises,
        idempotent,
        protocol,
        timeout_ms,
        retries,
        style,
    }
}

/// `common.idl` (package `common.v1`), as an import.
pub(crate) fn common_file(path: &str) -> File {
    let mut f = file(
        path,
        "common.v1",
        &["Types shared by several packages."],
        true,
    );
    f.messages.push(msg(
        "Label",
        &["A key and a value."],
        vec![
            field("key", 1, FieldKind::Single(Type::Scalar(Scalar::String))),
            field("value", 2, FieldKind::Single(Type::Scalar(Scalar::String))),
        ],
    ));
    f.enums.push(en(
        "Severity",
        &["How bad something is."],
        &[
            ("SEVERITY_UNSPECIFIED", 0),
            ("SEVERITY_INFO", 1),
            ("SEVERITY_WARN", 2),
        ],
    ));
    f
}

/// The demo `clock.idl` of the issue (package `demo.v1`) and its import.
pub(crate) fn clock_model() -> Model {
    let p = "demo.v1";
    let mut f = file("idl/clock.idl", p, &["Time as a remote service."], false);
    f.imports.push(PathBuf::from("idl/common.idl"));
    let mut reading = msg(
        "TimeReading",
        &["One reading of the server's clock."],
        vec![
            field(
                "server_receive_ns",
                1,
                FieldKind::Single(Type::Scalar(Scalar::Int64)),
            ),
            field(
                "server_transmit_ns",
                2,
                FieldKind::Single(Type::Scalar(Scalar::Int64)),
            ),
            field("zone", 3, FieldKind::Optional(Type::Scalar(Scalar::String))),
            field(
                "samples",
                4,
                FieldKind::Repeated(Type::Scalar(Scalar::Uint32)),
            ),
            field(
                "offsets",
                5,
                FieldKind::Map(Scalar::String, Type::Scalar(Scalar::Int64)),
            ),
            field("mode", 8, FieldKind::Single(Type::Enum(tr(p, "Mode")))),
        ],
    );
    reading.oneofs.push(Oneof {
        name: s("source"),
        docs: vec![],
        fields: vec![
            OneofField {
                name: s("ntp"),
                docs: vec![],
                tag: 6,
                ty: Type::Scalar(Scalar::String),
            },
            OneofField {
                name: s("local"),
                docs: vec![],
                tag: 7,
                ty: Type::Scalar(Scalar::Bool),
            },
        ],
    });
    reading.reserved_ranges = vec![(9, 9), (12, 15)];
    reading.reserved_names = vec![s("legacy")];
    f.messages.push(reading);
    f.messages.push(msg("Empty", &[], vec![]));
    f.messages.push(msg(
        "Offset",
        &[],
        vec![field(
            "delta_ns",
            1,
            FieldKind::Single(Type::Scalar(Scalar::Sint64)),
        )],
    ));
    f.messages.push(msg(
        "NotSynchronised",
        &[],
        vec![field(
            "reason",
            1,
            FieldKind::Single(Type::Scalar(Scalar::String)),
        )],
    ));
    f.enums.push(en(
        "Mode",
        &[],
        &[("MODE_UNSPECIFIED", 0), ("SLEW", 1), ("STEP", 2)],
    ));
    let reading = || Some(tr(p, "TimeReading"));
    f.services.push(Service {
        name: s("Clock"),
        docs: vec![],
        methods: vec![
            method(
                p,
                "Clock",
                "GetTime",
                &["Safe to retry: at-least-once, no reply history needed."],
                tr(p, "Empty"),
                reading(),
                None,
                true,
                Protocol::RR,
                Some(250),
                None,
                Style::Sync,
            ),
            method(
                p,
                "Clock",
                "Adjust",
                &["Runs at most once; replies acknowledged (RRA)."],
                tr(p, "Offset"),
                reading(),
                Some(tr(p, "NotSynchronised")),
                false,
                Protocol::RRA,
                None,
                Some(5),
                Style::Sync,
            ),
            method(
                p,
                "Clock",
                "Hint",
                &["No reply at all (R protocol)."],
                tr(p, "Offset"),
                None,
                None,
                false,
                Protocol::R,
                None,
                None,
                Style::OneWay,
            ),
            method(
                p,
                "Clock",
                "Resync",
                &["Server acknowledges on receipt; caller collects the result later."],
                tr(p, "Empty"),
                reading(),
                None,
                false,
                Protocol::RR,
                None,
                None,
                Style::Deferred,
            ),
        ],
    });
    Model {
        files: vec![f, common_file("idl/common.idl")],
    }
}

/// `kitchen.idl` (package `kitchen.v1`): every field kind, recursion,
/// keywords, references into `common.v1`.
pub(crate) fn kitchen_model() -> Model {
    use FieldKind::*;
    use Scalar::*;
    let p = "kitchen.v1";
    let sc = |x: Scalar| Type::Scalar(x);
    let sev = || Type::Enum(tr("common.v1", "Severity"));
    let label = || Type::Message(tr("common.v1", "Label"));
    let mut f = file(
        "idl/kitchen.idl",
        p,
        &["Every kind of field, recursion, keywords and references across packages."],
        false,
    );
    f.imports.push(PathBuf::from("idl/common.idl"));
    let names = [
        ("d", Double),
        ("f", Float),
        ("i32", Int32),
        ("i64", Int64),
        ("u32", Uint32),
        ("u64", Uint64),
        ("s32", Sint32),
        ("s64", Sint64),
        ("fx32", Fixed32),
        ("fx64", Fixed64),
        ("sf32", Sfixed32),
        ("sf64", Sfixed64),
        ("b", Bool),
        ("s", String),
        ("by", Bytes),
    ];
    f.messages.push(msg(
        "Scalars",
        &["Every proto3 scalar."],
        names
            .iter()
            .enumerate()
            .map(|(i, (n, t))| field(n, i as u32 + 1, Single(sc(*t))))
            .collect(),
    ));
    f.messages.push(msg(
        "Wrappers",
        &["Presence, repetition and maps."],
        vec![
            field("maybe", 1, Optional(sc(Int32))),
            field("name", 2, Optional(sc(String))),
            field("blob", 3, Optional(sc(Bytes))),
            field("sev", 4, Optional(sev())),
            field("sc", 5, Optional(Type::Message(tr(p, "Scalars")))),
            field("ds", 6, Repeated(sc(Double))),
            field("names", 7, Repeated(sc(String))),
            field("blobs", 8, Repeated(sc(Bytes))),
            field("sevs", 9, Repeated(sev())),
            field("labels", 10, Repeated(label())),
            field("mb", 11, Map(String, sc(Bytes))),
            field("ml", 12, Map(Int32, label())),
            field("me", 13, Map(Uint64, sev())),
            field("mbs", 14, Map(Bool, sc(String))),
        ],
    ));
    let node = || Type::Message(tr(p, "Node"));
    let mut n = msg(
        "Node",
        &["A tree: recursive through an optional field and a oneof."],
        vec![
            Field {
                name: s("type"),
                docs: lines(&["A keyword as a field name."]),
                tag: 1,
                kind: Single(sc(String)),
            },
            field("parent", 2, Optional(node())),
            field("children", 3, Repeated(node())),
        ],
    );
    n.oneofs.push(Oneof {
        name: s("value"),
        docs: vec![],
        fields: vec![
            OneofField {
                name: s("number"),
                docs: vec![],
                tag: 4,
                ty: sc(Int64),
            },
            OneofField {
                name: s("link"),
                docs: vec![],
                tag: 5,
                ty: node(),
            },
            OneofField {
                name: s("raw"),
                docs: vec![],
                tag: 6,
                ty: sc(Bytes),
            },
            OneofField {
                name: s("sev"),
                docs: vec![],
                tag: 7,
                ty: sev(),
            },
        ],
    });
    f.messages.push(n);
    f.services.push(Service {
        name: s("Tree"),
        docs: lines(&["Walks trees."]),
        methods: vec![
            method(
                p,
                "Tree",
                "Walk",
                &["Accepted at once, result dropped."],
                tr(p, "Node"),
                Some(tr(p, "Node")),
                None,
                false,
                Protocol::RR,
                None,
                None,
                Style::Async,
            ),
            method(
                p,
                "Tree",
                "Type",
                &["A keyword as a method name."],
                tr(p, "Scalars"),
                Some(tr(p, "Wrappers")),
                Some(tr("common.v1", "Label")),
                true,
                Protocol::RR,
                Some(2000),
                None,
                Style::Sync,
            ),
            method(
                p,
                "Tree",
                "Poke",
                &["Fire and forget."],
                tr(p, "Scalars"),
                None,
                None,
                false,
                Protocol::R,
                None,
                None,
                Style::OneWay,
            ),
        ],
    });
    Model {
        files: vec![f, common_file("idl/common.idl")],
    }
}
