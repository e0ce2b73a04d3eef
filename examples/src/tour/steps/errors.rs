//! The error cases: an unknown method, a request over the door's size
//! limit (refused before sending), and a deadline that passes while the
//! server runs the call (the caller learns it may have run).

use super::Tour;
use crate::doors::{timed, Door, Feature};
use crate::report::Row;
use crate::report::{describe, with_commas};
use rpc_core::{CallError, Code, Error, MethodInfo, Never, Protocol, Style};
use rpc_services::proto::demo::v1::{self as demo, counter, Count, Empty, Work};
use std::future::IntoFuture;
use std::time::Duration;

/// A method the Counter does not have (its id is unknown to the server).
static UNKNOWN_METHOD: MethodInfo = MethodInfo {
    name: "NoSuchMethod",
    id: 0x0bad_cafe,
    request_type: "demo.v1.Empty",
    response_type: "demo.v1.Count",
    raises_type: "",
    oneway: false,
    idempotent: true,
    protocol: Protocol::RR,
    style: Style::Sync,
    timeout_ms: 0,
    retries: None,
};

impl Tour {
    /// The error cases: unknown method, oversized request.
    pub(super) async fn errors(&mut self, door: &dyn Door) {
        let client = door.client().client().clone();
        let t = timed(
            door,
            client
                .call::<_, Count, Never>(&counter::SERVICE, &UNKNOWN_METHOD, &Empty {})
                .into_future(),
        )
        .await;
        let result = match &t.0 {
            Err(CallError::Rpc(e)) if e.code() == Code::Unimplemented && !e.may_have_run() => {
                Ok(e.to_string())
            }
            Err(e) => Err(format!("expected UNIMPLEMENTED, got {}", describe(e))),
            Ok(c) => Err(format!("an unknown method answered {c:?}")),
        };
        self.report.row(Row::made(
            door.name(),
            "NoSuchMethod (id 0x0badcafe)",
            "sync",
            "RR",
            result,
            t.1,
            t.2,
        ));

        let size = door.oversize();
        let what = if door.supports(Feature::SizeLimit) {
            format!("Echo({} bytes)", with_commas(size))
        } else {
            "Echo(oversized)".to_owned()
        };
        if !self.skip(door, &what, Feature::SizeLimit) {
            let big = demo::Blob {
                data: vec![0u8; size].into(),
            };
            let t = timed(door, door.client().echo(big).into_future()).await;
            let result = match &t.0 {
                Err(CallError::Rpc(Error::MessageTooLarge { size, limit })) => Ok(format!(
                    "MessageTooLarge: {size} > {limit} bytes, nothing sent"
                )),
                Err(e) => Err(format!("expected MessageTooLarge, got {}", describe(e))),
                Ok(_) => Err(format!("a {size}-byte request went through")),
            };
            self.row(door, what, &counter::ECHO, result, t);
        }
    }

    /// A deadline that passes: the caller learns the request may have run.
    pub(super) async fn deadline(&mut self, door: &dyn Door) {
        let executions = self.counter.executions();
        let call = door
            .client()
            .slow(Work {
                millis: 300,
                delta: 0,
            })
            .synchronous()
            .timeout(Duration::from_millis(100));
        let t = timed(door, call.into_future()).await;
        let result = match &t.0 {
            Err(CallError::Rpc(Error::DeadlineExceeded {
                may_have_run: true,
                attempts,
            })) => {
                // The server does run it (unless every copy was lost): wait
                // for the handler so that later steps see a quiet counter.
                let ran = self
                    .runs_since(executions, 1, Duration::from_millis(600))
                    .await;
                for _ in 0..ran {
                    self.ledger.ran(0);
                }
                let said = format!(
                    "DEADLINE_EXCEEDED after {attempts} cop{}, may have run",
                    if *attempts == 1 { "y" } else { "ies" }
                );
                if ran == 1 || (door.lossy() && ran == 0) {
                    Ok(format!(
                        "{said} (it {})",
                        if ran == 1 { "did" } else { "did not" }
                    ))
                } else {
                    Err(format!("{said}; but the server ran it {ran} times"))
                }
            }
            Err(e) => Err(format!("expected DEADLINE_EXCEEDED, got {}", describe(e))),
            Ok(c) => Err(format!("a 300 ms handler answered within 100 ms: {c:?}")),
        };
        self.report.row(Row::made(
            door.name(),
            "Slow(300 ms), 100 ms deadline",
            "sync",
            "RR",
            result,
            t.1,
            t.2,
        ));
    }
}
