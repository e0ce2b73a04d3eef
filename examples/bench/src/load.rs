//! What the lock and consensus sections share: a closed loop of N clients
//! with every operation's latency kept, the windows of each plan, and
//! where the services' binaries are.

use crate::measure::{alternating_blocks, percentile, Blocks, Plan};
use anyhow::{ensure, Context as _};
use std::future::Future;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// One client's operation (an acquire and release, a write, a read).
pub(crate) trait Op: Send + Sync + 'static {
    /// Runs the operation once; `i` counts this client's operations.
    fn run(&self, i: u64) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// What a closed loop measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    /// Concurrent clients.
    pub(crate) clients: usize,
    /// Operations measured (after the warm-up).
    pub(crate) ops: usize,
    /// Operations per second.
    pub(crate) per_sec: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
}

/// The windows of the sections' closed loops.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Windows {
    pub(crate) warmup: Duration,
    pub(crate) window: Duration,
    /// Hand-overs measured (at most; also bounded by `window`).
    pub(crate) handovers: usize,
}

impl Windows {
    /// Per plan: 1.5 s windows in the full run, 0.4 s with `--quick`.
    pub(crate) fn of(plan: &Plan) -> Windows {
        if plan.seq_window < Duration::from_secs(1) {
            Windows {
                warmup: Duration::from_millis(100),
                window: Duration::from_millis(400),
                handovers: 40,
            }
        } else {
            Windows {
                warmup: Duration::from_millis(300),
                window: Duration::from_millis(1500),
                handovers: 200,
            }
        }
    }
}

/// Runs every client of `clients` in a task of its own, each making one
/// operation after the other: a warm-up, then the measured window (no
/// operation starts after it closes). Latency percentiles are over every
/// measured operation of every client; the rate is those operations over
/// the time from the window's start to the last one's end.
pub(crate) async fn closed_loop<O: Op>(clients: Vec<Arc<O>>, w: Windows) -> anyhow::Result<Load> {
    let n = clients.len();
    let start = Instant::now();
    let measured_from = start + w.warmup;
    let end = measured_from + w.window;
    let mut tasks = JoinSet::new();
    for op in clients {
        tasks.spawn(async move {
            let mut samples = Vec::new();
            let mut last_end = measured_from;
            let mut i = 0u64;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                op.run(i).await?;
                i += 1;
                let t1 = Instant::now();
                if t0 >= measured_from {
                    samples.push(t1 - t0);
                    last_end = t1;
                }
            }
            anyhow::Ok((samples, last_end))
        });
    }
    let mut samples = Vec::new();
    let mut last_end = measured_from;
    let bound = w.warmup + w.window + Duration::from_secs(30);
    let joined = tokio::time::timeout(bound, async {
        while let Some(task) = tasks.join_next().await {
            let (s, e) = task.context("a client task")??;
            samples.extend(s);
            last_end = last_end.max(e);
        }
        anyhow::Ok(())
    })
    .await;
    joined.context("a closed loop stalled")??;
    ensure!(!samples.is_empty(), "no operation completed in the window");
    samples.sort_unstable();
    let span = last_end.saturating_duration_since(measured_from);
    Ok(Load {
        clients: n,
        ops: samples.len(),
        per_sec: samples.len() as f64 / span.as_secs_f64().max(1e-9),
        p50: percentile(&samples, 50),
        p99: percentile(&samples, 99),
    })
}

/// The p50 of `a` and of `b`, one client each, measured in alternating
/// blocks of 50 operations over the window ([`alternating_blocks`]): their
/// ratio holds on a shared host whose load changes from one second to the
/// next, where two closed loops a second apart can differ by a factor of
/// several.
pub(crate) async fn interleaved_p50<A: Op, B: Op>(
    a: &A,
    b: &B,
    w: Windows,
) -> anyhow::Result<(Duration, Duration)> {
    let keep_from = Instant::now() + w.warmup;
    let (mut ia, mut ib) = (0u64, 0u64);
    let (sa, sb) = alternating_blocks(
        async || {
            ia += 1;
            a.run(ia - 1).await
        },
        async || {
            ib += 1;
            b.run(ib - 1).await
        },
        Blocks {
            size: 50,
            keep_from,
            end: keep_from + w.window,
            max: usize::MAX,
        },
    )
    .await?;
    Ok((percentile(&sa, 50), percentile(&sb, 50)))
}

/// The path of the workspace binary `name` (`lock-server`, `raft-node`),
/// next to the bench's own. Under `cargo run` (which builds only the
/// bench) it is built there first with the same cargo, profile and target
/// directory, so that it is never older than the sources (a no-op when it
/// is up to date); run directly, the bench takes the binary it finds.
///
/// # Errors
/// When it cannot be built, or is missing.
pub(crate) fn service_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let dir = exe
        .parent()
        .context("the bench binary has no directory")?
        .to_path_buf();
    let path = dir.join(name);
    if let Some(cargo) = std::env::var_os("CARGO") {
        let profile = dir
            .file_name()
            .and_then(|p| p.to_str())
            .unwrap_or("debug")
            .to_owned();
        let target = dir.parent().context("no target directory")?;
        println!("  cargo build of {name} ({profile}) next to the bench");
        let mut build = Command::new(cargo);
        build
            .args([
                "build",
                "--quiet",
                "-p",
                "rpc-services",
                "--bin",
                name,
                "--target-dir",
            ])
            .arg(target)
            .stdin(Stdio::null());
        if profile != "debug" {
            build.args(["--profile", &profile]);
        }
        let status = build
            .status()
            .with_context(|| format!("running cargo build for {name}"))?;
        ensure!(status.success(), "cargo build of {name} failed: {status}");
    }
    ensure!(
        path.exists(),
        "{} is missing: build it with `cargo build --release -p rpc-services --bin {name}`",
        path.display()
    );
    Ok(path)
}
