rpc_core::idl!("idl/does_not_exist.idl");

fn main() {}
