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
//! (`-- --help` says what each flag does; of `--quick` and `--calls`, and of
//! a flag given twice, the last one counts.)
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
//! a watchdog; the whole run takes about 55 s here (`--quick`: about 10 s),
//! plus about 40 s (14 s) for the lock and consensus sections against etcd
//! (more on the first run, which builds `lock-server` and `raft-node`).
//! The p50 target of the UDP runtime is also measured with both sides
//! interleaved in blocks of 200 calls ([`measure::paired_p50`]), so that a noisy
//! second on a shared host cannot favour either side.
//!
//! The sections, one module each: [`target`] (what a peer under test is),
//! [`peers`] (one module a peer: the raw UDP and TCP echoes, plain tonic,
//! tarpc, and ours over UDP, TCP, gRPC and as a multicast group),
//! [`clock`] and [`dmutex`] (the clock service; the five distributed
//! mutual exclusion algorithms at N = 3, 5, 9),
//! [`mutex`] and [`consensus`] (the lock service and the replicated
//! key-value store as child processes, against etcd started by [`etcd`],
//! measured by the closed loops of [`load`]),
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

mod clock;
mod consensus;
mod dmutex;
mod etcd;
mod layout;
mod load;
mod measure;
mod mutex;
mod peers;
mod report;
mod target;

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

impl EchoMsg {
    /// The request of every echo but tarpc's: [`PAYLOAD`] bytes.
    fn payload() -> EchoMsg {
        EchoMsg {
            data: Bytes::from(vec![7u8; PAYLOAD]),
        }
    }
}

/// The benchmark: ours over UDP, TCP, gRPC and multicast against raw
/// sockets, plain tonic and tarpc, on loopback, in one run.
#[derive(Debug, clap::Parser)]
#[command(name = "bench", args_override_self = true)]
struct Args {
    /// Where the servers run: with the client on one current-thread
    /// runtime (single), on a thread of their own (split), or both in turn.
    #[arg(long, value_enum, default_value_t = Layouts::Single)]
    layout: Layouts,
    /// About 10 s instead of 55: fewer calls, shorter windows.
    #[arg(long, overrides_with = "calls")]
    quick: bool,
    /// Every measurement of a row makes exactly N calls (4N + 100 in all,
    /// no time bound), so that instruction counts of two builds compare.
    #[arg(long, value_name = "N", overrides_with = "quick",
          value_parser = clap::value_parser!(u64).range(1..))]
    calls: Option<u64>,
    /// Only the rows whose name contains ROW, e.g. "UDP RR", or, with a
    /// trailing `$`, the row named exactly ROW (and the multicast table
    /// only if ROW is part of "multicast"; a section only if ROW is part
    /// of its name: "clock service", "distributed mutex", "lock service vs
    /// etcd", "consensus vs etcd").
    #[arg(long, value_name = "ROW")]
    only: Option<String>,
}

/// The layouts `--layout` can ask for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Layouts {
    Single,
    Split,
    Both,
}

impl Args {
    /// The layouts to measure, in order, and the plan of every one.
    fn plan(self) -> (Vec<Layout>, Plan) {
        let layouts = match self.layout {
            Layouts::Single => vec![Layout::Single],
            Layouts::Split => vec![Layout::Split],
            Layouts::Both => vec![Layout::Single, Layout::Split],
        };
        let plan = match (self.calls, self.quick) {
            (Some(calls), _) => Plan::counted(calls),
            (None, true) => Plan::quick(),
            (None, false) => Plan::full(),
        };
        let plan = Plan {
            only: self.only,
            ..plan
        };
        (layouts, plan)
    }
}

fn main() -> anyhow::Result<()> {
    let (layouts, plan) = <Args as clap::Parser>::parse().plan();
    // As a deployed program would run (and as the tour does): a subscriber
    // at WARN unless RUST_LOG says otherwise. Without any subscriber,
    // tracing's `log` feature (enabled here by tarpc) turns every span
    // event of every peer into a check of the `log` crate.
    rpc_services::init_tracing("warn");
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
    let clock = runtime.block_on(clock::run(&plan))?;
    let dmutex = runtime.block_on(dmutex::run(&plan))?;
    let section = Instant::now();
    let locks = runtime.block_on(mutex::run(&plan))?;
    if locks.is_some() {
        println!("  (lock section: {:.1} s)", section.elapsed().as_secs_f64());
    }
    let section = Instant::now();
    let consensus = runtime.block_on(consensus::run(&plan))?;
    if consensus.is_some() {
        println!(
            "  (consensus section: {:.1} s)",
            section.elapsed().as_secs_f64()
        );
    }
    for (layout, rows, multicast, paired) in &reports {
        report::print_report(*layout, &plan, rows);
        report::print_multicast(*layout, multicast);
        report::print_ratios(*layout, &plan, rows, multicast, paired);
    }
    if let Some(clock) = &clock {
        clock::print(clock);
    }
    if let Some(dmutex) = &dmutex {
        dmutex::print(dmutex);
    }
    if let Some(locks) = &locks {
        mutex::print(locks);
    }
    if let Some(consensus) = &consensus {
        consensus::print(consensus);
    }
    println!("\nbench took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
