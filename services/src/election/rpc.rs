//! Elections over the network: [`RpcPeers`] sends the messages as calls of
//! the `clock.v1.Election` service, and [`ElectionService`] serves them
//! into a node's [`Bully`] and [`Ring`].

use super::{Bully, ElectionPeers, PeerFuture, Ring, RingToken};
use crate::proto::clock::v1 as pb;
use rpc_core::client::UdpChannel;
use rpc_core::{CallContext, Client, Status};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::task::JoinSet;

/// The other nodes' `Election` stubs, by id.
#[derive(Debug)]
pub struct RpcPeers {
    clients: Mutex<HashMap<u32, pb::ElectionClient>>,
    timeout: Duration,
}

impl RpcPeers {
    /// No peers yet; each message waits at most `timeout` for its answer
    /// (one retransmission within it).
    pub fn new(timeout: Duration) -> RpcPeers {
        RpcPeers {
            clients: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u32, pb::ElectionClient>> {
        // A map replaced whole.
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the peers: `(id, UDP address)` of each.
    ///
    /// # Errors
    /// When a socket cannot be bound.
    pub async fn set(&self, peers: &[(u32, SocketAddr)]) -> Result<(), rpc_core::Error> {
        let mut clients = HashMap::new();
        for &(id, addr) in peers {
            let channel = UdpChannel::connect(addr).await?;
            clients.insert(id, pb::ElectionClient::new(Client::new(channel)));
        }
        *self.lock() = clients;
        Ok(())
    }

    fn client(&self, id: u32) -> Option<pb::ElectionClient> {
        self.lock().get(&id).cloned()
    }

    /// `call` to every peer of `to` that has a client (given the per-call
    /// timeout), each in its own task; the tasks yield the peer's id and
    /// the call's result.
    fn each<T, F, Fut>(&self, to: Vec<u32>, call: F) -> JoinSet<(u32, T)>
    where
        F: Fn(pb::ElectionClient, Duration) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let mut calls = JoinSet::new();
        for id in to {
            let Some(c) = self.client(id) else { continue };
            let answer = call(c, self.timeout);
            calls.spawn(async move { (id, answer.await) });
        }
        calls
    }
}

impl ElectionPeers for RpcPeers {
    fn elect(&self, from: u32, to: Vec<u32>) -> PeerFuture<'_, Vec<u32>> {
        Box::pin(async move {
            let mut calls = self.each(to, move |c, timeout| async move {
                c.elect(pb::ElectionRequest { from_id: from })
                    .timeout(timeout)
                    .retries(1)
                    .await
            });
            let mut took_over = Vec::new();
            while let Some(done) = calls.join_next().await {
                match done {
                    Ok((id, Ok(a))) if a.take_over => took_over.push(id),
                    Ok((id, Ok(_))) => tracing::debug!(id, "election: answered, not taking over"),
                    Ok((id, Err(e))) => tracing::debug!(id, error = %e, "election: no answer"),
                    Err(e) => tracing::warn!(error = %e, "election: call task failed"),
                }
            }
            took_over
        })
    }

    fn announce(&self, leader: u32, term: u64, to: Vec<u32>) -> PeerFuture<'_, ()> {
        Box::pin(async move {
            let mut calls = self.each(to, move |c, timeout| async move {
                c.coordinator(pb::CoordinatorAnnouncement {
                    leader_id: leader,
                    term,
                })
                .timeout(timeout)
                .retries(1)
                .await
            });
            while let Some(done) = calls.join_next().await {
                if let Ok((id, Err(e))) = done {
                    tracing::debug!(id, error = %e, "coordinator: not delivered");
                }
            }
        })
    }

    fn pass(&self, to: u32, token: RingToken) -> PeerFuture<'_, bool> {
        Box::pin(async move {
            let Some(c) = self.client(to) else {
                return false;
            };
            c.ring(pb::RingToken {
                initiator: token.initiator,
                ids: token.ids,
                leader_id: token.leader,
            })
            .timeout(self.timeout)
            .retries(1)
            .await
            .is_ok()
        })
    }
}

/// The `clock.v1.Election` service of one node: bully messages go to its
/// [`Bully`], ring tokens to its [`Ring`].
#[derive(Debug, Clone)]
pub struct ElectionService {
    bully: Arc<Bully>,
    ring: Arc<Ring>,
}

impl ElectionService {
    /// Serves `bully` and `ring` (of the same node).
    pub fn new(bully: Arc<Bully>, ring: Arc<Ring>) -> ElectionService {
        ElectionService { bully, ring }
    }
}

impl pb::Election for ElectionService {
    async fn elect(
        &self,
        _ctx: CallContext,
        request: pb::ElectionRequest,
    ) -> Result<pb::ElectionAnswer, Status> {
        let take_over = self.bully.on_elect(request.from_id);
        Ok(pb::ElectionAnswer {
            from_id: self.bully.id(),
            take_over,
        })
    }

    async fn coordinator(
        &self,
        _ctx: CallContext,
        request: pb::CoordinatorAnnouncement,
    ) -> Result<pb::ElectionAck, Status> {
        self.bully.on_coordinator(request.leader_id, request.term);
        Ok(pb::ElectionAck {
            from_id: self.bully.id(),
        })
    }

    async fn ring(
        &self,
        _ctx: CallContext,
        request: pb::RingToken,
    ) -> Result<pb::ElectionAck, Status> {
        if request.ids.len() > 4096 {
            return Err(Status::invalid_argument("ring token of more than 4096 ids"));
        }
        self.ring.on_token(RingToken {
            initiator: request.initiator,
            ids: request.ids,
            leader: request.leader_id,
        });
        Ok(pb::ElectionAck {
            from_id: self.bully.id(),
        })
    }
}
