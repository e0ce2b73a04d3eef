//! Two-phase commit (`idl/twopc.idl`): a coordinator and three
//! participants on UDP, each with its log in a directory of its own. One
//! transaction commits everywhere, one aborts on a participant's no vote;
//! then the coordinator crashes (an in-process crash at a fault point: it
//! stops answering, only its log survives) after the votes and before the
//! decision, the participants stay prepared with their keys reserved, and
//! a new coordinator on the same log and address aborts it (presumed
//! abort) everywhere; and it crashes again after the commit reached one
//! participant only, and the new one finishes the commit everywhere.

use crate::report::Report;
use anyhow::{anyhow, Context as _};
use rpc_core::client::UdpChannel;
use rpc_core::server::ServerHandle;
use rpc_core::Client;
use rpc_services::proto::twopc::v1::{
    CoordinatorClient, Op, Outcome, Part, ParticipantClient, ReadRequest, StatusRequest,
    SubmitRequest, TxState,
};
use rpc_services::twopc::{
    serve_coordinator, serve_participant, CoordinatorConfig, CoordinatorServer, FaultAction,
    FaultPoint, Faults, ParticipantServer,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const PATH: &str = "twopc";
const NAMES: [&str; 3] = ["a", "b", "c"];
/// How often a prepared participant asks the coordinator.
const ASK_EVERY: Duration = Duration::from_millis(50);
/// The longest wait for the participants to reach a state.
const BOUND: Duration = Duration::from_secs(20);

struct Parties {
    dir: std::path::PathBuf,
    members: BTreeMap<String, SocketAddr>,
    participants: Vec<ParticipantClient>,
    _doors: Vec<ServerHandle>,
}

impl Parties {
    async fn start(dir: &Path) -> anyhow::Result<Parties> {
        let mut members = BTreeMap::new();
        let mut participants = Vec::new();
        let mut doors = Vec::new();
        for name in NAMES {
            let data = dir.join(name);
            let p = ParticipantServer::open(name, &data)
                .with_context(|| format!("participant {name}"))?;
            let door = serve_participant(p, "127.0.0.1:0", ASK_EVERY).await?;
            members.insert(name.to_owned(), door.local_addr());
            participants.push(ParticipantClient::new(Client::new(
                UdpChannel::connect(door.local_addr()).await?,
            )));
            doors.push(door);
        }
        Ok(Parties {
            dir: dir.to_path_buf(),
            members,
            participants,
            _doors: doors,
        })
    }

    /// Opens the coordinator from its log and serves it on `addr`.
    async fn coordinator(
        &self,
        addr: &str,
        faults: Faults,
    ) -> anyhow::Result<(ServerHandle, CoordinatorClient)> {
        let mut config = CoordinatorConfig::new(self.dir.join("coordinator"), self.members.clone());
        config.faults = faults;
        config.decision_timeout = Duration::from_millis(200);
        let coordinator = CoordinatorServer::open(config).context("coordinator")?;
        let server = serve_coordinator(coordinator, addr).await?;
        let client =
            CoordinatorClient::new(Client::new(UdpChannel::connect(server.local_addr()).await?));
        Ok((server, client))
    }

    /// Each participant's state of `tx`, and its key's value and
    /// reservation, as `a: prepared (ka reserved)`.
    async fn describe(&self, tx: &str) -> anyhow::Result<(Vec<TxState>, String)> {
        let mut states = Vec::new();
        let mut words = Vec::new();
        for (p, name) in self.participants.iter().zip(NAMES) {
            let status = p.status(StatusRequest {}).await?;
            let state = status
                .txs
                .iter()
                .find(|t| t.tx == tx)
                .and_then(|t| TxState::try_from(t.state).ok())
                .unwrap_or(TxState::Unspecified);
            let key = format!("k{name}");
            let read = p.read(ReadRequest { key: key.clone() }).await?;
            let value = match (&read.value, read.reserved_by.is_empty()) {
                (_, false) => format!("{key} reserved"),
                (Some(v), true) => format!("{key}={v}"),
                (None, true) => format!("{key} absent"),
            };
            words.push(format!("{name} {} ({value})", state_word(state)));
            states.push(state);
        }
        Ok((states, words.join(", ")))
    }

    /// Waits until every participant has `tx` in `want`.
    async fn wait_all(&self, tx: &str, want: TxState) -> anyhow::Result<String> {
        let deadline = Instant::now() + BOUND;
        loop {
            let (states, words) = self.describe(tx).await?;
            if states.iter().all(|s| *s == want) {
                return Ok(words);
            }
            if Instant::now() > deadline {
                return Err(anyhow!("not all {}: {words}", state_word(want)));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn state_word(s: TxState) -> &'static str {
    match s {
        TxState::Prepared => "prepared",
        TxState::Committed => "committed",
        TxState::Aborted => "aborted",
        TxState::Unspecified => "unknown",
    }
}

fn transaction(tx: &str, value: &str) -> SubmitRequest {
    SubmitRequest {
        tx: tx.to_owned(),
        parts: NAMES
            .iter()
            .map(|n| Part {
                participant: (*n).to_owned(),
                ops: vec![Op {
                    key: format!("k{n}"),
                    value: Some(value.to_owned()),
                    expect: None,
                }],
            })
            .collect(),
    }
}

fn outcome_word(o: i32) -> &'static str {
    match Outcome::try_from(o) {
        Ok(Outcome::Committed) => "committed",
        Ok(Outcome::Aborted) => "aborted",
        Ok(Outcome::Pending) => "pending",
        _ => "unspecified",
    }
}

/// The two-phase commit section of the tour.
pub(crate) async fn twopc(report: &mut Report) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("rpc-tour-twopc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let parties = Parties::start(&dir).await?;
    let crash_faults = || {
        Faults::default()
            .at(
                FaultPoint::AfterPrepareVotes,
                Some("t3".into()),
                FaultAction::Crash,
            )
            .at(
                FaultPoint::AfterFirstDecision,
                Some("t4".into()),
                FaultAction::Crash,
            )
            .on_crash(|point, tx| tracing::info!(%point, tx, "tour: coordinator crashed"))
    };
    let (server, co) = parties.coordinator("127.0.0.1:0", crash_faults()).await?;
    let addr = server.local_addr();
    println!();
    println!(
        "twopc: twopc.v1.Coordinator on UDP {addr}, participants {} (logs in {})",
        parties
            .members
            .iter()
            .map(|(n, a)| format!("{n}={a}"))
            .collect::<Vec<_>>()
            .join(", "),
        dir.display()
    );

    // One transaction that commits, one that a no vote aborts.
    let start = Instant::now();
    let committed = co.submit(transaction("t1", "1")).await;
    let words = parties.describe("t1").await?.1;
    report.sync_call(
        format!("{PATH} udp"),
        "Submit(t1: ka, kb, kc := 1)",
        "RRA",
        match committed {
            Ok(r) if r.outcome == Outcome::Committed as i32 => Ok(format!("committed: {words}")),
            other => Err(format!("expected committed, got {other:?}")),
        },
        start,
    );
    let start = Instant::now();
    let mut req = transaction("t2", "2");
    req.parts[2].ops[0].expect = Some("0".into());
    let aborted = co.submit(req).await;
    let words = parties.describe("t2").await?.1;
    report.sync_call(
        format!("{PATH} udp"),
        "Submit(t2: := 2, c expects kc=0)",
        "RRA",
        match aborted {
            Ok(r) if r.outcome == Outcome::Aborted as i32 && r.refusals.len() == 1 => {
                Ok(format!("aborted on {:?}: {words}", r.refusals[0]))
            }
            other => Err(format!("expected aborted by c, got {other:?}")),
        },
        start,
    );

    // The coordinator crashes after the votes, before deciding.
    let (server, co) = crash_and_recover(
        report,
        &parties,
        (server, co),
        "t3",
        FaultPoint::AfterPrepareVotes,
        TxState::Prepared,
        TxState::Aborted,
        crash_faults,
    )
    .await?;
    // And after the commit reached `a` only.
    let (server, _co) = crash_and_recover(
        report,
        &parties,
        (server, co),
        "t4",
        FaultPoint::AfterFirstDecision,
        TxState::Committed,
        TxState::Committed,
        crash_faults,
    )
    .await?;
    let _ = server.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Submits `tx`, which crashes the coordinator at `point`; shows the
/// participants blocked (`a` in `first`, `b` and `c` prepared, or in `end`
/// if they asked between a decision and the crash); restarts
/// the coordinator on the same log and address and waits until every
/// participant has `tx` in `end`.
#[allow(clippy::too_many_arguments)]
async fn crash_and_recover(
    report: &mut Report,
    parties: &Parties,
    (server, co): (ServerHandle, CoordinatorClient),
    tx: &str,
    point: FaultPoint,
    first: TxState,
    end: TxState,
    faults: impl Fn() -> Faults,
) -> anyhow::Result<(ServerHandle, CoordinatorClient)> {
    let addr = server.local_addr();
    let start = Instant::now();
    let crashed = co.submit(transaction(tx, "3")).await;
    let (states, words) = parties.describe(tx).await?;
    // `b` and `c` are prepared; one that asked (`GetOutcome`) between the
    // decision and the crash may have learned it already: that is `end`.
    let blocked = states[0] == first
        && states[1..]
            .iter()
            .all(|s| *s == TxState::Prepared || *s == end);
    report.sync_call(
        format!("{PATH} crash"),
        format!("Submit({tx}), coordinator crashes {point}"),
        "RRA",
        match crashed {
            Err(e) if blocked && e.to_string().contains("crashed") => {
                Ok(format!("no answer; participants blocked: {words}"))
            }
            Err(e) => Err(format!("{e}; participants: {words}")),
            Ok(r) => Err(format!("the crashed coordinator answered {r:?}")),
        },
        start,
    );
    // Only the log survives: a new coordinator on it, at the same address.
    let _ = server.shutdown(Duration::from_secs(1)).await;
    let start = Instant::now();
    let (server, co) = parties.coordinator(&addr.to_string(), faults()).await?;
    let settled = parties.wait_all(tx, end).await;
    let outcome = co
        .get_outcome(rpc_services::proto::twopc::v1::OutcomeRequest { tx: tx.to_owned() })
        .await
        .map(|r| outcome_word(r.outcome));
    report.sync_call(
        format!("{PATH} crash"),
        format!("restart from the log, then GetOutcome({tx})"),
        "RR",
        match (settled, outcome) {
            (Ok(words), Ok(o)) => Ok(format!("{o}, consistently: {words}")),
            (Err(e), _) => Err(e.to_string()),
            (_, Err(e)) => Err(format!("GetOutcome: {e}")),
        },
        start,
    );
    Ok((server, co))
}
