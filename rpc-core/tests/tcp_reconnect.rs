//! At-most-once across broken connections: calls in flight when the
//! connection is cut are sent again on a new one with the same session and
//! request id and run exactly once; the history empties (RRA).
#![allow(clippy::unwrap_used)]

mod server_support;
mod tcp_support;

use rpc_core::client::TcpChannel;
use rpc_core::server::TcpServerConfig;
use rpc_core::Protocol;
use server_support::{ADD, SLOW};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tcp_support::{be, bounded, call, eventually, serve_tcp, u64_of, Proxy};

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn calls_in_flight_survive_cut_connections_exactly_once() {
    cut_connections().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_survive_cut_connections_exactly_once_multi_thread() {
    cut_connections().await;
}

async fn cut_connections() {
    bounded(LIMIT, async {
        let (server, state) = serve_tcp(TcpServerConfig::default()).await;
        let proxy = Proxy::start(server.local_addr()).await;
        let ch = TcpChannel::connect(proxy.addr).await.unwrap();
        let session = ch.session_id();

        // 40 slow non-idempotent calls are running on the server, and 200
        // quick ones are being made, when the connection is cut (twice).
        let deadline = Some(Duration::from_secs(20));
        let slow: Vec<_> = (0..40)
            .map(|i| {
                let ch = ch.clone();
                let protocol = if i % 2 == 0 {
                    Protocol::RRA
                } else {
                    Protocol::RR
                };
                tokio::spawn(async move { call(&ch, SLOW, vec![], protocol, deadline).await })
            })
            .collect();
        assert!(eventually(Duration::from_secs(30), || server.stats().executions == 40).await);
        let quick: Vec<_> = (0..200u64)
            .map(|i| {
                let ch = ch.clone();
                let protocol = if i % 2 == 0 {
                    Protocol::RRA
                } else {
                    Protocol::RR
                };
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(i)).await;
                    call(&ch, ADD, be(1), protocol, deadline).await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        proxy.cut();
        tokio::time::sleep(Duration::from_millis(60)).await;
        proxy.cut();
        // The slow calls finish while their first connection is gone: their
        // replies are lost there and must come from the history.
        state.release(40);
        tokio::time::sleep(Duration::from_millis(30)).await;
        proxy.cut();

        let mut values = HashSet::new();
        for q in quick {
            let v = q
                .await
                .unwrap()
                .expect("call failed")
                .expect("server status");
            assert!(values.insert(u64_of(&v)), "a value twice: a call ran twice");
        }
        assert_eq!(values, (1..=200).collect::<HashSet<_>>());
        for s in slow {
            assert_eq!(
                &s.await
                    .unwrap()
                    .expect("call failed")
                    .expect("server status")[..],
                b"slow"
            );
        }
        assert_eq!(state.runs(), 240, "every call ran exactly once");
        assert_eq!(ch.session_id(), session, "one session across connections");

        let link = ch.link_stats();
        assert!(
            link.connects >= 2 && proxy.accepted.load(Ordering::SeqCst) >= 2,
            "{link:?}"
        );
        assert!(
            link.replayed >= 40,
            "the slow calls were sent again: {link:?}"
        );
        let s = server.stats();
        assert_eq!(s.executions, 240);
        assert!(
            s.in_progress_hits + s.duplicates_replayed >= 40,
            "retries answered from the history: {s:?}"
        );
        // RRA acknowledgements (and ack_up_to) empty the history. An ACK
        // queued when a connection was cut is lost, as a datagram would be;
        // the next message's ack_up_to covers it (here: one more call).
        let last = call(&ch, ADD, be(0), Protocol::RRA, deadline)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(u64_of(&last), 200);
        assert!(
            eventually(Duration::from_secs(30), || server.stats().history_len == 0).await,
            "history not empty: {:?}",
            server.stats()
        );
    })
    .await;
}

#[tokio::test]
async fn a_connection_closed_by_the_server_is_survived() {
    bounded(LIMIT, async {
        // The server closes connections idle for 150 ms: a call running
        // longer than that loses its connection from the server's side.
        let mut sc = TcpServerConfig::default();
        sc.idle_timeout = Some(Duration::from_millis(150));
        let (server, state) = serve_tcp(sc).await;
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
        assert!(
            eventually(Duration::from_secs(30), || server.tcp_stats().closed_idle
                >= 1)
            .await
        );
        assert!(eventually(Duration::from_secs(30), || ch.link_stats().replayed >= 1).await);
        state.release(1);
        assert_eq!(&slow.await.unwrap().unwrap().unwrap()[..], b"slow");
        assert_eq!(state.runs(), 1, "ran once");
        assert!(
            server.tcp_stats().connections_accepted >= 2,
            "the client reconnected"
        );
        assert!(eventually(Duration::from_secs(30), || server.stats().history_len == 0).await);
    })
    .await;
}

#[tokio::test]
async fn a_restarted_server_never_runs_a_retried_call_again() {
    bounded(LIMIT, async {
        let (server, state) = serve_tcp(TcpServerConfig::default()).await;
        let addr = server.local_addr();
        let ch = TcpChannel::connect(addr).await.unwrap();
        let first = call(&ch, ADD, be(1), Protocol::RR, Some(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(u64_of(&first.unwrap()), 1);
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
        assert!(eventually(Duration::from_secs(30), || state.runs() == 2).await);
        // Crash: the handle is dropped, its history with it; a new
        // incarnation comes up on the same address.
        let old_incarnation = server.incarnation();
        drop(server);
        let svc = server_support::TestService::default();
        let state2 = std::sync::Arc::clone(&svc.state);
        let mut restarted = None;
        // Until the old listener is gone (at most 30 s: a safety net).
        for _ in 0..1500 {
            match rpc_core::server::Server::builder()
                .add_service(svc.clone())
                .serve_tcp(addr)
                .await
            {
                Ok(s) => {
                    restarted = Some(s);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let restarted = restarted.expect("cannot bind the address again");
        assert_ne!(restarted.incarnation(), old_incarnation);
        // The call sent again on the new connection reaches another
        // incarnation: outcome unknown, not a second execution.
        let e = slow.await.unwrap().unwrap_err();
        assert!(matches!(e, rpc_core::Error::OutcomeUnknown), "{e:?}");
        assert_eq!(state2.runs(), 0);
        // (The replay and a copy of the call's own schedule may both arrive.)
        assert!(restarted.stats().outcome_unknown >= 1);
        // New calls work on the same channel.
        let r = call(&ch, ADD, be(1), Protocol::RR, Some(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(u64_of(&r.unwrap()), 1);
    })
    .await;
}

#[tokio::test]
async fn a_server_that_stays_away_fails_the_call_as_may_have_run() {
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
                    Some(Duration::from_millis(800)),
                )
                .await
            }
        });
        assert!(eventually(Duration::from_secs(30), || state.runs() == 1).await);
        drop(server);
        let e = slow.await.unwrap().unwrap_err();
        assert!(
            matches!(
                e,
                rpc_core::Error::DeadlineExceeded {
                    may_have_run: true,
                    ..
                } | rpc_core::Error::Unreachable {
                    may_have_run: true,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            ch.link_stats().connect_failures >= 1,
            "it kept trying to reconnect"
        );
    })
    .await;
}
