//! The bully algorithm (see the [module docs](super)).

use super::{
    lock, Counters, Election, ElectionConfig, ElectionError, ElectionPeers, ElectionStats, Leader,
    Node,
};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::watch;

/// One node's side of the bully algorithm (see the module docs).
pub struct Bully {
    /// The node; its members are the others' ids (its own left out).
    pub(super) node: Node,
    counters: Counters,
}

impl std::fmt::Debug for Bully {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.node.debug("Bully", f)
    }
}

impl Bully {
    /// Node `id` among `members` (other ids; its own is ignored there).
    pub fn new(
        id: u32,
        members: Vec<u32>,
        peers: Arc<dyn ElectionPeers>,
        config: ElectionConfig,
    ) -> Arc<Bully> {
        let bully = Arc::new(Bully {
            node: Node::new(id, peers, config),
            counters: Counters::default(),
        });
        bully.set_members(members);
        bully
    }

    /// This node's id.
    pub fn id(&self) -> u32 {
        self.node.id
    }

    /// Replaces the other members' ids.
    pub fn set_members(&self, members: Vec<u32>) {
        *lock(&self.node.members) = members.into_iter().filter(|&m| m != self.node.id).collect();
    }

    /// The other members' ids.
    pub fn members(&self) -> Vec<u32> {
        lock(&self.node.members).clone()
    }

    /// The leader as this node knows it.
    pub fn leader(&self) -> Leader {
        self.node.leader()
    }

    /// Changes of the leader, to wait on.
    pub fn subscribe(&self) -> watch::Receiver<Leader> {
        self.node.subscribe()
    }

    /// What this node has sent.
    pub fn stats(&self) -> ElectionStats {
        let c = &self.counters;
        ElectionStats {
            started: c.started.load(Ordering::Relaxed),
            elections_sent: c.elections.load(Ordering::Relaxed),
            answers_sent: c.answers.load(Ordering::Relaxed),
            coordinators_sent: c.coordinators.load(Ordering::Relaxed),
            ring_passes: c.ring.load(Ordering::Relaxed),
        }
    }

    /// Runs an election, or waits for the one this node is running, and
    /// returns the leader it ends with.
    ///
    /// # Errors
    /// [`ElectionError::NoLeader`] when higher nodes kept answering without
    /// ever announcing themselves.
    ///
    /// # Cancel safety
    /// Cancelling leaves no state behind but the messages already sent.
    pub async fn elect(self: &Arc<Self>) -> Result<Leader, ElectionError> {
        let Some(_guard) = self.node.turn().await else {
            // One was running: its end is ours.
            return Ok(self.leader());
        };
        self.counters.started.fetch_add(1, Ordering::Relaxed);
        for _attempt in 0..self.node.config.max_attempts.max(1) {
            let start = self.leader();
            let higher: Vec<u32> = self
                .members()
                .into_iter()
                .filter(|&m| m > self.node.id)
                .collect();
            self.counters
                .elections
                .fetch_add(higher.len() as u64, Ordering::Relaxed);
            tracing::debug!(id = self.node.id, ?higher, "bully: ELECTION");
            let answered = self.node.peers.elect(self.node.id, higher).await;
            if answered.is_empty() {
                return Ok(self.win().await);
            }
            // Someone higher is alive: wait for its COORDINATOR.
            let mut rx = self.subscribe();
            let wait =
                rx.wait_for(|l| l.term > start.term && l.id.is_some_and(|id| id > self.node.id));
            if let Ok(Ok(l)) = tokio::time::timeout(self.node.config.coordinator_wait, wait).await {
                return Ok(*l);
            }
            tracing::debug!(
                id = self.node.id,
                "bully: answered but no COORDINATOR; again"
            );
        }
        Err(ElectionError::NoLeader {
            attempts: self.node.config.max_attempts.max(1),
        })
    }

    async fn win(&self) -> Leader {
        let term = self.leader().term + 1;
        let me = Leader {
            id: Some(self.node.id),
            term,
        };
        self.node.leader.send_replace(me);
        let others = self.members();
        self.counters
            .coordinators
            .fetch_add(others.len() as u64, Ordering::Relaxed);
        tracing::info!(id = self.node.id, term, "bully: coordinator");
        self.node.peers.announce(self.node.id, term, others).await;
        me
    }

    /// An ELECTION from `from` arrived: returns the ANSWER (whether this
    /// node takes over) and, when it does, starts its own election in the
    /// background.
    ///
    /// A node not in a group yet (no members) does not take over: it could
    /// not lead.
    pub fn on_elect(self: &Arc<Self>, from: u32) -> bool {
        self.counters.answers.fetch_add(1, Ordering::Relaxed);
        if from >= self.node.id || lock(&self.node.members).is_empty() {
            return false;
        }
        Election::Bully(self.clone()).elect_in_background();
        true
    }

    /// A COORDINATOR arrived. A newer term (or the same term from a higher
    /// id) replaces the leader; a coordinator lower than this node makes it
    /// start an election of its own.
    pub fn on_coordinator(self: &Arc<Self>, leader: u32, term: u64) {
        let current = self.leader();
        let newer =
            term > current.term || (term == current.term && current.id.is_none_or(|c| leader > c));
        if newer {
            self.node.leader.send_replace(Leader {
                id: Some(leader),
                term,
            });
        }
        if leader < self.node.id {
            Election::Bully(self.clone()).elect_in_background();
        }
    }

    /// Forgets the leader (it was found dead) without an election.
    pub fn suspect(&self, leader: u32) {
        self.node.suspect(leader);
    }
}
