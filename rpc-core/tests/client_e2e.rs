//! `UdpChannel` against the real server (branch `server`), over the
//! in-memory network with faults and over UDP through the fault proxy:
//! at-most-once under loss and duplication, RRA leaves no history, a
//! restarted server yields "outcome unknown", the call styles.

mod client_support;

use bytes::Bytes;
use client_support::*;
use futures::future::BoxFuture;
use futures::StreamExt;
use prost::Message;
use rpc_core::client::{ChannelConfig, UdpChannel};
use rpc_core::fault::{FaultConfig, FaultProxy, ProxyConfig, ProxyFaults};
use rpc_core::server::{Server, ServerHandle};
use rpc_core::transport::mem::MemNetwork;
use rpc_core::{CallContext, CallError, Client, Error, Never, Service, ServiceInfo, Status};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

/// The test service: Add/AddAcked add one and reply the new count;
/// Read/ReadAcked reply the count; Hint adds one; Slow waits at `hold`
/// (when set), then sleeps n ms; Fill replies n bytes of padding.
#[derive(Debug, Default, Clone)]
struct Calc {
    count: Arc<AtomicU64>,
    runs: Arc<AtomicU64>,
    hold: Option<Gate>,
}

impl Service for Calc {
    fn info(&self) -> &'static ServiceInfo {
        &SERVICE
    }

    fn call(
        &self,
        method_id: u32,
        _ctx: CallContext,
        request: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, Status>> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let n = Num::decode(request).map(|m| m.n).unwrap_or(0);
        let count = self.count.clone();
        let hold = self.hold.clone();
        Box::pin(async move {
            if method_id == 17 {
                let pad = vec![0xA5; usize::try_from(n).unwrap_or(0)];
                return Ok(Bytes::from(Num { n, pad }.encode_to_vec()));
            }
            let v = match method_id {
                11 | 13 | 15 => count.fetch_add(1, Ordering::SeqCst) + 1,
                12 | 14 => count.load(Ordering::SeqCst),
                16 => {
                    if let Some(gate) = hold {
                        gate.pass().await;
                    }
                    tokio::time::sleep(Duration::from_millis(n)).await;
                    count.fetch_add(1, Ordering::SeqCst) + 1
                }
                _ => return Err(Status::unimplemented("no such method")),
            };
            Ok(Bytes::from(num(v).encode_to_vec()))
        })
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([10, 0, 0, 1], 1)))
}

fn lossy_config() -> ChannelConfig {
    let mut c = ChannelConfig::default();
    c.initial_rto = Duration::from_millis(20);
    c.default_retries = 30;
    c.max_rto = Duration::from_millis(200);
    c.max_wait = Duration::from_secs(20);
    c
}

async fn mem_server(net: &MemNetwork, at: SocketAddr, calc: &Calc) -> anyhow::Result<ServerHandle> {
    Ok(Server::builder()
        .add_service(calc.clone())
        .serve_socket(net.bind(at)?)
        .await?)
}

/// Runs `n` calls of `method` with `in_flight` at a time; all must succeed.
async fn run_calls(
    client: &Client,
    method: &'static rpc_core::MethodInfo,
    n: u64,
    in_flight: usize,
) -> anyhow::Result<()> {
    let results: Vec<_> = futures::stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            async move {
                client
                    .call::<_, Num, Never>(&SERVICE, method, &num(i))
                    .await
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(())
}

#[tokio::test]
async fn at_most_once_under_loss_and_duplication_in_memory() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let net = MemNetwork::with_faults(FaultConfig::seeded(42).loss(0.2).duplicate(0.1));
        let calc = Calc::default();
        let server = mem_server(&net, addr("10.0.0.1:7000"), &calc).await?;
        let socket = net.bind(addr("10.0.0.2:0"))?;
        let channel = UdpChannel::with_socket(socket, server.local_addr(), lossy_config());
        let client = Client::new(channel.clone());

        run_calls(&client, &ADD, 300, 16).await?;
        assert_eq!(
            calc.count.load(Ordering::SeqCst),
            300,
            "every call ran exactly once"
        );
        run_calls(&client, &ADD_RRA, 300, 16).await?;
        assert_eq!(
            calc.count.load(Ordering::SeqCst),
            600,
            "every call ran exactly once"
        );
        run_calls(&client, &READ, 100, 16).await?;

        // A last call acknowledges everything; the history empties.
        client
            .call::<_, Num, Never>(&SERVICE, &READ, &num(0))
            .await?;
        let s = server.stats();
        assert_eq!(s.history_completed, 0, "{s:?}");
        let c = channel.stats();
        assert!(
            c.retransmissions > 50,
            "the network did lose datagrams: {c:?}"
        );
        assert!(
            c.acks_sent + c.acks_coalesced + c.acks_piggybacked >= 300,
            "every RRA answer acknowledged: {c:?}"
        );
        assert_eq!(c.calls, 701);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn at_most_once_through_the_udp_fault_proxy() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let calc = Calc::default();
        let server = Server::builder()
            .add_service(calc.clone())
            .serve_udp("127.0.0.1:0")
            .await?;
        let faults = ProxyFaults::symmetric(FaultConfig::seeded(7).loss(0.2).duplicate(0.1));
        let proxy = FaultProxy::loopback(server.local_addr(), ProxyConfig::new(faults)).await?;
        let channel = UdpChannel::connect_with(proxy.local_addr(), lossy_config()).await?;
        let client = Client::new(channel.clone());
        run_calls(&client, &ADD_RRA, 200, 16).await?;
        run_calls(&client, &ADD, 200, 16).await?;
        assert_eq!(calc.count.load(Ordering::SeqCst), 400);
        client
            .call::<_, Num, Never>(&SERVICE, &READ, &num(0))
            .await?;
        assert_eq!(server.stats().history_completed, 0);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn restarted_server_never_runs_a_retransmission_again() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let net = MemNetwork::new();
        let server_addr = addr("10.0.0.1:7000");
        let client_addr = addr("10.0.0.2:5000");
        let first = Calc::default();
        let server = mem_server(&net, server_addr, &first).await?;
        let channel = UdpChannel::with_socket(net.bind(client_addr)?, server_addr, lossy_config());
        let client = Client::new(channel.clone());
        client
            .call::<_, Num, Never>(&SERVICE, &ADD, &num(0))
            .await?;
        assert_eq!(channel.stats().incarnation, server.incarnation());

        // Replies are lost: the next call runs, but the client retransmits.
        net.set_link_faults(server_addr, client_addr, FaultConfig::seeded(1).loss(1.0));
        // A budget the call cannot exhaust before the restart below.
        let c = client.clone();
        let call = tokio::spawn(async move {
            c.call::<_, Num, Never>(&SERVICE, &ADD, &num(0))
                .retries(100_000)
                .timeout(Duration::from_secs(50))
                .await
        });
        let start = Instant::now();
        while first.runs.load(Ordering::SeqCst) < 2 && start.elapsed() < WAIT {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(first.count.load(Ordering::SeqCst), 2);
        // Crash and restart with an empty history and a new incarnation.
        drop(server);
        let second = Calc::default();
        let restarted = Server::builder()
            .add_service(second.clone())
            .serve_socket(net.restart(server_addr)?)
            .await?;
        net.set_link_faults(server_addr, client_addr, FaultConfig::none());
        match call.await? {
            Err(CallError::Rpc(Error::OutcomeUnknown)) => {}
            other => anyhow::bail!("expected outcome unknown, got {other:?}"),
        }
        assert_eq!(
            second.runs.load(Ordering::SeqCst),
            0,
            "not run a second time"
        );
        // New calls go to the new incarnation.
        assert_eq!(
            client
                .call::<_, Num, Never>(&SERVICE, &ADD, &num(0))
                .await?
                .n,
            1
        );
        assert_eq!(channel.stats().incarnation, restarted.incarnation());
        assert_eq!(channel.stats().outcome_unknown, 1);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn call_styles_against_the_real_server() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let net = MemNetwork::with_faults(FaultConfig::seeded(3).loss(0.3));
        let gate = Gate::closed();
        let calc = Calc {
            hold: Some(gate.clone()),
            ..Calc::default()
        };
        let server = mem_server(&net, addr("10.0.0.1:7000"), &calc).await?;
        let channel = UdpChannel::with_socket(
            net.bind(addr("10.0.0.2:0"))?,
            server.local_addr(),
            lossy_config(),
        );
        let client = Client::new(channel.clone());

        // Asynchronous returns before the handler finishes (even with a
        // few PING and ACCEPT datagrams lost): the handler waits at a gate
        // opened only after the call returned.
        client
            .call::<_, Num, Never>(&SERVICE, &SLOW, &num(0))
            .asynchronous()
            .await?;
        assert_eq!(calc.count.load(Ordering::SeqCst), 0, "the handler is held");
        gate.open();

        // Deferred handles deliver their results at 30% loss.
        let mut handles = Vec::new();
        for _ in 0..20 {
            handles.push(
                client
                    .call::<_, Num, Never>(&SERVICE, &SLOW, &num(50))
                    .deferred()
                    .await?,
            );
        }
        let mut values = Vec::new();
        for h in handles {
            values.push(h.await?.n);
        }
        values.sort();
        values.dedup();
        assert_eq!(values.len(), 20, "every deferred call ran once: {values:?}");

        // One-way never waits for an answer (the server sends none: a call
        // that waited would not return).
        for i in 0..20 {
            client.one_way(&SERVICE, &HINT, &num(i)).await?;
        }

        // The asynchronous call finishes in the background.
        let until = Instant::now() + WAIT;
        while channel.stats().replies < 21 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            channel.stats().replies,
            21,
            "20 deferred + the asynchronous one"
        );
        client
            .call::<_, Num, Never>(&SERVICE, &READ, &num(0))
            .await?;
        let count = calc.count.load(Ordering::SeqCst);
        assert!(
            (21..=41).contains(&count),
            "1 async + 20 deferred + up to 20 one-way: {count}"
        );
        assert_eq!(server.stats().history_in_progress, 0);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_large_first_answer_comes_after_the_address_is_verified() -> anyhow::Result<()> {
    // An idempotent first call sends no PING: its 20,000-byte answer to a
    // small request is too big for an address the server has not
    // verified, so a PONG with a cookie comes instead, and the client sends
    // the request again with the cookie at once (not after its timeout).
    init_tracing();
    bounded(LIMIT, async {
        let calc = Calc::default();
        let server = Server::builder()
            .add_service(calc.clone())
            .serve_udp("127.0.0.1:0")
            .await?;
        let mut config = ChannelConfig::default();
        // A retransmission timer that never fires within the test: only the
        // PONG can make the client send the second copy.
        config.initial_rto = Duration::from_secs(3600);
        config.max_rto = Duration::from_secs(3600);
        config.max_wait = Duration::from_secs(7200);
        let client = Client::new(UdpChannel::connect_with(server.local_addr(), config).await?);
        let big: Num = client
            .call::<_, Num, Never>(&SERVICE, &FILL, &num(20_000))
            .await?;
        assert_eq!(big.pad.len(), 20_000);
        let stats = server.stats();
        assert_eq!(stats.amplification_limited, 1, "{stats:?}");
        assert_eq!(stats.executions, 2, "idempotent: it ran for each copy");
        // The address is verified now: the next large answer comes at once.
        let again: Num = client
            .call::<_, Num, Never>(&SERVICE, &FILL, &num(20_000))
            .await?;
        assert_eq!(again.pad.len(), 20_000);
        assert_eq!(server.stats().amplification_limited, 1);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_calls_on_a_multi_thread_runtime() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let calc = Calc::default();
        let server = Server::builder()
            .add_service(calc.clone())
            .serve_udp("127.0.0.1:0")
            .await?;
        let channel = UdpChannel::connect(server.local_addr()).await?;
        let client = Client::new(channel.clone());
        run_calls(&client, &ADD_RRA, 2000, 64).await?;
        run_calls(&client, &ADD, 2000, 64).await?;
        assert_eq!(calc.count.load(Ordering::SeqCst), 4000);
        let mut handles = Vec::new();
        for _ in 0..200 {
            handles.push(
                client
                    .call::<_, Num, Never>(&SERVICE, &SLOW, &num(5))
                    .deferred()
                    .await?,
            );
        }
        for h in handles {
            h.await?;
        }
        assert_eq!(calc.count.load(Ordering::SeqCst), 4200);
        client
            .call::<_, Num, Never>(&SERVICE, &READ, &num(0))
            .await?;
        assert_eq!(server.stats().history_completed, 0);
        assert_eq!(channel.stats().replies, 4201);
        Ok(())
    })
    .await
}
