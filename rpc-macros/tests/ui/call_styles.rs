// Call styles are types: a deferred method yields a handle, not the reply,
// and a one-way call cannot be turned into one that waits.
mod pb {
    rpc_core::idl!("../../../../rpc-macros/tests/idl/clock.idl");
}

use pb::demo::v1::{ClockClient, Empty, Offset, TimeReading};

async fn misuse(c: ClockClient) {
    let _reading: TimeReading = c.resync(Empty {}).await.unwrap();
    let _ = c.hint(Offset { delta_ns: 1 }).deferred();
}

fn main() {
    let _ = misuse;
}
