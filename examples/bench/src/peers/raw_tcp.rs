//! Baseline: a raw TCP echo, one connection, length-prefixed frames, all
//! the frames a read completes answered in one write (batched, as tarpc
//! does); TCP's floor. Measured by its own loop, not through `Target`.

use crate::measure::{percentile, watchdog, Plan, Row};
use crate::report::us;
use crate::target::{spawn_server, Role, ServerTask};
use crate::PAYLOAD;
use anyhow::ensure;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::task::JoinSet;

/// A raw echo server over TCP: reads what is there, answers every complete
/// length-prefixed frame, all of a read's frames in one write.
pub(crate) async fn raw_tcp_server(server_rt: &Handle) -> anyhow::Result<(SocketAddr, ServerTask)> {
    use bytes::BufMut as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    spawn_server(
        server_rt,
        "raw TCP server",
        |listener: TcpListener| async move {
            let mut conns = JoinSet::new();
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.set_nodelay(true);
                conns.spawn(async move {
                    let mut buf = bytes::BytesMut::with_capacity(64 * 1024);
                    let mut out = bytes::BytesMut::with_capacity(64 * 1024);
                    loop {
                        if s.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                            return;
                        }
                        while buf.len() >= 4 {
                            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                            if buf.len() < 4 + len {
                                break;
                            }
                            out.put_slice(&buf.split_to(4 + len));
                        }
                        if !out.is_empty() && s.write_all(&out).await.is_err() {
                            return;
                        }
                        out.clear();
                    }
                });
            }
        },
    )
    .await
}

/// Raw TCP, one connection: `in_flight` 64-byte frames kept outstanding;
/// the frames completed by each read are answered by as many new ones in
/// one write (batched, as tarpc does). Returns the sorted round trips
/// (only when `in_flight` is 1) and frames per second.
pub(crate) async fn raw_tcp_run(
    addr: SocketAddr,
    in_flight: usize,
    window: Duration,
) -> anyhow::Result<(Vec<Duration>, f64)> {
    use bytes::{Buf as _, BufMut as _};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    const FRAME: usize = 4 + PAYLOAD;
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut frame = bytes::BytesMut::new();
    frame.put_u32(PAYLOAD as u32);
    frame.put_slice(&[7u8; PAYLOAD]);
    let mut out = bytes::BytesMut::new();
    for _ in 0..in_flight {
        out.put_slice(&frame);
    }
    let mut sent_at = std::collections::VecDeque::new();
    let mut lat = Vec::new();
    let start = Instant::now();
    s.write_all(&out).await?;
    sent_at.extend(std::iter::repeat_n(Instant::now(), in_flight));
    let mut buf = bytes::BytesMut::with_capacity(64 * 1024);
    let mut done = 0u64;
    while start.elapsed() < window {
        ensure!(
            s.read_buf(&mut buf).await? > 0,
            "raw TCP: connection closed"
        );
        out.clear();
        while buf.len() >= FRAME {
            buf.advance(FRAME);
            done += 1;
            if let Some(t) = sent_at.pop_front() {
                if in_flight == 1 {
                    lat.push(t.elapsed());
                }
            }
            out.put_slice(&frame);
        }
        sent_at.extend(std::iter::repeat_n(Instant::now(), out.len() / FRAME));
        s.write_all(&out).await?;
    }
    lat.sort_unstable();
    Ok((lat, done as f64 / start.elapsed().as_secs_f64()))
}

/// The raw TCP baseline as a row: sequential = one frame outstanding.
pub(crate) async fn raw_tcp_row(server_rt: &Handle, plan: &Plan) -> anyhow::Result<Row> {
    let name = "raw tokio TCP (batched)".to_owned();
    if !plan.wants(&name) {
        return Ok(Row::skipped(name, Role::RawTcp));
    }
    let (addr, _task) = raw_tcp_server(server_rt).await?;
    let bound = plan.seq_window * 2;
    watchdog(&name, bound, raw_tcp_run(addr, 1, plan.tput_warmup)).await??;
    let (lat, _) = watchdog(&name, bound, raw_tcp_run(addr, 1, plan.seq_window)).await??;
    ensure!(!lat.is_empty(), "raw TCP: no round trip completed");
    let mut tput = Vec::new();
    for &n in &plan.in_flight {
        let bound = plan.tput_warmup + plan.tput_window;
        watchdog(&name, bound, raw_tcp_run(addr, n, plan.tput_warmup)).await??;
        let (_, rate) = watchdog(&name, bound, raw_tcp_run(addr, n, plan.tput_window)).await??;
        tput.push((n, rate));
    }
    let row = Row {
        name,
        role: Role::RawTcp,
        seq_calls: lat.len() as u64,
        p50: percentile(&lat, 50),
        p99: percentile(&lat, 99),
        throughput: tput,
        note: "one connection; all frames a read completes are answered in one write".to_owned(),
    };
    println!("  measured {:<28} p50 {:>8.1} us", row.name, us(row.p50));
    Ok(row)
}
