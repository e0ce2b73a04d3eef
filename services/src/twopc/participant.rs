//! A participant: a small key-value state that applies a transaction's
//! operations only when the coordinator says commit.
//!
//! [`ParticipantState`] is the state machine without I/O: it says what
//! record an incoming `Prepare`, `Commit` or `Abort` needs logged and what
//! to answer, and applies records (live, and when the log is replayed at
//! start). [`ParticipantServer`] is the `Participant` service over it: it
//! logs each record with fsync before it answers, and its resolver asks the
//! coordinator (`GetOutcome`) about every transaction it has prepared and
//! not yet heard the outcome of, until it learns it. It never decides a
//! prepared transaction alone.
//!
//! The conflict rule is "no wait": a `Prepare` that touches a key reserved
//! by another prepared transaction gets a no vote at once (no deadlock,
//! no waiting inside phase one).

use super::log::{Log, LogError, Recovered, TornTail};
use crate::proto::twopc::v1::{
    CoordinatorClient, DecisionAck, DecisionRequest, Op, Outcome, OutcomeRequest, Participant,
    ParticipantRecord, ParticipantStatus, PrepareReply, PrepareRequest, ReadReply, ReadRequest,
    StatusRequest, TxState, TxStatus, Vote,
};
use rpc_core::client::UdpChannel;
use rpc_core::{CallContext, Client, Code, Status};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The longest transaction id accepted.
pub const MAX_TX_LEN: usize = 128;
/// The longest key accepted.
pub const MAX_KEY_LEN: usize = 256;
/// The most operations in one participant's part.
pub const MAX_OPS: usize = 256;

#[derive(Debug, Clone)]
struct Entry {
    state: TxState,
    coordinator: String,
    ops: Vec<Op>,
    reason: String,
}

/// What to do with an incoming message.
#[derive(Debug, Clone, PartialEq)]
pub enum Step<A> {
    /// Answer at once: a duplicate, answered from what is already logged.
    Answer(A),
    /// Log this record (with fsync), apply it, then answer.
    Log(ParticipantRecord, A),
}

/// A participant's state without I/O: the committed key-value pairs, the
/// reserved keys, and every transaction it knows.
#[derive(Debug, Default)]
pub struct ParticipantState {
    kv: BTreeMap<String, String>,
    reserved: HashMap<String, String>,
    txs: HashMap<String, Entry>,
    order: Vec<String>,
}

fn check_tx(tx: &str) -> Result<(), Status> {
    if tx.is_empty() || tx.len() > MAX_TX_LEN || tx.chars().any(char::is_control) {
        return Err(Status::new(
            Code::InvalidArgument,
            format!("transaction id must be 1 to {MAX_TX_LEN} bytes without control characters"),
        ));
    }
    Ok(())
}

impl ParticipantState {
    /// Rebuilds the state from a log's records, in order.
    pub fn replay(records: &[ParticipantRecord]) -> ParticipantState {
        let mut state = ParticipantState::default();
        for r in records {
            state.apply(r);
        }
        state
    }

    /// What a `Prepare` needs: a duplicate gets the vote already logged;
    /// a new transaction is checked against the reservations and its
    /// expectations, and its vote is to be logged.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` for a malformed request (no vote is logged).
    pub fn prepare(&self, req: &PrepareRequest) -> Result<Step<PrepareReply>, Status> {
        check_tx(&req.tx)?;
        if let Some(e) = self.txs.get(&req.tx) {
            // A duplicate is the same request; the same id with other
            // operations or from another coordinator is another
            // transaction reusing the id, which must not get this vote.
            let prepared = matches!(e.state, TxState::Prepared | TxState::Committed);
            if prepared
                && (e.ops != req.ops
                    || (!e.coordinator.is_empty() && e.coordinator != req.coordinator))
            {
                return Err(Status::new(
                    Code::AlreadyExists,
                    format!(
                        "transaction {} was prepared here with other operations or by another coordinator",
                        req.tx
                    ),
                ));
            }
            let reply = match e.state {
                TxState::Prepared | TxState::Committed => yes(),
                _ => no(if e.reason.is_empty() {
                    "aborted here".to_owned()
                } else {
                    e.reason.clone()
                }),
            };
            return Ok(Step::Answer(reply));
        }
        if req.ops.len() > MAX_OPS {
            return Err(Status::new(
                Code::InvalidArgument,
                format!("{} operations, over the limit of {MAX_OPS}", req.ops.len()),
            ));
        }
        if let Some(op) = req
            .ops
            .iter()
            .find(|op| op.key.is_empty() || op.key.len() > MAX_KEY_LEN)
        {
            return Err(Status::new(
                Code::InvalidArgument,
                format!(
                    "key {:?} must be 1 to {MAX_KEY_LEN} bytes",
                    op.key.chars().take(32).collect::<String>()
                ),
            ));
        }
        let refusal = req.ops.iter().find_map(|op| {
            if let Some(holder) = self.reserved.get(&op.key) {
                return Some(format!("key {} reserved by {holder}", op.key));
            }
            let expect = op.expect.as_deref()?;
            let current = self.kv.get(&op.key).map_or("", String::as_str);
            (current != expect)
                .then(|| format!("key {} is {current:?}, expected {expect:?}", op.key))
        });
        let (state, reply) = match refusal {
            None => (TxState::Prepared, yes()),
            Some(reason) => (TxState::Aborted, no(reason)),
        };
        let reason = reply.reason.clone();
        let record = ParticipantRecord {
            tx: req.tx.clone(),
            state: state as i32,
            coordinator: req.coordinator.clone(),
            ops: if state == TxState::Prepared {
                req.ops.clone()
            } else {
                Vec::new()
            },
            reason,
        };
        Ok(Step::Log(record, reply))
    }

    /// What a `Commit` needs.
    ///
    /// # Errors
    /// `FAILED_PRECONDITION` when the transaction is not prepared here
    /// (unknown, or aborted): the coordinator never commits without every
    /// yes vote, so this is a protocol violation, refused.
    pub fn commit(&self, tx: &str) -> Result<Step<DecisionAck>, Status> {
        check_tx(tx)?;
        match self.txs.get(tx).map(|e| e.state) {
            Some(TxState::Committed) => Ok(Step::Answer(ack(TxState::Committed))),
            Some(TxState::Prepared) => Ok(Step::Log(
                decision(tx, TxState::Committed),
                ack(TxState::Committed),
            )),
            Some(other) => Err(Status::new(
                Code::FailedPrecondition,
                format!("commit of {tx}, which is {} here", state_name(other)),
            )),
            None => Err(Status::new(
                Code::FailedPrecondition,
                format!("commit of {tx}, which was never prepared here"),
            )),
        }
    }

    /// What an `Abort` needs. An abort of an unknown transaction is logged
    /// too, so that a `Prepare` delayed past it votes no.
    ///
    /// # Errors
    /// `FAILED_PRECONDITION` when the transaction is committed here.
    pub fn abort(&self, tx: &str) -> Result<Step<DecisionAck>, Status> {
        check_tx(tx)?;
        match self.txs.get(tx).map(|e| e.state) {
            Some(TxState::Committed) => Err(Status::new(
                Code::FailedPrecondition,
                format!("abort of {tx}, which is committed here"),
            )),
            Some(TxState::Aborted) => Ok(Step::Answer(ack(TxState::Aborted))),
            _ => Ok(Step::Log(
                decision(tx, TxState::Aborted),
                ack(TxState::Aborted),
            )),
        }
    }

    /// Applies a logged record: a prepare reserves its keys, a commit
    /// applies the operations and releases them, an abort releases them.
    pub fn apply(&mut self, r: &ParticipantRecord) {
        let state = TxState::try_from(r.state).unwrap_or(TxState::Unspecified);
        match state {
            TxState::Prepared => {
                for op in &r.ops {
                    self.reserved.insert(op.key.clone(), r.tx.clone());
                }
                self.insert(r, state);
            }
            TxState::Committed => {
                let Some(e) = self.txs.get_mut(&r.tx) else {
                    tracing::warn!(tx = %r.tx, "commit record of a transaction never prepared: ignored");
                    return;
                };
                e.state = TxState::Committed;
                for op in &e.ops {
                    match &op.value {
                        Some(v) => self.kv.insert(op.key.clone(), v.clone()),
                        None => self.kv.remove(&op.key),
                    };
                    if self.reserved.get(&op.key) == Some(&r.tx) {
                        self.reserved.remove(&op.key);
                    }
                }
            }
            TxState::Aborted => {
                if let Some(e) = self.txs.get_mut(&r.tx) {
                    e.state = TxState::Aborted;
                    for op in &e.ops {
                        if self.reserved.get(&op.key) == Some(&r.tx) {
                            self.reserved.remove(&op.key);
                        }
                    }
                } else {
                    self.insert(r, state);
                }
            }
            TxState::Unspecified => {
                tracing::warn!(tx = %r.tx, state = r.state, "record with no state: ignored");
            }
        }
    }

    fn insert(&mut self, r: &ParticipantRecord, state: TxState) {
        if !self.txs.contains_key(&r.tx) {
            self.order.push(r.tx.clone());
        }
        self.txs.insert(
            r.tx.clone(),
            Entry {
                state,
                coordinator: r.coordinator.clone(),
                ops: r.ops.clone(),
                reason: r.reason.clone(),
            },
        );
    }

    /// The prepared transactions (outcome not known yet) and the
    /// coordinator of each.
    pub fn in_doubt(&self) -> Vec<(String, String)> {
        self.order
            .iter()
            .filter_map(|tx| {
                let e = self.txs.get(tx)?;
                (e.state == TxState::Prepared).then(|| (tx.clone(), e.coordinator.clone()))
            })
            .collect()
    }

    /// A key's committed value and the transaction reserving it.
    pub fn read(&self, key: &str) -> ReadReply {
        ReadReply {
            value: self.kv.get(key).cloned(),
            reserved_by: self.reserved.get(key).cloned().unwrap_or_default(),
        }
    }

    /// Every transaction, in the order it was learned of.
    pub fn txs(&self) -> Vec<TxStatus> {
        self.order
            .iter()
            .filter_map(|tx| {
                let e = self.txs.get(tx)?;
                Some(TxStatus {
                    tx: tx.clone(),
                    state: e.state as i32,
                    keys: e.ops.iter().map(|op| op.key.clone()).collect(),
                })
            })
            .collect()
    }
}

fn yes() -> PrepareReply {
    PrepareReply {
        vote: Vote::Yes as i32,
        reason: String::new(),
    }
}

fn no(reason: String) -> PrepareReply {
    PrepareReply {
        vote: Vote::No as i32,
        reason,
    }
}

fn ack(state: TxState) -> DecisionAck {
    DecisionAck {
        state: state as i32,
    }
}

fn decision(tx: &str, state: TxState) -> ParticipantRecord {
    ParticipantRecord {
        tx: tx.to_owned(),
        state: state as i32,
        coordinator: String::new(),
        ops: Vec::new(),
        reason: String::new(),
    }
}

fn state_name(s: TxState) -> &'static str {
    match s {
        TxState::Prepared => "prepared",
        TxState::Committed => "committed",
        TxState::Aborted => "aborted",
        TxState::Unspecified => "unspecified",
    }
}

fn log_failed(e: &LogError) -> Status {
    tracing::error!(error = %e, "log append failed: nothing sent");
    Status::new(Code::Unavailable, format!("participant log: {e}"))
}

#[derive(Debug)]
struct Inner {
    name: String,
    state: tokio::sync::Mutex<ParticipantState>,
    log: Log,
    recovered_records: u64,
    torn_tail: Option<TornTail>,
}

/// The `Participant` service: a [`ParticipantState`] whose every record is
/// logged with fsync before its answer is sent. Cloning shares it.
#[derive(Debug, Clone)]
pub struct ParticipantServer {
    inner: Arc<Inner>,
}

impl ParticipantServer {
    /// Opens the participant `name` from its log in `data_dir` (created if
    /// missing): the committed values, the reservations and the prepared
    /// transactions are as they were when it stopped. Blocking.
    ///
    /// # Errors
    /// The log's: a corrupt log is refused ([`LogError::Corrupt`]).
    pub fn open(name: &str, data_dir: &Path) -> Result<ParticipantServer, LogError> {
        let (log, Recovered { records, torn_tail }) = Log::open::<ParticipantRecord>(data_dir)?;
        let state = ParticipantState::replay(&records);
        let in_doubt = state.in_doubt();
        tracing::info!(
            participant = name,
            records = records.len(),
            in_doubt = in_doubt.len(),
            "participant recovered from {}",
            log.path().display()
        );
        for (tx, coordinator) in &in_doubt {
            tracing::info!(participant = name, %tx, %coordinator, "recovered into the prepared state: blocked until the outcome is known");
        }
        Ok(ParticipantServer {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                state: tokio::sync::Mutex::new(state),
                log,
                recovered_records: records.len() as u64,
                torn_tail,
            }),
        })
    }

    /// The participant's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The torn tail cut off at start, if any.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.inner.torn_tail.as_ref()
    }

    /// Runs a step: logs its record (fsync), applies it, and gives the
    /// answer. Holds the state's lock throughout, so that two prepares
    /// cannot both reserve a key.
    async fn run<A>(
        &self,
        decide: impl FnOnce(&ParticipantState) -> Result<Step<A>, Status>,
    ) -> Result<A, Status> {
        let mut state = self.inner.state.lock().await;
        match decide(&state)? {
            Step::Answer(a) => Ok(a),
            Step::Log(record, a) => {
                self.inner
                    .log
                    .append(record.clone())
                    .await
                    .map_err(|e| log_failed(&e))?;
                state.apply(&record);
                Ok(a)
            }
        }
    }

    /// Asks the coordinator of every prepared transaction for its outcome,
    /// every `every`, and applies what it learns; runs until the server is
    /// dropped. This is how a participant that voted yes (or recovered
    /// into the prepared state) leaves it when the decision never reaches
    /// it.
    pub async fn run_resolver(self, every: Duration) {
        let weak = Arc::downgrade(&self.inner);
        drop(self);
        let mut clients: HashMap<String, CoordinatorClient> = HashMap::new();
        // A transaction is only asked about once it has been prepared for a
        // whole period, so the coordinator's own decision usually wins.
        let mut seen: HashMap<String, u32> = HashMap::new();
        loop {
            tokio::time::sleep(every).await;
            let Some(inner) = weak.upgrade() else { return };
            let server = ParticipantServer { inner };
            let in_doubt = server.inner.state.lock().await.in_doubt();
            seen.retain(|tx, _| in_doubt.iter().any(|(t, _)| t == tx));
            for (tx, coordinator) in in_doubt {
                let rounds = seen.entry(tx.clone()).or_insert(0);
                *rounds += 1;
                if *rounds < 2 {
                    continue;
                }
                let Some(client) = coordinator_client(&mut clients, &coordinator).await else {
                    continue;
                };
                let asked = client
                    .get_outcome(OutcomeRequest { tx: tx.clone() })
                    .timeout(every.max(Duration::from_millis(200)))
                    .await;
                let outcome = match asked {
                    Ok(r) => Outcome::try_from(r.outcome).unwrap_or(Outcome::Unspecified),
                    Err(e) => {
                        tracing::info!(participant = %server.inner.name, %tx, %coordinator, error = %e, "outcome unknown: coordinator unreachable, still prepared");
                        continue;
                    }
                };
                let learned = match outcome {
                    Outcome::Committed => server.run(|s| s.commit(&tx)).await,
                    Outcome::Aborted => server.run(|s| s.abort(&tx)).await,
                    _ => {
                        tracing::debug!(participant = %server.inner.name, %tx, "outcome pending at the coordinator");
                        continue;
                    }
                };
                match learned {
                    Ok(_) => {
                        tracing::info!(participant = %server.inner.name, %tx, ?outcome, "learned the outcome from the coordinator (GetOutcome)")
                    }
                    Err(e) => {
                        tracing::warn!(participant = %server.inner.name, %tx, error = %e, "could not apply the outcome")
                    }
                }
            }
        }
    }
}

async fn coordinator_client<'a>(
    clients: &'a mut HashMap<String, CoordinatorClient>,
    coordinator: &str,
) -> Option<&'a CoordinatorClient> {
    if !clients.contains_key(coordinator) {
        let addr: SocketAddr = match coordinator.parse() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(%coordinator, error = %e, "coordinator address does not parse");
                return None;
            }
        };
        match UdpChannel::connect(addr).await {
            Ok(ch) => {
                clients.insert(
                    coordinator.to_owned(),
                    CoordinatorClient::new(Client::new(ch)),
                );
            }
            Err(e) => {
                tracing::warn!(%coordinator, error = %e, "cannot reach the coordinator");
                return None;
            }
        }
    }
    clients.get(coordinator)
}

impl Participant for ParticipantServer {
    async fn prepare(
        &self,
        _ctx: CallContext,
        request: PrepareRequest,
    ) -> Result<PrepareReply, Status> {
        let reply = self.run(|s| s.prepare(&request)).await?;
        tracing::debug!(participant = %self.inner.name, tx = %request.tx, vote = reply.vote, "voted");
        Ok(reply)
    }

    async fn commit(
        &self,
        _ctx: CallContext,
        request: DecisionRequest,
    ) -> Result<DecisionAck, Status> {
        self.run(|s| s.commit(&request.tx)).await
    }

    async fn abort(
        &self,
        _ctx: CallContext,
        request: DecisionRequest,
    ) -> Result<DecisionAck, Status> {
        self.run(|s| s.abort(&request.tx)).await
    }

    async fn read(&self, _ctx: CallContext, request: ReadRequest) -> Result<ReadReply, Status> {
        Ok(self.inner.state.lock().await.read(&request.key))
    }

    async fn status(
        &self,
        _ctx: CallContext,
        _request: StatusRequest,
    ) -> Result<ParticipantStatus, Status> {
        Ok(ParticipantStatus {
            name: self.inner.name.clone(),
            txs: self.inner.state.lock().await.txs(),
            recovered_records: self.inner.recovered_records,
            torn_tail: self.inner.torn_tail.is_some(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> Op {
        Op {
            key: key.into(),
            value: Some(value.into()),
            expect: None,
        }
    }

    fn prepare(tx: &str, ops: Vec<Op>) -> PrepareRequest {
        PrepareRequest {
            tx: tx.into(),
            coordinator: "127.0.0.1:1".into(),
            ops,
        }
    }

    /// Runs a step as the server does (log = apply here).
    fn run<A>(s: &mut ParticipantState, step: Step<A>, log: &mut Vec<ParticipantRecord>) -> A {
        match step {
            Step::Answer(a) => a,
            Step::Log(r, a) => {
                s.apply(&r);
                log.push(r);
                a
            }
        }
    }

    #[test]
    fn prepared_keys_are_reserved_and_a_conflicting_prepare_votes_no() {
        let mut s = ParticipantState::default();
        let mut log = Vec::new();
        let step = s.prepare(&prepare("t1", vec![put("x", "1")])).unwrap();
        assert_eq!(run(&mut s, step, &mut log).vote, Vote::Yes as i32);
        assert_eq!(s.read("x").reserved_by, "t1");
        let step = s.prepare(&prepare("t2", vec![put("x", "2")])).unwrap();
        let reply = run(&mut s, step, &mut log);
        assert_eq!(reply.vote, Vote::No as i32);
        assert!(reply.reason.contains("reserved by t1"), "{}", reply.reason);
        let step = s.commit("t1").unwrap();
        run(&mut s, step, &mut log);
        assert_eq!(s.read("x").value.as_deref(), Some("1"));
        assert_eq!(s.read("x").reserved_by, "");
        // Replaying the log gives the same state.
        let again = ParticipantState::replay(&log);
        assert_eq!(again.read("x"), s.read("x"));
        assert_eq!(again.txs(), s.txs());
    }

    #[test]
    fn duplicates_are_answered_from_the_log_and_log_nothing() {
        let mut s = ParticipantState::default();
        let mut log = Vec::new();
        let step = s.prepare(&prepare("t1", vec![put("x", "1")])).unwrap();
        run(&mut s, step, &mut log);
        assert!(matches!(
            s.prepare(&prepare("t1", vec![put("x", "1")])).unwrap(),
            Step::Answer(PrepareReply { vote, .. }) if vote == Vote::Yes as i32
        ));
        let step = s.commit("t1").unwrap();
        run(&mut s, step, &mut log);
        assert!(matches!(s.commit("t1").unwrap(), Step::Answer(_)));
        assert!(s.abort("t1").is_err(), "abort after commit is refused");
        assert_eq!(log.len(), 2);
    }

    #[test]
    fn an_abort_before_the_prepare_makes_the_prepare_vote_no() {
        let mut s = ParticipantState::default();
        let mut log = Vec::new();
        let step = s.abort("t1").unwrap();
        run(&mut s, step, &mut log);
        let step = s.prepare(&prepare("t1", vec![put("x", "1")])).unwrap();
        assert_eq!(run(&mut s, step, &mut log).vote, Vote::No as i32);
        assert_eq!(s.read("x").reserved_by, "");
        assert!(s.commit("t1").is_err());
    }

    #[test]
    fn a_failed_expectation_votes_no() {
        let mut s = ParticipantState::default();
        let mut log = Vec::new();
        let mut op = put("x", "1");
        op.expect = Some("0".into());
        let step = s.prepare(&prepare("t1", vec![op])).unwrap();
        let reply = run(&mut s, step, &mut log);
        assert_eq!(reply.vote, Vote::No as i32);
        assert!(reply.reason.contains("expected"), "{}", reply.reason);
    }
}
