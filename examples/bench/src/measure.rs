//! Measuring: the plan (how long and how much), a row's sequential
//! latency and its throughput at 1, 16 and 64 calls in flight, each under a
//! watchdog; the interleaved p50 of two targets; the sequential latency of
//! a group call.

use crate::report::us;
use crate::target::{Role, Target};
use anyhow::{ensure, Context as _};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How long and how much to measure.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Sequential calls before measuring.
    pub(crate) warmup_calls: u64,
    /// Sequential calls measured (at most).
    pub(crate) seq_calls: u64,
    /// Time bound of the sequential measurement.
    pub(crate) seq_window: Duration,
    /// Calls in flight for the throughput measurements.
    pub(crate) in_flight: [usize; 3],
    /// Warm-up before each throughput measurement.
    pub(crate) tput_warmup: Duration,
    /// Time bound of each throughput measurement.
    pub(crate) tput_window: Duration,
    /// Count bound of each throughput measurement.
    pub(crate) tput_max_calls: u64,
    /// Only the rows whose name contains this (`--only`, for profiling one
    /// target); `None`: every row.
    pub(crate) only: Option<String>,
}

impl Plan {
    /// The default: about 55 s for the whole run here.
    pub(crate) fn full() -> Plan {
        Plan {
            warmup_calls: 2_000,
            seq_calls: 20_000,
            seq_window: Duration::from_secs(3),
            in_flight: [1, 16, 64],
            tput_warmup: Duration::from_millis(200),
            tput_window: Duration::from_secs(1),
            tput_max_calls: 2_000_000,
            only: None,
        }
    }

    /// Whether the row called `name` is measured in this run.
    pub(crate) fn wants(&self, name: &str) -> bool {
        self.only
            .as_deref()
            .is_none_or(|only| match only.strip_suffix('$') {
                Some(exact) => name == exact,
                None => name.contains(only),
            })
    }

    /// `--quick`: about 10 s for the whole run.
    pub(crate) fn quick() -> Plan {
        Plan {
            warmup_calls: 200,
            seq_calls: 2_000,
            seq_window: Duration::from_millis(500),
            tput_warmup: Duration::from_millis(50),
            tput_window: Duration::from_millis(200),
            ..Plan::full()
        }
    }

    /// A fixed number of calls per measurement and no time bounds worth
    /// the name (`--calls N`): the same work on every run, so that
    /// instruction counts (callgrind) compare exactly between builds.
    pub(crate) fn counted(calls: u64) -> Plan {
        Plan {
            warmup_calls: 100,
            seq_calls: calls,
            seq_window: Duration::from_secs(300),
            tput_warmup: Duration::ZERO,
            tput_window: Duration::from_secs(300),
            tput_max_calls: calls,
            ..Plan::full()
        }
    }

    /// The most calls in flight of any throughput measurement.
    pub(crate) fn most_in_flight(&self) -> usize {
        self.in_flight.iter().copied().max().unwrap_or(1)
    }
}

/// The results of one target.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) role: Role,
    pub(crate) seq_calls: u64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    /// Calls per second, per entry of `Plan::in_flight`.
    pub(crate) throughput: Vec<(usize, f64)>,
    /// The target's note after the run.
    pub(crate) note: String,
}

impl Row {
    /// A row left out by `--only` (dropped before the report).
    pub(crate) fn skipped(name: String, role: Role) -> Row {
        Row {
            name,
            role,
            seq_calls: 0,
            p50: Duration::ZERO,
            p99: Duration::ZERO,
            throughput: Vec::new(),
            note: String::new(),
        }
    }
}

/// Fails the measurement if it takes far longer than its bounds (a stall).
pub(crate) async fn watchdog<F: std::future::Future>(
    what: &str,
    bound: Duration,
    f: F,
) -> anyhow::Result<F::Output> {
    tokio::time::timeout(bound + Duration::from_secs(5), f)
        .await
        .with_context(|| format!("{what}: stalled"))
}

/// The warm-up, then sequential calls of `target` (bounded by count and
/// time): how many, p50, p99.
async fn sequential<T: Target>(
    target: &T,
    plan: &Plan,
) -> anyhow::Result<(u64, Duration, Duration)> {
    for _ in 0..plan.warmup_calls {
        target.call().await?;
    }
    CALLS_MADE.fetch_add(plan.warmup_calls, Ordering::Relaxed);
    let mut samples = Vec::with_capacity(plan.seq_calls as usize);
    let end = Instant::now() + plan.seq_window;
    while (samples.len() as u64) < plan.seq_calls && Instant::now() < end {
        let start = Instant::now();
        target.call().await?;
        samples.push(start.elapsed());
    }
    ensure!(!samples.is_empty(), "no sequential call completed");
    CALLS_MADE.fetch_add(samples.len() as u64, Ordering::Relaxed);
    samples.sort_unstable();
    Ok((
        samples.len() as u64,
        percentile(&samples, 50),
        percentile(&samples, 99),
    ))
}

/// The `q`th percentile of sorted `samples` (zero when there are none).
pub(crate) fn percentile(samples: &[Duration], q: usize) -> Duration {
    let at = (samples.len() * q / 100).min(samples.len().saturating_sub(1));
    samples.get(at).copied().unwrap_or_default()
}

/// The sequential p50 of two targets measured in interleaved blocks, so
/// that both see the same machine: on a shared host the noise changes from
/// second to second, and two rows measured a minute apart can differ by
/// 20% for that alone.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Paired {
    pub(crate) a: Duration,
    pub(crate) b: Duration,
    /// Calls measured on each side.
    pub(crate) calls: u64,
}

/// Calls in one block of [`paired_p50`].
pub(crate) const PAIRED_BLOCK: u64 = 200;

/// The sequential p50 of `a` and of `b`, measured in alternating blocks of
/// [`PAIRED_BLOCK`] calls (which side goes first alternating too).
pub(crate) async fn paired_p50<A: Target, B: Target>(
    a: &A,
    b: &B,
    plan: &Plan,
) -> anyhow::Result<Paired> {
    for _ in 0..plan.warmup_calls {
        a.call().await?;
        b.call().await?;
    }
    let now = Instant::now();
    let (sa, sb) = alternating_blocks(
        async || a.call().await,
        async || b.call().await,
        Blocks {
            size: PAIRED_BLOCK as usize,
            keep_from: now,
            end: now + plan.seq_window * 2,
            max: plan.seq_calls as usize,
        },
    )
    .await?;
    let calls = sa.len() as u64;
    CALLS_MADE.fetch_add(2 * (calls + plan.warmup_calls), Ordering::Relaxed);
    Ok(Paired {
        a: percentile(&sa, 50),
        b: percentile(&sb, 50),
        calls,
    })
}

/// How [`alternating_blocks`] runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Blocks {
    /// Calls in one block.
    pub(crate) size: usize,
    /// Blocks begun before this are a warm-up (not kept).
    pub(crate) keep_from: Instant,
    /// No block begins after this.
    pub(crate) end: Instant,
    /// No block begins once a side has this many latencies.
    pub(crate) max: usize,
}

/// The latencies of `a`'s and `b`'s calls, one after the other, in
/// alternating blocks (which side goes first alternating too), sorted: so
/// that both sides see the same machine, whose load on a shared host
/// changes from second to second.
pub(crate) async fn alternating_blocks(
    mut a: impl AsyncFnMut() -> anyhow::Result<()>,
    mut b: impl AsyncFnMut() -> anyhow::Result<()>,
    blocks: Blocks,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let (mut sa, mut sb) = (Vec::new(), Vec::new());
    let mut round = 0u64;
    loop {
        let now = Instant::now();
        if now >= blocks.end || sa.len() >= blocks.max {
            break;
        }
        let keep = now >= blocks.keep_from;
        for a_side in [round % 2 == 0, round % 2 == 1] {
            for _ in 0..blocks.size {
                let t0 = Instant::now();
                if a_side {
                    a().await?;
                } else {
                    b().await?;
                }
                if keep {
                    let took = t0.elapsed();
                    if a_side {
                        sa.push(took)
                    } else {
                        sb.push(took)
                    }
                }
            }
        }
        round += 1;
    }
    ensure!(!sa.is_empty() && !sb.is_empty(), "no block completed");
    sa.sort_unstable();
    sb.sort_unstable();
    Ok((sa, sb))
}

/// A target's cost against a baseline, both measured side by side: the
/// sequential p50 in interleaved blocks, and the calls per second at the
/// most calls in flight in alternating windows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cost {
    /// `a` the target, `b` the baseline.
    pub(crate) p50: Paired,
    /// Calls per second of the target and of the baseline.
    pub(crate) rate: (f64, f64),
}

/// Windows of each side in [`paired_rate`].
const RATE_ROUNDS: u32 = 4;

/// Calls per second of `a` and of `b`, `in_flight` calls each, measured in
/// [`RATE_ROUNDS`] alternating windows per side (which side goes first
/// alternating too), each a quarter of the plan's window after a warm-up
/// of both: as [`paired_p50`], so that both see the same machine.
pub(crate) async fn paired_rate<A: Target, B: Target>(
    a: &Arc<A>,
    b: &Arc<B>,
    in_flight: usize,
    plan: &Plan,
) -> anyhow::Result<(f64, f64)> {
    let window = plan.tput_window / RATE_ROUNDS;
    let max_calls = plan.tput_max_calls / u64::from(RATE_ROUNDS);
    throughput(a, in_flight, plan.tput_warmup, max_calls).await?;
    throughput(b, in_flight, plan.tput_warmup, max_calls).await?;
    let (mut ra, mut rb) = (0.0, 0.0);
    for round in 0..RATE_ROUNDS {
        if round % 2 == 0 {
            ra += throughput(a, in_flight, window, max_calls).await?;
            rb += throughput(b, in_flight, window, max_calls).await?;
        } else {
            rb += throughput(b, in_flight, window, max_calls).await?;
            ra += throughput(a, in_flight, window, max_calls).await?;
        }
    }
    let rounds = f64::from(RATE_ROUNDS);
    Ok((ra / rounds, rb / rounds))
}

/// [`Cost`] of `a` against `b`.
pub(crate) async fn paired_cost<A: Target, B: Target>(
    a: &Arc<A>,
    b: &Arc<B>,
    plan: &Plan,
) -> anyhow::Result<Cost> {
    let p50 = paired_p50(&**a, &**b, plan).await?;
    let rate = paired_rate(a, b, plan.most_in_flight(), plan).await?;
    Ok(Cost { p50, rate })
}

/// Runs `in_flight` client tasks, each calling one call after the other,
/// until the window closes or `max_calls` were started; returns calls per
/// second.
async fn throughput<T: Target>(
    target: &Arc<T>,
    in_flight: usize,
    window: Duration,
    max_calls: u64,
) -> anyhow::Result<f64> {
    let started = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + window;
    // Dropping the set (on an error or the watchdog) aborts the workers.
    let mut workers = JoinSet::new();
    for _ in 0..in_flight {
        let (target, started) = (target.clone(), started.clone());
        workers.spawn(async move {
            let mut done = 0u64;
            while Instant::now() < end && started.fetch_add(1, Ordering::Relaxed) < max_calls {
                target.call().await?;
                done += 1;
            }
            anyhow::Ok(done)
        });
    }
    let mut done = 0u64;
    while let Some(worker) = workers.join_next().await {
        done += worker??;
    }
    CALLS_MADE.fetch_add(done, Ordering::Relaxed);
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

/// Calls made by `throughput` and `sequential` (with warm-ups) since the
/// last row was measured: reported with each row (per-call profiles).
static CALLS_MADE: AtomicU64 = AtomicU64::new(0);

/// The row of `target`: sequential latency, then calls per second at each
/// number in flight (each after a warm-up of its own); skipped when
/// `--only` leaves it out.
pub(crate) async fn measure<T: Target>(target: T, plan: &Plan) -> anyhow::Result<Row> {
    let target = Arc::new(target);
    let name = target.name();
    if !plan.wants(&name) {
        return Ok(Row::skipped(name, target.role()));
    }
    let seq_bound = plan.seq_window * 2;
    let (seq_calls, p50, p99) = watchdog(&name, seq_bound, sequential(&*target, plan)).await??;
    let mut tput = Vec::new();
    for &n in &plan.in_flight {
        let bound = plan.tput_warmup + plan.tput_window;
        watchdog(
            &name,
            bound,
            throughput(&target, n, plan.tput_warmup, plan.tput_max_calls),
        )
        .await??;
        let rate = watchdog(
            &name,
            bound,
            throughput(&target, n, plan.tput_window, plan.tput_max_calls),
        )
        .await??;
        tput.push((n, rate));
    }
    let row = Row {
        name,
        role: target.role(),
        seq_calls,
        p50,
        p99,
        throughput: tput,
        note: target.note(),
    };
    println!(
        "  measured {:<28} p50 {:>8.1} us ({} calls)",
        row.name,
        us(row.p50),
        CALLS_MADE.swap(0, Ordering::Relaxed)
    );
    Ok(row)
}

/// Sequential latency of `call` (warm-up first), bounded by count and time.
pub(crate) async fn latency<F, Fut>(
    plan: &Plan,
    mut call: F,
) -> anyhow::Result<(usize, Duration, Duration)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let warmup = (plan.warmup_calls / 4).max(50);
    for _ in 0..warmup {
        call().await?;
    }
    let max = (plan.seq_calls / 5).max(300) as usize;
    let window = plan.seq_window / 3;
    let mut samples = Vec::with_capacity(max);
    let end = Instant::now() + window;
    while samples.len() < max && Instant::now() < end {
        let start = Instant::now();
        call().await?;
        samples.push(start.elapsed());
    }
    summary(samples, "call")
}

/// Count, p50 and p99 of `samples`, which must hold at least one `what`.
pub(crate) fn summary(
    mut samples: Vec<Duration>,
    what: &str,
) -> anyhow::Result<(usize, Duration, Duration)> {
    ensure!(!samples.is_empty(), "no {what} completed");
    samples.sort_unstable();
    Ok((
        samples.len(),
        percentile(&samples, 50),
        percentile(&samples, 99),
    ))
}
