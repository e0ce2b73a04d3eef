//! Compiles a large generated IDL (200 messages, 50 services x 20 methods)
//! through the whole pipeline: `load_source` (lex, parse, resolve, check)
//! -> `rust::generate` (quote, syn, prettyplease) -> `proto::generate`.
//!
//! `cargo bench -p rpc-codegen --bench compile`; besides criterion's
//! report, prints the time per method of the full pipeline.
#![allow(missing_docs, clippy::print_stdout, clippy::unwrap_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

const MESSAGES: usize = 200;
const SERVICES: usize = 50;
const METHODS: usize = 20;

/// A large, valid IDL: messages with every kind of field, an enum, and
/// services whose methods use varied attributes.
fn large_idl() -> String {
    let mut s = String::from("/// A large generated interface.\npackage bench.v1;\n\n");
    s.push_str(
        "/// A state.\nenum State { STATE_UNSPECIFIED = 0; STATE_ON = 1; STATE_OFF = 2; }\n\n",
    );
    for i in 0..MESSAGES {
        let prev = if i == 0 { MESSAGES - 1 } else { i - 1 };
        let _ = write!(
            s,
            "/// Message number {i}.\nmessage M{i} {{\n  int64 id = 1;\n  string name = 2;\n  optional bytes blob = 3;\n  \
             repeated uint32 samples = 4;\n  map<string, int64> counters = 5;\n  State state = 6;\n  M{prev} previous = 7;\n  \
             oneof choice {{ string text = 8; double number = 9; }}\n  reserved 10 to 12;\n}}\n\n"
        );
    }
    for svc in 0..SERVICES {
        let _ = writeln!(s, "/// Service number {svc}.\nservice S{svc} {{");
        for m in 0..METHODS {
            let req = (svc * METHODS + m) % MESSAGES;
            let resp = (req + 1) % MESSAGES;
            let err = (req + 2) % MESSAGES;
            let line = match m % 5 {
                0 => format!("  rpc Get{m}(M{req}) returns (M{resp}) [idempotent, timeout = 250ms];"),
                1 => format!("  rpc Put{m}(M{req}) returns (M{resp}) raises (M{err}) [protocol = RRA, retries = 5];"),
                2 => format!("  oneway rpc Note{m}(M{req});"),
                3 => format!("  rpc Later{m}(M{req}) returns (M{resp}) [style = deferred];"),
                _ => format!("  rpc Fire{m}(M{req}) returns (M{resp}) [style = async, timeout = 2s];"),
            };
            let _ = writeln!(s, "  /// Method {m}.\n{line}");
        }
        s.push_str("}\n\n");
    }
    s
}

fn compile(source: &str) -> usize {
    let model = match rpc_codegen::load_source(Path::new("bench.idl"), source) {
        Ok(m) => m,
        Err(d) => panic!("the generated IDL is invalid:\n{}", d.render()),
    };
    let rust = rpc_codegen::rust::generate(&model);
    let protos = rpc_codegen::proto::generate(&model);
    rust.len() + protos.len()
}

fn bench(c: &mut Criterion) {
    let source = large_idl();
    let methods = SERVICES * METHODS;

    // One timed pass outside criterion for the per-method figure.
    let runs = 10;
    let start = Instant::now();
    for _ in 0..runs {
        black_box(compile(black_box(&source)));
    }
    let per_run = start.elapsed() / runs;
    println!(
        "full pipeline: {:.1} ms per run of {MESSAGES} messages and {methods} methods = {:.1} us per method",
        per_run.as_secs_f64() * 1e3,
        per_run.as_secs_f64() * 1e6 / methods as f64
    );

    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    g.bench_function("large_idl_load_rust_proto", |b| {
        b.iter(|| compile(black_box(&source)))
    });
    let model = rpc_codegen::load_source(Path::new("bench.idl"), &source).unwrap();
    g.bench_function("load_only", |b| {
        b.iter(|| rpc_codegen::load_source(Path::new("bench.idl"), black_box(&source)))
    });
    g.bench_function("rust_tokens_only", |b| {
        b.iter(|| rpc_codegen::rust::tokens(black_box(&model)))
    });
    g.bench_function("rust_generate_only", |b| {
        b.iter(|| rpc_codegen::rust::generate(black_box(&model)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
