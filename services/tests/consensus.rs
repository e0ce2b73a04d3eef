//! The consensus service against `raft-node` child processes on loopback:
//! a 3-node cluster formed through the membership API (node 1 starts a
//! cluster of itself, adds 2 and 3 as learners, then makes them voters),
//! then writes and reads through [`KvClient`], with the leader killed and
//! every node killed at once and restarted.
//!
//! Verdicts are values and states, never durations: every wait polls a
//! node's `Status` every 20 ms until what it waits for holds, within a
//! bound far above what it needs.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use rpc_services::consensus::KvClient;
use rpc_services::proto::consensus::v1::{
    AddLearnerRequest, CasRequest, ChangeMembershipRequest, GetRequest, KeyValueClient,
    KvErrorKind, NodeStatus, PutRequest, StatusRequest, WriteId,
};
use rpc_testkit::{Cluster, NodeBuilder};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const BOUND: Duration = Duration::from_secs(60);

fn raft_node(id: u64, extra: &[&str]) -> NodeBuilder {
    let b = NodeBuilder::new(format!("n{id}"), env!("CARGO_BIN_EXE_raft-node"))
        .args(["--listen", "{addr}", "--data-dir", "{data}"])
        .args(extra.iter().copied())
        // A refusal's message ends its standard error (which errors
        // quote the end of), with no backtrace after it.
        .env("RUST_LIB_BACKTRACE", "0")
        .arg(format!("--id={id}"))
        .env("RUST_LOG", "info,openraft=warn")
        .start_timeout(Duration::from_secs(30));
    if id == 1 {
        b.arg("--init")
    } else {
        b
    }
}

thread_local! {
    /// Stubs made on this thread (a test's thread or one of its runtime's
    /// workers, so a stub never outlives its runtime's use): a new stub
    /// per status question would bind a new socket each time, which may
    /// take the port of a node that is down, before its restart binds it.
    static STUBS: std::cell::RefCell<std::collections::HashMap<SocketAddr, KeyValueClient>> =
        std::cell::RefCell::default();
}

async fn stub(addr: SocketAddr) -> KeyValueClient {
    if let Some(s) = STUBS.with(|m| m.borrow().get(&addr).cloned()) {
        return s;
    }
    let s = KeyValueClient::connect(&format!("udp://{addr}"))
        .await
        .unwrap();
    STUBS.with(|m| m.borrow_mut().insert(addr, s.clone()));
    s
}

async fn status(addr: SocketAddr) -> Option<NodeStatus> {
    stub(addr)
        .await
        .status(StatusRequest {})
        .timeout(Duration::from_millis(500))
        .await
        .ok()
}

/// Polls `check` every 20 ms until it gives `Some`, at most [`BOUND`].
async fn wait_for<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    rpc_testkit::poll_until(BOUND, Duration::from_millis(20), check)
        .await
        .unwrap_or_else(|| panic!("waited {BOUND:?} for {what}"))
}

/// The leader as every live node in `addrs` sees it, once they agree.
async fn agreed_leader(addrs: &[SocketAddr]) -> (u64, SocketAddr) {
    wait_for("the nodes to agree on a leader", || async {
        let mut seen = None;
        for a in addrs {
            let s = status(*a).await?;
            let l = s.leader?;
            if !l.known {
                return None;
            }
            let this = (l.leader_id, l.leader_addr.parse::<SocketAddr>().ok()?);
            match seen {
                None => seen = Some(this),
                Some(p) if p == this => {}
                Some(_) => return None,
            }
        }
        seen
    })
    .await
}

/// Starts nodes 1, 2, 3 and makes them one cluster; returns their
/// addresses.
async fn form_cluster(cluster: &mut Cluster) -> Vec<SocketAddr> {
    form_cluster_with(cluster, &[]).await
}

/// As [`form_cluster`], with `extra` arguments for every node.
async fn form_cluster_with(cluster: &mut Cluster, extra: &[&str]) -> Vec<SocketAddr> {
    let mut addrs = Vec::new();
    for id in 1..=3 {
        addrs.push(cluster.start(raft_node(id, extra)).unwrap().addr());
    }
    // Node 1 made a cluster of itself: it becomes leader alone.
    wait_for("node 1 to lead its cluster of one", || async {
        let s = status(addrs[0]).await?;
        (s.state == "Leader").then_some(())
    })
    .await;
    let admin = stub(addrs[0]).await;
    for (id, addr) in [(2u64, addrs[1]), (3, addrs[2])] {
        admin
            .add_learner(AddLearnerRequest {
                node_id: id,
                addr: addr.to_string(),
                wait_caught_up: true,
            })
            .await
            .unwrap();
    }
    let m = admin
        .change_membership(ChangeMembershipRequest {
            voters: vec![1, 2, 3],
            retain: false,
        })
        .await
        .unwrap();
    assert_eq!(m.members.iter().filter(|m| m.voter).count(), 3, "{m:?}");
    addrs
}

fn key(i: usize) -> String {
    format!("key-{i}")
}

fn value(i: usize) -> Vec<u8> {
    format!("value-{i}").into_bytes()
}

/// Three nodes elect a leader and serve puts, gets, deletes and CAS; a
/// follower refuses a read with `NOT_LEADER` naming the leader, and the
/// client follows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_and_serve_the_store() {
    let mut cluster = Cluster::new().unwrap();
    let addrs = form_cluster(&mut cluster).await;
    let (leader, leader_addr) = agreed_leader(&addrs).await;
    assert!((1..=3).contains(&leader));

    // Start the client at a follower: it is redirected.
    let follower = *addrs.iter().find(|a| **a != leader_addr).unwrap();
    let mut nodes = vec![follower];
    nodes.extend(addrs.iter().filter(|a| **a != follower));
    let kv = KvClient::new(nodes);
    for i in 0..20 {
        assert_eq!(kv.put(&key(i), &value(i)).await.unwrap(), None);
    }
    for i in 0..20 {
        assert_eq!(kv.get(&key(i)).await.unwrap(), Some(value(i)));
    }
    assert_eq!(kv.put(&key(0), b"new").await.unwrap(), Some(value(0)));
    assert!(kv.delete(&key(1)).await.unwrap());
    assert!(!kv.delete(&key(1)).await.unwrap());
    assert_eq!(kv.get(&key(1)).await.unwrap(), None);
    assert!(kv
        .compare_and_set(&key(2), Some(&value(2)), b"swapped")
        .await
        .unwrap());
    assert!(!kv
        .compare_and_set(&key(2), Some(&value(2)), b"again")
        .await
        .unwrap());
    assert_eq!(kv.get(&key(2)).await.unwrap(), Some(b"swapped".to_vec()));
    assert!(kv.compare_and_set("fresh", None, b"1").await.unwrap());
    let e = kv
        .compare_and_set("missing", Some(b"x"), b"y")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Some(KvErrorKind::KeyNotFound), "{e}");
    let e = kv.put("", b"x").await.unwrap_err();
    assert_eq!(e.kind(), Some(KvErrorKind::BadKey), "{e}");
    let e = kv.put("big", &vec![0; 100_000]).await.unwrap_err();
    assert_eq!(e.kind(), Some(KvErrorKind::ValueTooLarge), "{e}");
    // The store checks too (a client that does not).
    let e = stub(leader_addr)
        .await
        .put(PutRequest {
            key: "big".to_owned(),
            value: vec![0; 20_000].into(),
            id: Some(WriteId {
                client_id: 99,
                seq: 1,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.raised().map(|r| r.kind),
        Some(KvErrorKind::ValueTooLarge as i32),
        "{e}"
    );

    // A follower answers a read with the leader's whereabouts.
    let e = stub(follower)
        .await
        .get(GetRequest { key: key(3) })
        .await
        .unwrap_err();
    let raised = e.raised().unwrap();
    assert_eq!(raised.kind, KvErrorKind::NotLeader as i32);
    let nl = raised.not_leader.clone().unwrap();
    assert!(nl.known);
    assert_eq!(
        (nl.leader_id, nl.leader_addr),
        (leader, leader_addr.to_string())
    );

    // Every node applied the same log.
    let applied = wait_for("every node to apply the leader's log", || async {
        let mut seen = Vec::new();
        for a in &addrs {
            seen.push(status(*a).await?.last_applied);
        }
        (seen.iter().all(|x| *x == seen[0])).then_some(seen[0])
    })
    .await;
    assert!(applied >= 26, "applied {applied}");
    cluster.passed();
}

/// The leader is killed: the two others elect a new one, every
/// acknowledged write is still there, and writes go on; the old leader
/// restarts and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_a_new_one_is_elected_and_the_data_survives() {
    let mut cluster = Cluster::new().unwrap();
    let addrs = form_cluster(&mut cluster).await;
    let kv = KvClient::new(addrs.clone());
    for i in 0..50 {
        kv.put(&key(i), &value(i)).await.unwrap();
    }
    let (old, old_addr) = agreed_leader(&addrs).await;
    let name = format!("n{old}");
    cluster.node_mut(&name).unwrap().kill().unwrap();
    let died = Instant::now();
    let live: Vec<SocketAddr> = addrs.iter().copied().filter(|a| *a != old_addr).collect();
    let (new, _) = wait_for("a new leader", || async {
        let (id, addr) = agreed_leader(&live).await;
        (id != old).then_some((id, addr))
    })
    .await;
    println!(
        "n{old} killed: n{new} leads, agreed by both others, after {} ms",
        died.elapsed().as_millis()
    );
    assert_ne!(new, old);
    for i in 0..50 {
        assert_eq!(kv.get(&key(i)).await.unwrap(), Some(value(i)), "key {i}");
    }
    for i in 50..60 {
        kv.put(&key(i), &value(i)).await.unwrap();
    }
    // The old leader comes back as a follower of the new one and applies
    // everything.
    cluster.node_mut(&name).unwrap().restart().unwrap();
    let target = status(live[0]).await.unwrap().last_applied;
    wait_for("the old leader to catch up", || async {
        let s = status(old_addr).await?;
        (s.last_applied >= target && s.leader.is_some_and(|l| l.leader_id == new)).then_some(())
    })
    .await;
    cluster.passed();
}

/// 300 acknowledged writes, then every node SIGKILLed at once and
/// restarted on its data directory: all 300 are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_killed_at_once_keeps_every_acknowledged_write() {
    let mut cluster = Cluster::new().unwrap();
    let addrs = form_cluster(&mut cluster).await;
    let kv = KvClient::new(addrs.clone());
    for i in 0..300 {
        kv.put(&key(i), &value(i)).await.unwrap();
    }
    for node in cluster.nodes_mut() {
        node.kill().unwrap();
    }
    for node in cluster.nodes_mut() {
        node.restart().unwrap();
    }
    agreed_leader(&addrs).await;
    let kv = KvClient::new(addrs.clone());
    for i in 0..300 {
        assert_eq!(kv.get(&key(i)).await.unwrap(), Some(value(i)), "key {i}");
    }
    cluster.passed();
}

/// A follower is down while the others take 3,000 writes (from 32
/// concurrent clients) and snapshot and purge their logs: restarted, it
/// catches up through a snapshot (its status counts one installed) and
/// holds the same data as the leader (equal digests at the same applied
/// index).
///
/// 20,000 writes, which the leader groups into entries (about 1,900 here,
/// 9 s in a debug build), so the nodes snapshot every 50 entries
/// (`--snapshot-after`) and keep 20 behind a snapshot (`--keep-logs`):
/// the node lacks entries that are purged everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_for_many_writes_catches_up_through_a_snapshot() {
    const WRITES: usize = 20_000;
    const CLIENTS: usize = 32;
    let mut cluster = Cluster::new().unwrap();
    // Writes are grouped into entries (up to 256 a batch), so a few hundred
    // entries hold the 20,000 writes: snapshots every 50, 20 kept behind.
    let addrs = form_cluster_with(&mut cluster, &["--snapshot-after=50", "--keep-logs=20"]).await;
    let (leader, _) = agreed_leader(&addrs).await;
    let down = (1..=3u64).find(|i| *i != leader).unwrap();
    let down_addr = addrs[usize::try_from(down).unwrap() - 1];
    cluster
        .node_mut(&format!("n{down}"))
        .unwrap()
        .kill()
        .unwrap();
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let kv = KvClient::new(addrs.clone());
            tokio::spawn(async move {
                for i in (c..WRITES).step_by(CLIENTS) {
                    kv.put(&key(i), &value(i)).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    println!(
        "{WRITES} writes from {CLIENTS} clients with n{down} down: {:.1} s ({:.0} writes/s)",
        took.as_secs_f64(),
        WRITES as f64 / took.as_secs_f64()
    );
    let leader_addr = addrs[usize::try_from(leader).unwrap() - 1];
    let at_leader = status(leader_addr).await.unwrap();
    assert!(at_leader.snapshot_index > 0, "{at_leader:?}");

    cluster
        .node_mut(&format!("n{down}"))
        .unwrap()
        .restart()
        .unwrap();
    let caught = wait_for("the restarted node to catch up", || async {
        let s = status(down_addr).await?;
        let l = status(leader_addr).await?;
        (s.last_applied >= at_leader.last_applied && s.last_applied == l.last_applied)
            .then_some((s, l))
    })
    .await;
    let (s, l) = caught;
    println!(
        "n{down} caught up to {} with {} snapshot(s) installed (leader's snapshot at {})",
        s.last_applied, s.snapshots_installed, l.snapshot_index
    );
    assert!(s.snapshots_installed >= 1, "{s:?}");
    assert!(s.snapshot_index > 0, "{s:?}");
    assert_eq!(s.data_digest, l.data_digest, "same data at the same index");
    let kv = KvClient::new(addrs.clone());
    for i in (0..WRITES).step_by(97) {
        assert_eq!(kv.get(&key(i)).await.unwrap(), Some(value(i)), "key {i}");
    }
    cluster.passed();
}

/// Starts `raft-node` as `name` with `args`, expecting it to refuse:
/// returns what the failed start says (its exit and standard error).
fn refused(dir: &std::path::Path, name: &str, args: &[String]) -> String {
    let b = NodeBuilder::new(name, env!("CARGO_BIN_EXE_raft-node"))
        .args(args.iter().cloned())
        .env("RUST_LOG", "warn")
        .env("RUST_LIB_BACKTRACE", "0")
        .start_timeout(Duration::from_secs(30));
    match b.start(dir) {
        Ok(node) => panic!("{name} started at {}", node.addr()),
        Err(e) => e.to_string(),
    }
}

/// A data directory of another cluster, an id that a running node has,
/// a corrupt store file: each a refusal to start that says why; a key
/// over the limit and CAS on a missing key are typed errors at the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_the_reason() {
    let mut cluster = Cluster::new().unwrap();
    let addrs = form_cluster(&mut cluster).await;
    let (_, leader_addr) = agreed_leader(&addrs).await;
    let dir = cluster.dir().to_path_buf();

    // Typed errors at the store, from a client that checks nothing.
    let kv = stub(leader_addr).await;
    let id = |seq| Some(WriteId { client_id: 77, seq });
    let e = kv
        .put(PutRequest {
            key: "k".repeat(1025),
            value: b"v".to_vec().into(),
            id: id(1),
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.raised().map(|r| r.kind),
        Some(KvErrorKind::BadKey as i32),
        "{e}"
    );
    let e = kv
        .compare_and_set(CasRequest {
            key: "never-written".to_owned(),
            expected: Some(b"x".to_vec().into()),
            value: b"y".to_vec().into(),
            id: id(2),
        })
        .await
        .unwrap_err();
    let r = e.raised().unwrap();
    assert_eq!(r.kind, KvErrorKind::KeyNotFound as i32, "{e}");
    assert!(r.detail.contains("never-written"), "{}", r.detail);

    // Another cluster's directory: node 1's, started as cluster "other".
    let n1_data = cluster.node("n1").unwrap().data_dir().to_path_buf();
    cluster.node_mut("n1").unwrap().kill().unwrap();
    let why = refused(
        &dir,
        "other-cluster",
        &[
            "--id=1".to_owned(),
            format!("--data-dir={}", n1_data.display()),
            "--cluster=other".to_owned(),
        ],
    );
    assert!(
        why.contains("belongs to cluster \"consensus\", not to cluster \"other\""),
        "{why}"
    );
    cluster.node_mut("n1").unwrap().restart().unwrap();

    // An id a running node has: node 2's id for a new process, told where
    // node 1 is.
    let fresh = dir.join("fresh");
    let why = refused(
        &dir,
        "duplicate",
        &[
            "--id=2".to_owned(),
            format!("--data-dir={}", fresh.display()),
            format!("--peers=1={}", addrs[0]),
        ],
    );
    assert!(
        why.contains(&format!(
            "node id 2 is already taken: the cluster has node 2 at {}",
            addrs[1]
        )),
        "{why}"
    );
    // ... and as a peer given under another id.
    let why = refused(
        &dir,
        "duplicate-peer",
        &[
            "--id=3".to_owned(),
            format!("--data-dir={}", fresh.display()),
            format!("--peers=7={}", addrs[2]),
        ],
    );
    assert!(
        why.contains("node id 3 is already taken: the peer at"),
        "{why}"
    );
    // A free id starts (the check refuses only what is taken).
    let ok = cluster
        .start(
            NodeBuilder::new("free-id", env!("CARGO_BIN_EXE_raft-node"))
                .args(["--listen", "{addr}", "--data-dir", "{data}"])
                .arg("--id=4")
                .arg(format!("--peers=1={}", addrs[0])),
        )
        .unwrap();
    assert!(ok.is_running());

    // A corrupt store file: node 3's, overwritten while it is down.
    let n3 = cluster.node_mut("n3").unwrap();
    n3.kill().unwrap();
    let file = n3.data_dir().join("raft.redb");
    let len = std::fs::metadata(&file).unwrap().len();
    let junk = vec![0x5a; usize::try_from(len).unwrap()];
    std::fs::write(&file, &junk).unwrap();
    let why = n3.restart().unwrap_err().to_string();
    assert!(why.contains("cannot open the store"), "{why}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        junk,
        "the file is left as it was"
    );
    cluster.passed();
}
