//! The client's send window (`ChannelConfig::max_window`) against the real
//! server over the in-memory network: one call whose REPLY datagrams are
//! lost until the test says so, hundreds of other calls on the same session, and a
//! server whose per-session history cap is small. With the window every
//! call succeeds and the server never evicts by session cap; without it
//! (window 0 = unlimited) the stalled call's stored reply is evicted and
//! the call fails with ABORTED.

mod client_support;

use bytes::Bytes;
use client_support::*;
use futures::future::BoxFuture;
use futures::StreamExt;
use prost::Message;
use rpc_core::client::{ChannelConfig, UdpChannel};
use rpc_core::envelope::{Envelope, MessageType};
use rpc_core::server::{HistoryConfig, Server, ServerHandle};
use rpc_core::transport::mem::{MemNetwork, MemSocket};
use rpc_core::transport::DatagramSocket;
use rpc_core::{CallContext, CallError, Client, Error, Never, Service, ServiceInfo, Status};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const LIMIT: Duration = Duration::from_secs(60);

/// How long a test waits for an event: a safety net, never the verdict.
const WAIT: Duration = Duration::from_secs(30);

/// Calls made while (and after) the first one stalls.
const OTHERS: u64 = 300;

/// The test service: Add (11) adds one and replies the new count.
#[derive(Debug, Default, Clone)]
struct Calc {
    count: Arc<AtomicU64>,
}

impl Service for Calc {
    fn info(&self) -> &'static ServiceInfo {
        &SERVICE
    }

    fn call(
        &self,
        method_id: u32,
        _ctx: CallContext,
        _request: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, Status>> {
        let count = self.count.clone();
        Box::pin(async move {
            match method_id {
                11 | 12 => Ok(Bytes::from(
                    num(count.fetch_add(1, Ordering::SeqCst) + 1).encode_to_vec(),
                )),
                _ => Err(Status::unimplemented("no such method")),
            }
        })
    }
}

/// A client socket that loses every REPLY for request id `victim` until
/// the test calls [`LosesReplies::release`]: the stall ends at an event of
/// the test, not after a time a busy machine may need for other work.
struct LosesReplies {
    inner: MemSocket,
    victim: u64,
    released: AtomicBool,
    lost: AtomicU64,
}

impl LosesReplies {
    fn new(inner: MemSocket, victim: u64) -> LosesReplies {
        LosesReplies {
            inner,
            victim,
            released: AtomicBool::new(false),
            lost: AtomicU64::new(0),
        }
    }

    fn loses(&self, datagram: &[u8]) -> bool {
        let Ok(env) = Envelope::decode(datagram) else {
            return false;
        };
        if env.request_id != self.victim || env.r#type != MessageType::Reply as i32 {
            return false;
        }
        if self.released.load(Ordering::SeqCst) {
            return false;
        }
        self.lost.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// From now on the victim's REPLYs pass.
    fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
    }
}

/// The channel's socket, sharing its state with the test.
struct Lossy(Arc<LosesReplies>);

impl DatagramSocket for Lossy {
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        self.0.inner.send_to(buf, target).await
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            let (n, from) = self.0.inner.recv_from(buf).await?;
            if !buf.get(..n).is_some_and(|d| self.0.loses(d)) {
                return Ok((n, from));
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.inner.local_addr()
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([10, 0, 0, 1], 1)))
}

fn config(window: u64) -> ChannelConfig {
    let mut c = ChannelConfig::default();
    c.initial_rto = Duration::from_millis(20);
    c.max_rto = Duration::from_millis(100);
    c.default_retries = 100;
    c.max_wait = Duration::from_secs(20);
    c.max_window = window;
    c
}

struct Setup {
    calc: Calc,
    server: ServerHandle,
    socket: Arc<LosesReplies>,
    channel: UdpChannel<Lossy>,
    client: Client,
}

/// A server with a per-session history cap of `cap`, and a client with
/// window `window` whose REPLYs for request 1 are lost until released.
async fn setup(cap: usize, window: u64) -> anyhow::Result<Setup> {
    let net = MemNetwork::new();
    let calc = Calc::default();
    let history = HistoryConfig {
        max_per_session: cap,
        ..HistoryConfig::default()
    };
    let server = Server::builder()
        .history(history)
        .add_service(calc.clone())
        .serve_socket(net.bind(addr("10.0.0.1:7000"))?)
        .await?;
    let socket = Arc::new(LosesReplies::new(net.bind(addr("10.0.0.2:5000"))?, 1));
    let channel =
        UdpChannel::with_socket(Lossy(socket.clone()), server.local_addr(), config(window));
    let client = Client::new(channel.clone());
    Ok(Setup {
        calc,
        server,
        socket,
        channel,
        client,
    })
}

/// Starts the call that gets request id 1 and waits until its first REPLY
/// was lost.
async fn start_stalled(
    s: &Setup,
) -> anyhow::Result<tokio::task::JoinHandle<Result<Num, CallError<Never>>>> {
    let client = s.client.clone();
    let stalled =
        tokio::spawn(async move { client.call::<_, Num, Never>(&SERVICE, &ADD, &num(0)).await });
    let end = Instant::now() + WAIT;
    while s.socket.lost.load(Ordering::SeqCst) == 0 {
        anyhow::ensure!(Instant::now() < end, "the first REPLY never came");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(stalled)
}

/// Runs [`OTHERS`] calls, 64 at a time; returns their results.
async fn run_others(client: &Client) -> Vec<Result<Num, CallError<Never>>> {
    futures::stream::iter(0..OTHERS)
        .map(|i| {
            let client = client.clone();
            async move { client.call::<_, Num, Never>(&SERVICE, &ADD, &num(i)).await }
        })
        .buffer_unordered(64)
        .collect()
        .await
}

#[tokio::test]
async fn window_keeps_a_stalled_reply_in_history_and_every_call_succeeds() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let s = setup(32, 16).await?;
        let stalled = start_stalled(&s).await?;
        // The stall ends once calls wait for the window (the event the
        // window exists for); they then go on as the stalled call finishes.
        let (others, waited) = tokio::join!(run_others(&s.client), async {
            let end = Instant::now() + WAIT;
            while s.channel.stats().window_waits == 0 {
                anyhow::ensure!(Instant::now() < end, "no call waited for the window");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            s.socket.release();
            anyhow::Ok(())
        });
        waited?;
        let first = stalled.await?;
        assert!(first.is_ok(), "stalled call: {first:?}");
        for r in &others {
            assert!(r.is_ok(), "other call: {r:?}");
        }
        assert!(s.socket.lost.load(Ordering::SeqCst) >= 1);
        let server = s.server.stats();
        assert_eq!(server.evicted_session_cap, 0, "{server:?}");
        let client = s.channel.stats();
        assert!(
            client.window_waits > 0,
            "calls waited for the window: {client:?}"
        );
        // at most once: every call ran exactly once
        assert_eq!(s.calc.count.load(Ordering::SeqCst), OTHERS + 1);
        s.server.shutdown(Duration::from_secs(5)).await?;
        Ok(())
    })
    .await
}

/// The problem the window solves, kept as a regression guard of the test
/// itself: without a window the cap evicts the stalled call's reply.
#[tokio::test]
async fn without_window_the_cap_evicts_the_stalled_reply() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let s = setup(32, 0).await?;
        let stalled = start_stalled(&s).await?;
        let others = run_others(&s.client).await;
        assert!(others.iter().all(Result::is_ok));
        // Only now may the stalled call's reply come back: too late.
        s.socket.release();
        let first = stalled.await?;
        assert!(
            matches!(&first, Err(e) if e.code() == rpc_core::Code::Aborted),
            "expected ABORTED, got {first:?}"
        );
        assert!(s.server.stats().evicted_session_cap > 0);
        assert_eq!(s.channel.stats().window_waits, 0);
        s.server.shutdown(Duration::from_secs(5)).await?;
        Ok(())
    })
    .await
}

/// A call waiting for the window fails at its deadline with nothing sent;
/// dropping waiting calls leaves the session usable.
#[tokio::test]
async fn waiting_for_the_window_counts_against_the_deadline() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let s = setup(32, 2).await?;
        let stalled = start_stalled(&s).await?;
        // id 2: 2 - 0 <= 2, runs at once
        let second = s
            .client
            .call::<_, Num, Never>(&SERVICE, &ADD, &num(2))
            .await;
        assert!(second.is_ok(), "{second:?}");
        // id 3 would be 3 past ack_up_to 0: waits until its deadline
        let started = Instant::now();
        let third = s
            .client
            .call::<_, Num, Never>(&SERVICE, &ADD, &num(3))
            .timeout(Duration::from_millis(100))
            .await;
        assert!(
            matches!(
                third,
                Err(CallError::Rpc(Error::DeadlineExceeded {
                    may_have_run: false,
                    attempts: 0
                }))
            ),
            "{third:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(90));
        // a waiting call dropped: nothing leaks
        let dropped = tokio::time::timeout(
            Duration::from_millis(20),
            s.client.call::<_, Num, Never>(&SERVICE, &ADD, &num(4)),
        )
        .await;
        assert!(
            dropped.is_err(),
            "the call should still be waiting: {dropped:?}"
        );
        s.socket.release();
        let first = stalled.await?;
        assert!(first.is_ok(), "{first:?}");
        let later = run_others(&s.client).await;
        assert!(later.iter().all(Result::is_ok));
        assert_eq!(
            s.calc.count.load(Ordering::SeqCst),
            OTHERS + 2,
            "the waiting calls never ran"
        );
        assert_eq!(s.server.stats().evicted_session_cap, 0);
        s.server.shutdown(Duration::from_secs(5)).await?;
        Ok(())
    })
    .await
}
