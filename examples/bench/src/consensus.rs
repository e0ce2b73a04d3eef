//! The consensus service's section (`idl/consensus.idl`, issue 19) against
//! etcd, in one run, on loopback: a 3-node `raft-node` cluster (openraft
//! on redb, every log append fsynced before it is acknowledged) and a
//! 3-member etcd cluster (its WAL fsynced before a proposal is
//! acknowledged), every member a child process.
//!
//! Measured on each: writes of a 64-byte value with 1, 16 and 64
//! concurrent clients (each client its own key and its own connection:
//! for ours a [`KvClient`], which follows `NotLeader` to the leader; for
//! etcd an HTTP/2 connection to the leader), writes per second and their
//! p50 and p99 latency; then the latency of linearizable reads by one
//! client (ours: `Get`, which the leader answers after confirming its
//! leadership; etcd: a `Range` without `serializable`, a ReadIndex round).
//! Targets: our writes per second at 64 clients at least etcd's, and our
//! p50 there no higher than etcd's.

use crate::etcd::{self, Etcd, EtcdCluster};
use crate::load::{closed_loop, service_binary, Load, Op, Windows};
use crate::measure::Plan;
use crate::report::{rate, us};
use anyhow::Context as _;
use bytes::Bytes;
use rpc_services::consensus::KvClient;
use rpc_testkit::{Cluster, NodeBuilder};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The name `--only` matches for this section (any part of it).
pub(crate) const SECTION: &str = "consensus vs etcd";

/// Concurrent clients of the write measurements.
const CLIENTS: [usize; 3] = [1, 16, 64];

/// The value written.
const VALUE: [u8; 64] = [7u8; 64];

/// One side's figures.
#[derive(Debug)]
struct Figures {
    /// Per entry of [`CLIENTS`].
    writes: Vec<Load>,
    /// Linearizable reads, one client.
    reads: Load,
}

/// What the section measured.
#[derive(Debug)]
pub(crate) struct ConsensusReport {
    ours: Figures,
    etcd: Result<Figures, String>,
    etcd_version: Option<String>,
}

/// Runs the section (`None` when `--only` leaves it out).
pub(crate) async fn run(plan: &Plan) -> anyhow::Result<Option<ConsensusReport>> {
    if !plan.wants(SECTION) {
        return Ok(None);
    }
    println!("consensus section");
    let w = Windows::of(plan);
    let ours = ours(w).await.context("the consensus service")?;
    println!("  measured ours");
    let installed = etcd::ensure_installed();
    let etcd = match &installed {
        Ok(_) => with_etcd(w).await.map_err(|e| format!("{e:#}")),
        Err(e) => Err(format!("etcd unavailable: {e:#}")),
    };
    println!("  measured etcd");
    Ok(Some(ConsensusReport {
        ours,
        etcd,
        etcd_version: installed.ok(),
    }))
}

/// The writes of each entry of [`CLIENTS`], every client (the `i`th
/// made by `client`) writing a key of its own; printed as measured.
async fn write_loads<O, F, Fut>(side: &str, mut client: F, w: Windows) -> anyhow::Result<Vec<Load>>
where
    O: Op,
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Arc<O>>>,
{
    let mut writes = Vec::new();
    for n in CLIENTS {
        let mut clients = Vec::new();
        for i in 0..n {
            clients.push(client(i).await?);
        }
        let load = closed_loop(clients, w).await?;
        println!(
            "  {side} @{n}: {} writes/s, p50 {:.0} us ({} writes)",
            rate(load.per_sec),
            us(load.p50),
            load.ops
        );
        writes.push(load);
    }
    Ok(writes)
}

/// A write of this client's own key.
struct OursPut {
    kv: KvClient,
    key: String,
}

impl Op for OursPut {
    async fn run(&self, _i: u64) -> anyhow::Result<()> {
        self.kv.put(&self.key, &VALUE).await?;
        Ok(())
    }
}

/// A linearizable read.
struct OursGet(KvClient);

impl Op for OursGet {
    async fn run(&self, _i: u64) -> anyhow::Result<()> {
        self.0.get("bench-0").await?;
        Ok(())
    }
}

/// Our side: three `raft-node` processes, node 1 making the cluster.
async fn ours(w: Windows) -> anyhow::Result<Figures> {
    let bin = service_binary("raft-node")?;
    let ports = etcd::free_ports(3)?;
    let addrs: Vec<SocketAddr> = ports
        .iter()
        .map(|&p| SocketAddr::from(([127, 0, 0, 1], p)))
        .collect();
    let mut nodes = Cluster::new().context("a directory for the raft nodes")?;
    // The others first, so that node 1's initialization finds them.
    for id in [2u64, 3, 1] {
        let i = usize::try_from(id - 1)?;
        let mut node = NodeBuilder::new(format!("raft-{id}"), &bin)
            .listen(addrs[i])
            .args([
                "--id",
                &id.to_string(),
                "--listen",
                "{addr}",
                "--data-dir",
                "{data}",
            ]);
        if id == 1 {
            node = node.args([
                "--peers",
                &format!("2={},3={}", addrs[1], addrs[2]),
                "--init",
            ]);
        }
        nodes
            .start(node)
            .with_context(|| format!("starting raft node {id}"))?;
    }
    let first = KvClient::new(addrs.clone());
    tokio::time::timeout(Duration::from_secs(30), first.put("bench-0", &VALUE))
        .await
        .context("no leader within 30 s")??;
    let writes = write_loads(
        "ours",
        |i| {
            let kv = KvClient::new(addrs.clone());
            async move {
                anyhow::Ok(Arc::new(OursPut {
                    kv,
                    key: format!("bench-{i}"),
                }))
            }
        },
        w,
    )
    .await?;
    let reads = closed_loop(vec![Arc::new(OursGet(first))], w).await?;
    nodes.passed();
    Ok(Figures { writes, reads })
}

/// A write of this client's own key.
struct EtcdPut {
    etcd: Etcd,
    key: Bytes,
}

impl Op for EtcdPut {
    async fn run(&self, _i: u64) -> anyhow::Result<()> {
        self.etcd
            .put(self.key.clone(), Bytes::from_static(&VALUE))
            .await
    }
}

/// A linearizable read.
struct EtcdGet(Etcd);

impl Op for EtcdGet {
    async fn run(&self, _i: u64) -> anyhow::Result<()> {
        self.0.get(Bytes::from_static(b"bench-0"), false).await?;
        Ok(())
    }
}

/// etcd's side: three members.
async fn with_etcd(w: Windows) -> anyhow::Result<Figures> {
    let cluster = EtcdCluster::start(3).await?;
    let first = cluster.leader_client().await?;
    first
        .put(Bytes::from_static(b"bench-0"), Bytes::from_static(&VALUE))
        .await?;
    let writes = write_loads(
        "etcd",
        |i| {
            let cluster = &cluster;
            async move {
                anyhow::Ok(Arc::new(EtcdPut {
                    etcd: cluster.leader_client().await?,
                    key: Bytes::from(format!("bench-{i}")),
                }))
            }
        },
        w,
    )
    .await?;
    let reads = closed_loop(vec![Arc::new(EtcdGet(first))], w).await?;
    cluster.passed();
    Ok(Figures { writes, reads })
}

/// Prints the section's table and the targets.
pub(crate) fn print(report: &ConsensusReport) {
    println!("\n== consensus: 3 raft-node processes (KeyValue over UDP) vs 3 etcd members (gRPC), loopback, fsync before acknowledging ==");
    if let Some(v) = &report.etcd_version {
        println!("  ({v})");
    }
    println!(
        "| {:<22} | {:>10} | {:>10} | {:>10} | {:>10} | {:>10} | {:>10} | {:>10} | {:>10} |",
        "writes, clients",
        "ours ops/s",
        "p50 us",
        "p99 us",
        "etcd ops/s",
        "p50 us",
        "p99 us",
        "ops/s o/e",
        "p50 o/e"
    );
    println!(
        "|{:-<24}|{:->12}|{:->12}|{:->12}|{:->12}|{:->12}|{:->12}|{:->12}|{:->12}|",
        "", ":", ":", ":", ":", ":", ":", ":", ":"
    );
    let etcd = report.etcd.as_ref().ok();
    let row = |what: &str, o: &Load, e: Option<&Load>| {
        let (eo, ep50, ep99, rt, rl) = match e {
            Some(e) => (
                rate(e.per_sec),
                format!("{:.0}", us(e.p50)),
                format!("{:.0}", us(e.p99)),
                format!("{:.2}x", o.per_sec / e.per_sec),
                format!("{:.2}x", o.p50.as_secs_f64() / e.p50.as_secs_f64()),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
        };
        println!(
            "| {:<22} | {:>10} | {:>10.0} | {:>10.0} | {:>10} | {:>10} | {:>10} | {:>10} | {:>10} |",
            what,
            rate(o.per_sec),
            us(o.p50),
            us(o.p99),
            eo,
            ep50,
            ep99,
            rt,
            rl
        );
    };
    for (i, o) in report.ours.writes.iter().enumerate() {
        let e = etcd.and_then(|e| e.writes.get(i));
        row(&format!("put @{}", o.clients), o, e);
    }
    row(
        "linearizable get @1",
        &report.ours.reads,
        etcd.map(|e| &e.reads),
    );
    if let Err(why) = &report.etcd {
        println!("  etcd: {why}");
    }
    println!("  (o/e: ours over etcd; every client its own key and connection, 64-byte values)");
    println!("  persisted per write: ours, a redb transaction with the entries of each append (fsync) on every node; \
              etcd, its WAL records of each raft batch (fdatasync) on every member");
    let top = report.ours.writes.last();
    let etop = etcd.and_then(|e| e.writes.last());
    match (top, etop) {
        (Some(o), Some(e)) => {
            let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
            let t = o.per_sec / e.per_sec;
            let l = o.p50.as_secs_f64() / e.p50.as_secs_f64();
            println!(
                "  target: ours writes/s @{} at least etcd's: {t:.2}x, {}",
                o.clients,
                verdict(t >= 1.0)
            );
            println!(
                "  target: ours write p50 @{} no higher than etcd's: {l:.2}x, {}",
                o.clients,
                verdict(l <= 1.0)
            );
        }
        _ => println!("  targets: not judged (no etcd figures)"),
    }
}
