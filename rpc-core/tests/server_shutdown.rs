//! Graceful shutdown and drop: new requests refused, duplicates and ACKs
//! still answered, in-flight handlers finish, then the socket closes.
#![allow(clippy::unwrap_used)]

mod server_support;

use rpc_core::envelope::MessageType;
use rpc_core::server::{Server, ServerError};
use rpc_core::Code;
use server_support::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

/// Waits until `addr` can be bound again (the server's socket is closed).
async fn rebindable(addr: SocketAddr, within: Duration) -> bool {
    let start = Instant::now();
    loop {
        if tokio::net::UdpSocket::bind(addr).await.is_ok() {
            return true;
        }
        if start.elapsed() > within {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_and_answers_duplicates() {
    tokio::time::timeout(T, async {
        let (server, state) = serve(Server::builder()).await;
        let addr = server.local_addr();
        let engine = server.engine().clone();
        let peer = Peer::new(addr).await;
        let done = peer.call(&request(31, 1, ADD)).await;
        peer.send(&request(31, 2, SLOW)).await;
        wait_stats_engine(&engine, |s| s.executions == 2).await;
        assert_eq!(engine.in_flight(), 1);

        let stopping = tokio::spawn(server.shutdown(Duration::from_secs(5)));
        let start = Instant::now();
        while !engine.is_stopping() {
            assert!(start.elapsed() < WAIT, "the shutdown never began");
            tokio::task::yield_now().await;
        }
        // New work is refused.
        let refused = peer.call(&request(31, 3, ADD)).await;
        assert_eq!(msg_type(&refused), MessageType::Error);
        assert_eq!(code(&refused), Some(Code::Unavailable));
        assert_eq!(refused.status.as_ref().unwrap().message, "shutting down");
        // A duplicate of finished work still gets its stored reply.
        let mut dup = request(31, 1, ADD);
        dup.attempt = 2;
        assert_eq!(peer.call(&dup).await, done);
        // A duplicate of the running request gets IN_PROGRESS.
        let mut dup2 = request(31, 2, SLOW);
        dup2.attempt = 2;
        assert_eq!(msg_type(&peer.call(&dup2).await), MessageType::InProgress);
        // ACKs are applied.
        peer.send(&ack(31, 1, 0)).await;
        let s = wait_stats_engine(&engine, |s| s.acks == 1).await;
        assert_eq!(s.evicted_ack, 1);
        assert!(!stopping.is_finished());

        // The in-flight handler finishes and its reply goes out.
        state.release(1);
        let reply = peer.recv().await;
        assert_eq!((reply.request_id, &reply.payload[..]), (2, &b"slow"[..]));
        stopping.await.unwrap().unwrap();
        assert!(rebindable(addr, WAIT).await, "socket closed after shutdown");
        assert_eq!(state.runs(), 2);
        assert_eq!(engine.stats().shutdown_refused, 1);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn shutdown_timeout_cancels_stuck_handlers() {
    tokio::time::timeout(T, async {
        let (server, _state) = serve(Server::builder()).await;
        let addr = server.local_addr();
        let peer = Peer::new(addr).await;
        peer.send(&request(32, 1, SLOW)).await;
        wait_stats(&server, |s| s.executions == 1).await;
        // The handler never finishes: a shutdown that did not give up at
        // its timeout would never return (bounded by `T`).
        let r = server.shutdown(Duration::from_millis(100)).await;
        assert!(
            matches!(r, Err(ServerError::ShutdownTimeout { cancelled: 1 })),
            "{r:?}"
        );
        assert!(rebindable(addr, WAIT).await);
        peer.expect_silence(Duration::from_millis(50)).await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    tokio::time::timeout(T, async {
        let (server, _state) = serve(Server::builder()).await;
        let addr = server.local_addr();
        let peer = Peer::new(addr).await;
        peer.send(&request(33, 1, SLOW)).await;
        wait_stats(&server, |s| s.executions == 1).await;
        drop(server);
        assert!(rebindable(addr, WAIT).await, "socket closes after drop");
    })
    .await
    .unwrap();
}

async fn wait_stats_engine(
    engine: &rpc_core::server::Engine,
    cond: impl Fn(&rpc_core::server::ServerStats) -> bool,
) -> rpc_core::server::ServerStats {
    let start = Instant::now();
    loop {
        let s = engine.stats();
        if cond(&s) {
            return s;
        }
        assert!(start.elapsed() < WAIT, "condition not reached: {s:#?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
