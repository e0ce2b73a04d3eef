//! `clock-node`: the clock service of one process, on UDP, and on TCP and
//! gRPC when asked.
//!
//! ```text
//! clock-node [--listen ADDR] [--tcp ADDR] [--grpc ADDR] [--id N]
//!            [--clock-offset-ms MS] [--drift-ppm PPM] [--reference]
//!            [--round-interval-ms MS] [--master-timeout-ms MS] [--polls N]
//!            [--election bully|ring] [--misbehave years-off|negative-delay]
//! ```
//!
//! Serves `clock.v1.Clock` and `clock.v1.Election` on UDP at ADDR (default
//! `127.0.0.1:0`), with the same engine on the TCP and gRPC doors asked
//! for, and prints `clock-node <id> tcp on <addr>` and `clock-node <id>
//! grpc on <addr>` for those, then `clock-node <id> listening on <addr>`
//! (UDP: the group's members and elections use UDP). Its
//! clock is the system's time at start, advanced by the monotonic clock,
//! with the injected offset and drift; it never touches the system clock.
//! Once `Configure` names its group, it takes part in Berkeley rounds and
//! elections, by the bully algorithm or, with `--election ring`, the ring
//! algorithm (every node of a group should run the same). A master polls
//! each member `--polls` times a round and uses the least delayed answer;
//! with `--round-interval-ms 0` it runs rounds only when asked
//! (`RunRound`), and its members do not judge it by its silence.
//! `--misbehave` makes it answer `GetTime` and `Poll` with
//! timestamps that cannot be true (for tests: a master must exclude it and
//! count it). It runs until killed.
#![forbid(unsafe_code)]
// A binary that reports on the terminal.
#![allow(clippy::print_stdout)]

mod common;

use anyhow::Context as _;
use clap::Parser;
use common::Door;
use rpc_core::server::Server;
use rpc_services::clock::{
    ClockNode, ClockService, Misbehaviour, NodeConfig, Skew, TimeSource, MAX_POLLS,
};
use rpc_services::election::Algorithm;
use rpc_services::proto::clock::v1 as pb;
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
    /// Time between Berkeley rounds when master; 0: rounds only when asked
    /// (`RunRound`).
    #[arg(long, default_value_t = 200)]
    round_interval_ms: u64,
    /// Polls of each member in one round (1 to
    /// `rpc_services::clock::MAX_POLLS`); the least delayed is used.
    #[arg(
        long,
        default_value_t = 4,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_POLLS))
    )]
    polls: u32,
    /// Silence of the master after which a member starts an election.
    #[arg(long, default_value_t = 600)]
    master_timeout_ms: u64,
    /// The election algorithm run when the master is gone.
    #[arg(long, value_enum, default_value_t = ElectionArg::Bully)]
    election: ElectionArg,
    /// Serve on TCP at this address as well.
    #[arg(long, value_name = "ADDR")]
    tcp: Option<SocketAddr>,
    /// Serve on gRPC (HTTP/2) at this address as well.
    #[arg(long, value_name = "ADDR")]
    grpc: Option<SocketAddr>,
    /// Answer with timestamps that cannot be true (a fault for tests).
    #[arg(long, value_enum)]
    misbehave: Option<Fault>,
}

/// The algorithms `--election` can choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ElectionArg {
    /// Bully: the highest live id wins; O(n^2) messages at worst.
    Bully,
    /// Ring: a token collects the live ids; 2n messages per election.
    Ring,
}

/// The faults `--misbehave` can inject.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Fault {
    /// Receive and transmit times 20 years ahead.
    YearsOff,
    /// A server time longer than the round trip.
    NegativeDelay,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::init_tracing("info");
    let args = Args::parse();
    let time = Arc::new(TimeSource::system(Skew::new(
        args.clock_offset_ms,
        args.drift_ppm,
    )));
    if args.reference {
        time.set_reference();
    }
    let mut config = NodeConfig::new(args.id);
    config.round_interval =
        (args.round_interval_ms > 0).then(|| Duration::from_millis(args.round_interval_ms));
    config.polls = args.polls;
    config.master_timeout = Duration::from_millis(args.master_timeout_ms);
    config.election = match args.election {
        ElectionArg::Bully => Algorithm::Bully,
        ElectionArg::Ring => Algorithm::Ring,
    };
    config.misbehaviour = args.misbehave.map(|f| match f {
        Fault::YearsOff => Misbehaviour::YearsOff,
        Fault::NegativeDelay => Misbehaviour::NegativeDelay,
    });
    let node = ClockNode::new(config, time);
    let server = Server::builder()
        .intercept(node.interceptor())
        .add_service(pb::ClockServer::new(ClockService(node.clone())))
        .add_service(pb::ElectionServer::new(node.election_service()))
        .serve_udp(args.listen)
        .await
        .with_context(|| format!("serving on {}", args.listen))?;
    let who = format!("clock-node {}", args.id);
    let mut lines = Vec::new();
    if let Some(addr) = args.tcp {
        lines.push(common::open_door(&server, &who, Door::Tcp, addr).await?);
    }
    if let Some(addr) = args.grpc {
        lines.push(common::open_door(&server, &who, Door::Grpc, addr).await?);
    }
    lines.push(format!("{who} listening on {}", server.local_addr()));
    common::say_lines(lines)?;
    let driver = tokio::spawn(node.run());
    driver.await.context("the node's driver")?;
    drop(server);
    Ok(())
}
