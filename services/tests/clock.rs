//! The clock service against real `clock-node` child processes on loopback.
//!
//! "True time" is the host's real-time clock, which every process reads
//! exactly ([`SystemClock`]); skew is injected with `--clock-offset-ms`
//! and `--drift-ppm`. Verdicts are intervals that must contain the truth
//! (they hold however loaded the machine is: load only widens them) and
//! stated tolerances; every wait ends on an event (a status that changes),
//! polled every 10 ms, and is bounded by [`HANG`], which only stops a hang
//! and never judges speed.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use rpc_core::client::UdpChannel;
use rpc_core::{Client, Metadata};
use rpc_services::clock::logical::{Causality, Hlc, VectorClock, HLC_KEY, LAMPORT_KEY, VECTOR_KEY};
use rpc_services::clock::time_source::Monotonic as _;
use rpc_services::clock::{
    sync_once, Estimate, Skew, SyncFilter, SystemClock, TimeSource, TimeSourceConfig,
};
use rpc_services::proto::clock::v1 as pb;
use rpc_testkit::{Cluster, NodeBuilder};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MS: i64 = 1_000_000;

/// The bound of every wait for an event or a convergence: it only stops a
/// hang, and never judges speed (a loaded 2-core machine may be slow).
const HANG: Duration = Duration::from_secs(30);

fn node(name: &str, id: u32, offset_ms: i64, drift_ppm: f64, extra: &[&str]) -> NodeBuilder {
    NodeBuilder::new(name, env!("CARGO_BIN_EXE_clock-node"))
        .args(["--listen", "{addr}", "--id"])
        .arg(id.to_string())
        .arg(format!("--clock-offset-ms={offset_ms}"))
        .arg(format!("--drift-ppm={drift_ppm}"))
        .args(extra.iter().copied())
        .env("RUST_LOG", "info")
        .start_timeout(Duration::from_secs(20))
}

/// Names the nodes' log files in the output of a failing test (the
/// cluster keeps its directory then): made once the nodes are started, it
/// prints them while the test panics, whatever failed (an assertion, an
/// `unwrap`, a wait that hit [`HANG`]).
struct LogsOnFailure(String);

impl LogsOnFailure {
    fn new(cluster: &Cluster) -> LogsOnFailure {
        let logs: Vec<String> = cluster
            .nodes()
            .iter()
            .map(|n| format!("  {}: {}", n.name(), n.logs()))
            .collect();
        LogsOnFailure(logs.join("\n"))
    }
}

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            println!("test failed; the nodes' logs (kept):\n{}", self.0);
        }
    }
}

async fn clock_client(addr: SocketAddr) -> pb::ClockClient {
    pb::ClockClient::new(Client::new(UdpChannel::connect(addr).await.unwrap()))
}

/// Polls `check` every 10 ms until it gives `Some`, at most `limit`.
async fn wait_for<T, F, Fut>(limit: Duration, check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    rpc_testkit::poll_until(limit, Duration::from_millis(10), check).await
}

/// The offset of `server`'s clock from the true clock (this process's
/// unskewed clock): the minimum-delay estimate of 8 samples. Its error is
/// the measurement's own (half the delay, plus drift): the server's claim
/// about its distance from its reference is left out, since what is
/// measured is its clock as it is.
async fn measure(server: &pb::ClockClient) -> Estimate {
    let truth = TimeSource::system(Skew::default());
    let mut f = SyncFilter::default();
    let mut ok = 0;
    for _ in 0..40 {
        if let Ok(mut s) = sync_once(server, &truth, Duration::from_millis(200)).await {
            s.server_error_ns = 0;
            if f.add(s).is_ok() {
                ok += 1;
            }
        }
        if ok == 8 {
            break;
        }
    }
    f.estimate(truth.physical_ns()).unwrap()
}

/// A process at +250 ms and +100 ppm (this one) synchronises with a
/// reference `clock-node`. Over 1,000 samples: the true offset is inside
/// every reported interval, the corrected clock is inside its own error
/// bound of true time every time, within 1 ms of it at p99, and never goes
/// backwards.
#[tokio::test(flavor = "current_thread")]
async fn cristian_sync_of_a_skewed_process_with_a_reference_node() {
    let mut cluster = Cluster::new().unwrap();
    let reference = cluster
        .start(node("reference", 1, 0, 0.0, &["--reference"]))
        .unwrap()
        .addr();
    let _logs = LogsOnFailure::new(&cluster);
    let server = clock_client(reference).await;
    let truth = Arc::new(SystemClock::new());
    let me = TimeSource::new(
        truth.clone(),
        Skew::new(250, 100.0),
        TimeSourceConfig::default(),
    );
    let mut filter = SyncFilter::default();
    // The start: a few samples, one step (back 250 ms: readings hold until
    // the corrected clock catches up, at most 250 ms).
    for _ in 0..8 {
        if let Ok(s) = sync_once(&server, &me, Duration::from_millis(200)).await {
            let _ = filter.add(s);
        }
    }
    filter.discipline(&me).unwrap();
    let caught_up = wait_for(HANG, || async { (me.read().hold_ns == 0).then_some(()) }).await;
    assert!(
        caught_up.is_some(),
        "the hold after the step did not end within {HANG:?}"
    );

    let started = Instant::now();
    let (mut errors, mut delays, mut failed) = (Vec::new(), Vec::new(), 0);
    let mut last = me.now_ns();
    // 1,000 answered samples; a lost one is retried, 2,000 attempts at most.
    const SAMPLES: usize = 1_000;
    const ATTEMPTS: usize = 2_000;
    let mut attempts = 0;
    while errors.len() < SAMPLES && attempts < ATTEMPTS {
        attempts += 1;
        let i = errors.len();
        let sample = match sync_once(&server, &me, Duration::from_millis(200)).await {
            Ok(s) => s,
            Err(_) => {
                failed += 1;
                continue;
            }
        };
        delays.push(sample.delay_ns());
        filter.add(sample).unwrap();
        filter.discipline(&me);
        // The truth, read around the clock's reading.
        let before = truth.now_ns();
        let r = me.read();
        let after = truth.now_ns();
        let est = filter.estimate(r.physical_ns).unwrap();
        let (lo, hi) = est.interval();
        // The true offset lies in [before - phys, after - phys].
        assert!(
            lo <= after - r.physical_ns && before - r.physical_ns <= hi,
            "sample {i}: true offset [{}, {}] not in {:?}",
            before - r.physical_ns,
            after - r.physical_ns,
            est.interval()
        );
        let bound = i64::try_from(me.error_bound_ns()).unwrap();
        let err = if r.now_ns < before {
            before - r.now_ns
        } else if r.now_ns > after {
            r.now_ns - after
        } else {
            0
        };
        assert!(
            err <= bound,
            "sample {i}: corrected clock {err} ns off, bound {bound}"
        );
        assert!(r.now_ns >= last, "sample {i}: went backwards");
        last = r.now_ns;
        errors.push(err);
    }
    errors.sort_unstable();
    delays.sort_unstable();
    let p = |v: &[i64], q: usize| v[(v.len() * q / 100).min(v.len() - 1)];
    println!(
        "cristian: {} samples ({failed} lost) in {:?}; error p50 {} us p99 {} us; delay min {} us p50 {} us p99 {} us; frequency {:?} ppm",
        errors.len(),
        started.elapsed(),
        p(&errors, 50) / 1_000,
        p(&errors, 99) / 1_000,
        delays[0] / 1_000,
        p(&delays, 50) / 1_000,
        p(&delays, 99) / 1_000,
        filter.frequency_ppm(100 * MS),
    );
    assert_eq!(
        errors.len(),
        SAMPLES,
        "{failed} of {attempts} attempts lost: fewer than {SAMPLES} samples answered"
    );
    assert!(p(&errors, 99) <= MS, "p99 error {} ns", p(&errors, 99));
    cluster.passed();
}

async fn status(c: &pb::ClockClient) -> Option<pb::NodeStatus> {
    c.status(pb::Empty {})
        .retries(1)
        .timeout(Duration::from_millis(300))
        .await
        .ok()
}

/// Whether every offset is within 2 ms (the tolerance) of their
/// mean, each measured within its own error: `Ok((mean, spread))`, the
/// spread being the largest offset less the smallest.
fn converged(offsets: &[(u32, Estimate)]) -> Result<(i64, i64), String> {
    let mean = offsets.iter().map(|(_, e)| e.offset_ns).sum::<i64>() / offsets.len() as i64;
    for (id, e) in offsets {
        let off = (e.offset_ns - mean).abs();
        if off > 2 * MS + i64::try_from(e.error_ns).unwrap_or(i64::MAX) {
            return Err(format!(
                "node {id} is {off} ns from the mean (error {} ns); offsets {}",
                e.error_ns,
                describe(offsets)
            ));
        }
    }
    let max = offsets.iter().map(|(_, e)| e.offset_ns).max().unwrap_or(0);
    let min = offsets.iter().map(|(_, e)| e.offset_ns).min().unwrap_or(0);
    Ok((mean, max - min))
}

/// `n1 -85.012 ms +- 0.040`, ...
fn describe(offsets: &[(u32, Estimate)]) -> String {
    offsets
        .iter()
        .map(|(id, e)| {
            format!(
                "n{id} {:+.3} ms +- {:.3}",
                e.offset_ns as f64 / 1e6,
                e.error_ns as f64 / 1e6
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The Berkeley skews of the issue, `(id, ms)`: id 2 is the +5000 ms
/// member, id 5 (the highest, so the first master) is at +80 ms.
const SKEWS: [(u32, i64); 5] = [(1, -300), (2, 5_000), (3, -120), (4, 0), (5, 80)];
/// The members within range of the median.
const IN_RANGE: [u32; 4] = [1, 3, 4, 5];

/// Starts the nodes of [`SKEWS`] with `extra` arguments, tells each the
/// group, and returns the cluster with a client per node (in id order).
async fn berkeley_group(extra: &[&str]) -> (Cluster, Vec<(u32, pb::ClockClient)>) {
    let mut cluster = Cluster::new().unwrap();
    let mut members = Vec::new();
    for &(id, ms) in &SKEWS {
        let addr = cluster
            .start(node(&format!("n{id}"), id, ms, 0.0, extra))
            .unwrap()
            .addr();
        members.push((id, addr));
    }
    let mut clients = Vec::new();
    for &(id, addr) in &members {
        clients.push((id, clock_client(addr).await));
    }
    let membership = pb::Membership {
        members: members
            .iter()
            .map(|&(id, a)| pb::Member {
                id,
                addr: a.to_string(),
            })
            .collect(),
    };
    for (_, c) in &clients {
        c.configure(membership.clone()).await.unwrap();
    }
    (cluster, clients)
}

/// Measures each in-range member once.
async fn measure_in_range(clients: &[(u32, pb::ClockClient)]) -> Vec<(u32, Estimate)> {
    let mut offsets = Vec::new();
    for (id, c) in clients {
        if IN_RANGE.contains(id) {
            offsets.push((*id, measure(c).await));
        }
    }
    offsets
}

/// Berkeley with skews {-300, +5000, -120, 0, +80} ms on ids 1..5, rounds
/// only on request (`--round-interval-ms=0`): once every node follows
/// master 5, the test asks it for ONE round (`RunRound`, 4 polls of each
/// member, the least delayed used). Every member applied that round and no
/// other; its adjustment was a step (the first synchronisation), so once
/// the readings' hold after a backward step is over it is fully in effect.
/// Then each in-range member is measured once: all four are within 2 ms
/// (plus each measurement's own error) of their mean, which is the mean
/// of their starting offsets, -85 ms; the +5000 ms member was excluded
/// and reported (and still corrected: its clock is wrong, not its answer).
#[tokio::test(flavor = "current_thread")]
async fn berkeley_one_round_brings_the_members_in_range_within_2_ms() {
    let (cluster, clients) =
        berkeley_group(&["--round-interval-ms=0", "--master-timeout-ms=600"]).await;
    let _logs = LogsOnFailure::new(&cluster);
    // Every node follows 5, and no round has run.
    let agreed = wait_for(HANG, || async {
        for (_, c) in &clients {
            let s = status(c).await?;
            if s.coordinator != 5 {
                return None;
            }
            assert_eq!(s.last_round, 0, "a round ran unasked: {s:?}");
        }
        Some(())
    })
    .await;
    assert!(agreed.is_some(), "no agreement on master 5 within {HANG:?}");

    let summary = clients[4]
        .1
        .run_round(pb::Empty {})
        .await
        .unwrap_or_else(|e| panic!("RunRound on master 5: {e}"));
    println!("one round: {summary:?}");
    assert_eq!(summary.master_id, 5);
    assert_eq!(summary.members.len(), 5, "{summary:?}");
    for m in &summary.members {
        assert!(
            m.applied,
            "node {} did not apply the round: {summary:?}",
            m.id
        );
    }
    let outlier = summary.members.iter().find(|m| m.id == 2).unwrap();
    assert!(
        outlier.excluded.starts_with("outlier"),
        "the +5000 ms member was not reported as an outlier: {outlier:?}"
    );
    // +5000 ms against the master's +80 ms, within half the delay of the
    // poll used (and 0.1 ms for the readings around it).
    let seen = outlier.offset_ns.unwrap();
    let half = outlier.delay_ns.unwrap() / 2;
    assert!((seen - 4_920 * MS).abs() <= half + MS / 10, "{outlier:?}");
    for m in summary.members.iter().filter(|m| m.id != 2) {
        assert!(m.excluded.is_empty(), "{summary:?}");
    }

    // Applied everywhere, as a step; the in-range members' holds over.
    let settled = wait_for(HANG, || async {
        let mut all = Vec::new();
        for (id, c) in &clients {
            let s = status(c).await?;
            if IN_RANGE.contains(id) && s.hold_ns > 0 {
                return None;
            }
            all.push(s);
        }
        Some(all)
    })
    .await
    .unwrap_or_else(|| panic!("the in-range members still hold after {HANG:?}"));
    for s in &settled {
        assert_eq!(
            (s.last_round, s.last_round_master),
            (summary.round, 5),
            "node {} applied another round: {s:?}",
            s.node_id
        );
        assert!(s.synchronised, "{s:?}");
        assert_eq!(s.slew_remaining_ns, 0, "not a step: {s:?}");
    }

    let offsets = measure_in_range(&clients).await;
    // Still that one round everywhere: the measurement is of it.
    for (_, c) in &clients {
        let s = status(c).await.unwrap();
        assert_eq!(s.last_round, summary.round, "another round ran: {s:?}");
    }
    let (mean, spread) = converged(&offsets).unwrap_or_else(|why| panic!("after one round: {why}"));
    let delays: Vec<String> = summary
        .members
        .iter()
        .filter_map(|m| Some(format!("n{} {} us", m.id, m.delay_ns? / 1_000)))
        .collect();
    println!(
        "after one round: {}; spread {:.3} ms, mean {:+.3} ms; poll delays used {}",
        describe(&offsets),
        spread as f64 / 1e6,
        mean as f64 / 1e6,
        delays.join(", ")
    );
    // They met at the mean of their starting offsets, (-300-120+0+80)/4.
    assert!(
        (mean + 85 * MS).abs() <= 3 * MS,
        "mean {mean} ns, expected -85 ms"
    );
    let master = status(&clients[4].1).await.unwrap();
    assert!(
        master.excluded.contains(&2),
        "the +5000 ms member was not reported excluded: {master:?}"
    );
    cluster.passed();
}

/// The ring the master-killed tests run: ids 1..5.
const GROUP: u64 = 5;

/// What the election after the master's death cost, as the live members
/// reported it.
#[derive(Debug)]
struct Replacement {
    /// From the SIGKILL until every live member followed the new master.
    took: Duration,
    /// Election messages the live members sent in that election.
    messages: u64,
    /// Elections the live members started in it.
    started: u64,
}

/// Berkeley with skews {-300, +5000, -120, 0, +80} ms on ids 1..5, every
/// node electing by `election` (`bully` or `ring`), rounds every 200 ms:
/// id 5 masters; once its rounds have reached everyone, the four in range
/// are measured once (no waiting for later rounds to converge them: after
/// a member's first adjustment, a step, later rounds only slew, at most
/// 500 ppm, so what is measured is what the first round did) and are within
/// 2 ms of their mean; the +5000 ms member is excluded and reported. Then
/// the master is SIGKILLed: id 4 is elected (the time it took is reported,
/// not judged) and its rounds converge the live members again.
async fn berkeley_round_then_master_killed(election: &str) -> Replacement {
    let election_arg = format!("--election={election}");
    let (mut cluster, clients) = berkeley_group(&[
        "--round-interval-ms=200",
        "--master-timeout-ms=600",
        &election_arg,
    ])
    .await;
    let _logs = LogsOnFailure::new(&cluster);
    // A round under master 5 applied everywhere; the in-range members'
    // backward steps over (their readings hold until then).
    let settled = wait_for(HANG, || async {
        for (id, c) in &clients {
            let s = status(c).await?;
            let holding = IN_RANGE.contains(id) && s.hold_ns > 0;
            if s.last_round == 0 || s.last_round_master != 5 || holding {
                return None;
            }
        }
        Some(())
    })
    .await;
    assert!(
        settled.is_some(),
        "no round of master 5 settled everywhere within {HANG:?}"
    );
    let master = status(&clients[4].1).await.unwrap();
    assert!(
        master.excluded.contains(&2),
        "the +5000 ms member was not excluded: {master:?}"
    );
    let offsets = measure_in_range(&clients).await;
    let (mean, spread) = converged(&offsets).unwrap_or_else(|why| panic!("under master 5: {why}"));
    println!(
        "under master 5: {}; spread {:.3} ms",
        describe(&offsets),
        spread as f64 / 1e6
    );
    // They met at the mean of their starting offsets, (-300-120+0+80)/4.
    assert!(
        (mean + 85 * MS).abs() <= 3 * MS,
        "mean {mean} ns, expected -85 ms"
    );

    // SIGKILL the master.
    let last_round = status(&clients[3].1).await.unwrap().last_round;
    let (mut messages_before, mut started_before) = (0, 0);
    for (_, c) in &clients[..4] {
        let s = status(c).await.unwrap();
        messages_before += s.election_messages_sent;
        started_before += s.elections_started;
    }
    cluster.node_mut("n5").unwrap().kill().unwrap();
    let killed = Instant::now();
    let live = &clients[..4];
    // The "within 3 s" is reported (`took` below), not judged: a
    // loaded machine may take longer; the bound only stops a hang.
    let elected = wait_for(HANG, || async {
        for (_, c) in live {
            let s = status(c).await?;
            if s.coordinator != 4 {
                return None;
            }
        }
        Some(killed.elapsed())
    })
    .await;
    let Some(took) = elected else {
        panic!("no agreement on master 4 within {HANG:?} of the kill");
    };
    // The next round under 4 (in a later round id) applied by every live member.
    let next = wait_for(HANG, || async {
        for (_, c) in live {
            let s = status(c).await?;
            if s.last_round_master != 4 || s.last_round <= last_round {
                return None;
            }
        }
        Some(())
    })
    .await;
    assert!(
        next.is_some(),
        "no round under master 4 reached every live member"
    );
    let (mut messages, mut started) = (0, 0);
    for (_, c) in live {
        let s = status(c).await.unwrap();
        messages += s.election_messages_sent;
        started += s.elections_started;
    }
    let replacement = Replacement {
        took,
        messages: messages - messages_before,
        started: started - started_before,
    };
    // Measured until converged (bounded by HANG): the members adjusted by
    // 4 slew (they were synchronised under 5), so a round of 4 whose poll
    // was delayed takes its successors' slewing to be corrected.
    let until = Instant::now() + HANG;
    let mut measurements = 0;
    loop {
        let offsets = measure_in_range(live).await;
        measurements += 1;
        match converged(&offsets) {
            Ok(_) => break,
            Err(why) if Instant::now() >= until => {
                panic!("not converged under master 4 after {measurements} measurements: {why}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    cluster.passed();
    replacement
}

impl Replacement {
    /// Prints what the election cost; the time is reported, not judged (a
    /// loaded machine may take longer than the 3 s).
    fn report(&self, election: &str) {
        println!(
            "{election}: master killed: 4 elected everywhere after {:?} (reported, not judged); \
             {} election messages, {} elections started",
            self.took, self.messages, self.started
        );
    }
}

/// The master-killed scenario under bully: the lowest live node noticing
/// first is bully's worst case, O(n^2) messages; asserted: at most 2n^2.
#[tokio::test(flavor = "current_thread")]
async fn berkeley_round_then_master_killed_and_replaced() {
    let r = berkeley_round_then_master_killed("bully").await;
    r.report("bully");
    assert!(r.started >= 1, "{r:?}");
    assert!(r.messages <= 2 * GROUP * GROUP, "{r:?}");
}

/// The master-killed scenario under ring. One election in a ring of n = 5
/// (the dead master still in it) is one ELECTION circulation and one
/// COORDINATOR circulation of n passes each: each of the n - 1 live nodes
/// passes once, and the one before the dead node also tries it (a pass
/// sent, that fails); the COORDINATOR costs one fewer when the initiator
/// is the winner's next live successor (it hands it to itself). Each other
/// node that noticed the death at the same time starts a token that is
/// dropped within n passes (Chang-Roberts: every token waits out a pass
/// timeout at the dead master before any COORDINATOR exists, so the lower
/// ones are dropped first). Asserted, for k elections started:
/// 2n - 1 <= messages <= 2n + (k - 1)n.
#[tokio::test(flavor = "current_thread")]
async fn berkeley_round_then_master_killed_and_replaced_by_ring() {
    let r = berkeley_round_then_master_killed("ring").await;
    r.report("ring");
    assert!(r.started >= 1, "{r:?}");
    let most = 2 * GROUP + (r.started - 1) * GROUP;
    assert!(
        (2 * GROUP - 1..=most).contains(&r.messages),
        "{r:?}: expected 2n - 1 = {} to 2n + (k - 1)n = {most} messages",
        2 * GROUP - 1
    );
}

/// Members answering with timestamps that cannot be true (20 years ahead;
/// a server time longer than the round trip, i.e. a negative delay) are
/// excluded by the master, counted in its status, never averaged in and
/// never adjusted.
#[tokio::test(flavor = "current_thread")]
async fn absurd_members_are_excluded_and_counted() {
    let mut cluster = Cluster::new().unwrap();
    let timing = ["--round-interval-ms=100", "--master-timeout-ms=600"];
    let mut members = Vec::new();
    for (id, fault) in [(1, "years-off"), (2, "negative-delay"), (3, "")] {
        let mut extra = timing.to_vec();
        let flag = format!("--misbehave={fault}");
        if !fault.is_empty() {
            extra.push(&flag);
        }
        let addr = cluster
            .start(node(&format!("n{id}"), id, 0, 0.0, &extra))
            .unwrap()
            .addr();
        members.push((id, addr));
    }
    let _logs = LogsOnFailure::new(&cluster);
    let mut clients = Vec::new();
    for &(id, addr) in &members {
        clients.push((id, clock_client(addr).await));
    }
    let membership = pb::Membership {
        members: members
            .iter()
            .map(|&(id, a)| pb::Member {
                id,
                addr: a.to_string(),
            })
            .collect(),
    };
    for (_, c) in &clients {
        c.configure(membership.clone()).await.unwrap();
    }
    // Two rounds of master 3 (each excludes both).
    let master = wait_for(HANG, || async {
        let s = status(&clients[2].1).await?;
        (s.coordinator == 3 && s.absurd_readings >= 4).then_some(s)
    })
    .await
    .unwrap_or_else(|| panic!("master 3 ran no two rounds within {HANG:?}"));
    assert!(
        master.excluded.contains(&1) && master.excluded.contains(&2),
        "{master:?}"
    );
    assert!(master.last_round > 0 && master.last_round_master == 3);
    for (id, c) in &clients[..2] {
        let s = status(c).await.unwrap();
        assert_eq!(s.coordinator, 3, "node {id}: {s:?}");
        assert_eq!(s.last_round, 0, "node {id} was adjusted: {s:?}");
        assert_eq!(s.absurd_readings, 0, "node {id}: {s:?}");
    }
    println!(
        "absurd members: master 3 excluded {:?}, {} absurd readings counted",
        master.excluded, master.absurd_readings
    );
    cluster.passed();
}

/// `clock-node --tcp --grpc` serves the same clock on every door: each
/// takes Cristian samples whose interval contains the node's injected
/// offset (40 ms, no drift: its exact distance from the true clock; the
/// node claims to be a reference, error bound 0, so the interval is only
/// half the delay wide).
#[tokio::test(flavor = "current_thread")]
async fn get_time_on_every_door() {
    use rpc_core::client::TcpChannel;
    use rpc_core::grpc::client::GrpcChannel;
    use rpc_testkit::Output;
    let mut cluster = Cluster::new().unwrap();
    let udp = cluster
        .start(node(
            "doors",
            1,
            40,
            0.0,
            &[
                "--reference",
                "--tcp",
                "127.0.0.1:0",
                "--grpc",
                "127.0.0.1:0",
            ],
        ))
        .unwrap()
        .addr();
    let _logs = LogsOnFailure::new(&cluster);
    let mut door = |name: &str| -> SocketAddr {
        let mark = format!(" {name} on ");
        let line = cluster
            .node_mut("doors")
            .unwrap()
            .wait_for_line(Output::Stdout, HANG, |l| l.contains(&mark))
            .unwrap();
        line.rsplit(' ').next().unwrap().trim().parse().unwrap()
    };
    let (tcp, grpc) = (door("tcp"), door("grpc"));
    let clients = [
        ("udp", clock_client(udp).await),
        (
            "tcp",
            pb::ClockClient::new(Client::new(TcpChannel::connect(tcp).await.unwrap())),
        ),
        (
            "grpc",
            pb::ClockClient::new(Client::new(
                GrpcChannel::connect(&format!("http://{grpc}"))
                    .await
                    .unwrap(),
            )),
        ),
    ];
    for (name, client) in &clients {
        let reading = client
            .get_time(pb::TimeRequest {
                client_transmit_ns: 17,
            })
            .retries(0)
            .await
            .unwrap();
        assert_eq!(
            (reading.origin_ns, reading.node_id),
            (17, 1),
            "{name}: {reading:?}"
        );
        assert!(reading.receive_ns <= reading.transmit_ns, "{name}");
        let est = measure(client).await;
        assert!(
            est.contains(40 * MS),
            "{name}: 40 ms not in {:?}",
            est.interval()
        );
        println!(
            "{name}: offset {} us +- {} us",
            est.offset_ns / 1_000,
            est.error_ns / 1_000
        );
    }
    cluster.passed();
}

/// One event at a node, as the test saw it: the clocks the node stamped on
/// its answer.
struct Event {
    node: usize,
    lamport: u64,
    vector: VectorClock,
}

/// The clocks stamped on an answer (the three keys, forwarded as they are).
fn clock_metadata(md: &Metadata) -> Metadata {
    [LAMPORT_KEY, VECTOR_KEY, HLC_KEY]
        .iter()
        .filter_map(|k| Some(((*k).to_owned(), md.get(k)?.to_owned())))
        .collect()
}

/// 1,000 messages among 3 `clock-node` processes (not in a group, so that
/// they exchange nothing by themselves), carried by the test: a send is a
/// call to the sender whose answer's clocks the test keeps, a receive a
/// call to the receiver carrying them (its interceptor merges them before
/// the handler, then stamps the answer). The test records every answer as
/// an event, and the true happens-before (process order and messages).
/// Lamport timestamps respect it, vector clocks classify every pair of
/// events exactly, and every HLC is within the maximum offset (1 s) of the
/// true clock.
#[tokio::test(flavor = "current_thread")]
async fn logical_clocks_over_1000_messages_among_3_processes() {
    use rand::{Rng, SeedableRng};
    const NODES: usize = 3;
    const MAX_OFFSET: i64 = 1_000_000_000;
    let mut cluster = Cluster::new().unwrap();
    let mut clients = Vec::new();
    for (i, offset_ms) in [(0u32, -20), (1, 0), (2, 30)] {
        let addr = cluster
            .start(node(&format!("p{}", i + 1), i + 1, offset_ms, 0.0, &[]))
            .unwrap()
            .addr();
        clients.push(clock_client(addr).await);
    }
    let _logs = LogsOnFailure::new(&cluster);
    let truth = SystemClock::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1_000);
    let mut events: Vec<Event> = Vec::new();
    let mut preds: Vec<Vec<usize>> = Vec::new();
    let mut last: [Option<usize>; NODES] = [None; NODES];
    let mut in_flight: Vec<(usize, Metadata, usize)> = Vec::new();
    let (mut sent, mut calls) = (0, 0);
    // One event at `node`: a call carrying `md` (a receive) or nothing.
    while sent < 1_000 || !in_flight.is_empty() {
        calls += 1;
        assert!(calls < 10_000, "the schedule does not end");
        let action = rng.random_range(0..3);
        let (node, carried, from) = if action == 1 && !in_flight.is_empty() {
            let (to, md, e) = in_flight.swap_remove(rng.random_range(0..in_flight.len()));
            (to, md, Some(e))
        } else {
            (rng.random_range(0..NODES), Metadata::new(), None)
        };
        let mut call = clients[node].get_time(pb::TimeRequest::default());
        for (k, v) in carried {
            call = call.metadata(k, v);
        }
        let before = truth.now_ns();
        let (_, answer) = call.with_metadata().await.unwrap();
        let after = truth.now_ns();
        let hlc: Hlc = answer[HLC_KEY].parse().unwrap();
        assert!(
            hlc.l >= before - MAX_OFFSET && hlc.l <= after + MAX_OFFSET,
            "hlc {hlc} vs true [{before}, {after}]"
        );
        events.push(Event {
            node,
            lamport: answer[LAMPORT_KEY].parse().unwrap(),
            vector: answer[VECTOR_KEY].parse().unwrap(),
        });
        let e = events.len() - 1;
        preds.push(last[node].into_iter().chain(from).collect());
        last[node] = Some(e);
        if action == 0 && sent < 1_000 {
            let to = (node + rng.random_range(1..NODES)) % NODES;
            in_flight.push((to, clock_metadata(&answer), e));
            sent += 1;
        }
    }
    // Transitive closure of happens-before as bitsets (events are recorded
    // in an order where predecessors come first).
    let n = events.len();
    let words = n.div_ceil(64);
    let mut before = vec![vec![0u64; words]; n];
    for (e, ps) in preds.iter().enumerate() {
        for &p in ps {
            let (lo, hi) = before.split_at_mut(e);
            for (w, pw) in hi[0].iter_mut().zip(&lo[p]) {
                *w |= pw;
            }
            hi[0][p / 64] |= 1 << (p % 64);
        }
    }
    let hb = |a: usize, b: usize| before[b][a / 64] & (1 << (a % 64)) != 0;
    // The library's `compare` on every ordered pair of events.
    let mut concurrent = 0u64;
    for a in 0..n {
        for b in 0..n {
            if a == b {
                continue;
            }
            let expected = if hb(a, b) {
                assert!(events[a].lamport < events[b].lamport, "Lamport: {a} -> {b}");
                Causality::Before
            } else if hb(b, a) {
                Causality::After
            } else {
                concurrent += 1;
                Causality::Concurrent
            };
            assert_eq!(
                events[a].vector.compare(&events[b].vector),
                expected,
                "events {a} ({}), {b} ({})",
                events[a].vector,
                events[b].vector
            );
        }
    }
    let per_node: Vec<usize> = (0..NODES)
        .map(|i| events.iter().filter(|e| e.node == i).count())
        .collect();
    println!(
        "3 processes: {sent} messages, {n} events {per_node:?}, {} ordered pairs concurrent",
        concurrent
    );
    assert!(concurrent > 0, "no concurrent events: the check is vacuous");
    cluster.passed();
}
