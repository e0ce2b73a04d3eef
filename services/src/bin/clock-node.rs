//! `clock-node`: the clock service of one process, on UDP.
//!
//! ```text
//! clock-node [--listen ADDR] [--id N] [--clock-offset-ms MS] [--drift-ppm PPM] [--reference]
//!            [--round-interval-ms MS] [--master-timeout-ms MS]
//! ```
//!
//! Serves `clock.v1.Clock` and `clock.v1.Election` on ADDR (default
//! `127.0.0.1:0`) and prints `clock-node <id> listening on <addr>`. Its
//! clock is the system's time at start, advanced by the monotonic clock,
//! with the injected offset and drift; it never touches the system clock.
//! Once `Configure` names its group, it takes part in Berkeley rounds and
//! elections. It runs until killed.
#![forbid(unsafe_code)]
// A binary that reports on the terminal.
#![allow(clippy::print_stdout)]

use anyhow::Context as _;
use clap::Parser;
use rpc_core::server::Server;
use rpc_services::clock::{ClockNode, ClockService, NodeConfig, Skew, TimeSource};
use rpc_services::proto::clock::v1 as pb;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The clock service of one process.
#[derive(Debug, Parser)]
#[command(name = "clock-node", version)]
struct Args {
    /// UDP address to serve on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Node id (the bully election elects the highest live one).
    #[arg(long, default_value_t = 0)]
    id: u32,
    /// Injected offset of the clock, in milliseconds.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    clock_offset_ms: i64,
    /// Injected drift of the clock, in parts per million.
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    drift_ppm: f64,
    /// The clock is a reference: synchronised, error bound 0.
    #[arg(long)]
    reference: bool,
    /// Time between Berkeley rounds when master.
    #[arg(long, default_value_t = 200)]
    round_interval_ms: u64,
    /// Silence of the master after which a member starts an election.
    #[arg(long, default_value_t = 600)]
    master_timeout_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let time = Arc::new(TimeSource::system(Skew::new(
        args.clock_offset_ms,
        args.drift_ppm,
    )));
    if args.reference {
        time.set_reference();
    }
    let mut config = NodeConfig::new(args.id);
    config.round_interval = Duration::from_millis(args.round_interval_ms);
    config.master_timeout = Duration::from_millis(args.master_timeout_ms);
    let node = ClockNode::new(config, time);
    let server = Server::builder()
        .intercept(node.interceptor())
        .add_service(pb::ClockServer::new(ClockService(node.clone())))
        .add_service(pb::ElectionServer::new(node.election_service()))
        .serve_udp(args.listen)
        .await
        .with_context(|| format!("serving on {}", args.listen))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "clock-node {} listening on {}",
        args.id,
        server.local_addr()
    )?;
    out.flush()?;
    drop(out);
    let driver = tokio::spawn(node.run());
    driver.await.context("the node's driver")?;
    drop(server);
    Ok(())
}
