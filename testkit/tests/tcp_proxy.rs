//! The TCP fault proxy on real loopback sockets, in front of an echo
//! server: forwarding, cut, blackhole, pause, delay, throttle, the
//! connection cap and an unreachable upstream. Every wait is for bytes, a
//! counter or a closed socket, bounded generously so that only a hung
//! test fails by time; no verdict depends on how long something took.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use rpc_testkit::{Direction, TcpFaultProxy, TcpProxyConfig, TcpProxyStats};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// The bound of every wait: only a hung test reaches it.
const BOUND: Duration = Duration::from_secs(30);

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A TCP echo server on an ephemeral loopback port, for the test's life.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind(any_port()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0; 4096];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn proxy_to_echo() -> TcpFaultProxy {
    TcpFaultProxy::start(any_port(), echo_server().await)
        .await
        .unwrap()
}

async fn connect(proxy: &TcpFaultProxy) -> TcpStream {
    timeout(BOUND, TcpStream::connect(proxy.local_addr()))
        .await
        .unwrap()
        .unwrap()
}

/// Reads exactly `n` bytes.
async fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    timeout(BOUND, stream.read_exact(&mut buf))
        .await
        .expect("bytes within the bound")
        .unwrap();
    buf
}

/// Writes `bytes` and reads their echo.
async fn round_trip(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).await.unwrap();
    assert_eq!(read_n(stream, bytes.len()).await, bytes);
}

/// Waits until the peer closed `stream` (end of stream or an error).
async fn closed(stream: &mut TcpStream) {
    let mut buf = [0; 64];
    loop {
        match timeout(BOUND, stream.read(&mut buf))
            .await
            .expect("closed within the bound")
        {
            Ok(0) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

/// Waits until the proxy's counters satisfy `ok`.
async fn stats_until(proxy: &TcpFaultProxy, ok: impl Fn(&TcpProxyStats) -> bool) -> TcpProxyStats {
    timeout(BOUND, async {
        loop {
            let stats = proxy.stats();
            if ok(&stats) {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("counters never matched: {:?}", proxy.stats()))
}

/// Bytes 0, 1, ..., 255, 0, 1, ... : any loss, duplication or reordering
/// shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn forwards_both_ways() {
    let proxy = proxy_to_echo().await;
    let mut client = connect(&proxy).await;
    round_trip(&mut client, b"hello").await;
    let big = pattern(200_000);
    let (mut read, mut write) = client.into_split();
    let sent = big.clone();
    let writer = tokio::spawn(async move { write.write_all(&sent).await.map(|()| write) });
    let mut back = vec![0; big.len()];
    timeout(BOUND, read.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, big);
    drop(writer.await.unwrap().unwrap());
    let stats = stats_until(&proxy, |s| s.live == 0).await;
    assert_eq!(stats.accepted, 1);
    assert_eq!(stats.client_to_server.forwarded, 5 + 200_000);
    assert_eq!(stats.server_to_client.forwarded, 5 + 200_000);
    assert_eq!(stats.client_to_server.discarded, 0);
    let last = proxy.shutdown().await;
    assert_eq!(last.live, 0);
}

#[tokio::test]
async fn cut_closes_live_connections_and_the_next_one_works() {
    let proxy = proxy_to_echo().await;
    let mut a = connect(&proxy).await;
    let mut b = connect(&proxy).await;
    round_trip(&mut a, b"a").await;
    round_trip(&mut b, b"b").await;
    proxy.cut();
    closed(&mut a).await;
    closed(&mut b).await;
    let stats = stats_until(&proxy, |s| s.live == 0).await;
    assert_eq!(stats.cut, 2);
    let mut c = connect(&proxy).await;
    round_trip(&mut c, b"after the cut").await;
    assert_eq!(proxy.stats().cut, 2);
}

#[tokio::test]
async fn blackhole_discards_silently_until_lifted() {
    let proxy = proxy_to_echo().await;
    let mut client = connect(&proxy).await;
    round_trip(&mut client, b"before").await;
    let echoed = proxy.stats().server_to_client.forwarded;
    proxy.blackhole(true);
    client.write_all(&pattern(100)).await.unwrap();
    let stats = stats_until(&proxy, |s| s.client_to_server.discarded >= 100).await;
    assert_eq!(stats.client_to_server.discarded, 100);
    assert_eq!(stats.server_to_client.forwarded, echoed);
    // Nothing came back, and the connection is open (no reset, no end).
    let mut buf = [0; 16];
    assert_eq!(
        client.try_read(&mut buf).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
    // A connection made during the blackhole is accepted and held open.
    let mut held = connect(&proxy).await;
    held.write_all(b"lost").await.unwrap();
    stats_until(&proxy, |s| {
        s.accepted == 2 && s.client_to_server.discarded == 104
    })
    .await;
    assert_eq!(
        held.try_read(&mut buf).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
    proxy.blackhole(false);
    round_trip(&mut client, b"after").await;
    round_trip(&mut held, b"held").await;
    let stats = proxy.stats();
    assert_eq!(stats.live, 2);
    assert_eq!(stats.cut + stats.upstream_failed + stats.refused, 0);
}

#[tokio::test]
async fn pause_forwards_nothing_and_loses_nothing() {
    let proxy = proxy_to_echo().await;
    let mut client = connect(&proxy).await;
    round_trip(&mut client, b"x").await;
    proxy.pause(true);
    // Both readers of the connection are parked: from now on they read
    // nothing until the resume, whatever the scheduling.
    let paused = stats_until(&proxy, |s| s.parked == 2).await;
    assert_eq!(paused.client_to_server.forwarded, 1);
    // Small enough for the kernel's buffers: the write ends once the
    // bytes are on the proxy's side of the connection.
    let during = pattern(2_000);
    timeout(BOUND, client.write_all(&during))
        .await
        .unwrap()
        .unwrap();
    // Taken by the kernel, not forwarded: the proxy's readers are still
    // parked, its counters unchanged, and nothing came back.
    let stats = proxy.stats();
    assert_eq!(stats, paused, "the proxy moved bytes while paused");
    let mut buf = [0; 16];
    assert_eq!(
        client.try_read(&mut buf).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
    // A larger write, begun while paused, then the resume: nothing lost,
    // in order.
    let more = pattern(200_000);
    let (mut read, mut write) = client.into_split();
    let sent = more.clone();
    let writer = tokio::spawn(async move { write.write_all(&sent).await.map(|()| write) });
    proxy.pause(false);
    let mut back = vec![0; during.len() + more.len()];
    timeout(BOUND, read.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back[..during.len()], during, "the bytes sent while paused");
    assert_eq!(&back[during.len()..], more);
    let _write = writer.await.unwrap().unwrap();
    let stats = proxy.stats();
    assert_eq!(stats.parked, 0);
    assert_eq!(stats.client_to_server.forwarded, 1 + 2_000 + 200_000);
    assert_eq!(stats.client_to_server.discarded, 0);
}

#[tokio::test]
async fn delay_keeps_order() {
    let proxy = proxy_to_echo().await;
    proxy.set_delay(Direction::ClientToServer, Duration::from_millis(20));
    proxy.set_delay(Direction::ServerToClient, Duration::from_millis(5));
    let mut client = connect(&proxy).await;
    let mut sent = Vec::new();
    for i in 0..50u32 {
        let bytes = format!("message {i};");
        client.write_all(bytes.as_bytes()).await.unwrap();
        sent.extend_from_slice(bytes.as_bytes());
    }
    assert_eq!(read_n(&mut client, sent.len()).await, sent);
    // Every chunk went under its delay (the counter, not the clock, says
    // the delay was in force for it).
    let delayed = proxy.stats();
    assert!(
        delayed.client_to_server.delayed > 0 && delayed.server_to_client.delayed > 0,
        "{delayed:?}"
    );
    // A change of delay applies to a live connection; so does heal.
    proxy.set_delay(Direction::ClientToServer, Duration::from_millis(1));
    round_trip(&mut client, b"shorter").await;
    let shorter = proxy.stats();
    assert!(shorter.client_to_server.delayed > delayed.client_to_server.delayed);
    proxy.heal();
    round_trip(&mut client, b"healed").await;
    let healed = proxy.stats();
    assert_eq!(
        (
            healed.client_to_server.delayed,
            healed.server_to_client.delayed
        ),
        (
            shorter.client_to_server.delayed,
            shorter.server_to_client.delayed
        ),
        "no delay after the heal"
    );
    assert_eq!(healed.client_to_server.forwarded, sent.len() as u64 + 7 + 6);
}

#[tokio::test]
async fn throttle_delivers_everything() {
    let proxy = proxy_to_echo().await;
    proxy.set_throttle(Direction::ClientToServer, Some(200_000));
    proxy.set_throttle(Direction::ServerToClient, Some(100_000));
    let client = connect(&proxy).await;
    let data = pattern(60_000);
    let (mut read, mut write) = client.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move { write.write_all(&sent).await.map(|()| write) });
    let mut back = vec![0; data.len()];
    timeout(BOUND, read.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, data);
    let write = writer.await.unwrap().unwrap();
    // Stalled (rate zero), then released by heal: nothing lost.
    proxy.set_throttle(Direction::ServerToClient, Some(0));
    let mut client = read.reunite(write).unwrap();
    client.write_all(b"stalled").await.unwrap();
    stats_until(&proxy, |s| s.client_to_server.forwarded == 60_000 + 7).await;
    proxy.heal();
    assert_eq!(read_n(&mut client, 7).await, b"stalled");
}

#[tokio::test]
async fn the_connection_cap_refuses_and_counts() {
    let upstream = echo_server().await;
    let config = TcpProxyConfig::new().max_connections(2);
    let proxy = TcpFaultProxy::start_with(any_port(), upstream, config)
        .await
        .unwrap();
    let mut a = connect(&proxy).await;
    let mut b = connect(&proxy).await;
    round_trip(&mut a, b"a").await;
    round_trip(&mut b, b"b").await;
    let mut c = connect(&proxy).await; // the kernel accepts; the proxy closes it
    closed(&mut c).await;
    let stats = stats_until(&proxy, |s| s.refused == 1).await;
    assert_eq!((stats.accepted, stats.live), (2, 2));
    // A slot freed is a slot for the next connection.
    drop(a);
    stats_until(&proxy, |s| s.live == 1).await;
    let mut d = connect(&proxy).await;
    round_trip(&mut d, b"d").await;
    assert_eq!(proxy.stats().refused, 1);
}

#[tokio::test]
async fn an_unreachable_upstream_closes_the_client() {
    // A port that was just free: nothing listens there.
    let gone = TcpListener::bind(any_port())
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = TcpFaultProxy::start(any_port(), gone).await.unwrap();
    let mut client = connect(&proxy).await;
    closed(&mut client).await;
    let stats = stats_until(&proxy, |s| s.upstream_failed == 1 && s.live == 0).await;
    assert_eq!(stats.accepted, 1);
}

#[tokio::test]
async fn bad_settings_are_errors_not_panics() {
    let upstream = any_port();
    let zero = TcpProxyConfig::new().max_connections(0);
    let err = TcpFaultProxy::start_with(any_port(), upstream, zero)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid tcp proxy configuration: max_connections must be at least 1"
    );
    let taken = TcpListener::bind(any_port()).await.unwrap();
    let err = TcpFaultProxy::start(taken.local_addr().unwrap(), upstream)
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("cannot listen on"), "{err}");
}

#[test]
fn outside_a_runtime_is_an_error() {
    let future = TcpFaultProxy::start(any_port(), any_port());
    let err = poll_once(future).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the tcp proxy must be started within a tokio runtime"
    );
}

/// Polls a future on this thread without a tokio runtime (the check comes
/// before any I/O, so the first poll decides).
fn poll_once<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the start should fail at its first poll"),
    }
}

#[tokio::test]
async fn shutdown_and_drop_close_live_connections() {
    let upstream = echo_server().await;
    let proxy = TcpFaultProxy::start(any_port(), upstream).await.unwrap();
    let mut client = connect(&proxy).await;
    round_trip(&mut client, b"up").await;
    let last = proxy.shutdown().await;
    assert_eq!((last.accepted, last.live), (1, 0));
    closed(&mut client).await;

    let proxy = TcpFaultProxy::start(any_port(), upstream).await.unwrap();
    let mut client = connect(&proxy).await;
    round_trip(&mut client, b"up").await;
    drop(proxy);
    closed(&mut client).await;
}
