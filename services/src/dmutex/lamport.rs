//! Lamport's algorithm: every peer keeps a queue of requests ordered by
//! (Lamport timestamp, id). A peer that wants to enter puts its request in
//! its own queue and multicasts REQUEST to the N-1 others
//! (`LamportQueue.Request`), which queue it and answer with a REPLY
//! stamped later. It enters when it has every REPLY and its request heads
//! its queue; on leaving it takes its request off and multicasts RELEASE
//! (`LamportQueue.Release`), which takes it off the others' queues.
//! 3(N-1) messages per entry; synchronisation delay one message (the
//! release).
//!
//! The algorithm assumes FIFO channels: a peer's REQUEST must not be
//! overtaken by its later REPLY to somebody else. Here the REPLY travels
//! back on the asker's call, so it carries the replier's own request
//! still queued (`Reply.pending`), and the asker queues that as if it had
//! come first. A request older than the last one released by its peer is
//! never queued again, so a late copy cannot block the queue.

use super::{DmutexError, GroupPeer};
use crate::proto::dmutex::v1 as pb;
use rpc_core::{CallContext, Client, Status};
use std::collections::{BTreeSet, HashMap};
use tokio::sync::watch;

/// A peer's queue of requests (no I/O).
#[derive(Debug, Clone, Default)]
pub struct RequestQueue {
    /// (timestamp, peer), earliest first.
    queue: BTreeSet<(u64, u32)>,
    /// The queued request of each peer (one at most).
    of_peer: HashMap<u32, u64>,
    /// The latest released request of each peer.
    released: HashMap<u32, u64>,
}

impl RequestQueue {
    /// Queues `peer`'s request stamped `ts`, unless it is already queued
    /// or released. Returns whether it was queued now.
    pub fn insert(&mut self, peer: u32, ts: u64) -> bool {
        if ts == 0 || self.released.get(&peer).is_some_and(|&r| ts <= r) {
            return false;
        }
        match self.of_peer.get(&peer) {
            Some(&queued) if queued == ts => return false,
            Some(&queued) => {
                // A newer request of the same peer replaces its older one
                // (which it can only have released).
                self.queue.remove(&(queued, peer));
            }
            None => {}
        }
        self.of_peer.insert(peer, ts);
        self.queue.insert((ts, peer))
    }

    /// Takes `peer`'s request stamped `ts` (or older) off the queue.
    pub fn release(&mut self, peer: u32, ts: u64) {
        let r = self.released.entry(peer).or_insert(0);
        *r = (*r).max(ts);
        if let Some(&queued) = self.of_peer.get(&peer) {
            if queued <= ts {
                self.of_peer.remove(&peer);
                self.queue.remove(&(queued, peer));
            }
        }
    }

    /// The request at the head: (timestamp, peer).
    pub fn head(&self) -> Option<(u64, u32)> {
        self.queue.first().copied()
    }

    /// The requests queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no request is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[derive(Debug, Clone, Default)]
struct State {
    queue: RequestQueue,
    /// This peer's request, while it asks or is inside.
    mine: Option<u64>,
    /// Every REPLY has come for `mine`.
    replied: bool,
    inside: bool,
}

/// A peer of Lamport's algorithm (see the module docs).
#[derive(Debug)]
pub struct LamportPeer {
    /// Its id, counters, clock and the stub of the others.
    pub(super) me: GroupPeer<pb::LamportQueueGroupClient>,
    state: watch::Sender<State>,
}

impl LamportPeer {
    pub(super) fn new(id: u32, n: usize) -> LamportPeer {
        LamportPeer {
            me: GroupPeer::new(id, n),
            state: watch::Sender::new(State::default()),
        }
    }

    pub(super) fn connect(&self, clients: &[Client]) -> Result<(), DmutexError> {
        self.me.connect(clients, pb::LamportQueueGroupClient::new)
    }

    pub(super) async fn enter(&self) -> Result<(), DmutexError> {
        let timestamp = self.me.begin(
            &self.state,
            |s| s.mine.is_none(),
            |s, timestamp| {
                s.mine = Some(timestamp);
                s.replied = false;
                s.queue.insert(self.me.id, timestamp);
            },
        )?;
        if self.me.n > 1 {
            let asked = self.me.to_all_others(timestamp, |o, ask| o.request(ask));
            let outcome = match asked.await {
                Ok(outcome) => outcome,
                Err(e) => {
                    self.withdraw(timestamp).await;
                    return Err(e);
                }
            };
            self.state.send_modify(|s| {
                for (_, r) in outcome.replies() {
                    self.me.clock.observe(r.timestamp);
                    s.queue.insert(r.from, r.pending);
                }
                s.replied = true;
            });
        } else {
            self.state.send_modify(|s| s.replied = true);
        }
        let mut rx = self.state.subscribe();
        let me = (timestamp, self.me.id);
        let _ = rx
            .wait_for(|s| s.replied && s.queue.head() == Some(me))
            .await;
        self.state.send_modify(|s| s.inside = true);
        self.me.meter.entered();
        Ok(())
    }

    /// Takes this peer's request off its queue and the others' (RELEASE
    /// to the N-1 others).
    async fn release_everywhere(&self, timestamp: u64) -> Result<(), DmutexError> {
        self.state.send_modify(|s| {
            s.queue.release(self.me.id, timestamp);
            s.mine = None;
            s.inside = false;
        });
        if self.me.n == 1 {
            return Ok(());
        }
        self.me
            .to_all_others(timestamp, |o, ask| o.release(ask))
            .await
            .map(drop)
    }

    /// Withdraws a request that could not be made everywhere.
    async fn withdraw(&self, timestamp: u64) {
        if let Err(e) = self.release_everywhere(timestamp).await {
            tracing::warn!(id = self.me.id, error = %e, "lamport: a release was not delivered");
        }
    }

    pub(super) async fn exit(&self) -> Result<(), DmutexError> {
        let s = self.state.borrow().clone();
        let (true, Some(timestamp)) = (s.inside, s.mine) else {
            return Err(DmutexError::State("not inside"));
        };
        self.release_everywhere(timestamp).await
    }
}

impl pb::LamportQueue for LamportPeer {
    async fn request(&self, _ctx: CallContext, ask: pb::Ask) -> Result<pb::Reply, Status> {
        if ask.timestamp == 0 || ask.from as usize >= self.me.n || ask.from == self.me.id {
            return Err(Status::invalid_argument(format!(
                "a request from peer {} stamped {}",
                ask.from, ask.timestamp
            )));
        }
        self.me.clock.observe(ask.timestamp);
        let mut pending = 0;
        self.state.send_modify(|s| {
            s.queue.insert(ask.from, ask.timestamp);
            pending = s.mine.unwrap_or(0);
        });
        self.me.meter.sent(1);
        Ok(pb::Reply {
            from: self.me.id,
            timestamp: self.me.clock.tick(),
            pending,
        })
    }

    async fn release(&self, _ctx: CallContext, ask: pb::Ask) -> Result<pb::Ack, Status> {
        if ask.from as usize >= self.me.n {
            return Err(Status::invalid_argument(format!(
                "a release from peer {} of {}",
                ask.from, self.me.n
            )));
        }
        self.state
            .send_modify(|s| s.queue.release(ask.from, ask.timestamp));
        Ok(pb::Ack { from: self.me.id })
    }
}
