//! Hostile input against a running server while real (generated) clients
//! call it over the full stack: random bytes, truncated envelopes, absurd
//! lengths, wrong versions, client-bound message types and 10,000 fake
//! sessions. The real clients keep getting answers, every call of theirs
//! runs exactly once, the history stays within its caps, and the server's
//! counters show the drops.
//!
//! (`rpc-core/tests/server_hostile.rs` covers each kind of garbage against
//! the bare server with raw envelopes; this runs them all at once, next to
//! real traffic.)

use prost::Message as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rpc_core::envelope::{Envelope, ExchangeProtocol, MessageType, VERSION};
use rpc_core::server::{HistoryConfig, Server};
use rpc_tests::demo::{counter, Amount};
use rpc_tests::*;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;

const LIMIT: Duration = Duration::from_secs(90);
const FAKE_SESSIONS: u64 = 10_000;
const MAX_SESSIONS: usize = 1_000;

fn increment_request(session_id: u64, request_id: u64, delta: i64) -> Envelope {
    Envelope {
        version: VERSION,
        r#type: MessageType::Request as i32,
        request_id,
        session_id,
        service: counter::SERVICE.full_name.into(),
        method_id: counter::INCREMENT.id,
        attempt: 1,
        payload: Amount { delta }.encode_to_vec().into(),
        protocol: ExchangeProtocol::Rr as i32,
        ..Envelope::default()
    }
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Every kind of garbage, in a seeded random order. Fake sessions send
/// well-formed increments of 0 (they run, but do not move the value).
fn garbage(seed: u64) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for _ in 0..1_000 {
        let n = rng.random_range(0..400);
        out.push((0..n).map(|_| rng.random::<u8>()).collect());
    }
    let full = {
        let mut e = increment_request(0xBAD, 1, 0);
        e.metadata.insert("k", "v");
        e.encode_to_vec()
    };
    for n in 1..full.len() {
        out.push(full.get(..n).unwrap_or_default().to_vec());
    }
    for claimed in [1u64 << 62, u64::MAX, 10_000_000, 500] {
        let mut d = vec![0x08, 0x01, 0x10, 0x01];
        d.push((12 << 3) | 2);
        varint(claimed, &mut d);
        d.extend_from_slice(&[1, 2, 3]);
        out.push(d);
    }
    for v in [0u32, 2, 7, u32::MAX] {
        out.push(
            Envelope {
                version: v,
                ..increment_request(0xBAD, 2, 0)
            }
            .encode_to_vec(),
        );
    }
    for t in [
        MessageType::Reply,
        MessageType::Accept,
        MessageType::Pong,
        MessageType::Unspecified,
    ] {
        out.push(
            Envelope {
                r#type: t as i32,
                ..increment_request(0xBAD, 3, 0)
            }
            .encode_to_vec(),
        );
    }
    out.push(
        Envelope {
            r#type: 99,
            ..increment_request(0xBAD, 4, 0)
        }
        .encode_to_vec(),
    );
    out.push(
        Envelope {
            session_id: 0,
            ..increment_request(0, 5, 0)
        }
        .encode_to_vec(),
    );
    for s in 0..FAKE_SESSIONS {
        out.push(increment_request(0xF000_0000_0000 + s, 1 + s % 7, 0).encode_to_vec());
    }
    for s in 0..500u64 {
        let ack = Envelope {
            version: VERSION,
            r#type: MessageType::Ack as i32,
            request_id: s + 1,
            session_id: 0xA000_0000 + s,
            ack_up_to: s,
            ..Envelope::default()
        };
        out.push(ack.encode_to_vec());
    }
    // Shuffle (Fisher-Yates) so that every kind is interleaved.
    for i in (1..out.len()).rev() {
        let j = rng.random_range(0..=i);
        out.swap(i, j);
    }
    out
}

/// Sends the garbage, pausing briefly every few hundred datagrams so that
/// the attack goes on for a while next to the real traffic.
async fn attack(target: SocketAddr, datagrams: Vec<Vec<u8>>) -> anyhow::Result<usize> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    for (i, d) in datagrams.iter().enumerate() {
        socket.send_to(d, target).await?;
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    Ok(datagrams.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_keep_getting_answers_under_hostile_input() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        const CLIENTS: usize = 4;
        const BATCH: usize = 100;
        let history = HistoryConfig {
            max_sessions: MAX_SESSIONS,
            ..HistoryConfig::default()
        };
        let demo = Demo::start(Server::builder().history(history)).await?;
        let target = demo.addr();
        let datagrams = garbage(0x5EED);
        let attacker_done = Arc::new(AtomicBool::new(false));
        let attacker = {
            let done = attacker_done.clone();
            tokio::spawn(async move {
                let r = attack(target, datagrams).await;
                done.store(true, Ordering::SeqCst);
                r
            })
        };

        // Real clients call in batches for as long as the attack goes on.
        let mut real = Vec::new();
        for c in 0..CLIENTS {
            let (channel, client) = connect(target, lossy_config()).await?;
            let attack_over = attacker_done.clone();
            real.push(tokio::spawn(async move {
                let mut deltas = Vec::new();
                let mut results = Vec::new();
                let mut batch = 0usize;
                while batch < 2 || !attack_over.load(Ordering::SeqCst) {
                    let base = (c * 1_000_000 + batch * BATCH) as i64;
                    results.extend(
                        run_concurrent(BATCH, 8, |i| {
                            client
                                .increment(Amount {
                                    delta: base + i as i64 + 1,
                                })
                                .timeout(Duration::from_secs(30))
                                .into_future()
                        })
                        .await,
                    );
                    deltas.extend((0..BATCH).map(|i| base + i as i64 + 1));
                    batch += 1;
                    anyhow::ensure!(batch < 1_000, "the attack never ended");
                }
                Ok((channel, deltas, results))
            }));
        }
        // A real session the flood made the server forget (max_sessions)
        // may get "outcome unknown" for a retransmission instead of a
        // second execution: that is the at-most-once promise under a
        // flood. Every other call must succeed.
        let mut expected_value = 0i64;
        let mut uncertain_value = 0i64;
        let (mut ok_calls, mut unknown_calls) = (0u64, 0u64);
        for (c, task) in real.into_iter().enumerate() {
            let (channel, deltas, results) = task.await??;
            for (i, (r, delta)) in results.into_iter().zip(deltas).enumerate() {
                match r {
                    Ok(_count) => {
                        expected_value += delta;
                        ok_calls += 1;
                    }
                    Err(e) if e.code() == rpc_core::Code::Aborted => {
                        uncertain_value += delta;
                        unknown_calls += 1;
                    }
                    Err(e) => anyhow::bail!("client {c} call {i}: {e}"),
                }
            }
            assert_eq!(
                channel.stats().unknown_replies + channel.stats().malformed_drops,
                0
            );
        }
        let sent = attacker.await??;
        assert!(
            unknown_calls * 20 <= ok_calls,
            "{unknown_calls} outcome-unknown answers against {ok_calls} ok"
        );

        // Every successful real call ran exactly once, no call ran twice
        // (deltas are positive, so a second run would overshoot), and the
        // fake sessions add 0.
        let value = demo.counter.value();
        assert!(
            value >= expected_value && value <= expected_value + uncertain_value,
            "value {value}: ok calls sum to {expected_value}, uncertain ones to {uncertain_value}"
        );
        let runs = demo.counter.executions();
        let real_calls = ok_calls + unknown_calls;
        assert!(
            runs >= ok_calls && runs <= real_calls + sent as u64,
            "{runs} executions for {real_calls} real calls and {sent} attack datagrams"
        );

        let s = demo.server.stats();
        assert!(
            s.received > sent as u64 / 2,
            "the server read the attack: {s:?}"
        );
        assert!(
            s.malformed_dropped > 100,
            "random and truncated bytes dropped: {s:?}"
        );
        assert!(s.version_dropped >= 1, "wrong versions dropped: {s:?}");
        assert!(
            s.unexpected_dropped >= 1,
            "client-bound types and session 0 dropped: {s:?}"
        );
        assert!(
            s.unknown_acks >= 1,
            "ACKs for unknown sessions counted: {s:?}"
        );
        assert!(
            s.history_sessions <= MAX_SESSIONS,
            "sessions within the cap: {s:?}"
        );
        assert!(
            s.sessions_evicted > 0,
            "the flood of sessions was evicted, and counted: {s:?}"
        );
        assert_eq!((s.handler_panics, s.recv_errors), (0, 0), "{s:?}");
        Ok(())
    })
    .await
}

/// A flood of new sessions makes the server forget the least recently
/// active ones (`max_sessions`). A real session forgotten while its reply
/// is still needed must not have its retransmission run again.
///
/// A forgotten session leaves a tombstone for one ttl, so the
/// retransmission is refused as "outcome unknown" rather than run again.
/// Tombstones are never dropped early: once they are all in use, the rest
/// of the flood is refused (RESOURCE_EXHAUSTED) instead of pushing more
/// sessions out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_flood_never_makes_a_retransmission_run_again() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let history = HistoryConfig {
            max_sessions: 50,
            max_tombstones: 100,
            ..HistoryConfig::default()
        };
        let demo = Demo::start(Server::builder().history(history)).await?;
        let proxy = proxy(demo.addr(), rpc_core::fault::ProxyFaults::none()).await?;
        let mut config = lossy_config();
        config.max_rto = Duration::from_millis(100);
        config.default_retries = 100;
        let (_channel, client) = connect(proxy.local_addr(), config).await?;
        client.increment(Amount { delta: 0 }).await?;

        // The call runs, but its reply is lost: the client retransmits.
        let mut lose_replies = rpc_core::fault::ProxyFaults::none();
        lose_replies.server_to_client = rpc_core::fault::FaultConfig::seeded(1).loss(1.0);
        proxy.set_config(lose_replies)?;
        let call = {
            let client = client.clone();
            tokio::spawn(async move {
                // A budget that cannot run out before the flood is served.
                client
                    .increment(Amount { delta: 1 })
                    .retries(1_000_000)
                    .timeout(Duration::from_secs(60))
                    .await
            })
        };
        wait_until(Duration::from_secs(30), "the call to run", || {
            demo.counter.executions() == 2
        })
        .await?;

        // Meanwhile 200 other sessions arrive.
        let flood: Vec<Vec<u8>> = (0..200u64)
            .map(|s| increment_request(0xF100 + s, 1, 0).encode_to_vec())
            .collect();
        attack(demo.addr(), flood).await?;
        wait_until(Duration::from_secs(30), "the flood to be served", || {
            let stats = demo.server.stats();
            stats.sessions_evicted + stats.sessions_refused >= 150
        })
        .await?;
        let stats = demo.server.stats();
        assert_eq!(stats.sessions_evicted, 100, "as many as tombstones fit");
        assert_eq!(stats.history_tombstones, 100);
        assert!(stats.sessions_refused >= 50, "{stats:?}");

        proxy.set_config(rpc_core::fault::ProxyFaults::none())?;
        let outcome = call.await?;
        assert_eq!(
            demo.counter.value(),
            1,
            "the increment ran {} times; outcome {outcome:?}",
            demo.counter.value()
        );
        match outcome {
            Err(e) => assert_eq!(
                e.code(),
                rpc_core::Code::Aborted,
                "refused as outcome unknown: {e}"
            ),
            Ok(c) => anyhow::bail!(
                "the retransmission was answered {c:?} although its reply was forgotten"
            ),
        }
        Ok(())
    })
    .await
}
