//! A server process killed (SIGKILL) and restarted on the same port five
//! times, as fast as it comes back, in the middle of a run of
//! non-idempotent calls (RR and RRA, 32 in flight) through a proxy that
//! loses 20%, duplicates 10% and makes 10% of the datagrams late by 1 to
//! 20 ms: copies of a request, first copies included, reach the next
//! incarnation after the reply of the previous one. No request ever runs
//! twice across the six incarnations (the server's execution log, written
//! before each handler runs, proves it); every call reported OK ran exactly
//! once; every call reported "did not run" never ran. The calls caught by a
//! restart end "outcome unknown" (or, if the server stayed away longer than
//! their retries, "may have run").
//!
//! `RPC_SOAK_CALLS=25000 cargo test -p rpc-tests --release --test crash`
//! runs the long version.
#![allow(clippy::print_stderr)] // the run's figures are the soak's report

use prost::Message as _;
use rpc_core::fault::{Delay, FaultConfig, ProxyFaults};
use rpc_core::{CallError, Error};
use rpc_tests::demo::{Amount, Count};
use rpc_tests::*;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(600);
const CALLS: usize = 3_000;
const IN_FLIGHT: usize = 32;
const RESTARTS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_server_never_runs_a_call_twice() -> anyhow::Result<()> {
    init_tracing();
    let calls_total = std::env::var("RPC_SOAK_CALLS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(CALLS);
    bounded(LIMIT, async move {
        let bin = Path::new(env!("CARGO_BIN_EXE_demo-server"));
        let log = scratch_file(Path::new(env!("CARGO_TARGET_TMPDIR")), "crash-exec");
        let any_port: SocketAddr = "127.0.0.1:0".parse()?;
        let mut server =
            ChildServer::start(bin, any_port, Some(&log), Duration::from_secs(20)).await?;
        let addr = server.addr();
        let faults = FaultConfig::seeded(41)
            .loss(0.2)
            .duplicate(0.1)
            .late(0.1, Delay::uniform(Duration::from_millis(1), Duration::from_millis(20)));
        let proxy = proxy(addr, ProxyFaults::symmetric(faults)).await?;
        let mut config = lossy_config();
        config.default_retries = 60;
        config.max_rto = Duration::from_millis(200);
        config.max_wait = Duration::from_secs(60);
        let (channel, client) = connect(proxy.local_addr(), config).await?;

        // Non-idempotent calls, RR and RRA alternately, each tagged with a
        // unique delta so that the execution log names the call.
        let ok = Arc::new(AtomicUsize::new(0));
        let calls = {
            let ok = ok.clone();
            tokio::spawn(async move {
                run_concurrent(calls_total, IN_FLIGHT, |i| {
                    let tag = Amount {
                        delta: i as i64 + 1,
                    };
                    let call = if i % 2 == 0 {
                        client.increment(tag)
                    } else {
                        client.increment_acked(tag)
                    };
                    let ok = ok.clone();
                    async move {
                        let r = call.timeout(Duration::from_secs(60)).await;
                        if r.is_ok() {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        r
                    }
                })
                .await
            })
        };

        let mut ok_at_kill = Vec::new();
        for k in 1..=RESTARTS {
            let target = k * calls_total / (RESTARTS + 2);
            wait_until(
                Duration::from_secs(120),
                "calls to succeed before the next crash",
                || ok.load(Ordering::SeqCst) >= target,
            )
            .await?;
            server.kill()?;
            ok_at_kill.push(ok.load(Ordering::SeqCst));
            server = ChildServer::start(bin, addr, Some(&log), Duration::from_secs(20)).await?;
            assert_eq!(server.addr(), addr, "restarted on the same port");
        }

        let results: Vec<Result<Count, CallError>> = calls.await?;
        let mut succeeded = HashSet::new();
        let mut not_run = HashSet::new();
        let mut unknown = 0usize;
        for (i, r) in results.iter().enumerate() {
            let tag = i as i64 + 1;
            match r {
                Ok(_) => {
                    succeeded.insert(tag);
                }
                Err(CallError::Rpc(Error::OutcomeUnknown)) => unknown += 1,
                Err(CallError::Rpc(e)) if !e.may_have_run() => {
                    not_run.insert(tag);
                }
                Err(CallError::Rpc(
                    Error::Unreachable { .. } | Error::DeadlineExceeded { .. },
                )) => unknown += 1,
                Err(e) => anyhow::bail!("call {i} failed with {e:?}"),
            }
        }
        assert!(unknown > 0, "some calls were caught by the restarts");
        assert!(
            succeeded.len() > *ok_at_kill.last().unwrap_or(&0),
            "calls succeeded after the last restart too"
        );
        assert_eq!(succeeded.len() + unknown + not_run.len(), calls_total);
        let stats = channel.stats();
        assert!(stats.outcome_unknown > 0, "{stats:?}");
        let p = proxy.stats();
        assert!(p.client_to_server.delayed > 0, "datagrams were made late: {p:?}");

        // Stop the last incarnation (it writes each line before running
        // the handler), then read what all six ran.
        drop(server);
        let runs = read_exec_log(&log)?;
        let _ = std::fs::remove_file(&log);
        let mut by_request = HashSet::new();
        let mut by_tag: HashMap<i64, usize> = HashMap::new();
        for run in &runs {
            assert!(
                by_request.insert((run.session, run.request_id)),
                "request ran twice: {run:?}"
            );
            let tag = Amount::decode(run.payload.as_slice())?.delta;
            *by_tag.entry(tag).or_default() += 1;
        }
        for (tag, n) in &by_tag {
            assert_eq!(*n, 1, "call with tag {tag} ran {n} times");
        }
        for tag in &succeeded {
            assert_eq!(
                by_tag.get(tag),
                Some(&1),
                "successful call {tag} ran exactly once"
            );
        }
        for tag in &not_run {
            assert_eq!(by_tag.get(tag), None, "call {tag} reported not run, but ran");
        }
        assert!(
            runs.len() >= succeeded.len() && runs.len() <= calls_total,
            "{} runs for {} calls",
            runs.len(),
            calls_total
        );
        eprintln!(
            "{calls_total} calls, {RESTARTS} restarts (after {ok_at_kill:?} successes): {} ok, {unknown} outcome unknown, {} not run, {} executions, none twice; client {stats:?}; proxy {p:?}",
            succeeded.len(),
            not_run.len(),
            runs.len()
        );
        Ok(())
    })
    .await
}
