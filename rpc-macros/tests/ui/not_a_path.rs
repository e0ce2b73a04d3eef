rpc_core::idl!(clock);

fn main() {}
