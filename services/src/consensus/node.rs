//! [`ConsensusNode`]: one node of the store. It opens its data directory,
//! runs openraft over it, and serves two services on one UDP door (and a
//! TCP door on the same port): `Raft` for its peers and `KeyValue` for
//! clients.
//!
//! Writes go through `Raft::client_write` (answered once applied on the
//! leader), grouped: openraft (0.9) appends and flushes each
//! `client_write` on its own, one after another, so the node's batcher
//! puts the writes that arrive while earlier ones are under way into one
//! log entry ([`Command::Batch`]), applied in order, each write keeping its
//! client id and sequence number (and answered with the entry's index); reads through `Raft::ensure_linearizable` (the leader confirms
//! its leadership with a quorum and waits until it has applied up to its
//! commit index), then read the local state machine. A node that is not the
//! leader raises `NOT_LEADER` with the leader it knows.

use super::kv::{self, Command, Outcome, Writer};
use super::network::{Network, SNAPSHOT_CHUNK};
use super::state_machine::{SharedState, StateMachine};
use super::store::{self, LogStore, Store, StoreError};
use super::Raft;
use crate::proto::consensus::v1::{
    AddLearnerRequest, CasReply, CasRequest, ChangeMembershipRequest, DeleteReply, DeleteRequest,
    GetReply, GetRequest, KeyValue, KeyValueServer, KvError, KvErrorKind, Member, Membership,
    NodeStatus, NotLeader, PutReply, PutRequest, RaftFailure, RaftReply, RaftRequest, RaftServer,
    StatusRequest, WriteId,
};
use openraft::error::{
    CheckIsLeaderError, ClientWriteError, ForwardToLeader, InitializeError, RaftError,
};
use openraft::{BasicNode, Config, SnapshotPolicy};
use rpc_core::server::{Server, ServerError, ServerHandle, TcpServerConfig};
use rpc_core::{CallContext, Code, MethodError, Status};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};

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
            match server
                .serve_tcp_also(addr, TcpServerConfig::default())
                .await
            {
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

/// The services of one node.
struct Service {
    id: u64,
    raft: Raft,
    state: SharedState,
    /// The writes to the batcher.
    writes: mpsc::UnboundedSender<Queued>,
}

/// What `client_write` answers.
type WriteResult = Result<(Outcome, u64), RaftError<u64, ClientWriteError<u64, BasicNode>>>;

/// A write waiting for the batcher, and where its answer goes.
type Queued = (Command, oneshot::Sender<WriteResult>);

/// The most `client_write` calls of the batcher under way at once: one
/// being appended while the one before is replicated.
const WRITES_IN_FLIGHT: usize = 2;

/// The most writes in one batch.
const MAX_BATCH: usize = 256;

/// The most bytes ([`Command::size`]) in one batch, unless a single write
/// is larger: well under one AppendEntries datagram
/// ([`super::network::MAX_RAFT_PAYLOAD`]).
const MAX_BATCH_BYTES: usize = 24 * 1024;

/// Takes the queued writes, at most [`WRITES_IN_FLIGHT`] batches under
/// way: every write queued while the batcher waits joins the next batch.
async fn batcher(raft: Raft, mut queued: mpsc::UnboundedReceiver<Queued>) {
    let slots = Arc::new(Semaphore::new(WRITES_IN_FLIGHT));
    let mut next: Option<Queued> = None;
    loop {
        let first = match next.take() {
            Some(q) => q,
            None => match queued.recv().await {
                Some(q) => q,
                None => break,
            },
        };
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let mut bytes = first.0.size();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            let Ok(q) = queued.try_recv() else { break };
            bytes += q.0.size();
            if bytes > MAX_BATCH_BYTES {
                next = Some(q);
                break;
            }
            batch.push(q);
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            write_batch(&raft, batch).await;
            drop(slot);
        });
    }
    tracing::debug!("write batcher stopped");
}

/// Writes `batch` in one log entry and answers each of its writes.
async fn write_batch(raft: &Raft, mut batch: Vec<Queued>) {
    if batch.len() == 1 {
        if let Some((command, answer)) = batch.pop() {
            let result = raft
                .client_write(command)
                .await
                .map(|r| (r.data.outcome, r.log_id.index));
            // The caller may have gone (its call cancelled).
            let _ = answer.send(result);
        }
        return;
    }
    let (commands, answers): (Vec<Command>, Vec<_>) = batch.into_iter().unzip();
    let n = commands.len();
    match raft.client_write(Command::Batch { commands }).await {
        Ok(r) => {
            let index = r.log_id.index;
            match r.data.outcome {
                Outcome::Batch { outcomes } if outcomes.len() == n => {
                    for (answer, outcome) in answers.into_iter().zip(outcomes) {
                        let _ = answer.send(Ok((outcome, index)));
                    }
                }
                other => {
                    tracing::error!(?other, writes = n, "a batch applied to another outcome");
                    // Dropping the answers fails the calls (unavailable).
                }
            }
        }
        Err(e) => {
            for answer in answers {
                let _ = answer.send(Err(e.clone()));
            }
        }
    }
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn decode_request<T: DeserializeOwned>(req: &RaftRequest) -> Result<T, MethodError<RaftFailure>> {
    store::decode("raft request", &req.payload).map_err(|e| {
        MethodError::Status(Status::new(
            Code::InvalidArgument,
            format!(
                "{e}: {:?}",
                std::error::Error::source(&e).map(ToString::to_string)
            ),
        ))
    })
}

fn raft_answer<T: Serialize, E: Serialize + std::fmt::Display>(
    r: Result<T, E>,
) -> Result<RaftReply, MethodError<RaftFailure>> {
    match r {
        Ok(v) => {
            let payload = store::encode("raft answer", &v)
                .map_err(|e| MethodError::Status(Status::new(Code::Internal, e.to_string())))?;
            Ok(RaftReply {
                payload: payload.into(),
            })
        }
        Err(e) => {
            let detail = e.to_string();
            let payload = store::encode("raft error", &e)
                .map_err(|e| MethodError::Status(Status::new(Code::Internal, e.to_string())))?;
            Err(MethodError::raised_with(
                RaftFailure {
                    payload: payload.into(),
                    detail: detail.clone(),
                },
                Code::Unavailable,
                detail,
            ))
        }
    }
}

impl crate::proto::consensus::v1::Raft for Service {
    async fn append_entries(
        &self,
        _ctx: CallContext,
        request: RaftRequest,
    ) -> Result<RaftReply, MethodError<RaftFailure>> {
        let rpc = decode_request(&request)?;
        raft_answer(self.raft.append_entries(rpc).await)
    }

    async fn vote(
        &self,
        _ctx: CallContext,
        request: RaftRequest,
    ) -> Result<RaftReply, MethodError<RaftFailure>> {
        let rpc = decode_request(&request)?;
        raft_answer(self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        _ctx: CallContext,
        request: RaftRequest,
    ) -> Result<RaftReply, MethodError<RaftFailure>> {
        let rpc = decode_request(&request)?;
        raft_answer(self.raft.install_snapshot(rpc).await)
    }
}

fn kv_error(kind: KvErrorKind, detail: impl Into<String>) -> MethodError<KvError> {
    let detail = detail.into();
    let code = match kind {
        KvErrorKind::BadKey | KvErrorKind::ValueTooLarge | KvErrorKind::BadClient => {
            Code::InvalidArgument
        }
        KvErrorKind::NotLeader | KvErrorKind::Unavailable => Code::Unavailable,
        KvErrorKind::KeyNotFound => Code::NotFound,
        KvErrorKind::StaleSequence | KvErrorKind::Membership | KvErrorKind::Unspecified => {
            Code::FailedPrecondition
        }
    };
    MethodError::raised_with(
        KvError {
            kind: kind as i32,
            detail: detail.clone(),
            not_leader: None,
        },
        code,
        detail,
    )
}

fn not_leader(f: &ForwardToLeader<u64, BasicNode>) -> MethodError<KvError> {
    let nl = NotLeader {
        known: f.leader_id.is_some(),
        leader_id: f.leader_id.unwrap_or_default(),
        leader_addr: f
            .leader_node
            .as_ref()
            .map(|n| n.addr.clone())
            .unwrap_or_default(),
    };
    let detail = if nl.known {
        format!(
            "not the leader: node {} at {} is",
            nl.leader_id, nl.leader_addr
        )
    } else {
        "not the leader, and no leader is known".to_owned()
    };
    MethodError::raised_with(
        KvError {
            kind: KvErrorKind::NotLeader as i32,
            detail: detail.clone(),
            not_leader: Some(nl),
        },
        Code::Unavailable,
        detail,
    )
}

fn write_error(e: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> MethodError<KvError> {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => not_leader(&f),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            kv_error(KvErrorKind::Membership, e.to_string())
        }
        RaftError::Fatal(f) => kv_error(KvErrorKind::Unavailable, f.to_string()),
    }
}

fn writer(id: Option<WriteId>) -> Result<Writer, MethodError<KvError>> {
    match id {
        Some(WriteId { client_id, seq }) if client_id != 0 && seq != 0 => Ok(Writer {
            client: client_id,
            seq,
        }),
        _ => Err(kv_error(
            KvErrorKind::BadClient,
            "a write needs a client id and a sequence number, both not 0",
        )),
    }
}

fn check(key: &str, value: Option<&[u8]>) -> Result<(), MethodError<KvError>> {
    kv::check_key(key).map_err(|d| kv_error(KvErrorKind::BadKey, d))?;
    if let Some(v) = value {
        kv::check_value(v).map_err(|d| kv_error(KvErrorKind::ValueTooLarge, d))?;
    }
    Ok(())
}

fn stale(last: u64) -> MethodError<KvError> {
    kv_error(
        KvErrorKind::StaleSequence,
        format!("a write older than this client's last applied one (sequence {last})"),
    )
}

fn unexpected(o: &Outcome) -> MethodError<KvError> {
    kv_error(
        KvErrorKind::Unavailable,
        format!("unexpected outcome {o:?} (a client id reused for another kind of write?)"),
    )
}

impl Service {
    async fn write(&self, command: Command) -> Result<(Outcome, u64), MethodError<KvError>> {
        let gone = || kv_error(KvErrorKind::Unavailable, "the node is shutting down");
        let (answer, result) = oneshot::channel();
        self.writes.send((command, answer)).map_err(|_| gone())?;
        result.await.map_err(|_| gone())?.map_err(write_error)
    }

    fn members(&self) -> Vec<Member> {
        let s = self.state.read();
        let m = s.membership.membership();
        let voters: BTreeSet<u64> = m.voter_ids().collect();
        m.nodes()
            .map(|(id, n)| Member {
                id: *id,
                addr: n.addr.clone(),
                voter: voters.contains(id),
            })
            .collect()
    }

    fn membership_reply(&self, index: u64) -> Membership {
        Membership {
            index,
            members: self.members(),
        }
    }
}

impl KeyValue for Service {
    async fn put(
        &self,
        _ctx: CallContext,
        request: PutRequest,
    ) -> Result<PutReply, MethodError<KvError>> {
        check(&request.key, Some(&request.value))?;
        let writer = writer(request.id)?;
        let (outcome, index) = self
            .write(Command::Put {
                key: request.key,
                value: request.value.to_vec(),
                writer,
            })
            .await?;
        match outcome {
            Outcome::Put { previous } => Ok(PutReply {
                had_previous: previous.is_some(),
                previous: previous.unwrap_or_default().into(),
                index,
            }),
            Outcome::Stale { last } => Err(stale(last)),
            o => Err(unexpected(&o)),
        }
    }

    async fn get(
        &self,
        _ctx: CallContext,
        request: GetRequest,
    ) -> Result<GetReply, MethodError<KvError>> {
        check(&request.key, None)?;
        match self.raft.ensure_linearizable().await {
            Ok(_) => {}
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                return Err(not_leader(&f))
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
                return Err(kv_error(KvErrorKind::Unavailable, e.to_string()))
            }
            Err(RaftError::Fatal(f)) => {
                return Err(kv_error(KvErrorKind::Unavailable, f.to_string()))
            }
        }
        let s = self.state.read();
        let value = s.kv.get(&request.key);
        Ok(GetReply {
            found: value.is_some(),
            value: value.cloned().unwrap_or_default().into(),
            index: s.last_applied.map(|l| l.index).unwrap_or_default(),
        })
    }

    async fn delete(
        &self,
        _ctx: CallContext,
        request: DeleteRequest,
    ) -> Result<DeleteReply, MethodError<KvError>> {
        check(&request.key, None)?;
        let writer = writer(request.id)?;
        let (outcome, index) = self
            .write(Command::Delete {
                key: request.key,
                writer,
            })
            .await?;
        match outcome {
            Outcome::Deleted { existed } => Ok(DeleteReply { existed, index }),
            Outcome::Stale { last } => Err(stale(last)),
            o => Err(unexpected(&o)),
        }
    }

    async fn compare_and_set(
        &self,
        _ctx: CallContext,
        request: CasRequest,
    ) -> Result<CasReply, MethodError<KvError>> {
        check(&request.key, Some(&request.value))?;
        if let Some(e) = &request.expected {
            check(&request.key, Some(e))?;
        }
        let writer = writer(request.id)?;
        let key = request.key.clone();
        let (outcome, index) = self
            .write(Command::Cas {
                key: request.key,
                expected: request.expected.map(|b| b.to_vec()),
                value: request.value.to_vec(),
                writer,
            })
            .await?;
        match outcome {
            Outcome::Cas { swapped, current } => Ok(CasReply {
                swapped,
                current: current.unwrap_or_default().into(),
                index,
            }),
            Outcome::CasKeyNotFound => Err(kv_error(
                KvErrorKind::KeyNotFound,
                format!("compare-and-set expected a value but {key:?} has none"),
            )),
            Outcome::Stale { last } => Err(stale(last)),
            o => Err(unexpected(&o)),
        }
    }

    async fn add_learner(
        &self,
        _ctx: CallContext,
        request: AddLearnerRequest,
    ) -> Result<Membership, MethodError<KvError>> {
        if request.node_id == 0 {
            return Err(kv_error(
                KvErrorKind::Membership,
                "node id 0 is not allowed",
            ));
        }
        if request.addr.parse::<SocketAddr>().is_err() {
            return Err(kv_error(
                KvErrorKind::Membership,
                format!("{:?} is not a host:port address", request.addr),
            ));
        }
        let resp = self
            .raft
            .add_learner(
                request.node_id,
                BasicNode::new(&request.addr),
                request.wait_caught_up,
            )
            .await
            .map_err(write_error)?;
        Ok(self.membership_reply(resp.log_id.index))
    }

    async fn change_membership(
        &self,
        _ctx: CallContext,
        request: ChangeMembershipRequest,
    ) -> Result<Membership, MethodError<KvError>> {
        let voters: BTreeSet<u64> = request.voters.into_iter().collect();
        let resp = self
            .raft
            .change_membership(voters, request.retain)
            .await
            .map_err(write_error)?;
        Ok(self.membership_reply(resp.log_id.index))
    }

    async fn status(
        &self,
        _ctx: CallContext,
        _request: StatusRequest,
    ) -> Result<NodeStatus, MethodError<KvError>> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader.map(|id| {
            let addr = m
                .membership_config
                .membership()
                .get_node(&id)
                .map(|n| n.addr.clone())
                .unwrap_or_default();
            NotLeader {
                known: true,
                leader_id: id,
                leader_addr: addr,
            }
        });
        Ok(NodeStatus {
            id: self.id,
            state: format!("{:?}", m.state),
            term: m.current_term,
            leader,
            last_log_index: m.last_log_index.unwrap_or_default(),
            last_applied: m.last_applied.map(|l| l.index).unwrap_or_default(),
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or_default(),
            members: self.members(),
            snapshots_installed: self.state.read().snapshots_installed,
            data_digest: self.state.read().kv.digest(),
        })
    }
}
