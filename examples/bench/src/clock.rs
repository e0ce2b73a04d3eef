//! The clock service's section (`idl/clock.idl`), on loopback, on the
//! client's current-thread runtime (the single layout), once per run:
//!
//! - **synchronisation error**: a process at +250 ms and +100 ppm
//!   synchronises with a reference node by Cristian/NTP
//!   (`rpc_services::clock::sync_once`, a `SyncFilter` disciplining its
//!   `TimeSource`); after every sample its corrected clock is compared with
//!   the true clock (the host's real-time clock, read just before and just
//!   after): the p50 and p99 of the estimated offset's error are set
//!   against the physical limit, half the minimum round trip (target: p99
//!   at most 3x), and the disciplined clock's own error (which includes
//!   what it is still slewing in) is shown beside them;
//! - **a Berkeley round for 8 members**: 8 nodes, the master calls
//!   `ClockNode::round` (several fan-out polls, then the adjustments in
//!   parallel); its duration is given in round trips of a unicast
//!   `GetTime` measured in the same run;
//! - **the logical-clock interceptors**: ours UDP RR with the clock
//!   interceptor carrying each clock alone (Lamport, vector, HLC: what a
//!   service that uses one clock runs) and all three together, each
//!   measured against the plain RR row in interleaved blocks
//!   ([`paired_p50`]), so that machine noise falls on both alike (target:
//!   within 10%).

use crate::measure::{latency, paired_p50, percentile, watchdog, Paired, Plan};
use crate::peers::ours::udp::{OurStyle, Ours};
use crate::report::us;
use anyhow::{anyhow, ensure};
use rpc_examples::{clock_client, serve_clock_node};
use rpc_services::clock::logical::ClockKinds;
use rpc_services::clock::time_source::Monotonic as _;
use rpc_services::clock::{sync_once, Skew, SyncFilter, SystemClock, TimeSource, TimeSourceConfig};
use rpc_services::proto::clock::v1 as pb;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The name `--only` matches for this section (any part of it).
pub(crate) const SECTION: &str = "clock service";

/// What the section measured (a part is `None` when it was not measured).
#[derive(Debug, Default)]
pub(crate) struct ClockReport {
    sync: Option<SyncResult>,
    berkeley: Option<BerkeleyResult>,
    /// Each set of clocks carried, against no interceptor, side by side.
    interceptors: Vec<(ClockKinds, Paired)>,
}

#[derive(Debug)]
struct SyncResult {
    samples: usize,
    lost: usize,
    p50: Duration,
    p99: Duration,
    /// The disciplined clock's own error (what is still being slewed in
    /// counts).
    clock_p50: Duration,
    clock_p99: Duration,
    min_round_trip: Duration,
    min_delay: Duration,
    frequency_ppm: f64,
}

#[derive(Debug)]
struct BerkeleyResult {
    members: usize,
    rounds: usize,
    p50: Duration,
    p99: Duration,
    get_time_p50: Duration,
    /// Sends in sequence, by construction (the polls, then the
    /// adjustments).
    design_round_trips: u32,
    /// Adjustments applied in the last round, of `members`.
    applied: usize,
}

/// Cristian/NTP from a skewed process to a reference node.
async fn sync_error(plan: &Plan) -> anyhow::Result<SyncResult> {
    let (_node, server) = serve_clock_node(1, {
        let t = TimeSource::system(Skew::default());
        t.set_reference();
        t
    })
    .await?;
    let client = clock_client(&server).await?;
    let truth = Arc::new(SystemClock::new());
    let me = TimeSource::new(
        truth.clone(),
        Skew::new(250, 100.0),
        TimeSourceConfig::default(),
    );
    let mut filter = SyncFilter::default();
    let timeout = Duration::from_millis(200);
    // The start: 8 samples and one step back of 250 ms, whose hold (the
    // readings stand still until the clock catches up) is waited out.
    for _ in 0..8 {
        if let Ok(s) = sync_once(&client, &me, timeout).await {
            let _ = filter.add(s);
        }
    }
    filter
        .discipline(&me)
        .ok_or_else(|| anyhow!("the reference node did not answer"))?;
    let deadline = Instant::now() + Duration::from_secs(2);
    while me.read().hold_ns > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A sync loop as a process would run it: a sample every millisecond
    // (so that the clock slews its corrections in and the frequency is
    // measured over a span), each estimate checked against the truth.
    let samples = (plan.seq_calls / 10).max(200) as usize;
    let end = Instant::now() + plan.seq_window + Duration::from_millis(samples as u64);
    let (mut est_errors, mut clock_errors, mut lost) = (Vec::new(), Vec::new(), 0);
    let (mut min_rtt, mut min_delay) = (i64::MAX, i64::MAX);
    let ns = |v: i64| Duration::from_nanos(u64::try_from(v.max(0)).unwrap_or(0));
    while est_errors.len() < samples && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let Ok(sample) = sync_once(&client, &me, timeout).await else {
            lost += 1;
            continue;
        };
        min_rtt = min_rtt.min(sample.t4 - sample.t1);
        min_delay = min_delay.min(sample.delay_ns());
        if filter.add(sample).is_err() {
            lost += 1;
            continue;
        }
        filter.discipline(&me);
        // The true offset of the physical clock lies in
        // [before - physical, after - physical].
        let before = truth.now_ns();
        let r = me.read();
        let after = truth.now_ns();
        let est = filter
            .estimate(r.physical_ns)
            .ok_or_else(|| anyhow!("no estimate"))?;
        let (lo, hi) = (before - r.physical_ns, after - r.physical_ns);
        est_errors.push(ns((lo - est.offset_ns).max(est.offset_ns - hi)));
        clock_errors.push(ns((before - r.now_ns).max(r.now_ns - after)));
    }
    ensure!(!est_errors.is_empty(), "no time sample answered");
    est_errors.sort_unstable();
    clock_errors.sort_unstable();
    Ok(SyncResult {
        samples: est_errors.len(),
        lost,
        p50: percentile(&est_errors, 50),
        p99: percentile(&est_errors, 99),
        clock_p50: percentile(&clock_errors, 50),
        clock_p99: percentile(&clock_errors, 99),
        min_round_trip: ns(min_rtt),
        min_delay: ns(min_delay),
        frequency_ppm: me.frequency_ppm(),
    })
}

/// Berkeley rounds of 8 members, timed.
async fn berkeley_round(plan: &Plan) -> anyhow::Result<BerkeleyResult> {
    const SKEWS_MS: [i64; 8] = [-300, -120, -40, 0, 30, 80, 150, 200];
    let mut nodes = Vec::new();
    for (id, ms) in (1u32..).zip(SKEWS_MS) {
        nodes.push(serve_clock_node(id, TimeSource::system(Skew::new(ms, 0.0))).await?);
    }
    let members: Vec<(u32, std::net::SocketAddr)> = nodes
        .iter()
        .map(|(n, s)| (n.status().node_id, s.local_addr()))
        .collect();
    let master_id = members.len() as u32;
    for (node, _) in &nodes {
        node.configure(&members).await?;
        // No driver runs: the master is named, not elected.
        node.bully().on_coordinator(master_id, 1);
    }
    let master = nodes
        .last()
        .map(|(n, _)| n.clone())
        .ok_or_else(|| anyhow!("no nodes"))?;
    let one = clock_client(&nodes[0].1).await?;
    let (_, get_time_p50, _) = latency(plan, || async {
        // Retransmitted if a datagram is lost (the p50 is what counts).
        one.get_time(pb::TimeRequest::default())
            .await
            .map(|_| ())
            .map_err(anyhow::Error::from)
    })
    .await?;
    let rounds = (plan.seq_calls / 100).clamp(20, 200) as usize;
    let end = Instant::now() + plan.seq_window;
    let (mut times, mut last) = (Vec::with_capacity(rounds), None);
    while times.len() < rounds && Instant::now() < end {
        let start = Instant::now();
        let report = master
            .clone()
            .round()
            .await
            .ok_or_else(|| anyhow!("the master has no group"))?;
        times.push(start.elapsed());
        last = Some(report);
    }
    let last = last.ok_or_else(|| anyhow!("no round ran"))?;
    times.sort_unstable();
    Ok(BerkeleyResult {
        members: nodes.len(),
        rounds: times.len(),
        p50: percentile(&times, 50),
        p99: percentile(&times, 99),
        get_time_p50,
        design_round_trips: last.round_trips,
        applied: last.adjustments.iter().filter(|a| a.2).count(),
    })
}

/// The section, unless `--only` leaves it out.
pub(crate) async fn run(plan: &Plan) -> anyhow::Result<Option<ClockReport>> {
    if !plan.wants(SECTION) {
        return Ok(None);
    }
    println!("clock service section");
    let bound = plan.seq_window * 4 + Duration::from_secs(5);
    let sync = watchdog("clock sync", bound, sync_error(plan)).await??;
    println!("  measured clock sync p99 {:.1} us", us(sync.p99));
    let berkeley = watchdog("berkeley", bound, berkeley_round(plan)).await??;
    println!(
        "  measured Berkeley round x8 p50 {:.1} us",
        us(berkeley.p50)
    );
    let server = tokio::runtime::Handle::current();
    let plain = Ours::start(&server, OurStyle::Rr).await?;
    let mut interceptors = Vec::new();
    for kinds in [
        ClockKinds::LAMPORT,
        ClockKinds::VECTOR,
        ClockKinds::HYBRID,
        ClockKinds::ALL,
    ] {
        let clock = Ours::start(&server, OurStyle::RrClock(kinds)).await?;
        let paired = watchdog(
            &format!("clock interceptor ({kinds})"),
            plan.seq_window * 4,
            paired_p50(&clock, &plain, plan),
        )
        .await??;
        interceptors.push((kinds, paired));
    }
    Ok(Some(ClockReport {
        sync: Some(sync),
        berkeley: Some(berkeley),
        interceptors,
    }))
}

/// The section's table and its targets.
pub(crate) fn print(report: &ClockReport) {
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!();
    println!("clock service (idl/clock.idl), UDP on 127.0.0.1, single layout");
    if let Some(s) = &report.sync {
        let limit = s.min_round_trip / 2;
        let ratio = s.p99.as_secs_f64() / limit.as_secs_f64().max(1e-9);
        println!(
            "  sync of a +250 ms, +100 ppm process with a reference node, a sample every ms, {} samples ({} lost):",
            s.samples, s.lost
        );
        println!(
            "    offset error p50 {:.1} us, p99 {:.1} us; physical limit (half the minimum round trip of {:.1} us) {:.1} us; minimum delay {:.1} us",
            us(s.p50),
            us(s.p99),
            us(s.min_round_trip),
            us(limit),
            us(s.min_delay),
        );
        println!(
            "    the disciplined clock (slewing at most 500 ppm): error p50 {:.1} us, p99 {:.1} us; frequency correction {:+.1} ppm",
            us(s.clock_p50),
            us(s.clock_p99),
            s.frequency_ppm
        );
        println!(
            "  {:<42} {ratio:>7.2}x   target {:<10} {}",
            "sync offset error p99 / physical limit",
            "<= 3",
            verdict(ratio <= 3.0)
        );
    }
    if let Some(b) = &report.berkeley {
        let rts = b.p50.as_secs_f64() / b.get_time_p50.as_secs_f64().max(1e-9);
        println!(
            "  Berkeley round, {} members ({} rounds): p50 {:.1} us, p99 {:.1} us; unicast GetTime p50 {:.1} us; {} of {} adjustments applied in the last round",
            b.members,
            b.rounds,
            us(b.p50),
            us(b.p99),
            us(b.get_time_p50),
            b.applied,
            b.members
        );
        println!(
            "  {:<42} {rts:>7.2}    (by design {} in sequence: {} fan-out polls, each member's least delayed answer kept, then the adjustments in parallel; all 8 nodes and the caller share one thread here)",
            "Berkeley round x8 / unicast GetTime",
            b.design_round_trips,
            b.design_round_trips.saturating_sub(1)
        );
    }
    for (kinds, p) in &report.interceptors {
        let ratio = p.a.as_secs_f64() / p.b.as_secs_f64().max(1e-9);
        println!(
            "  {:<42} {ratio:>7.2}x   target {:<10} {}",
            format!("clock interceptor ({kinds}): RR p50 / none"),
            "<= 1.10",
            verdict(ratio <= 1.10)
        );
        println!(
            "    interleaved in blocks of {} calls ({} calls each): p50 {:.1} us with, {:.1} us without",
            crate::measure::PAIRED_BLOCK,
            p.calls,
            us(p.a),
            us(p.b)
        );
    }
}
