//! Cancellation and long waits: a caller that drops a call tells the
//! server (CANCEL on UDP, TCP and from our gRPC client, the stream reset
//! of a plain gRPC call);
//! the handler, waiting on a lock-like future, learns it through
//! `CallContext::cancelled` and returns, freeing its slot. A method whose
//! handlers wait long gets a pool of handler slots of its own, so that its
//! waiters do not starve the other methods.
//!
//! Every wait is for an event (handlers started, handlers ended), bounded.

use bytes::Bytes;
use futures::future::BoxFuture;
use prost::Message as _;
use rpc_core::client::{TcpChannel, UdpChannel};
use rpc_core::grpc::BytesCodec;
use rpc_core::grpc::GrpcChannel;
use rpc_core::server::{Server, ServerConfig, ServerHandle};
use rpc_core::{CallContext, Client, Service, ServiceInfo, Status};
use rpc_tests::demo::{Amount, CounterClient, CounterServer, Empty};
use rpc_tests::{bounded, init_tracing, wait_until, CounterService};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tonic::codegen::http::uri::PathAndQuery;

const LIMIT: Duration = Duration::from_secs(180);
const WAIT: Duration = Duration::from_secs(60);

/// Counts handlers that started and ended.
#[derive(Debug, Default)]
struct Tally {
    started: AtomicU64,
    ended: AtomicU64,
    cancelled: AtomicU64,
}

/// Ends a handler in the tally, however it ends.
struct Ended(Arc<Tally>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.ended.fetch_add(1, Ordering::SeqCst);
    }
}

/// The Counter, with `Increment` waiting for a lock that is never granted
/// (a semaphore without permits) until its call is cancelled.
struct Waiting {
    inner: Arc<dyn Service>,
    lock: Arc<Semaphore>,
    tally: Arc<Tally>,
}

impl Service for Waiting {
    fn info(&self) -> &'static ServiceInfo {
        self.inner.info()
    }

    fn call(
        &self,
        method_id: u32,
        ctx: CallContext,
        request: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, Status>> {
        if ctx.method.name != "Increment" {
            return self.inner.call(method_id, ctx, request);
        }
        let (inner, lock, tally) = (
            Arc::clone(&self.inner),
            Arc::clone(&self.lock),
            Arc::clone(&self.tally),
        );
        Box::pin(async move {
            tally.started.fetch_add(1, Ordering::SeqCst);
            let _ended = Ended(Arc::clone(&tally));
            tokio::select! {
                granted = lock.acquire() => {
                    let _permit = granted.map_err(|_| Status::internal("lock closed"))?;
                    inner.call(method_id, ctx, request).await
                }
                () = ctx.cancelled() => {
                    tally.cancelled.fetch_add(1, Ordering::SeqCst);
                    Err(Status::cancelled("the caller gave up waiting for the lock"))
                }
            }
        })
    }
}

struct Doors {
    server: ServerHandle,
    tally: Arc<Tally>,
    counter: Arc<CounterService>,
    tcp: SocketAddr,
    grpc: SocketAddr,
}

async fn serve(config: ServerConfig, pool: Option<usize>) -> anyhow::Result<Doors> {
    let counter = Arc::new(CounterService::new());
    let tally = Arc::new(Tally::default());
    let service = Waiting {
        inner: Arc::new(CounterServer::from_arc(Arc::clone(&counter))),
        lock: Arc::new(Semaphore::new(0)),
        tally: Arc::clone(&tally),
    };
    let mut builder = Server::builder()
        .config(config)
        .add_shared_service(Arc::new(service));
    if let Some(limit) = pool {
        builder = builder.method_concurrency("demo.v1.Counter", "Increment", limit);
    }
    let server = builder.serve_udp("127.0.0.1:0").await?;
    let tcp = server.serve_tcp("127.0.0.1:0").await?;
    let grpc = server.serve_grpc("127.0.0.1:0").await?;
    Ok(Doors {
        server,
        tally,
        counter,
        tcp,
        grpc,
    })
}

/// A plain gRPC call (no session: a foreign client's), as tonic makes it.
async fn plain_grpc_increment(channel: tonic::transport::Channel) -> Result<Bytes, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let request = tonic::Request::new(Bytes::from(Amount { delta: 1 }.encode_to_vec()));
    grpc.unary(
        request,
        PathAndQuery::from_static("/demo.v1.Counter/Increment"),
        BytesCodec::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_abandoned_calls_leave_no_handler_running_and_no_slot_held() -> anyhow::Result<()>
{
    init_tracing();
    bounded(LIMIT, async {
        const ROUNDS: u64 = 10;
        const PER_ROUND: u64 = 100;
        let doors = serve(ServerConfig::default(), None).await?;
        let udp = Client::new(UdpChannel::connect(doors.server.local_addr()).await?);
        let tcp = Client::new(TcpChannel::connect(doors.tcp).await?);
        let ours_grpc = Client::new(GrpcChannel::connect(&format!("http://{}", doors.grpc)).await?);
        // Our gRPC client cancels only on a server it has heard from (a
        // foreign one would take the empty CANCEL as a request).
        CounterClient::new(ours_grpc.clone()).get(Empty {}).await?;
        let grpc = tonic::transport::Endpoint::from_shared(format!("http://{}", doors.grpc))?
            .connect()
            .await?;
        let mut expected = 0;
        for door in ["udp", "tcp", "our grpc", "plain grpc"] {
            for _ in 0..ROUNDS {
                let mut calls = Vec::new();
                for _ in 0..PER_ROUND {
                    let task = match door {
                        "udp" | "tcp" | "our grpc" => {
                            let stub = CounterClient::new(match door {
                                "udp" => udp.clone(),
                                "tcp" => tcp.clone(),
                                _ => ours_grpc.clone(),
                            });
                            tokio::spawn(async move {
                                let _ = stub.increment(Amount { delta: 1 }).await;
                            })
                        }
                        _ => {
                            let channel = grpc.clone();
                            tokio::spawn(async move {
                                let _ = plain_grpc_increment(channel).await;
                            })
                        }
                    };
                    calls.push(task);
                }
                expected += PER_ROUND;
                wait_until(
                    WAIT,
                    &format!("{door}: {expected} handlers waiting for the lock"),
                    || doors.tally.started.load(Ordering::SeqCst) == expected,
                )
                .await?;
                // The callers give up: their futures are dropped.
                for call in &calls {
                    call.abort();
                }
                wait_until(WAIT, &format!("{door}: every handler to end"), || {
                    doors.tally.ended.load(Ordering::SeqCst) == expected
                        && doors.server.engine().in_flight() == 0
                })
                .await?;
            }
        }
        assert_eq!(
            doors.tally.cancelled.load(Ordering::SeqCst),
            4 * ROUNDS * PER_ROUND
        );
        assert_eq!(
            doors.counter.executions(),
            0,
            "no increment went past the lock"
        );
        let stats = doors.server.stats();
        assert_eq!(
            stats.cancels_applied,
            3 * ROUNDS * PER_ROUND,
            "UDP, TCP and our gRPC client: {stats:?}"
        );
        // Every slot is free: calls of every door still get answers.
        for client in [&udp, &tcp, &ours_grpc] {
            CounterClient::new(client.clone()).get(Empty {}).await?;
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_deferred_handle_cancels_the_call_on_every_door() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let doors = serve(ServerConfig::default(), None).await?;
        let clients = [
            (
                "udp",
                Client::new(UdpChannel::connect(doors.server.local_addr()).await?),
            ),
            ("tcp", Client::new(TcpChannel::connect(doors.tcp).await?)),
            // Our gRPC client sends its CANCEL as a request of its own (a
            // reset stream alone is not an abandonment: it may send the
            // request again on a new one; idl/PROTOCOL.md, 11.1).
            (
                "grpc",
                Client::new(GrpcChannel::connect(&format!("http://{}", doors.grpc)).await?),
            ),
        ];
        for (n, (door, client)) in (1u64..).zip(&clients) {
            let handle = CounterClient::new(client.clone())
                .increment(Amount { delta: 1 })
                .deferred()
                .await?;
            wait_until(
                WAIT,
                &format!("{door}: the handler waits for the lock"),
                || doors.tally.started.load(Ordering::SeqCst) == n,
            )
            .await?;
            assert!(!handle.is_ready(), "{door}: the lock is never granted");
            // The caller abandons the call: the handle goes.
            drop(handle);
            wait_until(WAIT, &format!("{door}: the handler learns it"), || {
                doors.tally.cancelled.load(Ordering::SeqCst) == n
                    && doors.tally.ended.load(Ordering::SeqCst) == n
                    && doors.server.engine().in_flight() == 0
            })
            .await?;
        }
        assert_eq!(doors.counter.executions(), 0, "no increment ran");
        let stats = doors.server.stats();
        assert_eq!(
            stats.cancels_applied, 3,
            "CANCEL on UDP, TCP and gRPC: {stats:?}"
        );
        Ok(())
    })
    .await
}

/// Our gRPC client sends a CANCEL only for a call abandoned after a copy
/// went out and before its answer, to a server it knows is ours: not for a
/// first call to a server not heard from yet (a foreign server would take
/// the empty message as a request), nor for an answered, one-way or
/// asynchronous call (whose result is never collected).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_grpc_client_sends_no_cancel_where_none_is_due() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let doors = serve(ServerConfig::default(), None).await?;
        let stub = CounterClient::new(Client::new(
            GrpcChannel::connect(&format!("http://{}", doors.grpc)).await?,
        ));
        let abandon_an_increment = |n: u64| {
            let stub = stub.clone();
            let tally = Arc::clone(&doors.tally);
            async move {
                let call = tokio::spawn(async move {
                    let _ = stub.increment(Amount { delta: 1 }).await;
                });
                wait_until(WAIT, "the increment waits for the lock", || {
                    tally.started.load(Ordering::SeqCst) == n
                })
                .await?;
                call.abort();
                let _ = call.await;
                anyhow::Ok(())
            }
        };
        // The server is not known to be ours yet.
        abandon_an_increment(1).await?;
        // Answered, one-way, asynchronous.
        stub.get(Empty {}).await?;
        stub.nudge(Amount { delta: 1 }).await?;
        stub.increment(Amount { delta: 1 }).asynchronous().await?;
        wait_until(WAIT, "the asynchronous increment waits", || {
            doors.tally.started.load(Ordering::SeqCst) == 2
        })
        .await?;
        // The one CANCEL due: an abandoned call to a server known to be ours.
        abandon_an_increment(3).await?;
        wait_until(WAIT, "its CANCEL", || doors.server.stats().cancels >= 1).await?;
        let stats = doors.server.stats();
        assert_eq!(
            (stats.cancels, stats.cancels_applied),
            (1, 1),
            "only the abandoned call to a known server: {stats:?}"
        );
        assert_eq!(doors.tally.cancelled.load(Ordering::SeqCst), 1);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_never_makes_a_completed_call_run_again() -> anyhow::Result<()> {
    use rpc_core::envelope::{Envelope, ExchangeProtocol, MessageType};
    init_tracing();
    bounded(LIMIT, async {
        let doors = serve(ServerConfig::default(), None).await?;
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        socket.connect(doors.server.local_addr()).await?;
        const SESSION: u64 = 0xCA_0001;
        // IncrementAcked is not held by the test's service: it completes.
        let request = |attempt| Envelope {
            attempt,
            protocol: ExchangeProtocol::Rr as i32,
            ..Envelope::request(
                SESSION,
                1,
                rpc_tests::demo::counter::SERVICE.full_name,
                rpc_tests::demo::counter::INCREMENT_ACKED.id,
                Bytes::from(Amount { delta: 5 }.encode_to_vec()),
            )
        };
        let mut buf = vec![0u8; 65_536];
        let call = |env: Envelope| {
            let socket = &socket;
            let bytes = env.encode_to_vec();
            async move {
                socket.send(&bytes).await?;
                anyhow::Ok(())
            }
        };
        call(request(1)).await?;
        let n = tokio::time::timeout(WAIT, socket.recv(&mut buf)).await??;
        let first = Envelope::decode(&buf[..n])?;
        assert_eq!(first.r#type, MessageType::Reply as i32, "{first:?}");
        // The caller "abandons" the finished call, then a late copy of its
        // request arrives: the stored reply, not a second run.
        call(Envelope::cancel(SESSION, 1)).await?;
        call(request(2)).await?;
        let n = tokio::time::timeout(WAIT, socket.recv(&mut buf)).await??;
        let again = Envelope::decode(&buf[..n])?;
        assert_eq!(
            again.payload, first.payload,
            "the stored reply, byte for byte"
        );
        assert_eq!(doors.counter.executions(), 1);
        let stats = doors.server.stats();
        assert_eq!((stats.cancels, stats.cancels_applied), (1, 0), "{stats:?}");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_with_its_own_pool_does_not_starve_the_others() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        // Two handler slots for the server; Increment has 200 of its own.
        let config = ServerConfig {
            max_concurrent: 2,
            ..ServerConfig::default()
        };
        let doors = serve(config, Some(200)).await?;
        let client = Client::new(TcpChannel::connect(doors.tcp).await?);
        let stub = CounterClient::new(client);
        let mut waiting = Vec::new();
        for _ in 0..50 {
            let stub = stub.clone();
            waiting.push(tokio::spawn(async move {
                let _ = stub.increment(Amount { delta: 1 }).await;
            }));
        }
        wait_until(WAIT, "50 handlers waiting for the lock", || {
            doors.tally.started.load(Ordering::SeqCst) == 50
        })
        .await?;
        // 50 long waits hold no slot of the two: other calls run.
        for _ in 0..5 {
            stub.get(Empty {}).await?;
        }
        for w in &waiting {
            w.abort();
        }
        wait_until(WAIT, "the waiters to end", || {
            doors.tally.ended.load(Ordering::SeqCst) == 50
        })
        .await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_pool_for_an_unknown_method_is_refused() -> anyhow::Result<()> {
    let counter = Arc::new(CounterService::new());
    let err = Server::builder()
        .add_service(CounterServer::from_arc(counter))
        .method_concurrency("demo.v1.Counter", "NoSuchMethod", 10)
        .serve_udp("127.0.0.1:0")
        .await
        .expect_err("unknown method");
    assert!(err.to_string().contains("NoSuchMethod"), "{err}");
    Ok(())
}
