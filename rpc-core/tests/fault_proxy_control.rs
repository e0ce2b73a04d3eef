//! Run-time control of the fault proxy, over real sockets on loopback: the
//! in-process [`FaultProxy`] (blackhole, changing faults, heal) and the
//! `rpc-fault-proxy` binary (its command line and its commands on standard
//! input).
//!
//! No verdict depends on the clock: the tests wait for datagrams, counters
//! or output lines, with a generous bound as a safety net only.

use rpc_core::fault::{Decider, FaultConfig, FaultProxy, ProxyConfig, ProxyFaults, ProxyStats};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type TestResult = anyhow::Result<()>;

/// How long a test waits for an event: a safety net, never the verdict.
const WAIT: Duration = Duration::from_secs(30);

/// Whether a datagram is waiting on `socket`, looked at without blocking
/// (a direct read: tokio's `try_recv` would not look at the socket before
/// its reactor saw it readable).
fn pending(socket: socket2::SockRef<'_>) -> anyhow::Result<bool> {
    let mut raw = [std::mem::MaybeUninit::<u8>::uninit(); 64];
    let was = socket.nonblocking()?;
    socket.set_nonblocking(true)?;
    let peeked = socket.peek_from(&mut raw);
    socket.set_nonblocking(was)?;
    match peeked {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e.into()),
    }
}

// In-process proxy.

mod in_process {
    use super::*;
    use tokio::net::UdpSocket;
    use tokio::time::{sleep, timeout};

    async fn loopback_socket() -> anyhow::Result<UdpSocket> {
        Ok(UdpSocket::bind("127.0.0.1:0").await?)
    }

    /// The next datagram on `socket` (and its sender), within [`WAIT`].
    async fn receive(socket: &UdpSocket) -> anyhow::Result<(Vec<u8>, SocketAddr)> {
        let mut buf = vec![0u8; 65_536];
        let (n, from) = timeout(WAIT, socket.recv_from(&mut buf)).await??;
        Ok((buf[..n].to_vec(), from))
    }

    /// Waits until `done` holds for the proxy's counters.
    async fn settle(
        proxy: &FaultProxy,
        done: impl Fn(&ProxyStats) -> bool,
    ) -> anyhow::Result<ProxyStats> {
        let start = Instant::now();
        loop {
            let stats = proxy.stats();
            if done(&stats) {
                return Ok(stats);
            }
            anyhow::ensure!(start.elapsed() < WAIT, "proxy did not settle: {stats:?}");
            sleep(Duration::from_millis(5)).await;
        }
    }

    /// An echo server on loopback, stopped on drop.
    struct Echo {
        addr: SocketAddr,
        received: Arc<AtomicU64>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Echo {
        async fn start() -> anyhow::Result<Echo> {
            let socket = loopback_socket().await?;
            let addr = socket.local_addr()?;
            let received = Arc::new(AtomicU64::new(0));
            let count = received.clone();
            let task = tokio::spawn(async move {
                let mut buf = vec![0u8; 65_536];
                while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                    count.fetch_add(1, Ordering::SeqCst);
                    if socket.send_to(&buf[..n], from).await.is_err() {
                        break;
                    }
                }
            });
            Ok(Echo {
                addr,
                received,
                task,
            })
        }
    }

    impl Drop for Echo {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    #[tokio::test]
    async fn blackhole_cuts_both_directions_and_lifting_it_restores_them() -> TestResult {
        // The server side is driven by the test, so that it can send a
        // reply while the blackhole is on.
        let server = loopback_socket().await?;
        let proxy = FaultProxy::loopback(server.local_addr()?, ProxyConfig::default()).await?;
        let client = loopback_socket().await?;

        // No faults: a request and its reply pass.
        client.send_to(b"request 1", proxy.local_addr()).await?;
        let (got, peer) = receive(&server).await?;
        assert_eq!(got, b"request 1");
        server.send_to(b"reply 1", peer).await?;
        assert_eq!(receive(&client).await?.0, b"reply 1");

        proxy.blackhole(true);
        assert!(proxy.is_blackholed());
        // A request goes unanswered: the proxy drops it and counts it.
        client.send_to(b"request 2", proxy.local_addr()).await?;
        let stats = settle(&proxy, |s| s.client_to_server.blackholed == 1).await?;
        assert_eq!(stats.client_to_server.dropped, 1);
        assert_eq!(stats.client_to_server.forwarded, 1);
        assert!(
            !pending(socket2::SockRef::from(&server))?,
            "it reached the server"
        );
        // A reply is dropped as well.
        server.send_to(b"reply 2", peer).await?;
        let stats = settle(&proxy, |s| s.server_to_client.blackholed == 1).await?;
        assert_eq!(stats.server_to_client.forwarded, 1);
        assert!(
            !pending(socket2::SockRef::from(&client))?,
            "it reached the client"
        );

        proxy.blackhole(false);
        assert!(!proxy.is_blackholed());
        // The next request and reply pass (and are the first to arrive:
        // nothing of the blackholed ones was kept).
        client.send_to(b"request 3", proxy.local_addr()).await?;
        let (got, from) = receive(&server).await?;
        assert_eq!((got.as_slice(), from), (&b"request 3"[..], peer));
        server.send_to(b"reply 3", peer).await?;
        assert_eq!(receive(&client).await?.0, b"reply 3");

        let stats = proxy.shutdown().await;
        for s in [stats.client_to_server, stats.server_to_client] {
            assert_eq!(
                (s.received, s.forwarded, s.dropped, s.blackholed),
                (3, 2, 1, 1)
            );
        }
        Ok(())
    }

    #[tokio::test]
    async fn blackholed_requests_go_unanswered_until_it_is_lifted() -> TestResult {
        let echo = Echo::start().await?;
        let proxy = FaultProxy::loopback(echo.addr, ProxyConfig::default()).await?;
        let client = loopback_socket().await?;
        client.send_to(b"before", proxy.local_addr()).await?;
        assert_eq!(receive(&client).await?.0, b"before");

        proxy.blackhole(true);
        for _ in 0..5 {
            client.send_to(b"during", proxy.local_addr()).await?;
        }
        let stats = settle(&proxy, |s| s.client_to_server.dropped == 5).await?;
        assert_eq!(stats.client_to_server.blackholed, 5);
        assert_eq!(echo.received.load(Ordering::SeqCst), 1);
        assert!(!pending(socket2::SockRef::from(&client))?);

        proxy.blackhole(false);
        client.send_to(b"after", proxy.local_addr()).await?;
        assert_eq!(receive(&client).await?.0, b"after");
        assert_eq!(echo.received.load(Ordering::SeqCst), 2);
        Ok(())
    }

    #[tokio::test]
    async fn loss_changed_at_run_time_shows_in_the_counters_and_heal_undoes_it() -> TestResult {
        let echo = Echo::start().await?;
        let proxy = FaultProxy::loopback(echo.addr, ProxyConfig::default()).await?;
        let client = loopback_socket().await?;
        let send = |n: usize| {
            let (client, to) = (&client, proxy.local_addr());
            async move {
                for i in 0..n {
                    client.send_to(&(i as u32).to_be_bytes(), to).await?;
                    // Paced, so that no socket buffer overflows.
                    if i % 32 == 31 {
                        sleep(Duration::from_millis(1)).await;
                    }
                }
                anyhow::Ok(())
            }
        };

        send(10).await?;
        for _ in 0..10 {
            receive(&client).await?;
        }
        assert_eq!(proxy.stats().client_to_server.dropped, 0);

        // Everything lost on the way up.
        let faults = proxy.update_config(|f| f.client_to_server.loss = 1.0)?;
        assert_eq!(faults.client_to_server.loss, 1.0);
        assert_eq!(faults.server_to_client.loss, 0.0);
        send(10).await?;
        settle(&proxy, |s| s.client_to_server.dropped == 10).await?;

        // A partial loss: exactly the seeded decisions of the new faults.
        let faults =
            proxy.update_config(|f| f.client_to_server = FaultConfig::seeded(7).loss(0.3))?;
        let mut decider = Decider::new(faults.client_to_server.clone());
        let lost = (0..100).filter(|_| decider.decide().drop).count() as u64;
        assert!(0 < lost && lost < 100, "a seed that loses some: {lost}");
        send(100).await?;
        let stats = settle(&proxy, |s| s.client_to_server.received == 120).await?;
        assert_eq!(stats.client_to_server.dropped, 10 + lost);
        assert_eq!(stats.client_to_server.blackholed, 0);

        // A refused change changes nothing.
        assert!(proxy
            .update_config(|f| f.server_to_client.loss = 2.0)
            .is_err());
        assert_eq!(proxy.config(), faults);

        // Back to the start: nothing is lost any more.
        proxy.blackhole(true);
        assert_eq!(proxy.heal()?, ProxyFaults::none());
        assert!(!proxy.is_blackholed());
        assert_eq!(proxy.config(), *proxy.initial_config());
        send(10).await?;
        let stats = settle(&proxy, |s| s.client_to_server.received == 130).await?;
        assert_eq!(stats.client_to_server.dropped, 10 + lost);
        let answered = 10 + (100 - lost) + 10;
        settle(&proxy, |s| s.server_to_client.forwarded == answered).await?;
        Ok(())
    }
}

// The binary.

const BIN: &str = env!("CARGO_BIN_EXE_rpc-fault-proxy");

/// A UDP echo server on a thread of its own, stopped on drop.
struct Echo {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start() -> anyhow::Result<Echo> {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        // Only so that the thread notices `stop`.
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = socket.local_addr()?;
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !stopped.load(Ordering::SeqCst) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    count.fetch_add(1, Ordering::SeqCst);
                    let _ = socket.send_to(&buf[..n], from);
                }
            }
        });
        Ok(Echo {
            addr,
            received,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A running `rpc-fault-proxy`, killed on drop if still running.
struct Proxy {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::Receiver<String>,
    /// Where clients send to (from its first line).
    addr: SocketAddr,
}

impl Proxy {
    fn start(upstream: SocketAddr, extra: &[&str]) -> anyhow::Result<Proxy> {
        let mut child = Command::new(BIN)
            .args(["--upstream", &upstream.to_string(), "--interval-secs", "0"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let out = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut proxy = Proxy {
            child,
            stdin,
            stdout: rx,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let first = proxy.line()?;
        let addr = first
            .strip_prefix("rpc-fault-proxy listening on ")
            .and_then(|rest| rest.split(',').next())
            .ok_or_else(|| anyhow::anyhow!("unexpected first line {first:?}"))?;
        proxy.addr = addr.parse()?;
        Ok(proxy)
    }

    /// The next line on its standard output.
    fn line(&mut self) -> anyhow::Result<String> {
        Ok(self.stdout.recv_timeout(WAIT)?)
    }

    /// Reads lines until one starts with `prefix`.
    fn line_starting(&mut self, prefix: &str) -> anyhow::Result<String> {
        loop {
            let line = self.line()?;
            if line.starts_with(prefix) {
                return Ok(line);
            }
        }
    }

    /// Sends a command and returns its answer (`ok ...` or `error: ...`).
    fn command(&mut self, command: &str) -> anyhow::Result<String> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("stdin closed"))?;
        writeln!(stdin, "{command}")?;
        stdin.flush()?;
        loop {
            let line = self.line()?;
            if line.starts_with("ok ") || line.starts_with("error: ") {
                return Ok(line);
            }
        }
    }

    /// The counters, from the `stats` command.
    fn stats(&mut self) -> anyhow::Result<Vec<(String, String)>> {
        let answer = self.command("stats")?;
        let pairs = answer
            .strip_prefix("ok stats ")
            .ok_or_else(|| anyhow::anyhow!("unexpected answer {answer:?}"))?;
        Ok(pairs
            .split_whitespace()
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect())
    }

    /// One counter from the `stats` command.
    fn stat(&mut self, key: &str) -> anyhow::Result<u64> {
        let stats = self.stats()?;
        let value = stats
            .iter()
            .find(|(k, _)| k == key)
            .ok_or_else(|| anyhow::anyhow!("no {key} in {stats:?}"))?;
        Ok(value.1.parse()?)
    }

    /// Asks for `stats` until `key` reaches `value`.
    fn wait_stat(&mut self, key: &str, value: u64) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let now = self.stat(key)?;
            if now == value {
                return Ok(());
            }
            anyhow::ensure!(start.elapsed() < WAIT, "{key} stayed at {now}, not {value}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the process to end; its exit code.
    fn wait_exit(&mut self) -> anyhow::Result<Option<i32>> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            anyhow::ensure!(start.elapsed() < WAIT, "the proxy did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A client socket that waits at most [`WAIT`] for a reply.
fn client() -> anyhow::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(WAIT))?;
    Ok(socket)
}

/// Sends `payload` through the proxy and waits for its echo.
fn echoed(client: &std::net::UdpSocket, proxy: SocketAddr, payload: &[u8]) -> TestResult {
    client.send_to(payload, proxy)?;
    let mut buf = [0u8; 1024];
    let (n, _) = client.recv_from(&mut buf)?;
    assert_eq!(&buf[..n], payload);
    Ok(())
}

#[test]
fn help_names_the_commands_and_version_answers() -> TestResult {
    let out = Command::new(BIN).arg("--help").output()?;
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout)?;
    for needle in [
        "--upstream",
        "--loss-s2c",
        "--delay-ms",
        "--exit-with-stdin",
        "loss P",
        "delay D",
        "blackhole on|off",
        "heal",
        "stats",
        "quit",
    ] {
        assert!(help.contains(needle), "`{needle}` missing from:\n{help}");
    }
    let out = Command::new(BIN).arg("--version").output()?;
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8(out.stdout)?.starts_with("rpc-fault-proxy "));
    Ok(())
}

#[test]
fn usage_errors_exit_2_with_the_error_on_stderr() -> TestResult {
    for (args, says) in [
        (&["--upstream", "127.0.0.1:1", "--bogus"][..], "--bogus"),
        (&["--loss", "0.1"][..], "--upstream"),
        (
            &["--upstream", "127.0.0.1:1", "--loss", "2"][..],
            "probability",
        ),
        (
            &["--upstream", "127.0.0.1:1", "--delay-ms", "9..1"][..],
            "above the maximum",
        ),
    ] {
        let out = Command::new(BIN).args(args).stdin(Stdio::null()).output()?;
        let stderr = String::from_utf8(out.stderr)?;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    Ok(())
}

#[test]
fn blackhole_over_stdin_stops_and_resumes_forwarding() -> TestResult {
    let echo = Echo::start()?;
    let mut proxy = Proxy::start(echo.addr, &["--seed", "5"])?;
    let client = client()?;
    echoed(&client, proxy.addr, b"one")?;

    assert_eq!(proxy.command("blackhole on")?, "ok blackhole on");
    client.send_to(b"two", proxy.addr)?;
    proxy.wait_stat("c2s.blackholed", 1)?;
    assert_eq!(echo.received.load(Ordering::SeqCst), 1, "it was forwarded");
    assert!(!pending(socket2::SockRef::from(&client))?);

    assert_eq!(proxy.command("blackhole off")?, "ok blackhole off");
    echoed(&client, proxy.addr, b"three")?;

    let stats = proxy.stats()?;
    for (key, value) in [
        ("c2s.received", "3"),
        ("c2s.forwarded", "2"),
        ("c2s.dropped", "1"),
        ("c2s.blackholed", "1"),
        ("s2c.received", "2"),
        ("s2c.forwarded", "2"),
        ("clients", "1"),
        ("blackhole", "off"),
    ] {
        assert!(
            stats.iter().any(|(k, v)| k == key && v == value),
            "{key}={value} not in {stats:?}"
        );
    }

    assert_eq!(proxy.command("quit")?, "ok quit");
    proxy.line_starting("stopped (quit)")?;
    assert_eq!(proxy.wait_exit()?, Some(0));
    Ok(())
}

#[test]
fn fault_commands_change_the_faults_and_bad_ones_change_nothing() -> TestResult {
    let echo = Echo::start()?;
    let mut proxy = Proxy::start(echo.addr, &["--loss-s2c", "0.25"])?;

    let answer = proxy.command("loss-c2s 1")?;
    assert!(
        answer.starts_with("ok c2s: loss 1.000") && answer.contains("s2c: loss 0.250"),
        "{answer}"
    );
    let client = client()?;
    client.send_to(b"lost", proxy.addr)?;
    proxy.wait_stat("c2s.dropped", 1)?;
    assert_eq!(proxy.stat("c2s.blackholed")?, 0);

    let answer = proxy.command("delay 5..20")?;
    assert!(answer.contains("delay 5ms..20ms"), "{answer}");
    for bad in [
        "loss 2",
        "loss",
        "dup x",
        "delay 20..5",
        "blackhole maybe",
        "bogus",
        "heal-c2s",
        "stats now",
    ] {
        let answer = proxy.command(bad)?;
        assert!(answer.starts_with("error: "), "{bad}: {answer}");
    }
    let answer = proxy.command("faults")?;
    assert!(
        answer.starts_with("ok c2s: loss 1.000") && answer.ends_with("blackhole off"),
        "{answer}"
    );
    assert!(proxy.command("help")?.contains("blackhole on|off"));

    // Back to the start-up faults: requests pass again.
    proxy.command("blackhole on")?;
    let answer = proxy.command("heal")?;
    assert!(
        answer.contains("c2s: loss 0.000") && answer.contains("s2c: loss 0.250"),
        "{answer}"
    );
    assert!(proxy
        .stats()?
        .iter()
        .any(|(k, v)| k == "blackhole" && v == "off"));
    proxy.command("loss-s2c 0")?;
    echoed(&client, proxy.addr, b"passes")?;
    Ok(())
}

#[test]
fn end_of_stdin_stops_the_proxy_only_when_asked() -> TestResult {
    let echo = Echo::start()?;
    let client = client()?;

    let mut proxy = Proxy::start(echo.addr, &[])?;
    drop(proxy.stdin.take());
    proxy.line_starting("standard input closed")?;
    echoed(&client, proxy.addr, b"still forwarding")?;
    assert_eq!(proxy.child.try_wait()?, None, "still running");
    drop(proxy);

    let mut proxy = Proxy::start(echo.addr, &["--exit-with-stdin"])?;
    echoed(&client, proxy.addr, b"forwarding")?;
    drop(proxy.stdin.take());
    proxy.line_starting("stopped (end of standard input)")?;
    assert_eq!(proxy.wait_exit()?, Some(0));
    Ok(())
}
