//! Rough latency of the UDP channel against the real server versus a raw
//! tokio UDP ping-pong, on one current-thread runtime (layout "single").
//! Not a benchmark: `cargo test --release -p rpc-core --test client_perf -- --ignored --nocapture`.

#![allow(clippy::print_stdout)] // a measurement: printing is its purpose

mod client_support;

use bytes::Bytes;
use client_support::*;
use futures::future::BoxFuture;
use rpc_core::client::UdpChannel;
use rpc_core::server::Server;
use rpc_core::{CallContext, Client, Never, Service, ServiceInfo, Status};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct Echo;

impl Service for Echo {
    fn info(&self) -> &'static ServiceInfo {
        &SERVICE
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

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "measurement, run by hand in release mode"]
async fn latency_vs_raw_udp() -> anyhow::Result<()> {
    const N: usize = 20_000;
    // raw
    let a = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let b = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let b_addr = b.local_addr()?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = b.recv_from(&mut buf).await {
            let _ = b.send_to(&buf[..n], from).await;
        }
    });
    let mut buf = vec![0u8; 2048];
    let payload = vec![7u8; 64];
    let mut raw = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        a.send_to(&payload, b_addr).await?;
        a.recv_from(&mut buf).await?;
        raw.push(t.elapsed());
    }
    let server = Server::builder()
        .add_service(Echo)
        .serve_udp("127.0.0.1:0")
        .await?;
    let channel = UdpChannel::connect(server.local_addr()).await?;
    let client = Client::new(channel.clone());
    let req = Num {
        n: 1,
        pad: vec![7; 60],
    };
    for (name, method) in [
        ("RR", &READ),
        ("RRA", &READ_RRA),
        ("RR non-idempotent", &ADD),
    ] {
        let mut ours = Vec::with_capacity(N);
        for _ in 0..N {
            let t = Instant::now();
            client.call::<_, Num, Never>(&SERVICE, method, &req).await?;
            ours.push(t.elapsed());
        }
        let (r, o) = (p50(raw.clone()), p50(ours));
        println!(
            "{name}: raw p50 {r:?}, ours p50 {o:?}, ratio {:.2}",
            o.as_secs_f64() / r.as_secs_f64()
        );
    }
    // throughput with 64 in flight
    use futures::StreamExt;
    let t = Instant::now();
    let n = 100_000u64;
    futures::stream::iter(0..n)
        .map(|_| {
            let client = client.clone();
            let req = req.clone();
            async move { client.call::<_, Num, Never>(&SERVICE, &READ, &req).await }
        })
        .buffer_unordered(64)
        .for_each(|r| async move { assert!(r.is_ok()) })
        .await;
    println!(
        "RR @64: {:.0} calls/s",
        n as f64 / t.elapsed().as_secs_f64()
    );
    let stats = channel.stats();
    println!("{stats:?}");
    assert_eq!(
        (stats.calls, stats.replies),
        (3 * N as u64 + n, 3 * N as u64 + n)
    );
    Ok(())
}
