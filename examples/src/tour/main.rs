//! The tour: every protocol and call style of the framework, working, on
//! loopback, in a few seconds.
//!
//! ```text
//! cargo run --release -p rpc-examples --bin tour
//! ```
//!
//! It starts the demo Counter service (`idl/demo.idl`) on 127.0.0.1: one
//! server (one engine, one reply history) listening on UDP, TCP, TCP with
//! TLS (certificates made with rcgen) and gRPC at the same time, and a
//! fault-injecting proxy in front of its UDP socket (20% loss and 10%
//! duplication in each direction, seeded). Then it walks through the steps
//! below for every *door* (a transport and a path to the server: UDP
//! direct, UDP through the proxy, TCP, TCP+TLS, gRPC; a step a door cannot
//! do is shown as skipped, with the reason), prints one line per call (path, call,
//! style, protocol, result, latency, retransmissions), and checks every
//! result against a ledger of what was called: the counter's final value
//! and its number of executions must match exactly (calls whose outcome is
//! uncertain by design, one-way calls and calls past their deadline, are
//! accounted for as such). Then a multicast call over a group of three
//! servers, and a server crash in the middle of a call. It exits non-zero
//! if anything did not behave as specified.
//!
//! The sections, one module each:
//! - [`doors`]: how the tour reaches the server, one module a door: UDP
//!   direct and through the fault proxy ([`doors::udp`]), TCP and TCP+TLS
//!   ([`doors::tcp`]), gRPC ([`doors::grpc`]);
//! - [`steps`]: what is called through every door: synchronous calls
//!   ([`steps::sync`]), the asynchronous, deferred and one-way styles
//!   ([`steps::styles`]), at-most-once in bulk ([`steps::batch`]), the error
//!   cases and a deadline that passes ([`steps::errors`]);
//! - [`multicast`]: a group of three servers of their own;
//! - [`crash`]: a server that crashes in the middle of a call and restarts;
//! - [`clock`]: the clock service: Cristian sync, a Berkeley round, an
//!   election after the master stops, logical clocks;
//! - [`intercept`]: reply metadata, the authentication, trace and metrics
//!   interceptors, and a waiting handler cancelled, on every door;
//! - [`mutex`]: the lock service: grants in arrival order over three
//!   doors, fencing tokens at a resource, a crashed holder's lease ending;
//! - [`dmutex`]: the five distributed mutual exclusion algorithms among
//!   three peers, messages per entry against the theory;
//! - [`consensus`]: the replicated key-value store, three nodes: put, get,
//!   compare-and-set, the leader stopped and a new one elected;
//! - [`twopc`]: two-phase commit across three participants: a commit, an
//!   abort on a no vote, and recovery after coordinator crashes;
//! - [`ledger`]: what the calls should have done to the counter, and the
//!   closing summary that checks it; [`report`]: the table of calls.
//!
//! Adding a transport: implement [`Door`] for it and add it to the list in
//! `run`; steps that a transport cannot do are skipped through
//! [`Door::supports`].
#![forbid(unsafe_code)]
// A binary that reports on the terminal.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod clock;
mod consensus;
mod crash;
mod dmutex;
mod doors;
mod intercept;
mod ledger;
mod multicast;
mod mutex;
mod report;
mod steps;
mod twopc;

use anyhow::{anyhow, Context as _};
use doors::{Door, GrpcDoor, TcpDoor, UdpDoor};
use ledger::Ledger;
use report::Report;
use rpc_core::fault::{FaultConfig, FaultProxy, ProxyConfig, ProxyFaults};
use rpc_core::server::{Server, ServerHandle, TcpServerConfig};
use rpc_services::proto::demo::v1 as demo;
use rpc_services::CounterService;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use steps::Tour;

/// Loss and duplication of the proxy, each way, and the seed of its faults
/// (the crash section's too).
const LOSS: f64 = 0.2;
const DUPLICATION: f64 = 0.1;
const SEED: u64 = 7;
/// How long the whole tour may take before it is declared failed.
const TOUR_LIMIT: Duration = Duration::from_secs(60);

/// A Counter server of its own on UDP `addr`, and its counter.
async fn start_counter(addr: &str) -> anyhow::Result<(ServerHandle, Arc<CounterService>)> {
    let counter = Arc::new(CounterService::new());
    let server = Server::builder()
        .add_service(demo::CounterServer::from_arc(counter.clone()))
        .serve_udp(addr)
        .await
        .with_context(|| format!("starting a Counter server on {addr}"))?;
    Ok((server, counter))
}

/// Polls `done` every 2 ms until it holds or `limit` passes.
async fn wait_for(limit: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

async fn run() -> anyhow::Result<Report> {
    // One server, one engine and history, four doors: UDP, TCP, TCP+TLS, gRPC.
    let (server, counter) = start_counter("127.0.0.1:0").await?;
    let tcp_addr = server
        .serve_tcp("127.0.0.1:0")
        .await
        .context("opening the TCP door")?;
    let (tls_server, tls_client) =
        doors::tcp::tls_configs().context("making the TLS certificates")?;
    let tls_addr = server
        .serve_tcp_with(
            "127.0.0.1:0",
            TcpServerConfig::default().with_tls(tls_server),
        )
        .await
        .context("opening the TLS door")?;
    let grpc_addr = server
        .serve_grpc("127.0.0.1:0")
        .await
        .context("opening the gRPC door")?;
    let faults =
        ProxyFaults::symmetric(FaultConfig::seeded(SEED).loss(LOSS).duplicate(DUPLICATION));
    let proxy = FaultProxy::loopback(server.local_addr(), ProxyConfig::new(faults)).await?;
    println!(
        "rpc tour: demo.v1.Counter over UDP on {}; fault proxy on {} ({:.0}% loss, {:.0}% duplication each way, seed {SEED})",
        server.local_addr(),
        proxy.local_addr(),
        LOSS * 100.0,
        DUPLICATION * 100.0
    );
    println!("          the same server (one engine, one history) also on TCP {tcp_addr}, TCP+TLS {tls_addr}, gRPC {grpc_addr}");
    println!();

    // The doors.
    let doors: Vec<Box<dyn Door>> = vec![
        Box::new(UdpDoor::connect("udp direct", server.local_addr(), false).await?),
        Box::new(UdpDoor::connect("udp proxy 20%", proxy.local_addr(), true).await?),
        Box::new(TcpDoor::connect("tcp", tcp_addr, None).await?),
        Box::new(TcpDoor::connect("tcp+tls", tls_addr, Some(tls_client)).await?),
        Box::new(GrpcDoor::connect(grpc_addr).await?),
    ];
    let mut tour = Tour {
        counter,
        server,
        ledger: Ledger::default(),
        report: Report::default(),
    };

    for door in &doors {
        tour.walk(door.as_ref()).await;
    }
    let mut report = std::mem::take(&mut tour.report);
    multicast::multicast(&mut report).await?;
    crash::crash(&mut report).await?;
    clock::clock(&mut report).await?;
    intercept::intercept(&mut report).await?;
    mutex::mutex(&mut report).await?;
    dmutex::dmutex(&mut report).await?;
    consensus::consensus(&mut report).await?;
    twopc::twopc(&mut report).await?;
    tour.report = report;

    tour.report.print();
    ledger::summary(&mut tour, &proxy.stats(), &doors);
    let report = std::mem::take(&mut tour.report);
    drop(proxy);
    tour.server
        .shutdown(Duration::from_secs(2))
        .await
        .map_err(|e| anyhow!("server shutdown: {e}"))?;
    Ok(report)
}

#[tokio::main]
async fn main() -> ExitCode {
    rpc_services::init_tracing("warn");

    let start = Instant::now();
    let outcome = match tokio::time::timeout(TOUR_LIMIT, run()).await {
        Ok(r) => r,
        Err(_) => Err(anyhow!("the tour did not finish within {TOUR_LIMIT:?}")),
    };
    match outcome {
        Ok(report) if report.failures.is_empty() => {
            println!();
            println!(
                "all {} calls behaved as specified ({:.1} s)",
                report.rows.len(),
                start.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Ok(report) => {
            println!();
            println!("FAILED: {} problem(s)", report.failures.len());
            for f in &report.failures {
                println!("  - {f}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("tour failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
