//! The clock service (`idl/clock.idl`, package `clock.v1`): physical time
//! synchronisation and logical clocks.
//!
//! - [`time_source`]: the disciplined clock of a process ([`TimeSource`]),
//!   with injected skew for tests; steps only at the start, then slews,
//!   never goes backwards;
//! - [`sync`]: Cristian/NTP client synchronisation, sans I/O: samples, the
//!   minimum-delay filter, an offset with an error interval
//!   ([`SyncFilter`]); [`sync_once`] takes one sample over the network;
//! - [`berkeley`]: the Berkeley master's arithmetic (each member's least
//!   delayed of several polls, round-trip compensation, outliers, the
//!   mean, each member's adjustment) and the member's once-per-round
//!   guard, sans I/O;
//! - [`logical`]: Lamport, vector and hybrid logical clocks and their
//!   metadata encoding;
//! - [`node`]: [`ClockNode`], the service of one process and its part in a
//!   group (rounds as master, elections through [`crate::election`]).

pub mod berkeley;
pub mod logical;
pub mod node;
pub mod sync;
pub mod time_source;

pub use berkeley::MAX_POLLS;
pub use node::{ClockNode, ClockService, Misbehaviour, NodeConfig, RoundReport};
pub use sync::{Estimate, Sample, SyncFilter};
pub use time_source::{Monotonic, Skew, SystemClock, TimeSource, TimeSourceConfig};

use crate::proto::clock::v1 as pb;
use rpc_core::CallError;

/// Takes one sample of `server`'s clock: T1 and T4 from `local`'s physical
/// clock, one attempt (`retries(0)`: a retransmitted copy's reply could
/// not be matched to its send time).
///
/// # Errors
/// When the call fails; a reply that does not echo T1 is
/// `INVALID_ARGUMENT`.
pub async fn sync_once(
    server: &pb::ClockClient,
    local: &TimeSource,
    timeout: std::time::Duration,
) -> Result<Sample, CallError<rpc_core::Never>> {
    let t1 = local.physical_ns();
    let reading = server
        .get_time(pb::TimeRequest {
            client_transmit_ns: t1,
        })
        .retries(0)
        .timeout(timeout)
        .await?;
    let t4 = local.physical_ns();
    if reading.origin_ns != t1 {
        return Err(CallError::from_status(rpc_core::Status::invalid_argument(
            format!("reply echoes T1 {} instead of {t1}", reading.origin_ns),
        )));
    }
    Ok(Sample {
        t1,
        t2: reading.receive_ns,
        t3: reading.transmit_ns,
        t4,
        server_error_ns: reading.error_bound_ns,
    })
}
