//! Multicast: a group of three servers of their own, called with `all`,
//! `first` and `quorum(2)`; work split over the members and merged; one-way
//! and asynchronous group calls; and a dead member, which never holds up
//! `first` or `quorum` and shows as unreachable in `all`.

use crate::report::{Report, Row};
use crate::{start_counter, wait_for};
use anyhow::anyhow;
use rpc_core::client::{ChannelConfig, UdpChannel};
use rpc_core::server::ServerHandle;
use rpc_core::{Client, GroupClient, MemberResult, Never};
use rpc_services::proto::demo::v1::{
    Amount, Count, CounterClient, CounterGroupClient, Empty, Work,
};
use rpc_services::CounterService;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Each member's outcome, on one line.
fn group_summary<E: std::fmt::Debug>(outcome: &rpc_core::GroupOutcome<Count, E>) -> String {
    let members: Vec<String> = outcome
        .members
        .iter()
        .map(|m| {
            let what = match &m.result {
                MemberResult::Reply(c) => format!("value {}", c.value),
                MemberResult::Error(e) => format!("error {e}"),
                MemberResult::Timeout => "timeout".into(),
                MemberResult::Cancelled => "not needed".into(),
                MemberResult::Unreachable(e) => format!("unreachable ({e})"),
                MemberResult::Accepted => "accepted".into(),
                MemberResult::Sent => "sent".into(),
                other => format!("{other:?}"),
            };
            format!("{}: {what}", m.member)
        })
        .collect();
    format!(
        "{}/{} replied ({})",
        outcome.successes(),
        outcome.members.len(),
        members.join(", ")
    )
}

/// A group of three servers: `all`, `first` and `quorum(2)`.
pub(crate) async fn multicast(report: &mut Report) -> anyhow::Result<()> {
    let mut servers = Vec::new();
    let group = GroupClient::new();
    let mut channels = Vec::new();
    for i in 1..=3 {
        let (server, counter) = start_counter("127.0.0.1:0").await?;
        let channel = UdpChannel::connect(server.local_addr()).await?;
        group.add(format!("m{i}"), Client::new(channel.clone()));
        channels.push(channel);
        servers.push((server, counter));
    }
    let stub = CounterGroupClient::new(group);
    let path = "udp group of 3";
    let retx = |channels: &[UdpChannel]| {
        channels
            .iter()
            .map(|c| c.stats().retransmissions)
            .sum::<u64>()
    };
    let mut row = |call: &str,
                   protocol: &'static str,
                   result: Result<String, String>,
                   latency: Duration,
                   r: u64| {
        report.row(Row::made(
            path,
            call,
            "multicast",
            protocol,
            result,
            latency,
            Some(r),
        ));
    };

    let (before, start) = (retx(&channels), Instant::now());
    let all = stub
        .increment(Amount { delta: 1 })
        .all()
        .timeout(Duration::from_secs(5))
        .await;
    let ran_everywhere = servers.iter().all(|(_, c)| c.executions() == 1);
    let result = if all.complete && all.successes() == 3 && ran_everywhere {
        Ok(group_summary(&all))
    } else {
        Err(format!(
            "{}; complete {}",
            group_summary(&all),
            all.complete
        ))
    };
    row(
        "Increment(+1) all",
        "RR",
        result,
        start.elapsed(),
        retx(&channels) - before,
    );

    let (before, start) = (retx(&channels), Instant::now());
    let first = stub
        .get(Empty {})
        .first()
        .timeout(Duration::from_secs(5))
        .await;
    let result = match first.replies().next() {
        Some((_, c)) if first.complete && c.value == 1 => Ok(group_summary(&first)),
        _ => Err(format!(
            "{}; complete {}",
            group_summary(&first),
            first.complete
        )),
    };
    row(
        "Get() first",
        "RR",
        result,
        start.elapsed(),
        retx(&channels) - before,
    );

    let (before, start) = (retx(&channels), Instant::now());
    let quorum = stub
        .increment(Amount { delta: 1 })
        .quorum(2)
        .timeout(Duration::from_secs(5))
        .await;
    let latency = start.elapsed();
    // The member the quorum did not wait for may or may not have run the
    // increment (its call was abandoned); the others certainly did, once.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let replied: Vec<bool> = quorum
        .members
        .iter()
        .map(|m| matches!(m.result, MemberResult::Reply(_)))
        .collect();
    let consistent = servers.iter().zip(&replied).all(|((_, c), &r)| {
        if r {
            c.executions() == 2
        } else {
            (1..=2).contains(&c.executions())
        }
    });
    let result = if quorum.complete && quorum.successes() >= 2 && consistent {
        Ok(group_summary(&quorum))
    } else {
        Err(format!(
            "{}; complete {}, member executions consistent {consistent}",
            group_summary(&quorum),
            quorum.complete
        ))
    };
    row(
        "Increment(+1) quorum(2)",
        "RR",
        result,
        latency,
        retx(&channels) - before,
    );

    // Splitting work: each member holds its own shard (loaded by unicast),
    // `all` gathers the parts and the caller merges them.
    for (i, channel) in channels.iter().enumerate() {
        let shard = CounterClient::new(Client::new(channel.clone()));
        shard
            .increment(Amount {
                delta: 10 * (i as i64 + 1),
            })
            .await
            .map_err(|e| anyhow!("loading shard {i}: {e}"))?;
    }
    let expected: i64 = servers.iter().map(|(_, c)| c.value()).sum();
    let (before, start) = (retx(&channels), Instant::now());
    let parts = stub
        .get(Empty {})
        .all()
        .timeout(Duration::from_secs(5))
        .await;
    let total: i64 = parts.replies().map(|(_, c)| c.value).sum();
    let result = if parts.complete && parts.successes() == 3 && total == expected {
        Ok(format!(
            "merged sum {total} = sum of the shards; {}",
            group_summary(&parts)
        ))
    } else {
        Err(format!(
            "merged {total}, expected {expected}; {}",
            group_summary(&parts)
        ))
    };
    row(
        "Get() all, split work merged",
        "RR",
        result,
        start.elapsed(),
        retx(&channels) - before,
    );

    // One-way and asynchronous multicast.
    let executions = |servers: &[(ServerHandle, Arc<CounterService>)]| {
        servers.iter().map(|(_, c)| c.executions()).sum::<u64>()
    };
    let (before_runs, start) = (executions(&servers), Instant::now());
    let sent = stub
        .nudge(Amount { delta: 0 })
        .timeout(Duration::from_secs(2))
        .await;
    let latency = start.elapsed();
    let all_sent = sent
        .members
        .iter()
        .all(|m| matches!(m.result, MemberResult::Sent));
    let arrived = wait_for(Duration::from_secs(2), || {
        executions(&servers) >= before_runs + 3
    })
    .await;
    let result = if all_sent && arrived {
        Ok(format!(
            "sent to 3, none awaited; all 3 ran it ({})",
            sent_summary(&sent)
        ))
    } else {
        Err(format!(
            "all sent {all_sent}, all ran {arrived}; {}",
            sent_summary(&sent)
        ))
    };
    row("Nudge(0) one-way", "R", result, latency, 0);

    let (before_runs, start) = (executions(&servers), Instant::now());
    let accepted = stub
        .slow(Work {
            millis: 150,
            delta: 0,
        })
        .all()
        .timeout(Duration::from_secs(5))
        .await;
    let latency = start.elapsed();
    let all_accepted = accepted
        .members
        .iter()
        .all(|m| matches!(m.result, MemberResult::Accepted));
    let early = latency < Duration::from_millis(150) && executions(&servers) == before_runs;
    let finished = wait_for(Duration::from_secs(3), || {
        executions(&servers) >= before_runs + 3
    })
    .await;
    let result = if all_accepted && early && finished {
        Ok(format!(
            "3 accepted before the 150 ms handlers finished; {}",
            group_summary(&accepted)
        ))
    } else {
        Err(format!(
            "accepted {all_accepted}, early {early}, finished {finished}; {}",
            group_summary(&accepted)
        ))
    };
    row("Slow(150 ms) async", "RR", result, latency, 0);

    // A dead member (nothing listens on its port) never blocks `first` or
    // `quorum`, and shows as unreachable in an `all` outcome.
    let dead_addr = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0")?;
        probe.local_addr()?
    };
    let mut dead_config = ChannelConfig::default();
    dead_config.default_retries = 2;
    dead_config.initial_rto = Duration::from_millis(20);
    let dead = UdpChannel::connect_with(dead_addr, dead_config).await?;
    stub.group().add("dead", Client::new(dead));
    let start = Instant::now();
    let quick = stub
        .get(Empty {})
        .quorum(3)
        .timeout(Duration::from_secs(5))
        .await;
    let latency = start.elapsed();
    let result = if quick.complete && quick.successes() == 3 && latency < Duration::from_secs(1) {
        Ok(format!(
            "not held up by the dead member; {}",
            group_summary(&quick)
        ))
    } else {
        Err(format!(
            "complete {} in {latency:?}; {}",
            quick.complete,
            group_summary(&quick)
        ))
    };
    row("Get() quorum(3), 1 of 4 dead", "RR", result, latency, 0);
    let start = Instant::now();
    let everyone = stub
        .get(Empty {})
        .all()
        .timeout(Duration::from_secs(5))
        .await;
    let dead_shown = everyone.member("dead").is_some_and(|m| {
        matches!(
            m.result,
            MemberResult::Unreachable(_) | MemberResult::Timeout
        )
    });
    let result = if dead_shown && everyone.successes() == 3 {
        Ok(group_summary(&everyone))
    } else {
        Err(format!(
            "dead member shown {dead_shown}; {}",
            group_summary(&everyone)
        ))
    };
    row("Get() all, 1 of 4 dead", "RR", result, start.elapsed(), 0);
    stub.group().remove("dead");
    Ok(())
}

/// Each member's outcome of a one-way call, on one line.
fn sent_summary(outcome: &rpc_core::GroupOutcome<(), Never>) -> String {
    let members: Vec<String> = outcome
        .members
        .iter()
        .map(|m| format!("{}: {:?}", m.member, m.result))
        .collect();
    members.join(", ")
}
