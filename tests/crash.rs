//! A server process killed (SIGKILL) and restarted on the same port in the
//! middle of a run of non-idempotent calls through the lossy proxy: the
//! calls caught by the restart fail with "outcome unknown", the others
//! succeed, and no request ever runs twice across the two incarnations (the
//! server's execution log, written before each handler runs, proves it).

use prost::Message as _;
use rpc_core::{CallError, Error};
use rpc_tests::demo::{Amount, Count};
use rpc_tests::*;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(90);
const CALLS: usize = 600;
const IN_FLIGHT: usize = 16;
/// The server is killed once this many calls have succeeded.
const KILL_AFTER: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_server_never_runs_a_call_twice() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let bin = Path::new(env!("CARGO_BIN_EXE_demo-server"));
        let log = scratch_file(Path::new(env!("CARGO_TARGET_TMPDIR")), "crash-exec");
        let any_port: SocketAddr = "127.0.0.1:0".parse()?;
        let first = ChildServer::start(bin, any_port, Some(&log), Duration::from_secs(20)).await?;
        let addr = first.addr();
        let proxy = proxy(addr, faults(41, 0.1, 0.05)).await?;
        let mut config = lossy_config();
        config.default_retries = 60;
        config.max_rto = Duration::from_millis(200);
        let (channel, client) = connect(proxy.local_addr(), config).await?;

        // Non-idempotent calls, RR and RRA alternately, each tagged with a
        // unique delta so that the execution log names the call.
        let ok = Arc::new(AtomicUsize::new(0));
        let calls = {
            let ok = ok.clone();
            tokio::spawn(async move {
                run_concurrent(CALLS, IN_FLIGHT, |i| {
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
                        let r = call.timeout(Duration::from_secs(30)).await;
                        if r.is_ok() {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        r
                    }
                })
                .await
            })
        };

        wait_until(
            Duration::from_secs(30),
            "calls to succeed before the crash",
            || ok.load(Ordering::SeqCst) >= KILL_AFTER,
        )
        .await?;
        first.kill()?;
        let ok_at_kill = ok.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let second = ChildServer::start(bin, addr, Some(&log), Duration::from_secs(20)).await?;
        assert_eq!(second.addr(), addr, "restarted on the same port");

        let results: Vec<Result<Count, CallError>> = calls.await?;
        let mut succeeded = HashSet::new();
        let mut unknown = 0usize;
        for (i, r) in results.iter().enumerate() {
            match r {
                Ok(_) => {
                    succeeded.insert(i as i64 + 1);
                }
                Err(CallError::Rpc(Error::OutcomeUnknown)) => unknown += 1,
                Err(e) => anyhow::bail!(
                    "call {i} failed with {e:?}; only success or outcome unknown are allowed"
                ),
            }
        }
        assert!(unknown > 0, "some calls were caught by the restart");
        assert!(
            succeeded.len() > ok_at_kill,
            "calls succeeded after the restart too"
        );
        assert_eq!(succeeded.len() + unknown, CALLS);
        assert!(channel.stats().outcome_unknown >= unknown as u64);

        // Give the restarted server a moment to finish writing, then read
        // what both incarnations ran.
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(second);
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
        assert!(
            runs.len() >= succeeded.len() && runs.len() <= CALLS,
            "{} runs for {} calls",
            runs.len(),
            CALLS
        );
        Ok(())
    })
    .await
}
