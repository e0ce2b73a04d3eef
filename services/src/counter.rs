//! [`CounterService`]: the implementation of `demo.v1.Counter`.
//!
//! It counts how many times its non-idempotent operations actually ran
//! ([`CounterService::executions`]), which is what the at-most-once tests
//! compare with the number of calls made.

use crate::proto::demo::v1::{Amount, Blob, Count, Counter, Empty, Overdrawn, Work};
use rpc_core::{CallContext, MethodError, Status};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// A counter: a value, and the number of non-idempotent executions.
#[derive(Debug, Default)]
pub struct CounterService {
    state: Mutex<i64>,
    executions: AtomicU64,
    idempotent_executions: AtomicU64,
}

impl CounterService {
    /// A counter at zero.
    pub fn new() -> CounterService {
        CounterService::default()
    }

    /// The current value.
    pub fn value(&self) -> i64 {
        *self.lock()
    }

    /// How many times a non-idempotent operation ran (Increment,
    /// IncrementAcked, Withdraw, Slow, Compute, Nudge).
    pub fn executions(&self) -> u64 {
        self.executions.load(Ordering::SeqCst)
    }

    /// How many times an idempotent operation ran (Get, Echo).
    pub fn idempotent_executions(&self) -> u64 {
        self.idempotent_executions.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, i64> {
        // The value is a plain integer: a panic elsewhere cannot leave it torn.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, delta: i64) -> Count {
        let mut value = self.lock();
        *value = value.saturating_add(delta);
        let executions = self.executions.fetch_add(1, Ordering::SeqCst) + 1;
        Count {
            value: *value,
            executions,
        }
    }

    fn count(&self) -> Count {
        Count {
            value: self.value(),
            executions: self.executions(),
        }
    }
}

/// Longest sleep a `Work` request may ask for; longer requests are refused
/// with `INVALID_ARGUMENT` so that a caller cannot park handlers forever.
pub const MAX_WORK: Duration = Duration::from_secs(10);

async fn work(w: &Work) -> Result<(), Status> {
    let d = Duration::from_millis(u64::from(w.millis));
    if d > MAX_WORK {
        return Err(Status::invalid_argument(format!(
            "work of {} ms exceeds {} ms",
            w.millis,
            MAX_WORK.as_millis()
        )));
    }
    tokio::time::sleep(d).await;
    Ok(())
}

impl Counter for CounterService {
    async fn increment(&self, _ctx: CallContext, request: Amount) -> Result<Count, Status> {
        Ok(self.add(request.delta))
    }

    async fn increment_acked(&self, _ctx: CallContext, request: Amount) -> Result<Count, Status> {
        Ok(self.add(request.delta))
    }

    async fn get(&self, _ctx: CallContext, _request: Empty) -> Result<Count, Status> {
        self.idempotent_executions.fetch_add(1, Ordering::SeqCst);
        Ok(self.count())
    }

    async fn withdraw(
        &self,
        _ctx: CallContext,
        request: Amount,
    ) -> Result<Count, MethodError<Overdrawn>> {
        let mut value = self.lock();
        if request.delta < 0 {
            return Err(Status::invalid_argument("withdraw a positive amount").into());
        }
        if *value < request.delta {
            return Err(MethodError::raised(Overdrawn {
                balance: *value,
                requested: request.delta,
            }));
        }
        *value -= request.delta;
        let executions = self.executions.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Count {
            value: *value,
            executions,
        })
    }

    async fn slow(&self, _ctx: CallContext, request: Work) -> Result<Count, Status> {
        work(&request).await?;
        Ok(self.add(request.delta))
    }

    async fn compute(&self, _ctx: CallContext, request: Work) -> Result<Count, Status> {
        work(&request).await?;
        Ok(self.add(request.delta))
    }

    async fn nudge(&self, _ctx: CallContext, request: Amount) -> Result<(), Status> {
        self.add(request.delta);
        Ok(())
    }

    async fn echo(&self, _ctx: CallContext, request: Blob) -> Result<Blob, Status> {
        self.idempotent_executions.fetch_add(1, Ordering::SeqCst);
        Ok(request)
    }
}
