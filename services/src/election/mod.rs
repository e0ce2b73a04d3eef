//! Leader election, reusable by any group of nodes with numeric ids: the
//! bully algorithm ([`Bully`]) and the ring algorithm ([`Ring`]) as the
//! second choice.
//!
//! The algorithms talk to the other nodes through [`ElectionPeers`], so
//! they run the same over the network ([`RpcPeers`], the `clock.v1.Election`
//! service that [`ElectionService`] serves) and in memory (the tests).
//!
//! **Bully** (Garcia-Molina, 1982): a node that suspects the coordinator
//! is dead sends ELECTION to every node with a higher id. If none answers,
//! it is the coordinator and tells every other node (COORDINATOR).
//! If one answers (ANSWER), that node takes the election over; the caller
//! waits for its COORDINATOR and starts again if none comes in time. A
//! node receiving ELECTION from a lower id answers and starts its own
//! election; one receiving COORDINATOR from a lower id than its own starts
//! an election too (it bullies its way back). The highest live id wins;
//! the worst case (the lowest id notices first) costs O(n^2) messages.
//!
//! **Ring**: the nodes are ordered by id in a ring. The initiator passes
//! an ELECTION token to its next live successor; each node appends its id
//! and passes it on; back at the initiator, the highest id collected is
//! the coordinator, and a COORDINATOR token goes around once more. 2n
//! messages per election (3n - 1 in the worst case of when it starts).
//!
//! Each election has a term, one more than the highest term the winner
//! knows, so that a newer coordinator is always told from an older one.

mod rpc;

pub use rpc::{ElectionService, RpcPeers};

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// A boxed future, as the peers' methods return.
pub type PeerFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How an election algorithm reaches the other nodes.
pub trait ElectionPeers: Send + Sync + 'static {
    /// Sends ELECTION from `from` to each of `to`, at once; resolves to the
    /// ids that answered that they take over (those that did not answer
    /// in time are left out).
    fn elect(&self, from: u32, to: Vec<u32>) -> PeerFuture<'_, Vec<u32>>;
    /// Sends COORDINATOR (`leader`, `term`) to each of `to`.
    fn announce(&self, leader: u32, term: u64, to: Vec<u32>) -> PeerFuture<'_, ()>;
    /// Passes a ring token to `to`; resolves to whether `to` took it.
    fn pass(&self, to: u32, token: RingToken) -> PeerFuture<'_, bool>;
}

/// A ring token (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingToken {
    /// Who started the circulation.
    pub initiator: u32,
    /// Ids collected so far.
    pub ids: Vec<u32>,
    /// The winner, once known (a COORDINATOR token).
    pub leader: Option<u32>,
}

/// Who leads, as a node knows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Leader {
    /// The coordinator's id, when one is known.
    pub id: Option<u32>,
    /// The term it was elected in.
    pub term: u64,
}

/// Timing of the bully algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BullyConfig {
    /// How long a node that was answered waits for a COORDINATOR before it
    /// starts again (default 1 s).
    pub coordinator_wait: Duration,
    /// Attempts before [`Bully::elect`] gives up (default 5).
    pub max_attempts: u32,
}

impl Default for BullyConfig {
    fn default() -> Self {
        BullyConfig {
            coordinator_wait: Duration::from_secs(1),
            max_attempts: 5,
        }
    }
}

/// An election that ended without a leader.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ElectionError {
    /// Higher nodes answered but none announced itself, `attempts` times.
    #[error("no coordinator after {attempts} attempts")]
    NoLeader {
        /// Attempts made.
        attempts: u32,
    },
}

/// Messages counted by a node (sent by it).
#[derive(Debug, Default)]
struct Counters {
    started: AtomicU64,
    elections: AtomicU64,
    answers: AtomicU64,
    coordinators: AtomicU64,
    ring: AtomicU64,
}

/// What a node has done in elections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ElectionStats {
    /// Elections this node started.
    pub started: u64,
    /// ELECTION messages sent.
    pub elections_sent: u64,
    /// ANSWER messages sent.
    pub answers_sent: u64,
    /// COORDINATOR messages sent.
    pub coordinators_sent: u64,
    /// Ring tokens passed.
    pub ring_passes: u64,
}

impl ElectionStats {
    /// Every message sent.
    pub fn messages(&self) -> u64 {
        self.elections_sent + self.answers_sent + self.coordinators_sent + self.ring_passes
    }
}

/// One node's side of the bully algorithm (see the module docs).
pub struct Bully {
    id: u32,
    members: Mutex<Vec<u32>>,
    peers: Arc<dyn ElectionPeers>,
    config: BullyConfig,
    leader: watch::Sender<Leader>,
    running: tokio::sync::Mutex<()>,
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain values replaced whole.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Bully {
    /// Node `id` among `members` (other ids; its own is ignored there).
    pub fn new(
        id: u32,
        members: Vec<u32>,
        peers: Arc<dyn ElectionPeers>,
        config: BullyConfig,
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

/// One node's side of the ring algorithm (see the module docs). It shares
/// the leader with a [`Bully`] when given one's sender, or keeps its own.
pub struct Ring {
    id: u32,
    members: Mutex<Vec<u32>>,
    peers: Arc<dyn ElectionPeers>,
    leader: watch::Sender<Leader>,
    passes: AtomicU64,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("id", &self.id)
            .field("leader", &*self.leader.borrow())
            .finish_non_exhaustive()
    }
}

impl Ring {
    /// Node `id` of a ring of `members` (ids, its own included or not).
    pub fn new(id: u32, members: Vec<u32>, peers: Arc<dyn ElectionPeers>) -> Arc<Ring> {
        let (leader, _) = watch::channel(Leader::default());
        let ring = Arc::new(Ring {
            id,
            members: Mutex::new(Vec::new()),
            peers,
            leader,
            passes: AtomicU64::new(0),
        });
        ring.set_members(members);
        ring
    }

    /// Replaces the members.
    pub fn set_members(&self, mut members: Vec<u32>) {
        members.push(self.id);
        members.sort_unstable();
        members.dedup();
        *lock(&self.members) = members;
    }

    /// The leader as this node knows it.
    pub fn leader(&self) -> Leader {
        *self.leader.borrow()
    }

    /// Changes of the leader, to wait on.
    pub fn subscribe(&self) -> watch::Receiver<Leader> {
        self.leader.subscribe()
    }

    /// Tokens this node has passed.
    pub fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }

    /// Starts an election: sends the ELECTION token round.
    pub async fn start(self: &Arc<Self>) {
        let token = RingToken {
            initiator: self.id,
            ids: vec![self.id],
            leader: None,
        };
        if !self.forward(token).await {
            // Alone: this node leads.
            self.set_leader(self.id);
        }
    }

    fn set_leader(&self, id: u32) {
        self.leader.send_modify(|l| {
            if l.id != Some(id) {
                l.term += 1;
            }
            l.id = Some(id);
        });
    }

    /// Passes `token` to the next live successor; false when no other
    /// node took it.
    async fn forward(&self, token: RingToken) -> bool {
        let members = lock(&self.members).clone();
        let pos = members.iter().position(|&m| m == self.id).unwrap_or(0);
        let n = members.len();
        for step in 1..n {
            let to = members[(pos + step) % n];
            self.passes.fetch_add(1, Ordering::Relaxed);
            if self.peers.pass(to, token.clone()).await {
                return true;
            }
            tracing::debug!(id = self.id, to, "ring: successor did not take the token");
        }
        false
    }

    /// A token arrived: acts on it and passes it on in the background. A
    /// token that comes back to a node already in it has gone round: an
    /// ELECTION token becomes the COORDINATOR (even if its initiator died
    /// since), a COORDINATOR token stops.
    pub fn on_token(self: &Arc<Self>, mut token: RingToken) {
        let seen = token.ids.contains(&self.id);
        match token.leader {
            Some(leader) => {
                self.set_leader(leader);
                if seen {
                    return;
                }
                token.ids.push(self.id);
            }
            None if seen => {
                let leader = token.ids.iter().copied().max().unwrap_or(self.id);
                self.set_leader(leader);
                token = RingToken {
                    initiator: self.id,
                    ids: vec![self.id],
                    leader: Some(leader),
                };
            }
            None => token.ids.push(self.id),
        }
        let me = self.clone();
        tokio::spawn(async move {
            me.forward(token).await;
        });
    }
}

#[cfg(test)]
mod tests;
