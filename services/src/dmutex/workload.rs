//! Drives a [`LocalGroup`]: every peer enters the critical section a given
//! number of times, its entries and exits reported to a [`CsMonitor`];
//! the result has the messages per entry and the synchronisation delay.
//!
//! Two shapes: *contended* (every peer asks again as soon as it has left,
//! all at once) and *sequential* (one peer at a time, round-robin: no
//! contention, so that Maekawa's count is its fault-free 3(K-1)).

use super::monitor::{CsMonitor, MonitorReport};
use super::{Algorithm, DmutexError, LocalGroup, Peer};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How peers ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Every peer at once, asking again as soon as it has left.
    Contended,
    /// One peer at a time, in id order, round after round.
    Sequential,
}

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// Entries of each peer.
    pub entries_per_peer: u32,
    /// How peers ask.
    pub shape: Shape,
    /// Time spent inside (zero: leave at once).
    pub hold: Duration,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Peers.
    pub n: usize,
    /// How peers asked.
    pub shape: Shape,
    /// Messages of the algorithm sent during the run, by every peer.
    pub messages: u64,
    /// Entries counted by the peers.
    pub entries: u64,
    /// What the monitor saw (overlaps, entries per peer, delays).
    pub monitor: MonitorReport,
    /// How long the run took.
    pub elapsed: Duration,
}

impl RunReport {
    /// Messages per entry.
    pub fn messages_per_entry(&self) -> f64 {
        if self.entries == 0 {
            return 0.0;
        }
        self.messages as f64 / self.entries as f64
    }

    /// Entries per second.
    pub fn entries_per_second(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.entries as f64 / s
        } else {
            0.0
        }
    }
}

async fn one_entry(peer: &Peer, monitor: &CsMonitor, hold: Duration) -> Result<(), DmutexError> {
    let asked = Instant::now();
    peer.enter().await?;
    monitor.enter(peer.id(), asked);
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
    monitor.exit(peer.id());
    peer.exit().await
}

/// Runs `workload` on `group`, reporting to `monitor`.
///
/// # Errors
/// The first peer's error (the others' entries then stop at their next
/// one).
pub async fn run(
    group: &LocalGroup,
    workload: Workload,
    monitor: Arc<CsMonitor>,
) -> Result<RunReport, DmutexError> {
    let before = group.totals();
    let start = Instant::now();
    match workload.shape {
        Shape::Sequential => {
            for _ in 0..workload.entries_per_peer {
                for peer in group.peers() {
                    one_entry(peer, &monitor, workload.hold).await?;
                }
            }
        }
        Shape::Contended => {
            let mut tasks = JoinSet::new();
            for peer in group.peers() {
                let (peer, monitor) = (peer.clone(), monitor.clone());
                tasks.spawn(async move {
                    for _ in 0..workload.entries_per_peer {
                        one_entry(&peer, &monitor, workload.hold).await?;
                    }
                    Ok::<(), DmutexError>(())
                });
            }
            let mut first = None;
            while let Some(done) = tasks.join_next().await {
                match done {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        first.get_or_insert(e);
                        tasks.abort_all();
                    }
                    Err(e) if e.is_cancelled() => {}
                    Err(e) => {
                        first.get_or_insert(DmutexError::Peer {
                            peer: u32::MAX,
                            detail: format!("a peer's task failed: {e}"),
                        });
                    }
                }
            }
            if let Some(e) = first {
                return Err(e);
            }
        }
    }
    let elapsed = start.elapsed();
    let after = group.totals();
    Ok(RunReport {
        algorithm: group.algorithm(),
        n: group.peers().len(),
        shape: workload.shape,
        messages: after.messages - before.messages,
        entries: after.entries - before.entries,
        monitor: monitor.report(),
        elapsed,
    })
}
