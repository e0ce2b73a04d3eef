//! Build script of the benchmark package.
//!
//! Generates the plain tonic echo service the benchmark (`src/main.rs`)
//! measures as its gRPC baseline, with `tonic_build::manual` (no protoc):
//! the message is a hand-written prost struct (`crate::EchoMsg` in the bench
//! binary), the codec `tonic_prost::ProstCodec`. The output is
//! `$OUT_DIR/bench.Echo.rs`.

fn tonic_bench_echo() {
    let echo = tonic_build::manual::Service::builder()
        .name("Echo")
        .package("bench")
        .comment("Echo service of the benchmark's plain-tonic baseline.")
        .method(
            tonic_build::manual::Method::builder()
                .name("echo")
                .route_name("Echo")
                .comment("Returns the request unchanged.")
                .input_type("crate::EchoMsg")
                .output_type("crate::EchoMsg")
                .codec_path("tonic_prost::ProstCodec")
                .build(),
        )
        .build();
    tonic_build::manual::Builder::new().compile(&[echo]);
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    tonic_bench_echo();
}
