//! Two-phase commit against real `twopc-node` child processes on loopback:
//! a coordinator and three participants, crashed at chosen points of a
//! transaction (`--crash-at`), held there (`--hold-at`), killed with
//! SIGKILL and restarted on the same address and data directory.
//!
//! Verdicts are states and values, never durations: every wait ends on an
//! event (a line printed, a status that changes, polled every 10 ms) within
//! a bound far above what it needs.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use rpc_core::client::UdpChannel;
use rpc_core::{Client, Code};
use rpc_services::proto::twopc::v1::{
    BeginRequest, CoordinatorClient, DecisionRequest, Op, Outcome, OutcomeRequest, Part,
    ParticipantClient, ParticipantRecord, PrepareRequest, ReadRequest, StatusRequest, SubmitReply,
    SubmitRequest, TxState, Vote,
};
use rpc_services::twopc::log::{frame, Log, LOG_FILE};
use rpc_services::twopc::{
    serve_coordinator, serve_participant, CoordinatorConfig, CoordinatorServer, ParticipantServer,
};
use rpc_testkit::{Cluster, Exit, Node, NodeBuilder, Output, TestDir};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

const BOUND: Duration = Duration::from_secs(30);
const NAMES: [&str; 3] = ["a", "b", "c"];

/// A participant that asks about a prepared transaction every 50 ms.
fn participant(name: &str) -> NodeBuilder {
    participant_asking(name, 50)
}

fn participant_asking(name: &str, ask_every_ms: u64) -> NodeBuilder {
    NodeBuilder::new(name, env!("CARGO_BIN_EXE_twopc-node"))
        .args(["participant", "--name", name])
        .args(["--listen", "{addr}", "--data-dir", "{data}"])
        .arg(format!("--ask-every-ms={ask_every_ms}"))
        .env("RUST_LOG", "info")
        .start_timeout(BOUND)
}

fn coordinator(members: &[(String, SocketAddr)], extra: &[&str]) -> NodeBuilder {
    let mut b = NodeBuilder::new("coordinator", env!("CARGO_BIN_EXE_twopc-node"))
        .args(["coordinator", "--listen", "{addr}", "--data-dir", "{data}"])
        .env("RUST_LOG", "info")
        .start_timeout(BOUND);
    for (name, addr) in members {
        b = b.arg(format!("--participant={name}={addr}"));
    }
    b.args(extra.iter().copied())
}

/// Three participants and a coordinator (with `extra` arguments).
async fn cluster(extra: &[&str]) -> (Cluster, Vec<(String, SocketAddr)>, SocketAddr) {
    cluster_asking(extra, 50).await
}

/// [`cluster`] with participants that ask every `ask_every_ms`.
async fn cluster_asking(
    extra: &[&str],
    ask_every_ms: u64,
) -> (Cluster, Vec<(String, SocketAddr)>, SocketAddr) {
    let mut cluster = Cluster::new().unwrap();
    let mut members = Vec::new();
    for name in NAMES {
        let addr = cluster
            .start(participant_asking(name, ask_every_ms))
            .unwrap()
            .addr();
        members.push((name.to_owned(), addr));
    }
    let coord = cluster.start(coordinator(&members, extra)).unwrap().addr();
    (cluster, members, coord)
}

async fn coordinator_client(addr: SocketAddr) -> CoordinatorClient {
    CoordinatorClient::new(Client::new(UdpChannel::connect(addr).await.unwrap()))
}

async fn participant_client(addr: SocketAddr) -> ParticipantClient {
    ParticipantClient::new(Client::new(UdpChannel::connect(addr).await.unwrap()))
}

fn put(key: &str, value: &str) -> Op {
    Op {
        key: key.into(),
        value: Some(value.into()),
        expect: None,
    }
}

/// One part per participant: `a` writes `ka`, `b` writes `kb`, ...
fn parts(tx: &str, value: &str) -> SubmitRequest {
    SubmitRequest {
        tx: tx.into(),
        parts: NAMES
            .iter()
            .map(|n| Part {
                participant: (*n).into(),
                ops: vec![put(&format!("k{n}"), value)],
            })
            .collect(),
    }
}

async fn tx_state(p: &ParticipantClient, tx: &str) -> Option<TxState> {
    let status = p.status(StatusRequest {}).await.ok()?;
    status
        .txs
        .iter()
        .find(|t| t.tx == tx)
        .and_then(|t| TxState::try_from(t.state).ok())
}

/// Polls `check` every 10 ms until it gives `Some`, at most [`BOUND`].
async fn wait_for<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    rpc_testkit::poll_until(BOUND, Duration::from_millis(10), check)
        .await
        .unwrap_or_else(|| panic!("waited {BOUND:?} for {what}"))
}

/// Waits until every participant has `tx` in `state`.
async fn all_in(ps: &[ParticipantClient], tx: &str, state: TxState) {
    for (p, name) in ps.iter().zip(NAMES) {
        wait_for(&format!("{tx} {state:?} at {name}"), || async {
            (tx_state(p, tx).await == Some(state)).then_some(())
        })
        .await;
    }
}

async fn value(p: &ParticipantClient, key: &str) -> (Option<String>, String) {
    let r = p.read(ReadRequest { key: key.into() }).await.unwrap();
    (r.value, r.reserved_by)
}

fn wait_line(node: &mut Node, output: Output, what: &str) -> String {
    tokio::task::block_in_place(|| node.wait_for_line(output, BOUND, |l| l.contains(what)))
        .unwrap_or_else(|e| panic!("waiting for {what:?}: {e}"))
}

async fn clients(members: &[(String, SocketAddr)]) -> Vec<ParticipantClient> {
    let mut out = Vec::new();
    for (_, addr) in members {
        out.push(participant_client(*addr).await);
    }
    out
}

/// (a) A transaction across three participants commits (every value
/// visible, no key left reserved); one whose part at `c` expects a value
/// that is not there gets c's no vote and aborts everywhere (nothing
/// applied, nothing left reserved).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_across_three_participants_and_aborts_on_a_no_vote() {
    let (cluster, members, coord) = cluster(&[]).await;
    let co = coordinator_client(coord).await;
    let ps = clients(&members).await;

    let tx = co.begin(BeginRequest {}).await.unwrap().tx;
    let reply = co.submit(parts(&tx, "1")).await.unwrap();
    assert_eq!(reply.outcome, Outcome::Committed as i32, "{reply:?}");
    assert!(reply.refusals.is_empty());
    all_in(&ps, &tx, TxState::Committed).await;
    for (p, n) in ps.iter().zip(NAMES) {
        assert_eq!(
            value(p, &format!("k{n}")).await,
            (Some("1".into()), String::new())
        );
    }

    let tx2 = co.begin(BeginRequest {}).await.unwrap().tx;
    assert_ne!(tx, tx2);
    let mut req = parts(&tx2, "2");
    req.parts[2].ops[0].expect = Some("not-there".into());
    let reply = co.submit(req).await.unwrap();
    assert_eq!(reply.outcome, Outcome::Aborted as i32, "{reply:?}");
    assert_eq!(reply.refusals.len(), 1, "{reply:?}");
    assert!(reply.refusals[0].starts_with("c: key kc is"), "{reply:?}");
    all_in(&ps, &tx2, TxState::Aborted).await;
    for (p, n) in ps.iter().zip(NAMES) {
        assert_eq!(
            value(p, &format!("k{n}")).await,
            (Some("1".into()), String::new())
        );
    }
    let status = co.status(StatusRequest {}).await.unwrap();
    let outcomes: Vec<(String, i32, bool)> = status
        .txs
        .iter()
        .map(|t| (t.tx.clone(), t.outcome, t.done))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (tx, Outcome::Committed as i32, true),
            (tx2, Outcome::Aborted as i32, true)
        ]
    );
    cluster.passed();
}

/// (b) The coordinator aborts (the process) after every participant voted
/// yes and before it decided: the participants stay prepared, their keys
/// reserved, and keep asking; a prepare that needs a reserved key votes
/// no. Restarted, the coordinator finds no decision in its log and aborts
/// (presumed abort): every participant aborts, nothing is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_crash_after_the_votes_blocks_participants_then_all_abort() {
    let (mut cluster, members, coord) =
        cluster(&["--crash-at", "after-prepare-votes", "--fault-tx", "T1"]).await;
    let co = coordinator_client(coord).await;
    let ps = clients(&members).await;

    let submit = tokio::spawn(async move { co.submit(parts("T1", "1")).timeout(BOUND).await });
    let exit =
        tokio::task::block_in_place(|| cluster.node_mut("coordinator").unwrap().wait_exit(BOUND))
            .unwrap();
    // `std::process::abort`: SIGABRT. Its client would wait for its deadline.
    assert_eq!(exit, Exit::Signal(6), "coordinator {exit}");
    submit.abort();

    all_in(&ps, "T1", TxState::Prepared).await;
    // Each participant asked the coordinator and is still prepared.
    for name in NAMES {
        wait_line(
            cluster.node_mut(name).unwrap(),
            Output::Stderr,
            "still prepared",
        );
    }
    for (p, n) in ps.iter().zip(NAMES) {
        assert_eq!(tx_state(p, "T1").await, Some(TxState::Prepared));
        assert_eq!(value(p, &format!("k{n}")).await, (None, "T1".to_owned()));
    }
    // A reserved key makes another transaction's prepare vote no.
    let vote = ps[0]
        .prepare(PrepareRequest {
            tx: "other".into(),
            coordinator: coord.to_string(),
            ops: vec![put("ka", "x")],
        })
        .await
        .unwrap();
    assert_eq!(vote.vote, Vote::No as i32);
    assert!(vote.reason.contains("reserved by T1"), "{}", vote.reason);

    tokio::task::block_in_place(|| cluster.node_mut("coordinator").unwrap().restart()).unwrap();
    all_in(&ps, "T1", TxState::Aborted).await;
    for (p, n) in ps.iter().zip(NAMES) {
        assert_eq!(value(p, &format!("k{n}")).await, (None, String::new()));
    }
    let co = coordinator_client(coord).await;
    let outcome = co
        .get_outcome(OutcomeRequest { tx: "T1".into() })
        .await
        .unwrap();
    assert_eq!(outcome.outcome, Outcome::Aborted as i32);
    // The restarted coordinator runs new transactions (the fault was T1's).
    let reply = co.submit(parts("T2", "2")).await.unwrap();
    assert_eq!(reply.outcome, Outcome::Committed as i32, "{reply:?}");
    cluster.passed();
}

/// (b) The coordinator aborts (the process) after the commit reached only
/// the first participant: that one committed, the others stay prepared.
/// Restarted, the coordinator finds the commit in its log and sends it
/// again: every participant commits. (The participants here ask about a
/// prepared transaction only every ten minutes, so that none learns the
/// commit from `GetOutcome` before the crash: what commits them is the
/// restarted coordinator's resend.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_crash_after_the_first_commit_then_all_commit() {
    let (mut cluster, members, coord) = cluster_asking(
        &["--crash-at", "after-first-decision", "--fault-tx", "T1"],
        600_000,
    )
    .await;
    let co = coordinator_client(coord).await;
    let ps = clients(&members).await;
    let submit = tokio::spawn(async move { co.submit(parts("T1", "1")).timeout(BOUND).await });
    let exit =
        tokio::task::block_in_place(|| cluster.node_mut("coordinator").unwrap().wait_exit(BOUND))
            .unwrap();
    assert_eq!(exit, Exit::Signal(6), "coordinator {exit}");
    submit.abort();

    // The commit went to `a` only.
    assert_eq!(tx_state(&ps[0], "T1").await, Some(TxState::Committed));
    assert_eq!(value(&ps[0], "ka").await, (Some("1".into()), String::new()));
    for (p, n) in ps.iter().zip(NAMES).skip(1) {
        assert_eq!(tx_state(p, "T1").await, Some(TxState::Prepared), "at {n}");
        assert_eq!(value(p, &format!("k{n}")).await, (None, "T1".to_owned()));
    }

    tokio::task::block_in_place(|| cluster.node_mut("coordinator").unwrap().restart()).unwrap();
    all_in(&ps, "T1", TxState::Committed).await;
    for (p, n) in ps.iter().zip(NAMES) {
        assert_eq!(
            value(p, &format!("k{n}")).await,
            (Some("1".into()), String::new())
        );
    }
    // Asked again, the restarted coordinator answers from its log.
    let co = coordinator_client(coord).await;
    let again = co.submit(parts("T1", "1")).await.unwrap();
    assert_eq!(again.outcome, Outcome::Committed as i32);
    // The same id for other parts is refused, not answered "committed".
    let reused = co.submit(parts("T1", "other")).await.unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists, "{reused}");
    assert_eq!(value(&ps[1], "kb").await.0.as_deref(), Some("1"));
    cluster.passed();
}

/// (c) A participant is killed (SIGKILL) after voting yes, while the
/// coordinator holds before deciding; restarted, it is prepared again from
/// its log (keys reserved). Released, the coordinator commits, and the
/// restarted participant learns it and applies its part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participant_killed_after_voting_yes_recovers_prepared_then_commits() {
    let dir = TestDir::new().unwrap();
    let go = dir.path().join("go");
    let go_arg = go.to_string_lossy().into_owned();
    let (mut cluster, members, coord) = cluster(&[
        "--hold-at",
        "after-prepare-votes",
        "--go-file",
        &go_arg,
        "--fault-tx",
        "T1",
    ])
    .await;
    let co = coordinator_client(coord).await;
    let ps = clients(&members).await;
    let submit = tokio::spawn({
        let co = co.clone();
        async move { co.submit(parts("T1", "1")).timeout(BOUND).await }
    });
    wait_line(
        cluster.node_mut("coordinator").unwrap(),
        Output::Stderr,
        "holding at after-prepare-votes",
    );
    all_in(&ps, "T1", TxState::Prepared).await;

    let b = cluster.node_mut("b").unwrap();
    tokio::task::block_in_place(|| b.kill()).unwrap();
    tokio::task::block_in_place(|| b.restart()).unwrap();
    wait_line(b, Output::Stderr, "recovered into the prepared state");
    assert_eq!(tx_state(&ps[1], "T1").await, Some(TxState::Prepared));
    assert_eq!(value(&ps[1], "kb").await, (None, "T1".to_owned()));
    // Until the coordinator decides, asking gets "pending": still prepared.
    let pending = co
        .get_outcome(OutcomeRequest { tx: "T1".into() })
        .await
        .unwrap();
    assert_eq!(pending.outcome, Outcome::Pending as i32);
    assert_eq!(tx_state(&ps[1], "T1").await, Some(TxState::Prepared));

    std::fs::write(&go, b"go").unwrap();
    let reply: SubmitReply = submit.await.unwrap().unwrap();
    assert_eq!(reply.outcome, Outcome::Committed as i32, "{reply:?}");
    all_in(&ps, "T1", TxState::Committed).await;
    assert_eq!(value(&ps[1], "kb").await, (Some("1".into()), String::new()));
    cluster.passed();
    dir.passed();
}

/// (c) A participant whose log says it prepared a transaction, and whose
/// coordinator's decision cannot reach it (the coordinator has it under
/// another address), learns the outcome by asking `GetOutcome` and
/// applies it. In process: a coordinator and a participant over loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_participant_learns_the_outcome_by_asking() {
    let dir = TestDir::new().unwrap();
    // The coordinator's log: T1 committed, participant `a` at an address
    // where nobody listens.
    let nowhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let (clog, _) = Log::open::<rpc_services::proto::twopc::v1::CoordinatorRecord>(
        &dir.path().join("coordinator"),
    )
    .unwrap();
    for (outcome, participants) in [
        (Outcome::Pending, vec![format!("a={nowhere}")]),
        (Outcome::Committed, vec![]),
    ] {
        clog.append_blocking(&rpc_services::proto::twopc::v1::CoordinatorRecord {
            tx: "T1".into(),
            outcome: outcome as i32,
            participants,
            done: false,
            parts_digest: 0,
        })
        .unwrap();
    }
    drop(clog);
    let mut config = CoordinatorConfig::new(dir.path().join("coordinator"), BTreeMap::new());
    config.decision_timeout = Duration::from_millis(100);
    let coordinator = CoordinatorServer::open(config).unwrap();
    let coord = serve_coordinator(coordinator, "127.0.0.1:0").await.unwrap();

    // The participant's log: T1 prepared, coordinator at `coord`.
    let (plog, _) = Log::open::<ParticipantRecord>(&dir.path().join("a")).unwrap();
    plog.append_blocking(&ParticipantRecord {
        tx: "T1".into(),
        state: TxState::Prepared as i32,
        coordinator: coord.local_addr().to_string(),
        ops: vec![put("k", "v")],
        reason: String::new(),
    })
    .unwrap();
    drop(plog);
    let participant = ParticipantServer::open("a", &dir.path().join("a")).unwrap();
    let door = serve_participant(participant, "127.0.0.1:0", Duration::from_millis(20))
        .await
        .unwrap();
    let p = participant_client(door.local_addr()).await;
    wait_for("a learns T1's outcome", || async {
        (tx_state(&p, "T1").await == Some(TxState::Committed)).then_some(())
    })
    .await;
    assert_eq!(value(&p, "k").await, (Some("v".into()), String::new()));
    dir.passed();
}

/// (d) Duplicates are harmless: a second `Prepare`, `Commit` or `Submit`
/// of a committed transaction gets the same answer and appends nothing to
/// the log; an `Abort` of it is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_prepare_commit_and_submit_are_harmless() {
    let (cluster, members, coord) = cluster(&[]).await;
    let co = coordinator_client(coord).await;
    let ps = clients(&members).await;
    let reply = co.submit(parts("T1", "1")).await.unwrap();
    assert_eq!(reply.outcome, Outcome::Committed as i32);
    all_in(&ps, "T1", TxState::Committed).await;
    let log_a = cluster.node("a").unwrap().data_dir().join(LOG_FILE);
    let before = std::fs::read(&log_a).unwrap();

    for _ in 0..3 {
        let vote = ps[0]
            .prepare(PrepareRequest {
                tx: "T1".into(),
                coordinator: coord.to_string(),
                ops: vec![put("ka", "1")],
            })
            .await
            .unwrap();
        assert_eq!(vote.vote, Vote::Yes as i32);
        // The same id with other operations is not this transaction.
        let reused = ps[0]
            .prepare(PrepareRequest {
                tx: "T1".into(),
                coordinator: coord.to_string(),
                ops: vec![put("ka", "changed")],
            })
            .await
            .unwrap_err();
        assert_eq!(reused.code(), Code::AlreadyExists, "{reused}");
        let ack = ps[0]
            .commit(DecisionRequest { tx: "T1".into() })
            .await
            .unwrap();
        assert_eq!(ack.state, TxState::Committed as i32);
        let again = co.submit(parts("T1", "1")).await.unwrap();
        assert_eq!(again.outcome, Outcome::Committed as i32);
    }
    let refused = ps[0]
        .abort(DecisionRequest { tx: "T1".into() })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(value(&ps[0], "ka").await, (Some("1".into()), String::new()));
    assert_eq!(
        std::fs::read(&log_a).unwrap(),
        before,
        "a duplicate was logged"
    );
    let status = co.status(StatusRequest {}).await.unwrap();
    assert_eq!(status.txs.len(), 1);

    // A no vote is repeated too, and its abort is acknowledged again.
    let mut req = parts("T2", "2");
    req.parts[0].ops[0].expect = Some("0".into());
    let reply = co.submit(req).await.unwrap();
    assert_eq!(reply.outcome, Outcome::Aborted as i32);
    for _ in 0..2 {
        let vote = ps[0]
            .prepare(PrepareRequest {
                tx: "T2".into(),
                coordinator: coord.to_string(),
                ops: vec![put("ka", "2")],
            })
            .await
            .unwrap();
        assert_eq!(vote.vote, Vote::No as i32);
        let ack = ps[1]
            .abort(DecisionRequest { tx: "T2".into() })
            .await
            .unwrap();
        assert_eq!(ack.state, TxState::Aborted as i32);
    }
    assert_eq!(value(&ps[1], "kb").await, (Some("1".into()), String::new()));
    cluster.passed();
}

/// (e) A participant's log with a flipped byte in its first record (valid
/// records after it) refuses to start, with a message naming the file; the
/// same log with a torn tail (half a record appended) starts, cuts the
/// tail off, says so, and has its data. A coordinator's corrupt log is
/// refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_log_refuses_to_start_and_a_torn_tail_is_cut() {
    let mut cluster = Cluster::new().unwrap();
    let addr = cluster.start(participant("a")).unwrap().addr();
    let p = participant_client(addr).await;
    let vote = p
        .prepare(PrepareRequest {
            tx: "T1".into(),
            coordinator: "127.0.0.1:9".into(),
            ops: vec![put("k", "v")],
        })
        .await
        .unwrap();
    assert_eq!(vote.vote, Vote::Yes as i32);
    p.commit(DecisionRequest { tx: "T1".into() }).await.unwrap();
    let node = cluster.node_mut("a").unwrap();
    tokio::task::block_in_place(|| node.kill()).unwrap();
    let log = node.data_dir().join(LOG_FILE);
    let good = std::fs::read(&log).unwrap();

    let mut corrupt = good.clone();
    corrupt[14] ^= 0x20; // inside the first record's payload
    std::fs::write(&log, &corrupt).unwrap();
    let err = tokio::task::block_in_place(|| node.restart()).unwrap_err();
    let stderr = std::fs::read_to_string(&node.logs().stderr).unwrap();
    println!("{err}");
    assert!(
        stderr.contains(&format!("log {} is corrupt", log.display())),
        "{stderr}"
    );
    assert!(stderr.contains("bad record at byte 0"), "{stderr}");
    assert_eq!(
        std::fs::read(&log).unwrap(),
        corrupt,
        "a refused log was changed"
    );

    let mut torn = good.clone();
    let half = frame(b"a record the crash interrupted");
    torn.extend_from_slice(&half[..half.len() / 2]);
    std::fs::write(&log, &torn).unwrap();
    tokio::task::block_in_place(|| node.restart()).unwrap();
    let line = wait_line(node, Output::Stdout, "torn tail cut at byte");
    assert!(line.contains(&format!("at byte {}", good.len())), "{line}");
    assert_eq!(std::fs::read(&log).unwrap(), good);
    let p = participant_client(node.addr()).await;
    let status = p.status(StatusRequest {}).await.unwrap();
    assert!(status.torn_tail);
    assert_eq!(status.recovered_records, 2);
    assert_eq!(value(&p, "k").await, (Some("v".into()), String::new()));

    // The coordinator's log is checked the same way.
    let members = vec![("a".to_owned(), node.addr())];
    let coord = cluster.start(coordinator(&members, &[])).unwrap().addr();
    let co = coordinator_client(coord).await;
    let reply = co
        .submit(SubmitRequest {
            tx: "T2".into(),
            parts: vec![Part {
                participant: "a".into(),
                ops: vec![put("k", "w")],
            }],
        })
        .await
        .unwrap();
    assert_eq!(reply.outcome, Outcome::Committed as i32);
    let node = cluster.node_mut("coordinator").unwrap();
    tokio::task::block_in_place(|| node.kill()).unwrap();
    let log = node.data_dir().join(LOG_FILE);
    let mut corrupt = std::fs::read(&log).unwrap();
    corrupt[13] ^= 0x01;
    std::fs::write(&log, &corrupt).unwrap();
    tokio::task::block_in_place(|| node.restart()).unwrap_err();
    let stderr = std::fs::read_to_string(&node.logs().stderr).unwrap();
    assert!(stderr.contains("coordinator cannot start"), "{stderr}");
    assert!(
        stderr.contains(&format!("log {} is corrupt", log.display())),
        "{stderr}"
    );
    cluster.passed();
}
