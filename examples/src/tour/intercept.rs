//! What servers that call each other need, on every door of one server
//! (UDP, TCP, gRPC): reply metadata, the three shipped interceptors
//! (bearer-token authentication, W3C trace context, Prometheus metrics),
//! and cancellation of a handler that waits for a lock.

use crate::report::{describe, Report, Row};
use anyhow::Context as _;
use bytes::Bytes;
use futures::future::BoxFuture;
use rpc_core::client::{TcpChannel, UdpChannel};
use rpc_core::grpc::GrpcChannel;
use rpc_core::intercept::auth::{BearerAuth, BearerToken};
use rpc_core::intercept::metrics::Metrics;
use rpc_core::intercept::trace::{TraceContext, TracePropagation};
use rpc_core::server::Server;
use rpc_core::{CallContext, Client, Code, Service, ServiceInfo, Status};
use rpc_services::proto::demo::v1::{Amount, CounterClient, CounterServer};
use rpc_services::CounterService;
use std::future::IntoFuture as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};

const PATH: &str = "interceptors";
const TOKEN: &str = "tour-secret";

/// The Counter; every answer tells, in its metadata, which run of the
/// handler it is, who called and in which trace. `Withdraw` waits for a
/// lock that is never granted, until its call is cancelled.
struct Annotated {
    inner: Arc<dyn Service>,
    runs: AtomicU64,
    lock: Arc<Semaphore>,
    waiting: Arc<Notify>,
    cancelled: Arc<AtomicU64>,
}

impl Service for Annotated {
    fn info(&self) -> &'static ServiceInfo {
        self.inner.info()
    }

    fn call(
        &self,
        method_id: u32,
        ctx: CallContext,
        request: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, Status>> {
        let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        ctx.set_reply_metadata("run", run.to_string());
        if let Some(who) = ctx.peer_identity() {
            ctx.set_reply_metadata("principal", who.name().to_owned());
        }
        if let Some(trace) = TraceContext::current() {
            ctx.set_reply_metadata("trace-id", format!("{:032x}", trace.trace_id));
        }
        if ctx.method.name != "Withdraw" {
            return self.inner.call(method_id, ctx, request);
        }
        let (lock, waiting, cancelled) = (
            Arc::clone(&self.lock),
            Arc::clone(&self.waiting),
            Arc::clone(&self.cancelled),
        );
        Box::pin(async move {
            waiting.notify_one();
            tokio::select! {
                _ = lock.acquire() => Err(Status::internal("the lock is never granted")),
                () = ctx.cancelled() => {
                    cancelled.fetch_add(1, Ordering::SeqCst);
                    Err(Status::cancelled("the caller gave up waiting"))
                }
            }
        })
    }
}

/// The interceptors section of the tour.
pub(crate) async fn intercept(report: &mut Report) -> anyhow::Result<()> {
    let counter = Arc::new(CounterService::new());
    let waiting = Arc::new(Notify::new());
    let cancelled = Arc::new(AtomicU64::new(0));
    let service = Annotated {
        inner: Arc::new(CounterServer::from_arc(Arc::clone(&counter))),
        runs: AtomicU64::new(0),
        lock: Arc::new(Semaphore::new(0)),
        waiting: Arc::clone(&waiting),
        cancelled: Arc::clone(&cancelled),
    };
    let metrics = Metrics::new();
    let endpoint = metrics.serve("127.0.0.1:0".parse()?).await?;
    let server = Server::builder()
        .intercept(metrics.clone())
        .intercept(TracePropagation)
        .intercept(BearerAuth::new().token(TOKEN, "tour"))
        .add_shared_service(Arc::new(service))
        .serve_udp("127.0.0.1:0")
        .await
        .context("starting the intercepted server")?;
    let tcp = server.serve_tcp("127.0.0.1:0").await?;
    let grpc = server.serve_grpc("127.0.0.1:0").await?;
    println!(
        "interceptors: metrics, trace context and bearer-token auth on UDP {}, TCP {tcp}, gRPC {grpc}; Prometheus text at http://{}/metrics",
        server.local_addr(),
        endpoint.local_addr()
    );
    let doors: Vec<(&str, Client)> = vec![
        (
            "udp",
            Client::new(UdpChannel::connect(server.local_addr()).await?),
        ),
        ("tcp", Client::new(TcpChannel::connect(tcp).await?)),
        (
            "grpc",
            Client::new(GrpcChannel::connect(&format!("http://{grpc}")).await?),
        ),
    ];
    let mut calls = 0u64;
    for (door, client) in &doors {
        let path = format!("{PATH} {door}");
        // Without the token: refused, never run.
        let before = counter.executions();
        let start = Instant::now();
        let anonymous = CounterClient::new(client.clone());
        let outcome = anonymous.increment(Amount { delta: 1 }).await;
        calls += 1;
        let result = match &outcome {
            Err(e) if e.code() == Code::Unauthenticated && counter.executions() == before => {
                Ok(format!("refused before it ran: {}", describe(e)))
            }
            other => Err(format!(
                "expected UNAUTHENTICATED and no run, got {other:?}"
            )),
        };
        report.sync_call(&path, "Increment, no token", "RR", result, start);

        // With the token, in a trace of the caller's.
        let stub = CounterClient::new(
            client
                .clone()
                .intercepted(BearerToken::new(TOKEN))
                .intercepted(TracePropagation),
        );
        let root = TraceContext::new_root();
        let start = Instant::now();
        let outcome = root
            .scope(stub.increment(Amount { delta: 1 }).with_metadata())
            .await;
        calls += 1;
        let want_trace = format!("{:032x}", root.trace_id);
        let result = match &outcome {
            Ok((count, md))
                if md.get("principal") == Some("tour")
                    && md.get("trace-id") == Some(want_trace.as_str())
                    && md.get("run").is_some() =>
            {
                Ok(format!(
                    "value {}; answer metadata: run {}, principal tour, trace {}..",
                    count.value,
                    md.get("run").unwrap_or_default(),
                    &want_trace[..8]
                ))
            }
            other => Err(format!("answer metadata not as set: {other:?}")),
        };
        report.sync_call(&path, "Increment, token, traced", "RR", result, start);

        // A handler waiting for a lock; the caller gives up.
        let start = Instant::now();
        let was = cancelled.load(Ordering::SeqCst);
        let call = tokio::spawn(
            stub.withdraw(Amount { delta: 1 })
                .timeout(if *door == "grpc" {
                    Duration::from_millis(300)
                } else {
                    Duration::from_secs(30)
                })
                .into_future(),
        );
        calls += 1;
        let started = tokio::time::timeout(Duration::from_secs(10), waiting.notified()).await;
        let how = if *door == "grpc" {
            // A call of our gRPC client is not cancelled by its stream's
            // reset (it may send the request again on a new stream): its
            // deadline tells the handler.
            let _ = call.await;
            "its deadline (300 ms) passed"
        } else {
            call.abort();
            "the caller dropped it (CANCEL)"
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while cancelled.load(Ordering::SeqCst) == was && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let result = if started.is_ok() && cancelled.load(Ordering::SeqCst) > was {
            Ok(format!(
                "{how}: the handler waiting for the lock was told and returned"
            ))
        } else {
            Err("the waiting handler never learned that its call was over".to_owned())
        };
        report.sync_call(&path, "Withdraw (waits), dropped", "RR", result, start);
    }

    // What the metrics interceptor saw.
    let snap = metrics.snapshot();
    let seen: u64 = snap.methods.iter().map(|m| m.calls).sum();
    let text = metrics.encode();
    let result = if seen + 1 >= calls {
        Ok(format!(
            "{seen} calls ended on the server, {} error series; {} lines of Prometheus text",
            snap.methods.iter().map(|m| m.errors.len()).sum::<usize>(),
            text.lines().count()
        ))
    } else {
        Err(format!("the metrics saw {seen} calls of {calls}"))
    };
    report.row(Row::made(
        PATH,
        "metrics snapshot",
        "-",
        "-",
        result,
        Duration::ZERO,
        None,
    ));
    server
        .shutdown(Duration::from_secs(2))
        .await
        .map_err(|e| anyhow::anyhow!("shutting down: {e}"))?;
    Ok(())
}
