//! The nemesis: a seeded schedule of faults (kill, restart, pause, resume,
//! partition, isolate, loss bursts, heal) applied to a [`Cluster`] and its
//! [`Net`] while a test's clients run, printed so that a failure
//! reproduces from its seed.
//!
//! A [`Nemesis`] says which faults may happen, to which nodes (process
//! faults) and members (network faults), and how many steps; its
//! [`schedule`](Nemesis::schedule) is a pure function of all that and the
//! seed: the same seed gives the same [`Schedule`], printed the same way.
//! The schedule never kills or pauses more than
//! [`max_faulty`](Nemesis::max_faulty) nodes at once, has at most one
//! network fault at a time (a heal ends it), and ends by undoing every
//! fault it made: resume the paused, restart the killed, heal.
//!
//! [`Schedule::run`] applies the steps in order; before each it calls the
//! test's `pace` closure, which decides when the next fault comes. Pace by
//! events (so many more operations completed), with a bound in time for
//! steps under which the clients cannot progress: when a fault comes may
//! then depend on the machine's speed, but no verdict should.
//!
//! The seed: [`Nemesis::seed_from_env`] reads `RPC_NEMESIS_SEED` and
//! otherwise draws a fresh one; print the schedule (its `Display` names
//! the seed and how to repeat it) before running it, so that a failing
//! test's output says how to run it again.
//!
//! ```
//! use rpc_testkit::{Fault, FaultKind, Nemesis};
//!
//! let nemesis = Nemesis::new(7)
//!     .nodes(["a", "b", "c"])
//!     .members(["a", "b", "c", "client"])
//!     .faults([FaultKind::Kill, FaultKind::Pause, FaultKind::Partition])
//!     .steps(6);
//! let schedule = nemesis.schedule();
//! assert_eq!(schedule, nemesis.schedule(), "the seed decides everything");
//! println!("{schedule}");
//! // Whatever it did, it ends healed with every node running.
//! let mut down = std::collections::BTreeSet::new();
//! for step in schedule.steps() {
//!     match step {
//!         Fault::Kill(n) | Fault::Pause(n) => assert!(down.insert(n.clone())),
//!         Fault::Restart(n) | Fault::Resume(n) => assert!(down.remove(n)),
//!         _ => {}
//!     }
//! }
//! assert!(down.is_empty());
//! ```

use crate::net::{LinkFaults, Net, NetError};
use crate::node::{Node, NodeError};
use crate::Cluster;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom as _, SliceRandom as _};
use rand::{Rng as _, SeedableRng as _};
use std::collections::BTreeSet;
use std::fmt;

/// The environment variable [`Nemesis::seed_from_env`] reads.
pub const SEED_VAR: &str = "RPC_NEMESIS_SEED";

/// One step of a schedule.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Fault {
    /// Kill the node (SIGKILL).
    Kill(String),
    /// Restart the killed node on its address and data.
    Restart(String),
    /// Pause the node (SIGSTOP).
    Pause(String),
    /// Resume the paused node (SIGCONT).
    Resume(String),
    /// Cut the members of one side from those of the other.
    Partition(Vec<String>, Vec<String>),
    /// Cut the member from all others.
    Isolate(String),
    /// Lose this share of the traffic to and from the member.
    LossBurst {
        /// The member.
        node: String,
        /// Loss probability.
        loss: f64,
    },
    /// Lift every network fault.
    Heal,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill(n) => write!(f, "kill {n}"),
            Fault::Restart(n) => write!(f, "restart {n}"),
            Fault::Pause(n) => write!(f, "pause {n}"),
            Fault::Resume(n) => write!(f, "resume {n}"),
            Fault::Partition(a, b) => {
                write!(f, "partition [{}] | [{}]", a.join(", "), b.join(", "))
            }
            Fault::Isolate(n) => write!(f, "isolate {n}"),
            Fault::LossBurst { node, loss } => write!(f, "loss burst {loss} on {node}"),
            Fault::Heal => f.write_str("heal"),
        }
    }
}

/// The kinds of fault a [`Nemesis`] may start; each is undone by the
/// schedule later (restart, resume, heal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum FaultKind {
    /// [`Fault::Kill`], later [`Fault::Restart`].
    Kill,
    /// [`Fault::Pause`], later [`Fault::Resume`].
    Pause,
    /// [`Fault::Partition`] into two random sides, later [`Fault::Heal`].
    Partition,
    /// [`Fault::Isolate`], later [`Fault::Heal`].
    Isolate,
    /// [`Fault::LossBurst`], later [`Fault::Heal`] (UDP networks only).
    LossBurst,
}

/// The seed in `RPC_NEMESIS_SEED` is not a number.
#[derive(Debug, thiserror::Error)]
#[error("{SEED_VAR}={value:?} is not an unsigned 64-bit number")]
pub struct SeedError {
    /// The variable's value.
    pub value: String,
}

/// Why a step could not be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StepError {
    /// A node refused (already dead, did not restart...); the error names
    /// it and its log files.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The network refused (an unknown member...).
    #[error(transparent)]
    Net(#[from] NetError),
    /// The cluster has no node of this name.
    #[error("unknown node {node:?} (the cluster has: {})", known.join(", "))]
    UnknownNode {
        /// The name in the schedule.
        node: String,
        /// The cluster's nodes.
        known: Vec<String>,
    },
    /// A network fault, and no network was given.
    #[error("a network fault needs a Net, and none was given")]
    NoNet,
}

/// A step of a schedule that failed.
#[derive(Debug, thiserror::Error)]
#[error("nemesis seed {seed} ({SEED_VAR}={seed} repeats it), step {step} ({fault}): {source}")]
pub struct NemesisError {
    /// The schedule's seed.
    pub seed: u64,
    /// The step's number (from 1).
    pub step: usize,
    /// The step.
    pub fault: Fault,
    /// What went wrong.
    #[source]
    pub source: Box<StepError>,
}

/// What faults may happen, to whom, and how many: builds a [`Schedule`].
#[derive(Debug, Clone)]
pub struct Nemesis {
    seed: u64,
    nodes: Vec<String>,
    members: Vec<String>,
    kinds: BTreeSet<FaultKind>,
    steps: usize,
    max_faulty: usize,
    loss: f64,
}

setters! {
    Nemesis {
        /// How many steps before the ones that undo what is left.
        steps(steps: usize) => steps,
        /// The most nodes killed or paused at once.
        max_faulty(nodes: usize) => max_faulty,
        /// The loss probability of a burst.
        loss(probability: f64) => loss,
    }
}

impl Nemesis {
    /// A nemesis with this seed: no nodes or members yet, every kind of
    /// fault, 10 steps, at most one node killed or paused at a time, loss
    /// bursts of 0.5.
    pub fn new(seed: u64) -> Nemesis {
        Nemesis {
            seed,
            nodes: Vec::new(),
            members: Vec::new(),
            kinds: [
                FaultKind::Kill,
                FaultKind::Pause,
                FaultKind::Partition,
                FaultKind::Isolate,
                FaultKind::LossBurst,
            ]
            .into(),
            steps: 10,
            max_faulty: 1,
            loss: 0.5,
        }
    }

    /// The seed in `RPC_NEMESIS_SEED`, or else a fresh random one.
    ///
    /// # Errors
    /// When the variable is set to something else than a number.
    pub fn seed_from_env() -> Result<u64, SeedError> {
        match std::env::var(SEED_VAR) {
            Ok(value) => value.trim().parse().map_err(|_| SeedError { value }),
            Err(_) => Ok(rand::random()),
        }
    }

    /// The seed in `RPC_NEMESIS_SEED` (`random`: a fresh random one), or
    /// else `default`: a suite run in CI repeats the same schedule, and a
    /// run by hand can explore others.
    ///
    /// # Errors
    /// When the variable is set to something else than a number or
    /// `random`.
    pub fn seed_from_env_or(default: u64) -> Result<u64, SeedError> {
        match std::env::var(SEED_VAR) {
            Ok(value) if value.trim() == "random" => Ok(rand::random()),
            Ok(value) => value.trim().parse().map_err(|_| SeedError { value }),
            Err(_) => Ok(default),
        }
    }

    /// The nodes that may be killed and paused (names in the [`Cluster`]).
    pub fn nodes(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Nemesis {
        self.nodes = names.into_iter().map(Into::into).collect();
        self
    }

    /// The members that partitions, isolations and loss bursts may cut
    /// (names in the [`Net`]; clients included, for a partition to reach
    /// them).
    pub fn members(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Nemesis {
        self.members = names.into_iter().map(Into::into).collect();
        self
    }

    /// The kinds of fault that may start.
    pub fn faults(mut self, kinds: impl IntoIterator<Item = FaultKind>) -> Nemesis {
        self.kinds = kinds.into_iter().collect();
        self
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The schedule: the same for the same seed and settings.
    pub fn schedule(&self) -> Schedule {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut down = BTreeSet::new();
        let mut paused = BTreeSet::new();
        let mut net_fault = false;
        let mut steps = Vec::with_capacity(self.steps + self.nodes.len() + 1);
        let has = |k| self.kinds.contains(&k);
        for _ in 0..self.steps {
            let faulty = down.len() + paused.len();
            let up: Vec<&String> = self
                .nodes
                .iter()
                .filter(|n| !down.contains(*n) && !paused.contains(*n))
                .collect();
            // One option per kind of step (not per target), so a large
            // cluster does not crowd out the network faults.
            let mut options: Vec<u8> = Vec::new();
            if has(FaultKind::Kill) && faulty < self.max_faulty && !up.is_empty() {
                options.push(0);
            }
            if !down.is_empty() {
                options.push(1);
            }
            if has(FaultKind::Pause) && faulty < self.max_faulty && !up.is_empty() {
                options.push(2);
            }
            if !paused.is_empty() {
                options.push(3);
            }
            if !net_fault && self.members.len() >= 2 {
                if has(FaultKind::Partition) {
                    options.push(4);
                }
                if has(FaultKind::Isolate) {
                    options.push(5);
                }
                if has(FaultKind::LossBurst) {
                    options.push(6);
                }
            }
            if net_fault {
                options.push(7);
            }
            let Some(&option) = options.choose(&mut rng) else {
                break;
            };
            let pick = |rng: &mut StdRng, from: &[&String]| -> String {
                from.choose(rng).map(|s| (*s).clone()).unwrap_or_default()
            };
            let members: Vec<&String> = self.members.iter().collect();
            let fault = match option {
                0 => Fault::Kill(pick(&mut rng, &up)),
                1 => Fault::Restart(pick(&mut rng, &down.iter().collect::<Vec<_>>())),
                2 => Fault::Pause(pick(&mut rng, &up)),
                3 => Fault::Resume(pick(&mut rng, &paused.iter().collect::<Vec<_>>())),
                4 => {
                    let mut order: Vec<usize> = (0..self.members.len()).collect();
                    order.shuffle(&mut rng);
                    let split = rng.random_range(1..order.len());
                    let mut side_a: Vec<usize> = order[..split].to_vec();
                    let mut side_b: Vec<usize> = order[split..].to_vec();
                    side_a.sort_unstable();
                    side_b.sort_unstable();
                    let names = |side: Vec<usize>| -> Vec<String> {
                        side.into_iter().map(|i| self.members[i].clone()).collect()
                    };
                    Fault::Partition(names(side_a), names(side_b))
                }
                5 => Fault::Isolate(pick(&mut rng, &members)),
                6 => Fault::LossBurst {
                    node: pick(&mut rng, &members),
                    loss: self.loss,
                },
                _ => Fault::Heal,
            };
            match &fault {
                Fault::Kill(n) => {
                    down.insert(n.clone());
                }
                Fault::Restart(n) => {
                    down.remove(n);
                }
                Fault::Pause(n) => {
                    paused.insert(n.clone());
                }
                Fault::Resume(n) => {
                    paused.remove(n);
                }
                Fault::Heal => net_fault = false,
                _ => net_fault = true,
            }
            steps.push(fault);
        }
        // Undo what is left, in a fixed order.
        steps.extend(paused.into_iter().map(Fault::Resume));
        steps.extend(down.into_iter().map(Fault::Restart));
        if net_fault {
            steps.push(Fault::Heal);
        }
        Schedule {
            seed: self.seed,
            steps,
        }
    }
}

/// A seeded list of faults; its `Display` prints the seed, how to repeat
/// it, and every step.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    seed: u64,
    steps: Vec<Fault>,
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "nemesis seed {} ({SEED_VAR}={} repeats it), {} steps:",
            self.seed,
            self.seed,
            self.steps.len()
        )?;
        for (i, step) in self.steps.iter().enumerate() {
            write!(f, "\n  {:>3}. {step}", i + 1)?;
        }
        Ok(())
    }
}

impl Schedule {
    /// A schedule of these steps (for a test that wants exact faults).
    pub fn from_steps(seed: u64, steps: Vec<Fault>) -> Schedule {
        Schedule { seed, steps }
    }

    /// The seed it came from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[Fault] {
        &self.steps
    }

    /// Applies the steps in order to `cluster` and `net`, calling
    /// `pace(number, step)` (numbers from 1) before each: the test waits
    /// there for its clients to progress. Each step is logged (`tracing`,
    /// info) as it is applied. Blocks the thread during node operations
    /// (each bounded by the node's timeouts): run it on a thread of its
    /// own or in `tokio::task::spawn_blocking`.
    ///
    /// # Errors
    /// The first step that fails, with the seed, its number and why; the
    /// steps after it are not applied.
    pub fn run(
        &self,
        cluster: &mut Cluster,
        mut net: Option<&mut Net>,
        mut pace: impl FnMut(usize, &Fault),
    ) -> Result<(), NemesisError> {
        for (i, fault) in self.steps.iter().enumerate() {
            pace(i + 1, fault);
            tracing::info!(seed = self.seed, step = i + 1, %fault, "nemesis");
            apply(fault, cluster, net.as_deref_mut()).map_err(|source| NemesisError {
                seed: self.seed,
                step: i + 1,
                fault: fault.clone(),
                source: Box::new(source),
            })?;
        }
        Ok(())
    }
}

/// Applies one fault to `cluster` (process faults) or `net` (network
/// faults).
///
/// # Errors
/// [`StepError::UnknownNode`] for a node the cluster lacks,
/// [`StepError::NoNet`] for a network fault without a network, and what
/// the node or the network said.
pub fn apply(fault: &Fault, cluster: &mut Cluster, net: Option<&mut Net>) -> Result<(), StepError> {
    match fault {
        Fault::Kill(n) => {
            node(cluster, n)?.kill()?;
        }
        Fault::Restart(n) => node(cluster, n)?.restart()?,
        Fault::Pause(n) => node(cluster, n)?.pause()?,
        Fault::Resume(n) => node(cluster, n)?.resume()?,
        network => {
            let net = net.ok_or(StepError::NoNet)?;
            match network {
                Fault::Partition(a, b) => {
                    let a: Vec<&str> = a.iter().map(String::as_str).collect();
                    let b: Vec<&str> = b.iter().map(String::as_str).collect();
                    net.partition(&a, &b)?;
                }
                Fault::Isolate(n) => net.isolate(n)?,
                Fault::LossBurst { node, loss } => {
                    net.set_node_faults(node, LinkFaults::none().loss(*loss))?;
                }
                _ => net.heal()?,
            }
        }
    }
    Ok(())
}

fn node<'c>(cluster: &'c mut Cluster, name: &str) -> Result<&'c mut Node, StepError> {
    let known: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| n.name().to_owned())
        .collect();
    cluster.node_mut(name).ok_or(StepError::UnknownNode {
        node: name.to_owned(),
        known,
    })
}
