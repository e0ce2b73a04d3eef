//! Reply metadata, interceptors (authentication, trace context, metrics,
//! their order) and the caller's identity and arrival time, on every door:
//! UDP (through the fault proxy at 20% loss and 10% duplication), TCP and
//! gRPC.

use bytes::Bytes;
use futures::future::BoxFuture;
use rpc_core::client::TcpChannel;
use rpc_core::grpc::GrpcChannel;
use rpc_core::intercept::auth::{BearerAuth, BearerToken};
use rpc_core::intercept::metrics::Metrics;
use rpc_core::intercept::trace::{TraceContext, TracePropagation};
use rpc_core::intercept::{
    ClientInterceptor, ClientOutcome, Completed, Interceptor, InvocationInfo,
};
use rpc_core::server::{Server, ServerBuilder, ServerConfig, ServerHandle};
use rpc_core::{CallContext, CallError, Client, Code, Service, ServiceInfo, Status};
use rpc_tests::demo::{Amount, Count, CounterClient, CounterServer, Empty};
use rpc_tests::{bounded, faults, init_tracing, lossy_config, proxy, CounterService, Gate};
use std::future::IntoFuture as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);

/// What the wrapped handlers saw.
#[derive(Debug, Default)]
struct Seen {
    runs: AtomicU64,
    identities: Mutex<Vec<Option<String>>>,
    traces: Mutex<Vec<Option<TraceContext>>>,
    received: Mutex<Vec<Instant>>,
}

/// The Counter, with every handler run numbered in its reply metadata
/// (`run`), and what it saw recorded. With `downstream`, `Increment` also
/// calls `Get` on that client first (a server calling a peer).
struct Tagged {
    inner: Arc<dyn Service>,
    seen: Arc<Seen>,
    downstream: Option<CounterClient>,
    gate: Option<Gate>,
}

impl Service for Tagged {
    fn info(&self) -> &'static ServiceInfo {
        self.inner.info()
    }

    fn call(
        &self,
        method_id: u32,
        ctx: CallContext,
        request: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, Status>> {
        let inner = Arc::clone(&self.inner);
        let seen = Arc::clone(&self.seen);
        let downstream = self.downstream.clone();
        let gate = self.gate.clone();
        Box::pin(async move {
            seen.received
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(ctx.received_at());
            if let Some(gate) = gate {
                gate.pass().await;
            }
            let run = seen.runs.fetch_add(1, Ordering::SeqCst) + 1;
            ctx.set_reply_metadata("run", run.to_string());
            seen.identities
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(ctx.peer_identity().map(|i| i.name().to_owned()));
            seen.traces
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(TraceContext::current());
            if let (Some(peer), "Increment") = (downstream, ctx.method.name) {
                // The handler's `?` on a peer's failure keeps its meaning.
                peer.get(Empty {}).await?;
            }
            inner.call(method_id, ctx, request).await
        })
    }
}

struct Doors {
    server: ServerHandle,
    counter: Arc<CounterService>,
    seen: Arc<Seen>,
    udp: SocketAddr,
    tcp: SocketAddr,
    grpc: SocketAddr,
}

async fn serve(
    builder: ServerBuilder,
    downstream: Option<CounterClient>,
    gate: Option<Gate>,
) -> anyhow::Result<Doors> {
    let counter = Arc::new(CounterService::new());
    let seen = Arc::new(Seen::default());
    let tagged = Tagged {
        inner: Arc::new(CounterServer::from_arc(Arc::clone(&counter))),
        seen: Arc::clone(&seen),
        downstream,
        gate,
    };
    let server = builder
        .add_shared_service(Arc::new(tagged))
        .serve_udp("127.0.0.1:0")
        .await?;
    let tcp = server.serve_tcp("127.0.0.1:0").await?;
    let grpc = server.serve_grpc("127.0.0.1:0").await?;
    let udp = server.local_addr();
    Ok(Doors {
        server,
        counter,
        seen,
        udp,
        tcp,
        grpc,
    })
}

/// One client per door: UDP through a proxy losing 20% and duplicating
/// 10% of the datagrams each way, TCP, gRPC.
async fn clients(
    doors: &Doors,
    seed: u64,
) -> anyhow::Result<(Vec<(&'static str, Client)>, rpc_core::fault::FaultProxy)> {
    let lossy = proxy(doors.udp, faults(seed, 0.2, 0.1)).await?;
    let udp =
        rpc_core::client::UdpChannel::connect_with(lossy.local_addr(), lossy_config()).await?;
    let tcp = TcpChannel::connect(doors.tcp).await?;
    let grpc = GrpcChannel::connect(&format!("http://{}", doors.grpc)).await?;
    Ok((
        vec![
            ("udp", Client::new(udp)),
            ("tcp", Client::new(tcp)),
            ("grpc", Client::new(grpc)),
        ],
        lossy,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_metadata_travels_on_every_door_and_a_replay_carries_the_same() -> anyhow::Result<()>
{
    init_tracing();
    bounded(LIMIT, async {
        let doors = serve(Server::builder(), None, None).await?;
        let (clients, lossy) = clients(&doors, 7).await?;
        let mut calls = 0u64;
        // `withdrawals`: Withdraw calls so far (one per door), each a
        // handler run without an execution.
        for (withdrawals, (door, client)) in (0u64..).zip(&clients) {
            let stub = CounterClient::new(client.clone());
            for i in 0..40 {
                let (count, metadata): (Count, _) =
                    stub.increment(Amount { delta: 1 }).with_metadata().await?;
                calls += 1;
                // The handler's run number and the counter's execution
                // number are the same run: a replayed reply (a lost
                // answer's retransmission) must carry its own run's tag.
                assert_eq!(
                    metadata.get("run"),
                    Some((count.executions + withdrawals).to_string().as_str()),
                    "{door} call {i}: {metadata:?} with {count:?}"
                );
            }
            // A failure's metadata rides on its status.
            let err = stub
                .withdraw(Amount { delta: 1_000_000 })
                .await
                .expect_err("overdrawn");
            let status = match &err {
                CallError::Raised(_, status) => status,
                other => anyhow::bail!("{door}: expected the raised error, got {other:?}"),
            };
            assert!(
                status.metadata().and_then(|m| m.get("run")).is_some(),
                "{door}: {status:?} has no run tag"
            );
        }
        assert_eq!(
            doors.counter.executions(),
            calls,
            "every increment ran exactly once"
        );
        let stats = doors.server.stats();
        assert!(
            stats.duplicates_replayed + stats.duplicates_dropped > 0,
            "the lossy path produced no duplicate at all: {stats:?} {:?}",
            lossy.stats()
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_a_valid_token_never_runs_on_any_door() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let auth = BearerAuth::new()
            .token("alice-secret", "alice")
            .token("bob-secret", "bob")
            .rule("demo.v1.Counter", "Withdraw", ["alice"]);
        let doors = serve(Server::builder().intercept(auth), None, None).await?;
        let (clients, _lossy) = clients(&doors, 11).await?;
        for (door, client) in &clients {
            let anonymous = CounterClient::new(client.clone());
            let wrong = CounterClient::new(client.clone().intercepted(BearerToken::new("guess")));
            let bob =
                CounterClient::new(client.clone().intercepted(BearerToken::new("bob-secret")));
            for (who, stub, code) in [
                ("anonymous", &anonymous, Code::Unauthenticated),
                ("a wrong token", &wrong, Code::Unauthenticated),
            ] {
                let err = stub
                    .increment(Amount { delta: 1 })
                    .await
                    .expect_err("refused");
                assert_eq!(err.code(), code, "{door}, {who}: {err}");
                let may_have_run = err.rpc().is_some_and(rpc_core::Error::may_have_run);
                assert!(
                    !may_have_run,
                    "{door}, {who}: the caller learns it did not run"
                );
            }
            let err = bob
                .withdraw(Amount { delta: 0 })
                .await
                .expect_err("not bob's");
            assert_eq!(err.code(), Code::PermissionDenied, "{door}: {err}");
        }
        assert_eq!(doors.counter.executions(), 0, "no refused call ran");
        assert_eq!(doors.seen.runs.load(Ordering::SeqCst), 0, "no handler ran");
        assert!(doors.server.stats().intercept_refused >= 9);

        for (door, client) in &clients {
            let alice =
                CounterClient::new(client.clone().intercepted(BearerToken::new("alice-secret")));
            alice.increment(Amount { delta: 1 }).await?;
            alice.withdraw(Amount { delta: 1 }).await?;
            let identities = doors
                .seen
                .identities
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            assert_eq!(
                identities.last().cloned().flatten().as_deref(),
                Some("alice"),
                "{door}: the handler sees the principal"
            );
        }
        assert_eq!(doors.counter.executions(), 6);
        Ok(())
    })
    .await
}

/// Records the order of `before` and `after` calls.
struct Recorder {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
    refuse: bool,
}

impl Recorder {
    fn push(&self, what: String) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(what);
    }
}

impl Interceptor for Recorder {
    fn before(&self, ctx: &mut CallContext) -> Result<(), Status> {
        self.push(format!("server {} before", self.name));
        if self.refuse {
            return Err(Status::permission_denied(format!("{} says no", self.name)));
        }
        ctx.set_reply_metadata(format!("seen-by-{}", self.name), "yes");
        Ok(())
    }

    fn after(&self, call: &mut Completed<'_>) {
        self.push(format!(
            "server {} after {} ran={}",
            self.name,
            call.status.map_or("OK", |s| s.code().name()),
            call.ran
        ));
    }
}

impl ClientInterceptor for Recorder {
    fn before(&self, _: &mut rpc_core::call::Invocation) -> Result<(), Status> {
        self.push(format!("client {} before", self.name));
        Ok(())
    }

    fn after(&self, _: &InvocationInfo, outcome: &ClientOutcome<'_>) {
        let what = match outcome {
            ClientOutcome::Answer(Ok(_)) => "OK".to_owned(),
            ClientOutcome::Answer(Err(s)) => s.code().name().to_owned(),
            other => format!("{other:?}"),
        };
        self.push(format!("client {} after {what}", self.name));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interceptors_run_as_layers_in_the_documented_order() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let log = Arc::new(Mutex::new(Vec::new()));
        let rec = |name, refuse| Recorder {
            name,
            log: Arc::clone(&log),
            refuse,
        };
        let doors = serve(
            Server::builder()
                .intercept(rec("A", false))
                .intercept(rec("B", false)),
            None,
            None,
        )
        .await?;
        let client = Client::new(TcpChannel::connect(doors.tcp).await?)
            .intercepted(rec("X", false))
            .intercepted(rec("Y", false));
        let (_, metadata) = CounterClient::new(client.clone())
            .increment(Amount { delta: 1 })
            .with_metadata()
            .await?;
        assert_eq!(metadata.get("seen-by-A"), Some("yes"));
        assert_eq!(metadata.get("seen-by-B"), Some("yes"));
        let taken = std::mem::take(&mut *log.lock().unwrap_or_else(PoisonError::into_inner));
        assert_eq!(
            taken,
            [
                // `intercepted` wraps: the last added is the outermost.
                "client Y before",
                "client X before",
                "server A before",
                "server B before",
                "server B after OK ran=true",
                "server A after OK ran=true",
                "client X after OK",
                "client Y after OK",
            ]
        );

        // A refusal by the inner one: the outer one sees it, the handler
        // never runs.
        let refusing = serve(
            Server::builder()
                .intercept(rec("A", false))
                .intercept(rec("B", true)),
            None,
            None,
        )
        .await?;
        let client = Client::new(TcpChannel::connect(refusing.tcp).await?);
        let err = CounterClient::new(client)
            .increment(Amount { delta: 1 })
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::PermissionDenied);
        let taken = std::mem::take(&mut *log.lock().unwrap_or_else(PoisonError::into_inner));
        assert_eq!(
            taken,
            [
                "server A before",
                "server B before",
                "server A after PERMISSION_DENIED ran=false",
            ]
        );
        assert_eq!(refusing.counter.executions(), 0);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_context_flows_from_the_caller_through_a_handler_to_its_calls(
) -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let back = serve(Server::builder().intercept(TracePropagation), None, None).await?;
        let to_back =
            Client::new(TcpChannel::connect(back.tcp).await?).intercepted(TracePropagation);
        let front = serve(
            Server::builder().intercept(TracePropagation),
            Some(CounterClient::new(to_back)),
            None,
        )
        .await?;
        let (clients, _lossy) = clients(&front, 13).await?;
        for (door, client) in clients {
            let stub = CounterClient::new(client.intercepted(TracePropagation));
            let root = TraceContext::new_root();
            root.scope(stub.increment(Amount { delta: 1 }).into_future())
                .await?;
            let at_front = front
                .seen
                .traces
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .last()
                .copied()
                .flatten();
            let at_back = back
                .seen
                .traces
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .last()
                .copied()
                .flatten();
            let (Some(f), Some(b)) = (at_front, at_back) else {
                anyhow::bail!("{door}: no trace context in a handler: {at_front:?} {at_back:?}");
            };
            assert_eq!(f.trace_id, root.trace_id, "{door}: one trace");
            assert_eq!(
                f.parent_id, root.span_id,
                "{door}: the front handler is the caller's child"
            );
            assert_eq!(b.trace_id, root.trace_id, "{door}: one trace");
            assert_eq!(
                b.parent_id, f.span_id,
                "{door}: the back handler is the front handler's child"
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_and_errors_and_export_prometheus_text() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let metrics = Metrics::new();
        let endpoint = metrics.serve("127.0.0.1:0".parse()?).await?;
        let doors = serve(Server::builder().intercept(metrics.clone()), None, None).await?;
        let client_metrics = Metrics::new();
        let (clients, _lossy) = clients(&doors, 17).await?;
        for (_, client) in &clients {
            let stub = CounterClient::new(client.clone().intercepted(client_metrics.clone()));
            for _ in 0..5 {
                stub.increment(Amount { delta: 1 }).await?;
            }
            let _ = stub.withdraw(Amount { delta: -1 }).await.expect_err("invalid");
        }
        let snap = metrics.snapshot();
        let inc = snap.method("server", "demo.v1.Counter", "Increment").expect("increment");
        assert_eq!(inc.calls, 15);
        assert!(inc.errors.is_empty());
        let wd = snap.method("server", "demo.v1.Counter", "Withdraw").expect("withdraw");
        assert_eq!(wd.calls, 3);
        assert_eq!(wd.errors.get(&Code::InvalidArgument), Some(&3));
        let client_side = client_metrics.snapshot();
        assert_eq!(client_side.method("client", "demo.v1.Counter", "Increment").map(|m| m.calls), Some(15));

        // The endpoint, read as a scraper would.
        let text = http_get(endpoint.local_addr(), "/metrics").await?;
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        for line in [
            r#"rpc_calls_total{side="server",service="demo.v1.Counter",method="Increment"} 15"#,
            r#"rpc_errors_total{side="server",service="demo.v1.Counter",method="Withdraw",code="INVALID_ARGUMENT"} 3"#,
            r#"rpc_latency_seconds_count{side="server",service="demo.v1.Counter",method="Increment"} 15"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(http_get(endpoint.local_addr(), "/other").await?.starts_with("HTTP/1.1 404"));
        Ok(())
    })
    .await
}

async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    stream.read_to_string(&mut out).await?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_at_is_when_the_request_arrived_not_when_it_ran() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        // One handler slot, held: the second request waits in the queue.
        let gate = Gate::closed();
        let doors = serve(
            Server::builder().config(ServerConfig {
                max_concurrent: 1,
                ..ServerConfig::default()
            }),
            None,
            Some(gate.clone()),
        )
        .await?;
        let stub = CounterClient::new(Client::new(TcpChannel::connect(doors.tcp).await?));
        let first = tokio::spawn({
            let stub = stub.clone();
            async move { stub.increment(Amount { delta: 1 }).await }
        });
        let second = tokio::spawn({
            let stub = stub.clone();
            async move { stub.increment(Amount { delta: 1 }).await }
        });
        rpc_tests::wait_until(Duration::from_secs(30), "both requests to arrive", || {
            doors.server.stats().requests >= 2
        })
        .await?;
        let opened = Instant::now();
        gate.open();
        first.await??;
        second.await??;
        let received = doors
            .seen
            .received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        assert_eq!(received.len(), 2);
        for r in received {
            assert!(
                r < opened,
                "received_at {r:?} is after the handler slot freed ({opened:?})"
            );
        }
        Ok(())
    })
    .await
}

/// Refuses every call before it is sent.
struct Gatekeeper;

impl ClientInterceptor for Gatekeeper {
    fn before(&self, _: &mut rpc_core::call::Invocation) -> Result<(), Status> {
        Err(Status::permission_denied("not from this client"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_a_client_interceptor_refuses_is_never_sent() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let doors = serve(Server::builder(), None, None).await?;
        let client = Client::new(TcpChannel::connect(doors.tcp).await?).intercepted(Gatekeeper);
        let stub = CounterClient::new(client);
        let err = stub
            .increment(Amount { delta: 1 })
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::PermissionDenied, "{err}");
        let err = stub.nudge(Amount { delta: 1 }).await.expect_err("refused");
        assert_eq!(err.code(), Code::PermissionDenied, "one-way: {err}");
        assert_eq!(
            doors.server.stats().requests,
            0,
            "nothing reached the server"
        );
        assert_eq!(doors.counter.executions(), 0);
        Ok(())
    })
    .await
}
