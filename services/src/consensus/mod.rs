//! The consensus service (`idl/consensus.idl`, package `consensus.v1`): a
//! replicated, durable, linearizable key-value store on openraft, with
//! this framework as Raft's network.
//!
//! - [`kv`]: the key-value state machine without I/O (the map, and each
//!   client's last write so that a retried write is applied once).
//! - [`store`]: the node's `redb` file and openraft's log storage over it
//!   (log, vote, committed log id, snapshot; fsync before acknowledging).
//! - [`state_machine`]: openraft's state machine: the [`kv::Kv`] in
//!   memory, durable as snapshots plus the log.
//! - [`network`]: openraft's network over the generated `RaftClient`
//!   (deadline from openraft's TTL, errors mapped to openraft's).
//! - [`node`]: [`ConsensusNode`]: a node (openraft's `Raft` over the
//!   above) that serves the `Raft` service to its peers and the `KeyValue`
//!   service to clients.
//! - [`client`]: [`KvClient`]: a client that follows `NotLeader` to the
//!   leader and retries a write with the same id until it has an answer.
//!
//! The `raft-node` binary runs one node.

pub mod client;
pub mod kv;
pub mod network;
pub mod node;
mod service;
pub mod state_machine;
pub mod store;

pub use client::{KvClient, KvClientError};
pub use node::{ConsensusNode, NodeConfig, NodeError, DEFAULT_CLUSTER};

use serde::{Deserialize, Serialize};
// The snapshot data type of `declare_raft_types!` (its default, unqualified).
use std::io::Cursor;

/// What a state machine answers to one applied log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// What the entry's command did.
    pub outcome: kv::Outcome,
}

openraft::declare_raft_types!(
    /// openraft's types for this service: log entries carry
    /// [`kv::Command`]s, node ids are `u64`, a node is its address.
    pub TypeConfig:
        D = kv::Command,
        R = Response,
);

/// A log entry.
pub type RaftEntry = openraft::Entry<TypeConfig>;

/// openraft's `Raft` of this service.
pub type Raft = openraft::Raft<TypeConfig>;
