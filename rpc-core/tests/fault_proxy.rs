//! The fault-injecting UDP proxy on loopback, in front of an echo server or
//! a sink: loss, duplication, reordering, delay, repeatability, per-client
//! routing, run-time reconfiguration and the client table's bound.

use rpc_core::fault::{
    Decider, Delay, FaultConfig, FaultProxy, ProxyConfig, ProxyFaults, ProxyStats,
};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

type TestResult = anyhow::Result<()>;

/// Datagrams a server saw, with their senders, in arrival order.
type Seen = Arc<Mutex<Vec<(SocketAddr, Vec<u8>)>>>;

async fn loopback_socket() -> anyhow::Result<UdpSocket> {
    Ok(UdpSocket::bind("127.0.0.1:0").await?)
}

/// An echo server; returns its address and the task (aborted on drop of the guard).
struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
    /// Every datagram received, with its sender, in arrival order.
    seen: Seen,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(echo: bool) -> anyhow::Result<Server> {
        let socket = loopback_socket().await?;
        let addr = socket.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                if let Ok(mut log) = log.lock() {
                    log.push((from, buf[..n].to_vec()));
                }
                if echo && socket.send_to(&buf[..n], from).await.is_err() {
                    break;
                }
            }
        });
        Ok(Server { addr, task, seen })
    }

    fn seen(&self) -> Vec<(SocketAddr, Vec<u8>)> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Sends `count` numbered datagrams (4-byte big-endian sequence numbers,
/// padded to 64 bytes) in small paced batches, so no socket buffer overflows.
async fn send_numbered(socket: &UdpSocket, to: SocketAddr, count: u32) -> TestResult {
    for i in 0..count {
        let mut datagram = [0u8; 64];
        datagram[..4].copy_from_slice(&i.to_be_bytes());
        socket.send_to(&datagram, to).await?;
        if i % 32 == 31 {
            sleep(Duration::from_millis(1)).await;
        }
    }
    Ok(())
}

fn number(datagram: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(datagram.get(..4)?.try_into().ok()?))
}

/// How long a test waits for an event: a safety net, never the verdict.
const WAIT: Duration = Duration::from_secs(30);

/// Waits until the echo server has recorded `n` datagrams (what the proxy
/// says it forwarded): the datagrams are then all in, whatever the load.
async fn arrived(server: &Server, n: u64) -> anyhow::Result<()> {
    let start = Instant::now();
    while (server.seen().len() as u64) < n {
        anyhow::ensure!(
            start.elapsed() < WAIT,
            "{} of {n} datagrams arrived",
            server.seen().len()
        );
        sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Receives on `socket` until `enough(count)` holds (checked after every
/// datagram and every 10 ms without one).
async fn collect_until(
    socket: &UdpSocket,
    mut enough: impl FnMut(usize) -> bool,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let start = Instant::now();
    while !enough(got.len()) {
        anyhow::ensure!(
            start.elapsed() < WAIT,
            "only {} datagrams arrived",
            got.len()
        );
        if let Ok(Ok((n, _))) = timeout(Duration::from_millis(10), socket.recv_from(&mut buf)).await
        {
            got.push(buf[..n].to_vec());
        }
    }
    Ok(got)
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

fn one_way(config: FaultConfig) -> ProxyConfig {
    ProxyConfig::new(ProxyFaults {
        client_to_server: config,
        server_to_client: FaultConfig::none(),
    })
}

#[tokio::test]
async fn loss_rate_is_within_tolerance_and_exactly_the_seeded_decisions() -> TestResult {
    const N: u32 = 5_000;
    let config = FaultConfig::seeded(42).loss(0.2);
    let server = Server::start(false).await?;
    let proxy = FaultProxy::loopback(server.addr, one_way(config.clone())).await?;
    let client = loopback_socket().await?;
    send_numbered(&client, proxy.local_addr(), N).await?;
    let stats = settle(&proxy, |s| {
        s.client_to_server.dropped + s.client_to_server.forwarded == u64::from(N)
    })
    .await?;
    arrived(&server, stats.client_to_server.forwarded).await?;

    let mut decider = Decider::new(config);
    let expected_lost: HashSet<u32> = (0..N).filter(|_| decider.decide().drop).collect();
    let arrived: HashSet<u32> = server
        .seen()
        .iter()
        .filter_map(|(_, d)| number(d))
        .collect();
    let lost: HashSet<u32> = (0..N).filter(|i| !arrived.contains(i)).collect();
    assert_eq!(
        lost, expected_lost,
        "the proxy dropped exactly what the seeded decider says"
    );
    assert_eq!(stats.client_to_server.dropped, expected_lost.len() as u64);
    let rate = lost.len() as f64 / f64::from(N);
    assert!(
        (0.17..=0.23).contains(&rate),
        "loss rate {rate} not near 0.2"
    );
    assert_eq!(stats.server_to_client.received, 0);
    Ok(())
}

#[tokio::test]
async fn same_seed_gives_same_losses_and_another_seed_does_not() -> TestResult {
    async fn run(seed: u64) -> anyhow::Result<HashSet<u32>> {
        let server = Server::start(false).await?;
        let proxy =
            FaultProxy::loopback(server.addr, one_way(FaultConfig::seeded(seed).loss(0.3))).await?;
        let client = loopback_socket().await?;
        send_numbered(&client, proxy.local_addr(), 500).await?;
        let stats = settle(&proxy, |s| {
            s.client_to_server.dropped + s.client_to_server.forwarded == 500
        })
        .await?;
        arrived(&server, stats.client_to_server.forwarded).await?;
        Ok(server
            .seen()
            .iter()
            .filter_map(|(_, d)| number(d))
            .collect())
    }
    let a = run(7).await?;
    let b = run(7).await?;
    let c = run(8).await?;
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(
        a.len() > 250 && a.len() < 450,
        "about 70% arrive, got {}",
        a.len()
    );
    Ok(())
}

#[tokio::test]
async fn duplication_delivers_extra_copies_both_ways() -> TestResult {
    const N: u32 = 2_000;
    let server = Server::start(true).await?;
    let faults = ProxyFaults::symmetric(FaultConfig::seeded(3).duplicate(0.1));
    let proxy = FaultProxy::loopback(server.addr, ProxyConfig::new(faults)).await?;
    let client = loopback_socket().await?;
    // Every echo is in when the proxy has forwarded every original and
    // copy upstream, received every echo, and forwarded them and their
    // copies back.
    let settled = |s: &ProxyStats| {
        let (up, down) = (&s.client_to_server, &s.server_to_client);
        up.forwarded == u64::from(N) + up.duplicated
            && down.received == up.forwarded
            && down.forwarded == down.received + down.duplicated
    };
    let (sent, echoes) = tokio::join!(
        send_numbered(&client, proxy.local_addr(), N),
        collect_until(&client, |n| {
            let s = proxy.stats();
            settled(&s) && n as u64 >= s.server_to_client.forwarded
        })
    );
    sent?;
    let echoes = echoes?;
    let stats = proxy.stats();
    let up = stats.client_to_server;
    let down = stats.server_to_client;
    assert_eq!(server.seen().len() as u64, u64::from(N) + up.duplicated);
    assert_eq!(down.received, u64::from(N) + up.duplicated);
    assert_eq!(echoes.len() as u64, down.received + down.duplicated);
    for (dups, name) in [(up.duplicated, "up"), (down.duplicated, "down")] {
        assert!(
            (140..=260).contains(&dups),
            "{name}: {dups} duplicates for 10% of ~2000"
        );
    }
    let mut per_number: HashMap<u32, usize> = HashMap::new();
    for e in &echoes {
        *per_number.entry(number(e).unwrap_or(u32::MAX)).or_default() += 1;
    }
    assert_eq!(per_number.len() as u32, N, "every datagram came back");
    assert!(per_number.values().any(|&c| c >= 2));
    Ok(())
}

#[tokio::test]
async fn reordering_actually_reorders_and_loses_nothing() -> TestResult {
    const N: u32 = 1_000;
    let server = Server::start(false).await?;
    let proxy =
        FaultProxy::loopback(server.addr, one_way(FaultConfig::seeded(5).reorder(0.1))).await?;
    let client = loopback_socket().await?;
    send_numbered(&client, proxy.local_addr(), N).await?;
    let stats = settle(&proxy, |s| s.client_to_server.forwarded == u64::from(N)).await?;
    arrived(&server, u64::from(N)).await?;
    let order: Vec<u32> = server
        .seen()
        .iter()
        .filter_map(|(_, d)| number(d))
        .collect();
    assert_eq!(
        order.iter().copied().collect::<HashSet<_>>().len() as u32,
        N,
        "nothing lost"
    );
    let inversions = order.windows(2).filter(|w| w[0] > w[1]).count();
    assert!(
        inversions >= 30,
        "only {inversions} inversions at 10% reorder"
    );
    assert!(stats.client_to_server.reordered >= 30);
    Ok(())
}

#[tokio::test]
async fn delay_adds_latency() -> TestResult {
    let server = Server::start(true).await?;
    let delay = Duration::from_millis(30);
    let proxy = FaultProxy::loopback(
        server.addr,
        one_way(FaultConfig::seeded(1).delay(Delay::fixed(delay))),
    )
    .await?;
    let client = loopback_socket().await?;
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        let start = Instant::now();
        client.send_to(b"ping", proxy.local_addr()).await?;
        let (n, _) = timeout(WAIT, client.recv_from(&mut buf)).await??;
        let rtt = start.elapsed();
        assert_eq!(&buf[..n], b"ping");
        // A delay can only make the round trip longer; how much longer a
        // busy machine makes it is not the proxy's doing.
        assert!(rtt >= delay, "rtt {rtt:?}");
    }
    assert_eq!(proxy.stats().client_to_server.delayed, 3);
    // A jittered delay stays within its range.
    proxy.set_config(ProxyFaults {
        client_to_server: FaultConfig::seeded(2).delay(Delay::jitter(
            Duration::from_millis(20),
            Duration::from_millis(10),
        )),
        server_to_client: FaultConfig::none(),
    })?;
    let start = Instant::now();
    client.send_to(b"jitter", proxy.local_addr()).await?;
    timeout(WAIT, client.recv_from(&mut buf)).await??;
    assert!(start.elapsed() >= Duration::from_millis(10));
    Ok(())
}

#[tokio::test]
async fn replies_go_back_to_the_right_client() -> TestResult {
    let server = Server::start(true).await?;
    let proxy = FaultProxy::loopback(server.addr, ProxyConfig::default()).await?;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(loopback_socket().await?);
    }
    for round in 0..20u8 {
        for (id, client) in clients.iter().enumerate() {
            client
                .send_to(&[id as u8, round], proxy.local_addr())
                .await?;
        }
    }
    for (id, client) in clients.iter().enumerate() {
        let echoes = collect_until(client, |n| n >= 20).await?;
        assert_eq!(echoes.len(), 20, "client {id}");
        assert!(
            echoes.iter().all(|e| e.first() == Some(&(id as u8))),
            "client {id} got another's reply"
        );
    }
    let peers: HashSet<SocketAddr> = server.seen().iter().map(|(from, _)| *from).collect();
    assert_eq!(peers.len(), 5, "one upstream socket per client");
    assert_eq!(proxy.stats().clients, 5);
    Ok(())
}

#[tokio::test]
async fn config_changes_at_run_time_and_bad_config_is_refused() -> TestResult {
    let server = Server::start(true).await?;
    let proxy = FaultProxy::loopback(server.addr, ProxyConfig::default()).await?;
    let client = loopback_socket().await?;
    send_numbered(&client, proxy.local_addr(), 100).await?;
    assert_eq!(collect_until(&client, |n| n >= 100).await?.len(), 100);

    proxy.set_config(ProxyFaults::symmetric(FaultConfig::seeded(1).loss(1.0)))?;
    send_numbered(&client, proxy.local_addr(), 50).await?;
    settle(&proxy, |s| s.client_to_server.dropped == 50).await?;
    // All 50 were dropped and the 100 echoes were read: nothing is left
    // on its way to the client.
    // (A direct non-blocking read: tokio's try_recv would not look at the
    // socket before its reactor saw it readable.)
    let mut raw = [std::mem::MaybeUninit::<u8>::uninit(); 64];
    let leftover = socket2::SockRef::from(&client).recv_from(&mut raw);
    assert!(
        matches!(&leftover, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a datagram passed a proxy that loses everything: {leftover:?}"
    );
    assert_eq!(proxy.stats().client_to_server.dropped, 50);

    assert!(proxy
        .set_config(ProxyFaults::symmetric(FaultConfig::none().loss(1.5)))
        .is_err());
    assert!(proxy
        .set_config(ProxyFaults::symmetric(
            FaultConfig::none().duplicate(f64::NAN)
        ))
        .is_err());
    assert_eq!(
        proxy.config().client_to_server.loss,
        1.0,
        "a refused configuration changes nothing"
    );
    let stats = proxy.shutdown().await;
    assert_eq!(stats.client_to_server.received, 150);
    Ok(())
}

#[tokio::test]
async fn full_client_table_evicts_the_one_idle_longest() -> TestResult {
    let server = Server::start(true).await?;
    let config = ProxyConfig {
        max_clients: 2,
        ..ProxyConfig::default()
    };
    let proxy = FaultProxy::loopback(server.addr, config).await?;
    let a = loopback_socket().await?;
    let b = loopback_socket().await?;
    let c = loopback_socket().await?;
    let mut buf = [0u8; 16];
    for client in [&a, &b, &c] {
        client.send_to(b"x", proxy.local_addr()).await?;
        timeout(WAIT, client.recv_from(&mut buf)).await??;
        sleep(Duration::from_millis(5)).await;
    }
    let stats = proxy.stats();
    assert_eq!((stats.clients, stats.clients_evicted), (2, 1));
    // The evicted client gets a fresh mapping and still works.
    a.send_to(b"again", proxy.local_addr()).await?;
    let (n, _) = timeout(WAIT, a.recv_from(&mut buf)).await??;
    assert_eq!(&buf[..n], b"again");
    assert_eq!(proxy.stats().clients_evicted, 2);
    Ok(())
}

#[tokio::test]
async fn odd_datagrams_pass_and_the_proxy_survives_a_dead_upstream() -> TestResult {
    // Upstream: a port with nobody behind it (bound, then closed).
    let dead = loopback_socket().await?.local_addr()?;
    let proxy = FaultProxy::loopback(dead, ProxyConfig::default()).await?;
    let client = loopback_socket().await?;
    client.send_to(&[], proxy.local_addr()).await?;
    client
        .send_to(&vec![7u8; 65_000], proxy.local_addr())
        .await?;
    settle(&proxy, |s| s.client_to_server.forwarded == 2).await?;
    // The proxy still works when a real server appears behind another proxy.
    let server = Server::start(true).await?;
    let live = FaultProxy::loopback(server.addr, ProxyConfig::default()).await?;
    client
        .send_to(&vec![1u8; 65_000], live.local_addr())
        .await?;
    let mut buf = vec![0u8; 65_536];
    let (n, _) = timeout(WAIT, client.recv_from(&mut buf)).await??;
    assert_eq!(n, 65_000);
    let stats = proxy.shutdown().await;
    assert_eq!(stats.client_to_server.received, 2);
    Ok(())
}

#[tokio::test]
async fn invalid_configuration_is_refused_at_start() -> TestResult {
    let upstream: SocketAddr = "127.0.0.1:9".parse()?;
    let mut config = ProxyConfig::new(ProxyFaults::symmetric(FaultConfig::none().reorder(-0.1)));
    assert!(FaultProxy::loopback(upstream, config.clone())
        .await
        .is_err());
    config.faults = ProxyFaults::none();
    config.max_clients = 0;
    assert!(FaultProxy::loopback(upstream, config).await.is_err());
    Ok(())
}

#[tokio::test]
async fn proxy_and_in_memory_network_make_the_same_decisions() -> TestResult {
    use rpc_core::transport::{mem::MemNetwork, DatagramSocket};
    const N: u32 = 1_000;
    let config = FaultConfig::seeded(99).loss(0.25).duplicate(0.1);

    let server = Server::start(false).await?;
    let proxy = FaultProxy::loopback(server.addr, one_way(config.clone())).await?;
    let client = loopback_socket().await?;
    send_numbered(&client, proxy.local_addr(), N).await?;
    let stats = settle(&proxy, |s| {
        s.client_to_server.dropped + s.client_to_server.forwarded
            == u64::from(N) + s.client_to_server.duplicated
    })
    .await?;
    arrived(&server, stats.client_to_server.forwarded).await?;
    let mut via_proxy: Vec<u32> = server
        .seen()
        .iter()
        .filter_map(|(_, d)| number(d))
        .collect();

    let net = MemNetwork::new();
    let (a, b) = (
        net.bind("127.0.0.1:1".parse()?)?,
        net.bind("127.0.0.1:2".parse()?)?,
    );
    net.set_link_faults(a.addr(), b.addr(), config);
    for i in 0..N {
        a.send_to(&i.to_be_bytes(), b.addr()).await?;
    }
    // The link decided on every datagram as it was sent: read exactly the
    // ones it kept (it counts them forwarded as they are read).
    let l = net.link_stats(a.addr(), b.addr());
    assert_eq!(l.received, u64::from(N));
    let delivered = u64::from(N) + l.duplicated - l.dropped - l.overflow;
    let mut via_mem = Vec::new();
    let mut buf = [0u8; 8];
    while (via_mem.len() as u64) < delivered {
        let (n, _) = timeout(WAIT, b.recv_from(&mut buf)).await??;
        via_mem.extend(buf.get(..n).and_then(number));
    }
    via_proxy.sort_unstable();
    via_mem.sort_unstable();
    assert_eq!(
        via_proxy, via_mem,
        "same losses and duplicates for the same seed"
    );
    assert_eq!(
        proxy.stats().client_to_server,
        net.link_stats(a.addr(), b.addr())
    );
    Ok(())
}
