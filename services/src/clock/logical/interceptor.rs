//! [`ClockInterceptor`]: the node's clocks on every call and answer, as
//! server and client interceptor, and [`ClockKinds`], which of the three
//! it carries.

use super::LogicalClocks;
use rpc_core::call::Invocation;
use rpc_core::intercept::{
    ClientInterceptor, ClientOutcome, Completed, Interceptor, InvocationInfo,
};
use rpc_core::{CallContext, Status};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Which of the three clocks are carried (see [`ClockInterceptor::only`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClockKinds {
    /// The Lamport clock ([`LAMPORT_KEY`](super::LAMPORT_KEY)).
    pub lamport: bool,
    /// The vector clock ([`VECTOR_KEY`](super::VECTOR_KEY)).
    pub vector: bool,
    /// The hybrid logical clock ([`HLC_KEY`](super::HLC_KEY)).
    pub hybrid: bool,
}

impl ClockKinds {
    /// None of the three (the base of the one-clock sets).
    const NONE: ClockKinds = ClockKinds {
        lamport: false,
        vector: false,
        hybrid: false,
    };
    /// All three.
    pub const ALL: ClockKinds = ClockKinds {
        lamport: true,
        vector: true,
        hybrid: true,
    };
    /// Only the Lamport clock.
    pub const LAMPORT: ClockKinds = ClockKinds {
        lamport: true,
        ..ClockKinds::NONE
    };
    /// Only the vector clock.
    pub const VECTOR: ClockKinds = ClockKinds {
        vector: true,
        ..ClockKinds::NONE
    };
    /// Only the hybrid logical clock.
    pub const HYBRID: ClockKinds = ClockKinds {
        hybrid: true,
        ..ClockKinds::NONE
    };
}

impl fmt::Display for ClockKinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (self.lamport, "lamport"),
            (self.vector, "vector"),
            (self.hybrid, "hybrid"),
        ];
        let mut first = true;
        for (_, name) in names.iter().filter(|(on, _)| *on) {
            if !first {
                f.write_str("+")?;
            }
            f.write_str(name)?;
            first = false;
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// Carries a node's [`LogicalClocks`] on every request and answer (see the
/// [module docs](super)). Clones share the clocks and the counter.
#[derive(Debug, Clone)]
pub struct ClockInterceptor {
    clocks: Arc<LogicalClocks>,
    kinds: ClockKinds,
    refused_answers: Arc<AtomicU64>,
}

impl ClockInterceptor {
    /// Carries `clocks`, all three.
    pub fn new(clocks: Arc<LogicalClocks>) -> ClockInterceptor {
        ClockInterceptor {
            clocks,
            kinds: ClockKinds::ALL,
            refused_answers: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Carries only the clocks `kinds` names (the others are neither
    /// written nor read).
    #[must_use]
    pub fn only(mut self, kinds: ClockKinds) -> ClockInterceptor {
        self.kinds = kinds;
        self
    }

    /// The clocks carried.
    pub fn kinds(&self) -> ClockKinds {
        self.kinds
    }

    /// Answers whose clocks were not merged (malformed, or an HLC too far
    /// ahead): the answer is the caller's anyway, only its clocks are
    /// left out.
    pub fn refused_answers(&self) -> u64 {
        self.refused_answers.load(Ordering::Relaxed)
    }
}

impl Interceptor for ClockInterceptor {
    fn before(&self, ctx: &mut CallContext) -> Result<(), Status> {
        // A receive event; a refusal changes no clock and the call does
        // not run.
        self.clocks.merge_kinds(&ctx.metadata, self.kinds)
    }

    fn after(&self, call: &mut Completed<'_>) {
        // A send event: the answer.
        self.clocks.stamp_kinds(call.reply_metadata, self.kinds);
    }
}

impl ClientInterceptor for ClockInterceptor {
    fn before(&self, invocation: &mut Invocation) -> Result<(), Status> {
        self.clocks
            .stamp_kinds(&mut invocation.metadata, self.kinds);
        Ok(())
    }

    fn after(&self, invocation: &InvocationInfo, outcome: &ClientOutcome<'_>) {
        let metadata = match outcome {
            ClientOutcome::Answer(Ok(reply)) => Some(&reply.metadata),
            ClientOutcome::Answer(Err(status)) => status.metadata(),
            _ => None,
        };
        if let Some(md) = metadata {
            if let Err(error) = self.clocks.merge_kinds(md, self.kinds) {
                self.refused_answers.fetch_add(1, Ordering::Relaxed);
                // Expected while a peer's clock is far off (the HLC refuses
                // it): logged, counted, the answer still delivered.
                tracing::debug!(method = invocation.method.name, %error, "answer's clocks not merged");
            }
        }
    }
}
