//! The tour: every protocol and call style of the framework, working, on
//! loopback, in a few seconds.
//!
//! ```text
//! cargo run --release -p rpc-examples --bin tour
//! ```
//!
//! It starts the demo Counter service (`idl/demo.idl`) on 127.0.0.1: one
//! server (one engine, one reply history) listening on UDP, TCP, TCP with
//! TLS (certificates made with rcgen) and gRPC at the same time, and a
//! fault-injecting proxy in front of its UDP socket (20% loss and 10%
//! duplication in each direction, seeded). Then it walks through the steps
//! below for every *door* (a transport and a path to the server: UDP
//! direct, UDP through the proxy, TCP, TCP+TLS, gRPC; a step a door cannot
//! do is shown as skipped, with the reason), prints one line per call (path, call,
//! style, protocol, result, latency, retransmissions), and checks every
//! result against a ledger of what was called: the counter's final value
//! and its number of executions must match exactly (calls whose outcome is
//! uncertain by design, one-way calls and calls past their deadline, are
//! accounted for as such). Then a multicast call over a group of three
//! servers, and a server crash in the middle of a call. It exits non-zero
//! if anything did not behave as specified.
//!
//! Adding a transport: implement [`Door`] for it and add it to the list in
//! `run`; steps that a transport cannot do are skipped through
//! [`Door::supports`].
#![forbid(unsafe_code)]
// A binary that reports on the terminal.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use anyhow::{anyhow, ensure, Context as _};
use rpc_core::client::{ChannelConfig, TcpChannel, TcpConfig, UdpChannel};
use rpc_core::fault::{FaultConfig, FaultProxy, ProxyConfig, ProxyFaults, ProxyStats};
use rpc_core::grpc::GrpcChannel;
use rpc_core::server::{Server, ServerHandle, ServerStats, TcpServerConfig};
use rpc_core::tls::{TlsClientConfig, TlsServerConfig};
use rpc_core::{
    CallError, Client, Code, Error, GroupClient, MemberResult, MethodInfo, Never, Protocol, Style,
};
use rpc_services::proto::demo::v1::{
    self as demo, counter, Amount, Count, CounterClient, CounterGroupClient, Empty, Overdrawn, Work,
};
use rpc_services::CounterService;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Loss and duplication of the proxy, each way.
const LOSS: f64 = 0.2;
const DUPLICATION: f64 = 0.1;
const SEED: u64 = 7;
/// How long the whole tour may take before it is declared failed.
const TOUR_LIMIT: Duration = Duration::from_secs(60);
/// Calls of the at-most-once batch, and how many are in flight at once.
const BATCH: usize = 200;
const BATCH_IN_FLIGHT: usize = 32;

// ---------------------------------------------------------------------------
// Doors: how the tour reaches the Counter.

/// What a step may need from a transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feature {
    /// ACCEPT before the result (asynchronous and deferred styles).
    Accept,
    /// One-way requests (protocol R).
    OneWay,
    /// A size limit checked before sending.
    SizeLimit,
}

impl Feature {
    fn describe(self) -> &'static str {
        match self {
            Feature::Accept => "ACCEPT before the result",
            Feature::OneWay => "one-way requests",
            Feature::SizeLimit => "a request size limit checked before sending",
        }
    }
}

/// A transport and a path to the tour's Counter server.
trait Door {
    /// The path as shown in the report, e.g. `udp direct`.
    fn name(&self) -> &str;
    /// The generated client stub through this door.
    fn client(&self) -> &CounterClient;
    /// Request copies sent so far that were not first copies, when the
    /// transport retransmits by itself (None: it does not, e.g. TCP).
    fn retransmissions(&self) -> Option<u64>;
    /// Whether datagrams may be lost on this path.
    fn lossy(&self) -> bool;
    /// Whether this door can run steps that need `feature`.
    fn supports(&self, feature: Feature) -> bool;
    /// Why it cannot, for the report (when `supports` says no).
    fn why_not(&self, _feature: Feature) -> &'static str {
        "not on this transport"
    }
    /// The size of a request just over the door's limit (with
    /// [`Feature::SizeLimit`]).
    fn oversize(&self) -> usize {
        70_000
    }
}

/// UDP, straight to the server or through the fault proxy.
struct UdpDoor {
    name: String,
    channel: UdpChannel,
    client: CounterClient,
    lossy: bool,
}

impl UdpDoor {
    async fn connect(name: &str, addr: SocketAddr, lossy: bool) -> anyhow::Result<UdpDoor> {
        let mut config = ChannelConfig::default();
        if lossy {
            // Start retransmitting early and keep trying: a fifth of the
            // datagrams vanish each way.
            config.initial_rto = Duration::from_millis(20);
            config.max_rto = Duration::from_millis(250);
            config.default_retries = 30;
        }
        let channel = UdpChannel::connect_with(addr, config)
            .await
            .context("binding a client socket")?;
        let client = CounterClient::new(Client::new(channel.clone()));
        Ok(UdpDoor {
            name: name.to_owned(),
            channel,
            client,
            lossy,
        })
    }
}

impl Door for UdpDoor {
    fn name(&self) -> &str {
        &self.name
    }
    fn client(&self) -> &CounterClient {
        &self.client
    }
    fn retransmissions(&self) -> Option<u64> {
        Some(self.channel.stats().retransmissions)
    }
    fn lossy(&self) -> bool {
        self.lossy
    }
    fn supports(&self, _: Feature) -> bool {
        true
    }
}

/// TCP (optionally TLS) to the same server: one connection, framed
/// envelopes, the same engine and history behind it.
struct TcpDoor {
    name: String,
    client: CounterClient,
}

impl TcpDoor {
    async fn connect(
        name: &str,
        addr: SocketAddr,
        tls: Option<TlsClientConfig>,
    ) -> anyhow::Result<TcpDoor> {
        let config = TcpConfig::default();
        let channel = match tls {
            Some(tls) => TcpChannel::connect_tls(addr, tls, config).await,
            None => TcpChannel::connect_with(addr, config).await,
        }
        .with_context(|| format!("connecting {name} to {addr}"))?;
        let client = CounterClient::new(Client::new(channel));
        Ok(TcpDoor {
            name: name.to_owned(),
            client,
        })
    }
}

impl Door for TcpDoor {
    fn name(&self) -> &str {
        &self.name
    }
    fn client(&self) -> &CounterClient {
        &self.client
    }
    fn retransmissions(&self) -> Option<u64> {
        None
    }
    fn lossy(&self) -> bool {
        false
    }
    fn supports(&self, _: Feature) -> bool {
        true
    }
    fn oversize(&self) -> usize {
        // The default frame limit is 16 MiB.
        (16 << 20) + 1
    }
}

/// gRPC (HTTP/2 through tonic) to the same server's gRPC face.
struct GrpcDoor {
    client: CounterClient,
}

impl GrpcDoor {
    async fn connect(addr: SocketAddr) -> anyhow::Result<GrpcDoor> {
        let channel = GrpcChannel::connect(&format!("http://{addr}"))
            .await
            .with_context(|| format!("connecting gRPC to {addr}"))?;
        Ok(GrpcDoor {
            client: CounterClient::new(Client::new(channel)),
        })
    }
}

impl Door for GrpcDoor {
    fn name(&self) -> &str {
        "grpc"
    }
    fn client(&self) -> &CounterClient {
        &self.client
    }
    fn retransmissions(&self) -> Option<u64> {
        None
    }
    fn lossy(&self) -> bool {
        false
    }
    fn supports(&self, _: Feature) -> bool {
        true
    }
    fn oversize(&self) -> usize {
        // The default message limit is 16 MiB.
        (16 << 20) + 1
    }
}

// ---------------------------------------------------------------------------
// The report.

/// One line of the report.
struct Row {
    path: String,
    call: String,
    style: &'static str,
    protocol: &'static str,
    result: String,
    ok: bool,
    latency: Option<Duration>,
    retx: Option<u64>,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    failures: Vec<String>,
}

impl Report {
    fn row(&mut self, row: Row) {
        if !row.ok {
            self.failures
                .push(format!("{} {}: {}", row.path, row.call, row.result));
        }
        self.rows.push(row);
    }

    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(what());
        }
    }

    fn print(&self) {
        println!("latency: until the call returned; retx: request copies after the first (retransmissions, and polls for a result)");
        println!();
        let headers = [
            "path", "call", "style", "proto", "", "result", "latency", "retx",
        ];
        let cells: Vec<[String; 8]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.path.clone(),
                    r.call.clone(),
                    r.style.to_owned(),
                    r.protocol.to_owned(),
                    if r.ok { "ok" } else { "FAIL" }.to_owned(),
                    r.result.clone(),
                    r.latency.map(fmt_latency).unwrap_or_else(|| "-".into()),
                    r.retx.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        let mut widths = headers.map(str::len);
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cols: [&str; 8]| {
            let mut s = String::new();
            for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
                // Latency and retransmissions are numbers: right-aligned.
                let _ = if i >= 6 {
                    write!(s, "{c:>w$}  ")
                } else {
                    write!(s, "{c:<w$}  ")
                };
            }
            s.trim_end().to_owned()
        };
        println!("{}", line(headers));
        println!(
            "{}",
            line(widths.map(|w| "-".repeat(w)).each_ref().map(String::as_str))
        );
        let mut last_path = None;
        for (row, r) in cells.iter().zip(&self.rows) {
            if last_path.is_some_and(|p: &str| p != r.path) {
                println!();
            }
            last_path = Some(r.path.as_str());
            println!("{}", line(row.each_ref().map(String::as_str)));
        }
    }
}

/// `16777217` as `16,777,217`.
fn with_commas(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_latency(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{} us", d.as_micros())
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}

fn style_name(s: Style) -> &'static str {
    match s {
        Style::Sync => "sync",
        Style::Async => "async",
        Style::Deferred => "deferred",
        Style::OneWay => "one-way",
    }
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::R => "R",
        Protocol::RR => "RR",
        Protocol::RRA => "RRA",
    }
}

fn describe<E: std::fmt::Debug>(e: &CallError<E>) -> String {
    match e {
        CallError::Raised(raised, status) => format!("raised {raised:?} ({})", status.code()),
        CallError::Rpc(Error::Status(s)) => s.to_string(),
        CallError::Rpc(e) => e.to_string(),
    }
}

/// Runs `f` through `door` and times it; the retransmissions column is the
/// door's counter difference over the call.
async fn timed<T, F: Future<Output = T>>(door: &dyn Door, f: F) -> (T, Duration, Option<u64>) {
    let before = door.retransmissions();
    let start = Instant::now();
    let out = f.await;
    let latency = start.elapsed();
    let retx = before
        .zip(door.retransmissions())
        .map(|(a, b)| b.saturating_sub(a));
    (out, latency, retx)
}

// ---------------------------------------------------------------------------
// The ledger: what the calls should have done to the counter.

/// What the tour expects of the server's counter: every call whose
/// outcome the caller knows is entered when it returns; calls whose outcome
/// is unknown by design (one-way calls, calls past their deadline) are
/// entered as the server is seen to run them, and reported as such.
#[derive(Debug, Default)]
struct Ledger {
    /// The value if every call ran exactly once.
    value: i64,
    /// Executions of non-idempotent operations.
    executions: u64,
}

impl Ledger {
    fn ran(&mut self, delta: i64) {
        self.value += delta;
        self.executions += 1;
    }
}

// ---------------------------------------------------------------------------
// The steps, each run through every door.

struct Tour {
    counter: Arc<CounterService>,
    server: ServerHandle,
    ledger: Ledger,
    report: Report,
}

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
    /// Whether `door` cannot run a step needing `feature`; if so, enters
    /// a row saying the step was skipped and why.
    fn skip(&mut self, door: &dyn Door, call: &str, feature: Feature) -> bool {
        if door.supports(feature) {
            return false;
        }
        self.report.row(Row {
            path: door.name().to_owned(),
            call: call.to_owned(),
            style: "-",
            protocol: "-",
            result: format!(
                "skipped: needs {}; {}",
                feature.describe(),
                door.why_not(feature)
            ),
            ok: true,
            latency: None,
            retx: None,
        });
        true
    }

    fn row<T>(
        &mut self,
        door: &dyn Door,
        call: impl Into<String>,
        method: &MethodInfo,
        result: Result<String, String>,
        timing: (T, Duration, Option<u64>),
    ) {
        self.row_styled(
            door,
            call,
            style_name(method.style),
            protocol_name(method.protocol),
            result,
            timing.1,
            timing.2,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn row_styled(
        &mut self,
        door: &dyn Door,
        call: impl Into<String>,
        style: &'static str,
        protocol: &'static str,
        result: Result<String, String>,
        latency: Duration,
        retx: Option<u64>,
    ) {
        let (ok, result) = match result {
            Ok(r) => (true, r),
            Err(r) => (false, r),
        };
        self.report.row(Row {
            path: door.name().to_owned(),
            call: call.into(),
            style,
            protocol,
            result,
            ok,
            latency: Some(latency),
            retx,
        });
    }

    /// Sync RR: Increment runs exactly once and returns the new count.
    async fn increment(&mut self, door: &dyn Door) {
        let t = timed(
            door,
            door.client().increment(Amount { delta: 1 }).into_future(),
        )
        .await;
        let result = match &t.0 {
            Ok(c) => {
                self.ledger.ran(1);
                let expected = (self.ledger.value, self.ledger.executions);
                if (c.value, c.executions) == expected {
                    Ok(format!("value {}, executions {}", c.value, c.executions))
                } else {
                    Err(format!(
                        "got {c:?}, expected value {} executions {}",
                        expected.0, expected.1
                    ))
                }
            }
            Err(e) => Err(describe(e)),
        };
        self.row(door, "Increment(+1)", &counter::INCREMENT, result, t);
    }

    /// Sync RRA: the reply is acknowledged, the server frees its entry.
    async fn increment_acked(&mut self, door: &dyn Door) {
        let t = timed(
            door,
            door.client()
                .increment_acked(Amount { delta: 2 })
                .into_future(),
        )
        .await;
        let result = match &t.0 {
            Ok(c) => {
                self.ledger.ran(2);
                let expected = (self.ledger.value, self.ledger.executions);
                if (c.value, c.executions) == expected {
                    Ok(format!("value {}, executions {}", c.value, c.executions))
                } else {
                    Err(format!(
                        "got {c:?}, expected value {} executions {}",
                        expected.0, expected.1
                    ))
                }
            }
            Err(e) => Err(describe(e)),
        };
        self.row(
            door,
            "IncrementAcked(+2)",
            &counter::INCREMENT_ACKED,
            result,
            t,
        );
    }

    /// Idempotent: no PING, no history, may run more than once.
    async fn get(&mut self, door: &dyn Door) {
        let t = timed(door, door.client().get(Empty {}).into_future()).await;
        let result = match &t.0 {
            Ok(c) if c.value == self.ledger.value && c.executions == self.ledger.executions => {
                Ok(format!("value {} (idempotent, no history)", c.value))
            }
            Ok(c) => Err(format!("read {c:?}, expected value {}", self.ledger.value)),
            Err(e) => Err(describe(e)),
        };
        self.row(door, "Get()", &counter::GET, result, t);
    }

    /// Typed raise: Withdraw beyond the balance gives `Overdrawn`.
    async fn withdraw(&mut self, door: &dyn Door) {
        let requested = self.ledger.value + 1_000;
        let t = timed(
            door,
            door.client()
                .withdraw(Amount { delta: requested })
                .into_future(),
        )
        .await;
        let result = match &t.0 {
            Err(CallError::Raised(o, status)) => {
                let expected = Overdrawn {
                    balance: self.ledger.value,
                    requested,
                };
                if *o == expected && status.code() == Code::FailedPrecondition {
                    Ok(format!(
                        "raised Overdrawn {{ balance: {}, requested: {} }}",
                        o.balance, o.requested
                    ))
                } else {
                    Err(format!(
                        "raised {o:?} ({}), expected {expected:?}",
                        status.code()
                    ))
                }
            }
            Ok(c) => Err(format!("withdrew beyond the balance: {c:?}")),
            Err(e) => Err(describe(e)),
        };
        self.row(
            door,
            format!("Withdraw({requested})"),
            &counter::WITHDRAW,
            result,
            t,
        );
        let t = timed(
            door,
            door.client().withdraw(Amount { delta: 1 }).into_future(),
        )
        .await;
        let result = match &t.0 {
            Ok(c) => {
                self.ledger.ran(-1);
                if c.value == self.ledger.value {
                    Ok(format!("value {}", c.value))
                } else {
                    Err(format!("got {c:?}, expected value {}", self.ledger.value))
                }
            }
            Err(e) => Err(describe(e)),
        };
        self.row(door, "Withdraw(1)", &counter::WITHDRAW, result, t);
    }

    /// Asynchronous: the call returns at the ACCEPT; the handler (200 ms)
    /// finishes later.
    async fn slow(&mut self, door: &dyn Door) {
        let before = self.counter.executions();
        let start = Instant::now();
        let t = timed(
            door,
            door.client()
                .slow(Work {
                    millis: 200,
                    delta: 3,
                })
                .into_future(),
        )
        .await;
        let result = match &t.0 {
            Ok(()) => {
                let returned = t.1;
                let mut finished = None;
                while start.elapsed() < Duration::from_secs(10) {
                    if self.counter.executions() > before {
                        finished = Some(start.elapsed());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                match finished {
                    Some(done)
                        if returned < Duration::from_millis(200)
                            && done >= Duration::from_millis(200) =>
                    {
                        self.ledger.ran(3);
                        Ok(format!(
                            "accepted; handler done {} later",
                            fmt_latency(done - returned)
                        ))
                    }
                    Some(done) => {
                        self.ledger.ran(3);
                        Err(format!(
                            "returned after {returned:?}, handler done after {done:?}"
                        ))
                    }
                    None => Err("accepted, but the handler never ran".into()),
                }
            }
            Err(e) => Err(describe(e)),
        };
        self.row(door, "Slow(200 ms, +3)", &counter::SLOW, result, t);
    }

    /// Deferred: a handle at the ACCEPT, the result awaited later; then one
    /// with a callback.
    async fn compute(&mut self, door: &dyn Door) {
        let start = Instant::now();
        let t = timed(door, async {
            let handle = door
                .client()
                .compute(Work {
                    millis: 50,
                    delta: 4,
                })
                .await?;
            let at_accept = start.elapsed();
            let count = handle.await?;
            Ok::<_, CallError>((at_accept, count))
        })
        .await;
        let result = match &t.0 {
            Ok((at_accept, c)) => {
                self.ledger.ran(4);
                if c.executions == self.ledger.executions && c.value == self.ledger.value {
                    Ok(format!(
                        "handle after {}, then value {}",
                        fmt_latency(*at_accept),
                        c.value
                    ))
                } else {
                    Err(format!("got {c:?}, expected value {}", self.ledger.value))
                }
            }
            Err(e) => Err(describe(e)),
        };
        self.row(
            door,
            "Compute(50 ms, +4) await",
            &counter::COMPUTE,
            result,
            t,
        );

        let t = timed(door, async {
            let handle = door
                .client()
                .compute(Work {
                    millis: 50,
                    delta: 5,
                })
                .await?;
            let (tx, rx) = tokio::sync::oneshot::channel();
            handle.on_complete(move |r| {
                let _ = tx.send(r);
            });
            match tokio::time::timeout(Duration::from_secs(10), rx).await {
                Ok(Ok(r)) => r,
                _ => Err(CallError::Rpc(Error::InvalidCall(
                    "the callback never ran".into(),
                ))),
            }
        })
        .await;
        let result = match &t.0 {
            Ok(c) => {
                self.ledger.ran(5);
                if c.executions == self.ledger.executions && c.value == self.ledger.value {
                    Ok(format!("callback got value {}", c.value))
                } else {
                    Err(format!("got {c:?}, expected value {}", self.ledger.value))
                }
            }
            Err(e) => Err(describe(e)),
        };
        self.row(
            door,
            "Compute(50 ms, +5) callback",
            &counter::COMPUTE,
            result,
            t,
        );
    }

    /// At-most-once in bulk: many non-idempotent calls at once.
    async fn batch(&mut self, door: &dyn Door) {
        let client = door.client().clone();
        let t = timed(door, async {
            let mut done: Vec<(Result<Count, CallError>, Duration)> = Vec::new();
            let mut pending = futures::stream::FuturesUnordered::new();
            let mut next = 0;
            loop {
                while next < BATCH && pending.len() < BATCH_IN_FLIGHT {
                    let call = client.increment(Amount { delta: 1 });
                    pending.push(async move {
                        let start = Instant::now();
                        (call.await, start.elapsed())
                    });
                    next += 1;
                }
                match futures::StreamExt::next(&mut pending).await {
                    Some(r) => done.push(r),
                    None => break,
                }
            }
            done
        })
        .await;
        let done = &t.0;
        let ok: Vec<&Count> = done.iter().filter_map(|(r, _)| r.as_ref().ok()).collect();
        for _ in &ok {
            self.ledger.ran(1);
        }
        let distinct: HashSet<u64> = ok.iter().map(|c| c.executions).collect();
        let mut latencies: Vec<Duration> = done.iter().map(|(_, l)| *l).collect();
        latencies.sort();
        let pick = |q: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * q) as usize)
                .copied()
                .unwrap_or_default()
        };
        let summary = format!(
            "{}/{} ok, each ran once; p50 {}, p99 {}",
            ok.len(),
            BATCH,
            fmt_latency(pick(0.5)),
            fmt_latency(pick(0.99))
        );
        let result = if ok.len() == BATCH && distinct.len() == BATCH {
            Ok(summary)
        } else {
            let first_error = done
                .iter()
                .find_map(|(r, _)| r.as_ref().err())
                .map(describe)
                .unwrap_or_default();
            Err(format!("{summary}; first error: {first_error}"))
        };
        self.row_styled(
            door,
            format!("Increment(+1) x{BATCH}, {BATCH_IN_FLIGHT} in flight"),
            "sync",
            "RR",
            result,
            t.1,
            t.2,
        );
    }

    /// The error cases: unknown method, oversized request.
    async fn errors(&mut self, door: &dyn Door) {
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
        self.row_styled(
            door,
            "NoSuchMethod (id 0x0badcafe)",
            "sync",
            "RR",
            result,
            t.1,
            t.2,
        );

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

    /// Waits (at most `limit`) until the counter has run `n` more
    /// operations than `before`; returns how many it ran.
    async fn runs_since(&self, before: u64, n: u64, limit: Duration) -> u64 {
        wait_for(limit, || self.counter.executions() >= before + n).await;
        self.counter.executions() - before
    }

    /// One-way: returns once sent; whether it ran is unknown by design.
    async fn nudge(&mut self, door: &dyn Door) {
        const N: u64 = 5;
        const DELTA: i64 = 1_000;
        let (value, executions) = (self.counter.value(), self.counter.executions());
        let t = timed(door, async {
            for _ in 0..N {
                door.client().nudge(Amount { delta: DELTA }).await?;
            }
            Ok::<_, Error>(())
        })
        .await;
        let result = match &t.0 {
            Ok(()) => {
                // Count the ones that arrived (a lossy path loses some).
                let arrived = self
                    .runs_since(executions, N, Duration::from_millis(300))
                    .await;
                for _ in 0..arrived {
                    self.ledger.ran(DELTA);
                }
                let moved = self.counter.value() - value;
                if arrived <= N && moved == DELTA * arrived as i64 && (door.lossy() || arrived == N)
                {
                    Ok(format!(
                        "{N} sent, none awaited; {arrived} arrived, ran once each"
                    ))
                } else {
                    Err(format!("{N} sent, {arrived} ran, value moved by {moved}"))
                }
            }
            Err(e) => Err(e.to_string()),
        };
        self.row(
            door,
            format!("Nudge(+{DELTA}) x{N}"),
            &counter::NUDGE,
            result,
            t,
        );
    }

    /// A deadline that passes: the caller learns the request may have run.
    async fn deadline(&mut self, door: &dyn Door) {
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
        self.row_styled(
            door,
            "Slow(300 ms), 100 ms deadline",
            "sync",
            "RR",
            result,
            t.1,
            t.2,
        );
    }
}

// ---------------------------------------------------------------------------
// Multicast and crash: servers of their own.

async fn start_counter(addr: &str) -> anyhow::Result<(ServerHandle, Arc<CounterService>)> {
    let counter = Arc::new(CounterService::new());
    let server = Server::builder()
        .add_service(demo::CounterServer::from_arc(counter.clone()))
        .serve_udp(addr)
        .await
        .with_context(|| format!("starting a Counter server on {addr}"))?;
    Ok((server, counter))
}

fn group_summary<E: std::fmt::Debug>(outcome: &rpc_core::GroupOutcome<Count, E>) -> String {
    let members: Vec<String> = outcome
        .members
        .iter()
        .map(|m| {
            let what = match &m.result {
                MemberResult::Reply(c) => format!("value {}", c.value),
                MemberResult::Error(e) => format!("error {e}"),
                MemberResult::Timeout => "timeout".into(),
                MemberResult::Cancelled => "not needed".into(),
                MemberResult::Unreachable(e) => format!("unreachable ({e})"),
                MemberResult::Accepted => "accepted".into(),
                MemberResult::Sent => "sent".into(),
                other => format!("{other:?}"),
            };
            format!("{}: {what}", m.member)
        })
        .collect();
    format!(
        "{}/{} replied ({})",
        outcome.successes(),
        outcome.members.len(),
        members.join(", ")
    )
}

/// A group of three servers: `all`, `first` and `quorum(2)`.
async fn multicast(report: &mut Report) -> anyhow::Result<()> {
    let mut servers = Vec::new();
    let group = GroupClient::new();
    let mut channels = Vec::new();
    for i in 1..=3 {
        let (server, counter) = start_counter("127.0.0.1:0").await?;
        let channel = UdpChannel::connect(server.local_addr()).await?;
        group.add(format!("m{i}"), Client::new(channel.clone()));
        channels.push(channel);
        servers.push((server, counter));
    }
    let stub = CounterGroupClient::new(group);
    let path = "udp group of 3";
    let retx = |channels: &[UdpChannel]| {
        channels
            .iter()
            .map(|c| c.stats().retransmissions)
            .sum::<u64>()
    };
    let mut row = |call: &str,
                   protocol: &'static str,
                   result: Result<String, String>,
                   latency: Duration,
                   r: u64| {
        let (ok, result) = match result {
            Ok(r) => (true, r),
            Err(r) => (false, r),
        };
        report.row(Row {
            path: path.into(),
            call: call.into(),
            style: "multicast",
            protocol,
            result,
            ok,
            latency: Some(latency),
            retx: Some(r),
        });
    };

    let (before, start) = (retx(&channels), Instant::now());
    let all = stub
        .increment(Amount { delta: 1 })
        .all()
        .timeout(Duration::from_secs(5))
        .await;
    let ran_everywhere = servers.iter().all(|(_, c)| c.executions() == 1);
    let result = if all.complete && all.successes() == 3 && ran_everywhere {
        Ok(group_summary(&all))
    } else {
        Err(format!(
            "{}; complete {}",
            group_summary(&all),
            all.complete
        ))
    };
    row(
        "Increment(+1) all",
        "RR",
        result,
        start.elapsed(),
        retx(&channels) - before,
    );

    let (before, start) = (retx(&channels), Instant::now());
    let first = stub
        .get(Empty {})
        .first()
        .timeout(Duration::from_secs(5))
        .await;
    let result = match first.replies().next() {
        Some((_, c)) if first.complete && c.value == 1 => Ok(group_summary(&first)),
        _ => Err(format!(
            "{}; complete {}",
            group_summary(&first),
            first.complete
        )),
    };
    row(
        "Get() first",
        "RR",
        result,
        start.elapsed(),
        retx(&channels) - before,
    );

    let (before, start) = (retx(&channels), Instant::now());
    let quorum = stub
        .increment(Amount { delta: 1 })
        .quorum(2)
        .timeout(Duration::from_secs(5))
        .await;
    let latency = start.elapsed();
    // The member the quorum did not wait for may or may not have run the
    // increment (its call was abandoned); the others certainly did, once.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let replied: Vec<bool> = quorum
        .members
        .iter()
        .map(|m| matches!(m.result, MemberResult::Reply(_)))
        .collect();
    let consistent = servers.iter().zip(&replied).all(|((_, c), &r)| {
        if r {
            c.executions() == 2
        } else {
            (1..=2).contains(&c.executions())
        }
    });
    let result = if quorum.complete && quorum.successes() >= 2 && consistent {
        Ok(group_summary(&quorum))
    } else {
        Err(format!(
            "{}; complete {}, member executions consistent {consistent}",
            group_summary(&quorum),
            quorum.complete
        ))
    };
    row(
        "Increment(+1) quorum(2)",
        "RR",
        result,
        latency,
        retx(&channels) - before,
    );

    // Splitting work: each member holds its own shard (loaded by unicast),
    // `all` gathers the parts and the caller merges them.
    for (i, channel) in channels.iter().enumerate() {
        let shard = CounterClient::new(Client::new(channel.clone()));
        shard
            .increment(Amount {
                delta: 10 * (i as i64 + 1),
            })
            .await
            .map_err(|e| anyhow!("loading shard {i}: {e}"))?;
    }
    let expected: i64 = servers.iter().map(|(_, c)| c.value()).sum();
    let (before, start) = (retx(&channels), Instant::now());
    let parts = stub
        .get(Empty {})
        .all()
        .timeout(Duration::from_secs(5))
        .await;
    let total: i64 = parts.replies().map(|(_, c)| c.value).sum();
    let result = if parts.complete && parts.successes() == 3 && total == expected {
        Ok(format!(
            "merged sum {total} = sum of the shards; {}",
            group_summary(&parts)
        ))
    } else {
        Err(format!(
            "merged {total}, expected {expected}; {}",
            group_summary(&parts)
        ))
    };
    row(
        "Get() all, split work merged",
        "RR",
        result,
        start.elapsed(),
        retx(&channels) - before,
    );

    // One-way and asynchronous multicast.
    let executions = |servers: &[(ServerHandle, Arc<CounterService>)]| {
        servers.iter().map(|(_, c)| c.executions()).sum::<u64>()
    };
    let (before_runs, start) = (executions(&servers), Instant::now());
    let sent = stub
        .nudge(Amount { delta: 0 })
        .timeout(Duration::from_secs(2))
        .await;
    let latency = start.elapsed();
    let all_sent = sent
        .members
        .iter()
        .all(|m| matches!(m.result, MemberResult::Sent));
    let arrived = wait_for(Duration::from_secs(2), || {
        executions(&servers) >= before_runs + 3
    })
    .await;
    let result = if all_sent && arrived {
        Ok(format!(
            "sent to 3, none awaited; all 3 ran it ({})",
            sent_summary(&sent)
        ))
    } else {
        Err(format!(
            "all sent {all_sent}, all ran {arrived}; {}",
            sent_summary(&sent)
        ))
    };
    row("Nudge(0) one-way", "R", result, latency, 0);

    let (before_runs, start) = (executions(&servers), Instant::now());
    let accepted = stub
        .slow(Work {
            millis: 150,
            delta: 0,
        })
        .all()
        .timeout(Duration::from_secs(5))
        .await;
    let latency = start.elapsed();
    let all_accepted = accepted
        .members
        .iter()
        .all(|m| matches!(m.result, MemberResult::Accepted));
    let early = latency < Duration::from_millis(150) && executions(&servers) == before_runs;
    let finished = wait_for(Duration::from_secs(3), || {
        executions(&servers) >= before_runs + 3
    })
    .await;
    let result = if all_accepted && early && finished {
        Ok(format!(
            "3 accepted before the 150 ms handlers finished; {}",
            group_summary(&accepted)
        ))
    } else {
        Err(format!(
            "accepted {all_accepted}, early {early}, finished {finished}; {}",
            group_summary(&accepted)
        ))
    };
    row("Slow(150 ms) async", "RR", result, latency, 0);

    // A dead member (nothing listens on its port) never blocks `first` or
    // `quorum`, and shows as unreachable in an `all` outcome.
    let dead_addr = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0")?;
        probe.local_addr()?
    };
    let mut dead_config = ChannelConfig::default();
    dead_config.default_retries = 2;
    dead_config.initial_rto = Duration::from_millis(20);
    let dead = UdpChannel::connect_with(dead_addr, dead_config).await?;
    stub.group().add("dead", Client::new(dead));
    let start = Instant::now();
    let quick = stub
        .get(Empty {})
        .quorum(3)
        .timeout(Duration::from_secs(5))
        .await;
    let latency = start.elapsed();
    let result = if quick.complete && quick.successes() == 3 && latency < Duration::from_secs(1) {
        Ok(format!(
            "not held up by the dead member; {}",
            group_summary(&quick)
        ))
    } else {
        Err(format!(
            "complete {} in {latency:?}; {}",
            quick.complete,
            group_summary(&quick)
        ))
    };
    row("Get() quorum(3), 1 of 4 dead", "RR", result, latency, 0);
    let start = Instant::now();
    let everyone = stub
        .get(Empty {})
        .all()
        .timeout(Duration::from_secs(5))
        .await;
    let dead_shown = everyone.member("dead").is_some_and(|m| {
        matches!(
            m.result,
            MemberResult::Unreachable(_) | MemberResult::Timeout
        )
    });
    let result = if dead_shown && everyone.successes() == 3 {
        Ok(group_summary(&everyone))
    } else {
        Err(format!(
            "dead member shown {dead_shown}; {}",
            group_summary(&everyone)
        ))
    };
    row("Get() all, 1 of 4 dead", "RR", result, start.elapsed(), 0);
    stub.group().remove("dead");
    Ok(())
}

fn sent_summary(outcome: &rpc_core::GroupOutcome<(), Never>) -> String {
    let members: Vec<String> = outcome
        .members
        .iter()
        .map(|m| format!("{}: {:?}", m.member, m.result))
        .collect();
    members.join(", ")
}

/// Polls `done` every 2 ms until it holds or `limit` passes.
async fn wait_for(limit: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

/// The server crashes while a call's reply is lost, and restarts on the
/// same port: the retransmission reaches a new incarnation and is refused
/// with "outcome unknown", never run a second time.
async fn crash(report: &mut Report) -> anyhow::Result<()> {
    let (server, first) = start_counter("127.0.0.1:0").await?;
    let addr = server.local_addr();
    let proxy = FaultProxy::loopback(addr, ProxyConfig::new(ProxyFaults::none())).await?;
    let mut config = ChannelConfig::default();
    config.max_rto = Duration::from_millis(100);
    config.default_retries = 50;
    let channel = UdpChannel::connect_with(proxy.local_addr(), config).await?;
    let client = CounterClient::new(Client::new(channel.clone()));
    client
        .increment(Amount { delta: 1 })
        .await
        .map_err(|e| anyhow!("warm-up call: {e}"))?;

    // Every reply is lost from now on: the next call runs, the client retransmits.
    let mut lose_replies = ProxyFaults::none();
    lose_replies.server_to_client = FaultConfig::seeded(SEED).loss(1.0);
    proxy.set_config(lose_replies)?;
    let start = Instant::now();
    let before = channel.stats().retransmissions;
    let call = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .increment(Amount { delta: 1 })
                .timeout(Duration::from_secs(10))
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while first.executions() < 2 {
        ensure!(
            Instant::now() < deadline,
            "the call never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Crash (dropping the handle stops the server abruptly), restart on the same port.
    drop(server);
    let (restarted, second) = {
        let mut attempt = 0;
        loop {
            match start_counter(&addr.to_string()).await {
                Ok(s) => break s,
                Err(e) if attempt < 100 => {
                    attempt += 1;
                    tracing::debug!(error = %e, "port not free yet");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => return Err(e),
            }
        }
    };
    proxy.set_config(ProxyFaults::none())?;
    let outcome = call.await.context("the crash call's task")?;
    let latency = start.elapsed();
    let retx = channel.stats().retransmissions - before;
    let result = match &outcome {
        Err(CallError::Rpc(e @ Error::OutcomeUnknown)) if second.executions() == 0 => {
            Ok(format!("{e}; ran once, not again"))
        }
        other => Err(format!(
            "expected outcome unknown, got {other:?}; runs after restart {}",
            second.executions()
        )),
    };
    report.row(Row {
        path: "udp crash+restart".into(),
        call: "Increment(+1), reply lost, crash".into(),
        style: "sync",
        protocol: "RR",
        result: result.clone().unwrap_or_else(|e| e),
        ok: result.is_ok(),
        latency: Some(latency),
        retx: Some(retx),
    });
    let start = Instant::now();
    let next = client.increment(Amount { delta: 1 }).await;
    let result = match &next {
        Ok(c) if c.executions == 1 && channel.stats().incarnation == restarted.incarnation() => {
            Ok(format!(
                "value {}, new incarnation {:016x}",
                c.value,
                restarted.incarnation()
            ))
        }
        other => Err(format!("{other:?}")),
    };
    report.row(Row {
        path: "udp crash+restart".into(),
        call: "Increment(+1) after restart".into(),
        style: "sync",
        protocol: "RR",
        result: result.clone().unwrap_or_else(|e| e),
        ok: result.is_ok(),
        latency: Some(start.elapsed()),
        retx: None,
    });
    Ok(())
}

// ---------------------------------------------------------------------------

fn summary(tour: &mut Tour, proxy: &ProxyStats, doors: &[Box<dyn Door>]) {
    let s: ServerStats = tour.server.stats();
    let value = tour.counter.value();
    let executions = tour.counter.executions();
    println!();
    println!("server   value {value}, executions {executions} (idempotent reads {}), incarnation {:016x}", tour.counter.idempotent_executions(), tour.server.incarnation());
    println!(
        "         requests {}, replies {}, duplicates replayed {}, in progress {}, accepts {}, unimplemented {}, past deadline {}",
        s.requests, s.replies, s.duplicates_replayed, s.in_progress_hits, s.accepts, s.unimplemented, s.deadline_exceeded
    );
    println!(
        "         history: {} entries ({} completed, {} running) in {} sessions; evicted {} (acknowledged {})",
        s.history_len, s.history_completed, s.history_in_progress, s.history_sessions, s.evicted_total(), s.evicted_ack
    );
    let t = tour.server.tcp_stats();
    println!(
        "         tcp doors: {} connections accepted, {} frames in, {} frames out",
        t.connections_accepted, t.frames_received, t.frames_sent
    );
    println!(
        "proxy    to server: {} received, {} dropped, {} duplicated; to client: {} received, {} dropped, {} duplicated",
        proxy.client_to_server.received,
        proxy.client_to_server.dropped,
        proxy.client_to_server.duplicated,
        proxy.server_to_client.received,
        proxy.server_to_client.dropped,
        proxy.server_to_client.duplicated
    );
    let retx: Vec<String> = doors
        .iter()
        .map(|d| {
            format!(
                "{} {}",
                d.name(),
                d.retransmissions().map_or("-".into(), |n| n.to_string())
            )
        })
        .collect();
    println!("clients  retransmissions: {}", retx.join(", "));

    if (value, executions) == (tour.ledger.value, tour.ledger.executions) {
        println!("ledger   every call accounted for: value {value} and {executions} executions, as called");
    } else {
        tour.report.failures.push(format!(
            "the counter (value {value}, executions {executions}) does not match the calls made (value {}, executions {})",
            tour.ledger.value, tour.ledger.executions
        ));
    }
}

/// A CA, and a server certificate for `localhost` it signed (PEM): for
/// the TLS door.
fn tls_configs() -> anyhow::Result<(TlsServerConfig, TlsClientConfig)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "rpc tour CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key)?;
    let server = TlsServerConfig::from_pem(
        leaf_cert.pem().as_bytes(),
        leaf_key.serialize_pem().as_bytes(),
    )?;
    let client = TlsClientConfig::new("localhost", ca_cert.pem().as_bytes())?;
    Ok((server, client))
}

async fn run() -> anyhow::Result<Report> {
    // One server, one engine and history, four doors: UDP, TCP, TCP+TLS, gRPC.
    let (server, counter) = start_counter("127.0.0.1:0").await?;
    let tcp_addr = server
        .serve_tcp_also("127.0.0.1:0", TcpServerConfig::default())
        .await
        .context("opening the TCP door")?;
    let (tls_server, tls_client) = tls_configs().context("making the TLS certificates")?;
    let tls_addr = server
        .serve_tcp_also(
            "127.0.0.1:0",
            TcpServerConfig::default().with_tls(tls_server),
        )
        .await
        .context("opening the TLS door")?;
    let grpc_addr = server
        .serve_grpc("127.0.0.1:0")
        .await
        .context("opening the gRPC door")?;
    let faults =
        ProxyFaults::symmetric(FaultConfig::seeded(SEED).loss(LOSS).duplicate(DUPLICATION));
    let proxy = FaultProxy::loopback(server.local_addr(), ProxyConfig::new(faults)).await?;
    println!(
        "rpc tour: demo.v1.Counter over UDP on {}; fault proxy on {} ({:.0}% loss, {:.0}% duplication each way, seed {SEED})",
        server.local_addr(),
        proxy.local_addr(),
        LOSS * 100.0,
        DUPLICATION * 100.0
    );
    println!("          the same server (one engine, one history) also on TCP {tcp_addr}, TCP+TLS {tls_addr}, gRPC {grpc_addr}");
    println!();

    // The doors.
    let doors: Vec<Box<dyn Door>> = vec![
        Box::new(UdpDoor::connect("udp direct", server.local_addr(), false).await?),
        Box::new(UdpDoor::connect("udp proxy 20%", proxy.local_addr(), true).await?),
        Box::new(TcpDoor::connect("tcp", tcp_addr, None).await?),
        Box::new(TcpDoor::connect("tcp+tls", tls_addr, Some(tls_client)).await?),
        Box::new(GrpcDoor::connect(grpc_addr).await?),
    ];
    let mut tour = Tour {
        counter,
        server,
        ledger: Ledger::default(),
        report: Report::default(),
    };

    for door in &doors {
        let door = door.as_ref();
        tour.increment(door).await;
        tour.increment_acked(door).await;
        tour.get(door).await;
        tour.withdraw(door).await;
        if !tour.skip(door, "Slow / Compute (async, deferred)", Feature::Accept) {
            tour.slow(door).await;
            tour.compute(door).await;
        }
        tour.batch(door).await;
        tour.errors(door).await;
        if !tour.skip(door, "Nudge (one-way)", Feature::OneWay) {
            tour.nudge(door).await;
        }
        tour.deadline(door).await;
        tour.report
            .check(!door.lossy() || door.retransmissions() != Some(0), || {
                format!(
                    "{}: no retransmission at all through a lossy path",
                    door.name()
                )
            });
    }
    let mut report = std::mem::take(&mut tour.report);
    multicast(&mut report).await?;
    crash(&mut report).await?;
    tour.report = report;

    tour.report.print();
    summary(&mut tour, &proxy.stats(), &doors);
    let report = std::mem::take(&mut tour.report);
    drop(proxy);
    tour.server
        .shutdown(Duration::from_secs(2))
        .await
        .map_err(|e| anyhow!("server shutdown: {e}"))?;
    Ok(report)
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let start = Instant::now();
    let outcome = match tokio::time::timeout(TOUR_LIMIT, run()).await {
        Ok(r) => r,
        Err(_) => Err(anyhow!("the tour did not finish within {TOUR_LIMIT:?}")),
    };
    match outcome {
        Ok(report) if report.failures.is_empty() => {
            println!();
            println!(
                "all {} calls behaved as specified ({:.1} s)",
                report.rows.len(),
                start.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Ok(report) => {
            println!();
            println!("FAILED: {} problem(s)", report.failures.len());
            for f in &report.failures {
                println!("  - {f}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("tour failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
