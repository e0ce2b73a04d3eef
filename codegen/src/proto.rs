//! The `.proto` back end: one proto3 file per `.idl` file.
//!
//! Names: every `.proto` is named like its `.idl`, with the extension
//! changed, relative to the deepest directory that contains every file of
//! the model (for one root, normally the root's directory): loading
//! `idl/clock.idl`, which imports `rpc/envelope.idl`, gives `clock.proto`
//! and `rpc/envelope.proto`. Imports are written with those names, so
//! `protoc -I <output dir>` compiles the set.
//!
//! Content: `syntax = "proto3";`, the package, the imports, the doc
//! comments as `//` comments, messages (plain fields, then oneofs, then
//! reserved), enums and services. Each rpc keeps its semantics as comments:
//! the effective attributes (`// [idempotent, protocol = RR, style = sync,
//! timeout = 250ms]`), `// raises demo.v1.NotSynchronised` and
//! `// method id 0x1234abcd`. A `oneway` method returns
//! `google.protobuf.Empty` (the file then imports
//! `google/protobuf/empty.proto`). Types of another package are written
//! fully qualified with a leading dot, so protoc's relative name lookup can
//! never pick a wrong symbol.

use crate::model::{self, FieldKind, Model, Protocol, Style, Type, TypeRef};
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

/// One generated `.proto` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoFile {
    /// File name relative to the output directory, e.g. `clock.proto`.
    pub name: PathBuf,
    /// Its text.
    pub contents: String,
}

/// One `.proto` per `.idl` file of `model`, in the model's file order.
pub fn generate(model: &Model) -> Vec<ProtoFile> {
    let names = proto_names(model);
    model
        .files
        .iter()
        .zip(&names)
        .map(|(file, name)| ProtoFile {
            name: name.clone(),
            contents: file_text(model, &names, file),
        })
        .collect()
}

fn normal_parts(path: &Path) -> Vec<String> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect()
}

/// The `.proto` name of each file of `model`, in order.
pub fn proto_names(model: &Model) -> Vec<PathBuf> {
    let dirs: Vec<Vec<Component<'_>>> = model
        .files
        .iter()
        .map(|f| {
            f.path
                .parent()
                .map(|p| p.components().collect())
                .unwrap_or_default()
        })
        .collect();
    let mut common = dirs.first().cloned().unwrap_or_default();
    for d in &dirs {
        let same = common.iter().zip(d).take_while(|(a, b)| a == b).count();
        common.truncate(same);
    }
    model
        .files
        .iter()
        .map(|f| {
            let rel: PathBuf = f.path.components().skip(common.len()).collect();
            let mut parts = normal_parts(&rel);
            if parts.is_empty() {
                parts.push("file".to_owned());
            }
            let mut name: PathBuf = parts.iter().collect();
            name.set_extension("proto");
            name
        })
        .collect()
}

fn comment(out: &mut String, indent: &str, lines: &[String]) {
    for line in lines {
        if line.is_empty() {
            let _ = writeln!(out, "{indent}//");
        } else {
            let _ = writeln!(out, "{indent}// {line}");
        }
    }
}

/// The name of `t` as written in a file of package `here`.
fn type_name(here: &[String], t: &TypeRef) -> String {
    if t.package == here {
        t.name.clone()
    } else {
        format!(".{}", t.full_name())
    }
}

fn field_type(here: &[String], t: &Type) -> String {
    match t {
        Type::Scalar(s) => s.keyword().to_owned(),
        Type::Message(r) | Type::Enum(r) => type_name(here, r),
    }
}

fn attributes(m: &model::Method) -> String {
    let mut parts = Vec::new();
    if m.oneway {
        parts.push("oneway".to_owned());
    }
    if m.idempotent {
        parts.push("idempotent".to_owned());
    }
    let protocol = match m.protocol {
        Protocol::R => "R",
        Protocol::RR => "RR",
        Protocol::RRA => "RRA",
    };
    parts.push(format!("protocol = {protocol}"));
    match m.style {
        Style::Sync => parts.push("style = sync".to_owned()),
        Style::Async => parts.push("style = async".to_owned()),
        Style::Deferred => parts.push("style = deferred".to_owned()),
        Style::OneWay => {}
    }
    if let Some(t) = m.timeout_ms {
        parts.push(format!("timeout = {t}ms"));
    }
    if let Some(r) = m.retries {
        parts.push(format!("retries = {r}"));
    }
    format!("[{}]", parts.join(", "))
}

fn file_text(model: &Model, names: &[PathBuf], file: &model::File) -> String {
    let here = &file.package;
    let mut out = String::new();
    let source_name = file.path.file_name().map_or_else(
        || file.path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let _ = writeln!(
        out,
        "// Generated from {source_name} by rpcgen. DO NOT EDIT."
    );
    if !file.docs.is_empty() {
        out.push_str("//\n");
        comment(&mut out, "", &file.docs);
    }
    out.push_str("\nsyntax = \"proto3\";\n");
    if !here.is_empty() {
        let _ = writeln!(out, "\npackage {};", here.join("."));
    }
    let mut imports: Vec<String> = file
        .imports
        .iter()
        .filter_map(|p| model.files.iter().position(|f| &f.path == p))
        .filter_map(|i| names.get(i))
        .map(|n| n.to_string_lossy().replace('\\', "/"))
        .collect();
    let needs_empty = file
        .services
        .iter()
        .any(|s| s.methods.iter().any(|m| m.oneway));
    if needs_empty {
        imports.push("google/protobuf/empty.proto".to_owned());
    }
    if !imports.is_empty() {
        out.push('\n');
        for i in &imports {
            let _ = writeln!(out, "import \"{i}\";");
        }
    }
    for m in &file.messages {
        out.push('\n');
        comment(&mut out, "", &m.docs);
        if m.fields.is_empty()
            && m.oneofs.is_empty()
            && m.reserved_ranges.is_empty()
            && m.reserved_names.is_empty()
        {
            let _ = writeln!(out, "message {} {{}}", m.name);
            continue;
        }
        let _ = writeln!(out, "message {} {{", m.name);
        for f in &m.fields {
            comment(&mut out, "  ", &f.docs);
            let ty = match &f.kind {
                FieldKind::Single(t) => field_type(here, t),
                FieldKind::Optional(t) => format!("optional {}", field_type(here, t)),
                FieldKind::Repeated(t) => format!("repeated {}", field_type(here, t)),
                FieldKind::Map(k, v) => format!("map<{}, {}>", k.keyword(), field_type(here, v)),
            };
            let _ = writeln!(out, "  {ty} {} = {};", f.name, f.tag);
        }
        for o in &m.oneofs {
            comment(&mut out, "  ", &o.docs);
            let _ = writeln!(out, "  oneof {} {{", o.name);
            for f in &o.fields {
                comment(&mut out, "    ", &f.docs);
                let _ = writeln!(
                    out,
                    "    {} {} = {};",
                    field_type(here, &f.ty),
                    f.name,
                    f.tag
                );
            }
            out.push_str("  }\n");
        }
        if !m.reserved_ranges.is_empty() {
            let ranges: Vec<String> = m
                .reserved_ranges
                .iter()
                .map(|&(a, b)| match (a, b) {
                    (a, b) if a == b => a.to_string(),
                    (a, crate::resolve::MAX_FIELD_NUMBER) => format!("{a} to max"),
                    (a, b) => format!("{a} to {b}"),
                })
                .collect();
            let _ = writeln!(out, "  reserved {};", ranges.join(", "));
        }
        if !m.reserved_names.is_empty() {
            let names: Vec<String> = m
                .reserved_names
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect();
            let _ = writeln!(out, "  reserved {};", names.join(", "));
        }
        out.push_str("}\n");
    }
    for e in &file.enums {
        out.push('\n');
        comment(&mut out, "", &e.docs);
        let _ = writeln!(out, "enum {} {{", e.name);
        for v in &e.values {
            comment(&mut out, "  ", &v.docs);
            let _ = writeln!(out, "  {} = {};", v.name, v.number);
        }
        out.push_str("}\n");
    }
    // `google.protobuf.Empty` is found by protoc's relative lookup unless
    // this package has a `google` part below its root.
    let empty = if here.iter().skip(1).any(|p| p == "google") {
        ".google.protobuf.Empty"
    } else {
        "google.protobuf.Empty"
    };
    for s in &file.services {
        out.push('\n');
        comment(&mut out, "", &s.docs);
        if s.methods.is_empty() {
            let _ = writeln!(out, "service {} {{}}", s.name);
            continue;
        }
        let _ = writeln!(out, "service {} {{", s.name);
        for (i, m) in s.methods.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            comment(&mut out, "  ", &m.docs);
            let _ = writeln!(out, "  // {}", attributes(m));
            if let Some(r) = &m.raises {
                let _ = writeln!(out, "  // raises {}", r.full_name());
            }
            let _ = writeln!(out, "  // method id {:#010x}", m.id);
            let reply = match &m.response {
                Some(r) => type_name(here, r),
                None => empty.to_owned(),
            };
            let _ = writeln!(
                out,
                "  rpc {}({}) returns ({});",
                m.name,
                type_name(here, &m.request),
                reply
            );
        }
        out.push_str("}\n");
    }
    out
}
