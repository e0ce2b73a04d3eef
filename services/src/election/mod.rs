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

mod bully;
mod ring;
mod rpc;

pub use bully::Bully;
pub use ring::Ring;
pub use rpc::{ElectionService, RpcPeers};

use crate::lock::lock;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
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

/// What a node's side of either algorithm holds alike: its id, the
/// members (as the algorithm keeps them), the way to the others, its
/// limits, the leader as it knows it, and the election it runs.
struct Node {
    id: u32,
    members: Mutex<Vec<u32>>,
    peers: Arc<dyn ElectionPeers>,
    config: ElectionConfig,
    leader: watch::Sender<Leader>,
    /// Held by the election running.
    running: tokio::sync::Mutex<()>,
}

impl Node {
    fn new(id: u32, peers: Arc<dyn ElectionPeers>, config: ElectionConfig) -> Node {
        let (leader, _) = watch::channel(Leader::default());
        Node {
            id,
            members: Mutex::new(Vec::new()),
            peers,
            config,
            leader,
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// `f.debug_struct(name)` of the algorithm's node: its id and leader.
    fn debug(&self, name: &str, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(name)
            .field("id", &self.id)
            .field("leader", &*self.leader.borrow())
            .finish_non_exhaustive()
    }

    /// The turn to run an election: the guard when no election runs;
    /// `None` once the one running (whose end is the caller's) is over.
    async fn turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.running.try_lock() {
            Ok(guard) => Some(guard),
            Err(_) => {
                let _wait = self.running.lock().await;
                None
            }
        }
    }

    fn leader(&self) -> Leader {
        *self.leader.borrow()
    }

    fn subscribe(&self) -> watch::Receiver<Leader> {
        self.leader.subscribe()
    }

    /// Forgets `leader` if it is the one followed.
    fn suspect(&self, leader: u32) {
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

    /// Runs an election in a task of its own (a failure is logged).
    fn elect_in_background(self) {
        let (id, name) = match &self {
            Election::Bully(b) => (b.id(), "bully"),
            Election::Ring(r) => (r.id(), "ring"),
        };
        tokio::spawn(async move {
            if let Err(e) = self.elect().await {
                tracing::warn!(id, error = %e, "{name}: election failed");
            }
        });
    }
}

#[cfg(test)]
mod tests;
