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
    AddLearnerRequest, ChangeMembershipRequest, GetRequest, KeyValueClient, KvErrorKind,
    NodeStatus, PutRequest, StatusRequest, WriteId,
};
use rpc_testkit::{Cluster, NodeBuilder};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const BOUND: Duration = Duration::from_secs(60);

fn raft_node(id: u64) -> NodeBuilder {
    let b = NodeBuilder::new(format!("n{id}"), env!("CARGO_BIN_EXE_raft-node"))
        .args(["--listen", "{addr}", "--data-dir", "{data}"])
        .arg(format!("--id={id}"))
        .env("RUST_LOG", "info,openraft=warn")
        .start_timeout(Duration::from_secs(30));
    if id == 1 {
        b.arg("--init")
    } else {
        b
    }
}

async fn stub(addr: SocketAddr) -> KeyValueClient {
    KeyValueClient::connect(&format!("udp://{addr}"))
        .await
        .unwrap()
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
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + BOUND;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "waited {BOUND:?} for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    let mut addrs = Vec::new();
    for id in 1..=3 {
        addrs.push(cluster.start(raft_node(id)).unwrap().addr());
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
    let live: Vec<SocketAddr> = addrs.iter().copied().filter(|a| *a != old_addr).collect();
    let (new, _) = wait_for("a new leader", || async {
        let (id, addr) = agreed_leader(&live).await;
        (id != old).then_some((id, addr))
    })
    .await;
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
}
