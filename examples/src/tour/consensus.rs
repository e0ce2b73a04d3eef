//! The consensus service (`idl/consensus.idl`): three nodes of the
//! replicated key-value store on loopback (openraft, this framework as its
//! network, a redb store per node), put, get and compare-and-set through
//! the client library, then the leader stopped: the two others elect a new
//! one, the data is still there and writes go on; the old leader restarts
//! from its store and catches up.

use crate::report::{Report, Row};
use anyhow::{anyhow, Context as _};
use rpc_services::consensus::{ConsensusNode, KvClient, NodeConfig};
use rpc_services::proto::consensus::v1::{KeyValueClient, KvErrorKind, NodeStatus, StatusRequest};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const PATH: &str = "consensus udp";
/// Bound on every wait: only against a hang.
const HANG: Duration = Duration::from_secs(30);

async fn status(addr: SocketAddr) -> Option<NodeStatus> {
    let stub = KeyValueClient::connect(&format!("udp://{addr}"))
        .await
        .ok()?;
    stub.status(StatusRequest {})
        .timeout(Duration::from_millis(300))
        .await
        .ok()
}

/// The node among `addrs` that says it leads, in the latest term, and
/// that term; polls every 20 ms.
async fn leader(addrs: &BTreeMap<u64, SocketAddr>) -> anyhow::Result<(u64, u64)> {
    let deadline = Instant::now() + HANG;
    loop {
        let mut best: Option<(u64, u64)> = None;
        for a in addrs.values() {
            if let Some(s) = status(*a).await {
                if s.state == "Leader" && best.is_none_or(|(_, t)| s.term > t) {
                    best = Some((s.id, s.term));
                }
            }
        }
        if let Some(b) = best {
            return Ok(b);
        }
        if Instant::now() > deadline {
            return Err(anyhow!("no leader among {addrs:?} within {HANG:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start(dir: &Path, id: u64, listen: SocketAddr) -> anyhow::Result<ConsensusNode> {
    ConsensusNode::start(NodeConfig::new(id, dir.join(format!("n{id}"))), listen)
        .await
        .with_context(|| format!("starting consensus node {id}"))
}

/// The consensus section of the tour.
pub(crate) async fn consensus(report: &mut Report) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("rpc-tour-consensus-{}", std::process::id()));
    let result = run(&dir, report).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run(dir: &Path, report: &mut Report) -> anyhow::Result<()> {
    let any: SocketAddr = "127.0.0.1:0".parse()?;
    let mut nodes: BTreeMap<u64, ConsensusNode> = BTreeMap::new();
    for id in 1..=3 {
        nodes.insert(id, start(dir, id, any).await?);
    }
    let addrs: BTreeMap<u64, SocketAddr> =
        nodes.iter().map(|(id, n)| (*id, n.local_addr())).collect();
    println!();
    println!(
        "consensus: consensus.v1.KeyValue, three nodes on UDP and TCP {} (an election after 0.75-1 s without a leader), data in {}",
        addrs
            .iter()
            .map(|(id, a)| format!("n{id} {a}"))
            .collect::<Vec<_>>()
            .join(", "),
        dir.display()
    );
    let start_at = Instant::now();
    nodes[&1].initialize(addrs.clone()).await?;
    let (first, term) = leader(&addrs).await?;
    report.sync_call(
        PATH,
        "Initialize(n1, n2, n3)",
        "RR",
        Ok(format!("n{first} leads term {term}")),
        start_at,
    );

    // A stopped node costs a client one deadline before it moves on.
    let kv = KvClient::with_ids(addrs.clone()).call_timeout(Duration::from_millis(500));
    let t = Instant::now();
    let put = kv.put("greeting", b"hello").await;
    report.sync_call(
        PATH,
        "Put(greeting = hello)",
        "RR",
        match put {
            Ok(None) => Ok("applied by a majority, no previous value".to_owned()),
            other => Err(format!("expected no previous value, got {other:?}")),
        },
        t,
    );
    let t = Instant::now();
    let got = kv.get("greeting").await;
    report.sync_call(
        PATH,
        "Get(greeting)",
        "RR",
        match got {
            Ok(Some(v)) if v == b"hello" => {
                Ok("hello (read index: the leader confirmed it leads)".to_owned())
            }
            other => Err(format!("expected hello, got {other:?}")),
        },
        t,
    );
    for (expected, value, want) in [(&b"hello"[..], &b"hi"[..], true), (b"hello", b"hey", false)] {
        let t = Instant::now();
        let r = kv.compare_and_set("greeting", Some(expected), value).await;
        let call = format!(
            "CompareAndSet(greeting: {} -> {})",
            String::from_utf8_lossy(expected),
            String::from_utf8_lossy(value)
        );
        report.sync_call(
            PATH,
            call,
            "RR",
            match r {
                Ok(s) if s == want => Ok(if s {
                    "swapped"
                } else {
                    "not swapped: the value is hi"
                }
                .to_owned()),
                other => Err(format!("expected swapped = {want}, got {other:?}")),
            },
            t,
        );
    }
    let t = Instant::now();
    let r = kv.compare_and_set("missing", Some(b"x"), b"y").await;
    report.sync_call(
        PATH,
        "CompareAndSet(missing: x -> y)",
        "RR",
        match r {
            Err(e) if e.kind() == Some(KvErrorKind::KeyNotFound) => {
                Ok("raised KvError KEY_NOT_FOUND".to_owned())
            }
            other => Err(format!("expected KEY_NOT_FOUND, got {other:?}")),
        },
        t,
    );
    for i in 0..20 {
        kv.put(&format!("k{i}"), format!("v{i}").as_bytes()).await?;
    }

    // The leader stops; the two others elect a new one.
    let (old, old_term) = leader(&addrs).await?;
    let old_node = nodes.remove(&old).ok_or_else(|| anyhow!("no node {old}"))?;
    let old_addr = old_node.local_addr();
    old_node.shutdown().await;
    let stopped = Instant::now();
    let others: BTreeMap<u64, SocketAddr> = addrs
        .iter()
        .filter(|(id, _)| **id != old)
        .map(|(id, a)| (*id, *a))
        .collect();
    let (new, new_term) = loop {
        let (id, term) = leader(&others).await?;
        if term > old_term {
            break (id, term);
        }
        if stopped.elapsed() > HANG {
            return Err(anyhow!("no new leader within {HANG:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    report.row(Row::made(
        PATH,
        format!("stop the leader n{old} (term {old_term})"),
        "-",
        "-",
        Ok(format!("n{new} elected for term {new_term}")),
        stopped.elapsed(),
        None,
    ));
    let t = Instant::now();
    let mut survived = 0;
    for i in 0..20 {
        if kv.get(&format!("k{i}")).await?.as_deref() == Some(format!("v{i}").as_bytes()) {
            survived += 1;
        }
    }
    let greeting = kv.get("greeting").await?;
    report.sync_call(
        PATH,
        format!("Get(k0..k19, greeting) at n{new}"),
        "RR",
        if survived == 20 && greeting.as_deref() == Some(&b"hi"[..]) {
            Ok("all 21 values survived the leader".to_owned())
        } else {
            Err(format!("{survived} of 20 values, greeting {greeting:?}"))
        },
        t,
    );
    let t = Instant::now();
    let put = kv.put("after", b"failover").await;
    report.sync_call(
        PATH,
        "Put(after = failover)",
        "RR",
        put.map(|_| "applied by the two left".to_owned())
            .map_err(|e| e.to_string()),
        t,
    );

    // The old leader restarts from its store and catches up.
    let t = Instant::now();
    // Its doors and store close as the stopped node's tasks end: retry
    // until the address and the file are free.
    let restarted = loop {
        match start(dir, old, old_addr).await {
            Ok(n) => break n,
            Err(e) if t.elapsed() < HANG => {
                tracing::debug!("restart of n{old}: {e:#}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    };
    nodes.insert(old, restarted);
    let target = status(addrs[&new])
        .await
        .map(|s| s.last_applied)
        .unwrap_or_default();
    let caught = loop {
        match status(old_addr).await {
            Some(s)
                if s.last_applied >= target
                    && s.leader.as_ref().is_some_and(|l| l.leader_id == new) =>
            {
                break Some(s)
            }
            _ if t.elapsed() > HANG => break None,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    report.row(Row::made(
        PATH,
        format!("restart n{old} from its store"),
        "-",
        "-",
        match caught {
            Some(s) => Ok(format!("follows n{new}, applied up to {}", s.last_applied)),
            None => Err(format!("did not catch up to {target} within {HANG:?}")),
        },
        t.elapsed(),
        None,
    ));
    for (_, n) in nodes {
        n.shutdown().await;
    }
    Ok(())
}
