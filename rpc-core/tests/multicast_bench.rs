//! Latency of group calls (`all`, `first`, majority `quorum`) over 1, 4
//! and 16 fan-out members against one unicast call, measured in the same
//! run: client and every server on one current-thread runtime, UDP on
//! 127.0.0.1 (layout "single" of shared/PERF-NOTES.md). Prints a table.
//!
//! `cargo test --release -p rpc-core --test multicast_bench -- --ignored --nocapture`
#![allow(clippy::print_stdout)]

mod multicast_support;

use multicast_support::*;
use rpc_core::{Completion, GroupClient, Stragglers};
use std::time::{Duration, Instant};

const WARMUP: usize = 300;
const CALLS: usize = 3000;

fn request() -> Slice {
    Slice { values: vec![1, 2, 3, 4], parts: 1 }
}

/// p50, p99 and mean of `samples` (sorted here), in microseconds.
fn summary(samples: &mut [Duration]) -> (f64, f64, f64) {
    samples.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let p = |q: f64| samples.get(((samples.len() as f64 - 1.0) * q) as usize).copied().map_or(0.0, us);
    let mean = samples.iter().map(|d| us(*d)).sum::<f64>() / samples.len().max(1) as f64;
    (p(0.5), p(0.99), mean)
}

/// Runs the whole table on the current runtime; returns its lines.
pub async fn multicast_bench() -> anyhow::Result<Vec<String>> {
    let mut lines = vec![format!("{:<28} {:>9} {:>9} {:>9} {:>8}", "call", "p50 us", "p99 us", "mean us", "x unicast")];
    let mut servers = Vec::new();
    for i in 0..16 {
        servers.push(member(i, None).await?);
    }
    // Unicast baseline: the same method through one channel.
    let unicast = TallyClient::new(client(servers[0].addr, fast_config()).await?);
    let mut samples = Vec::with_capacity(CALLS);
    for i in 0..WARMUP + CALLS {
        let t = Instant::now();
        let r = unicast.sum(request()).await?;
        if i >= WARMUP {
            samples.push(t.elapsed());
        }
        anyhow::ensure!(r.sum == 10, "unicast reply {r:?}");
    }
    let (base, p99, mean) = summary(&mut samples);
    lines.push(format!("{:<28} {base:>9.1} {p99:>9.1} {mean:>9.1} {:>8.2}", "unicast", 1.0));
    for n in [1usize, 4, 16] {
        let group = GroupClient::new();
        for s in servers.iter().take(n) {
            group.add(s.name.clone(), client(s.addr, fast_config()).await?);
        }
        let group = TallyGroupClient::new(group);
        let k = n / 2 + 1;
        for (label, completion, stragglers) in [
            ("all", Completion::All, Stragglers::Finish),
            ("first", Completion::First, Stragglers::Finish),
            ("first/cancel", Completion::First, Stragglers::Cancel),
            ("quorum", Completion::Quorum(k), Stragglers::Finish),
        ] {
            let mut samples = Vec::with_capacity(CALLS);
            for i in 0..WARMUP + CALLS {
                let t = Instant::now();
                let out = group
                    .sum(request())
                    .completion(completion)
                    .stragglers(stragglers)
                    .timeout(Duration::from_secs(5))
                    .await;
                if i >= WARMUP {
                    samples.push(t.elapsed());
                }
                anyhow::ensure!(out.complete, "{label} over {n}: {out:?}");
            }
            let (p50, p99, mean) = summary(&mut samples);
            let name = match completion {
                Completion::Quorum(k) => format!("{label}({k}) x{n}"),
                _ => format!("{label} x{n}"),
            };
            lines.push(format!("{name:<28} {p50:>9.1} {p99:>9.1} {mean:>9.1} {:>8.2}", p50 / base));
        }
    }
    Ok(lines)
}

#[test]
#[ignore = "benchmark: run by hand in release"]
fn multicast_latency_table() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let lines = rt.block_on(multicast_bench())?;
    for l in lines {
        println!("{l}");
    }
    Ok(())
}
