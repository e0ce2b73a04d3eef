//! Rough throughput and latency of the TCP channel against the real
//! server (at-most-once on: a non-idempotent RR method, so every call goes
//! through the reply history) versus a raw tokio TCP echo with frames
//! batched per write, both on one current-thread runtime (layout
//! "single"), 64-byte payloads.
//! Not a benchmark: `cargo test --release -p rpc-core --test tcp_perf -- --ignored --nocapture`.

#![allow(clippy::print_stdout, clippy::unwrap_used)] // a measurement: printing is its purpose

mod server_support;
mod tcp_support;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use rpc_core::client::TcpChannel;
use rpc_core::server::Server;
use rpc_core::{CallContext, Protocol, Service, ServiceInfo, Status};
use server_support::{ECHO, INFO};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const RUN: Duration = Duration::from_millis(1500);

#[derive(Debug, Clone)]
struct Echo;

impl Service for Echo {
    fn info(&self) -> &'static ServiceInfo {
        &INFO
    }
    fn call(
        &self,
        _m: u32,
        _c: CallContext,
        request: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, Status>> {
        Box::pin(async move { Ok(request) })
    }
}

/// Sequential p50 of our TCP channel (RR, non-idempotent, at-most-once).
pub async fn ours_seq_p50(ch: &TcpChannel, n: usize) -> Duration {
    let payload = Bytes::from(vec![7u8; 64]);
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        tcp_support::call(ch, ECHO, payload.clone(), Protocol::RR, None)
            .await
            .unwrap()
            .unwrap();
        v.push(t.elapsed());
    }
    v.sort();
    v[v.len() / 2]
}

/// Calls per second of our TCP channel with `inflight` calls in flight.
pub async fn ours_throughput(ch: &TcpChannel, inflight: usize, run: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + run;
    let tasks: Vec<_> = (0..inflight)
        .map(|_| {
            let (ch, done) = (ch.clone(), Arc::clone(&done));
            tokio::spawn(async move {
                let payload = Bytes::from(vec![7u8; 64]);
                while Instant::now() < stop {
                    tcp_support::call(&ch, ECHO, payload.clone(), Protocol::RR, None)
                        .await
                        .unwrap()
                        .unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let start = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// A raw echo server: reads what is there, answers every complete frame
/// in one write.
async fn raw_server() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            s.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut buf = BytesMut::with_capacity(64 * 1024);
                let mut out = BytesMut::with_capacity(64 * 1024);
                loop {
                    if s.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                        return;
                    }
                    while buf.len() >= 4 {
                        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                        if buf.len() < 4 + len {
                            break;
                        }
                        let frame = buf.split_to(4 + len);
                        out.put_slice(&frame);
                    }
                    if !out.is_empty() && s.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                }
            });
        }
    });
    addr
}

/// Raw TCP: `inflight` 64-byte frames kept outstanding; every read's
/// complete frames are answered by as many new ones in one write. Returns
/// (p50 round trip when `inflight` is 1, frames per second).
pub async fn raw_tcp(
    addr: std::net::SocketAddr,
    inflight: usize,
    run: Duration,
) -> (Duration, f64) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let frame = {
        let mut f = BytesMut::new();
        f.put_u32(64);
        f.put_slice(&[7u8; 64]);
        f.freeze()
    };
    let mut out = BytesMut::new();
    for _ in 0..inflight {
        out.put_slice(&frame);
    }
    let mut sent_at = std::collections::VecDeque::new();
    let mut lat = Vec::new();
    let start = Instant::now();
    s.write_all(&out).await.unwrap();
    for _ in 0..inflight {
        sent_at.push_back(Instant::now());
    }
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut done = 0u64;
    while start.elapsed() < run {
        s.read_buf(&mut buf).await.unwrap();
        out.clear();
        while buf.len() >= 68 {
            buf.advance(68);
            done += 1;
            if let Some(t) = sent_at.pop_front() {
                if inflight == 1 {
                    lat.push(t.elapsed());
                }
            }
            out.put_slice(&frame);
        }
        let now = Instant::now();
        for _ in 0..out.len() / 68 {
            sent_at.push_back(now);
        }
        s.write_all(&out).await.unwrap();
    }
    let rate = done as f64 / start.elapsed().as_secs_f64();
    lat.sort();
    (lat.get(lat.len() / 2).copied().unwrap_or_default(), rate)
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "measurement, run by hand in release mode"]
async fn tcp_vs_raw_tcp() {
    let only_ours = std::env::var_os("TCP_PERF_ONLY_OURS").is_some();
    let raw_addr = raw_server().await;
    let server = Server::builder()
        .add_service(Echo)
        .serve_tcp("127.0.0.1:0")
        .await
        .unwrap();
    let ch = TcpChannel::connect(server.local_addr()).await.unwrap();
    // warm up
    ours_seq_p50(&ch, 2_000).await;
    let _ = raw_tcp(raw_addr, 1, Duration::from_millis(200)).await;

    if let Some(n) = std::env::var("TCP_PERF_ONLY_INFLIGHT")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        // For profiling one phase.
        let ours = ours_throughput(&ch, n, Duration::from_secs(4)).await;
        println!("@{n} in flight: ours {ours:.0}/s");
        return;
    }
    let (raw_p50, raw1) = raw_tcp(raw_addr, 1, RUN).await;
    let ours_p50 = ours_seq_p50(&ch, 20_000).await;
    println!("seq p50: raw TCP {raw_p50:?}, ours {ours_p50:?}");
    for inflight in [1usize, 16, 64] {
        let (_, raw) = if inflight == 1 || only_ours {
            (raw_p50, raw1)
        } else {
            raw_tcp(raw_addr, inflight, RUN).await
        };
        let (l0, t0) = (ch.link_stats(), server.tcp_stats());
        let ours = ours_throughput(&ch, inflight, RUN).await;
        let (l1, t1) = (ch.link_stats(), server.tcp_stats());
        let per = |f: u64, w: u64| f as f64 / w.max(1) as f64;
        println!(
            "@{inflight:>2} in flight: raw TCP {raw:>10.0}/s, ours {ours:>9.0}/s ({:.2}x of raw); frames per write: client {:.1}, server {:.1}",
            ours / raw,
            per(l1.frames_sent - l0.frames_sent, l1.writes - l0.writes),
            per(t1.frames_sent - t0.frames_sent, t1.writes - t0.writes),
        );
    }
    let s = server.stats();
    let t = server.tcp_stats();
    let l = ch.link_stats();
    println!(
        "server: executions {} replays {} history {} | tcp frames in {} out {} writes {} | client frames out {} writes {} suppressed {}",
        s.executions, s.duplicates_replayed, s.history_len, t.frames_received, t.frames_sent, t.writes, l.frames_sent, l.writes, l.suppressed
    );
    assert_eq!(s.duplicates_replayed, 0);
}
