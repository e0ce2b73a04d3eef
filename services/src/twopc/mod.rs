//! Two-phase commit (`idl/twopc.idl`, package `twopc.v1`): a coordinator
//! runs a transaction across named participants so that all of them apply
//! their part or none does, through crashes of any party.
//!
//! - [`log`]: the append-only log of each party (one framed, checksummed
//!   record per vote or decision, flushed with fsync before it is sent); a
//!   torn tail is cut off and reported, corruption in the middle refuses
//!   to start.
//! - [`participant`]: [`ParticipantServer`], a small durable key-value
//!   state whose prepared transactions reserve their keys; a participant
//!   that voted yes waits for the outcome and asks the coordinator
//!   (`GetOutcome`) until it learns it, and never decides alone.
//! - [`coordinator`]: [`CoordinatorServer`], `Begin`/`Submit` for clients,
//!   `GetOutcome` for participants; recovery from its log with presumed
//!   abort.
//! - [`faults`]: fault injection points (crash or hold at a point of a
//!   transaction), a testing aid.
//!
//! # Call semantics
//!
//! `Prepare`, `Commit`, `Abort` and `GetOutcome` are declared idempotent
//! (at-least-once: retransmitted, no reply history): each party answers a
//! duplicate from its log, so a second execution gives the same answer and
//! changes nothing, and that holds across restarts, where the framework's
//! at-most-once history (lost with the process) would instead answer
//! "outcome unknown" and leave the retry to the caller anyway. `Submit` is
//! at most once (RRA): within a coordinator run the reply history answers
//! a retransmission; across runs a `Submit` of a transaction id that the
//! log knows answers its outcome instead of running it again.
//!
//! The `twopc-node` binary serves either role.

pub mod coordinator;
pub mod faults;
pub mod log;
pub mod participant;

pub use coordinator::{CoordinatorConfig, CoordinatorServer, CoordinatorState};
pub use faults::{FaultAction, FaultPoint, Faults};
pub use log::{LogError, TornTail};
pub use participant::{ParticipantServer, ParticipantState};

use crate::proto::twopc::v1::{
    CoordinatorServer as CoordinatorSkeleton, ParticipantServer as ParticipantSkeleton,
};
use rpc_core::server::{Server, ServerError, ServerHandle};
use std::time::Duration;

/// How often a participant asks about a transaction it prepared and has
/// not heard the outcome of.
pub const ASK_EVERY: Duration = Duration::from_millis(200);

/// Serves `participant` on UDP at `addr` and starts its resolver (asking
/// every `ask_every`).
///
/// # Errors
/// The server's, when the address cannot be bound.
pub async fn serve_participant(
    participant: ParticipantServer,
    addr: &str,
    ask_every: Duration,
) -> Result<ServerHandle, ServerError> {
    tokio::spawn(participant.clone().run_resolver(ask_every));
    Server::builder()
        .add_service(ParticipantSkeleton::new(participant))
        .serve_udp(addr)
        .await
}

/// Serves `coordinator` on UDP at `addr`, tells it its address, and starts
/// sending the decisions its log has not seen acknowledged.
///
/// # Errors
/// The server's, when the address cannot be bound.
pub async fn serve_coordinator(
    coordinator: CoordinatorServer,
    addr: &str,
) -> Result<ServerHandle, ServerError> {
    let server = Server::builder()
        .add_service(CoordinatorSkeleton::new(coordinator.clone()))
        .serve_udp(addr)
        .await?;
    // A Submit in the moment before this is refused (UNAVAILABLE, "not
    // ready"): its prepares would name no coordinator to ask.
    coordinator.set_address(server.local_addr());
    coordinator.run_recovery();
    Ok(server)
}
