//! Generated code, compiled under `#![no_implicit_prelude]` and called for
//! real: the dispatcher directly, and the client stubs end to end through
//! a tiny in-test `Channel` that hands each invocation to a `Service`.

/// The demo Clock and every-field-kind files, each in a module without
/// the prelude: generated code must only use `::rpc_core::codegen` paths.
#[no_implicit_prelude]
#[allow(dead_code, unreachable_pub)]
mod gen {
    pub(crate) mod clock {
        ::core::include!("generated/clock.rs");
    }
    pub(crate) mod kitchen {
        ::core::include!("generated/kitchen.rs");
    }
}

use gen::clock::demo::v1::{
    clock, time_reading, Clock, ClockClient, ClockGroupClient, ClockServer, Empty, Mode, NotSynchronised, Offset,
    TimeReading,
};
use gen::kitchen::{common::v1 as common, kitchen::v1 as kitchen};
use prost::Message;
use rpc_core::call::{Invocation, Outcome};
use rpc_core::{
    CallContext, CallError, Channel, Client, Code, Deferred, Error, GroupClient, MemberResult, MethodError, Never,
    Service, Status, Style,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_core::codegen::prost;

/// A Clock whose `Adjust` refuses negative offsets with the typed error
/// and whose `Hint` records what it got.
#[derive(Debug, Default)]
struct TestClock {
    hints: Mutex<Vec<i64>>,
}

fn reading(ns: i64) -> TimeReading {
    TimeReading {
        server_receive_ns: ns,
        server_transmit_ns: ns + 1,
        zone: Some("UTC".to_owned()),
        samples: vec![1, 2, 300],
        offsets: [("a".to_owned(), -5i64)].into_iter().collect(),
        mode: Mode::Slew as i32,
        source: Some(time_reading::Source::Ntp("pool.ntp.org".to_owned())),
    }
}

impl Clock for TestClock {
    async fn get_time(&self, ctx: CallContext, _request: Empty) -> Result<TimeReading, Status> {
        assert_eq!(ctx.method.name, "GetTime");
        Ok(reading(42))
    }

    async fn adjust(&self, _ctx: CallContext, request: Offset) -> Result<TimeReading, MethodError<NotSynchronised>> {
        if request.delta_ns < 0 {
            return Err(MethodError::raised(NotSynchronised { reason: "no going back".to_owned() }));
        }
        if request.delta_ns == 0 {
            return Err(Status::invalid_argument("zero offset").into());
        }
        Ok(reading(request.delta_ns))
    }

    async fn hint(&self, _ctx: CallContext, request: Offset) -> Result<(), Status> {
        self.hints.lock().unwrap_or_else(|p| p.into_inner()).push(request.delta_ns);
        Ok(())
    }

    async fn resync(&self, _ctx: CallContext, _request: Empty) -> Result<TimeReading, Status> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok(reading(7))
    }
}

/// A `Channel` that runs every invocation on a `Service` in this process,
/// shaping the outcome by style as a real transport would.
#[derive(Debug)]
struct Direct<S>(Arc<S>);

impl<S: Service + std::fmt::Debug> Channel for Direct<S> {
    fn invoke(
        &self,
        inv: Invocation,
    ) -> futures_like::BoxFuture<'static, Result<Outcome, Error>> {
        let service = self.0.clone();
        Box::pin(async move {
            let ctx = CallContext::local(inv.method);
            let run = service.call(inv.method.id, ctx, inv.payload);
            match inv.options.style {
                Style::Sync => Ok(Outcome::Reply(run.await)),
                Style::Async | Style::Deferred => {
                    let handle = tokio::spawn(run);
                    Ok(Outcome::Accepted(Box::pin(async move {
                        handle.await.map_err(|_| Error::Closed)
                    })))
                }
                Style::OneWay => {
                    tokio::spawn(run);
                    Ok(Outcome::Sent)
                }
            }
        })
    }
}

/// `BoxFuture` through the path generated code uses.
mod futures_like {
    pub(crate) use rpc_core::codegen::BoxFuture;
}

fn server() -> (Arc<TestClock>, ClockServer<TestClock>) {
    let imp = Arc::new(TestClock::default());
    (imp.clone(), ClockServer::from_arc(imp))
}

fn client() -> (Arc<TestClock>, ClockClient) {
    let (imp, srv) = server();
    (imp, ClockClient::new(Client::new(Direct(Arc::new(srv)))))
}

#[test]
fn service_info_matches_the_idl() {
    let info = clock::SERVICE;
    assert_eq!(info.full_name, "demo.v1.Clock");
    assert_eq!(info.methods.len(), 4);
    assert_eq!(clock::GET_TIME.id, rpc_codegen::model::method_id("demo.v1", "Clock", "GetTime"));
    assert!(clock::GET_TIME.idempotent);
    assert_eq!(clock::GET_TIME.timeout_ms, 250);
    assert_eq!(clock::ADJUST.protocol, rpc_core::Protocol::RRA);
    assert_eq!(clock::ADJUST.retries, Some(5));
    assert_eq!(clock::ADJUST.raises_type, "demo.v1.NotSynchronised");
    assert!(clock::HINT.oneway);
    assert_eq!(clock::HINT.response_type, "");
    assert_eq!(clock::RESYNC.style, Style::Deferred);
    let (_, srv) = server();
    assert_eq!(srv.info().method(clock::ADJUST.id).map(|m| m.name), Some("Adjust"));
}

#[tokio::test]
async fn dispatcher_decodes_runs_and_encodes() {
    let (_, srv) = server();
    let ctx = CallContext::local(&clock::GET_TIME);
    let bytes = srv.call(clock::GET_TIME.id, ctx, Empty {}.encode_to_vec().into()).await;
    let reply = TimeReading::decode(bytes.expect("reply")).expect("decodes");
    assert_eq!(reply, reading(42));
}

#[tokio::test]
async fn dispatcher_sends_typed_errors_as_status_details() {
    let (_, srv) = server();
    let ctx = CallContext::local(&clock::ADJUST);
    let status = srv.call(clock::ADJUST.id, ctx, Offset { delta_ns: -3 }.encode_to_vec().into()).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.details_type(), "demo.v1.NotSynchronised");
    let err = NotSynchronised::decode(status.details().clone()).expect("details decode");
    assert_eq!(err.reason, "no going back");
}

#[tokio::test]
async fn dispatcher_refuses_unknown_ids_and_malformed_requests() {
    let (_, srv) = server();
    let status = srv.call(0xdead_beef, CallContext::local(&clock::GET_TIME), Default::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(status.message().contains("demo.v1.Clock"), "{status}");
    // Field 1 as a length-delimited field whose length runs past the end.
    let junk = vec![0x0a, 0x05, 0x01];
    let status = srv.call(clock::ADJUST.id, CallContext::local(&clock::ADJUST), junk.into()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn client_stub_sync_call_returns_the_reply() {
    let (_, c) = client();
    let r: Result<TimeReading, CallError<Never>> = c.get_time(Empty {}).await;
    assert_eq!(r.expect("reply"), reading(42));
}

#[tokio::test]
async fn client_stub_raises_reach_call_error_raised() {
    let (_, c) = client();
    let r: Result<TimeReading, CallError<NotSynchronised>> = c.adjust(Offset { delta_ns: -1 }).await;
    match r {
        Err(CallError::Raised(e, status)) => {
            assert_eq!(e.reason, "no going back");
            assert_eq!(status.code(), Code::FailedPrecondition);
        }
        other => panic!("expected the typed error, got {other:?}"),
    }
    let plain = c.adjust(Offset { delta_ns: 0 }).await.unwrap_err();
    assert_eq!(plain.code(), Code::InvalidArgument);
    assert!(plain.raised().is_none());
    assert_eq!(c.adjust(Offset { delta_ns: 9 }).await.expect("reply").server_receive_ns, 9);
}

#[tokio::test]
async fn client_stub_styles() {
    let (imp, c) = client();
    // Deferred by default (IDL `style = deferred`): a handle first.
    let handle: Deferred<TimeReading, Never> = c.resync(Empty {}).await.expect("accepted");
    assert_eq!(handle.await.expect("result"), reading(7));
    // The caller may override the default style.
    assert_eq!(c.resync(Empty {}).synchronous().await.expect("reply"), reading(7));
    let accepted: Result<(), CallError<NotSynchronised>> = c.adjust(Offset { delta_ns: 2 }).asynchronous().await;
    accepted.expect("accepted");
    let deferred = c.get_time(Empty {}).deferred().timeout(Duration::from_secs(5)).await.expect("accepted");
    assert_eq!(deferred.await.expect("result"), reading(42));
    // One-way: sent, and it runs.
    let sent: Result<(), Error> = c.hint(Offset { delta_ns: 11 }).await;
    sent.expect("sent");
    for _ in 0..100 {
        if !imp.hints.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(*imp.hints.lock().unwrap_or_else(|p| p.into_inner()), vec![11]);
}

#[tokio::test]
async fn group_client_calls_every_member() {
    let (_, a) = server();
    let (_, b) = server();
    let group = GroupClient::new();
    group.add("a", Client::new(Direct(Arc::new(a))));
    group.add("b", Client::new(Direct(Arc::new(b))));
    let g = ClockGroupClient::new(group);
    let outcome = g.get_time(Empty {}).timeout(Duration::from_secs(5)).await;
    assert!(outcome.complete);
    assert_eq!(outcome.successes(), 2);
    let outcome = g.adjust(Offset { delta_ns: -1 }).all().timeout(Duration::from_secs(5)).await;
    assert_eq!(outcome.successes(), 0);
    for m in &outcome.members {
        assert!(matches!(&m.result, MemberResult::Error(CallError::Raised(e, _)) if e.reason == "no going back"));
    }
    let outcome = g.hint(Offset { delta_ns: 1 }).timeout(Duration::from_secs(5)).await;
    assert_eq!(outcome.successes(), 2);
}

#[test]
fn enums_and_names_follow_prost_build() {
    assert_eq!(Mode::Unspecified.as_str_name(), "MODE_UNSPECIFIED");
    assert_eq!(Mode::from_str_name("STEP"), Some(Mode::Step));
    assert_eq!(Mode::from_str_name("Step"), None);
    assert_eq!(Mode::try_from(2), Ok(Mode::Step));
    assert_eq!(<TimeReading as prost::Name>::full_name(), "demo.v1.TimeReading");
    assert_eq!(<common::Label as prost::Name>::type_url(), "/common.v1.Label");
    assert_eq!(reading(1).mode(), Mode::Slew);
}

/// Bytes computed by hand from the protobuf encoding rules.
#[test]
fn wire_format_is_protobufs() {
    // sint64 is zig-zag: -1 -> 1.
    assert_eq!(Offset { delta_ns: -1 }.encode_to_vec(), vec![0x08, 0x01]);
    let r = TimeReading {
        server_receive_ns: 1,
        zone: Some(String::new()),
        samples: vec![1, 300],
        mode: Mode::Step as i32,
        source: Some(time_reading::Source::Local(false)),
        ..Default::default()
    };
    let expected = vec![
        0x08, 0x01, // 1: int64 1
        0x1a, 0x00, // 3: optional string, present and empty
        0x22, 0x03, 0x01, 0xac, 0x02, // 4: packed uint32 [1, 300]
        0x38, 0x00, // 7: oneof bool false, present
        0x40, 0x02, // 8: enum STEP
    ];
    assert_eq!(r.encode_to_vec(), expected);
    assert_eq!(TimeReading::decode(&expected[..]).expect("decodes"), r);
}

#[test]
fn kitchen_types_round_trip() {
    let node = kitchen::Node {
        r#type: "root".to_owned(),
        parent: Some(Box::new(kitchen::Node { r#type: "up".to_owned(), ..Default::default() })),
        children: vec![kitchen::Node::default()],
        value: Some(kitchen::node::Value::Link(Box::new(kitchen::Node {
            value: Some(kitchen::node::Value::Sev(common::Severity::Warn as i32)),
            ..Default::default()
        }))),
    };
    assert_eq!(kitchen::Node::decode(&node.encode_to_vec()[..]).expect("decodes"), node);
    let w = kitchen::Wrappers {
        maybe: Some(0),
        blob: Some(rpc_core::codegen::Bytes::from_static(b"\x00\x01")),
        sev: Some(common::Severity::Info as i32),
        ds: vec![1.5, -2.0],
        blobs: vec![rpc_core::codegen::Bytes::from_static(b"x")],
        labels: vec![common::Label { key: "k".into(), value: "v".into() }],
        mb: [("b".to_owned(), vec![1u8, 2])].into_iter().collect(),
        ml: [(7, common::Label::default())].into_iter().collect(),
        me: [(9u64, common::Severity::Warn as i32)].into_iter().collect(),
        mbs: [(true, "yes".to_owned())].into_iter().collect(),
        ..Default::default()
    };
    assert_eq!(kitchen::Wrappers::decode(&w.encode_to_vec()[..]).expect("decodes"), w);
    // Packed doubles: tag 6, wire type 2, 16 bytes.
    let only_ds = kitchen::Wrappers { ds: vec![1.5, -2.0], ..Default::default() };
    assert_eq!(&only_ds.encode_to_vec()[..2], &[0x32, 0x10]);
    assert_eq!(kitchen::tree::TYPE.raises_type, "common.v1.Label");
    assert_eq!(kitchen::tree::WALK.style, Style::Async);
}
