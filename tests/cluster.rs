//! The cluster kit (`rpc-testkit`) over real processes on loopback.
//!
//! - Three `demo-server` processes behind a UDP network of fault proxies
//!   (one per link), driven by a seeded nemesis (kills, restarts, pauses,
//!   partitions, isolations, loss bursts), while concurrent clients
//!   increment on all three: the execution logs show no (session, request
//!   id) run twice on any node, every call reported OK ran exactly once
//!   and every call reported "did not run" never ran.
//! - A `register-server` under a nemesis of pauses, partitions and loss
//!   bursts, with clients reading, writing and compare-and-setting: the
//!   history is linearizable; the same server with `--stale-reads` (reads
//!   from a replica one change behind) is caught by the checker, every
//!   time: the workload ends, once the network is healed, with two writes
//!   and a read back of each key by one client alone.
//!
//! The nemesis' seed is printed with its schedule (captured, shown when a
//! test fails); `RPC_NEMESIS_SEED=<seed>` runs the same schedule again.
//! Each test's cluster directory is made before the test's time limit
//! starts and is named by every failure (an error, a timeout, an
//! assertion); it is removed only when the test passes
//! ([`Cluster::passed`]), so the nodes' logs are there to read.
//! The steps are paced by completed calls (each call ends within its
//! timeout, so the run always progresses); no verdict depends on the clock.
#![allow(clippy::print_stderr)] // the schedule and the figures are the tests' report

use anyhow::Context as _;
use prost::Message as _;
use rpc_core::client::{ChannelConfig, UdpChannel};
use rpc_core::{CallError, Client};
use rpc_testkit::{
    check, Cluster, Fault, FaultKind, Nemesis, Net, NodeBuilder, Op, Outcome, Recorder, Response,
};
use rpc_tests::demo::Amount;
use rpc_tests::{bounded, init_tracing, read_exec_log, run_concurrent, CounterClient};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

rpc_core::idl!("idl/register.idl");

use register::v1::{CasArgs, Key, RegisterClient, WriteArgs};

/// The whole of each test; only a hung test reaches it.
const LIMIT: Duration = Duration::from_secs(300);
/// How long one call may take: a call to a paused, killed or cut node
/// ends with its timeout.
const CALL: Duration = Duration::from_millis(800);

fn channel_config() -> ChannelConfig {
    let mut c = ChannelConfig::default();
    c.initial_rto = Duration::from_millis(20);
    c.max_rto = Duration::from_millis(200);
    c.default_retries = 20;
    c.max_wait = CALL;
    c
}

/// Where a failed test's logs are: every failure message ends with it.
fn logs_in(dir: &Path) -> String {
    format!(
        "the cluster directory {} is kept: each node's logs are <node>/run-<n>.stdout and .stderr",
        dir.display()
    )
}

/// Starts the nodes (blocking: each waits for its address).
fn start(cluster: &mut Cluster, nodes: Vec<NodeBuilder>) -> anyhow::Result<()> {
    tokio::task::block_in_place(|| {
        for node in nodes {
            cluster.start(node)?;
        }
        Ok(())
    })
}

/// The datagrams that the links from the member "client" to the nodes
/// dropped (loss, blackholes), both ways.
fn dropped_by_client(cluster: &Cluster, net: &Net) -> u64 {
    cluster
        .nodes()
        .iter()
        .filter_map(|n| net.udp_proxy("client", n.name()))
        .map(|p| {
            let s = p.stats();
            s.client_to_server.dropped + s.server_to_client.dropped
        })
        .sum()
}

/// Whether the fault is one of the network's (each of this file's
/// schedules cuts or thins some link of the client with it).
fn is_network_fault(fault: &Fault) -> bool {
    matches!(
        fault,
        Fault::Partition(..) | Fault::Isolate(_) | Fault::LossBurst { .. }
    )
}

/// Runs `schedule` on a blocking thread, each step once `done` reached
/// its share of `total` and, after a network fault, once the client's
/// links dropped a datagram under it (so that no network fault is lifted
/// before it took effect); as a bound, 5 s after the previous step. Gives
/// the cluster and the network back.
fn run_nemesis(
    schedule: rpc_testkit::Schedule,
    mut cluster: Cluster,
    mut net: Net,
    done: Arc<AtomicUsize>,
    total: usize,
) -> tokio::task::JoinHandle<anyhow::Result<(Cluster, Net)>> {
    tokio::task::spawn_blocking(move || {
        let steps = schedule.steps().len();
        // The drops counted when the last network fault was applied.
        let mut dropped_then: Option<u64> = None;
        for (i, fault) in schedule.steps().iter().enumerate() {
            let target = (i + 1) * total / (steps + 1);
            let bound = Instant::now() + Duration::from_secs(5);
            while Instant::now() < bound {
                let paced = done.load(Ordering::SeqCst) >= target;
                let took_effect =
                    dropped_then.is_none_or(|d| dropped_by_client(&cluster, &net) > d);
                if paced && took_effect {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            tracing::info!(seed = schedule.seed(), step = i + 1, %fault, "nemesis");
            rpc_testkit::nemesis::apply(fault, &mut cluster, Some(&mut net)).map_err(|source| {
                rpc_testkit::NemesisError {
                    seed: schedule.seed(),
                    step: i + 1,
                    fault: fault.clone(),
                    source: Box::new(source),
                }
            })?;
            dropped_then = is_network_fault(fault).then(|| dropped_by_client(&cluster, &net));
        }
        Ok((cluster, net))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_demo_servers_under_a_nemesis_never_run_a_request_twice() -> anyhow::Result<()> {
    const NODES: [&str; 3] = ["a", "b", "c"];
    const CALLS: usize = 300;
    const IN_FLIGHT: usize = 12;
    const SESSIONS_PER_NODE: usize = 2;
    init_tracing();
    // Made outside the time limit, so that a timeout can name it too.
    let mut cluster = Cluster::new()?;
    let dir = cluster.dir().to_path_buf();
    bounded(LIMIT, async {
        // A fixed schedule in the suite, with kills, pauses, partitions,
        // an isolation and a loss burst; `RPC_NEMESIS_SEED=random` explores.
        const SEED: u64 = 0x5EED_0018;
        let seed = Nemesis::seed_from_env_or(SEED)?;
        let bin = env!("CARGO_BIN_EXE_demo-server");
        start(
            &mut cluster,
            NODES
                .iter()
                .map(|n| {
                    NodeBuilder::new(*n, bin).args(["--listen", "{addr}", "--exec-log", "{data}/exec.log"])
                })
                .collect(),
        )?;
        let mut net = Net::udp(seed);
        for n in NODES {
            let addr = cluster.node(n).map(|n| n.addr()).ok_or_else(|| anyhow::anyhow!("no {n}"))?;
            net.add_node(n, addr).await?;
        }
        net.add_client("client").await?;
        let schedule = Nemesis::new(seed)
            .nodes(NODES)
            .members(["a", "b", "c", "client"])
            .steps(10)
            .schedule();
        eprintln!("{schedule}");
        let has = |kind: fn(&Fault) -> bool| schedule.steps().iter().any(kind);
        if seed == SEED {
            // Not vacuous: the suite's run meets every kind of fault
            // (a seed to explore may draw fewer).
            assert!(
                has(|f| matches!(f, Fault::Kill(_)))
                    && has(|f| matches!(f, Fault::Pause(_)))
                    && has(|f| matches!(f, Fault::Partition(..))),
                "the suite's schedule lacks a kill, a pause or a partition:\n{schedule}"
            );
        }
        let network_faults = has(is_network_fault);

        // Sessions: SESSIONS_PER_NODE channels to each node, through the
        // client's links.
        let mut clients = Vec::new();
        for _ in 0..SESSIONS_PER_NODE {
            for n in NODES {
                let channel = UdpChannel::connect_with(net.addr("client", n)?, channel_config()).await?;
                clients.push(CounterClient::new(Client::new(channel)));
            }
        }
        let done = Arc::new(AtomicUsize::new(0));
        let nemesis = run_nemesis(schedule, cluster, net, done.clone(), CALLS);
        let clients = Arc::new(clients);
        // Call i: a unique delta (its tag in the execution logs), RR and
        // RRA alternately, round robin over the sessions.
        let results = run_concurrent(CALLS, IN_FLIGHT, |i| {
            let client = clients[i % clients.len()].clone();
            let done = done.clone();
            async move {
                let tag = Amount { delta: i as i64 + 1 };
                let call = if i % 2 == 0 { client.increment(tag) } else { client.increment_acked(tag) };
                let r = call.timeout(CALL).await;
                done.fetch_add(1, Ordering::SeqCst);
                r
            }
        })
        .await;
        let (mut cluster, net) = nemesis.await??;

        let mut succeeded = HashSet::new();
        let mut not_run = HashSet::new();
        let mut unknown = 0usize;
        for (i, r) in results.iter().enumerate() {
            let tag = i as i64 + 1;
            match r {
                Ok(_) => {
                    succeeded.insert(tag);
                }
                Err(CallError::Rpc(e)) if !e.may_have_run() => {
                    not_run.insert(tag);
                }
                Err(CallError::Rpc(_)) => unknown += 1,
                Err(e) => anyhow::bail!("call {i} failed with {e:?}"),
            }
        }
        assert!(!succeeded.is_empty(), "calls succeed once the nemesis is done");

        // Stop the nodes, then read what each of them ran, over all runs.
        let mut by_tag: HashMap<i64, usize> = HashMap::new();
        let mut executions = 0;
        for node in cluster.nodes_mut() {
            let log = node.data_dir().join("exec.log");
            let runs = node.run();
            tokio::task::block_in_place(|| if node.is_running() { node.kill().map(drop) } else { Ok(()) })?;
            let mut seen = HashSet::new();
            for run in read_exec_log(&log)? {
                assert!(
                    seen.insert((run.session, run.request_id)),
                    "node {} ({runs} runs) ran a request twice: {run:?}; its execution log {}, its last logs {} and {}; {}",
                    node.name(),
                    log.display(),
                    node.logs().stdout.display(),
                    node.logs().stderr.display(),
                    logs_in(&dir),
                );
                *by_tag.entry(Amount::decode(run.payload.as_slice())?.delta).or_default() += 1;
                executions += 1;
            }
        }
        for (tag, n) in &by_tag {
            assert_eq!(*n, 1, "call {tag} ran {n} times; {}", logs_in(&dir));
        }
        for tag in &succeeded {
            assert_eq!(by_tag.get(tag), Some(&1), "call {tag} reported OK ran once; {}", logs_in(&dir));
        }
        for tag in &not_run {
            assert_eq!(by_tag.get(tag), None, "call {tag} reported not run, but ran; {}", logs_in(&dir));
        }
        let dropped = dropped_by_client(&cluster, &net);
        // The nemesis waits after each network fault for a drop (bounded):
        // only a fault that never took effect leaves this at zero.
        assert!(
            !network_faults || dropped > 0,
            "seed {seed}: the network faults dropped no datagram; {}",
            logs_in(&dir)
        );
        eprintln!(
            "{CALLS} calls: {} ok, {unknown} may have run, {} did not run; {executions} executions, none twice; \
             runs per node {:?}; datagrams dropped by the client's links {dropped}",
            succeeded.len(),
            not_run.len(),
            cluster.nodes().iter().map(|n| (n.name().to_owned(), n.run())).collect::<Vec<_>>(),
        );
        drop(net);
        cluster.passed();
        Ok(())
    })
    .await
    .with_context(|| logs_in(&dir))
}

type Key_ = &'static str;
const KEYS: [Key_; 3] = ["x", "y", "z"];

/// Runs the register workload against `register-server` (with
/// `--stale-reads` if `stale`) in `cluster` under a nemesis; returns the
/// history's report and the cluster.
async fn register_history(
    mut cluster: Cluster,
    stale: bool,
) -> anyhow::Result<(rpc_testkit::Report<Key_, i64>, Cluster)> {
    const PROCESSES: u64 = 4;
    const OPS: usize = 40;
    let seed = Nemesis::seed_from_env_or(if stale { 0x5EED_0003 } else { 0x5EED_0002 })?;
    let mut node =
        NodeBuilder::new("reg", env!("CARGO_BIN_EXE_register-server")).args(["--listen", "{addr}"]);
    if stale {
        node = node.arg("--stale-reads");
    }
    start(&mut cluster, vec![node])?;
    let mut net = Net::udp(seed);
    let addr = cluster
        .node("reg")
        .map(|n| n.addr())
        .ok_or_else(|| anyhow::anyhow!("no reg"))?;
    net.add_node("reg", addr).await?;
    net.add_client("client").await?;
    let to_reg = net.addr("client", "reg")?;
    // No kills: the register keeps its data in memory only.
    let schedule = Nemesis::new(seed)
        .nodes(["reg"])
        .members(["reg", "client"])
        .faults([FaultKind::Pause, FaultKind::Partition, FaultKind::LossBurst])
        .steps(6)
        .schedule();
    assert!(schedule
        .steps()
        .iter()
        .all(|s| !matches!(s, Fault::Kill(_))));
    eprintln!("{schedule}");

    let recorder: Recorder<Key_, i64> = Recorder::new();
    let done = Arc::new(AtomicUsize::new(0));
    let total = PROCESSES as usize * OPS;
    let nemesis = run_nemesis(schedule, cluster, net, done.clone(), total);
    let mut tasks = Vec::new();
    for p in 0..PROCESSES {
        let channel = UdpChannel::connect_with(to_reg, channel_config()).await?;
        let client = RegisterClient::new(Client::new(channel));
        let (recorder, done) = (recorder.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            // A small generator of its own per process, from the seed.
            let mut state = seed ^ (p + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let mut next = move |n: u64| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (state >> 33) % n
            };
            let mut last: HashMap<Key_, i64> = HashMap::new();
            for i in 0..OPS {
                let key = KEYS[next(KEYS.len() as u64) as usize];
                let value = (p as i64 + 1) * 1_000 + i as i64;
                // The last value this process saw of the key, for its
                // compare-and-sets to succeed now and then.
                let seen = match next(3) {
                    0 => read(&client, &recorder, p, key).await.flatten(),
                    1 => write(&client, &recorder, p, key, value)
                        .await
                        .then_some(value),
                    _ => {
                        let expected = last.get(key).copied().unwrap_or(0);
                        (cas(&client, &recorder, p, key, expected, value).await == Some(true))
                            .then_some(value)
                    }
                };
                if let Some(v) = seen {
                    last.insert(key, v);
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let (cluster, net) = nemesis.await??;

    // Healed: one client alone writes each key twice and reads it back.
    // Only the first write can give the value a replica one change behind
    // serves; it is a value nobody else ever wrote, and the second write
    // ended before the read began, so such a read is never linearizable.
    let channel = UdpChannel::connect_with(to_reg, channel_config()).await?;
    let client = RegisterClient::new(Client::new(channel));
    let mut fresh = 1_000_000;
    for key in KEYS {
        for _ in 0..2 {
            let mut written = false;
            for _attempt in 0..5 {
                fresh += 1;
                if write(&client, &recorder, 100, key, fresh).await {
                    written = true;
                    break;
                }
            }
            assert!(written, "a write to the healed register succeeds");
        }
        read(&client, &recorder, 100, key).await;
    }
    drop(net);
    let history = recorder.history();
    let report = check(&history)?;
    let outcomes = history.entries().iter().fold([0usize; 3], |mut n, e| {
        n[match e.outcome {
            Outcome::Ok(_) => 0,
            Outcome::Fail => 1,
            Outcome::Indeterminate => 2,
        }] += 1;
        n
    });
    eprintln!(
        "{} operations ({} ok, {} failed, {} indeterminate); stale reads {stale}: {}",
        history.len(),
        outcomes[0],
        outcomes[1],
        outcomes[2],
        if report.is_linearizable() {
            "linearizable"
        } else {
            "not linearizable"
        }
    );
    Ok((report, cluster))
}

/// What a failed call means for the history: a read has no effect; a
/// write or a compare-and-set that may have run is indeterminate.
fn failed<T>(call: rpc_testkit::history::Call<Key_, i64>, error: &CallError<T>)
where
    T: std::fmt::Debug,
{
    match error {
        CallError::Rpc(e) if !e.may_have_run() => call.fail(),
        CallError::Rpc(_) | CallError::Raised(..) => call.indeterminate(),
    }
}

/// A read, recorded; its value if it got one.
async fn read(
    client: &RegisterClient,
    recorder: &Recorder<Key_, i64>,
    p: u64,
    key: Key_,
) -> Option<Option<i64>> {
    let call = recorder.invoke(p, Op::Read(key));
    match client.read(Key { key: key.into() }).timeout(CALL).await {
        Ok(v) => {
            let value = v.present.then_some(v.value);
            call.ok(Response::Read(value));
            Some(value)
        }
        Err(_) => {
            call.fail();
            None
        }
    }
}

/// A write, recorded; whether it took effect.
async fn write(
    client: &RegisterClient,
    recorder: &Recorder<Key_, i64>,
    p: u64,
    key: Key_,
    value: i64,
) -> bool {
    let call = recorder.invoke(p, Op::Write(key, value));
    match client
        .write(WriteArgs {
            key: key.into(),
            value,
        })
        .timeout(CALL)
        .await
    {
        Ok(_) => {
            call.ok(Response::Written);
            true
        }
        Err(e) => {
            failed(call, &e);
            false
        }
    }
}

/// A compare-and-set, recorded; whether it swapped, if that is known.
async fn cas(
    client: &RegisterClient,
    recorder: &Recorder<Key_, i64>,
    p: u64,
    key: Key_,
    expected: i64,
    new: i64,
) -> Option<bool> {
    let call = recorder.invoke(p, Op::Cas(key, expected, new));
    match client
        .cas(CasArgs {
            key: key.into(),
            expected,
            new,
        })
        .timeout(CALL)
        .await
    {
        Ok(s) => {
            call.ok(Response::Cas(s.swapped));
            Some(s.swapped)
        }
        Err(e) => {
            failed(call, &e);
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_register_under_a_nemesis_is_linearizable() -> anyhow::Result<()> {
    init_tracing();
    let cluster = Cluster::new()?;
    let dir = cluster.dir().to_path_buf();
    let (report, cluster) = bounded(LIMIT, register_history(cluster, false))
        .await
        .with_context(|| logs_in(&dir))?;
    assert!(report.is_linearizable(), "{report}\n{}", logs_in(&dir));
    cluster.passed();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_serving_stale_reads_is_caught_by_the_checker() -> anyhow::Result<()> {
    init_tracing();
    let cluster = Cluster::new()?;
    let dir = cluster.dir().to_path_buf();
    let (report, cluster) = bounded(LIMIT, register_history(cluster, true))
        .await
        .with_context(|| logs_in(&dir))?;
    assert!(
        !report.is_linearizable(),
        "stale reads were not caught:\n{report}\n{}",
        logs_in(&dir)
    );
    eprintln!("{report}");
    cluster.passed();
    Ok(())
}
