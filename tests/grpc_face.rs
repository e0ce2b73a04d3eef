//! Our gRPC face between our own ends, on 127.0.0.1: at-most-once through
//! `rpc-*` metadata, restarts, every call style through `GrpcChannel`,
//! retries while the server is not up yet, plain gRPC callers, and one
//! server answering on UDP and gRPC with one engine.
//!
//! "While the handler runs" and "before the handler finishes" are shown by
//! holding the handler at a `Gate` (rpc_tests::Held) that the test opens
//! after the event it checks, never by a latency bound.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use bytes::Bytes;
use prost::Message;
use rpc_core::client::UdpChannel;
use rpc_core::grpc::metadata as md;
use rpc_core::grpc::{BytesCodec, GrpcChannel};
use rpc_core::server::{Server, ServerHandle};
use rpc_core::{CallError, Client, Code};
use rpc_services::proto::demo::v1::{
    Amount, Blob, Count, CounterClient, CounterServer, Empty, Work,
};
use rpc_services::CounterService;
use rpc_tests::{wait_until, Gate, Held};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a test waits for an event: a safety net, never the verdict.
const WAIT: Duration = Duration::from_secs(30);
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataMap;

async fn server() -> (ServerHandle, Arc<CounterService>) {
    let svc = Arc::new(CounterService::new());
    let handle = Server::builder()
        .add_service(CounterServer::from_arc(Arc::clone(&svc)))
        .serve_grpc("127.0.0.1:0")
        .await
        .unwrap();
    (handle, svc)
}

/// As [`server`], with the handlers of `methods` held at `gate`.
async fn held_server(
    methods: &'static [&'static str],
    gate: &Gate,
) -> (ServerHandle, Arc<CounterService>) {
    let svc = Arc::new(CounterService::new());
    let inner: Arc<dyn rpc_core::Service> = Arc::new(CounterServer::from_arc(Arc::clone(&svc)));
    let handle = Server::builder()
        .add_shared_service(Arc::new(Held::new(inner, methods, gate.clone())))
        .serve_grpc("127.0.0.1:0")
        .await
        .unwrap();
    (handle, svc)
}

fn uri(handle: &ServerHandle) -> String {
    format!("http://{}", handle.local_addr())
}

/// One unary call with hand-made metadata, as any gRPC client could send.
async fn raw(
    uri: &str,
    path: &'static str,
    payload: Vec<u8>,
    meta: &[(&'static str, String)],
) -> Result<(Bytes, MetadataMap), tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(uri.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    let mut request = tonic::Request::new(Bytes::from(payload));
    for (k, v) in meta {
        request.metadata_mut().insert(*k, v.parse().unwrap());
    }
    grpc.ready().await.unwrap();
    let response = grpc
        .unary(
            request,
            PathAndQuery::from_static(path),
            BytesCodec::default(),
        )
        .await?;
    let meta = response.metadata().clone();
    Ok((response.into_inner(), meta))
}

fn ours(session: u64, id: u64, attempt: u32, incarnation: u64) -> Vec<(&'static str, String)> {
    let call = md::CallHeader {
        session,
        request_id: id,
        attempt,
        incarnation,
        ..md::CallHeader::default()
    };
    vec![(md::CALL, call.encode())]
}

#[tokio::test]
async fn a_retry_with_the_same_request_id_runs_once() {
    let gate = Gate::closed();
    let (handle, svc) = held_server(&["Slow"], &gate).await;
    let uri = uri(&handle);
    let work = Work {
        millis: 0,
        delta: 5,
    }
    .encode_to_vec();
    // The first copy runs (held at the gate); a retry on another
    // connection while it runs waits for it; a late retry is answered from
    // the history.
    let first = tokio::spawn({
        let (uri, work) = (uri.clone(), work.clone());
        async move { raw(&uri, "/demo.v1.Counter/Slow", work, &ours(42, 1, 1, 0)).await }
    });
    wait_until(WAIT, "the first copy to run", || {
        handle.stats().executions == 1
    })
    .await
    .unwrap();
    let incarnation = handle.incarnation();
    let second = tokio::spawn({
        let (uri, work) = (uri.clone(), work.clone());
        async move {
            raw(
                &uri,
                "/demo.v1.Counter/Slow",
                work,
                &ours(42, 1, 2, incarnation),
            )
            .await
        }
    });
    wait_until(WAIT, "the retry to find the first copy running", || {
        handle.stats().in_progress_hits >= 1
    })
    .await
    .unwrap();
    gate.open();
    let second = second.await.unwrap().unwrap();
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.0, second.0);
    let third = raw(
        &uri,
        "/demo.v1.Counter/Slow",
        work.clone(),
        &ours(42, 1, 3, incarnation),
    )
    .await
    .unwrap();
    assert_eq!(third.0, first.0);
    assert_eq!(
        Count::decode(first.0.clone()).unwrap(),
        Count {
            value: 5,
            executions: 1
        }
    );
    assert_eq!(svc.executions(), 1);
    assert_eq!(md::get_u64(&first.1, md::INCARNATION), Some(incarnation));
    let stats = handle.stats();
    assert_eq!(stats.executions, 1);
    assert!(
        stats.duplicates_replayed >= 1 && stats.in_progress_hits >= 1,
        "{stats:?}"
    );

    // A plain gRPC client (no session): every request runs.
    let amount = Amount { delta: 1 }.encode_to_vec();
    raw(&uri, "/demo.v1.Counter/Increment", amount.clone(), &[])
        .await
        .unwrap();
    raw(&uri, "/demo.v1.Counter/Increment", amount, &[])
        .await
        .unwrap();
    assert_eq!(svc.executions(), 3);
    handle.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_retry_reaching_a_restarted_server_is_outcome_unknown() {
    let (handle, svc) = server().await;
    let uri = uri(&handle);
    let amount = Amount { delta: 1 }.encode_to_vec();
    let other = handle.incarnation() ^ 1;
    let status = raw(
        &uri,
        "/demo.v1.Counter/Increment",
        amount,
        &ours(7, 1, 2, other),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Aborted);
    let ours = rpc_core::grpc::status::from_tonic(&status);
    assert_eq!(ours.details_type(), rpc_core::envelope::SERVER_RESTARTED);
    assert_eq!(svc.executions(), 0);
    // Malformed at-most-once fields: refused, never run as a plain call.
    for bad in [
        "",
        "7.1.1.0.0",
        "7.1.1.0.0.x",
        "0.1.1.0.0.",
        "7.1.0.0.0.",
        "7.-1.1.0.0.",
    ] {
        let status = raw(
            &uri,
            "/demo.v1.Counter/Increment",
            Amount { delta: 1 }.encode_to_vec(),
            &[(md::CALL, bad.to_owned())],
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad:?}");
        assert!(status.message().contains("rpc-call"), "{status:?}");
    }
    assert_eq!(svc.executions(), 0);
    // Unknown services and methods.
    let status = raw(&uri, "/nope.Svc/X", vec![], &[]).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    let status = raw(&uri, "/demo.v1.Counter/Nope", vec![], &[])
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    handle.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn every_call_style_through_the_grpc_channel() {
    let gate = Gate::closed();
    let (handle, svc) = held_server(&["Slow", "Compute"], &gate).await;
    let client = Client::new(GrpcChannel::connect(&uri(&handle)).await.unwrap());
    let stub = CounterClient::new(client);
    assert_eq!(
        stub.increment(Amount { delta: 10 }).await.unwrap().value,
        10
    );
    assert_eq!(
        stub.increment_acked(Amount { delta: 1 })
            .await
            .unwrap()
            .value,
        11
    );
    match stub.withdraw(Amount { delta: 1000 }).await {
        Err(CallError::Raised(e, status)) => {
            assert_eq!((e.balance, e.requested), (11, 1000));
            assert_eq!(status.code(), Code::FailedPrecondition);
        }
        other => panic!("{other:?}"),
    }
    // Asynchronous: back at ACCEPT, before the handler ends (it is held
    // until after the call returned).
    stub.slow(Work {
        millis: 0,
        delta: 1,
    })
    .await
    .unwrap();
    assert_eq!(svc.executions(), 2, "the handler is held");
    // Deferred: the handle comes at ACCEPT, the result later, run once.
    let mut deferred = stub
        .compute(Work {
            millis: 0,
            delta: 100,
        })
        .await
        .unwrap();
    assert!(deferred.try_take().is_none(), "the handler is held");
    assert_eq!(svc.executions(), 2, "the handlers are held");
    gate.open();
    let count = deferred.await.unwrap();
    assert!(count.value >= 111, "{count:?}");
    // One-way.
    stub.nudge(Amount { delta: 1000 }).await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let v = stub.get(Empty {}).await.unwrap().value;
        if v == 1112 {
            break;
        }
        assert!(Instant::now() < deadline, "value {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(svc.executions(), 5);
    // Large payloads.
    let data = Bytes::from(vec![7u8; 1 << 20]);
    assert_eq!(
        stub.echo(Blob { data: data.clone() }).await.unwrap().data,
        data
    );
    // A deadline the server honours.
    let err = stub
        .slow(Work {
            millis: 2000,
            delta: 1,
        })
        .synchronous()
        .timeout(Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    handle.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn the_channel_retries_until_the_server_is_up() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let svc = Arc::new(CounterService::new());
    let starter = tokio::spawn({
        let svc = Arc::clone(&svc);
        async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            Server::builder()
                .add_service(CounterServer::from_arc(svc))
                .serve_grpc(("127.0.0.1", port))
                .await
                .unwrap()
        }
    });
    let client = Client::new(GrpcChannel::lazy(&format!("http://127.0.0.1:{port}")).unwrap());
    let stub = CounterClient::new(client);
    // A budget that outlasts any start-up delay of a busy machine.
    let count = stub
        .increment(Amount { delta: 3 })
        .retries(1000)
        .timeout(WAIT)
        .await
        .unwrap();
    assert_eq!(
        count,
        Count {
            value: 3,
            executions: 1
        }
    );
    assert_eq!(svc.executions(), 1);
    starter
        .await
        .unwrap()
        .shutdown(Duration::from_secs(5))
        .await
        .unwrap();
}

#[tokio::test]
async fn one_server_udp_and_grpc_share_one_engine() {
    let svc = Arc::new(CounterService::new());
    let handle = Server::builder()
        .add_service(CounterServer::from_arc(Arc::clone(&svc)))
        .serve_udp("127.0.0.1:0")
        .await
        .unwrap();
    let grpc_addr = handle.serve_grpc("127.0.0.1:0").await.unwrap();
    let udp = CounterClient::new(Client::new(
        UdpChannel::connect(handle.local_addr()).await.unwrap(),
    ));
    let grpc = CounterClient::new(Client::new(
        GrpcChannel::connect(&format!("http://{grpc_addr}"))
            .await
            .unwrap(),
    ));
    assert_eq!(udp.increment(Amount { delta: 2 }).await.unwrap().value, 2);
    assert_eq!(grpc.increment(Amount { delta: 3 }).await.unwrap().value, 5);
    assert_eq!(udp.get(Empty {}).await.unwrap().value, 5);
    assert_eq!(handle.stats().executions, 3);
    assert_eq!(svc.executions(), 2);
    handle.shutdown(Duration::from_secs(5)).await.unwrap();
    // The gRPC door closed with the server.
    assert!(tokio::net::TcpStream::connect(grpc_addr).await.is_err());
}
