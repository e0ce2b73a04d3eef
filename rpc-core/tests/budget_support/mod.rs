//! Shared by the `tcp_budget*` tests: a server with a buffer budget, raw
//! connections that send part of a frame, waits for events, the process's
//! resident memory.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use crate::server_support::{State, TestService};
use rpc_core::server::{Server, ServerHandle, TcpServerConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const MIB: usize = 1 << 20;

/// Safety limit of a whole test (a hang fails, nothing else is timed).
pub const LIMIT: Duration = Duration::from_secs(120);

/// What the attackers write, over and over.
pub static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// A server with the test service, a buffer budget and one TCP door.
pub async fn serve(budget: usize, config: TcpServerConfig) -> (ServerHandle, Arc<State>) {
    let svc = TestService::default();
    let state = Arc::clone(&svc.state);
    let handle = Server::builder()
        .buffer_budget(budget)
        .add_service(svc)
        .serve_tcp_with("127.0.0.1:0", config)
        .await
        .unwrap();
    (handle, state)
}

/// A door config with `frame_timeout`.
pub fn door(frame_timeout: Duration) -> TcpServerConfig {
    TcpServerConfig::default().with_frame_timeout(frame_timeout)
}

/// Waits until `cond` holds (checked every few milliseconds; the test's
/// safety limit ends a wait that never comes).
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    // 60 s of 2 ms steps at most.
    for _ in 0..30_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("never happened: {what}");
}

/// Reads (and drops) what the server sends until it closes the connection
/// (end of stream or reset); panics if it is still open after a generous
/// safety limit. Returns what was read.
pub async fn closed_by_server(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let wait = async {
        let mut buf = [0u8; 4096];
        // Each turn reads at least one byte or ends; the server sends little.
        for _ in 0..10_000 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        panic!("the server kept sending");
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .expect("the server did not close the connection");
    got
}

/// A raw connection that announces a frame of `len` bytes and sends
/// `send` bytes of it (or less, if the server closes the connection
/// first).
pub async fn partial_frame(addr: SocketAddr, len: usize, send: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&u32::try_from(len).unwrap().to_be_bytes())
        .await
        .unwrap();
    let mut left = send;
    while left > 0 {
        let n = left.min(ZEROS.len());
        if s.write_all(&ZEROS[..n]).await.is_err() {
            break;
        }
        left -= n;
    }
    s
}

/// This process's resident memory, in KiB.
pub fn rss_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
