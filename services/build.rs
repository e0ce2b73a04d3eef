//! Compiles the services' interfaces from `idl/` into `OUT_DIR`.

fn main() {
    if let Err(e) = rpc_codegen::Builder::new().compile(&[
        "../idl/demo.idl",
        "../idl/clock.idl",
        "../idl/mutex.idl",
        "../idl/consensus.idl",
        "../idl/dmutex.idl",
        "../idl/twopc.idl",
    ]) {
        // `Debug` of the error is the rendered diagnostics (file:line:column).
        panic!("{e:?}");
    }
}
