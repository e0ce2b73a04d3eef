//! Distributed mutual exclusion (`idl/dmutex.idl`): the five classic
//! algorithms among three peers, each peer a server of its own on UDP in
//! this process. Each runs twice, without contention (one peer at a time)
//! and contended (every peer at once); a shared monitor checks that no
//! two peers are ever inside and that every peer enters. The table puts
//! the measured messages per entry next to the theory.

use crate::report::{Report, Row};
use rpc_services::dmutex::monitor::CsMonitor;
use rpc_services::dmutex::workload::{self, RunReport, Shape, Workload};
use rpc_services::dmutex::{start_local, Algorithm, PeerConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

const N: usize = 3;
const ENTRIES: u32 = 10;

async fn one(algorithm: Algorithm, shape: Shape) -> anyhow::Result<RunReport> {
    let group = start_local(algorithm, N, PeerConfig::default()).await?;
    let w = Workload {
        entries_per_peer: ENTRIES,
        shape,
        hold: Duration::ZERO,
    };
    let run = tokio::time::timeout(
        Duration::from_secs(30),
        workload::run(&group, w, Arc::new(CsMonitor::new())),
    )
    .await;
    group.stop().await;
    Ok(run.map_err(|_| anyhow::anyhow!("{algorithm}: no progress in 30 s"))??)
}

/// Whether a run kept mutual exclusion and let every peer in.
fn sound(r: &RunReport) -> Result<(), String> {
    if r.monitor.overlaps > 0 {
        return Err(format!(
            "{} overlaps, the first {:?}",
            r.monitor.overlaps, r.monitor.first_overlap
        ));
    }
    if r.monitor.entries != vec![u64::from(ENTRIES); N] {
        return Err(format!("entries per peer {:?}", r.monitor.entries));
    }
    Ok(())
}

/// The distributed mutual exclusion section of the tour.
pub(crate) async fn dmutex(report: &mut Report) -> anyhow::Result<()> {
    println!();
    println!(
        "dmutex: the five algorithms among N = {N} peers (dmutex.v1, one UDP server each), {ENTRIES} entries per peer"
    );
    println!(
        "  {:<16} {:<40} {:>11} {:>10} {:>12} {:>14}",
        "algorithm",
        "messages per entry (theory)",
        "one at once",
        "contended",
        "sync delay",
        "(theory)"
    );
    for algorithm in Algorithm::ALL {
        let start = Instant::now();
        let quiet = one(algorithm, Shape::Sequential).await?;
        let busy = one(algorithm, Shape::Contended).await?;
        let (formula, theory) = algorithm.theory(N);
        let sync = busy.monitor.sync_delay_mean.map_or_else(
            || "-".to_owned(),
            |d| format!("{:.0} us", d.as_secs_f64() * 1e6),
        );
        println!(
            "  {:<16} {:<40} {:>11.2} {:>10.2} {:>12} {:>14}",
            algorithm.name(),
            formula,
            quiet.messages_per_entry(),
            busy.messages_per_entry(),
            sync,
            format!("{} msg", algorithm.sync_delay_theory()),
        );
        // Without contention every count but the ring's is the formula's;
        // contended, Maekawa's may be higher (FAILED, INQUIRE,
        // RELINQUISH), the others' are the same.
        let counted = match (algorithm, theory) {
            (Algorithm::TokenRing, _) | (_, None) => quiet.messages + 1 >= quiet.entries,
            (Algorithm::Maekawa, Some(t)) => {
                quiet.messages_per_entry() == t && busy.messages_per_entry() >= t
            }
            (_, Some(t)) => quiet.messages_per_entry() == t && busy.messages_per_entry() == t,
        };
        let result = sound(&quiet).and_then(|()| sound(&busy)).and_then(|()| {
            if counted {
                Ok(format!(
                    "{} entries, never two inside; {:.2} / {:.2} messages per entry ({formula})",
                    quiet.entries + busy.entries,
                    quiet.messages_per_entry(),
                    busy.messages_per_entry()
                ))
            } else {
                Err(format!(
                    "{:.2} / {:.2} messages per entry, theory {formula}",
                    quiet.messages_per_entry(),
                    busy.messages_per_entry()
                ))
            }
        });
        report.row(Row::made(
            format!("dmutex N={N}"),
            algorithm.name(),
            "peers",
            "RRA",
            result,
            start.elapsed(),
            None,
        ));
    }
    Ok(())
}
