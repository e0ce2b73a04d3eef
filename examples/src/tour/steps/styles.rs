//! The other call styles: asynchronous (returns at the ACCEPT), deferred
//! (a handle awaited later, or a callback), and one-way (returns once sent;
//! whether it ran is unknown by design).

use super::Tour;
use crate::doors::{timed, Door};
use crate::report::{describe, fmt_latency};
use rpc_core::{CallError, Error};
use rpc_services::proto::demo::v1::{counter, Amount, Work};
use std::future::IntoFuture;
use std::time::{Duration, Instant};

impl Tour {
    /// Asynchronous: the call returns at the ACCEPT; the handler (200 ms)
    /// finishes later.
    pub(super) async fn slow(&mut self, door: &dyn Door) {
        let before = self.counter.executions();
        let start = Instant::now();
        let t = timed(
            door,
            door.client()
                .slow(Work {
                    millis: 200,
                    delta: 3,
                })
                .into_future(),
        )
        .await;
        let result = match &t.0 {
            Ok(()) => {
                let returned = t.1;
                let mut finished = None;
                while start.elapsed() < Duration::from_secs(10) {
                    if self.counter.executions() > before {
                        finished = Some(start.elapsed());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                match finished {
                    Some(done)
                        if returned < Duration::from_millis(200)
                            && done >= Duration::from_millis(200) =>
                    {
                        self.ledger.ran(3);
                        Ok(format!(
                            "accepted; handler done {} later",
                            fmt_latency(done - returned)
                        ))
                    }
                    Some(done) => {
                        self.ledger.ran(3);
                        Err(format!(
                            "returned after {returned:?}, handler done after {done:?}"
                        ))
                    }
                    None => Err("accepted, but the handler never ran".into()),
                }
            }
            Err(e) => Err(describe(e)),
        };
        self.row(door, "Slow(200 ms, +3)", &counter::SLOW, result, t);
    }

    /// Deferred: a handle at the ACCEPT, the result awaited later; then one
    /// with a callback.
    pub(super) async fn compute(&mut self, door: &dyn Door) {
        let start = Instant::now();
        let t = timed(door, async {
            let handle = door
                .client()
                .compute(Work {
                    millis: 50,
                    delta: 4,
                })
                .await?;
            let at_accept = start.elapsed();
            let count = handle.await?;
            Ok::<_, CallError>((at_accept, count))
        })
        .await;
        let result = match &t.0 {
            Ok((at_accept, c)) => {
                self.ledger.ran(4);
                if c.executions == self.ledger.executions && c.value == self.ledger.value {
                    Ok(format!(
                        "handle after {}, then value {}",
                        fmt_latency(*at_accept),
                        c.value
                    ))
                } else {
                    Err(format!("got {c:?}, expected value {}", self.ledger.value))
                }
            }
            Err(e) => Err(describe(e)),
        };
        self.row(
            door,
            "Compute(50 ms, +4) await",
            &counter::COMPUTE,
            result,
            t,
        );

        let t = timed(door, async {
            let handle = door
                .client()
                .compute(Work {
                    millis: 50,
                    delta: 5,
                })
                .await?;
            let (tx, rx) = tokio::sync::oneshot::channel();
            handle.on_complete(move |r| {
                let _ = tx.send(r);
            });
            match tokio::time::timeout(Duration::from_secs(10), rx).await {
                Ok(Ok(r)) => r,
                _ => Err(CallError::Rpc(Error::InvalidCall(
                    "the callback never ran".into(),
                ))),
            }
        })
        .await;
        let result = match &t.0 {
            Ok(c) => {
                self.ledger.ran(5);
                if c.executions == self.ledger.executions && c.value == self.ledger.value {
                    Ok(format!("callback got value {}", c.value))
                } else {
                    Err(format!("got {c:?}, expected value {}", self.ledger.value))
                }
            }
            Err(e) => Err(describe(e)),
        };
        self.row(
            door,
            "Compute(50 ms, +5) callback",
            &counter::COMPUTE,
            result,
            t,
        );
    }

    /// One-way: returns once sent; whether it ran is unknown by design.
    pub(super) async fn nudge(&mut self, door: &dyn Door) {
        const N: u64 = 5;
        const DELTA: i64 = 1_000;
        let (value, executions) = (self.counter.value(), self.counter.executions());
        let t = timed(door, async {
            for _ in 0..N {
                door.client().nudge(Amount { delta: DELTA }).await?;
            }
            Ok::<_, Error>(())
        })
        .await;
        let result = match &t.0 {
            Ok(()) => {
                // Count the ones that arrived (a lossy path loses some).
                let arrived = self
                    .runs_since(executions, N, Duration::from_millis(300))
                    .await;
                for _ in 0..arrived {
                    self.ledger.ran(DELTA);
                }
                let moved = self.counter.value() - value;
                if arrived <= N && moved == DELTA * arrived as i64 && (door.lossy() || arrived == N)
                {
                    Ok(format!(
                        "{N} sent, none awaited; {arrived} arrived, ran once each"
                    ))
                } else {
                    Err(format!("{N} sent, {arrived} ran, value moved by {moved}"))
                }
            }
            Err(e) => Err(e.to_string()),
        };
        self.row(
            door,
            format!("Nudge(+{DELTA}) x{N}"),
            &counter::NUDGE,
            result,
            t,
        );
    }
}
