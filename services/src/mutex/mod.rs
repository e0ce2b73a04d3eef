//! The lock service (`idl/mutex.idl`, package `mutex.v1`): named locks
//! that stay safe when holders crash or pause.
//!
//! - [`table`]: the lock table as a state machine without I/O (holders,
//!   leases on the server's monotonic clock, FIFO queues, fencing tokens).
//! - [`epoch`]: the epoch persisted once per start, the high half of every
//!   token, so tokens keep increasing across restarts without a disk flush
//!   per grant.
//! - [`server`]: [`LockServer`], the `Locks` service over the table:
//!   waiting acquires park until granted, their wait ends, or their call is
//!   cancelled; a reaper frees expired leases. [`serve`] puts it on a UDP
//!   door with `Acquire` in a pool of handler slots of its own.
//! - [`client`]: [`LockClient`] and [`LockGuard`]: `lock("name")`, renewal
//!   while held, release on drop.
//! - [`resource`]: [`ResourceService`], a value that refuses stale tokens.
//!
//! The `lock-server` binary serves it (UDP, and with `--tcp`/`--tls`/
//! `--grpc` the same table on those doors too); `lock-holder` is a client process for
//! the tests (takes a lock, writes to a resource, and can be killed or
//! paused while it holds it).

pub mod client;
pub mod epoch;
pub mod resource;
pub mod server;
pub mod table;

pub use client::{LockClient, LockClientError, LockGuard};
pub use resource::ResourceService;
pub use server::{LockServer, LockServerConfig};

use crate::proto::mutex::v1::{LocksServer, ResourceServer};
use rpc_core::server::{Server, ServerError, ServerHandle};
use std::sync::Arc;

/// Handler slots for waiting acquires (their own pool, so that waiters do
/// not take the slots of releases and renewals).
pub const ACQUIRE_SLOTS: usize = 4096;

/// Serves `locks` on UDP at `addr`, with `Acquire` in a pool of
/// [`ACQUIRE_SLOTS`] handler slots, and starts its lease reaper. More doors
/// (`serve_tcp`, `serve_grpc`) can be added on the handle.
///
/// # Errors
/// The server's, when the address cannot be bound.
pub async fn serve(locks: LockServer, addr: &str) -> Result<ServerHandle, ServerError> {
    tokio::spawn(locks.clone().run_reaper());
    Server::builder()
        .method_concurrency("mutex.v1.Locks", "Acquire", ACQUIRE_SLOTS)
        .add_service(LocksServer::new(locks))
        .serve_udp(addr)
        .await
}

/// Serves `resource` on UDP at `addr`.
///
/// # Errors
/// The server's, when the address cannot be bound.
pub async fn serve_resource(
    resource: Arc<ResourceService>,
    addr: &str,
) -> Result<ServerHandle, ServerError> {
    Server::builder()
        .add_service(ResourceServer::from_arc(resource))
        .serve_udp(addr)
        .await
}
