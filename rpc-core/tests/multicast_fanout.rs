//! Multicast by fan-out over UDP on 127.0.0.1: completion policies with
//! dead members, replication and split work, at-most-once per member under
//! loss, the streaming form, run-time membership, one-way and asynchronous
//! multicast. Every test is bounded by `LIMIT`.
//!
//! No verdict rests on how fast the machine is. "Returns without waiting
//! for a member" is shown by what the outcome says of that member
//! (`Cancelled`: the policy was met before it answered, not `Timeout` or
//! `Unreachable`) with retry budgets too large to run out, or by holding
//! handlers at a `Gate` opened only after the call returned. Tests about
//! deadlines run on tokio's paused clock: time moves only when every task
//! waits, so live members always answer before a short deadline and the
//! deadline's own effect is what is checked.

mod multicast_support;

use futures::StreamExt;
use multicast_support::*;
use rpc_core::fault::FaultConfig;
use rpc_core::{GroupClient, MemberResult, Stragglers};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

/// `n` members; those in `dead` sit behind a proxy that loses everything.
async fn members(n: u32, dead: &[u32]) -> anyhow::Result<(Vec<Member>, TallyGroupClient)> {
    let group = GroupClient::new();
    let mut ms = Vec::new();
    for i in 0..n {
        let faults = dead
            .contains(&i)
            .then(|| FaultConfig::seeded(u64::from(i)).loss(1.0));
        let m = member(i, faults).await?;
        group.add(m.name.clone(), client(m.addr, fast_config()).await?);
        ms.push(m);
    }
    Ok((ms, TallyGroupClient::new(group)))
}

fn is_reply<R, E: std::fmt::Debug>(r: &MemberResult<R, E>) -> bool {
    matches!(r, MemberResult::Reply(_))
}

/// Waits until `f` holds: the verdict is the event; 30 s of real time is
/// only the safety net of a broken build.
async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

#[tokio::test(start_paused = true)]
async fn first_and_quorum_return_promptly_with_two_dead_members() -> anyhow::Result<()> {
    tokio::time::timeout(LIMIT, async {
        let (ms, group) = members(8, &[2, 5]).await?;
        let dead = ["m2", "m5"];

        // The dead members can neither run out of retries nor reach the
        // deadline before the policy is met: a call that waited for them
        // would report them `Timeout` at its deadline.
        let out = group
            .add(Amount { delta: 1 })
            .first()
            .retries(1000)
            .timeout(Duration::from_secs(30))
            .await;
        assert!(out.complete, "{out:?}");
        assert_eq!(out.members.len(), 8);
        assert_eq!(out.successes(), 1, "{out:?}");
        for d in dead {
            let m = out
                .member(d)
                .ok_or_else(|| anyhow::anyhow!("{d} missing"))?;
            assert!(
                matches!(m.result, MemberResult::Cancelled),
                "{d}: {:?}",
                m.result
            );
        }

        let out = group
            .add(Amount { delta: 1 })
            .quorum(5)
            .retries(1000)
            .timeout(Duration::from_secs(30))
            .await;
        assert!(out.complete, "{out:?}");
        assert_eq!(out.successes(), 5, "{out:?}");
        for d in dead {
            let m = out
                .member(d)
                .ok_or_else(|| anyhow::anyhow!("{d} missing"))?;
            assert!(
                matches!(m.result, MemberResult::Cancelled),
                "{d}: {:?}",
                m.result
            );
        }
        // Unmet quorum: 7 of 8 with two dead waits for the deadline and
        // says so (the dead cannot run out of retries first; on the paused
        // clock the six live members answer before it).
        let start = tokio::time::Instant::now();
        let out = group
            .add(Amount { delta: 1 })
            .quorum(7)
            .retries(1000)
            .timeout(Duration::from_millis(400))
            .await;
        assert!(!out.complete);
        assert!(start.elapsed() >= Duration::from_millis(400));
        assert_eq!(out.successes(), 6);
        for d in dead {
            let m = out
                .member(d)
                .ok_or_else(|| anyhow::anyhow!("{d} missing"))?;
            assert!(
                matches!(m.result, MemberResult::Timeout),
                "{d}: {:?}",
                m.result
            );
        }
        drop(ms);
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(start_paused = true)]
async fn all_reports_the_dead_members_at_the_deadline() -> anyhow::Result<()> {
    tokio::time::timeout(LIMIT, async {
        let (_ms, group) = members(8, &[0, 7]).await?;
        // On the paused clock the live members answer before the deadline
        // whatever the load; with retries that cannot run out first, the
        // dead members are reported at the deadline (`Timeout`): not
        // earlier, and not later as `Unreachable` after their retries.
        let deadline = Duration::from_millis(500);
        let start = tokio::time::Instant::now();
        let out = group
            .add(Amount { delta: 1 })
            .all()
            .retries(1000)
            .timeout(deadline)
            .await;
        assert!(!out.complete);
        assert!(
            start.elapsed() >= deadline,
            "ended early: {:?}",
            start.elapsed()
        );
        assert_eq!(out.successes(), 6);
        for m in &out.members {
            match m.member.as_str() {
                "m0" | "m7" => assert!(matches!(m.result, MemberResult::Timeout), "{m:?}"),
                _ => assert!(is_reply(&m.result), "{m:?}"),
            }
        }

        // With few attempts the transport tells a dead member from a slow
        // one: unreachable after its attempts, before the deadline (a call
        // that reached its deadline would say `Timeout`).
        let out = group
            .add(Amount { delta: 1 })
            .all()
            .retries(2)
            .timeout(Duration::from_secs(30))
            .await;
        for m in &out.members {
            match m.member.as_str() {
                "m0" | "m7" => match &m.result {
                    // The dead members never answered the PING that comes
                    // before a session's first non-idempotent request: the
                    // request itself was never sent.
                    MemberResult::Unreachable(e) => {
                        assert!(
                            matches!(
                                e,
                                rpc_core::Error::Unreachable {
                                    may_have_run: false,
                                    ..
                                }
                            ),
                            "{e:?}"
                        )
                    }
                    other => panic!("{}: {other:?}", m.member),
                },
                _ => assert!(is_reply(&m.result), "{m:?}"),
            }
        }
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn replication_with_first_runs_the_same_work_everywhere() -> anyhow::Result<()> {
    tokio::time::timeout(LIMIT, async {
        let (ms, group) = members(5, &[]).await?;
        let out = group
            .add(Amount { delta: 7 })
            .first()
            .stragglers(Stragglers::Finish)
            .timeout(Duration::from_secs(30))
            .await;
        assert!(out.complete);
        let (_, reply) = out
            .replies()
            .next()
            .ok_or_else(|| anyhow::anyhow!("no reply"))?;
        assert_eq!(reply.value, 7);
        // The others finish in the background: every replica has the update.
        assert!(eventually(|| ms.iter().all(|m| m.tally.value() == 7)).await);
        assert!(ms.iter().all(|m| m.tally.executions() == 1));
        for m in &ms {
            assert!(
                eventually(
                    || m.server.stats().history_len == 0 || m.server.stats().history_completed <= 1
                )
                .await
            );
        }
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn split_work_with_all_merges_the_partial_sums() -> anyhow::Result<()> {
    tokio::time::timeout(LIMIT, async {
        let (_ms, group) = members(4, &[]).await?;
        let values: Vec<i64> = (1..=1000).collect();
        let out = group
            .sum(Slice {
                values: values.clone(),
                parts: 4,
            })
            .all()
            .timeout(Duration::from_secs(30))
            .await;
        assert!(out.complete, "{out:?}");
        let mut parts: Vec<u32> = out.replies().map(|(_, t)| t.part).collect();
        parts.sort_unstable();
        assert_eq!(parts, vec![0, 1, 2, 3], "each member summed its own part");
        let total: i64 = out.replies().map(|(_, t)| t.sum).sum();
        assert_eq!(total, values.iter().sum::<i64>());
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn twenty_percent_loss_runs_exactly_once_on_every_member_that_succeeds() -> anyhow::Result<()>
{
    tokio::time::timeout(LIMIT, async {
        let group = GroupClient::new();
        let mut ms = Vec::new();
        for i in 0..8u32 {
            let m = member(i, Some(FaultConfig::seeded(100 + u64::from(i)).loss(0.2))).await?;
            group.add(m.name.clone(), client(m.addr, fast_config()).await?);
            ms.push(m);
        }
        let group = TallyGroupClient::new(group);
        let calls = 15u64;
        let mut successes = vec![0u64; ms.len()];
        for _ in 0..calls {
            let out = group
                .add(Amount { delta: 1 })
                .all()
                .timeout(Duration::from_secs(30))
                .await;
            for (k, line) in out.members.iter().enumerate() {
                if let MemberResult::Reply(count) = &line.result {
                    successes[k] += 1;
                    // The reply shows how many times the member ran it so far:
                    // exactly once per successful call.
                    assert_eq!(count.executions, successes[k], "member {}", line.member);
                }
            }
        }
        for (k, m) in ms.iter().enumerate() {
            assert!(
                successes[k] >= calls - 1,
                "member {} succeeded {} times",
                m.name,
                successes[k]
            );
            assert_eq!(
                m.tally.executions(),
                successes[k],
                "member {} ran a call twice or lost one",
                m.name
            );
            let dups = m.server.stats().duplicates_replayed;
            tracing::info!(member = %m.name, dups, "replayed from history");
        }
        let replayed: u64 = ms
            .iter()
            .map(|m| m.server.stats().duplicates_replayed)
            .sum();
        assert!(
            replayed > 0,
            "with 20% loss some replies must have been replayed from history"
        );
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(start_paused = true)]
async fn stream_yields_replies_as_they_arrive_then_timeouts() -> anyhow::Result<()> {
    tokio::time::timeout(LIMIT, async {
        let (_ms, group) = members(4, &[3]).await?;
        // Paused clock: the live members answer before the deadline,
        // which is what ends the dead member's line.
        let start = tokio::time::Instant::now();
        let mut stream = group
            .add(Amount { delta: 1 })
            .timeout(Duration::from_millis(400))
            .stream();
        let mut seen = Vec::new();
        while let Some(line) = stream.next().await {
            seen.push((line.member.clone(), is_reply(&line.result), start.elapsed()));
            if matches!(line.result, MemberResult::Timeout) {
                assert_eq!(line.member, "m3");
            }
        }
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert!(seen[..3].iter().all(|(_, ok, _)| *ok), "{seen:?}");
        assert_eq!(seen[3].0, "m3");
        assert!(!seen[3].1);
        assert!(seen[3].2 >= Duration::from_millis(400), "{seen:?}");

        // A caller that stops after two replies just drops the stream.
        let mut stream = group
            .add(Amount { delta: 1 })
            .timeout(Duration::from_secs(30))
            .stream();
        let mut n = 0;
        while let Some(line) = stream.next().await {
            n += usize::from(is_reply(&line.result));
            if n == 2 {
                break;
            }
        }
        drop(stream);
        assert_eq!(n, 2);
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn members_are_added_and_removed_at_run_time() -> anyhow::Result<()> {
    tokio::time::timeout(LIMIT, async {
        let (ms, group) = members(2, &[]).await?;
        let out = group
            .add(Amount { delta: 1 })
            .timeout(Duration::from_secs(30))
            .await;
        assert_eq!(
            out.members
                .iter()
                .map(|m| m.member.as_str())
                .collect::<Vec<_>>(),
            ["m0", "m1"]
        );

        let extra = member(9, None).await?;
        group
            .group()
            .add("m9", client(extra.addr, fast_config()).await?);
        let out = group
            .add(Amount { delta: 1 })
            .timeout(Duration::from_secs(30))
            .await;
        assert!(out.complete);
        assert_eq!(out.members.len(), 3);
        assert_eq!(extra.tally.executions(), 1);

        assert!(group.group().remove("m0"));
        assert!(!group.group().remove("m0"));
        let out = group
            .add(Amount { delta: 1 })
            .timeout(Duration::from_secs(30))
            .await;
        assert_eq!(
            out.members
                .iter()
                .map(|m| m.member.as_str())
                .collect::<Vec<_>>(),
            ["m1", "m9"]
        );
        assert_eq!(
            ms[0].tally.executions(),
            2,
            "a removed member gets no more calls"
        );
        assert_eq!(ms[1].tally.executions(), 3);
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn one_way_multicast_reaches_every_member() -> anyhow::Result<()> {
    tokio::time::timeout(LIMIT, async {
        let (ms, group) = members(6, &[]).await?;
        let out = group.nudge(Amount { delta: 5 }).all().await;
        assert!(out.complete);
        assert!(
            out.members
                .iter()
                .all(|m| matches!(m.result, MemberResult::Sent)),
            "{out:?}"
        );
        assert!(eventually(|| ms.iter().all(|m| m.tally.value() == 5)).await);
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn asynchronous_multicast_completes_at_the_accepts() -> anyhow::Result<()> {
    tokio::time::timeout(LIMIT, async {
        let (ms, group) = members(4, &[]).await?;
        // Every member's work waits at a gate opened only after the call
        // returned: a call that waited for the work would time out.
        let gate = Gate::closed();
        for m in &ms {
            m.tally.hold(&gate);
        }
        let out = group
            .slow(Work { millis: 0 })
            .all()
            .timeout(Duration::from_secs(30))
            .await;
        assert!(out.complete, "{out:?}");
        assert!(out
            .members
            .iter()
            .all(|m| matches!(m.result, MemberResult::Accepted)));
        assert!(
            ms.iter().all(|m| m.tally.executions() == 0),
            "the work is still held"
        );
        gate.open();
        assert!(eventually(|| ms.iter().all(|m| m.tally.executions() == 1)).await);
        // The background exchanges fetched the replies: histories drain.
        assert!(eventually(|| ms.iter().all(|m| m.server.stats().history_in_progress == 0)).await);
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn cancelled_stragglers_and_typed_errors_show_per_member() -> anyhow::Result<()> {
    tokio::time::timeout(LIMIT, async {
        let (_ms, group) = members(3, &[]).await?;
        // A refused argument is a per-member error, not a failed call.
        let out = group
            .sum(Slice {
                values: vec![1, 2],
                parts: 0,
            })
            .all()
            .timeout(Duration::from_secs(30))
            .await;
        assert!(!out.complete);
        for m in &out.members {
            match &m.result {
                MemberResult::Error(e) => assert_eq!(e.code(), rpc_core::Code::InvalidArgument),
                other => panic!("{other:?}"),
            }
        }
        let out = group
            .add(Amount { delta: 1 })
            .first()
            .stragglers(Stragglers::Cancel)
            .timeout(Duration::from_secs(30))
            .await;
        assert!(out.complete);
        assert_eq!(
            out.members
                .iter()
                .filter(|m| matches!(m.result, MemberResult::Cancelled))
                .count(),
            2
        );
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn one_group_mixes_transports_in_memory_members_under_loss_and_udp_members(
) -> anyhow::Result<()> {
    use rpc_core::client::UdpChannel;
    use rpc_core::server::Server;
    use rpc_core::transport::mem::MemNetwork;
    use std::sync::Arc;
    tokio::time::timeout(LIMIT, async {
        let net = MemNetwork::with_faults(FaultConfig::seeded(7).loss(0.2).duplicate(0.1));
        let group = GroupClient::new();
        let mut mem = Vec::new();
        for i in 0..3u8 {
            let tally = Arc::new(TallyImpl::new(u32::from(i)));
            let at: std::net::SocketAddr = format!("10.0.0.{}:7000", i + 1).parse()?;
            let server = Server::builder()
                .add_service(TallyServer::from_arc(Arc::new(Shared(tally.clone()))))
                .serve_socket(net.bind(at)?)
                .await?;
            let channel = UdpChannel::with_socket(
                net.bind(format!("10.0.1.{}:0", i + 1).parse()?)?,
                at,
                fast_config(),
            );
            group.add(format!("mem{i}"), rpc_core::Client::new(channel));
            mem.push((tally, server));
        }
        // A member whose address nobody serves: dead.
        let dead = UdpChannel::with_socket(
            net.bind("10.0.1.9:0".parse()?)?,
            "10.0.0.9:7000".parse()?,
            fast_config(),
        );
        group.add("mem-dead", rpc_core::Client::new(dead));
        let mut udp = Vec::new();
        for i in 0..2 {
            let m = member(10 + i, None).await?;
            group.add(m.name.clone(), client(m.addr, fast_config()).await?);
            udp.push(m);
        }
        let group = TallyGroupClient::new(group);
        let calls = 10u64;
        let mut ok = std::collections::HashMap::<String, u64>::new();
        for _ in 0..calls {
            let out = group
                .add(Amount { delta: 1 })
                .quorum(5)
                .timeout(Duration::from_secs(30))
                .await;
            assert!(out.complete, "{out:?}");
            assert!(!is_reply(
                &out.member("mem-dead")
                    .ok_or_else(|| anyhow::anyhow!("no dead member"))?
                    .result
            ));
            for line in &out.members {
                if is_reply(&line.result) {
                    *ok.entry(line.member.clone()).or_default() += 1;
                }
            }
        }
        assert!(!ok.contains_key("mem-dead"));
        // Stragglers finish in the background: every live member ran every
        // call exactly once.
        let all_ran = eventually(|| {
            mem.iter().all(|(t, _)| t.executions() == calls)
                && udp.iter().all(|m| m.tally.executions() == calls)
        })
        .await;
        assert!(
            all_ran,
            "executions: {:?}",
            mem.iter().map(|(t, _)| t.executions()).collect::<Vec<_>>()
        );
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(start_paused = true)]
async fn a_quorum_that_can_no_longer_be_met_ends_early() -> anyhow::Result<()> {
    tokio::time::timeout(LIMIT, async {
        let (_ms, group) = members(4, &[1, 2]).await?;
        // Two dead of four with one retry: unreachable after a few round
        // trips; quorum(3) is then out of reach, long before the deadline.
        // On the paused clock the time a call takes is the time its timers
        // say, not the machine's speed: ending before the deadline is
        // ending early.
        let start = tokio::time::Instant::now();
        let out = group
            .add(Amount { delta: 1 })
            .quorum(3)
            .retries(1)
            .timeout(Duration::from_secs(20))
            .await;
        assert!(!out.complete);
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "waited for the deadline: {:?}",
            start.elapsed()
        );
        assert_eq!(out.successes(), 2);
        for d in ["m1", "m2"] {
            let line = out
                .member(d)
                .ok_or_else(|| anyhow::anyhow!("{d} missing"))?;
            assert!(
                matches!(line.result, MemberResult::Unreachable(_)),
                "{line:?}"
            );
        }
        anyhow::Ok(())
    })
    .await?
}
