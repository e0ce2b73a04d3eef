//! [`ConsensusNode`]: one node of the store. It opens its data directory,
//! runs openraft over it, and serves two services on one UDP door (and a
//! TCP door on the same port): `Raft` for its peers and `KeyValue` for
//! clients.
//!
//! Writes go through `Raft::client_write` (answered once applied on the
//! leader), grouped: openraft (0.9) appends and flushes each
//! `client_write` on its own, one after another, so the node's batcher
//! puts the writes that arrive while earlier ones are under way into one
//! log entry ([`Command::Batch`](super::kv::Command::Batch)), applied in order, each write keeping its
//! client id and sequence number (and answered with the entry's index); reads through `Raft::ensure_linearizable` (the leader confirms
//! its leadership with a quorum and waits until it has applied up to its
//! commit index), then read the local state machine. A node that is not the
//! leader raises `NOT_LEADER` with the leader it knows.

use super::network::{Network, SNAPSHOT_CHUNK};
use super::service::{batcher, Service};
use super::state_machine::{SharedState, StateMachine};
use super::store::{self, LogStore, Store, StoreError};
use super::Raft;
use crate::proto::consensus::v1::{KeyValueServer, RaftServer};
use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, Config, SnapshotPolicy};
use rpc_core::server::{Server, ServerError, ServerHandle};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How a node runs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id (not 0), unique in its cluster.
    pub id: u64,
    /// Where its store lives.
    pub data_dir: PathBuf,
    /// How often the leader sends heartbeats.
    pub heartbeat: Duration,
    /// The range of the election timeout. openraft (0.9) draws one
    /// timeout `t` in it per process, and a follower that heard its leader
    /// stands only after the leader's lease (the upper bound) plus `t` of
    /// silence; a node whose log is behind waits twice the upper bound
    /// more, and a split vote costs another `t`. Sized for a busy 2-core
    /// machine with a new leader within 3 s of the old one's death: the
    /// default 250 to 500 ms means 0.75 to 1 s of silence (15 to 20
    /// heartbeats) before an election, so a process stalled for half a
    /// second costs no leader, and a second round after a split vote or
    /// behind a candidate whose log is behind (1 s more) still ends within
    /// about 2.5 s. (With 400 to 800 ms, 20% loss and a candidate behind,
    /// elections took up to 3.6 s.)
    pub election_timeout: (Duration, Duration),
    /// A snapshot is taken after this many entries since the last one.
    pub snapshot_after: u64,
    /// Entries kept in the log behind a snapshot (openraft's default
    /// 1,000): a follower further behind catches up through the snapshot.
    pub keep_after_snapshot: u64,
    /// The cluster's name, recorded in the store on first start: a store
    /// of another cluster is refused.
    pub cluster: String,
    /// Where to send to reach a peer, instead of its address in the
    /// membership (a proxy in between, as the fault tests put). Peers not
    /// listed are reached at their membership address.
    pub routes: BTreeMap<u64, SocketAddr>,
}

impl NodeConfig {
    /// Node `id` of cluster [`DEFAULT_CLUSTER`] with its store in
    /// `data_dir`: heartbeats every 50 ms, election timeouts of 250 to
    /// 500 ms (an election after 0.75 to 1 s of silence), a snapshot every 5,000 entries, peers reached at their
    /// membership addresses.
    pub fn new(id: u64, data_dir: impl Into<PathBuf>) -> NodeConfig {
        NodeConfig {
            id,
            data_dir: data_dir.into(),
            heartbeat: Duration::from_millis(50),
            election_timeout: (Duration::from_millis(250), Duration::from_millis(500)),
            snapshot_after: 5_000,
            keep_after_snapshot: 1_000,
            cluster: DEFAULT_CLUSTER.to_owned(),
            routes: BTreeMap::new(),
        }
    }
}

/// The cluster name of a node not given one.
pub const DEFAULT_CLUSTER: &str = "consensus";

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// Node id 0 is not allowed.
    #[error("node id 0 is not allowed")]
    ZeroId,
    /// openraft refused the configuration.
    #[error("invalid raft configuration: {0}")]
    Config(String),
    /// The store could not be opened or read.
    #[error("the node's store")]
    Store(#[from] StoreError),
    /// openraft could not start over the store (it could not read it).
    #[error("raft could not start: {0}")]
    Raft(String),
    /// The address could not be served.
    #[error("cannot serve")]
    Serve(#[from] ServerError),
    /// Initializing the cluster failed.
    #[error("cannot initialize the cluster: {0}")]
    Initialize(String),
}

/// A running node: openraft and its doors. Dropping it stops serving;
/// [`ConsensusNode::shutdown`] also stops openraft.
pub struct ConsensusNode {
    id: u64,
    raft: Raft,
    state: SharedState,
    server: ServerHandle,
    addr: SocketAddr,
}

impl ConsensusNode {
    /// Opens the store in `config.data_dir`, starts openraft over it and
    /// serves on UDP and TCP at `listen` (port 0: any free port, the same
    /// for both).
    ///
    /// # Errors
    /// [`NodeError`]: the store cannot be opened or read (a corrupt file
    /// or another node's directory), the address cannot be bound.
    pub async fn start(config: NodeConfig, listen: SocketAddr) -> Result<ConsensusNode, NodeError> {
        if config.id == 0 {
            return Err(NodeError::ZeroId);
        }
        let id = config.id;
        let dir = config.data_dir.clone();
        let cluster = config.cluster.clone();
        let (store, sm) = store::blocking(move || {
            let store = Store::open(&dir, id, &cluster)?;
            let sm = StateMachine::open(store.clone())?;
            Ok((store, sm))
        })
        .await?;
        let raft_config = Config {
            cluster_name: config.cluster.clone(),
            heartbeat_interval: millis(config.heartbeat),
            election_timeout_min: millis(config.election_timeout.0),
            election_timeout_max: millis(config.election_timeout.1),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_after),
            max_in_snapshot_log_to_keep: config.keep_after_snapshot,
            snapshot_max_chunk_size: SNAPSHOT_CHUNK,
            max_payload_entries: 256,
            ..Config::default()
        }
        .validate()
        .map_err(|e| NodeError::Config(e.to_string()))?;
        let state = sm.state();
        let raft = Raft::new(
            id,
            Arc::new(raft_config),
            Network::new(id, config.routes.clone()),
            LogStore::new(store)?,
            sm,
        )
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;
        let (writes, queued) = mpsc::unbounded_channel();
        tokio::spawn(batcher(raft.clone(), queued));
        let service = Arc::new(Service {
            id,
            raft: raft.clone(),
            state: state.clone(),
            writes,
        });
        // Port 0: the UDP port the system picks may be taken for TCP (by
        // any process's connection); pick again, a bounded number of times.
        let tries = if listen.port() == 0 { 16 } else { 1 };
        let mut attempt = 0;
        let server = loop {
            attempt += 1;
            let server = Server::builder()
                .add_service(RaftServer::from_arc(Arc::clone(&service)))
                .add_service(KeyValueServer::from_arc(Arc::clone(&service)))
                .serve_udp(listen)
                .await?;
            let addr = server.local_addr();
            match server.serve_tcp(addr).await {
                Ok(_) => break server,
                Err(e) if attempt < tries => {
                    tracing::debug!(%addr, error = %e, "TCP port taken; picking another port");
                }
                Err(e) => return Err(e.into()),
            }
        };
        let addr = server.local_addr();
        Ok(ConsensusNode {
            id,
            raft,
            state,
            server,
            addr,
        })
    }

    /// Makes a new cluster of `members` (ids and addresses; this node
    /// among them). A node that already belongs to a cluster (its store
    /// has a membership) leaves it as it is and says so.
    ///
    /// # Errors
    /// [`NodeError::Initialize`].
    pub async fn initialize(&self, members: BTreeMap<u64, SocketAddr>) -> Result<bool, NodeError> {
        let nodes: BTreeMap<u64, BasicNode> = members
            .into_iter()
            .map(|(id, a)| (id, BasicNode::new(a)))
            .collect();
        match self.raft.initialize(nodes).await {
            Ok(()) => Ok(true),
            Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
                tracing::info!("already initialized: {e}");
                Ok(false)
            }
            Err(e) => Err(NodeError::Initialize(e.to_string())),
        }
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The address it serves on (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// openraft's handle.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The state machine's state.
    pub fn state(&self) -> &SharedState {
        &self.state
    }

    /// The server's handle.
    pub fn server(&self) -> &ServerHandle {
        &self.server
    }

    /// Stops openraft (the doors close when the node is dropped).
    pub async fn shutdown(self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
    }
}

impl std::fmt::Debug for ConsensusNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsensusNode")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
