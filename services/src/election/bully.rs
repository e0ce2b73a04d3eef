//! The bully algorithm (see the [module docs](super)).

use super::{lock, Counters, ElectionConfig, ElectionError, ElectionPeers, ElectionStats, Leader};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// One node's side of the bully algorithm (see the module docs).
pub struct Bully {
    id: u32,
    members: Mutex<Vec<u32>>,
    peers: Arc<dyn ElectionPeers>,
    config: ElectionConfig,
    leader: watch::Sender<Leader>,
    pub(super) running: tokio::sync::Mutex<()>,
    counters: Counters,
}

impl std::fmt::Debug for Bully {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bully")
            .field("id", &self.id)
            .field("leader", &*self.leader.borrow())
            .finish_non_exhaustive()
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
        let (leader, _) = watch::channel(Leader::default());
        Arc::new(Bully {
            id,
            members: Mutex::new(members.into_iter().filter(|&m| m != id).collect()),
            peers,
            config,
            leader,
            running: tokio::sync::Mutex::new(()),
            counters: Counters::default(),
        })
    }

    /// This node's id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Replaces the other members' ids.
    pub fn set_members(&self, members: Vec<u32>) {
        *lock(&self.members) = members.into_iter().filter(|&m| m != self.id).collect();
    }

    /// The other members' ids.
    pub fn members(&self) -> Vec<u32> {
        lock(&self.members).clone()
    }

    /// The leader as this node knows it.
    pub fn leader(&self) -> Leader {
        *self.leader.borrow()
    }

    /// Changes of the leader, to wait on.
    pub fn subscribe(&self) -> watch::Receiver<Leader> {
        self.leader.subscribe()
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
        let Ok(_guard) = self.running.try_lock() else {
            // One is running: its end is ours.
            let _wait = self.running.lock().await;
            return Ok(self.leader());
        };
        self.counters.started.fetch_add(1, Ordering::Relaxed);
        for _attempt in 0..self.config.max_attempts.max(1) {
            let start = self.leader();
            let higher: Vec<u32> = self
                .members()
                .into_iter()
                .filter(|&m| m > self.id)
                .collect();
            self.counters
                .elections
                .fetch_add(higher.len() as u64, Ordering::Relaxed);
            tracing::debug!(id = self.id, ?higher, "bully: ELECTION");
            let answered = self.peers.elect(self.id, higher).await;
            if answered.is_empty() {
                return Ok(self.win().await);
            }
            // Someone higher is alive: wait for its COORDINATOR.
            let mut rx = self.subscribe();
            let wait = rx.wait_for(|l| l.term > start.term && l.id.is_some_and(|id| id > self.id));
            if let Ok(Ok(l)) = tokio::time::timeout(self.config.coordinator_wait, wait).await {
                return Ok(*l);
            }
            tracing::debug!(id = self.id, "bully: answered but no COORDINATOR; again");
        }
        Err(ElectionError::NoLeader {
            attempts: self.config.max_attempts.max(1),
        })
    }

    async fn win(&self) -> Leader {
        let term = self.leader().term + 1;
        let me = Leader {
            id: Some(self.id),
            term,
        };
        self.leader.send_replace(me);
        let others = self.members();
        self.counters
            .coordinators
            .fetch_add(others.len() as u64, Ordering::Relaxed);
        tracing::info!(id = self.id, term, "bully: coordinator");
        self.peers.announce(self.id, term, others).await;
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
        if from >= self.id || lock(&self.members).is_empty() {
            return false;
        }
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.elect().await {
                tracing::warn!(id = me.id, error = %e, "bully: election failed");
            }
        });
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
            self.leader.send_replace(Leader {
                id: Some(leader),
                term,
            });
        }
        if leader < self.id {
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.elect().await {
                    tracing::warn!(id = me.id, error = %e, "bully: election failed");
                }
            });
        }
    }

    /// Forgets the leader (it was found dead) without an election.
    pub fn suspect(&self, leader: u32) {
        self.leader.send_if_modified(|l| {
            if l.id == Some(leader) {
                l.id = None;
                true
            } else {
                false
            }
        });
    }
}
