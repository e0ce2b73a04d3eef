//! A cluster's network of fault proxies, over UDP and TCP, on loopback:
//! links between named members, partitions, isolation, faults per link
//! and per node, heal, and the errors of bad names. Verdicts wait for
//! events (a datagram, a counter); the bound only catches a hung test.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use rpc_testkit::{LinkFaults, Net, NetError};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// The bound of every wait: only a hung test reaches it.
const BOUND: Duration = Duration::from_secs(30);

/// A UDP echo server on loopback.
async fn udp_echo() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    addr
}

/// A TCP echo server on loopback.
async fn tcp_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut peer, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1500];
                while let Ok(n) = peer.read(&mut buf).await {
                    if n == 0 || peer.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Receives `n` datagrams (each within [`BOUND`]).
async fn receive(socket: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1500];
    for _ in 0..n {
        let (len, _) = tokio::time::timeout(BOUND, socket.recv_from(&mut buf))
            .await
            .expect("a datagram within the bound")
            .unwrap();
        got.push(buf[..len].to_vec());
    }
    got
}

/// Waits (at most [`BOUND`]) until `f` holds.
async fn eventually(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "condition not met within {BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn udp_links_are_cut_by_partitions_and_isolation_and_healed() {
    let mut net = Net::udp(7);
    net.add_node("a", udp_echo().await).await.unwrap();
    net.add_node("b", udp_echo().await).await.unwrap();
    net.add_client("client").await.unwrap();
    assert_eq!(net.members(), ["a", "b", "client"]);
    assert_eq!(net.nodes(), ["a", "b"]);
    // One link per member and node: distinct proxies.
    let links = [("a", "b"), ("b", "a"), ("client", "a"), ("client", "b")];
    let addrs: std::collections::BTreeSet<SocketAddr> =
        links.iter().map(|(f, t)| net.addr(f, t).unwrap()).collect();
    assert_eq!(addrs.len(), 4);

    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client
        .send_to(b"hello", net.addr("client", "a").unwrap())
        .await
        .unwrap();
    assert_eq!(receive(&client, 1).await, [b"hello".to_vec()]);

    net.partition(&["client", "a"], &["b"]).unwrap();
    assert!(net.is_cut("client", "b").unwrap() && net.is_cut("b", "a").unwrap());
    assert!(!net.is_cut("client", "a").unwrap());
    client
        .send_to(b"cut", net.addr("client", "b").unwrap())
        .await
        .unwrap();
    let to_b = net.udp_proxy("client", "b").unwrap();
    eventually(|| to_b.stats().client_to_server.blackholed == 1).await;
    assert!(
        to_b.is_blackholed(),
        "both ways cut: the proxy is blackholed"
    );
    client
        .send_to(b"still", net.addr("client", "a").unwrap())
        .await
        .unwrap();
    assert_eq!(receive(&client, 1).await, [b"still".to_vec()]);

    net.heal().unwrap();
    assert!(!net.udp_proxy("client", "b").unwrap().is_blackholed());
    client
        .send_to(b"healed", net.addr("client", "b").unwrap())
        .await
        .unwrap();
    assert_eq!(receive(&client, 1).await, [b"healed".to_vec()]);

    // Isolation covers members added later.
    net.isolate("b").unwrap();
    net.add_client("late").await.unwrap();
    assert!(net.is_cut("late", "b").unwrap() && net.is_cut("b", "late").unwrap());
    assert!(!net.is_cut("late", "a").unwrap());
    assert!(net.udp_proxy("late", "b").unwrap().is_blackholed());
    net.heal().unwrap();
    assert!(!net.udp_proxy("late", "b").unwrap().is_blackholed());
}

#[tokio::test]
async fn udp_faults_apply_per_direction_and_per_node() {
    let mut net = Net::udp(11);
    net.add_node("a", udp_echo().await).await.unwrap();
    net.add_client("client").await.unwrap();
    let to_a = net.addr("client", "a").unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    // Traffic from a to the client is the proxy's way back: losing all of
    // it lets the request through and drops the echo.
    net.set_link_faults("a", "client", LinkFaults::none().loss(1.0))
        .unwrap();
    client.send_to(b"one way", to_a).await.unwrap();
    let proxy = net.udp_proxy("client", "a").unwrap();
    eventually(|| proxy.stats().server_to_client.dropped == 1).await;
    assert_eq!(proxy.stats().client_to_server.forwarded, 1);
    assert!(!proxy.is_blackholed(), "one way only: not a blackhole");
    net.heal().unwrap();

    // Duplicated both ways: each request arrives twice, each echo twice.
    net.set_node_faults("a", LinkFaults::none().duplicate(1.0))
        .unwrap();
    client.send_to(b"twice", to_a).await.unwrap();
    assert_eq!(receive(&client, 4).await, vec![b"twice".to_vec(); 4]);

    // Reordering and delay reach the proxy's configuration, per direction.
    let ms = Duration::from_millis;
    net.set_link_faults(
        "client",
        "a",
        LinkFaults::none().reorder(0.5).delay(ms(2), ms(1)),
    )
    .unwrap();
    let config = net.udp_proxy("client", "a").unwrap().config();
    assert_eq!(config.client_to_server.reorder, 0.5);
    assert_eq!(
        (
            config.client_to_server.delay.min,
            config.client_to_server.delay.max
        ),
        (ms(1), ms(2))
    );
    assert_eq!(
        config.server_to_client.duplicate, 1.0,
        "the node's faults stay on the way back"
    );

    // The defaults survive a heal; what was set since does not.
    net.set_default_faults(LinkFaults::none().loss(0.1))
        .unwrap();
    net.heal().unwrap();
    let config = net.udp_proxy("client", "a").unwrap().config();
    assert_eq!(
        (
            config.client_to_server.loss,
            config.client_to_server.reorder
        ),
        (0.1, 0.0)
    );
    assert_eq!(config.server_to_client.duplicate, 0.0);
}

#[tokio::test]
async fn bad_names_and_faults_are_clear_errors_that_change_nothing() {
    let mut net = Net::udp(3);
    net.add_node("a", udp_echo().await).await.unwrap();
    net.add_client("client").await.unwrap();

    let err = net.partition(&["a"], &["client", "nobody"]).unwrap_err();
    assert!(matches!(&err, NetError::UnknownNode { node, .. } if node == "nobody"));
    assert_eq!(
        err.to_string(),
        "unknown node \"nobody\" (the network has: a, client)"
    );
    assert!(!net.is_cut("a", "client").unwrap(), "nothing changed");
    assert!(matches!(net.isolate("x"), Err(NetError::UnknownNode { node, .. }) if node == "x"));
    assert!(matches!(
        net.is_cut("a", "y"),
        Err(NetError::UnknownNode { .. })
    ));
    let err = net.add_client("a").await.unwrap_err();
    assert!(matches!(err, NetError::DuplicateName { node } if node == "a"));
    let err = net.addr("a", "client").unwrap_err();
    assert!(
        matches!(err, NetError::NoLink { .. }),
        "a client serves nothing: {err}"
    );
    let err = net
        .set_link_faults("client", "a", LinkFaults::none().loss(1.5))
        .unwrap_err();
    assert!(err.to_string().contains("loss probability 1.5"), "{err}");
}

#[tokio::test]
async fn tcp_links_are_blackholed_by_a_cut_and_refuse_loss() {
    let mut net = Net::tcp();
    net.add_node("a", tcp_echo().await).await.unwrap();
    net.add_client("client").await.unwrap();
    let mut stream = TcpStream::connect(net.addr("client", "a").unwrap())
        .await
        .unwrap();
    let mut buf = [0u8; 4];
    stream.write_all(b"ping").await.unwrap();
    tokio::time::timeout(BOUND, stream.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping");

    net.partition(&["client"], &["a"]).unwrap();
    stream.write_all(b"lost").await.unwrap();
    let proxy = net.tcp_proxy("client", "a").unwrap();
    eventually(|| proxy.stats().client_to_server.discarded == 4).await;
    net.heal().unwrap();
    stream.write_all(b"back").await.unwrap();
    tokio::time::timeout(BOUND, stream.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        &buf, b"back",
        "what the blackhole took is gone, the link works again"
    );

    let err = net
        .set_node_faults("a", LinkFaults::none().loss(0.5))
        .unwrap_err();
    assert!(matches!(err, NetError::Unsupported { .. }), "{err}");
    net.set_link_faults(
        "client",
        "a",
        LinkFaults::none().delay(Duration::ZERO, Duration::from_millis(1)),
    )
    .unwrap();
    assert!(net.udp_proxy("client", "a").is_none());
}
