//! At-most-once in bulk: many non-idempotent calls in flight at once, each
//! run exactly once.

use super::Tour;
use crate::doors::{timed, Door};
use crate::report::Row;
use crate::report::{describe, fmt_latency};
use rpc_core::CallError;
use rpc_services::proto::demo::v1::{Amount, Count};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Calls of the at-most-once batch, and how many are in flight at once.
const BATCH: usize = 200;
const BATCH_IN_FLIGHT: usize = 32;

impl Tour {
    /// At-most-once in bulk: many non-idempotent calls at once.
    pub(super) async fn batch(&mut self, door: &dyn Door) {
        let client = door.client().clone();
        let t = timed(door, async {
            let mut done: Vec<(Result<Count, CallError>, Duration)> = Vec::new();
            let mut pending = futures::stream::FuturesUnordered::new();
            let mut next = 0;
            loop {
                while next < BATCH && pending.len() < BATCH_IN_FLIGHT {
                    let call = client.increment(Amount { delta: 1 });
                    pending.push(async move {
                        let start = Instant::now();
                        (call.await, start.elapsed())
                    });
                    next += 1;
                }
                match futures::StreamExt::next(&mut pending).await {
                    Some(r) => done.push(r),
                    None => break,
                }
            }
            done
        })
        .await;
        let done = &t.0;
        let ok: Vec<&Count> = done.iter().filter_map(|(r, _)| r.as_ref().ok()).collect();
        for _ in &ok {
            self.ledger.ran(1);
        }
        let distinct: HashSet<u64> = ok.iter().map(|c| c.executions).collect();
        let mut latencies: Vec<Duration> = done.iter().map(|(_, l)| *l).collect();
        latencies.sort();
        let pick = |q: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * q) as usize)
                .copied()
                .unwrap_or_default()
        };
        let summary = format!(
            "{}/{} ok, each ran once; p50 {}, p99 {}",
            ok.len(),
            BATCH,
            fmt_latency(pick(0.5)),
            fmt_latency(pick(0.99))
        );
        let result = if ok.len() == BATCH && distinct.len() == BATCH {
            Ok(summary)
        } else {
            let first_error = done
                .iter()
                .find_map(|(r, _)| r.as_ref().err())
                .map(describe)
                .unwrap_or_default();
            Err(format!("{summary}; first error: {first_error}"))
        };
        self.report.row(Row::made(
            door.name(),
            format!("Increment(+1) x{BATCH}, {BATCH_IN_FLIGHT} in flight"),
            "sync",
            "RR",
            result,
            t.1,
            t.2,
        ));
    }
}
