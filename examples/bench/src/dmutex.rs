//! The distributed mutual exclusion section (`idl/dmutex.idl`): each of
//! the five algorithms among N = 3, 5 and 9 peers, every peer a UDP server
//! on loopback, all on the client's current-thread runtime (one thread for
//! every peer). Every peer asks again as soon as it has left (the
//! contended workload of `rpc_services::dmutex::workload`, leaving at once);
//! reported: entries per second, messages per entry against the theory,
//! and the mean synchronisation delay (exit to the next entry).

use crate::measure::{watchdog, Plan};
use crate::report::us;
use rpc_services::dmutex::monitor::CsMonitor;
use rpc_services::dmutex::workload::{self, RunReport, Shape, Workload};
use rpc_services::dmutex::{start_local, Algorithm, PeerConfig};
use std::sync::Arc;
use std::time::Duration;

/// The name `--only` matches for this section (any part of it).
pub(crate) const SECTION: &str = "distributed mutex";

/// Group sizes measured.
const SIZES: [usize; 3] = [3, 5, 9];

/// Every run of the section.
#[derive(Debug, Default)]
pub(crate) struct DmutexReport {
    runs: Vec<RunReport>,
}

/// Runs the section (`None` when `--only` leaves it out).
pub(crate) async fn run(plan: &Plan) -> anyhow::Result<Option<DmutexReport>> {
    if !plan.wants(SECTION) {
        return Ok(None);
    }
    println!("distributed mutex section");
    // 100 entries per peer in the full run, 20 with --quick.
    let per_peer = u32::try_from((plan.seq_calls / 200).clamp(10, 100)).unwrap_or(100);
    let mut runs = Vec::new();
    for algorithm in Algorithm::ALL {
        for n in SIZES {
            let group = start_local(algorithm, n, PeerConfig::default()).await?;
            let w = Workload {
                entries_per_peer: per_peer,
                shape: Shape::Contended,
                hold: Duration::ZERO,
            };
            let bound = Duration::from_secs(60);
            let r = watchdog(
                &format!("{algorithm} N={n}"),
                bound,
                workload::run(&group, w, Arc::new(CsMonitor::new())),
            )
            .await;
            group.stop().await;
            let r = r??;
            anyhow::ensure!(
                r.monitor.overlaps == 0,
                "{algorithm} N={n}: two peers inside at once"
            );
            println!(
                "  measured {algorithm} N={n}: {:.0} entries/s",
                r.entries_per_second()
            );
            runs.push(r);
        }
    }
    Ok(Some(DmutexReport { runs }))
}

/// Prints the section's table.
pub(crate) fn print(report: &DmutexReport) {
    println!("\n== distributed mutual exclusion: contended, every peer a UDP server on loopback, one thread ==");
    println!(
        "  {:<16} {:>3} {:>10} {:>10} {:>26} {:>12}",
        "algorithm", "N", "entries/s", "msg/entry", "theory", "sync delay"
    );
    for r in &report.runs {
        let (formula, _) = r.algorithm.theory(r.n);
        let formula = formula.split(" (").next().unwrap_or_default().to_owned();
        println!(
            "  {:<16} {:>3} {:>10.0} {:>10.2} {:>26} {:>9.1} us",
            r.algorithm.name(),
            r.n,
            r.entries_per_second(),
            r.messages_per_entry(),
            formula,
            r.monitor.sync_delay_mean.map_or(0.0, us),
        );
    }
    println!("  (msg/entry counts the algorithm's messages, not retransmissions nor the acknowledging replies; Maekawa's theory is without contention, FAILED/INQUIRE/RELINQUISH come on top)");
}
