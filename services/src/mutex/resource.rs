//! [`ResourceService`]: `mutex.v1.Resource`, a value that accepts an
//! operation only with a fencing token at least as high as the highest it
//! has seen, and records every operation for the tests and the tour.

use crate::lock::lock;
use crate::proto::mutex::v1::{ReadRequest, Resource, StaleToken, Value, WriteRequest};
use rpc_core::{CallContext, Code, MethodError};
use std::sync::{Mutex, MutexGuard};

/// One operation as the resource saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    /// The token presented.
    pub token: u64,
    /// A write (else a read).
    pub write: bool,
    /// Whether it was accepted.
    pub accepted: bool,
    /// The value after it.
    pub value: i64,
}

#[derive(Debug, Default)]
struct State {
    value: i64,
    highest: u64,
    log: Vec<Op>,
}

/// The fenced resource; see the module docs.
#[derive(Debug, Default)]
pub struct ResourceService {
    state: Mutex<State>,
}

impl ResourceService {
    /// A value of 0 that has seen no token.
    pub fn new() -> ResourceService {
        ResourceService::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Plain numbers and a log: a panic elsewhere leaves them usable.
        lock(&self.state)
    }

    /// The current value.
    pub fn value(&self) -> i64 {
        self.state().value
    }

    /// The highest token seen.
    pub fn highest_token(&self) -> u64 {
        self.state().highest
    }

    /// Every operation, in the order the resource ran them.
    pub fn log(&self) -> Vec<Op> {
        self.state().log.clone()
    }

    fn apply(&self, token: u64, write: Option<i64>) -> Result<Value, MethodError<StaleToken>> {
        let mut s = self.state();
        let accepted = token >= s.highest;
        if accepted {
            s.highest = token;
            if let Some(v) = write {
                s.value = v;
            }
        }
        let value = s.value;
        s.log.push(Op {
            token,
            write: write.is_some(),
            accepted,
            value,
        });
        if !accepted {
            let highest = s.highest;
            tracing::info!(token, highest, "stale token refused");
            return Err(MethodError::raised_with(
                StaleToken {
                    token,
                    highest_token: highest,
                },
                Code::FailedPrecondition,
                format!("token {token:#x} is older than {highest:#x}"),
            ));
        }
        Ok(Value {
            value,
            highest_token: token,
        })
    }
}

impl Resource for ResourceService {
    async fn read(
        &self,
        _ctx: CallContext,
        request: ReadRequest,
    ) -> Result<Value, MethodError<StaleToken>> {
        self.apply(request.token, None)
    }

    async fn write(
        &self,
        _ctx: CallContext,
        request: WriteRequest,
    ) -> Result<Value, MethodError<StaleToken>> {
        self.apply(request.token, Some(request.value))
    }
}
