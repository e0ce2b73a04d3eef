//! The five distributed mutual exclusion algorithms among N = 3 and 5
//! peers: each peer a server of its own on a real UDP socket on loopback,
//! all in this test's process (so that one `CsMonitor` sees every entry
//! and exit).
//!
//! For every algorithm and N: mutual exclusion (the monitor never sees two
//! peers inside), liveness (every peer makes every one of its entries),
//! and the messages per entry against the theory, in a contended run
//! (every peer asks again at once) and a sequential one (no contention).
//! Verdicts are counts, never durations; every run has a bound (far above
//! what it needs) so that a deadlock fails instead of hanging.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use rpc_services::dmutex::monitor::CsMonitor;
use rpc_services::dmutex::workload::{self, RunReport, Shape, Workload};
use rpc_services::dmutex::{start_local, Algorithm, PeerConfig};
use std::sync::Arc;
use std::time::Duration;

const BOUND: Duration = Duration::from_secs(60);
const ENTRIES: u32 = 20;

async fn run(algorithm: Algorithm, n: usize, shape: Shape) -> RunReport {
    let group = start_local(algorithm, n, PeerConfig::default())
        .await
        .unwrap();
    let monitor = Arc::new(CsMonitor::new());
    let w = Workload {
        entries_per_peer: ENTRIES,
        shape,
        hold: Duration::ZERO,
    };
    let report = tokio::time::timeout(BOUND, workload::run(&group, w, monitor))
        .await
        .unwrap_or_else(|_| panic!("{algorithm} N={n} {shape:?}: no progress within the bound"))
        .unwrap();
    group.stop().await;
    println!(
        "{algorithm} N={n} {shape:?}: {} entries, {} messages, {:.2} per entry (theory {}), sync delay {:?}",
        report.entries,
        report.messages,
        report.messages_per_entry(),
        algorithm.theory(n).0,
        report.monitor.sync_delay_mean,
    );
    // Safety: never two inside.
    assert_eq!(
        report.monitor.overlaps, 0,
        "{algorithm} N={n} {shape:?}: overlap {:?}",
        report.monitor.first_overlap
    );
    // Liveness: every peer made every entry.
    assert_eq!(
        report.monitor.entries,
        vec![u64::from(ENTRIES); n],
        "{algorithm} N={n} {shape:?}"
    );
    assert_eq!(report.entries, u64::from(ENTRIES) * n as u64);
    report
}

/// The count matches the formula exactly.
fn exact(report: &RunReport) {
    let (formula, value) = report.algorithm.theory(report.n);
    let expected = (value.unwrap() * report.entries as f64).round() as u64;
    assert_eq!(
        report.messages, expected,
        "{} N={} {:?}: {} messages for {} entries, theory {formula}",
        report.algorithm, report.n, report.shape, report.messages, report.entries
    );
}

async fn fixed_cost(algorithm: Algorithm) {
    for n in [3, 5] {
        for shape in [Shape::Contended, Shape::Sequential] {
            exact(&run(algorithm, n, shape).await);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn central_server_excludes_serves_everyone_and_costs_3() {
    fixed_cost(Algorithm::Central).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ricart_agrawala_excludes_serves_everyone_and_costs_2_n_minus_1() {
    fixed_cost(Algorithm::RicartAgrawala).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lamport_excludes_serves_everyone_and_costs_3_n_minus_1() {
    fixed_cost(Algorithm::Lamport).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_ring_excludes_serves_everyone_at_one_pass_or_more() {
    for n in [3, 5] {
        for shape in [Shape::Contended, Shape::Sequential] {
            let r = run(Algorithm::TokenRing, n, shape).await;
            // Peer 0 starts with the token; every other entry needs the
            // token to have come at least one hop.
            assert!(
                r.messages + 1 >= r.entries,
                "ring N={n} {shape:?}: {} passes for {} entries",
                r.messages,
                r.entries
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maekawa_excludes_serves_everyone_and_costs_3_k_minus_1_without_contention() {
    for n in [3, 5] {
        exact(&run(Algorithm::Maekawa, n, Shape::Sequential).await);
        let r = run(Algorithm::Maekawa, n, Shape::Contended).await;
        // Contention adds FAILED, INQUIRE and RELINQUISH, never fewer.
        let floor = r.algorithm.theory(n).1.unwrap() * r.entries as f64;
        assert!(
            r.messages as f64 >= floor,
            "maekawa N={n}: {} messages for {} entries",
            r.messages,
            r.entries
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_asks_once_at_a_time_and_leaves_only_when_inside() {
    for algorithm in Algorithm::ALL {
        let group = start_local(algorithm, 3, PeerConfig::default())
            .await
            .unwrap();
        let peer = &group.peers()[1];
        assert!(peer.exit().await.is_err(), "{algorithm}: exit outside");
        tokio::time::timeout(BOUND, peer.enter())
            .await
            .unwrap()
            .unwrap();
        assert!(peer.enter().await.is_err(), "{algorithm}: enter twice");
        peer.exit().await.unwrap();
        assert_eq!(peer.stats().entries, 1);
        group.stop().await;
    }
}

/// Peers in separate processes do not connect at the same instant: a peer
/// may be asked before it knows the others. Here every peer serves, peers
/// 1 and 2 connect, peer 2 asks (its Maekawa voting set is {0, 2}), and
/// only then does peer 0 connect: what peer 0 answered before it was
/// connected (Maekawa's vote, queued until its links start) still
/// arrives, and peer 2 enters. For every algorithm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_asked_before_it_connects_still_answers() {
    use rpc_services::dmutex::Peer;
    for algorithm in Algorithm::ALL {
        let peers: Vec<Peer> = (0..3)
            .map(|id| Peer::new(algorithm, id, 3, PeerConfig::default()))
            .collect();
        let mut servers = Vec::new();
        for p in &peers {
            servers.push(p.serve("127.0.0.1:0").await.unwrap());
        }
        let addrs: Vec<_> = servers.iter().map(|s| s.local_addr()).collect();
        peers[1].connect(&addrs).await.unwrap();
        peers[2].connect(&addrs).await.unwrap();
        let asking = peers[2].clone();
        let entered = tokio::spawn(async move { asking.enter().await });
        // Peer 0 answers peer 2's request before it is connected (the
        // coordinator's grant, a REPLY, a permission, a vote: counted as
        // sent). The ring sends peer 0 nothing: its token starts there.
        if algorithm != Algorithm::TokenRing {
            tokio::time::timeout(BOUND, async {
                while peers[0].stats().messages == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{algorithm}: peer 0 never answered"));
        }
        peers[0].connect(&addrs).await.unwrap();
        tokio::time::timeout(BOUND, entered)
            .await
            .unwrap_or_else(|_| panic!("{algorithm}: peer 2 never entered"))
            .unwrap()
            .unwrap();
        peers[2].exit().await.unwrap();
        for p in &peers {
            p.stop();
        }
        for s in servers {
            let _ = s.shutdown(Duration::from_millis(200)).await;
        }
    }
}
