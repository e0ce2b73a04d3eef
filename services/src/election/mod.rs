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
//! the coordinator, and a COORDINATOR token goes round once more. It
//! starts at the winner's successor and ends at the winner, which so
//! follows itself last, when every other node already follows it (as
//! bully's winner announces itself before it acts as coordinator). With
//! one initiator that is 2n passes for a ring of n, a pass to a dead node
//! counted (it is sent, and fails); one fewer when the initiator is the
//! winner's next live successor (it hands the COORDINATOR to itself).
//! Several nodes that notice the death at once each start a token; as in
//! Chang and Roberts (1979), a node that has lately passed on the token of
//! a higher initiator drops a lower one (and a second copy of the same
//! initiator's, as a retransmitted pass delivers), so the highest
//! initiator's token alone goes round, and each other token costs at most
//! n passes before it is dropped: at most 2n + (k - 1)n passes for k
//! initiators, as long as the lower tokens are dropped before the
//! winner's COORDINATOR clears the nodes' memory of them (a token that
//! lags behind it goes round too). A COORDINATOR naming a lower id than
//! the node's own (the node was skipped, e.g. its pass timed out) makes it
//! start an election, as in bully.
//!
//! [`Election`] is either algorithm behind one interface: what a service
//! that needs a leader holds ([`Algorithm`] says which).
//!
//! Each bully election has a term, one more than the highest term the
//! winner knows, so that a newer coordinator is always told from an older
//! one; a ring node counts its own leader changes as its term.

mod rpc;

pub use rpc::{ElectionService, RpcPeers};

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

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

/// Timing of an election (either algorithm).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElectionConfig {
    /// How long a node waits for a COORDINATOR before it starts again
    /// (bully: after a higher node answered; ring: after it sent or passed
    /// on an ELECTION token) (default 1 s).
    pub coordinator_wait: Duration,
    /// Attempts before [`Bully::elect`] or [`Ring::elect`] gives up
    /// (default 5).
    pub max_attempts: u32,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        ElectionConfig {
            coordinator_wait: Duration::from_secs(1),
            max_attempts: 5,
        }
    }
}

/// An election that ended without a leader.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ElectionError {
    /// No COORDINATOR came, `attempts` times (bully: higher nodes
    /// answered but none announced itself; ring: no token came back).
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
    config: ElectionConfig,
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

/// One node's side of the ring algorithm (see the module docs).
pub struct Ring {
    id: u32,
    members: Mutex<Vec<u32>>,
    peers: Arc<dyn ElectionPeers>,
    config: ElectionConfig,
    leader: watch::Sender<Leader>,
    /// Counts the COORDINATORs this node has taken (one that names the
    /// leader it had already included), for [`Ring::elect`] to wait on.
    coordinators: watch::Sender<u64>,
    /// The highest initiator whose ELECTION token this node started or
    /// passed on, and when; cleared by a COORDINATOR, ignored once older
    /// than [`ElectionConfig::coordinator_wait`] (its token was lost).
    participating: Mutex<Option<(u32, Instant)>>,
    running: tokio::sync::Mutex<()>,
    passes: AtomicU64,
    started: AtomicU64,
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
    pub fn new(
        id: u32,
        members: Vec<u32>,
        peers: Arc<dyn ElectionPeers>,
        config: ElectionConfig,
    ) -> Arc<Ring> {
        let (leader, _) = watch::channel(Leader::default());
        let (coordinators, _) = watch::channel(0);
        let ring = Arc::new(Ring {
            id,
            members: Mutex::new(Vec::new()),
            peers,
            config,
            leader,
            coordinators,
            participating: Mutex::new(None),
            running: tokio::sync::Mutex::new(()),
            passes: AtomicU64::new(0),
            started: AtomicU64::new(0),
        });
        ring.set_members(members);
        ring
    }

    /// This node's id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Replaces the members.
    pub fn set_members(&self, mut members: Vec<u32>) {
        members.push(self.id);
        members.sort_unstable();
        members.dedup();
        *lock(&self.members) = members;
    }

    /// The other members' ids.
    pub fn members(&self) -> Vec<u32> {
        lock(&self.members)
            .iter()
            .copied()
            .filter(|&m| m != self.id)
            .collect()
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
        participation.filter(|(_, at)| at.elapsed() < self.config.coordinator_wait)
    }

    /// Starts an election: sends an ELECTION token round, whatever else
    /// is going round.
    pub async fn start(self: &Arc<Self>) {
        self.started.fetch_add(1, Ordering::Relaxed);
        {
            let mut p = lock(&self.participating);
            let live = self.unexpired(*p);
            let highest = live.map_or(self.id, |(i, _)| i.max(self.id));
            *p = Some((highest, Instant::now()));
        }
        let token = RingToken {
            initiator: self.id,
            ids: vec![self.id],
            leader: None,
        };
        tracing::debug!(id = self.id, "ring: ELECTION");
        if !self.forward(token).await {
            // Alone: this node leads.
            self.set_leader(self.id);
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
        let Ok(_guard) = self.running.try_lock() else {
            // One is running: its end is ours.
            let _wait = self.running.lock().await;
            return Ok(self.leader());
        };
        let attempts = self.config.max_attempts.max(1);
        for attempt in 0..attempts {
            let mut rx = self.coordinators.subscribe();
            rx.borrow_and_update();
            match self.participating() {
                Some(initiator) if attempt == 0 && initiator != self.id => {
                    tracing::debug!(
                        id = self.id,
                        initiator,
                        "ring: joining the election going round"
                    );
                }
                _ => self.start().await,
            }
            // Any COORDINATOR taken since, even one that names the same
            // leader again.
            if let Ok(Ok(())) =
                tokio::time::timeout(self.config.coordinator_wait, rx.changed()).await
            {
                return Ok(self.leader());
            }
            tracing::debug!(id = self.id, "ring: no COORDINATOR; again");
        }
        Err(ElectionError::NoLeader { attempts })
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

    /// Takes a COORDINATOR: follows `id` (subscribers hear of a change
    /// only) and forgets the election.
    fn set_leader(&self, id: u32) {
        *lock(&self.participating) = None;
        self.leader.send_if_modified(|l| {
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
        self.forward_after(self.id, token).await
    }

    /// Passes `token` to the next live successor of `after`; when that is
    /// this node, it acts on the token itself (no message). False when no
    /// node took it.
    async fn forward_after(self: &Arc<Self>, after: u32, token: RingToken) -> bool {
        let members = lock(&self.members).clone();
        let pos = members.iter().position(|&m| m == after).unwrap_or(0);
        let n = members.len();
        for step in 1..n {
            let to = members[(pos + step) % n];
            if to == self.id {
                self.on_token(token);
                return true;
            }
            self.passes.fetch_add(1, Ordering::Relaxed);
            if self.peers.pass(to, token.clone()).await {
                return true;
            }
            tracing::debug!(id = self.id, to, "ring: successor did not take the token");
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
        let seen = token.ids.contains(&self.id);
        match token.leader {
            Some(leader) if leader == self.id => {
                tracing::info!(id = self.id, "ring: coordinator, followed by the ring");
                self.set_leader(leader);
                return;
            }
            Some(leader) => {
                self.set_leader(leader);
                if leader < self.id && !self.members().is_empty() {
                    tracing::info!(id = self.id, leader, "ring: a lower coordinator; election");
                    let me = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = me.elect().await {
                            tracing::warn!(id = me.id, error = %e, "ring: election failed");
                        }
                    });
                }
                if seen {
                    return;
                }
                token.ids.push(self.id);
            }
            None if seen => {
                let leader = token.ids.iter().copied().max().unwrap_or(self.id);
                tracing::debug!(id = self.id, leader, "ring: ELECTION back; COORDINATOR");
                let coordinator = RingToken {
                    initiator: self.id,
                    ids: Vec::new(),
                    leader: Some(leader),
                };
                if leader != self.id {
                    self.set_leader(leader);
                }
                let me = self.clone();
                tokio::spawn(async move {
                    if !me.forward_after(leader, coordinator).await && leader == me.id {
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
                        id = self.id,
                        initiator = token.initiator,
                        passed,
                        "ring: ELECTION dropped (this node passed on one as high)"
                    );
                    return;
                }
                *p = Some((token.initiator, Instant::now()));
                drop(p);
                token.ids.push(self.id);
            }
        }
        let me = self.clone();
        tokio::spawn(async move {
            me.forward(token).await;
        });
    }
}

/// Which algorithm elects the leader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Algorithm {
    /// [`Bully`] (the default).
    #[default]
    Bully,
    /// [`Ring`].
    Ring,
}

/// A node's election by either algorithm, behind one interface: what a
/// service that needs a leader holds.
#[derive(Debug, Clone)]
pub enum Election {
    /// By the bully algorithm.
    Bully(Arc<Bully>),
    /// By the ring algorithm.
    Ring(Arc<Ring>),
}

impl Election {
    /// The leader as this node knows it.
    pub fn leader(&self) -> Leader {
        match self {
            Election::Bully(b) => b.leader(),
            Election::Ring(r) => r.leader(),
        }
    }

    /// Changes of the leader, to wait on.
    pub fn subscribe(&self) -> watch::Receiver<Leader> {
        match self {
            Election::Bully(b) => b.subscribe(),
            Election::Ring(r) => r.subscribe(),
        }
    }

    /// Runs an election ([`Bully::elect`], [`Ring::elect`]).
    ///
    /// # Errors
    /// [`ElectionError::NoLeader`] when no COORDINATOR came.
    ///
    /// # Cancel safety
    /// As the algorithm's `elect`.
    pub async fn elect(&self) -> Result<Leader, ElectionError> {
        match self {
            Election::Bully(b) => b.elect().await,
            Election::Ring(r) => r.elect().await,
        }
    }

    /// Forgets the leader (it was found dead) without an election.
    pub fn suspect(&self, leader: u32) {
        match self {
            Election::Bully(b) => b.suspect(leader),
            Election::Ring(r) => r.suspect(leader),
        }
    }

    /// What this node has sent in elections of this algorithm.
    pub fn stats(&self) -> ElectionStats {
        match self {
            Election::Bully(b) => b.stats(),
            Election::Ring(r) => r.stats(),
        }
    }
}

#[cfg(test)]
mod tests;
