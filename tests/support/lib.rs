//! Shared support of the integration tests in `tests/*.rs` (and of the
//! `demo-server` binary): start the demo Counter service on loopback, put
//! the fault proxy in front of it, connect generated clients, run many calls
//! concurrently, wait for counters, log every execution of a service to a
//! file, and run the service as a child process that can be killed.
//!
//! Everything binds to 127.0.0.1 only and every wait is bounded.

use anyhow::{bail, Context as _};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use rpc_core::client::{ChannelConfig, UdpChannel};
use rpc_core::fault::{FaultConfig, FaultProxy, ProxyConfig, ProxyFaults};
use rpc_core::server::{ServerBuilder, ServerHandle};
use rpc_core::{CallContext, Client, Service, ServiceInfo, Status};
use std::fs::File;
use std::future::Future;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use rpc_services::proto::demo::v1 as demo;
pub use rpc_services::CounterService;

/// The generated client of `demo.v1.Counter`.
pub type CounterClient = demo::CounterClient;

/// Installs a `tracing` subscriber once (filter from `RUST_LOG`, default
/// `warn`), writing through the test harness' capture.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Runs `f`, failing if it takes longer than `limit`.
///
/// # Errors
/// `f`'s error, or a timeout naming `limit`.
pub async fn bounded<T>(
    limit: Duration,
    f: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => bail!("test did not finish within {limit:?}"),
    }
}

/// Polls `done` every few milliseconds until it holds or `limit` passes.
///
/// # Errors
/// When `limit` passes first; the message names `what`.
pub async fn wait_until(
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// A Counter service served over UDP on loopback.
#[derive(Debug)]
pub struct Demo {
    /// The running server.
    pub server: ServerHandle,
    /// The service's state (value, executions).
    pub counter: Arc<CounterService>,
}

impl Demo {
    /// Starts a fresh Counter on `127.0.0.1:0` with the limits of `builder`.
    ///
    /// # Errors
    /// When the server cannot start.
    pub async fn start(builder: ServerBuilder) -> anyhow::Result<Demo> {
        let counter = Arc::new(CounterService::new());
        let server = builder
            .add_service(demo::CounterServer::from_arc(counter.clone()))
            .serve_udp("127.0.0.1:0")
            .await
            .context("starting the Counter server")?;
        Ok(Demo { server, counter })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }
}

/// The same faults both ways: `loss` and `duplicate` probabilities, seeded.
pub fn faults(seed: u64, loss: f64, duplicate: f64) -> ProxyFaults {
    ProxyFaults::symmetric(FaultConfig::seeded(seed).loss(loss).duplicate(duplicate))
}

/// A fault proxy on loopback in front of `upstream`.
///
/// # Errors
/// When the proxy cannot start (invalid faults, bind failure).
pub async fn proxy(upstream: SocketAddr, faults: ProxyFaults) -> anyhow::Result<FaultProxy> {
    FaultProxy::loopback(upstream, ProxyConfig::new(faults))
        .await
        .context("starting the fault proxy")
}

/// A channel configuration for lossy paths on a loaded machine: a short
/// first timeout, many retries, a bounded backoff.
pub fn lossy_config() -> ChannelConfig {
    let mut c = ChannelConfig::default();
    c.initial_rto = Duration::from_millis(20);
    c.max_rto = Duration::from_millis(250);
    c.default_retries = 30;
    c.max_wait = Duration::from_secs(20);
    c
}

/// A new client session to `addr`: the channel (for its counters) and the
/// generated stub over it.
///
/// # Errors
/// When the socket cannot be bound.
pub async fn connect(
    addr: SocketAddr,
    config: ChannelConfig,
) -> anyhow::Result<(UdpChannel, CounterClient)> {
    let channel = UdpChannel::connect_with(addr, config)
        .await
        .context("binding the client socket")?;
    let client = CounterClient::new(Client::new(channel.clone()));
    Ok((channel, client))
}

/// Runs `n` calls, `in_flight` at a time; returns their outputs in call
/// order (`call(i)` is call `i`).
pub async fn run_concurrent<T, F, Fut>(n: usize, in_flight: usize, call: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T>,
{
    let mut out: Vec<(usize, T)> = futures::stream::iter(0..n)
        .map(|i| {
            let fut = call(i);
            async move { (i, fut.await) }
        })
        .buffer_unordered(in_flight.max(1))
        .collect()
        .await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, t)| t).collect()
}

/// Wraps a service and appends one line per execution to a file, before
/// the handler runs: `<session hex> <request id> <method> <payload hex>`.
/// The line is written with one `write` call and flushed, so a process
/// killed right after has it on disk. A call whose line cannot be written
/// does not run (INTERNAL).
pub struct ExecLog {
    inner: Arc<dyn Service>,
    file: Mutex<File>,
}

impl std::fmt::Debug for ExecLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecLog")
            .field("service", &self.inner.info().full_name)
            .finish()
    }
}

impl ExecLog {
    /// Logs the executions of `inner` to `path` (appended; created if absent).
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn new(inner: Arc<dyn Service>, path: &Path) -> std::io::Result<ExecLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(ExecLog {
            inner,
            file: Mutex::new(file),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2 + 1);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    if s.is_empty() {
        s.push('-');
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s == "-" {
        return Some(Vec::new());
    }
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

impl Service for ExecLog {
    fn info(&self) -> &'static ServiceInfo {
        self.inner.info()
    }

    fn call(
        &self,
        method_id: u32,
        ctx: CallContext,
        request: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, Status>> {
        let line = format!(
            "{:016x} {} {} {}\n",
            ctx.session_id,
            ctx.request_id,
            ctx.method.name,
            hex(&request)
        );
        let written = {
            let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
            file.write_all(line.as_bytes()).and_then(|()| file.flush())
        };
        if let Err(e) = written {
            return Box::pin(async move {
                Err(Status::internal(format!(
                    "cannot write the execution log: {e}"
                )))
            });
        }
        self.inner.call(method_id, ctx, request)
    }
}

/// One line of an [`ExecLog`] file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    /// The caller's session id.
    pub session: u64,
    /// The request id within the session.
    pub request_id: u64,
    /// The method's name.
    pub method: String,
    /// The encoded request.
    pub payload: Vec<u8>,
}

/// Reads an [`ExecLog`] file. A torn last line (the process was killed in
/// the middle of writing it) is ignored; any other malformed line is an
/// error.
///
/// # Errors
/// When the file cannot be read or a line is malformed.
pub fn read_exec_log(path: &Path) -> anyhow::Result<Vec<Execution>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let complete = match text.rfind('\n') {
        Some(i) => text.get(..=i).unwrap_or_default(),
        None => "",
    };
    complete
        .lines()
        .map(|line| {
            let parse = || -> Option<Execution> {
                let mut parts = line.split(' ');
                let session = u64::from_str_radix(parts.next()?, 16).ok()?;
                let request_id = parts.next()?.parse().ok()?;
                let method = parts.next()?.to_owned();
                let payload = unhex(parts.next()?)?;
                parts.next().is_none().then_some(Execution {
                    session,
                    request_id,
                    method,
                    payload,
                })
            };
            parse().with_context(|| format!("malformed execution log line {line:?}"))
        })
        .collect()
}

/// A file path under the tests' scratch directory, unique per call.
pub fn scratch_file(dir: &Path, stem: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    dir.join(format!("{stem}-{}-{nanos}.log", std::process::id()))
}

/// The `demo-server` binary running as a child process; killed (SIGKILL)
/// and reaped when dropped.
#[derive(Debug)]
pub struct ChildServer {
    child: Child,
    addr: SocketAddr,
}

impl ChildServer {
    /// Starts `bin --listen <listen> [--exec-log <log>] --exit-with-stdin`
    /// and waits (at most `limit`) for the address it prints.
    ///
    /// # Errors
    /// When the process cannot start or prints no address in time.
    pub async fn start(
        bin: &Path,
        listen: SocketAddr,
        log: Option<&Path>,
        limit: Duration,
    ) -> anyhow::Result<ChildServer> {
        let mut cmd = Command::new(bin);
        cmd.arg("--listen")
            .arg(listen.to_string())
            .arg("--exit-with-stdin");
        if let Some(log) = log {
            cmd.arg("--exec-log").arg(log);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("no stdout pipe");
        };
        let read = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        });
        let line = match tokio::time::timeout(limit, read).await {
            Ok(Ok(Ok(line))) => line,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("demo-server printed no address: {other:?}");
            }
        };
        match line.trim().parse::<SocketAddr>() {
            Ok(addr) => Ok(ChildServer { child, addr }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("demo-server printed {line:?}, not an address: {e}");
            }
        }
    }

    /// The address the server bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Kills the process with SIGKILL and reaps it.
    ///
    /// # Errors
    /// When the process cannot be killed or waited for.
    pub fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().context("killing demo-server")?;
        self.child.wait().context("reaping demo-server")?;
        Ok(())
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gate that handlers wait at until the test opens it: how a test shows
/// that a call returned before a handler finished, whatever the
/// scheduling (the handler cannot finish before the gate opens, and the
/// test opens it only after the call returned).
#[derive(Debug, Clone)]
pub struct Gate(Arc<tokio::sync::Semaphore>);

impl Gate {
    /// A closed gate.
    pub fn closed() -> Gate {
        Gate(Arc::new(tokio::sync::Semaphore::new(0)))
    }

    /// Opens the gate for good: every waiter passes, and so will later ones.
    pub fn open(&self) {
        self.0.close();
    }

    /// Whether the gate is open.
    pub fn is_open(&self) -> bool {
        self.0.is_closed()
    }

    /// Waits until the gate is open (the semaphore never has a permit: an
    /// acquire ends only when it is closed).
    pub async fn pass(&self) {
        let _ = self.0.acquire().await;
    }
}

/// Wraps a service so that the handlers of the methods named in `methods`
/// wait at `gate` before they run (the wrapped handler is not even called
/// before the gate opens).
pub struct Held {
    inner: Arc<dyn Service>,
    methods: &'static [&'static str],
    gate: Gate,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("service", &self.inner.info().full_name)
            .field("methods", &self.methods)
            .finish()
    }
}

impl Held {
    /// Holds `methods` of `inner` at `gate`.
    pub fn new(inner: Arc<dyn Service>, methods: &'static [&'static str], gate: Gate) -> Held {
        Held {
            inner,
            methods,
            gate,
        }
    }
}

impl Service for Held {
    fn info(&self) -> &'static ServiceInfo {
        self.inner.info()
    }

    fn call(
        &self,
        method_id: u32,
        ctx: CallContext,
        request: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, Status>> {
        if !self.methods.contains(&ctx.method.name) {
            return self.inner.call(method_id, ctx, request);
        }
        let inner = Arc::clone(&self.inner);
        let gate = self.gate.clone();
        Box::pin(async move {
            gate.pass().await;
            inner.call(method_id, ctx, request).await
        })
    }
}

impl Demo {
    /// As [`Demo::start`], with the handlers of `methods` held at `gate`
    /// (see [`Held`]).
    ///
    /// # Errors
    /// When the server cannot start.
    pub async fn start_held(
        builder: ServerBuilder,
        methods: &'static [&'static str],
        gate: &Gate,
    ) -> anyhow::Result<Demo> {
        let counter = Arc::new(CounterService::new());
        let inner: Arc<dyn Service> = Arc::new(demo::CounterServer::from_arc(counter.clone()));
        let server = builder
            .add_shared_service(Arc::new(Held::new(inner, methods, gate.clone())))
            .serve_udp("127.0.0.1:0")
            .await
            .context("starting the Counter server")?;
        Ok(Demo { server, counter })
    }
}
