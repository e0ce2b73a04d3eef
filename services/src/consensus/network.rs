//! openraft's network over this framework: [`Network`] makes one [`Peer`]
//! per target node, which sends openraft's requests with the generated
//! `RaftClient` (UDP), each with openraft's time-to-live as its deadline.
//!
//! Errors are given back to openraft as it expects them:
//!
//! | the call's failure | openraft's error |
//! |---|---|
//! | the peer raised `RaftFailure` (openraft's error there) | `RemoteError` |
//! | the deadline passed | `Timeout` (openraft retries at its pace) |
//! | no answer after every retransmission, or a plain status from the peer (overloaded, shutting down) | `Unreachable` (openraft backs off) |
//! | the request does not fit a datagram | `PayloadTooLarge` with a hint: openraft sends fewer entries |
//! | anything else (the peer restarted, a reply that cannot be decoded) | `Network` (openraft retries) |
//!
//! The connected stub to each peer is kept by the [`Network`] and shared
//! by every [`Peer`] made for that target: openraft (0.9) asks for a new
//! client for every follower on each linearizable read, and each would
//! otherwise open (and close) its own socket. A stub whose call failed to
//! reach the peer is dropped, so the next call connects again.
//!
//! A request is measured before it is sent: an AppendEntries whose
//! encoding is over [`MAX_RAFT_PAYLOAD`] is not sent, and openraft is told
//! how many entries would fit.

// openraft's trait fixes the error type (RPCError, about 240 bytes).
#![allow(clippy::result_large_err)]

use super::store;
use super::TypeConfig;
use crate::proto::consensus::v1::{RaftClient, RaftFailure, RaftReply, RaftRequest};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use rpc_core::{CallError, Error};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The largest encoded openraft request sent in one call: under the
/// datagram limit (65,000 bytes) with room for the envelope.
pub const MAX_RAFT_PAYLOAD: usize = 60_000;

/// The size of a snapshot chunk (its request stays under
/// [`MAX_RAFT_PAYLOAD`] with the snapshot's metadata).
pub const SNAPSHOT_CHUNK: u64 = 32 * 1024;

/// The connected stubs, by target node and address.
type Stubs = Arc<Mutex<BTreeMap<(u64, String), RaftClient>>>;

/// Makes the [`Peer`]s of node `id`; clones share the connected stubs.
#[derive(Debug, Clone)]
pub struct Network {
    id: u64,
    routes: BTreeMap<u64, SocketAddr>,
    stubs: Stubs,
}

impl Network {
    /// The network of node `id`: a peer listed in `routes` is reached at
    /// that address (a proxy in front of it), any other at its address in
    /// the membership.
    pub fn new(id: u64, routes: BTreeMap<u64, SocketAddr>) -> Network {
        Network {
            id,
            routes,
            stubs: Stubs::default(),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        let addr = match self.routes.get(&target) {
            Some(a) => a.to_string(),
            None => node.addr.clone(),
        };
        let stub = self
            .stubs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(target, addr.clone()))
            .cloned();
        Peer {
            id: self.id,
            target,
            addr,
            stub,
            stubs: Arc::clone(&self.stubs),
        }
    }
}

/// The connection from one node to another; connects on first use (or
/// takes the [`Network`]'s stub) and again after a call that did not reach
/// the peer.
#[derive(Debug)]
pub struct Peer {
    id: u64,
    target: u64,
    addr: String,
    stub: Option<RaftClient>,
    stubs: Stubs,
}

/// A failure that is not yet one of openraft's error types.
#[derive(Debug, thiserror::Error)]
enum PeerError {
    #[error("cannot connect to node {target} at {addr}: {detail}")]
    Connect {
        target: u64,
        addr: String,
        detail: String,
    },
    #[error("cannot encode the request: {0}")]
    Encode(#[source] store::StoreError),
    #[error("cannot decode the answer of node {target}: {source}")]
    Decode {
        target: u64,
        #[source]
        source: store::StoreError,
    },
    #[error("node {target} answered with a status: {detail}")]
    Status { target: u64, detail: String },
    #[error("call to node {target} failed: {source}")]
    Call {
        target: u64,
        #[source]
        source: Error,
    },
}

impl Peer {
    async fn stub(&mut self) -> Result<RaftClient, PeerError> {
        if let Some(s) = &self.stub {
            return Ok(s.clone());
        }
        let stub = RaftClient::connect(&format!("udp://{}", self.addr))
            .await
            .map_err(|e| PeerError::Connect {
                target: self.target,
                addr: self.addr.clone(),
                detail: e.to_string(),
            })?;
        self.stub = Some(stub.clone());
        self.stubs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((self.target, self.addr.clone()), stub.clone());
        Ok(stub)
    }

    /// Drops the stub (here and in the [`Network`]) after a call that did
    /// not reach the peer, so the next call connects again.
    fn forget_stub(&mut self) {
        self.stub = None;
        self.stubs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(self.target, self.addr.clone()));
    }

    /// Sends `payload` with `send`, decoding the answer or the raised
    /// openraft error `E`.
    async fn call<Resp, E, F, Fut>(
        &mut self,
        action: RPCTypes,
        payload: Vec<u8>,
        ttl: Duration,
        send: F,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        F: FnOnce(RaftClient, RaftRequest, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<RaftReply, CallError<RaftFailure>>>,
    {
        let target = self.target;
        let stub = self
            .stub()
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let request = RaftRequest {
            payload: payload.into(),
        };
        match send(stub, request, ttl).await {
            Ok(reply) => store::decode::<Resp>("answer", &reply.payload).map_err(|source| {
                RPCError::Network(NetworkError::new(&PeerError::Decode { target, source }))
            }),
            Err(CallError::Raised(failure, _)) => {
                match store::decode::<RaftError<u64, E>>("raised error", &failure.payload) {
                    Ok(e) => Err(RPCError::RemoteError(RemoteError::new(target, e))),
                    Err(source) => Err(RPCError::Network(NetworkError::new(&PeerError::Decode {
                        target,
                        source,
                    }))),
                }
            }
            Err(CallError::Rpc(e)) => {
                let e = map_call_error(self.id, target, action, ttl, e);
                if matches!(e, RPCError::Unreachable(_) | RPCError::Network(_)) {
                    self.forget_stub();
                }
                Err(e)
            }
        }
    }
}

fn map_call_error<E: std::error::Error>(
    id: u64,
    target: u64,
    action: RPCTypes,
    ttl: Duration,
    e: Error,
) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
    match e {
        Error::DeadlineExceeded { .. } => RPCError::Timeout(Timeout {
            action,
            id,
            target,
            timeout: ttl,
        }),
        e @ Error::Unreachable { .. } => {
            RPCError::Unreachable(Unreachable::new(&PeerError::Call { target, source: e }))
        }
        Error::Status(s) => RPCError::Unreachable(Unreachable::new(&PeerError::Status {
            target,
            detail: s.to_string(),
        })),
        Error::MessageTooLarge { .. } if action == RPCTypes::AppendEntries => {
            RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(1))
        }
        e => RPCError::Network(NetworkError::new(&PeerError::Call { target, source: e })),
    }
}

fn encode<T: serde::Serialize, E: std::error::Error>(
    what: &'static str,
    v: &T,
) -> Result<Vec<u8>, RPCError<u64, BasicNode, RaftError<u64, E>>> {
    store::encode(what, v).map_err(|e| RPCError::Network(NetworkError::new(&PeerError::Encode(e))))
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let entries = rpc.entries.len();
        let payload = encode("append-entries request", &rpc)?;
        if payload.len() > MAX_RAFT_PAYLOAD && entries > 0 {
            // As many entries as fit at their average size, at least one.
            let fit = entries * MAX_RAFT_PAYLOAD / payload.len();
            let hint = u64::try_from(fit.clamp(1, entries.saturating_sub(1).max(1))).unwrap_or(1);
            tracing::debug!(
                target = self.target,
                entries,
                bytes = payload.len(),
                hint,
                "append-entries too large: fewer entries"
            );
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(hint),
            ));
        }
        self.call(
            RPCTypes::AppendEntries,
            payload,
            option.hard_ttl(),
            |stub, req, ttl| async move { stub.append_entries(req).timeout(ttl).await },
        )
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        let payload = encode("install-snapshot request", &rpc)?;
        self.call(
            RPCTypes::InstallSnapshot,
            payload,
            option.hard_ttl(),
            |stub, req, ttl| async move { stub.install_snapshot(req).timeout(ttl).await },
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let payload = encode("vote request", &rpc)?;
        self.call(
            RPCTypes::Vote,
            payload,
            option.hard_ttl(),
            |stub, req, ttl| async move { stub.vote(req).timeout(ttl).await },
        )
        .await
    }
}
