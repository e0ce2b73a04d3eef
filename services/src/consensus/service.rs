//! The services of one consensus node: `Raft` for its peers (openraft's
//! messages in and out of the framework's envelopes) and `KeyValue` for
//! clients (writes grouped by the batcher into one log entry; reads
//! through the leader's read index), with the mapping of openraft's errors
//! to the wire's.

use super::kv::{self, Command, Outcome, Writer};
use super::state_machine::SharedState;
use super::store::{self};
use super::Raft;
use crate::proto::consensus::v1::{
    AddLearnerRequest, CasReply, CasRequest, ChangeMembershipRequest, DeleteReply, DeleteRequest,
    GetReply, GetRequest, KeyValue, KvError, KvErrorKind, Member, Membership, NodeStatus,
    NotLeader, PutReply, PutRequest, RaftFailure, RaftReply, RaftRequest, StatusRequest, WriteId,
};
use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::BasicNode;
use rpc_core::{CallContext, Code, MethodError, Status};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// The services of one node.
pub(super) struct Service {
    pub(super) id: u64,
    pub(super) raft: Raft,
    pub(super) state: SharedState,
    /// The writes to the batcher.
    pub(super) writes: mpsc::UnboundedSender<Queued>,
}

/// What `client_write` answers.
pub(super) type WriteResult =
    Result<(Outcome, u64), RaftError<u64, ClientWriteError<u64, BasicNode>>>;

/// A write waiting for the batcher, and where its answer goes.
pub(super) type Queued = (Command, oneshot::Sender<WriteResult>);

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
pub(super) async fn batcher(raft: Raft, mut queued: mpsc::UnboundedReceiver<Queued>) {
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

/// The `consensus.v1.Raft` methods, one for each of openraft's: decode
/// the request, hand it to the openraft method of the same name, encode
/// its answer (or its error, as a `RaftFailure`).
macro_rules! raft_methods {
    ($($method:ident),* $(,)?) => {$(
        async fn $method(
            &self,
            _ctx: CallContext,
            request: RaftRequest,
        ) -> Result<RaftReply, MethodError<RaftFailure>> {
            let rpc = decode_request(&request)?;
            raft_answer(self.raft.$method(rpc).await)
        }
    )*};
}

impl crate::proto::consensus::v1::Raft for Service {
    raft_methods!(append_entries, vote, install_snapshot);
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
