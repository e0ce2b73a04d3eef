//! The benchmark: the framework's call styles over UDP against a raw tokio
//! UDP echo and plain tonic unary; its TCP channel against a raw TCP echo
//! and tarpc; its gRPC face against plain tonic; and group calls over 1, 4
//! and 16 members against one unicast call; in one run, on loopback, with a
//! 64-byte payload.
//!
//! ```text
//! cargo run --release -p rpc-bench --bin bench [-- --layout single|split|both] [--quick | --calls N] [--only ROW]
//! ```
//!
//! For every target it reports the p50 and p99 latency of sequential calls
//! (after a warm-up) and the calls per second with 1, 16 and 64 calls in
//! flight, then ratios against the baselines: latency against the raw UDP
//! echo, throughput at 64 in flight against tonic.
//!
//! Layouts:
//! - `single` (default): client and server tasks on one current-thread tokio
//!   runtime. The least noisy; use it for framework-vs-framework ratios.
//! - `split`: the servers on their own current-thread runtime on another
//!   thread, so every hop is a cross-thread wake-up (noisier, slower here).
//!
//! Sequential calls are made from the measuring task; N calls in flight
//! are N client tasks (spawned on the client's runtime), each making calls
//! one after the other. (Not a `FuturesUnordered` in one task: it wakes its
//! own task whenever all its futures are pending, which on a current-thread
//! runtime delays the I/O driver and would distort the numbers.) Every
//! measurement is bounded by a call count and a time window, and guarded by
//! a watchdog; the whole run takes about 55 s here (`--quick`: about 10 s).
//! The p50 target of the UDP runtime is also measured with both sides
//! interleaved in blocks of 200 calls ([`measure::paired_p50`]), so that a noisy
//! second on a shared host cannot favour either side.
//!
//! The sections, one module each: [`target`] (what a peer under test is),
//! [`peers`] (one module a peer: the raw UDP and TCP echoes, plain tonic,
//! tarpc, and ours over UDP, TCP, gRPC and as a multicast group),
//! [`measure`] (what is measured and how), [`layout`] (where client and
//! servers run, and the rows measured on each), [`report`] (the tables and
//! the ratios).
//!
//! Adding a target (the framework's RR, RRA, asynchronous and one-way over
//! UDP): implement [`Target`](target::Target) for a type holding a
//! connected client (its server started on the `Handle` it is given) and
//! add one line to [`framework_targets`](peers::framework_targets).
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout)]

mod layout;
mod measure;
mod peers;
mod report;
mod target;

use anyhow::bail;
use bytes::Bytes;
use layout::Layout;
use measure::Plan;
use std::time::Instant;

/// Size of every request and reply payload.
const PAYLOAD: usize = 64;

/// The message of the plain tonic baseline (what prost would derive from
/// `message EchoMsg { bytes data = 1; }`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoMsg {
    /// The payload, echoed back.
    #[prost(bytes = "bytes", tag = "1")]
    pub data: Bytes,
}

fn parse_args() -> anyhow::Result<(Vec<Layout>, Plan)> {
    let mut layouts = vec![Layout::Single];
    let mut plan = Plan::full();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--layout" => {
                layouts = match args.next().as_deref() {
                    Some("single") => vec![Layout::Single],
                    Some("split") => vec![Layout::Split],
                    Some("both") => vec![Layout::Single, Layout::Split],
                    other => bail!("--layout expects single, split or both, got {other:?}"),
                }
            }
            "--quick" => {
                plan = Plan {
                    only: plan.only,
                    ..Plan::quick()
                }
            }
            "--calls" => {
                let calls = match args.next().map(|n| n.parse::<u64>()) {
                    Some(Ok(n)) if n > 0 => n,
                    other => bail!("--calls expects a positive number, got {other:?}"),
                };
                plan = Plan {
                    only: plan.only,
                    ..Plan::counted(calls)
                }
            }
            "--only" => match args.next() {
                Some(name) => plan.only = Some(name),
                None => bail!("--only expects part of a row name, e.g. \"UDP RR\""),
            },
            "-h" | "--help" => {
                println!(
                    "usage: bench [--layout single|split|both] [--quick | --calls N] [--only ROW]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (try --help)"),
        }
    }
    Ok((layouts, plan))
}

fn main() -> anyhow::Result<()> {
    let (layouts, plan) = parse_args()?;
    // As a deployed program would run (and as the tour does): a subscriber
    // at WARN unless RUST_LOG says otherwise. Without any subscriber,
    // tracing's `log` feature (enabled here by tarpc) turns every span
    // event of every peer into a check of the `log` crate.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let mut reports = Vec::new();
    for layout in layouts {
        let (rows, paired) = runtime.block_on(layout::run_layout(layout, &plan))?;
        let multicast = if plan.wants("multicast") {
            runtime.block_on(layout::multicast_layout(layout, &plan))?
        } else {
            Vec::new()
        };
        reports.push((layout, rows, multicast, paired));
    }
    for (layout, rows, multicast, paired) in &reports {
        report::print_report(*layout, &plan, rows);
        report::print_multicast(*layout, multicast);
        report::print_ratios(*layout, &plan, rows, multicast, *paired);
    }
    println!("\nbench took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
