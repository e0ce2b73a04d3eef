//! Tests of the in-memory network.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use super::*;
use crate::fault::Delay;
use std::time::Duration;

fn host(n: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, n])
}

fn at(n: u8, port: u16) -> SocketAddr {
    SocketAddr::new(host(n), port)
}

/// Everything that arrives within `wait` of tokio time.
async fn drain(socket: &MemSocket, wait: Duration) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while let Ok(Ok((n, _))) = tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
        got.push(buf[..n].to_vec());
    }
    got
}

#[tokio::test(start_paused = true)]
async fn a_partition_cuts_both_ways_between_its_sides_only() {
    let net = MemNetwork::new();
    let a = net.bind(at(1, 1)).unwrap();
    let b = net.bind(at(2, 1)).unwrap();
    let c = net.bind(at(3, 1)).unwrap();
    let a2 = net.bind(at(1, 2)).unwrap(); // same host as a
    net.partition(&[host(1)], &[host(2)]);
    assert!(net.is_cut(host(1), host(2)) && net.is_cut(host(2), host(1)));
    assert!(!net.is_cut(host(1), host(3)) && !net.is_cut(host(1), host(1)));
    a.send_to(b"a>b", b.addr()).await.unwrap();
    b.send_to(b"b>a", a.addr()).await.unwrap();
    a.send_to(b"a>c", c.addr()).await.unwrap();
    b.send_to(b"b>c", c.addr()).await.unwrap();
    a2.send_to(b"a2>a", a.addr()).await.unwrap();
    let wait = Duration::from_millis(10);
    assert_eq!(drain(&b, wait).await, Vec::<Vec<u8>>::new());
    assert_eq!(drain(&a, wait).await, vec![b"a2>a".to_vec()]);
    let mut at_c = drain(&c, wait).await;
    at_c.sort(); // two links: no order between them
    assert_eq!(at_c, vec![b"a>c".to_vec(), b"b>c".to_vec()]);
    let cut = net.link_stats(a.addr(), b.addr());
    assert_eq!((cut.received, cut.dropped, cut.blackholed), (1, 1, 1));

    net.heal();
    a.send_to(b"again", b.addr()).await.unwrap();
    assert_eq!(drain(&b, wait).await, vec![b"again".to_vec()]);
}

#[tokio::test(start_paused = true)]
async fn a_cut_loses_what_is_in_flight_and_isolation_covers_later_hosts() {
    let net = MemNetwork::new();
    let a = net.bind(at(1, 1)).unwrap();
    let b = net.bind(at(2, 1)).unwrap();
    let delay = Duration::from_millis(5);
    net.set_link_faults(
        a.addr(),
        b.addr(),
        FaultConfig::seeded(1).delay(Delay::fixed(delay)),
    );
    a.send_to(b"in flight", b.addr()).await.unwrap();
    net.isolate(host(2));
    assert_eq!(drain(&b, delay * 4).await, Vec::<Vec<u8>>::new());
    assert_eq!(net.link_stats(a.addr(), b.addr()).blackholed, 1);
    // A host that binds after the isolation is cut from it too.
    let c = net.bind(at(3, 1)).unwrap();
    c.send_to(b"c>b", b.addr()).await.unwrap();
    b.send_to(b"b>c", c.addr()).await.unwrap();
    assert_eq!(drain(&c, delay).await, Vec::<Vec<u8>>::new());
    assert_eq!(drain(&b, delay).await, Vec::<Vec<u8>>::new());
    net.heal();
    c.send_to(b"healed", b.addr()).await.unwrap();
    assert_eq!(drain(&b, delay).await, vec![b"healed".to_vec()]);
}

#[tokio::test(start_paused = true)]
async fn a_held_host_gets_and_sends_nothing_until_released_then_all_in_order() {
    let net = MemNetwork::new();
    let a = net.bind(at(1, 1)).unwrap();
    let b = net.bind(at(2, 1)).unwrap();
    let c = net.bind(at(3, 1)).unwrap();
    net.hold(host(2));
    assert!(net.is_held(host(2)));
    for i in 0..5u8 {
        a.send_to(&[i], b.addr()).await.unwrap();
    }
    b.send_to(b"from b", c.addr()).await.unwrap();
    a.send_to(b"a>c", c.addr()).await.unwrap();
    let wait = Duration::from_secs(60);
    // Other hosts still talk; nothing reaches or leaves the held one.
    assert_eq!(
        drain(&c, Duration::from_millis(1)).await,
        vec![b"a>c".to_vec()]
    );
    let mut buf = [0u8; 8];
    assert!(tokio::time::timeout(wait, b.recv_from(&mut buf))
        .await
        .is_err());
    assert_eq!(net.stats().links.dropped, 0, "held, not lost");

    // A receiver waiting across the release is woken by it.
    let waiting = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 8];
        for _ in 0..5 {
            let (n, from) = b.recv_from(&mut buf).await.unwrap();
            got.push((buf[..n].to_vec(), from));
        }
        got
    });
    tokio::task::yield_now().await;
    assert!(net.release(host(2)));
    assert!(!net.release(host(2)), "released once");
    let got = waiting.await.unwrap();
    let expected: Vec<_> = (0..5u8).map(|i| (vec![i], a.addr())).collect();
    assert_eq!(got, expected);
    assert_eq!(
        drain(&c, Duration::from_millis(1)).await,
        vec![b"from b".to_vec()]
    );
}

#[tokio::test(start_paused = true)]
async fn heal_releases_held_hosts_and_keeps_link_faults() {
    let net = MemNetwork::new();
    let a = net.bind(at(1, 1)).unwrap();
    let b = net.bind(at(2, 1)).unwrap();
    net.set_link_faults(a.addr(), b.addr(), FaultConfig::seeded(3).duplicate(1.0));
    net.hold(host(1));
    net.partition(&[host(3)], &[host(1)]);
    a.send_to(b"x", b.addr()).await.unwrap();
    net.heal();
    assert!(!net.is_held(host(1)) && !net.is_cut(host(1), host(3)));
    assert_eq!(
        drain(&b, Duration::from_millis(1)).await,
        vec![b"x".to_vec(), b"x".to_vec()],
        "the link still duplicates"
    );
}
