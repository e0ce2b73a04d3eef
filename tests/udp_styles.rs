//! The call styles over real UDP: asynchronous returns at the ACCEPT,
//! before a slow handler finishes; deferred handles deliver their results
//! at 30% loss (awaited, polled with `try_take`, or through a callback);
//! one-way calls never block, even when nothing can be reached.
//!
//! "Before the handler finishes" is shown by holding the handler at a
//! `Gate` opened only after the call returned; "never blocks" by calls
//! that return although nothing will ever answer them. No verdict compares
//! a latency with a bound: speed is the benchmark's business.

use rpc_core::server::Server;
use rpc_core::CallError;
use rpc_tests::demo::{Amount, Blob, Count, Empty, Work};
use rpc_tests::*;
use std::collections::HashSet;
use std::future::IntoFuture;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynchronous_returns_before_a_slow_handler_finishes() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let gate = Gate::closed();
        let demo = Demo::start_held(Server::builder(), &["Slow"], &gate).await?;
        let (channel, client) = connect(demo.addr(), lossy_config()).await?;
        client.increment(Amount { delta: 0 }).await?;
        let before = demo.counter.executions();

        // The handler waits at the gate, which opens only after the call
        // returned: a call that waited for the handler would never return.
        let start = Instant::now();
        client
            .slow(Work {
                millis: 200,
                delta: 5,
            })
            .await?;
        assert_eq!(
            demo.counter.executions(),
            before,
            "the handler has not finished yet"
        );
        gate.open();

        wait_until(
            Duration::from_secs(30),
            "the slow handler to finish",
            || demo.counter.executions() == before + 1,
        )
        .await?;
        let finished = start.elapsed();
        assert!(
            finished >= Duration::from_millis(190),
            "the handler finished after {finished:?}, before its 200 ms"
        );
        assert_eq!(demo.counter.value(), 5);
        assert!(demo.server.stats().accepts >= 1);
        // The exchange finishes in the background: the reply is received and
        // the history entry released by the next request's ack_up_to.
        wait_until(
            Duration::from_secs(30),
            "the background exchange to end",
            || channel.stats().replies >= 2,
        )
        .await?;
        client.get(Empty {}).await?;
        wait_until(Duration::from_secs(30), "history to empty", || {
            demo.server.stats().history_completed == 0
        })
        .await?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynchronous_calls_at_30_percent_loss_run_exactly_once() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let demo = Demo::start(Server::builder()).await?;
        let proxy = proxy(demo.addr(), faults(21, 0.3, 0.1)).await?;
        let (_channel, client) = connect(proxy.local_addr(), lossy_config()).await?;
        let results = run_concurrent(40, 16, |_| {
            client
                .slow(Work {
                    millis: 30,
                    delta: 1,
                })
                .into_future()
        })
        .await;
        for r in results {
            r?;
        }
        wait_until(Duration::from_secs(30), "40 slow handlers", || {
            demo.counter.executions() >= 40
        })
        .await?;
        // Late duplicates must not run anything again.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(demo.counter.executions(), 40);
        assert_eq!(demo.counter.value(), 40);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_handles_deliver_results_at_30_percent_loss() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        const N: usize = 50;
        let demo = Demo::start(Server::builder()).await?;
        let proxy = proxy(demo.addr(), faults(22, 0.3, 0.1)).await?;
        let (channel, client) = connect(proxy.local_addr(), lossy_config()).await?;

        // Handles first: each call returns at the server's ACCEPT.
        let handles = run_concurrent(N, 16, |i| {
            client
                .compute(Work {
                    millis: 20,
                    delta: i as i64 + 1,
                })
                .into_future()
        })
        .await;
        let handles: Vec<_> = handles.into_iter().collect::<Result<_, _>>()?;

        // A third awaited, a third polled with try_take, a third by callback.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut awaited = Vec::new();
        let mut polled = Vec::new();
        for (i, handle) in handles.into_iter().enumerate() {
            match i % 3 {
                0 => awaited.push(handle),
                1 => polled.push(handle),
                _ => {
                    let tx = tx.clone();
                    handle.on_complete(move |r| {
                        let _ = tx.send(r);
                    });
                }
            }
        }
        drop(tx);
        let mut results: Vec<Result<Count, CallError>> = Vec::new();
        for h in awaited {
            results.push(h.await);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while !polled.is_empty() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} polled handles never became ready",
                polled.len()
            );
            let mut still = Vec::new();
            for mut h in polled {
                match h.try_take() {
                    Some(r) => results.push(r),
                    None => still.push(h),
                }
            }
            polled = still;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        while let Some(r) = rx.recv().await {
            results.push(r);
        }
        assert_eq!(
            results.len(),
            N,
            "every handle delivered, every callback ran"
        );
        let counts: Vec<Count> = results.into_iter().collect::<Result<_, _>>()?;
        let numbers: HashSet<u64> = counts.iter().map(|c| c.executions).collect();
        assert_eq!(
            numbers,
            (1..=N as u64).collect::<HashSet<_>>(),
            "each result is its own execution"
        );
        assert_eq!(demo.counter.executions(), N as u64, "each ran exactly once");
        assert_eq!(demo.counter.value(), (1..=N as i64).sum::<i64>());
        let p = proxy.stats();
        assert!(
            p.server_to_client.dropped > 0 && p.client_to_server.dropped > 0,
            "{p:?}"
        );
        assert!(channel.stats().retransmissions > 0);

        // Each deferred result belongs to its own request: echo it back.
        let handles = run_concurrent(30, 16, |i| {
            let data = bytes::Bytes::from(format!("deferred {i}").into_bytes());
            let call = client.echo(Blob { data: data.clone() }).deferred();
            async move { (data, call.await) }
        })
        .await;
        for (sent, handle) in handles {
            assert_eq!(handle?.await?.data, sent);
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_never_blocks() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        const N: usize = 1_000;
        let demo = Demo::start(Server::builder()).await?;
        // Reachable server: every send returns at once.
        let (_channel, client) = connect(demo.addr(), lossy_config()).await?;
        for _ in 0..N {
            client.nudge(Amount { delta: 1 }).await?;
        }
        // A call after them on the same socket: when it is answered, the
        // server has taken every nudge that reached it (a nudge runs to
        // completion when taken, or goes on in a task counted in flight).
        client.get(Empty {}).await?;
        wait_until(Duration::from_secs(30), "the nudges to finish", || {
            demo.server.engine().in_flight() == 0
        })
        .await?;
        let runs = demo.counter.executions();
        assert!(runs > 0, "no nudge ran");
        assert!(runs <= N as u64, "a one-way call ran twice: {runs}");
        assert_eq!(demo.counter.value(), runs as i64);

        // A proxy that drops everything: nothing ever comes back, nothing
        // waits (a call that waited for an answer would never return).
        let black_hole = proxy(demo.addr(), faults(23, 1.0, 0.0)).await?;
        let (_c2, lost) = connect(black_hole.local_addr(), lossy_config()).await?;
        for _ in 0..N {
            lost.nudge(Amount { delta: 1 }).await?;
        }

        // Nobody listening at all.
        let vacant = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
        let (_c3, nowhere) = connect(vacant, lossy_config()).await?;
        let mut sent = 0;
        for _ in 0..N {
            // A send may report the ICMP "port unreachable" of an earlier
            // datagram; it must still return at once.
            if nowhere.nudge(Amount { delta: 1 }).await.is_ok() {
                sent += 1;
            }
        }
        assert!(sent > 0);
        assert_eq!(black_hole.stats().client_to_server.forwarded, 0);
        assert_eq!(
            demo.counter.executions(),
            runs,
            "nothing went through the black hole"
        );
        Ok(())
    })
    .await
}
