//! By-hand benchmark of the gRPC face against plain tonic (not part of the
//! normal test run: `#[ignore]`). Run in release:
//!
//! ```text
//! cargo test --release -p rpc-tests --test grpc_bench -- --ignored --nocapture
//! ```
//!
//! Layout "single": client and server tasks on one current-thread tokio
//! runtime, 64-byte echo over 127.0.0.1. Peers, measured in the same run:
//! - `tonic`: plain tonic server (tonic's `Grpc::unary` with `ProstCodec`,
//!   what tonic-build generates) and plain tonic client;
//! - `face/tonic`: plain tonic client -> our gRPC face (no session: the
//!   handler runs directly, no history);
//! - `face/ours idem`: our generated client over `GrpcChannel` -> our face,
//!   idempotent `Echo` (through the engine, no history);
//! - `face/ours amo`: the same with a non-idempotent method (`Increment`,
//!   at-most-once: the engine's duplicate filter and reply history);
//! - `face/ours plain`: our client without session metadata (the face runs
//!   the handler directly, as for `face/tonic`).
//!
//! [`grpc_bench`] is self-contained so that the bench binary can call it.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // a by-hand benchmark

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use rpc_core::grpc::GrpcChannel;
use rpc_core::server::Server;
use rpc_core::Client;
use rpc_services::proto::demo::v1::{Amount, Blob, CounterClient, CounterServer};
use rpc_services::CounterService;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tonic::codegen::http;
use tonic::codegen::http::uri::PathAndQuery;

/// The plain tonic echo service, as tonic-build would generate it.
#[derive(Clone)]
struct PlainEcho;

struct EchoMethod;

impl tonic::server::UnaryService<Blob> for EchoMethod {
    type Response = Blob;
    type Future =
        Pin<Box<dyn Future<Output = Result<tonic::Response<Blob>, tonic::Status>> + Send>>;
    fn call(&mut self, request: tonic::Request<Blob>) -> Self::Future {
        Box::pin(async move { Ok(tonic::Response::new(request.into_inner())) })
    }
}

impl tonic::server::NamedService for PlainEcho {
    const NAME: &'static str = "demo.v1.Counter";
}

impl<B> tower::Service<http::Request<B>> for PlainEcho
where
    B: tonic::codegen::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        Box::pin(async move {
            let mut grpc =
                tonic::server::Grpc::new(tonic_prost::ProstCodec::<Blob, Blob>::default());
            Ok(grpc.unary(EchoMethod, req).await)
        })
    }
}

/// One measurement: p50 of sequential calls, and calls/s at each depth.
#[derive(Debug)]
pub struct Row {
    /// Which peer.
    pub name: &'static str,
    /// Median latency of sequential calls, microseconds.
    pub p50_us: f64,
    /// (in flight, calls per second).
    pub throughput: Vec<(usize, f64)>,
}

async fn measure<F, Fut>(name: &'static str, call: F) -> Row
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    for _ in 0..500 {
        call().await;
    }
    let mut lat = Vec::with_capacity(3000);
    for _ in 0..3000 {
        let t = Instant::now();
        call().await;
        lat.push(t.elapsed());
    }
    lat.sort();
    let p50_us = lat[lat.len() / 2].as_secs_f64() * 1e6;
    let mut throughput = Vec::new();
    for depth in [1usize, 16, 64] {
        let window = Duration::from_millis(1500);
        let start = Instant::now();
        let mut done = 0u64;
        let mut inflight = FuturesUnordered::new();
        for _ in 0..depth {
            inflight.push(call());
        }
        while inflight.next().await.is_some() {
            done += 1;
            if start.elapsed() < window {
                inflight.push(call());
            }
        }
        throughput.push((depth, done as f64 / start.elapsed().as_secs_f64()));
    }
    Row {
        name,
        p50_us,
        throughput,
    }
}

/// Runs every peer on the current runtime and returns the rows.
pub async fn grpc_bench() -> Vec<Row> {
    let payload = Bytes::from(vec![7u8; 64]);
    let mut rows = Vec::new();

    // Plain tonic server.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(PlainEcho)
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            ),
    );
    // Our server, gRPC face only.
    let ours = Server::builder()
        .add_service(CounterServer::new(CounterService::new()))
        .serve_grpc("127.0.0.1:0")
        .await
        .unwrap();
    let face_addr = ours.local_addr();

    let tonic_client = |addr: std::net::SocketAddr| async move {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .tcp_nodelay(true)
            .connect()
            .await
            .unwrap();
        tonic::client::Grpc::new(channel)
    };
    let path = PathAndQuery::from_static("/demo.v1.Counter/Echo");
    for (name, addr) in [("tonic", plain_addr), ("face/tonic", face_addr)] {
        let grpc = tonic_client(addr).await;
        let row = measure(name, || {
            let mut grpc = grpc.clone();
            let (path, data) = (path.clone(), payload.clone());
            async move {
                grpc.ready().await.unwrap();
                let codec = tonic_prost::ProstCodec::<Blob, Blob>::default();
                let reply = grpc
                    .unary(tonic::Request::new(Blob { data }), path, codec)
                    .await
                    .unwrap();
                assert_eq!(reply.get_ref().data.len(), 64);
            }
        })
        .await;
        rows.push(row);
    }
    let stub = CounterClient::new(Client::new(
        GrpcChannel::connect(&format!("http://{face_addr}"))
            .await
            .unwrap(),
    ));
    rows.push(
        measure("face/ours idem", || {
            let (stub, data) = (stub.clone(), payload.clone());
            async move {
                assert_eq!(stub.echo(Blob { data }).await.unwrap().data.len(), 64);
            }
        })
        .await,
    );
    rows.push(
        measure("face/ours amo", || {
            let stub = stub.clone();
            async move {
                stub.increment(Amount { delta: 1 }).await.unwrap();
            }
        })
        .await,
    );
    let config = rpc_core::grpc::GrpcClientConfig {
        session_metadata: false,
        ..Default::default()
    };
    let channel = GrpcChannel::connect(&format!("http://{face_addr}"))
        .await
        .unwrap()
        .with_config(config);
    let plain_stub = CounterClient::new(Client::new(channel));
    rows.push(
        measure("face/ours plain", || {
            let (stub, data) = (plain_stub.clone(), payload.clone());
            async move {
                assert_eq!(stub.echo(Blob { data }).await.unwrap().data.len(), 64);
            }
        })
        .await,
    );
    drop(ours);
    rows
}

#[test]
#[ignore = "a benchmark: run by hand in release"]
fn grpc_face_vs_plain_tonic() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rows = rt.block_on(grpc_bench());
    println!(
        "{:<16} {:>9} {:>12} {:>12} {:>12}",
        "peer", "p50 us", "calls/s @1", "@16", "@64"
    );
    for r in &rows {
        let t: Vec<String> = r
            .throughput
            .iter()
            .map(|(_, c)| format!("{c:>12.0}"))
            .collect();
        println!("{:<16} {:>9.1} {}", r.name, r.p50_us, t.join(" "));
    }
    assert_eq!(rows.len(), 5);
}
