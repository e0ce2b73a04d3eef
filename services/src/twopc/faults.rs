//! Fault injection points of the coordinator, a testing aid: a test (or
//! the tour) makes the coordinator crash, or hold still, at a chosen point
//! of a transaction, to see what the other parties and the recovery do.
//!
//! `twopc-node --crash-at POINT [--fault-tx TX]` makes the process abort
//! (`std::process::abort`: no destructors, no flush, as a crash) at
//! `POINT`; `--hold-at POINT --go-file FILE` makes it wait there until
//! `FILE` exists. Only the transaction `TX` triggers them when it is given
//! (so that a restart with the same command line runs on), otherwise every
//! transaction does. In-process, [`Faults::on_crash`] replaces the abort
//! with a hook, and the coordinator then stops answering, as if its
//! process had died; a new coordinator opened on the same data directory
//! recovers from the log.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Where in a transaction a fault fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultPoint {
    /// `after-begin`: the transaction is logged, no prepare sent yet.
    AfterBegin,
    /// `after-prepare-votes`: every vote is in (each participant logged
    /// its own), the decision is neither logged nor sent.
    AfterPrepareVotes,
    /// `after-decision`: the decision is logged, not sent to anyone.
    AfterDecision,
    /// `after-first-decision`: the decision reached the first participant
    /// only.
    AfterFirstDecision,
}

impl FaultPoint {
    /// Every point, in the order a transaction passes them.
    pub const ALL: [FaultPoint; 4] = [
        FaultPoint::AfterBegin,
        FaultPoint::AfterPrepareVotes,
        FaultPoint::AfterDecision,
        FaultPoint::AfterFirstDecision,
    ];

    /// The point's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FaultPoint::AfterBegin => "after-begin",
            FaultPoint::AfterPrepareVotes => "after-prepare-votes",
            FaultPoint::AfterDecision => "after-decision",
            FaultPoint::AfterFirstDecision => "after-first-decision",
        }
    }
}

impl fmt::Display for FaultPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a [`FaultPoint`].
#[derive(Debug, thiserror::Error)]
#[error("unknown fault point {0:?} (one of after-begin, after-prepare-votes, after-decision, after-first-decision)")]
pub struct UnknownFaultPoint(String);

impl FromStr for FaultPoint {
    type Err = UnknownFaultPoint;

    fn from_str(s: &str) -> Result<FaultPoint, UnknownFaultPoint> {
        FaultPoint::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownFaultPoint(s.to_owned()))
    }
}

/// What happens at a fault point.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultAction {
    /// Crash: the crash hook runs (by default the process aborts).
    Crash,
    /// Wait until this file exists, then go on.
    Hold(PathBuf),
}

/// A crash hook: called with the point and the transaction.
pub type CrashHook = Arc<dyn Fn(FaultPoint, &str) + Send + Sync>;

/// The faults a coordinator injects. [`Faults::default`] has none.
#[derive(Clone, Default)]
pub struct Faults {
    rules: Vec<(FaultPoint, Option<String>, FaultAction)>,
    on_crash: Option<CrashHook>,
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faults")
            .field("rules", &self.rules)
            .field("on_crash", &self.on_crash.as_ref().map(|_| "hook"))
            .finish()
    }
}

/// What the coordinator does after a fault point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFault {
    /// Go on.
    Continue,
    /// The crash hook returned: behave as dead from now on.
    Crashed,
}

impl Faults {
    /// Adds a fault at `point`, for transaction `tx` only when given.
    pub fn at(mut self, point: FaultPoint, tx: Option<String>, action: FaultAction) -> Faults {
        self.rules.push((point, tx, action));
        self
    }

    /// Replaces the process abort of [`FaultAction::Crash`] with `hook`
    /// (for a coordinator inside a test or the tour).
    pub fn on_crash(mut self, hook: impl Fn(FaultPoint, &str) + Send + Sync + 'static) -> Faults {
        self.on_crash = Some(Arc::new(hook));
        self
    }

    /// Passes `point` in transaction `tx`: crashes, holds, or does nothing.
    pub async fn pass(&self, point: FaultPoint, tx: &str) -> AfterFault {
        for (p, only, action) in &self.rules {
            if *p != point || only.as_deref().is_some_and(|t| t != tx) {
                continue;
            }
            match action {
                FaultAction::Crash => match &self.on_crash {
                    Some(hook) => {
                        tracing::info!(%point, tx, "fault injection: crashing at {point} (in process)");
                        hook(point, tx);
                        return AfterFault::Crashed;
                    }
                    None => {
                        tracing::warn!(%point, tx, "fault injection: crashing at {point}");
                        std::process::abort()
                    }
                },
                FaultAction::Hold(go) => {
                    tracing::warn!(%point, tx, go_file = %go.display(), "fault injection: holding at {point} until the go file exists");
                    while !go.exists() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    tracing::info!(%point, tx, "fault injection: released at {point}");
                }
            }
        }
        AfterFault::Continue
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in FaultPoint::ALL {
            assert_eq!(p.name().parse::<FaultPoint>().unwrap(), p);
        }
        assert!("after-lunch".parse::<FaultPoint>().is_err());
    }
}
