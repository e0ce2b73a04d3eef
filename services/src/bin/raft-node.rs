//! `raft-node`: one node of the consensus service (a replicated key-value
//! store on openraft), on UDP and TCP at the same address.
//!
//! ```text
//! raft-node --id N --data-dir DIR [--listen ADDR] [--peers ID=ADDR,...] [--init]
//!           [--cluster NAME] [--route ID=ADDR,...]
//!           [--heartbeat-ms MS] [--election-min-ms MS] [--election-max-ms MS]
//!           [--snapshot-after N]
//! ```
//!
//! Opens (or creates) its store in DIR, serves on ADDR (default
//! `127.0.0.1:0`) and prints `raft-node <id> listening on <addr>`. With
//! `--init`, it makes a new cluster of itself and `--peers` (a node whose
//! store already belongs to a cluster leaves it as it is), so the same
//! command line restarts it.
//!
//! It refuses to start, with a message that says why:
//! - a store that cannot be read (corrupt), or of another node id, or of
//!   another cluster (the store records `--cluster`, default
//!   `consensus`, on first start); it never starts empty over data it
//!   cannot read;
//! - an id already taken: before serving it asks each of `--peers` for
//!   its status, and stops if one of them has its id, or if one names its
//!   id at another address where a node with its id answers.
//!
//! `--route ID=ADDR` sends Raft traffic for peer ID to ADDR instead of
//! its membership address (a fault proxy in between, as the tests do).
//!
//! A 3-node cluster on loopback, in three shells:
//!
//! ```text
//! raft-node --id 1 --listen 127.0.0.1:7001 --data-dir /tmp/r1 --peers 2=127.0.0.1:7002,3=127.0.0.1:7003 --init
//! raft-node --id 2 --listen 127.0.0.1:7002 --data-dir /tmp/r2
//! raft-node --id 3 --listen 127.0.0.1:7003 --data-dir /tmp/r3
//! ```
#![forbid(unsafe_code)]
// A binary that reports on the terminal.
#![allow(clippy::print_stdout)]

mod common;

use anyhow::{bail, Context as _};
use clap::Parser;
use rpc_services::consensus::{ConsensusNode, NodeConfig};
use rpc_services::proto::consensus::v1::{KeyValueClient, NodeStatus, StatusRequest};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// One node of the consensus service.
#[derive(Debug, Parser)]
#[command(name = "raft-node", version)]
struct Args {
    /// This node's id (not 0).
    #[arg(long)]
    id: u64,
    /// Address to serve on (UDP and TCP).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where the node keeps its log, vote and snapshots.
    #[arg(long)]
    data_dir: PathBuf,
    /// The other members, `id=host:port,...`: the cluster `--init` makes,
    /// and the nodes asked whether this id is taken.
    #[arg(long, default_value = "")]
    peers: String,
    /// Make a new cluster of this node and the peers (nothing if the store
    /// already belongs to one).
    #[arg(long)]
    init: bool,
    /// The cluster's name: a store of another cluster is refused.
    #[arg(long, default_value = rpc_services::consensus::DEFAULT_CLUSTER)]
    cluster: String,
    /// Where to send Raft traffic for some peers, `id=host:port,...`,
    /// instead of their membership addresses.
    #[arg(long, default_value = "")]
    route: String,
    /// Heartbeat interval.
    #[arg(long, default_value_t = 50)]
    heartbeat_ms: u64,
    /// Shortest election timeout (a follower stands after the longest
    /// plus its own, drawn in the range, of silence).
    #[arg(long, default_value_t = 250)]
    election_min_ms: u64,
    /// Longest election timeout.
    #[arg(long, default_value_t = 500)]
    election_max_ms: u64,
    /// Entries between snapshots.
    #[arg(long, default_value_t = 5_000)]
    snapshot_after: u64,
    /// Entries kept in the log behind a snapshot (a follower further
    /// behind is sent the snapshot).
    #[arg(long, default_value_t = 1_000)]
    keep_logs: u64,
}

fn parse_peers(s: &str) -> anyhow::Result<BTreeMap<u64, SocketAddr>> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .with_context(|| format!("peer {part:?} is not id=host:port"))?;
        let id: u64 = id
            .parse()
            .with_context(|| format!("peer id {id:?} is not a number"))?;
        let addr: SocketAddr = addr
            .parse()
            .with_context(|| format!("peer address {addr:?} is not host:port"))?;
        if id == 0 {
            bail!("peer id 0 is not allowed");
        }
        if out.insert(id, addr).is_some() {
            bail!("peer id {id} is given twice");
        }
    }
    Ok(out)
}

/// Asks a node at `addr` for its status (retransmitted within 1.5 s: a
/// busy node answers, a node that is down costs that long).
async fn status_of(addr: SocketAddr) -> Option<NodeStatus> {
    let stub = KeyValueClient::connect(&format!("udp://{addr}"))
        .await
        .ok()?;
    stub.status(StatusRequest {})
        .timeout(Duration::from_millis(1500))
        .await
        .ok()
}

/// Refuses an id that a running node of the cluster has already: a peer
/// with this id, or a node with this id at the address the peers'
/// membership gives it, if that is not `listen`.
async fn check_id_free(
    id: u64,
    listen: SocketAddr,
    peers: &BTreeMap<u64, SocketAddr>,
) -> anyhow::Result<()> {
    let mut elsewhere = Vec::new();
    for (peer, addr) in peers {
        let Some(s) = status_of(*addr).await else {
            tracing::info!(peer, %addr, "peer does not answer: id check skipped for it");
            continue;
        };
        if s.id == id {
            bail!("node id {id} is already taken: the peer at {addr} (given as node {peer}) is node {id}");
        }
        for m in s.members.iter().filter(|m| m.id == id) {
            match m.addr.parse::<SocketAddr>() {
                Ok(a) if a != listen && !elsewhere.contains(&a) => elsewhere.push(a),
                _ => {}
            }
        }
    }
    for addr in elsewhere {
        if status_of(addr).await.is_some_and(|s| s.id == id) {
            bail!("node id {id} is already taken: the cluster has node {id} at {addr}, and it is running");
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::init_tracing("info,openraft=warn");
    let args = Args::parse();
    let peers = parse_peers(&args.peers)?;
    if peers.contains_key(&args.id) {
        bail!("--peers names this node's own id {}", args.id);
    }
    let routes = parse_peers(&args.route)?;
    if !peers.is_empty() {
        check_id_free(args.id, args.listen, &peers).await?;
    }
    let mut config = NodeConfig::new(args.id, &args.data_dir);
    config.cluster = args.cluster.clone();
    config.routes = routes;
    config.heartbeat = Duration::from_millis(args.heartbeat_ms);
    config.election_timeout = (
        Duration::from_millis(args.election_min_ms),
        Duration::from_millis(args.election_max_ms),
    );
    config.snapshot_after = args.snapshot_after;
    config.keep_after_snapshot = args.keep_logs;
    let node = ConsensusNode::start(config, args.listen)
        .await
        .with_context(|| {
            format!(
                "starting node {} with data in {}",
                args.id,
                args.data_dir.display()
            )
        })?;
    if args.init {
        let mut members = peers;
        members.insert(args.id, node.local_addr());
        let made = node.initialize(members).await?;
        tracing::info!(made, "initialize");
    }
    common::say(&format!(
        "raft-node {} listening on {}",
        args.id,
        node.local_addr()
    ))?;
    std::future::pending::<()>().await;
    drop(node);
    Ok(())
}
