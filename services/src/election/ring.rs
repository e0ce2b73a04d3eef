//! The ring algorithm (see the [module docs](super)).

use super::{
    lock, Election, ElectionConfig, ElectionError, ElectionPeers, ElectionStats, Leader, Node,
    RingToken,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::time::Instant;

/// One node's side of the ring algorithm (see the module docs).
pub struct Ring {
    /// The node; its members are every member's id, its own included,
    /// ascending.
    node: Node,
    /// Counts the COORDINATORs this node has taken (one that names the
    /// leader it had already included), for [`Ring::elect`] to wait on.
    coordinators: watch::Sender<u64>,
    /// The highest initiator whose ELECTION token this node started or
    /// passed on, and when; cleared by a COORDINATOR, ignored once older
    /// than [`ElectionConfig::coordinator_wait`] (its token was lost).
    participating: Mutex<Option<(u32, Instant)>>,
    passes: AtomicU64,
    started: AtomicU64,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.node.debug("Ring", f)
    }
}

impl Ring {
    /// Node `id` of a ring of `members` (ids, its own included or not).
    pub fn new(
        id: u32,
        members: Vec<u32>,
        peers: Arc<dyn ElectionPeers>,
        config: ElectionConfig,
    ) -> Arc<Ring> {
        let (coordinators, _) = watch::channel(0);
        let ring = Arc::new(Ring {
            node: Node::new(id, peers, config),
            coordinators,
            participating: Mutex::new(None),
            passes: AtomicU64::new(0),
            started: AtomicU64::new(0),
        });
        ring.set_members(members);
        ring
    }

    /// This node's id.
    pub fn id(&self) -> u32 {
        self.node.id
    }

    /// Replaces the members.
    pub fn set_members(&self, mut members: Vec<u32>) {
        members.push(self.node.id);
        members.sort_unstable();
        members.dedup();
        *lock(&self.node.members) = members;
    }

    /// The other members' ids.
    pub fn members(&self) -> Vec<u32> {
        lock(&self.node.members)
            .iter()
            .copied()
            .filter(|&m| m != self.node.id)
            .collect()
    }

    /// The leader as this node knows it.
    pub fn leader(&self) -> Leader {
        self.node.leader()
    }

    /// Changes of the leader, to wait on.
    pub fn subscribe(&self) -> watch::Receiver<Leader> {
        self.node.subscribe()
    }

    /// Tokens this node has passed.
    pub fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }

    /// What this node has sent: tokens passed (ELECTION and COORDINATOR
    /// alike, those a dead successor did not take included) and the
    /// elections it started.
    pub fn stats(&self) -> ElectionStats {
        ElectionStats {
            started: self.started.load(Ordering::Relaxed),
            ring_passes: self.passes(),
            ..ElectionStats::default()
        }
    }

    /// The initiator of the ELECTION token this node last started or
    /// passed on, unless a COORDINATOR came since or it is too old.
    fn participating(&self) -> Option<u32> {
        self.unexpired(*lock(&self.participating))
            .map(|(initiator, _)| initiator)
    }

    /// `participation` unless it is older than the coordinator wait.
    fn unexpired(&self, participation: Option<(u32, Instant)>) -> Option<(u32, Instant)> {
        participation.filter(|(_, at)| at.elapsed() < self.node.config.coordinator_wait)
    }

    /// Starts an election: sends an ELECTION token round, whatever else
    /// is going round.
    pub async fn start(self: &Arc<Self>) {
        self.started.fetch_add(1, Ordering::Relaxed);
        {
            let mut p = lock(&self.participating);
            let live = self.unexpired(*p);
            let highest = live.map_or(self.node.id, |(i, _)| i.max(self.node.id));
            *p = Some((highest, Instant::now()));
        }
        let token = RingToken {
            initiator: self.node.id,
            ids: vec![self.node.id],
            leader: None,
        };
        tracing::debug!(id = self.node.id, "ring: ELECTION");
        if !self.forward(token).await {
            // Alone: this node leads.
            self.set_leader(self.node.id);
        }
    }

    /// Runs an election, or waits for the one this node is running, and
    /// returns the leader it ends with. A node that has passed on another
    /// node's ELECTION token lately waits for that token's COORDINATOR
    /// first instead of sending one of its own.
    ///
    /// # Errors
    /// [`ElectionError::NoLeader`] when no COORDINATOR came after
    /// [`ElectionConfig::max_attempts`] tokens.
    ///
    /// # Cancel safety
    /// Cancelling leaves no state behind but the messages already sent.
    pub async fn elect(self: &Arc<Self>) -> Result<Leader, ElectionError> {
        let Some(_guard) = self.node.turn().await else {
            // One was running: its end is ours.
            return Ok(self.leader());
        };
        let attempts = self.node.config.max_attempts.max(1);
        for attempt in 0..attempts {
            let mut rx = self.coordinators.subscribe();
            rx.borrow_and_update();
            match self.participating() {
                Some(initiator) if attempt == 0 && initiator != self.node.id => {
                    tracing::debug!(
                        id = self.node.id,
                        initiator,
                        "ring: joining the election going round"
                    );
                }
                _ => self.start().await,
            }
            // Any COORDINATOR taken since, even one that names the same
            // leader again.
            if let Ok(Ok(())) =
                tokio::time::timeout(self.node.config.coordinator_wait, rx.changed()).await
            {
                return Ok(self.leader());
            }
            tracing::debug!(id = self.node.id, "ring: no COORDINATOR; again");
        }
        Err(ElectionError::NoLeader { attempts })
    }

    /// Forgets the leader (it was found dead) without an election.
    pub fn suspect(&self, leader: u32) {
        self.node.suspect(leader);
    }

    /// Takes a COORDINATOR: follows `id` (subscribers hear of a change
    /// only) and forgets the election.
    fn set_leader(&self, id: u32) {
        *lock(&self.participating) = None;
        self.node.leader.send_if_modified(|l| {
            if l.id == Some(id) {
                return false;
            }
            l.term += 1;
            l.id = Some(id);
            true
        });
        self.coordinators.send_modify(|c| *c = c.wrapping_add(1));
    }

    /// Passes `token` to the next live successor of this node; false when
    /// no other node took it.
    async fn forward(self: &Arc<Self>, token: RingToken) -> bool {
        self.forward_after(self.node.id, token).await
    }

    /// Passes `token` to the next live successor of `after`; when that is
    /// this node, it acts on the token itself (no message). False when no
    /// node took it.
    async fn forward_after(self: &Arc<Self>, after: u32, token: RingToken) -> bool {
        let members = lock(&self.node.members).clone();
        let pos = members.iter().position(|&m| m == after).unwrap_or(0);
        let n = members.len();
        for step in 1..n {
            let to = members[(pos + step) % n];
            if to == self.node.id {
                self.on_token(token);
                return true;
            }
            self.passes.fetch_add(1, Ordering::Relaxed);
            if self.node.peers.pass(to, token.clone()).await {
                return true;
            }
            tracing::debug!(
                id = self.node.id,
                to,
                "ring: successor did not take the token"
            );
        }
        false
    }

    /// A token arrived: acts on it and passes it on in the background.
    ///
    /// An ELECTION token that comes back to a node already in it has gone
    /// round (even if its initiator died since): the highest id in it
    /// wins, and the node hands a COORDINATOR token to the winner's next
    /// live successor, so that it goes round and ends at the winner: the
    /// winner follows itself last, once every other node follows it (as
    /// bully's winner announces itself before it acts). An ELECTION token
    /// of an initiator no higher than one whose token this node has
    /// passed on lately is dropped. A COORDINATOR naming a lower id than
    /// this node's starts an election; one back at a node already in it
    /// stops (the winner died on the way).
    pub fn on_token(self: &Arc<Self>, mut token: RingToken) {
        let seen = token.ids.contains(&self.node.id);
        match token.leader {
            Some(leader) if leader == self.node.id => {
                tracing::info!(id = self.node.id, "ring: coordinator, followed by the ring");
                self.set_leader(leader);
                return;
            }
            Some(leader) => {
                self.set_leader(leader);
                if leader < self.node.id && !self.members().is_empty() {
                    tracing::info!(
                        id = self.node.id,
                        leader,
                        "ring: a lower coordinator; election"
                    );
                    Election::Ring(self.clone()).elect_in_background();
                }
                if seen {
                    return;
                }
                token.ids.push(self.node.id);
            }
            None if seen => {
                let leader = token.ids.iter().copied().max().unwrap_or(self.node.id);
                tracing::debug!(
                    id = self.node.id,
                    leader,
                    "ring: ELECTION back; COORDINATOR"
                );
                let coordinator = RingToken {
                    initiator: self.node.id,
                    ids: Vec::new(),
                    leader: Some(leader),
                };
                if leader != self.node.id {
                    self.set_leader(leader);
                }
                let me = self.clone();
                tokio::spawn(async move {
                    if !me.forward_after(leader, coordinator).await && leader == me.node.id {
                        // No other node is left: this one leads.
                        me.set_leader(leader);
                    }
                });
                return;
            }
            None => {
                let mut p = lock(&self.participating);
                let live = self.unexpired(*p);
                if let Some((passed, _)) = live.filter(|&(i, _)| i >= token.initiator) {
                    tracing::debug!(
                        id = self.node.id,
                        initiator = token.initiator,
                        passed,
                        "ring: ELECTION dropped (this node passed on one as high)"
                    );
                    return;
                }
                *p = Some((token.initiator, Instant::now()));
                drop(p);
                token.ids.push(self.node.id);
            }
        }
        let me = self.clone();
        tokio::spawn(async move {
            me.forward(token).await;
        });
    }
}
