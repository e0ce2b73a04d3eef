//! [`ClockNode`]: the clock service of one process (`clock.v1.Clock`) and
//! its part in a group: Berkeley rounds when it is the master, elections
//! (bully, or ring: [`NodeConfig::election`]) when the master is gone.
//!
//! The node serves `GetTime` from its [`TimeSource`] at any time. After
//! `Configure` tells it the group, [`ClockNode::run`] drives it: a master
//! runs a round every [`NodeConfig::round_interval`]; a member that has
//! not been polled by its master for [`NodeConfig::master_timeout`] (or
//! knows none) starts an election. Every wait is bounded and wakes on
//! events (a poll, a COORDINATOR, a configuration). With no round interval
//! the master runs a round only when asked (`RunRound`,
//! [`ClockNode::round`]), and its members do not judge it by its silence.
//!
//! A round ([`ClockNode::round`]) polls the members
//! [`NodeConfig::polls`] times in a row, each poll one fan-out group call,
//! and keeps each member's least delayed answer
//! ([`RoundPolls`](super::berkeley::RoundPolls)); then it sends each member
//! its one adjustment for the round's one id. A member's first adjustment
//! steps its clock (it was never synchronised), so one round is in effect
//! as soon as it is applied (after a backward step, once the readings'
//! hold is over); later ones slew ([`TimeSource::adjust`]).
//!
//! Logical clocks: the node's [`ClockInterceptor`]
//! ([`ClockNode::interceptor`]) carries them. Served with it, every call's
//! clock metadata is merged before the handler (malformed metadata is
//! refused with `INVALID_ARGUMENT`, an HLC too far ahead with
//! `OUT_OF_RANGE`, and the handler does not run) and every answer is
//!
//! # Files
//!
//! - `config.rs`: [`NodeConfig`] and the [`Misbehaviour`] faults;
//! - `round.rs`: a Berkeley round as master ([`ClockNode::round`]) and its
//!   [`RoundReport`];
//! - `service.rs`: [`ClockService`], the `clock.v1.Clock` handlers;
//! - this file: [`ClockNode`], its state, joining a group and the driver
//!   ([`ClockNode::run`]).

mod config;
mod round;
mod service;

pub use config::{Misbehaviour, NodeConfig};
pub use round::RoundReport;
pub use service::ClockService;

use super::berkeley::AdjustLedger;
use super::logical::{ClockInterceptor, LogicalClocks};
use super::time_source::TimeSource;
use crate::election::{
    Algorithm, Bully, Election, ElectionConfig, ElectionService, Leader, Ring, RpcPeers,
};
use crate::lock::lock;
use crate::proto::clock::v1 as pb;
use round::Group;
use rpc_core::client::UdpChannel;
use rpc_core::Client;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

#[derive(Debug, Default)]
struct Rounds {
    /// This node's last round as master.
    seq: u32,
    last_round: u64,
    last_master: u32,
    excluded: Vec<u32>,
    /// When the master last polled this node (or a leader became known).
    last_heard: Option<Instant>,
    /// The last leader seen by the driver.
    seen_leader: Leader,
    /// When the node joined its group.
    joined: Option<Instant>,
}

/// The clock service of one process, and its part in the group.
#[derive(Debug)]
pub struct ClockNode {
    config: NodeConfig,
    time: Arc<TimeSource>,
    clocks: Arc<LogicalClocks>,
    interceptor: ClockInterceptor,
    ledger: Mutex<AdjustLedger>,
    rounds: Mutex<Rounds>,
    group: Mutex<Option<Group>>,
    peers: Arc<RpcPeers>,
    bully: Arc<Bully>,
    ring: Arc<Ring>,
    /// The one of the two that the node runs.
    election: Election,
    /// Woken by polls, configurations and leader changes.
    events: Notify,
    /// Held by the round running, so that rounds (scheduled or asked for)
    /// never overlap.
    round_running: tokio::sync::Mutex<()>,
    absurd: std::sync::atomic::AtomicU64,
}

impl ClockNode {
    /// A node over `time`, not yet in a group.
    pub fn new(config: NodeConfig, time: Arc<TimeSource>) -> Arc<ClockNode> {
        let peers = Arc::new(RpcPeers::new(Duration::from_millis(150)));
        let election_config = ElectionConfig {
            coordinator_wait: config.master_timeout,
            max_attempts: 5,
        };
        let bully = Bully::new(config.id, Vec::new(), peers.clone(), election_config);
        let ring = Ring::new(config.id, Vec::new(), peers.clone(), election_config);
        let election = match config.election {
            Algorithm::Ring => Election::Ring(ring.clone()),
            Algorithm::Bully => Election::Bully(bully.clone()),
        };
        let clocks = Arc::new(LogicalClocks::new(
            config.id,
            time.clone(),
            config.max_hlc_offset_ns,
        ));
        Arc::new(ClockNode {
            interceptor: ClockInterceptor::new(clocks.clone()),
            clocks,
            config,
            time,
            ledger: Mutex::new(AdjustLedger::default()),
            rounds: Mutex::new(Rounds::default()),
            group: Mutex::new(None),
            peers,
            bully,
            ring,
            election,
            events: Notify::new(),
            round_running: tokio::sync::Mutex::new(()),
            absurd: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The node's clock.
    pub fn time(&self) -> &Arc<TimeSource> {
        &self.time
    }

    /// The node's logical clocks.
    pub fn clocks(&self) -> &LogicalClocks {
        &self.clocks
    }

    /// The interceptor that carries the node's logical clocks: serve the
    /// node with it (`ServerBuilder::intercept`); the node's own calls
    /// already use it.
    pub fn interceptor(&self) -> ClockInterceptor {
        self.interceptor.clone()
    }

    /// The node's bully election (it answers bully messages whichever
    /// algorithm it runs).
    pub fn bully(&self) -> &Arc<Bully> {
        &self.bully
    }

    /// The election the node runs ([`NodeConfig::election`]).
    pub fn election(&self) -> &Election {
        &self.election
    }

    /// The `clock.v1.Election` service of this node, to serve beside it.
    pub fn election_service(&self) -> ElectionService {
        ElectionService::new(self.bully.clone(), self.ring.clone())
    }

    /// The node's state.
    pub fn status(&self) -> pb::NodeStatus {
        let r = self.time.read();
        let rounds = lock(&self.rounds);
        let stats = self.election.stats();
        pb::NodeStatus {
            node_id: self.config.id,
            coordinator: self.election.leader().id.unwrap_or(0),
            last_round: rounds.last_round,
            last_round_master: rounds.last_master,
            synchronised: self.time.is_synchronised(),
            slew_remaining_ns: self.time.slew_remaining_ns(),
            hold_ns: r.hold_ns,
            election_messages_sent: stats.messages(),
            elections_started: stats.started,
            excluded: rounds.excluded.clone(),
            adjustments_ignored: lock(&self.ledger).ignored(),
            absurd_readings: self.absurd_readings(),
        }
    }

    /// Joins the group `members` (`(id, UDP address)`, this node's own
    /// entry included or not).
    ///
    /// # Errors
    /// When a socket cannot be bound.
    pub async fn configure(&self, members: &[(u32, SocketAddr)]) -> Result<(), rpc_core::Error> {
        let mut others: Vec<(u32, SocketAddr)> = members
            .iter()
            .copied()
            .filter(|&(id, _)| id != self.config.id)
            .collect();
        // An id given twice keeps its first address, for the polls and the
        // adjustments alike (the RPC refuses such a membership outright).
        let mut seen = std::collections::HashSet::new();
        others.retain(|&(id, _)| seen.insert(id));
        let mut clients = HashMap::new();
        let mut group = Vec::new();
        for &(id, addr) in &others {
            let client =
                Client::new(UdpChannel::connect(addr).await?).intercepted(self.interceptor());
            group.push((id, client.clone()));
            clients.insert(id, pb::ClockClient::new(client));
        }
        group.sort_unstable_by_key(|m| m.0);
        self.peers.set(&others).await?;
        let ids: Vec<u32> = others.iter().map(|&(id, _)| id).collect();
        self.bully.set_members(ids.clone());
        self.ring.set_members(ids);
        lock(&self.rounds).joined.get_or_insert_with(Instant::now);
        *lock(&self.group) = Some(Group {
            clients,
            members: group
                .into_iter()
                .map(|(id, client)| (id.to_string(), client))
                .collect(),
        });
        self.events.notify_one();
        Ok(())
    }

    /// Drives the node: rounds as master, elections when the master is
    /// gone. It never returns: run it in a task, and abort the task to
    /// stop.
    pub async fn run(self: Arc<Self>) {
        let mut leader_rx = self.election.subscribe();
        loop {
            if lock(&self.group).is_none() {
                self.events.notified().await;
                continue;
            }
            let leader = self.election.leader();
            let now = Instant::now();
            let (heard, changed) = {
                let mut r = lock(&self.rounds);
                let changed = r.seen_leader != leader;
                if changed {
                    r.seen_leader = leader;
                    r.last_heard = Some(now);
                }
                (r.last_heard, changed)
            };
            if changed {
                tracing::info!(id = self.config.id, ?leader, "leader changed");
            }
            if leader.id == Some(self.config.id) {
                match self.config.round_interval {
                    Some(interval) => {
                        self.clone().round().await;
                        let _ = tokio::time::timeout(interval, leader_rx.changed()).await;
                    }
                    // Rounds on request only: wait for the leadership to
                    // change. (The sender lives in `self.election`, so the
                    // wait cannot end at once with an error.)
                    None => {
                        let _ = leader_rx.changed().await;
                    }
                }
                continue;
            }
            let silent_for = heard.map_or(Duration::MAX, |h| now.saturating_duration_since(h));
            // A node that has just joined first listens for a coordinator
            // for a master timeout, so that the group's members all join
            // before the first election.
            let joined_for = lock(&self.rounds)
                .joined
                .map_or(Duration::MAX, |j| now.saturating_duration_since(j));
            if leader.id.is_none() && joined_for < self.config.master_timeout {
                let left = self.config.master_timeout.saturating_sub(joined_for);
                let _ = tokio::time::timeout(left, leader_rx.changed()).await;
                continue;
            }
            // With rounds on request, the master's silence says nothing.
            let silence_counts = self.config.round_interval.is_some();
            if leader.id.is_none() || (silence_counts && silent_for >= self.config.master_timeout) {
                if let Some(old) = leader.id {
                    tracing::info!(id = self.config.id, old, "master silent: election");
                    self.election.suspect(old);
                }
                if let Err(e) = self.election.elect().await {
                    tracing::warn!(id = self.config.id, error = %e, "election failed");
                }
                continue;
            }
            let left = if silence_counts {
                self.config.master_timeout.saturating_sub(silent_for)
            } else {
                // Nothing to time out: wake on events only (bounded anyway).
                self.config.master_timeout.max(Duration::from_secs(1))
            };
            tokio::select! {
                _ = tokio::time::sleep(left) => {}
                _ = leader_rx.changed() => {}
                _ = self.events.notified() => {}
            }
        }
    }

    /// Readings excluded as absurd over the node's life (as master).
    pub fn absurd_readings(&self) -> u64 {
        self.absurd.load(std::sync::atomic::Ordering::Relaxed)
    }
}
