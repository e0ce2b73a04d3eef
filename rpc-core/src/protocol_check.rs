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

    /// Applies `event`; returns a line describing it.
    fn apply(&self, s: &mut State, event: Event) -> String {
        match event {
            Event::Start => {
                let Some(i) = s.calls.iter().position(|k| k.phase == Phase::NotStarted) else {
                    return "nothing to start".into();
                };
                let kind = s.calls[i].kind;
                if kind == Kind::OneWay {
                    let id = s.client.start_one_way();
                    let inc = s.client.incarnation();
                    let env = request(id, kind, inc, 1, s.client.ack_up_to().min(id - 1));
                    s.calls[i].id = id;
                    s.calls[i].named = inc;
                    s.calls[i].phase = Phase::Done(Outcome::Sent);
                    let line = format!(
                        "client: one-way call {i} gets id {id}, sends {}",
                        show(&env)
                    );
                    s.net.push((true, env.encode_to_vec()));
                    return line;
                }
                let id = s.client.start_call(kind == Kind::Rra);
                s.calls[i].id = id;
                // As the exchange does: a non-idempotent call PINGs first
                // while the incarnation is unknown.
                let needs_ping = kind != Kind::Idempotent && s.client.incarnation() == 0;
                if needs_ping {
                    if let Some(e) = s.client.entry(id) {
                        e.pinging = true;
                    }
                    s.calls[i].phase = Phase::Pinging { pings: 0 };
                } else {
                    s.calls[i].phase = Phase::Requesting {
                        inc: s.client.incarnation(),
                        copies: 0,
                    };
                }
                format!("client: call {i} ({kind:?}) gets id {id}")
            }
            Event::Ping(i) => {
                let Phase::Pinging { pings } = s.calls[i].phase else {
                    return "no ping".into();
                };
                s.calls[i].phase = Phase::Pinging { pings: pings + 1 };
                let env = Envelope {
                    version: VERSION,
                    r#type: MessageType::Ping as i32,
                    request_id: s.calls[i].id,
                    session_id: SESSION,
                    attempt: u32::from(pings) + 1,
                    ack_up_to: s.client.ack_up_to(),
                    ..Envelope::default()
                };
                s.net.push((true, env.encode_to_vec()));
                format!("client: call {i} sends {}", show(&env))
            }
            Event::BeginRequest(i) => {
                let id = s.calls[i].id;
                if let Some(e) = s.client.entry(id) {
                    e.pinging = false;
                }
                let inc = s.client.incarnation();
                s.calls[i].phase = Phase::Requesting { inc, copies: 0 };
                format!("client: call {i} learned incarnation {inc}")
            }
            Event::Copy(i) => {
                let Phase::Requesting { inc, copies } = s.calls[i].phase else {
                    return "no copy".into();
                };
                s.calls[i].phase = Phase::Requesting {
                    inc,
                    copies: copies + 1,
                };
                let call = s.calls[i];
                let env = request(
                    call.id,
                    call.kind,
                    inc,
                    u32::from(copies) + 1,
                    s.client.ack_up_to(),
                );
                s.net.push((true, env.encode_to_vec()));
                format!("client: call {i} sends {}", show(&env))
            }
            Event::GiveUp(i) => {
                let copies = match s.calls[i].phase {
                    Phase::Requesting { copies, .. } => copies,
                    _ => 0,
                };
                let outcome = Outcome::GaveUp {
                    may_have_run: copies > 0,
                };
                s.calls[i].phase = Phase::Done(outcome);
                s.client.end_call(s.calls[i].id);
                format!("client: call {i} gives up ({outcome:?})")
            }
            Event::Deliver(j) => {
                let (to_server, bytes) = s.net.remove(j);
                let Ok(env) = Envelope::decode(bytes.as_slice()) else {
                    return "undecodable".into();
                };
                if to_server {
                    self.server_receives(s, env)
                } else {
                    self.client_receives(s, env)
                }
            }
            Event::Duplicate(j) => {
                s.dups += 1;
                let m = s.net[j].clone();
                let line = format!("network: duplicates {}", show_msg(&m));
                s.net.push(m);
                line
            }
            Event::Drop(j) => {
                s.drops += 1;
                let m = s.net.remove(j);
                format!("network: loses {}", show_msg(&m))
            }
            Event::Complete(k) => {
                let job = s.running.remove(k);
                let env = Envelope {
                    version: VERSION,
                    r#type: MessageType::Reply as i32,
                    request_id: job.id,
                    session_id: SESSION,
                    incarnation: s.incarnation,
                    attempt: job.attempt,
                    payload: Bytes::from(job.run.to_be_bytes().to_vec()),
                    ..Envelope::default()
                };
                let bytes = env.encode_to_vec();
                if job.tracked {
                    s.history
                        .complete(SESSION, job.id, Bytes::from(bytes.clone()), self.now);
                }
                s.net.push((false, bytes));
                format!("server: handler of id {} returns, sends REPLY", job.id)
            }
            Event::Crash => {
                s.crashes += 1;
                s.incarnation += 1;
                s.history = History::new(self.config.history.clone());
                s.running.clear();
                format!("server: crashes, restarts as incarnation {}", s.incarnation)
            }
            Event::Forget => {
                s.forgets += 1;
                if s.history.forget(SESSION, self.now) {
                    "server: a flood of other sessions forgets the session (tombstone kept)"
                        .to_owned()
                } else {
                    "server: a flood of other sessions is refused (no room for a tombstone)"
                        .to_owned()
                }
            }
        }
    }

    fn server_receives(&self, s: &mut State, env: Envelope) -> String {
        let mut line = format!("server receives {}", show(&env));
        let control = |ty: MessageType, status: Option<Status>| Envelope {
            version: VERSION,
            r#type: ty as i32,
            request_id: env.request_id,
            session_id: SESSION,
            incarnation: s.incarnation,
            status: status.map(|st| Box::new(crate::envelope::WireStatus::from(&st))),
            ..Envelope::default()
        };
        match MessageType::try_from(env.r#type) {
            Ok(MessageType::Ping) => {
                let pong = control(MessageType::Pong, None);
                s.net.push((false, pong.encode_to_vec()));
                line.push_str(" -> PONG");
            }
            Ok(MessageType::Ack) => {
                s.history
                    .ack(SESSION, env.request_id, env.ack_up_to, self.now);
            }
            Ok(MessageType::Request) => {
                let req = Request {
                    session: SESSION,
                    request_id: env.request_id,
                    attempt: env.attempt,
                    incarnation: env.incarnation,
                    ack_up_to: env.ack_up_to,
                    oneway: env.protocol == ExchangeProtocol::R as i32,
                    idempotent: env.idempotent,
                    want_accept: env.want_accept,
                };
                // One honest client: the checker explores orderings, not
                // forged senders (those are tested against the engine).
                let admission = admit(
                    &mut s.history,
                    &req,
                    &Owner::Local,
                    &|| true,
                    s.incarnation,
                    false,
                    self.now,
                )
                .admission;
                let _ = write!(line, " -> {admission:?}");
                let answer = match admission {
                    Admission::Run => {
                        s.runs.push((req.request_id, s.incarnation));
                        let run = s.runs.len() as u64;
                        let _ = write!(line, " (execution #{run})");
                        if req.oneway {
                            None
                        } else {
                            s.running.push(Job {
                                id: req.request_id,
                                attempt: req.attempt,
                                tracked: req.tracked(),
                                run,
                            });
                            req.want_accept.then(|| control(MessageType::Accept, None))
                        }
                    }
                    Admission::Replay(bytes) => {
                        s.net.push((false, bytes.to_vec()));
                        None
                    }
                    Admission::InProgress if !req.oneway => Some(control(
                        if req.want_accept {
                            MessageType::Accept
                        } else {
                            MessageType::InProgress
                        },
                        None,
                    )),
                    Admission::Evicted if !req.oneway => Some(control(
                        MessageType::Error,
                        Some(Status::aborted(
                            "reply no longer in history; outcome unknown",
                        )),
                    )),
                    Admission::Restarted if !req.oneway => Some(control(
                        MessageType::Error,
                        Some(Status::with_details(
                            Code::Aborted,
                            "outcome unknown: server restarted",
                            SERVER_RESTARTED,
                            Bytes::new(),
                        )),
                    )),
                    _ => None,
                };
                if let Some(answer) = answer {
                    s.net.push((false, answer.encode_to_vec()));
                }
            }
            _ => line.push_str(" (ignored)"),
        }
        line
    }

    fn client_receives(&self, s: &mut State, env: Envelope) -> String {
        let line = format!("client receives {}", show(&env));
        let Ok(kind) = MessageType::try_from(env.r#type) else {
            return line;
        };
        let id = env.request_id;
        let delivery = s.client.deliver(env, kind, self.now);
        if let Some(ack) = delivery.ack {
            let env = Envelope {
                version: VERSION,
                r#type: MessageType::Ack as i32,
                request_id: ack,
                session_id: SESSION,
                ack_up_to: s.client.ack_up_to(),
                ..Envelope::default()
            };
            s.net.push((true, env.encode_to_vec()));
        }
        if delivery.kind == Routed::Completed {
            let result = s.client.entry(id).and_then(|e| e.result.take());
            s.client.end_call(id);
            let outcome = match result {
                Some(Final::OutcomeUnknown) => Outcome::Unknown,
                Some(Final::Reply(Ok(_))) => Outcome::Ok,
                Some(Final::Reply(Err(status))) => Outcome::Failed(status.code()),
                None => Outcome::Failed(Code::Unknown),
            };
            if let Some(call) = s.calls.iter_mut().find(|c| c.id == id) {
                call.phase = Phase::Done(outcome);
            }
            return format!("{line}: call ends {outcome:?}");
        }
        format!("{line}: {:?}", delivery.kind)
    }
}

fn request(id: u64, kind: Kind, inc: u64, attempt: u32, ack_up_to: u64) -> Envelope {
    Envelope {
        version: VERSION,
        r#type: MessageType::Request as i32,
        request_id: id,
        session_id: SESSION,
        service: "m.S".into(),
        method_id: 1,
        incarnation: inc,
        attempt,
        protocol: match kind {
            Kind::OneWay => ExchangeProtocol::R,
            Kind::Rra => ExchangeProtocol::Rra,
            _ => ExchangeProtocol::Rr,
        } as i32,
        ack_up_to,
        want_accept: kind == Kind::Async,
        idempotent: kind == Kind::Idempotent,
        ..Envelope::default()
    }
}

fn show(env: &Envelope) -> String {
    let ty = MessageType::try_from(env.r#type)
        .map(|t| format!("{t:?}").to_uppercase())
        .unwrap_or_else(|_| "?".into());
    let mut out = format!("{ty} id={}", env.request_id);
    if env.r#type == MessageType::Request as i32 {
        let _ = write!(out, " attempt={} inc={}", env.attempt, env.incarnation);
    } else if env.incarnation != 0 {
        let _ = write!(out, " inc={}", env.incarnation);
    }
    if env.ack_up_to != 0 {
        let _ = write!(out, " ack_up_to={}", env.ack_up_to);
    }
    if let Some(status) = &env.status {
        let _ = write!(out, " status={}", status.message);
    }
    out
}

fn show_msg((to_server, bytes): &Msg) -> String {
    let dir = if *to_server { "to server" } else { "to client" };
    match Envelope::decode(bytes.as_slice()) {
        Ok(env) => format!("{} {dir}", show(&env)),
        Err(_) => format!("? {dir}"),
    }
}

/// The properties; `Some(what is broken)`.
fn check(s: &State, config: &Config) -> Option<String> {
    for (i, call) in s.calls.iter().enumerate() {
        if call.id == 0 {
            continue;
        }
        let runs: Vec<u64> = s
            .runs
            .iter()
            .filter(|(id, _)| *id == call.id)
            .map(|&(_, inc)| inc)
            .collect();
        match call.kind {
            Kind::Idempotent => {}
            Kind::OneWay => {
                let mut incs = runs.clone();
                incs.sort_unstable();
                incs.dedup();
                if incs.len() != runs.len() {
                    return Some(format!(
                        "one-way call {i} (id {}) ran twice in one incarnation",
                        call.id
                    ));
                }
                if call.named != 0 && runs.len() > 1 {
                    return Some(format!(
                        "one-way call {i} (id {}) named incarnation {} and ran {} times",
                        call.id,
                        call.named,
                        runs.len()
                    ));
                }
            }
            _ => {
                if runs.len() > 1 {
                    return Some(format!(
                        "call {i} (id {}, {:?}) ran {} times (incarnations {runs:?})",
                        call.id,
                        call.kind,
                        runs.len()
                    ));
                }
            }
        }
        if let Phase::Done(outcome) = call.phase {
            if outcome == Outcome::Ok && runs.is_empty() {
                return Some(format!(
                    "call {i} (id {}) reported OK but never ran",
                    call.id
                ));
            }
            if outcome.did_not_run() && !runs.is_empty() {
                return Some(format!(
                    "call {i} (id {}) reported {outcome:?} (did not run) but ran",
                    call.id
                ));
            }
        }
    }
    let size = s.history.size();
    let cap = &config.history;
    if size.completed + size.acked > cap.max_entries
        || size.bytes > cap.max_bytes
        || size.sessions > cap.max_sessions
    {
        return Some(format!("history over its caps: {size:?}"));
    }
    None
}

#[cfg(test)]
#[allow(clippy::print_stderr)] // the number of states explored is the tests' report
mod tests {
    use super::*;

    /// Two REQUEST copies per call, one PING, one duplicated message, one
    /// crash and restart; no loss (leaving a message in the network for
    /// ever breaks whatever losing it breaks).
    fn config(calls: Vec<Kind>) -> Config {
        Config {
            calls,
            copies: 2,
            pings: 1,
            dups: 1,
            drops: 0,
            crashes: 1,
            forgets: 0,
            history: HistoryConfig::default(),
            max_states: 5_000_000,
        }
    }

    fn run(config: Config) -> Report {
        let name = format!("{:?}", config.calls);
        let report = explore(config);
        if let Some((broken, path)) = &report.violation {
            panic!(
                "{name}: {broken}\ncounterexample ({} steps):\n  {}",
                path.len(),
                path.join("\n  ")
            );
        }
        assert!(
            report.complete,
            "{name}: state bound reached after {} states",
            report.states
        );
        eprintln!("{name}: {} states, every property holds", report.states);
        report
    }

    // A first copy delayed past a crash and restart (found the engine
    // checking the incarnation only on attempts after the first).
    #[test]
    fn rr_with_a_duplicated_copy_and_a_crash() {
        run(config(vec![Kind::Rr]));
    }

    // A late copy of an RRA request after its ACK, while an older call
    // keeps the floor down (found the ACK forgetting that the id ran).
    #[test]
    fn rra_acknowledged_while_an_older_call_runs() {
        run(Config {
            dups: 0,
            crashes: 0,
            ..config(vec![Kind::Rr, Kind::Rra])
        });
    }

    #[test]
    fn rr_and_rra_with_duplication_and_a_crash() {
        run(Config {
            copies: 1,
            ..config(vec![Kind::Rr, Kind::Rra])
        });
    }

    #[test]
    fn asynchronous_and_one_way_with_duplication_and_a_crash() {
        run(config(vec![Kind::Async, Kind::OneWay]));
    }

    #[test]
    fn one_way_beside_rra_with_duplication_and_a_crash() {
        run(config(vec![Kind::OneWay, Kind::Rra]));
    }

    #[test]
    fn idempotent_beside_rr_with_duplication_and_a_crash() {
        run(Config {
            copies: 1,
            ..config(vec![Kind::Idempotent, Kind::Rr])
        });
    }

    // The server forgets the session under a flood of other sessions.
    // Found a late network copy of a request's *first* copy, arriving after
    // the session was forgotten, running a second time when the tombstone
    // had been dropped early to make room for others: tombstones now stay
    // their full ttl, and a flood that finds them all in use is refused.
    #[test]
    fn rr_calls_when_a_flood_forgets_the_session() {
        run(Config {
            copies: 1,
            crashes: 0,
            forgets: 1,
            ..config(vec![Kind::Rr, Kind::Rr])
        });
    }

    /// Larger configurations: minutes in release mode.
    #[test]
    #[ignore = "minutes in release mode: run by hand (see the module docs)"]
    fn larger_configurations() {
        for c in [
            config(vec![Kind::Rr, Kind::Rra]),
            config(vec![Kind::Idempotent, Kind::Rr]),
            config(vec![Kind::Async, Kind::Rra]),
            Config {
                crashes: 0,
                forgets: 1,
                ..config(vec![Kind::Rr, Kind::Rr])
            },
            Config {
                forgets: 1,
                ..config(vec![Kind::Rra, Kind::OneWay])
            },
            Config {
                copies: 1,
                max_states: 100_000_000,
                ..config(vec![Kind::Rra, Kind::Rr, Kind::Rra])
            },
        ] {
            run(c);
        }
    }
}
