//! Plain gRPC callers (no `rpc-call` header) are held to the engine's
//! limits like every other request: at most `max_concurrent` handlers run,
//! at most `max_pending` wait, the rest are refused with RESOURCE_EXHAUSTED
//! without running, one-way calls included, and all of them are counted in
//! the server's statistics. Also: the gRPC door closes idle connections,
//! and only those.
//!
//! Handlers are held at a gate; every verdict waits for an event (a
//! counter reaching a value), never for a time.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod server_support;

#[path = "common/gate.rs"]
#[allow(dead_code, unreachable_pub)]
mod gate;

use bytes::Bytes;
use futures::future::BoxFuture;
use gate::Gate;
use rpc_core::grpc::server::GrpcServerConfig;
use rpc_core::grpc::{metadata as md, BytesCodec};
use rpc_core::server::{Server, ServerHandle};
use rpc_core::{CallContext, MethodInfo, Protocol, Service, ServiceInfo, Status, Style};
use server_support::{wait_stats, WAIT};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;

const HOLD: u32 = 1;
const DROP: u32 = 2;

const fn method(name: &'static str, id: u32, oneway: bool) -> MethodInfo {
    MethodInfo {
        name,
        id,
        request_type: "gauge.v1.Raw",
        response_type: if oneway { "" } else { "gauge.v1.Raw" },
        raises_type: "",
        oneway,
        idempotent: false,
        protocol: if oneway { Protocol::R } else { Protocol::RR },
        style: if oneway { Style::OneWay } else { Style::Sync },
        timeout_ms: 0,
        retries: None,
    }
}

static METHODS: [MethodInfo; 2] = [method("Hold", HOLD, false), method("Drop", DROP, true)];
static INFO: ServiceInfo = ServiceInfo {
    package: "gauge.v1",
    name: "Gauge",
    full_name: "gauge.v1.Gauge",
    methods: &METHODS,
};

/// Both methods wait at the gate, counting how many run at once.
#[derive(Debug)]
struct Gauge {
    gate: Gate,
    running: AtomicUsize,
    max: AtomicUsize,
    finished: AtomicU64,
}

impl Gauge {
    fn new(gate: Gate) -> Arc<Gauge> {
        Arc::new(Gauge {
            gate,
            running: AtomicUsize::new(0),
            max: AtomicUsize::new(0),
            finished: AtomicU64::new(0),
        })
    }
}

/// The service over a shared gauge.
struct GaugeService(Arc<Gauge>);

impl Service for GaugeService {
    fn info(&self) -> &'static ServiceInfo {
        &INFO
    }

    fn call(
        &self,
        _method_id: u32,
        _ctx: CallContext,
        _request: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, Status>> {
        let gauge = Arc::clone(&self.0);
        Box::pin(async move {
            let now = gauge.running.fetch_add(1, Ordering::SeqCst) + 1;
            gauge.max.fetch_max(now, Ordering::SeqCst);
            gauge.gate.pass().await;
            gauge.running.fetch_sub(1, Ordering::SeqCst);
            gauge.finished.fetch_add(1, Ordering::SeqCst);
            Ok(Bytes::new())
        })
    }
}

async fn serve(gauge: &Arc<Gauge>, config: GrpcServerConfig) -> ServerHandle {
    Server::builder()
        .max_concurrent(2)
        .max_pending(3)
        .add_service(GaugeService(Arc::clone(gauge)))
        .serve_grpc_with("127.0.0.1:0", config)
        .await
        .unwrap()
}

async fn channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// One plain unary call: no `rpc-call` header, as any gRPC client sends it.
async fn plain(channel: Channel, path: &'static str) -> Result<MetadataMap, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let response = grpc
        .unary(
            tonic::Request::new(Bytes::new()),
            PathAndQuery::from_static(path),
            BytesCodec::default(),
        )
        .await?;
    Ok(response.metadata().clone())
}

/// Waits until `cond` holds; panics after [`WAIT`].
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_flood_of_plain_grpc_calls_is_held_to_max_concurrent() {
    let gate = Gate::closed();
    let gauge = Gauge::new(gate.clone());
    let server = serve(&gauge, GrpcServerConfig::default()).await;
    let ch = channel(server.local_addr()).await;
    let calls: Vec<_> = (0..10)
        .map(|_| tokio::spawn(plain(ch.clone(), "/gauge.v1.Gauge/Hold")))
        .collect();
    // Two run, three wait for a handler slot, five are refused: all ten
    // are requests of the engine.
    let s = wait_stats(&server, |s| s.requests == 10 && s.overloaded == 5).await;
    until("two handlers running", || {
        gauge.running.load(Ordering::SeqCst) == 2
    })
    .await;
    assert_eq!(s.executions, 2, "{s:#?}");
    assert_eq!(gauge.max.load(Ordering::SeqCst), 2);
    assert_eq!(server.engine().in_flight(), 5, "2 running + 3 waiting");
    gate.open();
    let mut ok = 0;
    let mut refused = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => ok += 1,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                assert!(status.metadata().get(md::INCARNATION).is_some());
                refused += 1;
            }
        }
    }
    assert_eq!((ok, refused), (5, 5));
    assert_eq!(
        gauge.max.load(Ordering::SeqCst),
        2,
        "never more than two at once"
    );
    assert_eq!(gauge.finished.load(Ordering::SeqCst), 5);
    let s = wait_stats(&server, |s| s.replies == 5).await;
    assert_eq!(
        (s.requests, s.executions, s.overloaded, s.errors),
        (10, 5, 5, 5),
        "{s:#?}"
    );
    assert_eq!(s.history_len, 0, "plain calls keep no history");
    server.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_flood_of_plain_one_way_calls_is_bounded() {
    let gate = Gate::closed();
    let gauge = Gauge::new(gate.clone());
    let server = serve(&gauge, GrpcServerConfig::default()).await;
    let ch = channel(server.local_addr()).await;
    let calls: Vec<_> = (0..10)
        .map(|_| tokio::spawn(plain(ch.clone(), "/gauge.v1.Gauge/Drop")))
        .collect();
    // A one-way call is answered once it has a handler slot or a waiting
    // slot: every call returns while the handlers are still held.
    let mut accepted = 0;
    let mut refused = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(meta) => {
                assert_eq!(md::get_str(&meta, md::ACCEPTED), Some("1"));
                accepted += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                refused += 1;
            }
        }
    }
    assert_eq!((accepted, refused), (5, 5));
    until("two handlers running", || {
        gauge.running.load(Ordering::SeqCst) == 2
    })
    .await;
    assert_eq!(
        server.engine().in_flight(),
        5,
        "2 running + 3 waiting, no more"
    );
    let s = server.stats();
    assert_eq!(
        (s.requests, s.executions, s.accepts, s.overloaded),
        (10, 2, 5, 5),
        "{s:#?}"
    );
    gate.open();
    until("five handlers finished", || {
        gauge.finished.load(Ordering::SeqCst) == 5
    })
    .await;
    assert_eq!(gauge.max.load(Ordering::SeqCst), 2);
    wait_stats(&server, |s| s.executions == 5).await;
    server.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn the_grpc_door_closes_idle_connections_and_only_those() {
    let gate = Gate::closed();
    let gauge = Gauge::new(gate.clone());
    let config = GrpcServerConfig::default().with_idle_timeout(Some(Duration::from_millis(300)));
    let server = serve(&gauge, config).await;
    // A holds a call open (its connection is made for that call, so it is
    // never idle before it); B, connected after it, makes none. (The test
    // keeps both channels: a dropped one closes its connection.)
    let a = tonic::transport::Endpoint::from_shared(format!("http://{}", server.local_addr()))
        .unwrap()
        .connect_lazy();
    let held = tokio::spawn(plain(a.clone(), "/gauge.v1.Gauge/Hold"));
    until("the held call runs", || {
        gauge.running.load(Ordering::SeqCst) == 1
    })
    .await;
    let _b = channel(server.local_addr()).await;
    until("two connections open", || {
        server.grpc_stats().connections_open == 2
    })
    .await;
    // B is closed at its first idle check; A's came earlier and found a
    // call open.
    // (The door counts the close before the connection's task ends and
    // is no longer counted open: wait for both.)
    until("the idle connection closed", || {
        let s = server.grpc_stats();
        s.closed_idle == 1 && s.connections_open == 1
    })
    .await;
    assert_eq!(server.grpc_stats().closed_idle, 1, "A stays open");
    assert!(!held.is_finished());
    gate.open();
    held.await.unwrap().unwrap();
    // Once its call is done, A is idle too.
    until("the other connection closed", || {
        server.grpc_stats().closed_idle == 2
    })
    .await;
    until("no connection open", || {
        server.grpc_stats().connections_open == 0
    })
    .await;
    server.shutdown(Duration::from_secs(5)).await.unwrap();
}
