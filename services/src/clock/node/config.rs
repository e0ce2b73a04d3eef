//! How a node behaves in its group ([`NodeConfig`]), and the untrue
//! timestamps it answers with when told to ([`Misbehaviour`]).

use super::super::berkeley::BerkeleyConfig;
use crate::election::Algorithm;
use std::time::Duration;

/// How a node behaves in its group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeConfig {
    /// The node's id (unique in the group).
    pub id: u32,
    /// Time between Berkeley rounds of a master (default 200 ms). `None`:
    /// a master runs rounds only when asked (`RunRound`,
    /// [`ClockNode::round`](super::ClockNode::round)), and its members, expecting no polls, never
    /// suspect it for its silence.
    pub round_interval: Option<Duration>,
    /// A member that has not been polled for this long suspects its master
    /// (default 600 ms); a node that has just joined its group waits this
    /// long for a coordinator before its first election.
    pub master_timeout: Duration,
    /// How long a poll waits for the members (default 300 ms).
    pub poll_timeout: Duration,
    /// Polls of each member in one round, of which the least delayed is
    /// used (default 4; 1 to [`MAX_POLLS`](crate::clock::MAX_POLLS)).
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

    /// The `(receive, transmit)` times the node answers `GetTime` and
    /// `Poll` with: the true ones, or bent by its
    /// [`misbehaviour`](NodeConfig::misbehaviour).
    pub(super) fn answer_times(&self, receive_ns: i64, transmit_ns: i64) -> (i64, i64) {
        match self.misbehaviour {
            Some(fault) => fault.apply(receive_ns, transmit_ns),
            None => (receive_ns, transmit_ns),
        }
    }
}
