//! Synchronous calls: RR (`Increment` runs exactly once), RRA (the reply
//! is acknowledged), an idempotent read (no history), and a typed raise
//! (`Withdraw` beyond the balance).

use super::Tour;
use crate::doors::{timed, Door};
use crate::report::describe;
use rpc_core::{CallError, Code};
use rpc_services::proto::demo::v1::{counter, Amount, Count, Empty, Overdrawn};
use std::future::IntoFuture;

impl Tour {
    /// Sync RR: Increment runs exactly once and returns the new count.
    pub(super) async fn increment(&mut self, door: &dyn Door) {
        let t = timed(
            door,
            door.client().increment(Amount { delta: 1 }).into_future(),
        )
        .await;
        let result = self.ran_once(1, &t.0);
        self.row(door, "Increment(+1)", &counter::INCREMENT, result, t);
    }

    /// Sync RRA: the reply is acknowledged, the server frees its entry.
    pub(super) async fn increment_acked(&mut self, door: &dyn Door) {
        let t = timed(
            door,
            door.client()
                .increment_acked(Amount { delta: 2 })
                .into_future(),
        )
        .await;
        let result = self.ran_once(2, &t.0);
        self.row(
            door,
            "IncrementAcked(+2)",
            &counter::INCREMENT_ACKED,
            result,
            t,
        );
    }

    /// The result of a non-idempotent call that added `delta`: it ran once,
    /// and returned the value and executions the ledger expects.
    fn ran_once<E: std::fmt::Debug>(
        &mut self,
        delta: i64,
        outcome: &Result<Count, CallError<E>>,
    ) -> Result<String, String> {
        match outcome {
            Ok(c) => {
                self.ledger.ran(delta);
                let expected = (self.ledger.value, self.ledger.executions);
                if (c.value, c.executions) == expected {
                    Ok(format!("value {}, executions {}", c.value, c.executions))
                } else {
                    Err(format!(
                        "got {c:?}, expected value {} executions {}",
                        expected.0, expected.1
                    ))
                }
            }
            Err(e) => Err(describe(e)),
        }
    }

    /// Idempotent: no PING, no history, may run more than once.
    pub(super) async fn get(&mut self, door: &dyn Door) {
        let t = timed(door, door.client().get(Empty {}).into_future()).await;
        let result = match &t.0 {
            Ok(c) if c.value == self.ledger.value && c.executions == self.ledger.executions => {
                Ok(format!("value {} (idempotent, no history)", c.value))
            }
            Ok(c) => Err(format!("read {c:?}, expected value {}", self.ledger.value)),
            Err(e) => Err(describe(e)),
        };
        self.row(door, "Get()", &counter::GET, result, t);
    }

    /// Typed raise: Withdraw beyond the balance gives `Overdrawn`.
    pub(super) async fn withdraw(&mut self, door: &dyn Door) {
        let requested = self.ledger.value + 1_000;
        let t = timed(
            door,
            door.client()
                .withdraw(Amount { delta: requested })
                .into_future(),
        )
        .await;
        let result = match &t.0 {
            Err(CallError::Raised(o, status)) => {
                let expected = Overdrawn {
                    balance: self.ledger.value,
                    requested,
                };
                if *o == expected && status.code() == Code::FailedPrecondition {
                    Ok(format!(
                        "raised Overdrawn {{ balance: {}, requested: {} }}",
                        o.balance, o.requested
                    ))
                } else {
                    Err(format!(
                        "raised {o:?} ({}), expected {expected:?}",
                        status.code()
                    ))
                }
            }
            Ok(c) => Err(format!("withdrew beyond the balance: {c:?}")),
            Err(e) => Err(describe(e)),
        };
        self.row(
            door,
            format!("Withdraw({requested})"),
            &counter::WITHDRAW,
            result,
            t,
        );
        let t = timed(
            door,
            door.client().withdraw(Amount { delta: 1 }).into_future(),
        )
        .await;
        let result = match &t.0 {
            Ok(c) => {
                self.ledger.ran(-1);
                if c.value == self.ledger.value {
                    Ok(format!("value {}", c.value))
                } else {
                    Err(format!("got {c:?}, expected value {}", self.ledger.value))
                }
            }
            Err(e) => Err(describe(e)),
        };
        self.row(door, "Withdraw(1)", &counter::WITHDRAW, result, t);
    }
}
