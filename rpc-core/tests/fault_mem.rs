//! The in-memory datagram network: delivery, loss, duplication, delay,
//! reordering, bounded queues, cancel-safe receive and restart.

use rpc_core::fault::{Decider, Delay, FaultConfig};
use rpc_core::transport::mem::{MemNetwork, MemSocket};
use rpc_core::transport::DatagramSocket;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::{timeout, Instant};

type TestResult = anyhow::Result<()>;

fn addr(s: &str) -> anyhow::Result<SocketAddr> {
    Ok(s.parse()?)
}

fn pair(net: &MemNetwork) -> anyhow::Result<(MemSocket, MemSocket)> {
    Ok((
        net.bind(addr("127.0.0.1:0")?)?,
        net.bind(addr("127.0.0.1:7000")?)?,
    ))
}

async fn send_numbered(from: &MemSocket, to: SocketAddr, count: u32) -> TestResult {
    for i in 0..count {
        from.send_to(&i.to_be_bytes(), to).await?;
    }
    Ok(())
}

/// Everything that arrives within `wait` (of tokio time) as sequence numbers.
async fn drain(socket: &MemSocket, wait: Duration) -> Vec<u32> {
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while let Ok(Ok((n, _))) = timeout(wait, socket.recv_from(&mut buf)).await {
        if let Ok(b) = <[u8; 4]>::try_from(&buf[..n]) {
            got.push(u32::from_be_bytes(b));
        }
    }
    got
}

#[tokio::test(start_paused = true)]
async fn delivers_in_order_with_the_sender_address() -> TestResult {
    let net = MemNetwork::new();
    let (client, server) = pair(&net)?;
    send_numbered(&client, server.addr(), 100).await?;
    let mut buf = [0u8; 2];
    let (n, from) = server.recv_from(&mut buf).await?;
    assert_eq!(
        (n, from),
        (2, client.addr()),
        "truncated to the buffer, as UDP does"
    );
    let rest = drain(&server, Duration::from_millis(10)).await;
    assert_eq!(rest, (1..100).collect::<Vec<_>>());
    // Nobody at the target: lost, counted, not an error.
    client.send_to(b"x", addr("127.0.0.9:1")?).await?;
    let stats = net.stats();
    assert_eq!((stats.unroutable, stats.links.forwarded), (1, 100));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn loss_follows_the_seeded_decisions() -> TestResult {
    const N: u32 = 5_000;
    let net = MemNetwork::new();
    let (client, server) = pair(&net)?;
    let config = FaultConfig::seeded(42).loss(0.2);
    net.set_link_faults(client.addr(), server.addr(), config.clone());
    send_numbered(&client, server.addr(), N).await?;
    let got = drain(&server, Duration::from_millis(10)).await;
    let mut decider = Decider::new(config);
    let expected: Vec<u32> = (0..N).filter(|_| !decider.decide().drop).collect();
    assert_eq!(got, expected);
    let rate = 1.0 - got.len() as f64 / f64::from(N);
    assert!((0.17..=0.23).contains(&rate), "loss rate {rate}");
    assert_eq!(
        net.link_stats(client.addr(), server.addr()).dropped,
        u64::from(N) - got.len() as u64
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn duplication_and_the_default_faults_apply_per_link() -> TestResult {
    let net = MemNetwork::with_faults(FaultConfig::seeded(9).duplicate(0.25));
    let (client, server) = pair(&net)?;
    send_numbered(&client, server.addr(), 1_000).await?;
    let got = drain(&server, Duration::from_millis(10)).await;
    let stats = net.link_stats(client.addr(), server.addr());
    assert_eq!(got.len() as u64, 1_000 + stats.duplicated);
    assert!(
        (180..=320).contains(&stats.duplicated),
        "{} duplicates",
        stats.duplicated
    );
    // The reverse link has its own generator.
    send_numbered(&server, client.addr(), 1_000).await?;
    drain(&client, Duration::from_millis(10)).await;
    assert_ne!(
        net.link_stats(server.addr(), client.addr()).duplicated,
        stats.duplicated
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn delay_is_exact_under_paused_time_and_reordering_reorders() -> TestResult {
    let net = MemNetwork::new();
    let (client, server) = pair(&net)?;
    let delay = Duration::from_millis(40);
    net.set_link_faults(
        client.addr(),
        server.addr(),
        FaultConfig::seeded(1).delay(Delay::fixed(delay)),
    );
    let start = Instant::now();
    client.send_to(b"late", server.addr()).await?;
    let mut buf = [0u8; 8];
    server.recv_from(&mut buf).await?;
    assert_eq!(start.elapsed(), delay);

    net.set_link_faults(
        client.addr(),
        server.addr(),
        FaultConfig::seeded(2).reorder(0.2),
    );
    send_numbered(&client, server.addr(), 500).await?;
    let got = drain(&server, Duration::from_millis(50)).await;
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..500).collect::<Vec<_>>(), "nothing lost");
    let inversions = got.windows(2).filter(|w| w[0] > w[1]).count();
    assert!(inversions >= 40, "{inversions} inversions at 20% reorder");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn same_seed_same_deliveries() -> TestResult {
    async fn run(seed: u64) -> anyhow::Result<Vec<u32>> {
        let net = MemNetwork::with_faults(
            FaultConfig::seeded(seed)
                .loss(0.1)
                .duplicate(0.1)
                .reorder(0.1)
                .delay(Delay::uniform(Duration::ZERO, Duration::from_millis(3))),
        );
        let (client, server) = pair(&net)?;
        send_numbered(&client, server.addr(), 300).await?;
        Ok(drain(&server, Duration::from_millis(50)).await)
    }
    assert_eq!(run(11).await?, run(11).await?);
    assert_ne!(run(11).await?, run(12).await?);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn full_queue_drops_and_counts() -> TestResult {
    let net = MemNetwork::new();
    net.set_queue_limit(10);
    let (client, server) = pair(&net)?;
    send_numbered(&client, server.addr(), 25).await?;
    assert_eq!(
        drain(&server, Duration::from_millis(10)).await,
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(net.link_stats(client.addr(), server.addr()).overflow, 15);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn cancelled_receives_lose_nothing() -> TestResult {
    let net = MemNetwork::new();
    let (client, server) = pair(&net)?;
    net.set_link_faults(
        client.addr(),
        server.addr(),
        FaultConfig::seeded(1).delay(Delay::fixed(Duration::from_millis(5))),
    );
    send_numbered(&client, server.addr(), 3).await?;
    let mut buf = [0u8; 8];
    // Receives abandoned before anything is due.
    for _ in 0..4 {
        assert!(
            timeout(Duration::from_millis(1), server.recv_from(&mut buf))
                .await
                .is_err()
        );
    }
    assert_eq!(
        drain(&server, Duration::from_millis(20)).await,
        vec![0, 1, 2]
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn restart_kills_the_old_socket_and_its_queue() -> TestResult {
    let net = MemNetwork::new();
    let (client, server) = pair(&net)?;
    let server_addr = server.addr();
    assert_eq!(
        net.bind(server_addr).err().map(|e| e.kind()),
        Some(io::ErrorKind::AddrInUse)
    );

    // Two delayed datagrams wait in the old server's queue, and a receiver
    // is blocked on it, when it "crashes".
    let link_delay = FaultConfig::seeded(1).delay(Delay::fixed(Duration::from_millis(10)));
    net.set_link_faults(client.addr(), server_addr, link_delay);
    send_numbered(&client, server_addr, 2).await?;
    let server = std::sync::Arc::new(server);
    let blocked = {
        let server = server.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 8];
            server
                .recv_from(&mut buf)
                .await
                .map(|(n, _)| n)
                .map_err(|e| e.kind())
        })
    };
    tokio::task::yield_now().await;
    let restarted = net.restart(server_addr)?;
    assert_eq!(
        blocked.await?,
        Err(io::ErrorKind::NotConnected),
        "the blocked receiver learns the socket is dead"
    );
    net.set_link_faults(client.addr(), server_addr, FaultConfig::none());
    assert!(server.send_to(b"x", client.addr()).await.is_err());
    drop(server); // must not unbind the new socket
    assert!(net.is_bound(server_addr));

    send_numbered(&client, server_addr, 3).await?;
    assert_eq!(
        drain(&restarted, Duration::from_millis(10)).await,
        vec![0, 1, 2],
        "the queued datagrams were lost"
    );
    drop(restarted);
    assert!(!net.is_bound(server_addr));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn ephemeral_ports_are_distinct_and_large_datagrams_refused() -> TestResult {
    let net = MemNetwork::new();
    let a = net.bind(addr("10.0.0.1:0")?)?;
    let b = net.bind(addr("10.0.0.1:0")?)?;
    assert_ne!(a.addr(), b.addr());
    let err = a
        .send_to(&vec![0u8; 70_000], b.addr())
        .await
        .err()
        .map(|e| e.kind());
    assert_eq!(err, Some(io::ErrorKind::InvalidInput));
    a.send_to(&vec![1u8; 65_000], b.addr()).await?;
    let mut buf = vec![0u8; 65_536];
    assert_eq!(b.recv_from(&mut buf).await?.0, 65_000);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn out_of_range_faults_are_clamped() -> TestResult {
    let net = MemNetwork::new();
    let (client, server) = pair(&net)?;
    // Loss above 1 means "always", NaN duplication means "never", an absurd
    // delay is capped (and must not overflow the clock).
    net.set_link_faults(
        client.addr(),
        server.addr(),
        FaultConfig::none().loss(1.5).duplicate(f64::NAN),
    );
    send_numbered(&client, server.addr(), 10).await?;
    assert_eq!(
        drain(&server, Duration::from_millis(10)).await,
        Vec::<u32>::new()
    );
    net.set_link_faults(
        client.addr(),
        server.addr(),
        FaultConfig::none().delay(Delay::fixed(Duration::MAX)),
    );
    send_numbered(&client, server.addr(), 1).await?;
    assert_eq!(
        drain(&server, Duration::from_millis(10)).await,
        Vec::<u32>::new()
    );
    let stats = net.link_stats(client.addr(), server.addr());
    assert_eq!((stats.dropped, stats.duplicated, stats.delayed), (10, 0, 1));
    let clamped = FaultConfig::none()
        .loss(-1.0)
        .delay(Delay {
            min: Duration::MAX,
            max: Duration::ZERO,
        })
        .clamped();
    assert_eq!(
        (clamped.loss, clamped.delay),
        (
            0.0,
            Delay::uniform(Duration::ZERO, rpc_core::fault::MAX_DELAY)
        )
    );
    assert!(clamped.validate().is_ok());
    Ok(())
}
