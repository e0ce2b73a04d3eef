//! The steps: what the tour calls through every door, in order
//! ([`Tour::walk`]), each call entered in the report and its effect on the
//! counter in the ledger.
//!
//! One module a kind of step: [`sync`] (RR, RRA, idempotent, a typed
//! raise), [`styles`] (asynchronous, deferred, one-way), [`batch`]
//! (at-most-once in bulk), [`errors`] (unknown method, oversized request, a
//! deadline that passes). A step that needs what a door cannot do is shown
//! as skipped ([`Tour::skip`]).

pub(crate) mod batch;
pub(crate) mod errors;
pub(crate) mod styles;
pub(crate) mod sync;

use crate::doors::{Door, Feature};
use crate::ledger::Ledger;
use crate::report::{Report, Row};
use crate::wait_for;
use rpc_core::server::ServerHandle;
use rpc_core::MethodInfo;
use rpc_services::CounterService;
use std::sync::Arc;
use std::time::Duration;

/// The tour's server, what it expects of it, and what it saw.
pub(crate) struct Tour {
    /// The Counter behind every door.
    pub(crate) counter: Arc<CounterService>,
    /// The server (one engine, one history) with all its doors.
    pub(crate) server: ServerHandle,
    /// What the calls should have done to the counter.
    pub(crate) ledger: Ledger,
    /// One row per call.
    pub(crate) report: Report,
}

impl Tour {
    /// Every step through `door`, in order; then checks that a lossy path
    /// did retransmit.
    pub(crate) async fn walk(&mut self, door: &dyn Door) {
        self.increment(door).await;
        self.increment_acked(door).await;
        self.get(door).await;
        self.withdraw(door).await;
        if !self.skip(door, "Slow / Compute (async, deferred)", Feature::Accept) {
            self.slow(door).await;
            self.compute(door).await;
        }
        self.batch(door).await;
        self.errors(door).await;
        if !self.skip(door, "Nudge (one-way)", Feature::OneWay) {
            self.nudge(door).await;
        }
        self.deadline(door).await;
        self.report
            .check(!door.lossy() || door.retransmissions() != Some(0), || {
                format!(
                    "{}: no retransmission at all through a lossy path",
                    door.name()
                )
            });
    }

    /// Whether `door` cannot run a step needing `feature`; if so, enters
    /// a row saying the step was skipped and why.
    pub(crate) fn skip(&mut self, door: &dyn Door, call: &str, feature: Feature) -> bool {
        if door.supports(feature) {
            return false;
        }
        self.report.row(Row {
            path: door.name().to_owned(),
            call: call.to_owned(),
            style: "-",
            protocol: "-",
            result: format!(
                "skipped: needs {}; {}",
                feature.describe(),
                door.why_not(feature)
            ),
            ok: true,
            latency: None,
            retx: None,
        });
        true
    }

    /// Enters the row of a call of `method` through `door`, timed by
    /// [`timed`](crate::doors::timed).
    fn row<T>(
        &mut self,
        door: &dyn Door,
        call: impl Into<String>,
        method: &MethodInfo,
        result: Result<String, String>,
        timing: (T, Duration, Option<u64>),
    ) {
        self.report.row(Row::made(
            door.name(),
            call,
            method.style.name(),
            method.protocol.name(),
            result,
            timing.1,
            timing.2,
        ));
    }

    /// Waits (at most `limit`) until the counter has run `n` more
    /// operations than `before`; returns how many it ran.
    async fn runs_since(&self, before: u64, n: u64, limit: Duration) -> u64 {
        wait_for(limit, || self.counter.executions() >= before + n).await;
        self.counter.executions() - before
    }
}
