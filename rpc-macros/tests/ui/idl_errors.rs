// The path is relative to the crate trybuild builds these files in
// (target/tests/trybuild/rpc-macros), i.e. this file's
// ../idl/invalid/two_errors.idl.
rpc_core::idl!("../../../../rpc-macros/tests/idl/invalid/two_errors.idl");

fn main() {}
