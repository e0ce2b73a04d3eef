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
//! ([`RoundPolls`]); then it sends each member
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
//! stamped; the node's own calls go through it too.

use super::berkeley::{
    plan_round, polls_per_round, round_id, AdjustLedger, BerkeleyConfig, Exclusion, RoundPolls,
};
use super::logical::{ClockInterceptor, LogicalClocks};
use super::sync::Sample;
use super::time_source::TimeSource;
use crate::election::{
    Algorithm, Bully, Election, ElectionConfig, ElectionService, Leader, Ring, RpcPeers,
};
use crate::proto::clock::v1 as pb;
use rpc_core::client::UdpChannel;
use rpc_core::{CallContext, Client, GroupClient, MemberResult, Status};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// How a node behaves in its group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeConfig {
    /// The node's id (unique in the group).
    pub id: u32,
    /// Time between Berkeley rounds of a master (default 200 ms). `None`:
    /// a master runs rounds only when asked (`RunRound`,
    /// [`ClockNode::round`]), and its members, expecting no polls, never
    /// suspect it for its silence.
    pub round_interval: Option<Duration>,
    /// A member that has not been polled for this long suspects its master
    /// (default 600 ms); a node that has just joined its group waits this
    /// long for a coordinator before its first election.
    pub master_timeout: Duration,
    /// How long a poll waits for the members (default 300 ms).
    pub poll_timeout: Duration,
    /// Polls of each member in one round, of which the least delayed is
    /// used (default 4; 1 to [`WINDOW`](super::sync::WINDOW)).
    pub polls: u32,
    /// The round's limits.
    pub berkeley: BerkeleyConfig,
    /// How far ahead of this node's clock a remote HLC may be (default 1 s).
    pub max_hlc_offset_ns: i64,
    /// The election algorithm the node runs when its master is gone
    /// (default bully). It answers both algorithms' messages whatever
    /// this says; every node of a group should say the same.
    pub election: Algorithm,
    /// A fault for tests: the node answers `GetTime` and `Poll` with
    /// timestamps that cannot be true (default `None`: it answers
    /// truthfully).
    pub misbehaviour: Option<Misbehaviour>,
}

/// Timestamps that cannot be true, which a node answers with when told to
/// (`clock-node --misbehave`), so that tests see a master exclude it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Misbehaviour {
    /// Receive and transmit times 20 years ahead of the clock.
    YearsOff,
    /// A transmit time 10 s after the receive time, so that the server's
    /// time exceeds the round trip: a negative delay.
    NegativeDelay,
}

impl Misbehaviour {
    /// Bends a true `(receive, transmit)` pair into this fault.
    fn apply(self, receive_ns: i64, transmit_ns: i64) -> (i64, i64) {
        const YEARS_20_NS: i64 = 20 * 365 * 86_400 * 1_000_000_000;
        match self {
            Misbehaviour::YearsOff => (
                receive_ns.saturating_add(YEARS_20_NS),
                transmit_ns.saturating_add(YEARS_20_NS),
            ),
            Misbehaviour::NegativeDelay => (receive_ns, receive_ns.saturating_add(10_000_000_000)),
        }
    }
}

impl NodeConfig {
    /// The defaults for node `id`.
    pub fn new(id: u32) -> NodeConfig {
        NodeConfig {
            id,
            round_interval: Some(Duration::from_millis(200)),
            master_timeout: Duration::from_millis(600),
            poll_timeout: Duration::from_millis(300),
            polls: 4,
            berkeley: BerkeleyConfig::default(),
            max_hlc_offset_ns: 1_000_000_000,
            election: Algorithm::Bully,
            misbehaviour: None,
        }
    }
}

/// The other members' clock stubs.
#[derive(Debug, Clone)]
struct Group {
    /// Each other member, by id.
    clients: HashMap<u32, pb::ClockClient>,
    /// The same members' channels, named by their ids, in id order: a
    /// round's polls are group calls over them.
    members: Vec<(String, Client)>,
}

impl Group {
    /// The group of poll `i` of a round: the members rotated by `i`. A
    /// group call sends to its members in order and times each answer
    /// from the call's start, so a member's sample also carries the sends
    /// before its own as outbound delay; rotating puts each member first
    /// in one poll, and that poll's sample is then the least delayed.
    fn rotated(&self, i: usize) -> pb::ClockGroupClient {
        let mut members = self.members.clone();
        if !members.is_empty() {
            let n = members.len();
            members.rotate_left(i % n);
        }
        pb::ClockGroupClient::new(GroupClient::from_members(members))
    }
}

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

/// What one Berkeley round did, as its master saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundReport {
    /// The round id.
    pub round: u64,
    /// The master's id.
    pub master_id: u32,
    /// Each member's offset from the master, ns (the master: 0).
    pub offsets: Vec<(u32, i64)>,
    /// The delay of each member's poll that was used (the least of its
    /// polls), ns.
    pub delays: Vec<(u32, i64)>,
    /// The mean of those kept.
    pub mean_ns: i64,
    /// The adjustments sent (the master's own included), and whether each
    /// was applied.
    pub adjustments: Vec<(u32, i64, bool)>,
    /// Who was left out of the average, and why.
    pub excluded: Vec<(u32, Exclusion)>,
    /// Round trips the round took: the polls (each one fan-out call), then
    /// the adjustments (sent in parallel).
    pub round_trips: u32,
}

impl RoundReport {
    /// The report as `RunRound` answers it: every member once, the master
    /// first, then by id.
    pub fn summary(&self) -> pb::RoundSummary {
        let mut ids: Vec<u32> = self
            .offsets
            .iter()
            .map(|o| o.0)
            .chain(self.adjustments.iter().map(|a| a.0))
            .chain(self.excluded.iter().map(|e| e.0))
            .filter(|&id| id != self.master_id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.insert(0, self.master_id);
        let find = |v: &[(u32, i64)], id: u32| v.iter().find(|x| x.0 == id).map(|x| x.1);
        let members = ids
            .into_iter()
            .map(|id| {
                let adjustment = self.adjustments.iter().find(|a| a.0 == id);
                pb::RoundMember {
                    id,
                    offset_ns: find(&self.offsets, id),
                    delay_ns: find(&self.delays, id),
                    delta_ns: adjustment.map(|a| a.1),
                    applied: adjustment.is_some_and(|a| a.2),
                    excluded: self
                        .excluded
                        .iter()
                        .filter(|e| e.0 == id)
                        .map(|e| e.1.to_string())
                        .collect::<Vec<_>>()
                        .join("; "),
                }
            })
            .collect();
        pb::RoundSummary {
            round: self.round,
            master_id: self.master_id,
            mean_ns: self.mean_ns,
            members,
            round_trips: self.round_trips,
        }
    }
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain values replaced whole.
    m.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Runs one Berkeley round as master and reports it: the polls
    /// ([`NodeConfig::polls`], each one fan-out group call), then each
    /// member's adjustment under one round id. Rounds never overlap: one
    /// asked for while another runs waits for it. `None` when the node is
    /// in no group. It does not check that the node is the master (a
    /// member refuses an adjustment from a master it does not follow).
    ///
    /// # Cancel safety
    /// Cancelling it may leave some members adjusted for the round and
    /// others not; the round id is used up either way.
    pub async fn round(self: Arc<Self>) -> Option<RoundReport> {
        // The group as it is when this round's turn comes, not as it was
        // when the round was asked for.
        let _running = self.round_running.lock().await;
        let group = lock(&self.group).clone()?;
        let term = u32::try_from(self.election.leader().term).unwrap_or(u32::MAX);
        let poll_round = round_id(term, lock(&self.rounds).seq.saturating_add(1));
        let polls_asked = polls_per_round(self.config.polls);
        let mut polls = RoundPolls::new(group.clients.keys().copied());
        let mut newest = lock(&self.ledger).last().unwrap_or(0);
        let mut polls_made = 0u32;
        for i in 0..polls_asked {
            let call = group.rotated(i as usize).poll(pb::PollRequest {
                round: poll_round,
                master_id: self.config.id,
            });
            // The first poll waits for every member; the later ones only
            // for as many as answered it (a dead member does not hold each
            // of them up to the timeout).
            let call = if i == 0 {
                call.all()
            } else {
                call.quorum(polls.answered())
                    .stragglers(rpc_core::Stragglers::Cancel)
            };
            let call = call.retries(0).timeout(self.config.poll_timeout);
            // The clock's own value, as the members answer with theirs.
            let t1 = self.time.read().unheld_ns();
            let outcome = call.await;
            polls_made += 1;
            for m in &outcome.members {
                let Ok(id) = m.member.parse::<u32>() else {
                    continue;
                };
                if let (MemberResult::Reply(r), Some(rtt)) = (&m.result, m.latency) {
                    newest = newest.max(r.last_round);
                    let rtt = i64::try_from(rtt.as_nanos()).unwrap_or(i64::MAX);
                    polls.answer(
                        id,
                        Sample {
                            t1,
                            t2: r.receive_ns,
                            t3: r.transmit_ns,
                            t4: t1.saturating_add(rtt),
                            server_error_ns: 0,
                        },
                    );
                }
            }
            if polls.answered() == 0 {
                break;
            }
        }
        let (readings, silent) = polls.readings();
        // The adjustments' round comes after every round a member has
        // applied, whichever master ran it.
        let round = {
            let mut r = lock(&self.rounds);
            let id = poll_round.max(newest.saturating_add(1));
            r.seq = u32::try_from(id & 0xffff_ffff).unwrap_or(u32::MAX);
            id
        };
        let plan = plan_round(self.config.id, &readings, &silent, &self.config.berkeley);
        let absurd = plan
            .excluded
            .iter()
            .filter(|(_, e)| matches!(e, Exclusion::Absurd(_)))
            .count();
        self.absurd
            .fetch_add(absurd as u64, std::sync::atomic::Ordering::Relaxed);
        let own_error = self.time.error_bound_ns();
        let mut sends = JoinSet::new();
        let mut adjustments = Vec::new();
        for &(id, delta) in &plan.adjustments {
            if id == self.config.id {
                let applied = self.apply(round, self.config.id, delta, 0).is_ok();
                adjustments.push((id, delta, applied));
                continue;
            }
            let Some(client) = group.clients.get(&id).cloned() else {
                continue;
            };
            let delay = readings
                .iter()
                .find(|r| r.id == id)
                .map_or(0, |r| r.sample.delay_ns());
            let error_ns = u64::try_from(delay).unwrap_or(0).div_ceil(2);
            let call = client.adjust(pb::Adjustment {
                round,
                master_id: self.config.id,
                delta_ns: delta,
                error_ns: error_ns.saturating_add(own_error.min(u64::MAX / 2)),
            });
            sends.spawn(async move { (id, delta, call.await) });
        }
        while let Some(done) = sends.join_next().await {
            match done {
                Ok((id, delta, Ok(r))) => {
                    adjustments.push((id, delta, r.applied));
                }
                Ok((id, delta, Err(e))) => {
                    tracing::debug!(id, error = %e, "adjustment not delivered");
                    adjustments.push((id, delta, false));
                }
                Err(e) => tracing::warn!(error = %e, "adjustment task failed"),
            }
        }
        adjustments.sort_unstable_by_key(|a| a.0);
        {
            let mut r = lock(&self.rounds);
            r.excluded.extend(plan.excluded.iter().map(|(id, _)| *id));
            r.excluded.sort_unstable();
            r.excluded.dedup();
        }
        tracing::info!(
            id = self.config.id,
            round,
            mean_ns = plan.mean_ns,
            polls = polls_made,
            excluded = ?plan.excluded,
            "berkeley round"
        );
        Some(RoundReport {
            round,
            master_id: self.config.id,
            offsets: plan.offsets,
            delays: readings
                .iter()
                .map(|r| (r.id, r.sample.delay_ns()))
                .collect(),
            mean_ns: plan.mean_ns,
            adjustments,
            excluded: plan.excluded,
            round_trips: polls_made.saturating_add(1),
        })
    }

    /// Applies round `round`'s adjustment once.
    fn apply(&self, round: u64, master: u32, delta_ns: i64, error_ns: u64) -> Result<(), String> {
        let accepted = lock(&self.ledger).accept(round);
        match accepted {
            Ok(()) => {
                self.time.adjust(delta_ns);
                if !self.time.is_synchronised() || error_ns > 0 {
                    self.time.mark_synchronised(error_ns);
                }
                let mut r = lock(&self.rounds);
                r.last_round = round;
                r.last_master = master;
                Ok(())
            }
            Err(e) => {
                tracing::debug!(round, error = %e, "adjustment ignored");
                Err(e.to_string())
            }
        }
    }

    /// Readings excluded as absurd over the node's life (as master).
    pub fn absurd_readings(&self) -> u64 {
        self.absurd.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The `clock.v1.Clock` service over a shared [`ClockNode`].
#[derive(Debug, Clone)]
pub struct ClockService(pub Arc<ClockNode>);

impl pb::Clock for ClockService {
    async fn get_time(
        &self,
        _ctx: CallContext,
        request: pb::TimeRequest,
    ) -> Result<pb::TimeReading, Status> {
        let t2 = self.0.time.now_ns();
        let node = &self.0;
        let mut reading = pb::TimeReading {
            origin_ns: request.client_transmit_ns,
            receive_ns: t2,
            transmit_ns: 0,
            error_bound_ns: node.time.error_bound_ns(),
            synchronised: node.time.is_synchronised(),
            node_id: node.config.id,
        };
        reading.transmit_ns = node.time.now_ns();
        if let Some(fault) = node.config.misbehaviour {
            (reading.receive_ns, reading.transmit_ns) =
                fault.apply(reading.receive_ns, reading.transmit_ns);
        }
        Ok(reading)
    }

    async fn poll(
        &self,
        _ctx: CallContext,
        request: pb::PollRequest,
    ) -> Result<pb::PollReply, Status> {
        // The clock's own value, not held after a backward step: the
        // master measures what the clock is.
        let t2 = self.0.time.read().unheld_ns();
        let node = &self.0;
        if node.election.leader().id == Some(request.master_id) {
            lock(&node.rounds).last_heard = Some(Instant::now());
        }
        let mut reply = pb::PollReply {
            round: request.round,
            node_id: node.config.id,
            receive_ns: t2,
            transmit_ns: 0,
            last_round: lock(&node.ledger).last().unwrap_or(0),
        };
        reply.transmit_ns = node.time.read().unheld_ns();
        if let Some(fault) = node.config.misbehaviour {
            (reply.receive_ns, reply.transmit_ns) =
                fault.apply(reply.receive_ns, reply.transmit_ns);
        }
        Ok(reply)
    }

    async fn adjust(
        &self,
        _ctx: CallContext,
        request: pb::Adjustment,
    ) -> Result<pb::AdjustResult, Status> {
        let node = &self.0;
        let leader = node.election.leader().id;
        if leader != Some(request.master_id) {
            // Only the master this node follows adjusts it (two masters can
            // coexist for a moment around an election).
            return Ok(pb::AdjustResult {
                applied: false,
                last_round: lock(&node.ledger).last().unwrap_or(0),
                reason: format!(
                    "adjustment from {} but this node follows {leader:?}",
                    request.master_id
                ),
            });
        }
        let outcome = node.apply(
            request.round,
            request.master_id,
            request.delta_ns,
            request.error_ns,
        );
        let last_round = lock(&node.ledger).last().unwrap_or(0);
        Ok(pb::AdjustResult {
            applied: outcome.is_ok(),
            last_round,
            reason: outcome.err().unwrap_or_default(),
        })
    }

    async fn configure(
        &self,
        _ctx: CallContext,
        request: pb::Membership,
    ) -> Result<pb::NodeStatus, Status> {
        let mut members = Vec::new();
        let mut ids = std::collections::HashSet::new();
        for m in &request.members {
            let addr: SocketAddr = m.addr.parse().map_err(|e| {
                Status::invalid_argument(format!("member {} address {:?}: {e}", m.id, m.addr))
            })?;
            // One address an id: polls and adjustments must reach the same
            // member.
            if !ids.insert(m.id) {
                return Err(Status::invalid_argument(format!(
                    "member id {} is given twice",
                    m.id
                )));
            }
            members.push((m.id, addr));
        }
        self.0
            .configure(&members)
            .await
            .map_err(|e| Status::internal(format!("joining the group: {e}")))?;
        Ok(self.0.status())
    }

    async fn status(
        &self,
        _ctx: CallContext,
        _request: pb::Empty,
    ) -> Result<pb::NodeStatus, Status> {
        Ok(self.0.status())
    }

    async fn run_round(
        &self,
        _ctx: CallContext,
        _request: pb::Empty,
    ) -> Result<pb::RoundSummary, Status> {
        let node = &self.0;
        let id = node.config.id;
        let leader = node.election.leader().id;
        if leader != Some(id) {
            return Err(Status::failed_precondition(format!(
                "node {id} is not the master: it follows {leader:?}"
            )));
        }
        let report = node
            .clone()
            .round()
            .await
            .ok_or_else(|| Status::failed_precondition(format!("node {id} is in no group")))?;
        Ok(report.summary())
    }
}
