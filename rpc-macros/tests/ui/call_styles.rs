// Call styles are types: a deferred method yields a handle, not the reply,
// a one-way call cannot be turned into one that waits, and a group call
// has no deferred style.
mod pb {
    rpc_core::idl!("../../../../rpc-macros/tests/idl/clock.idl");
}

use pb::demo::v1::{ClockClient, ClockGroupClient, Empty, Offset, TimeReading};

async fn misuse(c: ClockClient) {
    let _reading: TimeReading = c.resync(Empty {}).await.unwrap();
    let _ = c.hint(Offset { delta_ns: 1 }).deferred();
}

fn group_misuse(g: ClockGroupClient) {
    let _ = g.resync(Empty {}).deferred();
}

fn main() {
    let _ = misuse;
    let _ = group_misuse;
}
