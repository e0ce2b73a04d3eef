//! An exhaustive model checker of the at-most-once protocol, driving the
//! production state machines: the client's [`Session`] (request ids,
//! `ack_up_to`, incarnation, routing of answers, RRA acknowledgements), the
//! server's duplicate filter [`admit`] and its [`History`].
//!
//! One client session calls one server through a network that may deliver
//! any message in flight at any time (so it delays and reorders anything),
//! lose any, and duplicate a bounded number; the server may crash and
//! restart (a new incarnation with an empty history) at any point; a call
//! may give up at any point (its deadline or its attempts ran out). Every
//! reachable state of a small configuration is visited once (states are
//! told apart by a fingerprint of everything that decides their future),
//! and in every one the properties hold:
//! - no request of a non-idempotent call runs twice, in one incarnation or
//!   across a restart (one-way calls: at most once per incarnation, and at
//!   most once in all when their copy named the incarnation);
//! - a call reported OK ran (exactly once, with the first property);
//! - a call reported "did not run" never runs, then or later;
//! - the history stays within its caps.
//!
//! The suite runs the small configurations (`cargo test -p rpc-core --lib
//! protocol_check`); larger ones run by hand in release mode:
//! `cargo test -p rpc-core --release --lib protocol_check -- --ignored --nocapture`.
//!
//! Files: this one (the model's state, the search over it and the events
//! each state allows), `step.rs` (what each event does: the client's and
//! the server's side of a delivered message), `properties.rs` (what must
//! hold in every state), `tests.rs` (the configurations checked).

use crate::client::rto::RtoEstimator;
use crate::client::session::{Final, Routed, Session};
use crate::envelope::{Envelope, ExchangeProtocol, MessageType, SERVER_RESTARTED, VERSION};
use crate::server::admit::{admit, Admission, Request};
use crate::server::history::{History, HistoryConfig, Owner};
use crate::status::{Code, Status};
use bytes::Bytes;
use prost::Message;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

mod properties;
mod step;
#[cfg(test)]
mod tests;

use properties::check;

const SESSION: u64 = 0x5E55;

/// A call's method, as the protocol sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// Non-idempotent, RR.
    Rr,
    /// Non-idempotent, RRA.
    Rra,
    /// Idempotent, RR, synchronous: at-least-once, no history.
    Idempotent,
    /// One-way (R).
    OneWay,
    /// Non-idempotent, RR, asynchronous (ACCEPT, then polls).
    Async,
}

/// How a call ended for its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Outcome {
    /// A REPLY without a status.
    Ok,
    /// An answer with a status (the request may or may not have run,
    /// `Error::may_have_run` decides from the code).
    Failed(Code),
    /// "outcome unknown: server restarted".
    Unknown,
    /// The caller gave up (deadline, attempts).
    GaveUp { may_have_run: bool },
    /// One-way: sent.
    Sent,
}

impl Outcome {
    fn did_not_run(self) -> bool {
        match self {
            Outcome::GaveUp { may_have_run } => !may_have_run,
            Outcome::Failed(code) => !crate::Error::Status(Status::new(code, "")).may_have_run(),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Phase {
    NotStarted,
    Pinging {
        pings: u8,
    },
    /// `inc`: the incarnation every copy names.
    Requesting {
        inc: u64,
        copies: u8,
    },
    Done(Outcome),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Call {
    kind: Kind,
    id: u64,
    phase: Phase,
    /// One-way: the incarnation its copy named.
    named: u64,
}

/// A handler running on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Job {
    id: u64,
    attempt: u32,
    tracked: bool,
    run: u64,
}

/// A message in the network: to the server or to the client, encoded.
type Msg = (bool, Vec<u8>);

#[derive(Debug, Clone)]
struct State {
    client: Session,
    calls: Vec<Call>,
    history: History,
    incarnation: u64,
    running: Vec<Job>,
    net: Vec<Msg>,
    /// Every execution: (request id, incarnation).
    runs: Vec<(u64, u64)>,
    crashes: u8,
    forgets: u8,
    dups: u8,
    drops: u8,
}

/// The size of a configuration.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) calls: Vec<Kind>,
    /// REQUEST copies per call (polls included).
    pub(crate) copies: u8,
    pub(crate) pings: u8,
    pub(crate) dups: u8,
    pub(crate) drops: u8,
    pub(crate) crashes: u8,
    /// Times the server may forget the session (a flood of other sessions
    /// pushes it out under `max_sessions`; its tombstone stays).
    pub(crate) forgets: u8,
    pub(crate) history: HistoryConfig,
    /// Stop after this many distinct states (a safety bound).
    pub(crate) max_states: usize,
}

#[derive(Debug, Clone, Copy)]
enum Event {
    Start,
    Ping(usize),
    BeginRequest(usize),
    Copy(usize),
    GiveUp(usize),
    Deliver(usize),
    Duplicate(usize),
    Drop(usize),
    Complete(usize),
    Crash,
    Forget,
}

/// What the exploration found.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) states: usize,
    pub(crate) complete: bool,
    /// The first violation: the property and the events leading to it.
    pub(crate) violation: Option<(String, Vec<String>)>,
}

struct Checker {
    config: Config,
    now: Instant,
    seen: HashSet<u64>,
    path: Vec<String>,
    violation: Option<(String, Vec<String>)>,
    truncated: bool,
}

/// Explores every state reachable in `config`.
pub(crate) fn explore(config: Config) -> Report {
    let now = Instant::now();
    let rto = RtoEstimator::new(
        Duration::from_millis(100),
        Duration::from_millis(5),
        Duration::from_secs(1),
    );
    let initial = State {
        client: Session::new(rto, 0),
        calls: config
            .calls
            .iter()
            .map(|&kind| Call {
                kind,
                id: 0,
                phase: Phase::NotStarted,
                named: 0,
            })
            .collect(),
        history: History::new(config.history.clone()),
        incarnation: 1,
        running: Vec::new(),
        net: Vec::new(),
        runs: Vec::new(),
        crashes: 0,
        forgets: 0,
        dups: 0,
        drops: 0,
    };
    let mut checker = Checker {
        config,
        now,
        seen: HashSet::new(),
        path: Vec::new(),
        violation: None,
        truncated: false,
    };
    checker.seen.insert(fingerprint(&initial));
    checker.dfs(&initial);
    Report {
        states: checker.seen.len(),
        complete: !checker.truncated,
        violation: checker.violation,
    }
}

fn fingerprint(s: &State) -> u64 {
    let mut h = DefaultHasher::new();
    s.client.fingerprint(&mut h);
    s.calls.hash(&mut h);
    s.history.fingerprint(&mut h);
    s.incarnation.hash(&mut h);
    let mut running = s.running.clone();
    running.sort_unstable();
    running.hash(&mut h);
    let mut net = s.net.clone();
    net.sort_unstable();
    net.hash(&mut h);
    let mut runs = s.runs.clone();
    runs.sort_unstable();
    runs.hash(&mut h);
    (s.crashes, s.forgets, s.dups, s.drops).hash(&mut h);
    h.finish()
}

impl Checker {
    fn dfs(&mut self, state: &State) {
        for event in self.events(state) {
            if self.violation.is_some() || self.truncated {
                return;
            }
            let mut next = state.clone();
            let label = self.apply(&mut next, event);
            if let Some(broken) = check(&next, &self.config) {
                let mut path = self.path.clone();
                path.push(label);
                self.violation = Some((broken, path));
                return;
            }
            if !self.seen.insert(fingerprint(&next)) {
                continue;
            }
            if self.seen.len() >= self.config.max_states {
                self.truncated = true;
                return;
            }
            self.path.push(label);
            self.dfs(&next);
            self.path.pop();
        }
    }

    fn events(&self, s: &State) -> Vec<Event> {
        let c = &self.config;
        let mut out = Vec::new();
        // Calls start in order (their ids are handed out in that order).
        if s.calls.iter().any(|k| k.phase == Phase::NotStarted) {
            out.push(Event::Start);
        }
        for (i, call) in s.calls.iter().enumerate() {
            match call.phase {
                Phase::Pinging { pings } => {
                    if s.client.incarnation() != 0 {
                        out.push(Event::BeginRequest(i));
                    } else if pings < c.pings {
                        out.push(Event::Ping(i));
                    }
                    out.push(Event::GiveUp(i));
                }
                Phase::Requesting { copies, .. } => {
                    if copies < c.copies {
                        out.push(Event::Copy(i));
                    }
                    out.push(Event::GiveUp(i));
                }
                Phase::NotStarted | Phase::Done(_) => {}
            }
        }
        for j in 0..s.net.len() {
            // Identical messages are one choice.
            if s.net[..j].contains(&s.net[j]) {
                continue;
            }
            out.push(Event::Deliver(j));
            if s.dups < c.dups {
                out.push(Event::Duplicate(j));
            }
            if s.drops < c.drops {
                out.push(Event::Drop(j));
            }
        }
        for k in 0..s.running.len() {
            out.push(Event::Complete(k));
        }
        if s.crashes < c.crashes {
            out.push(Event::Crash);
        }
        if s.forgets < c.forgets && s.history.can_forget(SESSION) {
            out.push(Event::Forget);
        }
        out
    }
}
