//! The framework's own TCP door and gRPC door behind the cluster kit's
//! `TcpFaultProxy` (one proxy per door, in front of one server):
//!
//! - calls pass through;
//! - a cut while calls are in flight: a call whose handler is still held
//!   past its deadline fails with an error saying that it may have run; a
//!   call without a deadline is sent again on a new connection with the
//!   same session and request id and ends OK once its handler is let go;
//!   new calls reconnect and succeed;
//! - under a blackhole (a partition: silence, no reset) a call with a
//!   deadline fails with `DeadlineExceeded`, and after the heal calls work;
//! - a delayed link (the proxy's counters show the delay was in force)
//!   still delivers every reply to its request, in order.
//!
//! At most once throughout: the server records the (session, request id)
//! of every execution, and no request runs twice. The handlers of
//! `Increment` can be held at a switch, so "in flight" is an event (the
//! server saw the call), not a moment; every wait is for an event or a
//! counter, bounded; no verdict depends on the clock (a deadline is only
//! ever given to a call whose handler is held past it).
#![allow(clippy::print_stderr)] // what each door reported is the tests' report

use anyhow::{ensure, Context as _};
use bytes::Bytes;
use futures::future::BoxFuture;
use prost::Message as _;
use rpc_core::client::TcpChannel;
use rpc_core::grpc::GrpcChannel;
use rpc_core::server::{Server, ServerHandle};
use rpc_core::{CallContext, CallError, Client, Error, Service, ServiceInfo, Status};
use rpc_testkit::{Direction, TcpFaultProxy, TcpProxyStats};
use rpc_tests::demo::{Amount, Count, CounterClient, CounterServer, Empty};
use rpc_tests::{bounded, init_tracing, CounterService};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

/// The whole of each test; only a hung test reaches it.
const LIMIT: Duration = Duration::from_secs(120);
/// The bound of every wait for an event.
const BOUND: Duration = Duration::from_secs(30);
/// The deadline of the calls that must fail by it: each is held (by the
/// server's switch or the blackhole) until it has failed, so its length
/// only sets how long the test waits.
const DEADLINE: Duration = Duration::from_millis(300);

/// One execution of `Increment`, as the server saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    session: u64,
    request_id: u64,
    delta: i64,
}

/// The Counter, recording every execution of `Increment` before it runs
/// and holding it while the switch is on.
struct Tracked {
    inner: Arc<dyn Service>,
    runs: Arc<Mutex<Vec<Run>>>,
    /// The number of executions begun so far, for the test to wait on.
    entered: watch::Sender<usize>,
    /// The number of executions ended.
    ended: Arc<watch::Sender<usize>>,
    hold: watch::Receiver<bool>,
}

impl Service for Tracked {
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
        let delta = Amount::decode(request.as_ref()).map_or(0, |a| a.delta);
        {
            let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
            runs.push(Run {
                session: ctx.session_id,
                request_id: ctx.request_id,
                delta,
            });
            self.entered.send_replace(runs.len());
        }
        let inner = Arc::clone(&self.inner);
        let mut hold = self.hold.clone();
        let ended = Arc::clone(&self.ended);
        Box::pin(async move {
            // Let go when the switch is off (or the test is gone).
            let _ = hold.wait_for(|on| !*on).await;
            let reply = inner.call(method_id, ctx, request).await;
            ended.send_modify(|n| *n += 1);
            reply
        })
    }
}

/// A server with a TCP door and a gRPC door, each behind its own proxy.
struct Doors {
    _server: ServerHandle,
    counter: Arc<CounterService>,
    runs: Arc<Mutex<Vec<Run>>>,
    entered: watch::Receiver<usize>,
    ended: watch::Receiver<usize>,
    hold: watch::Sender<bool>,
    proxy: TcpFaultProxy,
}

#[derive(Debug, Clone, Copy)]
enum Door {
    Tcp,
    Grpc,
}

impl Doors {
    async fn start(door: Door) -> anyhow::Result<Doors> {
        let counter = Arc::new(CounterService::new());
        let runs = Arc::new(Mutex::new(Vec::new()));
        let (entered_tx, entered) = watch::channel(0);
        let (ended_tx, ended) = watch::channel(0);
        let (hold, hold_rx) = watch::channel(false);
        let service = Tracked {
            inner: Arc::new(CounterServer::from_arc(Arc::clone(&counter))),
            runs: Arc::clone(&runs),
            entered: entered_tx,
            ended: Arc::new(ended_tx),
            hold: hold_rx,
        };
        let server = Server::builder()
            .add_shared_service(Arc::new(service))
            .serve_udp("127.0.0.1:0")
            .await?;
        let upstream: SocketAddr = match door {
            Door::Tcp => server.serve_tcp("127.0.0.1:0").await?,
            Door::Grpc => server.serve_grpc("127.0.0.1:0").await?,
        };
        let proxy = TcpFaultProxy::start("127.0.0.1:0".parse()?, upstream).await?;
        Ok(Doors {
            _server: server,
            counter,
            runs,
            entered,
            ended,
            hold,
            proxy,
        })
    }

    /// A new client session through the proxy.
    async fn client(&self, door: Door) -> anyhow::Result<CounterClient> {
        let addr = self.proxy.local_addr();
        let client = match door {
            Door::Tcp => Client::new(TcpChannel::connect(addr).await?),
            Door::Grpc => Client::new(GrpcChannel::connect(&format!("http://{addr}")).await?),
        };
        Ok(CounterClient::new(client))
    }

    fn runs(&self) -> Vec<Run> {
        self.runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until the server has seen `n` executions in all.
    async fn entered(&self, n: usize) -> anyhow::Result<()> {
        let mut entered = self.entered.clone();
        tokio::time::timeout(BOUND, entered.wait_for(|e| *e >= n))
            .await
            .with_context(|| {
                format!("the server saw {} executions, not {n}", self.runs().len())
            })??;
        Ok(())
    }

    /// Waits until the proxy's counters satisfy `ok`.
    async fn stats_until(&self, ok: impl Fn(&TcpProxyStats) -> bool) -> anyhow::Result<()> {
        for _ in 0..(BOUND.as_millis() / 5) {
            if ok(&self.proxy.stats()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        anyhow::bail!(
            "the proxy's counters never matched: {:?}",
            self.proxy.stats()
        )
    }

    /// Once every execution begun has ended: no request ran twice, and
    /// every execution's delta is in the counter.
    async fn at_most_once(&self) -> anyhow::Result<Vec<Run>> {
        let begun = self.runs().len();
        let mut ended = self.ended.clone();
        tokio::time::timeout(BOUND, ended.wait_for(|n| *n >= begun))
            .await
            .with_context(|| format!("{begun} executions begun, not all ended"))??;
        let runs = self.runs();
        let mut seen = HashMap::new();
        for run in &runs {
            if let Some(first) = seen.insert((run.session, run.request_id), *run) {
                anyhow::bail!("a request ran twice: {first:?} and {run:?}");
            }
        }
        let sum: i64 = runs.iter().map(|r| r.delta).sum();
        ensure!(
            self.counter.value() == sum,
            "the counter holds {}, the executions add up to {sum}",
            self.counter.value()
        );
        Ok(runs)
    }
}

/// The error of a call that must have failed.
fn failure(result: Result<Count, CallError>) -> anyhow::Result<Error> {
    match result {
        Ok(c) => anyhow::bail!("the call succeeded ({c:?}) but could not have"),
        Err(CallError::Rpc(e)) => Ok(e),
        Err(e) => anyhow::bail!("not an RPC error: {e:?}"),
    }
}

async fn door_under_faults(door: Door) -> anyhow::Result<()> {
    let doors = Doors::start(door).await?;
    let client = doors.client(door).await?;

    // 1. Through the proxy.
    let count = client.increment(Amount { delta: 1 }).await?;
    assert_eq!(count.value, 1);
    assert_eq!(client.get(Empty {}).await?.value, 1);
    ensure!(doors.proxy.stats().client_to_server.forwarded > 0);

    // 2. A cut while two calls are in flight (their handlers held): the
    //    one with a deadline fails saying it may have run; the other is
    //    sent again with its request id, waits for its handler, and ends
    //    OK; new calls reconnect and succeed.
    doors.hold.send_replace(true);
    let with_deadline = tokio::spawn({
        let c = client.clone();
        async move { c.increment(Amount { delta: 10 }).timeout(DEADLINE).await }
    });
    let without = tokio::spawn({
        let c = client.clone();
        async move { c.increment(Amount { delta: 100 }).await }
    });
    doors.entered(3).await?;
    let cut_before = doors.proxy.stats().cut;
    doors.proxy.cut();
    doors.stats_until(|s| s.cut > cut_before).await?;
    let e = failure(with_deadline.await?)?;
    assert!(
        e.may_have_run(),
        "{door:?}: {e:?} says the call did not run"
    );
    eprintln!("{door:?}: a call in flight across the cut, held past its deadline: {e}");
    doors.hold.send_replace(false);
    without.await??;
    client.increment(Amount { delta: 1_000 }).await?;
    let stats = doors.proxy.stats();
    assert!(
        stats.accepted >= 2,
        "{door:?}: no new connection: {stats:?}"
    );
    // The deadline's request ran once (its handler was entered before the
    // cut), the re-sent one once.
    let runs = doors.at_most_once().await?;
    assert_eq!(runs.iter().filter(|r| r.delta == 10).count(), 1);
    assert_eq!(runs.iter().filter(|r| r.delta == 100).count(), 1);
    assert_eq!(doors.counter.value(), 1_111);

    // 3. A blackhole: a call with a deadline ends with DeadlineExceeded
    //    (and never reaches the server); after the heal calls work.
    let discarded_before = doors.proxy.stats().client_to_server.discarded;
    doors.proxy.blackhole(true);
    let e = failure(
        client
            .increment(Amount { delta: 10_000 })
            .timeout(DEADLINE)
            .await,
    )?;
    assert!(
        matches!(e, Error::DeadlineExceeded { .. }),
        "{door:?}: {e:?} under the blackhole"
    );
    // The request reached the proxy and was dropped there (not merely
    // late: lifted now, the blackhole would let it through).
    doors
        .stats_until(|s| s.client_to_server.discarded > discarded_before)
        .await?;
    doors.proxy.heal();
    let after = client.increment(Amount { delta: 100_000 }).await?;
    assert_eq!(after.value, 101_111);
    let runs = doors.at_most_once().await?;
    assert!(
        runs.iter().all(|r| r.delta != 10_000),
        "the blackholed call ran"
    );

    // 4. A delayed link: every reply belongs to its request, in order,
    //    one call after the other and a burst of calls in flight at once.
    doors
        .proxy
        .set_delay(Direction::ClientToServer, Duration::from_millis(20));
    doors
        .proxy
        .set_delay(Direction::ServerToClient, Duration::from_millis(5));
    let base = doors.counter.value();
    let mut expected = base;
    for i in 1..=5 {
        expected += i;
        let count = client.increment(Amount { delta: i }).await?;
        assert_eq!(count.value, expected, "{door:?}: reply {i} out of order");
    }
    let burst: Vec<_> = (0..20)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.increment(Amount { delta: 1 }).await })
        })
        .collect();
    let mut values = Vec::new();
    for call in burst {
        values.push(call.await??.value);
    }
    values.sort_unstable();
    let want: Vec<i64> = (1..=20).map(|i| expected + i).collect();
    assert_eq!(values, want, "{door:?}: each reply once, none lost");
    let stats = doors.proxy.stats();
    assert!(
        stats.client_to_server.delayed > 0 && stats.server_to_client.delayed > 0,
        "{door:?}: the delay never applied: {stats:?}"
    );
    let runs = doors.at_most_once().await?;
    eprintln!(
        "{door:?}: {} executions, none twice; proxy {stats:?}",
        runs.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tcp_door_behind_a_faulty_proxy_runs_each_request_at_most_once() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, door_under_faults(Door::Tcp)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_door_behind_a_faulty_proxy_runs_each_request_at_most_once() -> anyhow::Result<()>
{
    init_tracing();
    bounded(LIMIT, door_under_faults(Door::Grpc)).await
}
