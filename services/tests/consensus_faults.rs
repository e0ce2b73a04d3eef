//! The consensus service under faults: `raft-node` child processes whose
//! Raft links and client links all go through the test kit's UDP [`Net`]
//! (one fault proxy per directed link; each node reaches each peer through
//! its own proxy, `--route`), concurrent clients doing reads, writes and
//! compare-and-set on 10 keys, recorded with a [`Recorder`], while a
//! seeded script kills the leader and restarts it, pauses a node, drops
//! 20% of the datagrams on every link and partitions a minority. The
//! verdicts: the history is linearizable (the kit's checker, operations
//! of unknown outcome included), no term ever had two leaders, and a
//! partitioned minority serves nothing.
//!
//! The seed (`RPC_NEMESIS_SEED`, default fixed so that CI repeats the same
//! run) picks the paused node, the minority, the clients' operations and
//! the links' losses; it is printed first.
//!
//! Faults are paced by events (so many more operations completed), never
//! by sleeps; time bounds only stop a hang.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use rpc_services::consensus::{KvClient, KvClientError};
use rpc_services::proto::consensus::v1::{KeyValueClient, KvErrorKind, NodeStatus, StatusRequest};
use rpc_testkit::{
    check, Cluster, LinkFaults, Nemesis, Net, NodeBuilder, Op, Outcome, Recorder, Response,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bounds that only stop a hang (the machine may be loaded).
const HANG: Duration = Duration::from_secs(30);
const KEYS: usize = 10;

type Rec = Recorder<String, u64>;

/// The tests of this file run one at a time: each is a cluster of
/// processes, proxies and clients that loads the machine, and a node's
/// port is free while it is down (another test's new sockets could take
/// it).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn name(id: u64) -> String {
    format!("n{id}")
}

/// A cluster of `raft-node` processes behind a UDP [`Net`].
struct NetCluster {
    cluster: Cluster,
    net: Net,
    /// Each node's own address (the one in the membership).
    addrs: BTreeMap<u64, SocketAddr>,
    /// A stub per node at its own address, for its status.
    probes: Probes,
}

/// One `KeyValue` stub per node, made once: a stub per question would bind
/// a new socket each time, which may take the port of a node that is
/// down, before its restart binds it again.
type Probes = BTreeMap<u64, KeyValueClient>;

/// A free loopback port for a node's UDP and TCP doors, held (both
/// sockets bound) until the node is about to start, so that the proxies
/// and clients made meanwhile cannot take it.
fn reserve() -> (SocketAddr, std::net::UdpSocket, std::net::TcpListener) {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        if let Ok(tcp) = std::net::TcpListener::bind(addr) {
            return (addr, udp, tcp);
        }
    }
}

impl NetCluster {
    /// Starts nodes 1..=n, every link through `net`, with `clients` as
    /// client members of the net; node 1 makes the cluster of all.
    async fn start(n: u64, seed: u64, clients: &[&str]) -> NetCluster {
        let mut held: BTreeMap<u64, _> = (1..=n).map(|i| (i, reserve())).collect();
        let addrs: BTreeMap<u64, SocketAddr> = held.iter().map(|(i, r)| (*i, r.0)).collect();
        let mut net = Net::udp(seed);
        for (i, a) in &addrs {
            net.add_node(&name(*i), *a).await.unwrap();
        }
        for c in clients {
            net.add_client(c).await.unwrap();
        }
        let mut cluster = Cluster::new().unwrap();
        for (&i, &addr) in &addrs {
            let others = addrs.iter().filter(|(j, _)| **j != i);
            let peers: Vec<String> = others.clone().map(|(j, a)| format!("{j}={a}")).collect();
            let routes: Vec<String> = others
                .map(|(j, _)| format!("{j}={}", net.addr(&name(i), &name(*j)).unwrap()))
                .collect();
            let mut b = NodeBuilder::new(name(i), env!("CARGO_BIN_EXE_raft-node"))
                .listen(addr)
                .args(["--listen", "{addr}", "--data-dir", "{data}"])
                .arg(format!("--id={i}"))
                .arg(format!("--peers={}", peers.join(",")))
                .arg(format!("--route={}", routes.join(",")))
                .env("RUST_LOG", "info,openraft=warn")
                .start_timeout(HANG);
            if i == 1 {
                b = b.arg("--init");
            }
            drop(held.remove(&i));
            cluster.start(b).unwrap();
        }
        let mut probes = Probes::new();
        for (i, a) in &addrs {
            probes.insert(
                *i,
                KeyValueClient::connect(&format!("udp://{a}"))
                    .await
                    .unwrap(),
            );
        }
        NetCluster {
            cluster,
            net,
            addrs,
            probes,
        }
    }

    /// A client whose every node is reached through the client member
    /// `member`'s links.
    fn client(&self, member: &str, nodes: &[u64]) -> KvClient {
        let routed: BTreeMap<u64, SocketAddr> = nodes
            .iter()
            .map(|i| (*i, self.net.addr(member, &name(*i)).unwrap()))
            .collect();
        KvClient::with_ids(routed)
            .attempts(12)
            .call_timeout(Duration::from_secs(1))
    }

    fn ids(&self) -> Vec<u64> {
        self.addrs.keys().copied().collect()
    }

    /// Node operations block (a restart waits for the new process's
    /// address): off the async workers.
    fn node_op(&mut self, id: u64, op: &str) {
        let node = self.cluster.node_mut(&name(id)).unwrap();
        tokio::task::block_in_place(|| match op {
            "kill" => drop(node.kill().unwrap()),
            "restart" => node.restart().unwrap(),
            "pause" => node.pause().unwrap(),
            "resume" => node.resume().unwrap(),
            _ => unreachable!("{op}"),
        });
        println!("  {op} n{id}");
    }
}

/// A node's status, asked at its own address (not through the net: what a
/// node believes is not a fault to inject).
async fn status(stub: &KeyValueClient) -> Option<NodeStatus> {
    stub.status(StatusRequest {})
        .timeout(Duration::from_millis(300))
        .await
        .ok()
}

/// The node of `ids` that says it is leader in the latest term, once one
/// says so: `(id, term)`.
async fn leader_among(probes: &Probes, ids: &[u64]) -> (u64, u64) {
    let deadline = Instant::now() + HANG;
    loop {
        let mut best: Option<(u64, u64)> = None;
        for id in ids {
            if let Some(s) = status(&probes[id]).await {
                if s.state == "Leader" && best.is_none_or(|(_, t)| s.term > t) {
                    best = Some((s.id, s.term));
                }
            }
        }
        if let Some(b) = best {
            return b;
        }
        assert!(
            Instant::now() < deadline,
            "no leader among {ids:?} in {HANG:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Who said they were leader, per term: every node's own word
/// (`state == Leader`) and every follower's view of its leader.
#[derive(Default)]
struct Terms {
    leaders: BTreeMap<u64, BTreeSet<u64>>,
    polls: u64,
}

/// Polls every node's status until `stop`, recording (term, leader).
fn watch_leaders(probes: Probes, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Terms> {
    tokio::spawn(async move {
        let mut terms = Terms::default();
        while !stop.load(Ordering::Relaxed) {
            for p in probes.values() {
                let Some(s) = status(p).await else { continue };
                terms.polls += 1;
                if s.state == "Leader" {
                    terms.leaders.entry(s.term).or_default().insert(s.id);
                }
                if let Some(l) = s.leader.filter(|l| l.known) {
                    terms.leaders.entry(s.term).or_default().insert(l.leader_id);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        terms
    })
}

fn parse(v: &[u8]) -> u64 {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a value this test never wrote: {v:?}"))
}

/// What a client's error means for the history: refused is a definite
/// failure, anything else may or may not have taken effect.
fn failed(e: &KvClientError) -> bool {
    matches!(
        e,
        KvClientError::Refused { .. } | KvClientError::TooLarge(_)
    )
}

/// How a client's failed operation ended, in a word.
fn class(e: &KvClientError) -> String {
    match e {
        KvClientError::Refused { kind, .. } => format!("refused {kind:?}"),
        // The last answer named a leader this client cannot reach.
        KvClientError::GaveUp { last, .. }
            if last.contains("not the leader")
                || last.starts_with("redirected")
                || last.contains("as the leader") =>
        {
            "NotLeader".to_owned()
        }
        KvClientError::GaveUp { last, .. } => {
            // "<addr>: <why>": the why, without the numbers.
            let why = last.split_once(": ").map_or(last.as_str(), |(_, w)| w);
            format!(
                "gave up: {}",
                why.chars()
                    .take_while(|c| !c.is_ascii_digit())
                    .collect::<String>()
            )
        }
        other => other.to_string(),
    }
}

/// One client: random operations on [`KEYS`] keys until `stop`; counts the
/// operations that completed with an answer in `done`; returns how its
/// failed operations ended, counted by [`class`].
async fn client_loop(
    p: u64,
    kv: KvClient,
    rec: Rec,
    seed: u64,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> BTreeMap<String, u64> {
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut note = |e: &KvClientError| *errors.entry(class(e)).or_default() += 1;
    let mut rng = StdRng::seed_from_u64(seed ^ p.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("k{}", rng.random_range(0..KEYS));
        let choice = rng.random_range(0..10);
        let answered = if choice < 4 {
            let call = rec.invoke(p, Op::Read(key.clone()));
            match kv.get(&key).await {
                Ok(v) => {
                    let v = v.map(|v| parse(&v));
                    if let Some(v) = v {
                        last.insert(key, v);
                    }
                    call.ok(Response::Read(v));
                    true
                }
                Err(e) if failed(&e) => {
                    note(&e);
                    call.fail();
                    false
                }
                Err(e) => {
                    note(&e);
                    call.indeterminate();
                    false
                }
            }
        } else {
            n += 1;
            let value = p * 1_000_000 + n;
            let bytes = value.to_string().into_bytes();
            match last.get(&key).copied().filter(|_| choice >= 7) {
                Some(expected) => {
                    let call = rec.invoke(p, Op::Cas(key.clone(), expected, value));
                    match kv
                        .compare_and_set(&key, Some(expected.to_string().as_bytes()), &bytes)
                        .await
                    {
                        Ok(swapped) => {
                            if swapped {
                                last.insert(key, value);
                            }
                            call.ok(Response::Cas(swapped));
                            true
                        }
                        // The key has no value: the CAS saw none and did
                        // nothing.
                        Err(e) if e.kind() == Some(KvErrorKind::KeyNotFound) => {
                            call.ok(Response::Cas(false));
                            true
                        }
                        Err(e) if failed(&e) => {
                            note(&e);
                            call.fail();
                            false
                        }
                        Err(e) => {
                            note(&e);
                            call.indeterminate();
                            false
                        }
                    }
                }
                None => {
                    let call = rec.invoke(p, Op::Write(key.clone(), value));
                    match kv.put(&key, &bytes).await {
                        Ok(_) => {
                            last.insert(key, value);
                            call.ok(Response::Written);
                            true
                        }
                        Err(e) if failed(&e) => {
                            note(&e);
                            call.fail();
                            false
                        }
                        Err(e) => {
                            note(&e);
                            call.indeterminate();
                            false
                        }
                    }
                }
            }
        };
        if answered {
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
    errors
}

/// Waits until `done` has grown by `more`; a bound only stops a hang (no
/// progress at all with a majority up is a bug).
async fn pace(done: &AtomicU64, more: u64, what: &str) {
    let target = done.load(Ordering::Relaxed) + more;
    let deadline = Instant::now() + HANG;
    while done.load(Ordering::Relaxed) < target {
        assert!(
            Instant::now() < deadline,
            "no progress for {HANG:?} ({what}): {} of {target} operations",
            done.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Kills the leader, measures until another node says it leads in a
/// later term, lets the clients progress, restarts it. Returns the time
/// to the new leader.
async fn kill_leader(c: &mut NetCluster, done: &AtomicU64, ops: u64) -> Duration {
    let ids = c.ids();
    let (old, term) = leader_among(&c.probes, &ids).await;
    c.node_op(old, "kill");
    let died = Instant::now();
    let others: Vec<u64> = ids.iter().copied().filter(|i| *i != old).collect();
    let deadline = died + HANG;
    let elected = loop {
        let (new, t) = leader_among(&c.probes, &others).await;
        if t > term {
            println!("  n{new} leads term {t} (n{old} led term {term})");
            break died.elapsed();
        }
        assert!(Instant::now() < deadline, "no new leader in {HANG:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    pace(done, ops, "after the leader was killed").await;
    c.node_op(old, "restart");
    elected
}

/// The whole run: `n` nodes, `clients` client tasks, the fault script;
/// asserts the verdicts and prints what it measured.
async fn linearizable_under_faults(n: u64, clients: u64, ops: u64) {
    let _one = ONE_AT_A_TIME.lock().await;
    let seed = Nemesis::seed_from_env_or(0x5eed_0019 + n).unwrap();
    println!("{n} nodes, {clients} clients; seed {seed} (RPC_NEMESIS_SEED={seed} repeats it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut c = NetCluster::start(n, seed, &["clients"]).await;
    let ids = c.ids();
    leader_among(&c.probes, &ids).await;

    let stop_watch = Arc::new(AtomicBool::new(false));
    let watcher = watch_leaders(c.probes.clone(), Arc::clone(&stop_watch));
    let rec = Rec::new();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (1..=clients)
        .map(|p| {
            tokio::spawn(client_loop(
                p,
                c.client("clients", &ids),
                rec.clone(),
                seed,
                Arc::clone(&stop),
                Arc::clone(&done),
            ))
        })
        .collect();
    let started = Instant::now();

    // 20% of the datagrams of every link lost, the whole run (a heal
    // comes back to it).
    c.net
        .set_default_faults(LinkFaults::none().loss(0.2))
        .unwrap();
    println!("  20% loss on every link");
    pace(&done, ops, "under loss").await;

    let mut elections = vec![kill_leader(&mut c, &done, ops / 2).await];
    pace(&done, ops, "after the restart").await;

    let paused = ids[rng.random_range(0..ids.len())];
    c.node_op(paused, "pause");
    pace(&done, ops / 2, "with a node paused").await;
    c.node_op(paused, "resume");
    pace(&done, ops, "after the resume").await;

    let mut shuffled = ids.clone();
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, rng.random_range(0..=i));
    }
    let minority: Vec<String> = shuffled[..(ids.len() - 1) / 2]
        .iter()
        .map(|i| name(*i))
        .collect();
    let mut majority: Vec<String> = shuffled[(ids.len() - 1) / 2..]
        .iter()
        .map(|i| name(*i))
        .collect();
    majority.push("clients".to_owned());
    c.net.partition(&strs(&minority), &strs(&majority)).unwrap();
    println!("  partition {minority:?} | {majority:?}");
    pace(&done, ops / 2, "with a minority partitioned").await;
    c.net.heal().unwrap();
    println!("  healed (20% loss stays)");
    pace(&done, ops, "after the heal").await;

    elections.push(kill_leader(&mut c, &done, ops / 2).await);
    pace(&done, ops, "at the end").await;

    stop.store(true, Ordering::Relaxed);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for t in tasks {
        for (k, n) in tokio::time::timeout(HANG, t).await.unwrap().unwrap() {
            *errors.entry(k).or_default() += n;
        }
    }
    let faulted = started.elapsed();
    stop_watch.store(true, Ordering::Relaxed);
    let terms = watcher.await.unwrap();

    let history = rec.history();
    let count = |f: &dyn Fn(&Outcome<u64>) -> bool| {
        history.entries().iter().filter(|e| f(&e.outcome)).count()
    };
    let ok = count(&|o| matches!(o, Outcome::Ok(_)));
    let unknown = count(&|o| matches!(o, Outcome::Indeterminate));
    let failed = count(&|o| matches!(o, Outcome::Fail));
    let kinds: BTreeSet<&str> = history
        .entries()
        .iter()
        .filter(|e| matches!(e.outcome, Outcome::Ok(_)))
        .map(|e| match e.op {
            Op::Read(_) => "read",
            Op::Write(..) => "write",
            Op::Cas(..) => "cas",
        })
        .collect();
    let report = check(&history).unwrap();
    println!(
        "{} operations in {:.1} s of faults: {ok} answered, {unknown} indeterminate, {failed} failed; {report}",
        history.len(),
        faulted.as_secs_f64()
    );
    println!("failed operations: {errors:?}");
    println!(
        "new leader after the leader's death: {}",
        elections
            .iter()
            .map(|d| format!("{} ms", d.as_millis()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "leaders per term ({} status polls): {:?}",
        terms.polls, terms.leaders
    );
    assert!(report.is_linearizable(), "seed {seed}: {report}");
    assert_eq!(
        kinds.len(),
        3,
        "every kind of operation answered: {kinds:?}"
    );
    for (term, leaders) in &terms.leaders {
        assert_eq!(
            leaders.len(),
            1,
            "seed {seed}: term {term} had leaders {leaders:?}"
        );
    }
    assert!(
        terms.leaders.len() >= 3,
        "two elections at least: {:?}",
        terms.leaders
    );
    c.cluster.passed();
}

/// Three nodes, five clients: linearizable through a killed leader, a
/// paused node, 20% loss and a minority partition; one leader per term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_stay_linearizable_under_faults() {
    linearizable_under_faults(3, 5, 60).await;
}

/// Five nodes, four clients, the same script with a minority of two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_stay_linearizable_under_faults() {
    linearizable_under_faults(5, 4, 40).await;
}

/// The leader is cut off with clients of its own: they get `NotLeader`
/// or no answer, never a value (a stale read) and never an acknowledged
/// write, while the majority elects a new leader and writes; from then
/// until the heal the old leader applies nothing (its log may grow with
/// its clients' writes, which never commit); the whole history is
/// linearizable after the heal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_minority_serves_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let seed = Nemesis::seed_from_env_or(0x5eed_1903).unwrap();
    println!("seed {seed} (RPC_NEMESIS_SEED={seed} repeats it)");
    let mut c = NetCluster::start(3, seed, &["majority", "minority"]).await;
    let ids = c.ids();
    let (old, _) = leader_among(&c.probes, &ids).await;
    let rec = Rec::new();
    let stop = Arc::new(AtomicBool::new(false));
    let done_major = Arc::new(AtomicU64::new(0));
    let done_minor = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for p in 1..=3 {
        tasks.push(tokio::spawn(client_loop(
            p,
            c.client("majority", &ids),
            rec.clone(),
            seed,
            Arc::clone(&stop),
            Arc::clone(&done_major),
        )));
    }
    for p in 11..=12 {
        // Only the old leader, and quick to give up.
        let kv = c
            .client("minority", &[old])
            .attempts(3)
            .call_timeout(Duration::from_millis(500));
        tasks.push(tokio::spawn(client_loop(
            p,
            kv,
            rec.clone(),
            seed,
            Arc::clone(&stop),
            Arc::clone(&done_minor),
        )));
    }
    pace(&done_major, 30, "before the partition").await;
    pace(
        &done_minor,
        10,
        "the minority's clients before the partition",
    )
    .await;

    let others: Vec<u64> = ids.iter().copied().filter(|i| *i != old).collect();
    let mut majority: Vec<String> = others.iter().map(|i| name(*i)).collect();
    majority.push("majority".to_owned());
    let side_b: Vec<&str> = majority.iter().map(String::as_str).collect();
    c.net.partition(&[&name(old), "minority"], &side_b).unwrap();
    let cut = rec.now();
    println!("partition [n{old}, minority] | {majority:?}");

    // The majority elects another leader and writes on. Once it has one,
    // the old leader has been cut off for an election timeout: acks that
    // reached it before the cut are counted, and nothing can commit on
    // its side any more.
    let deadline = Instant::now() + HANG;
    loop {
        let (new, _) = leader_among(&c.probes, &others).await;
        if new != old {
            break;
        }
        assert!(Instant::now() < deadline, "no new leader in the majority");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = status(&c.probes[&old]).await.unwrap();
    println!(
        "a new leader in the majority: n{old} at log {}, applied {}",
        before.last_log_index, before.last_applied
    );
    pace(&done_major, 60, "the majority during the partition").await;
    // And the minority's clients try a few operations (each ends in
    // NotLeader or a deadline).
    let deadline = Instant::now() + HANG;
    while rec
        .history()
        .entries()
        .iter()
        .filter(|e| e.process > 10 && e.invoke >= cut && e.complete.is_some())
        .count()
        < 6
    {
        assert!(
            Instant::now() < deadline,
            "the minority's clients made no progress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = status(&c.probes[&old]).await.unwrap();
    let healed = rec.now();
    c.net.heal().unwrap();
    println!(
        "healed: n{old} at log {}, applied {}",
        after.last_log_index, after.last_applied
    );
    pace(&done_major, 20, "after the heal").await;
    stop.store(true, Ordering::Relaxed);
    let mut minority_errors: BTreeMap<String, u64> = BTreeMap::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let errors = tokio::time::timeout(HANG, t).await.unwrap().unwrap();
        if i >= 3 {
            for (k, n) in errors {
                *minority_errors.entry(k).or_default() += n;
            }
        }
    }

    let history = rec.history();
    let during: Vec<_> = history
        .entries()
        .iter()
        .filter(|e| e.process > 10 && e.invoke >= cut && e.complete.is_some_and(|at| at <= healed))
        .collect();
    let answered: Vec<String> = during
        .iter()
        .filter(|e| matches!(e.outcome, Outcome::Ok(_)))
        .map(ToString::to_string)
        .collect();
    println!(
        "the minority's clients made {} operations during the partition, {} answered; their failures: {minority_errors:?}",
        during.len(),
        answered.len()
    );
    assert!(
        !during.is_empty(),
        "the minority's clients tried nothing during the partition"
    );
    assert!(answered.is_empty(), "the minority answered: {answered:?}");
    assert_eq!(
        after.last_applied, before.last_applied,
        "the cut-off leader applied entries while the majority had another leader"
    );
    let report = check(&history).unwrap();
    println!("{report}");
    assert!(report.is_linearizable(), "seed {seed}: {report}");
    c.cluster.passed();
}
