//! The coordinator: runs a transaction across named participants and
//! decides, from the votes, that all of them commit or none does.
//!
//! [`CoordinatorState`] is its log replayed, without I/O: every
//! transaction, its participants, its outcome and whether every
//! participant acknowledged it. [`CoordinatorServer`] is the `Coordinator`
//! service: `Submit` logs the transaction (its participants) before the
//! first prepare, collects the votes, logs the decision with fsync before
//! it sends it, and sends it until every participant acknowledged (then
//! logs that, so that a restart does not send it again).
//!
//! Recovery (presumed abort): a transaction logged without a decision was
//! interrupted before anything was decided, so [`CoordinatorServer::open`]
//! logs an abort for it; every decided transaction not yet acknowledged by
//! all is sent again by [`CoordinatorServer::run_recovery`]. `GetOutcome`
//! for a transaction the log does not know answers aborted: a prepare is
//! never sent before the transaction is logged, so an unknown transaction
//! was never prepared anywhere that matters.

use super::faults::{AfterFault, FaultPoint, Faults};
use super::log::{Log, LogError, Recovered, TornTail};
use super::participant::MAX_TX_LEN;
use crate::proto::twopc::v1::{
    BeginReply, BeginRequest, Coordinator, CoordinatorRecord, CoordinatorStatus, CoordinatorTx,
    DecisionRequest, Outcome, OutcomeReply, OutcomeRequest, ParticipantClient, PrepareRequest,
    StatusRequest, SubmitReply, SubmitRequest, TxState, Vote,
};
use rpc_core::client::UdpChannel;
use rpc_core::{CallContext, Client, Code, Status};
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher as _, Hasher as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// How a coordinator is set up.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Where its log is kept.
    pub data_dir: PathBuf,
    /// The participants it may use, by name.
    pub participants: BTreeMap<String, SocketAddr>,
    /// Faults to inject (none by default).
    pub faults: Faults,
    /// The deadline of each `Prepare` (a participant that does not answer
    /// in time counts as a no vote).
    pub prepare_timeout: Duration,
    /// The deadline of each `Commit`/`Abort`, and the pause between rounds
    /// of sending a decision that is not yet acknowledged by all.
    pub decision_timeout: Duration,
}

impl CoordinatorConfig {
    /// A coordinator keeping its log in `data_dir`, with these
    /// participants, no faults, 5 s prepare and 2 s decision deadlines.
    pub fn new(data_dir: impl Into<PathBuf>, participants: BTreeMap<String, SocketAddr>) -> Self {
        CoordinatorConfig {
            data_dir: data_dir.into(),
            participants,
            faults: Faults::default(),
            prepare_timeout: Duration::from_secs(5),
            decision_timeout: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    /// `name=host:port` of each participant.
    participants: Vec<String>,
    outcome: Outcome,
    done: bool,
    refusals: Vec<String>,
    /// The submitted parts' digest (0: unknown).
    digest: u64,
}

/// The coordinator's log replayed, without I/O.
#[derive(Debug, Default)]
pub struct CoordinatorState {
    txs: HashMap<String, Entry>,
    order: Vec<String>,
}

impl CoordinatorState {
    /// Rebuilds the state from the log's records, in order.
    pub fn replay(records: &[CoordinatorRecord]) -> CoordinatorState {
        let mut s = CoordinatorState::default();
        for r in records {
            s.apply(r);
        }
        s
    }

    /// Applies one record.
    pub fn apply(&mut self, r: &CoordinatorRecord) {
        let outcome = Outcome::try_from(r.outcome).unwrap_or(Outcome::Unspecified);
        if let Some(e) = self.txs.get_mut(&r.tx) {
            if outcome != Outcome::Pending && outcome != Outcome::Unspecified {
                e.outcome = outcome;
            }
            e.done |= r.done;
            return;
        }
        self.order.push(r.tx.clone());
        self.txs.insert(
            r.tx.clone(),
            Entry {
                participants: r.participants.clone(),
                outcome,
                done: r.done,
                refusals: Vec::new(),
                digest: r.parts_digest,
            },
        );
    }

    /// A transaction's outcome; presumed abort for one never logged.
    pub fn outcome(&self, tx: &str) -> Outcome {
        self.txs.get(tx).map_or(Outcome::Aborted, |e| e.outcome)
    }

    /// Transactions logged without a decision (to abort at recovery).
    pub fn undecided(&self) -> Vec<String> {
        self.order
            .iter()
            .filter(|tx| {
                self.txs
                    .get(*tx)
                    .is_some_and(|e| e.outcome == Outcome::Pending)
            })
            .cloned()
            .collect()
    }

    /// Decided transactions that not every participant acknowledged.
    pub fn unfinished(&self) -> Vec<String> {
        self.order
            .iter()
            .filter(|tx| {
                self.txs.get(*tx).is_some_and(|e| {
                    matches!(e.outcome, Outcome::Committed | Outcome::Aborted) && !e.done
                })
            })
            .cloned()
            .collect()
    }

    /// Every transaction, in the order logged.
    pub fn txs(&self) -> Vec<CoordinatorTx> {
        self.order
            .iter()
            .filter_map(|tx| {
                let e = self.txs.get(tx)?;
                Some(CoordinatorTx {
                    tx: tx.clone(),
                    outcome: e.outcome as i32,
                    done: e.done,
                    participants: e.participants.clone(),
                })
            })
            .collect()
    }
}

fn record(tx: &str, outcome: Outcome, participants: Vec<String>, done: bool) -> CoordinatorRecord {
    CoordinatorRecord {
        tx: tx.to_owned(),
        outcome: outcome as i32,
        participants,
        done,
        parts_digest: 0,
    }
}

/// 64-bit FNV-1a of the parts' encoding: the same request always gives the
/// same digest, on every run (never 0, which means "not recorded").
fn parts_digest(parts: &[crate::proto::twopc::v1::Part]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in prost::Message::encode_length_delimited_to_vec(part) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h.max(1)
}

#[derive(Debug, Default)]
struct Tables {
    state: CoordinatorState,
    /// Transactions whose `Submit` is running, and where their reply will
    /// be published (a duplicate `Submit` waits there).
    running: HashMap<String, watch::Receiver<Option<SubmitReply>>>,
}

#[derive(Debug)]
struct Inner {
    config: CoordinatorConfig,
    log: Log,
    tables: Mutex<Tables>,
    address: OnceLock<String>,
    failed: AtomicBool,
    run_id: u64,
    next_tx: AtomicU64,
    clients: tokio::sync::Mutex<HashMap<SocketAddr, ParticipantClient>>,
    recovered_records: u64,
    torn_tail: Option<TornTail>,
}

/// The `Coordinator` service. Cloning shares it.
#[derive(Debug, Clone)]
pub struct CoordinatorServer {
    inner: Arc<Inner>,
}

fn unavailable(what: impl Into<String>) -> Status {
    Status::new(Code::Unavailable, what)
}

impl CoordinatorServer {
    /// Opens the coordinator from its log (created if missing), and aborts
    /// (logs an abort decision for) every transaction that was logged but
    /// not decided when it stopped. Blocking.
    ///
    /// # Errors
    /// The log's: a corrupt log is refused ([`LogError::Corrupt`]).
    pub fn open(config: CoordinatorConfig) -> Result<CoordinatorServer, LogError> {
        let (log, Recovered { records, torn_tail }) =
            Log::open::<CoordinatorRecord>(&config.data_dir)?;
        let mut state = CoordinatorState::replay(&records);
        for tx in state.undecided() {
            let abort = record(&tx, Outcome::Aborted, Vec::new(), false);
            log.append_blocking(&abort)?;
            state.apply(&abort);
            tracing::info!(%tx, "recovery: transaction had no decision: aborted (presumed abort)");
        }
        let unfinished = state.unfinished().len();
        tracing::info!(
            records = records.len(),
            unfinished,
            "coordinator recovered from {}",
            log.path().display()
        );
        let run_id = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Ok(CoordinatorServer {
            inner: Arc::new(Inner {
                config,
                log,
                tables: Mutex::new(Tables {
                    state,
                    running: HashMap::new(),
                }),
                address: OnceLock::new(),
                failed: AtomicBool::new(false),
                run_id,
                next_tx: AtomicU64::new(1),
                clients: tokio::sync::Mutex::new(HashMap::new()),
                recovered_records: records.len() as u64,
                torn_tail,
            }),
        })
    }

    /// Sets the address participants are told to ask (`GetOutcome`); the
    /// serving functions set it to the bound address.
    pub fn set_address(&self, addr: SocketAddr) {
        let _ = self.inner.address.set(addr.to_string());
    }

    /// The torn tail cut off at start, if any.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.inner.torn_tail.as_ref()
    }

    /// Whether the coordinator stopped: crashed at a fault point (with an
    /// in-process crash hook) or could not write its log.
    pub fn has_failed(&self) -> bool {
        self.inner.failed.load(Ordering::SeqCst)
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.inner
            .tables
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn alive(&self) -> Result<(), Status> {
        if self.has_failed() {
            return Err(unavailable(
                "coordinator stopped (crashed or its log failed)",
            ));
        }
        Ok(())
    }

    async fn fault(&self, point: FaultPoint, tx: &str) -> Result<(), Status> {
        match self.inner.config.faults.pass(point, tx).await {
            AfterFault::Continue => self.alive(),
            AfterFault::Crashed => {
                self.inner.failed.store(true, Ordering::SeqCst);
                Err(unavailable(format!("coordinator crashed at {point}")))
            }
        }
    }

    /// Logs a record with fsync and applies it; a failure stops the
    /// coordinator (what reached the disk is unknown, so nothing more may
    /// be sent; a restart recovers from what is there).
    async fn log(&self, r: CoordinatorRecord) -> Result<(), Status> {
        if let Err(e) = self.inner.log.append(r.clone()).await {
            tracing::error!(error = %e, "coordinator log failed: stopping");
            self.inner.failed.store(true, Ordering::SeqCst);
            return Err(unavailable(format!("coordinator log: {e}")));
        }
        self.tables().state.apply(&r);
        Ok(())
    }

    async fn client(&self, addr: SocketAddr) -> Result<ParticipantClient, Status> {
        let mut clients = self.inner.clients.lock().await;
        if let Some(c) = clients.get(&addr) {
            return Ok(c.clone());
        }
        let ch = UdpChannel::connect(addr)
            .await
            .map_err(|e| unavailable(format!("participant {addr}: {e}")))?;
        let c = ParticipantClient::new(Client::new(ch));
        clients.insert(addr, c.clone());
        Ok(c)
    }

    /// Sends the decision to one participant (`name=addr`); whether it
    /// acknowledged.
    async fn send_decision(&self, tx: &str, member: &str, commit: bool) -> bool {
        let Some(addr) = member
            .split_once('=')
            .and_then(|(_, a)| a.parse::<SocketAddr>().ok())
        else {
            tracing::error!(tx, member, "participant entry without an address");
            return false;
        };
        let Ok(client) = self.client(addr).await else {
            return false;
        };
        let req = DecisionRequest { tx: tx.to_owned() };
        let t = self.inner.config.decision_timeout;
        let sent = if commit {
            client.commit(req).timeout(t).await
        } else {
            client.abort(req).timeout(t).await
        };
        match sent {
            Ok(ack) => {
                let want = if commit {
                    TxState::Committed
                } else {
                    TxState::Aborted
                };
                ack.state == want as i32
            }
            Err(e) if !commit && e.code() == Code::FailedPrecondition => {
                tracing::error!(tx, member, error = %e, "participant refused the abort");
                false
            }
            Err(e) => {
                tracing::info!(tx, member, error = %e, "decision not acknowledged yet");
                false
            }
        }
    }

    /// Sends a logged decision until every participant acknowledged it,
    /// then logs that; stops when the coordinator stops or is dropped.
    async fn finish(weak: Weak<Inner>, tx: String, mut pending: Vec<String>) {
        loop {
            let Some(inner) = weak.upgrade() else { return };
            let me = CoordinatorServer { inner };
            if me.has_failed() {
                return;
            }
            let commit = me.tables().state.outcome(&tx) == Outcome::Committed;
            let mut left = Vec::new();
            for member in pending {
                if !me.send_decision(&tx, &member, commit).await {
                    left.push(member);
                }
            }
            pending = left;
            if pending.is_empty() {
                if me
                    .log(record(&tx, Outcome::Unspecified, Vec::new(), true))
                    .await
                    .is_ok()
                {
                    tracing::info!(%tx, commit, "every participant acknowledged the decision");
                }
                return;
            }
            let pause = me.inner.config.decision_timeout;
            drop(me);
            tokio::time::sleep(pause).await;
        }
    }

    /// Sends again every decision that not every participant acknowledged
    /// (after a restart: the aborts of recovery included), each until
    /// acknowledged. Returns once each has its own task.
    pub fn run_recovery(&self) {
        let unfinished = self.tables().state.unfinished();
        for tx in unfinished {
            let members = self
                .tables()
                .state
                .txs
                .get(&tx)
                .map(|e| e.participants.clone())
                .unwrap_or_default();
            tracing::info!(%tx, participants = members.len(), "recovery: sending the decision again");
            tokio::spawn(CoordinatorServer::finish(
                Arc::downgrade(&self.inner),
                tx,
                members,
            ));
        }
    }

    fn validate(&self, req: &SubmitRequest) -> Result<Vec<(String, SocketAddr)>, Status> {
        if req.tx.is_empty() || req.tx.len() > MAX_TX_LEN || req.tx.chars().any(char::is_control) {
            return Err(Status::new(
                Code::InvalidArgument,
                format!(
                    "transaction id must be 1 to {MAX_TX_LEN} bytes without control characters"
                ),
            ));
        }
        if req.parts.is_empty() {
            return Err(Status::new(
                Code::InvalidArgument,
                "a transaction needs at least one part",
            ));
        }
        let mut members = Vec::new();
        for p in &req.parts {
            let Some(addr) = self.inner.config.participants.get(&p.participant) else {
                return Err(Status::new(
                    Code::InvalidArgument,
                    format!(
                        "unknown participant {:?} (known: {})",
                        p.participant,
                        self.inner
                            .config
                            .participants
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            };
            if members.iter().any(|(n, _)| n == &p.participant) {
                return Err(Status::new(
                    Code::InvalidArgument,
                    format!("participant {} named twice", p.participant),
                ));
            }
            members.push((p.participant.clone(), *addr));
        }
        Ok(members)
    }

    async fn run_submit(
        &self,
        req: SubmitRequest,
        members: Vec<(String, SocketAddr)>,
    ) -> Result<SubmitReply, Status> {
        let tx = req.tx.clone();
        let entries: Vec<String> = members.iter().map(|(n, a)| format!("{n}={a}")).collect();
        // 1. The transaction and its participants, before any prepare.
        let mut pending = record(&tx, Outcome::Pending, entries.clone(), false);
        pending.parts_digest = parts_digest(&req.parts);
        self.log(pending).await?;
        self.fault(FaultPoint::AfterBegin, &tx).await?;

        // 2. Phase one.
        let coordinator = self.inner.address.get().cloned().unwrap_or_default();
        let mut votes = tokio::task::JoinSet::new();
        for (part, (name, addr)) in req.parts.into_iter().zip(members.iter().cloned()) {
            let me = self.clone();
            let prepare = PrepareRequest {
                tx: tx.clone(),
                coordinator: coordinator.clone(),
                ops: part.ops,
            };
            votes.spawn(async move {
                let client = me.client(addr).await?;
                client
                    .prepare(prepare)
                    .timeout(me.inner.config.prepare_timeout)
                    .await
                    .map(|r| (name.clone(), r))
                    .map_err(|e| Status::new(e.code(), format!("{name}: {e}")))
            });
        }
        let mut refusals = Vec::new();
        while let Some(joined) = votes.join_next().await {
            match joined {
                Ok(Ok((_, r))) if r.vote == Vote::Yes as i32 => {}
                Ok(Ok((name, r))) => refusals.push(format!("{name}: {}", r.reason)),
                Ok(Err(status)) => refusals.push(format!("no answer ({status})")),
                Err(e) => refusals.push(format!("prepare task failed: {e}")),
            }
        }
        refusals.sort();
        self.fault(FaultPoint::AfterPrepareVotes, &tx).await?;

        // 3. The decision, durable before anyone hears it.
        let commit = refusals.is_empty();
        let outcome = if commit {
            Outcome::Committed
        } else {
            Outcome::Aborted
        };
        self.log(record(&tx, outcome, Vec::new(), false)).await?;
        if let Some(e) = self.tables().state.txs.get_mut(&tx) {
            e.refusals.clone_from(&refusals);
        }
        tracing::info!(%tx, ?outcome, refusals = refusals.len(), "decided");
        self.fault(FaultPoint::AfterDecision, &tx).await?;

        // 4. Phase two: the first participant, then the others together.
        let mut pending = Vec::new();
        let mut rest = entries.into_iter();
        if let Some(first) = rest.next() {
            if !self.send_decision(&tx, &first, commit).await {
                pending.push(first);
            }
        }
        self.fault(FaultPoint::AfterFirstDecision, &tx).await?;
        let mut acks = tokio::task::JoinSet::new();
        for member in rest {
            let me = self.clone();
            let tx = tx.clone();
            acks.spawn(async move {
                let ok = me.send_decision(&tx, &member, commit).await;
                (member, ok)
            });
        }
        while let Some(joined) = acks.join_next().await {
            if let Ok((member, false)) = joined {
                pending.push(member);
            }
        }
        if pending.is_empty() {
            self.log(record(&tx, Outcome::Unspecified, Vec::new(), true))
                .await?;
        } else {
            tokio::spawn(CoordinatorServer::finish(
                Arc::downgrade(&self.inner),
                tx.clone(),
                pending,
            ));
        }
        Ok(SubmitReply {
            outcome: outcome as i32,
            refusals,
        })
    }
}

impl Coordinator for CoordinatorServer {
    async fn begin(&self, _ctx: CallContext, _request: BeginRequest) -> Result<BeginReply, Status> {
        self.alive()?;
        let n = self.inner.next_tx.fetch_add(1, Ordering::Relaxed);
        Ok(BeginReply {
            tx: format!("{:016x}-{n}", self.inner.run_id),
        })
    }

    async fn submit(
        &self,
        _ctx: CallContext,
        request: SubmitRequest,
    ) -> Result<SubmitReply, Status> {
        self.alive()?;
        if self.inner.address.get().is_none() {
            return Err(unavailable(
                "coordinator not ready: participants could not be told where to ask for outcomes yet",
            ));
        }
        let members = self.validate(&request)?;
        let tx = request.tx.clone();
        let publish = {
            let mut tables = self.tables();
            if let Some(rx) = tables.running.get(&tx) {
                Err(rx.clone())
            } else if let Some(e) = tables.state.txs.get(&tx) {
                if e.digest != 0 && e.digest != parts_digest(&request.parts) {
                    return Err(Status::already_exists(format!(
                        "transaction id {tx} was used for other parts; a new transaction needs a new id"
                    )));
                }
                return match e.outcome {
                    Outcome::Committed | Outcome::Aborted => Ok(SubmitReply {
                        outcome: e.outcome as i32,
                        refusals: e.refusals.clone(),
                    }),
                    _ => Err(unavailable(format!("transaction {tx} is not decided yet"))),
                };
            } else {
                let (send, recv) = watch::channel(None);
                tables.running.insert(tx.clone(), recv);
                Ok(send)
            }
        };
        let publish = match publish {
            Ok(send) => send,
            Err(mut rx) => {
                // A duplicate (a client's new call after "outcome unknown"):
                // wait for the first one's answer.
                let reply = rx
                    .wait_for(Option::is_some)
                    .await
                    .map_err(|_| unavailable(format!("transaction {tx} was interrupted")))?
                    .clone();
                return reply.ok_or_else(|| unavailable("no reply"));
            }
        };
        let result = self.run_submit(request, members).await;
        self.tables().running.remove(&tx);
        if let Ok(reply) = &result {
            let _ = publish.send(Some(reply.clone()));
        }
        result
    }

    async fn get_outcome(
        &self,
        _ctx: CallContext,
        request: OutcomeRequest,
    ) -> Result<OutcomeReply, Status> {
        self.alive()?;
        let outcome = self.tables().state.outcome(&request.tx);
        Ok(OutcomeReply {
            outcome: outcome as i32,
        })
    }

    async fn status(
        &self,
        _ctx: CallContext,
        _request: StatusRequest,
    ) -> Result<CoordinatorStatus, Status> {
        self.alive()?;
        Ok(CoordinatorStatus {
            txs: self.tables().state.txs(),
            recovered_records: self.inner.recovered_records,
            torn_tail: self.inner.torn_tail.is_some(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn recovery_sees_undecided_and_unfinished_transactions() {
        let log = vec![
            record("t1", Outcome::Pending, vec!["a=127.0.0.1:1".into()], false),
            record("t2", Outcome::Pending, vec!["a=127.0.0.1:1".into()], false),
            record("t1", Outcome::Committed, Vec::new(), false),
            record("t3", Outcome::Pending, vec!["a=127.0.0.1:1".into()], false),
            record("t3", Outcome::Aborted, Vec::new(), false),
            record("t3", Outcome::Unspecified, Vec::new(), true),
        ];
        let s = CoordinatorState::replay(&log);
        assert_eq!(s.undecided(), vec!["t2".to_owned()]);
        assert_eq!(s.unfinished(), vec!["t1".to_owned()]);
        assert_eq!(s.outcome("t1"), Outcome::Committed);
        assert_eq!(s.outcome("t2"), Outcome::Pending);
        assert_eq!(s.outcome("t3"), Outcome::Aborted);
        assert_eq!(
            s.outcome("never-logged"),
            Outcome::Aborted,
            "presumed abort"
        );
    }
}
