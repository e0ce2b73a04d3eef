//! Latency of group calls (`all`, `first`, majority `quorum`) over 1, 4
//! and 16 members against one unicast call, measured in the same run,
//! over UDP on 127.0.0.1:
//! - "single": client and every server on one current-thread runtime
//!   (the layout "single" of the `bench` binary);
//! - "split": the client on one current-thread runtime, every server on a
//!   second one on another thread;
//! - "ip": IP multicast (one datagram per call to a group of n members),
//!   single layout, inside a network namespace of its own.
//!
//! `cargo test --release -p rpc-core --test multicast_bench -- --ignored --nocapture`
#![allow(clippy::print_stdout)]

mod multicast_support;

use multicast_support::*;
use rpc_core::client::UdpChannel;
use rpc_core::{Client, Completion, GroupClient, Stragglers};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

const WARMUP: usize = 300;
const CALLS: usize = 3000;

fn request() -> Slice {
    Slice {
        values: vec![1, 2, 3, 4],
        parts: 1,
    }
}

/// p50, p99 and mean of `samples` (sorted here), in microseconds.
fn summary(samples: &mut [Duration]) -> (f64, f64, f64) {
    samples.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let p = |q: f64| {
        samples
            .get(((samples.len() as f64 - 1.0) * q) as usize)
            .copied()
            .map_or(0.0, us)
    };
    let mean = samples.iter().map(|d| us(*d)).sum::<f64>() / samples.len().max(1) as f64;
    (p(0.5), p(0.99), mean)
}

const POLICIES: [(&str, Completion, Stragglers); 4] = [
    ("all", Completion::All, Stragglers::Finish),
    ("first", Completion::First, Stragglers::Finish),
    ("first/cancel", Completion::First, Stragglers::Cancel),
    ("quorum", Completion::Quorum(0), Stragglers::Finish),
];

fn header(layout: &str) -> String {
    format!(
        "{:<30} {:>9} {:>9} {:>9} {:>9} {:>7}",
        format!("[{layout}] call"),
        "p50 us",
        "p99 us",
        "mean us",
        "x unicast",
        "resends"
    )
}

/// Runs every policy over `group` (of `n` members); one line each.
async fn policy_rows(
    lines: &mut Vec<String>,
    prefix: &str,
    group: &TallyGroupClient,
    n: usize,
    base: f64,
    resends: &dyn Fn() -> u64,
) -> anyhow::Result<()> {
    for (label, completion, stragglers) in POLICIES {
        let completion = match completion {
            Completion::Quorum(_) => Completion::Quorum(n / 2 + 1),
            c => c,
        };
        let before = resends();
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
            Completion::Quorum(k) => format!("{prefix}{label}({k}) x{n}"),
            _ => format!("{prefix}{label} x{n}"),
        };
        lines.push(format!(
            "{name:<30} {p50:>9.1} {p99:>9.1} {mean:>9.1} {:>9.2} {:>7}",
            p50 / base,
            resends() - before
        ));
    }
    Ok(())
}

/// The unicast baseline and the fan-out rows against servers at `addrs`
/// (at least 16), from the current runtime.
pub async fn fanout_table(layout: &str, addrs: &[SocketAddr]) -> anyhow::Result<Vec<String>> {
    let mut lines = vec![header(layout)];
    let channel = UdpChannel::connect_with(addrs[0], fast_config()).await?;
    let unicast = TallyClient::new(Client::new(channel.clone()));
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
    let resends = channel.stats().retransmissions;
    lines.push(format!(
        "{:<30} {base:>9.1} {p99:>9.1} {mean:>9.1} {:>9.2} {resends:>7}",
        "unicast", 1.0
    ));
    for n in [1usize, 4, 16] {
        let group = GroupClient::new();
        let mut channels = Vec::new();
        for (i, a) in addrs.iter().take(n).enumerate() {
            let ch = UdpChannel::connect_with(*a, fast_config()).await?;
            group.add(format!("m{i}"), Client::new(ch.clone()));
            channels.push(ch);
        }
        let group = TallyGroupClient::new(group);
        let resends = || {
            channels
                .iter()
                .map(|c| c.stats().retransmissions)
                .sum::<u64>()
        };
        policy_rows(&mut lines, "", &group, n, base, &resends).await?;
    }
    Ok(lines)
}

/// IP multicast rows (inside a namespace): a group of n members per n.
pub async fn ip_table() -> anyhow::Result<Vec<String>> {
    let mut lines = vec![header("ip")];
    let mut members = Vec::new();
    for (g, n) in [1u32, 4, 16].into_iter().enumerate() {
        let group_addr = SocketAddrV4::new(Ipv4Addr::new(239, 255, 43, g as u8 + 1), 7500);
        let mut ms = Vec::new();
        for i in 0..n {
            ms.push(group_member_on(group_addr, i, true).await?);
        }
        members.push((group_addr, ms));
    }
    // Baseline in the namespace too: one unicast call to one member.
    let unicast = TallyClient::new(client(members[0].1[0].addr, fast_config()).await?);
    let mut samples = Vec::with_capacity(CALLS);
    for i in 0..WARMUP + CALLS {
        let t = Instant::now();
        unicast.sum(request()).await?;
        if i >= WARMUP {
            samples.push(t.elapsed());
        }
    }
    let (base, p99, mean) = summary(&mut samples);
    lines.push(format!(
        "{:<30} {base:>9.1} {p99:>9.1} {mean:>9.1} {:>9.2} {:>7}",
        "unicast", 1.0, 0
    ));
    for (group_addr, ms) in &members {
        let mut config = mc_config(Duration::from_millis(20));
        config.attempts = 8;
        let mc = rpc_core::multicast::MulticastClient::connect(
            *group_addr,
            "127.0.0.1:0".parse()?,
            config,
        )
        .await?;
        let group = GroupClient::with_multicast(mc.clone());
        for (i, m) in ms.iter().enumerate() {
            group.add_multicast_member(format!("m{i}"), m.addr)?;
        }
        let group = TallyGroupClient::new(group);
        let resends = || mc.stats().resends;
        policy_rows(&mut lines, "ip ", &group, ms.len(), base, &resends).await?;
    }
    Ok(lines)
}

fn print(lines: &[String]) {
    for l in lines {
        println!("{l}");
    }
    println!();
}

#[test]
#[ignore = "benchmark: run by hand in release"]
fn multicast_latency_table() -> anyhow::Result<()> {
    // single: everything on one current-thread runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let lines = rt.block_on(async {
        let mut servers = Vec::new();
        for i in 0..16 {
            servers.push(member(i, None).await?);
        }
        let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
        fanout_table("single", &addrs).await
    })?;
    print(&lines);

    // split: servers on a runtime of their own, on another thread.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server_thread = std::thread::spawn(move || -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let mut servers = Vec::new();
            for i in 0..16 {
                servers.push(member(i, None).await?);
            }
            let _ = addr_tx.send(servers.iter().map(|s| s.addr).collect::<Vec<_>>());
            let _ = stop_rx.await;
            anyhow::Ok(())
        })
    });
    let addrs = addr_rx.recv()?;
    let lines = rt.block_on(fanout_table("split", &addrs))?;
    let _ = stop_tx.send(());
    server_thread
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))??;
    print(&lines);

    // ip: IP multicast inside a namespace of its own.
    let ns = Netns::create()?;
    let (tx, rx) = std::sync::mpsc::channel();
    ns.run(move || async move {
        let _ = tx.send(ip_table().await?);
        anyhow::Ok(())
    })?;
    print(&rx.recv()?);
    Ok(())
}
