//! TCP transport: multiplexing, limits (frame size both ways, absurd
//! lengths, connections, idle), a dead peer, graceful shutdown.
#![allow(clippy::unwrap_used)]

mod server_support;
mod tcp_support;

use server_support::{ADD, BIG, ECHO, GET, SLOW};
use std::collections::HashSet;
use std::time::Duration;
use tcp_support::{be, bounded, call, eventually, serve_tcp, u64_of};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use rpc_core::client::{TcpChannel, TcpConfig};
use rpc_core::server::TcpServerConfig;
use rpc_core::{Code, Error, Protocol};

const LIMIT: Duration = Duration::from_secs(60);

/// How long a test waits for an event: a safety net, never the verdict.
const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn many_concurrent_calls_share_one_connection_and_few_writes() {
    bounded(LIMIT, async {
        let (server, state) = serve_tcp(TcpServerConfig::default()).await;
        let ch = TcpChannel::connect(server.local_addr()).await.unwrap();
        let n = 500u64;
        let calls = (0..n).map(|i| {
            let ch = ch.clone();
            let protocol = if i % 2 == 0 {
                Protocol::RR
            } else {
                Protocol::RRA
            };
            async move { call(&ch, ADD, be(1), protocol, Some(Duration::from_secs(10))).await }
        });
        let results = futures::future::join_all(calls).await;
        let values: HashSet<u64> = results
            .into_iter()
            .map(|r| u64_of(&r.unwrap().unwrap()))
            .collect();
        assert_eq!(
            values,
            (1..=n).collect::<HashSet<_>>(),
            "every call ran exactly once"
        );
        assert_eq!(state.runs(), n);
        let tcp = server.tcp_stats();
        assert_eq!(
            tcp.connections_accepted, 1,
            "one connection carries every call"
        );
        let link = ch.link_stats();
        assert_eq!((link.connects, link.replayed), (1, 0));
        assert!(
            link.writes < link.frames_sent,
            "client batches frames: {link:?}"
        );
        assert!(
            tcp.writes < tcp.frames_sent,
            "server batches frames: {tcp:?}"
        );
        let s = server.stats();
        assert_eq!(
            (s.requests, s.in_progress_hits),
            (n, 0),
            "no copies on a healthy connection"
        );
        assert_eq!(
            (ch.stats().retransmissions, link.suppressed),
            (0, 0),
            "the exchange made no copies over the reliable link"
        );
        // The idempotent read bypasses the history; like every request it
        // carries the session's ack_up_to, now past every call above.
        let v = call(&ch, GET, vec![], Protocol::RR, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(u64_of(&v), n);
        // RRA acknowledgements and ack_up_to empty the history. (The RR
        // entries go only when a later message carries an ack_up_to past
        // them: the ACKs of the burst may have carried a lower one, while
        // an older call was still running.)
        assert!(
            eventually(WAIT, || server.stats().history_len == 0).await,
            "{:?}",
            server.stats()
        );
    })
    .await;
}

#[tokio::test]
async fn a_slow_call_is_not_retransmitted_on_a_healthy_connection() {
    bounded(LIMIT, async {
        let (server, state) = serve_tcp(TcpServerConfig::default()).await;
        let ch = TcpChannel::connect(server.local_addr()).await.unwrap();
        let slow = tokio::spawn({
            let ch = ch.clone();
            async move {
                call(
                    &ch,
                    SLOW,
                    vec![],
                    Protocol::RRA,
                    Some(Duration::from_secs(10)),
                )
                .await
            }
        });
        // The handler is held well past the time at which a datagram
        // channel would have retransmitted (its first wait is at most
        // 1.25 RTO, its first poll at least 1.5 RTO); the link being
        // reliable and its connection healthy, the exchange sends nothing
        // more.
        assert!(
            eventually(WAIT, || state.runs() == 1).await,
            "the call runs"
        );
        let running = std::time::Instant::now();
        assert!(
            eventually(WAIT, || running.elapsed() > ch.stats().rto * 4).await,
            "time passes"
        );
        state.release(1);
        assert_eq!(&slow.await.unwrap().unwrap().unwrap()[..], b"slow");
        let s = server.stats();
        assert_eq!(
            (s.executions, s.requests, s.in_progress_hits),
            (1, 1, 0),
            "one copy reached the server"
        );
        let c = ch.stats();
        assert_eq!(
            (c.attempts, c.retransmissions, c.in_progress),
            (1, 0, 0),
            "one copy was sent, and no IN_PROGRESS made up"
        );
        assert_eq!(ch.link_stats().suppressed, 0, "no copy to suppress");
    })
    .await;
}

#[tokio::test]
async fn oversized_messages_are_refused_on_both_sides() {
    bounded(LIMIT, async {
        let mut sc = TcpServerConfig::default();
        sc.max_frame = 64 * 1024;
        let (server, state) = serve_tcp(sc).await;
        // Client side: refused before sending.
        let mut cc = TcpConfig::default();
        cc.max_frame = 32 * 1024;
        let small = TcpChannel::connect_with(server.local_addr(), cc)
            .await
            .unwrap();
        let e = call(&small, ECHO, vec![0u8; 40 * 1024], Protocol::RR, None)
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::MessageTooLarge { limit: 32768, .. }),
            "{e:?}"
        );
        assert!(!e.may_have_run());
        // Server side: a client with a larger limit gets RESOURCE_EXHAUSTED
        // (its header came with the length prefix), the request does not
        // run, and the connection is closed at once rather than kept open
        // while the server reads a body it refuses.
        let mut cc = TcpConfig::default();
        cc.max_frame = 1 << 20;
        let big = TcpChannel::connect_with(server.local_addr(), cc)
            .await
            .unwrap();
        let r = call(
            &big,
            ECHO,
            vec![0u8; 100 * 1024],
            Protocol::RR,
            Some(Duration::from_secs(5)),
        )
        .await
        .unwrap();
        assert_eq!(r.unwrap_err().code(), Code::ResourceExhausted);
        assert_eq!(state.runs(), 0);
        assert_eq!(server.tcp_stats().oversized_frames, 1);
        assert_eq!(server.stats().too_large_requests, 1);
        let r = call(&big, ADD, be(1), Protocol::RR, Some(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(u64_of(&r.unwrap()), 1);
        assert_eq!(
            big.link_stats().connects,
            2,
            "the server closed the connection; the next call reconnected"
        );
        // A reply over the server's limit becomes RESOURCE_EXHAUSTED.
        let r = call(
            &big,
            BIG,
            be(200 * 1024),
            Protocol::RR,
            Some(Duration::from_secs(5)),
        )
        .await
        .unwrap();
        assert_eq!(r.unwrap_err().code(), Code::ResourceExhausted);
        // A reply over the client's limit fails the call, not the channel.
        let r = call(
            &small,
            BIG,
            be(40 * 1024),
            Protocol::RR,
            Some(Duration::from_secs(5)),
        )
        .await
        .unwrap();
        assert_eq!(r.unwrap_err().code(), Code::ResourceExhausted);
        assert_eq!(small.link_stats().oversized_replies, 1);
        let r = call(
            &small,
            BIG,
            be(1000),
            Protocol::RR,
            Some(Duration::from_secs(5)),
        )
        .await
        .unwrap();
        assert_eq!(r.unwrap().len(), 1000);
        // Large messages within the limits pass (several reads, one frame).
        let r = call(
            &big,
            ECHO,
            vec![7u8; 60 * 1024],
            Protocol::RR,
            Some(Duration::from_secs(5)),
        )
        .await
        .unwrap();
        assert_eq!(r.unwrap().len(), 60 * 1024);
    })
    .await;
}

#[tokio::test]
async fn an_absurd_length_prefix_closes_that_connection_only() {
    bounded(LIMIT, async {
        let (server, _state) = serve_tcp(TcpServerConfig::default()).await;
        let ch = TcpChannel::connect(server.local_addr()).await.unwrap();
        let mut raw = TcpStream::connect(server.local_addr()).await.unwrap();
        raw.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        raw.write_all(b"garbage").await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(WAIT, raw.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "the server closed the connection");
        let tcp = server.tcp_stats();
        assert_eq!(tcp.absurd_lengths, 1);
        assert_eq!(server.stats().too_large_requests, 1);
        // Undecodable frames within the limit are dropped and counted.
        let mut raw = TcpStream::connect(server.local_addr()).await.unwrap();
        raw.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff])
            .await
            .unwrap();
        assert!(eventually(WAIT, || server.stats().malformed_dropped == 1).await);
        // The server and other connections are fine.
        let r = call(&ch, ADD, be(5), Protocol::RR, Some(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(u64_of(&r.unwrap()), 5);
    })
    .await;
}

#[tokio::test]
async fn connection_limit_and_idle_timeout() {
    bounded(LIMIT, async {
        let mut sc = TcpServerConfig::default();
        sc.max_connections = 1;
        sc.idle_timeout = Some(Duration::from_millis(300));
        let (server, _state) = serve_tcp(sc).await;
        let mut first = TcpStream::connect(server.local_addr()).await.unwrap();
        assert!(eventually(WAIT, || server.tcp_stats().connections_open == 1).await);
        let mut second = TcpStream::connect(server.local_addr()).await.unwrap();
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(WAIT, second.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "over the limit: closed at once");
        assert_eq!(server.tcp_stats().connections_refused, 1);
        // The first one says nothing and is closed after the idle timeout.
        let n = tokio::time::timeout(WAIT, first.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
        let tcp = server.tcp_stats();
        assert_eq!((tcp.closed_idle, tcp.connections_open), (1, 0));
        // A client reconnects by itself when it needs to: once the server
        // has closed its idle connection.
        let ch = TcpChannel::connect(server.local_addr()).await.unwrap();
        assert!(
            eventually(WAIT, || server.tcp_stats().closed_idle == 2
                && !ch.is_connected())
            .await,
            "the idle connection was closed"
        );
        let r = call(&ch, ADD, be(1), Protocol::RR, Some(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(u64_of(&r.unwrap()), 1);
        assert_eq!(ch.link_stats().connects, 2);
    })
    .await;
}

#[tokio::test]
async fn a_dead_peer_fails_calls_that_did_not_run() {
    bounded(LIMIT, async {
        // A port nobody listens on.
        let addr = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let mut cc = TcpConfig::default();
        cc.channel.default_retries = 3;
        let e = TcpChannel::connect_with(addr, cc.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Unreachable {
                    may_have_run: false,
                    ..
                }
            ),
            "{e:?}"
        );
        let ch = TcpChannel::connect_lazy(addr, cc);
        let e = call(&ch, ADD, be(1), Protocol::RR, None).await.unwrap_err();
        assert!(
            matches!(
                e,
                Error::Unreachable {
                    may_have_run: false,
                    attempts: 0
                }
            ),
            "{e:?}"
        );
        cc = TcpConfig::default();
        cc.backoff_initial = Duration::from_millis(50);
        let ch = TcpChannel::connect_lazy(addr, cc);
        let e = call(
            &ch,
            ADD,
            be(1),
            Protocol::RR,
            Some(Duration::from_millis(150)),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                e,
                Error::DeadlineExceeded {
                    may_have_run: false,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(ch.link_stats().connect_failures >= 1);
        // The server comes up: the same channel connects and works.
        let listener = std::net::TcpListener::bind(addr);
        if let Ok(l) = listener {
            drop(l);
            let server = rpc_core::server::Server::builder()
                .add_service(server_support::TestService::default())
                .serve_tcp(addr)
                .await
                .unwrap();
            let r = call(&ch, ADD, be(1), Protocol::RR, Some(Duration::from_secs(10)))
                .await
                .unwrap();
            assert_eq!(u64_of(&r.unwrap()), 1);
            drop(server);
        }
    })
    .await;
}

#[tokio::test]
async fn graceful_shutdown_writes_the_last_replies_then_closes() {
    bounded(LIMIT, async {
        let (server, state) = serve_tcp(TcpServerConfig::default()).await;
        let ch = TcpChannel::connect(server.local_addr()).await.unwrap();
        let slow = tokio::spawn({
            let ch = ch.clone();
            async move {
                call(
                    &ch,
                    SLOW,
                    vec![],
                    Protocol::RR,
                    Some(Duration::from_secs(10)),
                )
                .await
            }
        });
        assert!(eventually(WAIT, || server.stats().executions == 1).await);
        // The handler is released once the shutdown has begun: the
        // shutdown must wait for it and write its reply.
        let engine = server.engine().clone();
        let release = {
            let state = state.clone();
            async move {
                assert!(eventually(WAIT, || engine.is_stopping()).await);
                state.release(1);
            }
        };
        let (stopped, ()) = tokio::join!(server.shutdown(WAIT), release);
        stopped.unwrap();
        assert_eq!(
            &slow.await.unwrap().unwrap().unwrap()[..],
            b"slow",
            "the reply was written before closing"
        );
        assert!(
            eventually(WAIT, || !ch.is_connected()).await,
            "the connection is closed"
        );
    })
    .await;
}
