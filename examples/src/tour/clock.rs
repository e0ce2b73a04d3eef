//! The clock service (`idl/clock.idl`): four nodes in this process, each
//! with a skewed clock of its own; Cristian sync against each (the offset
//! and its error interval, which must contain the injected skew); a
//! Berkeley round (the +5 s node excluded from the average); the master
//! stopped, a bully election and the next round under the new master; a
//! logical clock example (vector clocks and an HLC refusal).

use crate::report::{Report, Row};
use anyhow::anyhow;
use rpc_core::server::ServerHandle;
use rpc_core::Metadata;
use rpc_examples::{clock_client, serve_clock_node};
use rpc_services::clock::logical::{LogicalClocks, HLC_KEY};
use rpc_services::clock::{sync_once, Estimate, Skew, SyncFilter, TimeSource};
use rpc_services::proto::clock::v1 as pb;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

const PATH: &str = "clock";
/// Each node's id and injected offset (ms).
const SKEWS: [(u32, i64); 4] = [(1, -300), (2, 5_000), (3, -120), (4, 80)];

struct Member {
    id: u32,
    server: Option<ServerHandle>,
    driver: JoinHandle<()>,
    client: pb::ClockClient,
}

/// The node's offset from true time (this process's unskewed clock):
/// the minimum-delay estimate of 8 samples.
async fn measure(client: &pb::ClockClient) -> anyhow::Result<Estimate> {
    let truth = TimeSource::system(Skew::default());
    let mut filter = SyncFilter::default();
    for _ in 0..8 {
        if let Ok(s) = sync_once(client, &truth, Duration::from_millis(200)).await {
            let _ = filter.add(s);
        }
    }
    filter
        .estimate(truth.physical_ns())
        .ok_or_else(|| anyhow!("no time sample answered"))
}

fn ms(ns: i64) -> f64 {
    ns as f64 / 1e6
}

async fn statuses(members: &[Member]) -> Vec<pb::NodeStatus> {
    let mut out = Vec::new();
    for m in members.iter().filter(|m| m.server.is_some()) {
        if let Ok(s) = m.client.status(pb::Empty {}).retries(1).await {
            out.push(s);
        }
    }
    out
}

/// Polls the live members' statuses every 10 ms until `done` holds for
/// all, at most `limit`.
async fn wait_all(
    members: &[Member],
    limit: Duration,
    done: impl Fn(&pb::NodeStatus) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    let live = members.iter().filter(|m| m.server.is_some()).count();
    loop {
        let s = statuses(members).await;
        if s.len() == live && s.iter().all(&done) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The clock section of the tour.
pub(crate) async fn clock(report: &mut Report) -> anyhow::Result<()> {
    let mut members = Vec::new();
    for (id, offset) in SKEWS {
        let (node, server) =
            serve_clock_node(id, TimeSource::system(Skew::new(offset, 0.0))).await?;
        let client = clock_client(&server).await?;
        members.push(Member {
            id,
            server: Some(server),
            driver: tokio::spawn(node.run()),
            client,
        });
    }

    // Cristian/NTP against each node: the interval must contain its skew.
    for m in &members {
        let start = Instant::now();
        let est = measure(&m.client).await?;
        let skew = SKEWS.iter().find(|s| s.0 == m.id).map_or(0, |s| s.1) * 1_000_000;
        // The interval's half-width is half the delay plus the server's own
        // bound (10 s: not synchronised yet) plus drift.
        let result = format!(
            "n{} offset {:+.3} ms ± {:.3} ms measured (injected {:+} ms; min delay {} us; server unsynchronised)",
            m.id,
            ms(est.offset_ns),
            ms((est.delay_ns + 1) / 2),
            skew / 1_000_000,
            est.delay_ns / 1_000
        );
        // The injected skew is the truth, up to the few us between the
        // node's start and the first sample (no drift injected).
        let ok = est.contains(skew) || (est.offset_ns - skew).abs() < 50_000;
        report.sync_call(
            PATH,
            "GetTime x8 (Cristian)",
            "RR",
            if ok { Ok(result) } else { Err(result) },
            start,
        );
    }

    // Berkeley under the highest id, 4.
    let membership = pb::Membership {
        members: members
            .iter()
            .filter_map(|m| {
                m.server.as_ref().map(|s| pb::Member {
                    id: m.id,
                    addr: s.local_addr().to_string(),
                })
            })
            .collect(),
    };
    let start = Instant::now();
    for m in &members {
        m.client
            .configure(membership.clone())
            .await
            .map_err(|e| anyhow!("configure n{}: {e}", m.id))?;
    }
    let in_range = [1u32, 3, 4];
    let settled = wait_all(&members, Duration::from_secs(5), |s| {
        s.last_round_master == 4 && (!in_range.contains(&s.node_id) || s.hold_ns == 0)
    })
    .await;
    let elapsed = start.elapsed();
    let mut offsets = Vec::new();
    for m in members.iter().filter(|m| in_range.contains(&m.id)) {
        offsets.push((m.id, measure(&m.client).await?.offset_ns));
    }
    let excluded = statuses(&members)
        .await
        .into_iter()
        .find(|s| s.node_id == 4)
        .map(|s| s.excluded)
        .unwrap_or_default();
    let spread = offsets.iter().map(|o| o.1).max().unwrap_or(0)
        - offsets.iter().map(|o| o.1).min().unwrap_or(0);
    let result = format!(
        "master n4: {} excluded; n1,n3,n4 now at {} ms (spread {:.3} ms)",
        excluded
            .iter()
            .map(|id| format!("n{id}"))
            .collect::<Vec<_>>()
            .join(","),
        offsets
            .iter()
            .map(|(id, o)| format!("n{id} {:+.3}", ms(*o)))
            .collect::<Vec<_>>()
            .join(", "),
        ms(spread)
    );
    let ok = settled && excluded.contains(&2) && spread <= 2_000_000;
    report.row(Row::made(
        PATH,
        "Berkeley round (Poll all, Adjust)",
        "multicast",
        "RR/RRA",
        if ok { Ok(result) } else { Err(result) },
        elapsed,
        None,
    ));

    // The master stops; the others elect 3 and run the next round under it.
    let before = statuses(&members).await;
    let last_round = before.iter().map(|s| s.last_round).max().unwrap_or(0);
    let messages_before: u64 = before
        .iter()
        .filter(|s| s.node_id != 4)
        .map(|s| s.election_messages_sent)
        .sum();
    if let Some(m) = members.iter_mut().find(|m| m.id == 4) {
        m.driver.abort();
        if let Some(server) = m.server.take() {
            server
                .shutdown(Duration::from_secs(1))
                .await
                .map_err(|e| anyhow!("stopping n4: {e}"))?;
        }
    }
    let start = Instant::now();
    let elected = wait_all(&members, Duration::from_secs(5), |s| {
        s.coordinator == 3 && s.last_round_master == 3 && s.last_round > last_round
    })
    .await;
    let messages: u64 = statuses(&members)
        .await
        .iter()
        .map(|s| s.election_messages_sent)
        .sum::<u64>()
        .saturating_sub(messages_before);
    let result = format!(
        "n3 elected (bully) and its round applied by n1,n2,n3; {messages} election messages"
    );
    report.sync_call(
        PATH,
        "master n4 stopped: election",
        "RR",
        if elected { Ok(result) } else { Err(result) },
        start,
    );

    // Logical clocks: a message a -> b, and an HLC far ahead refused.
    let start = Instant::now();
    let time = Arc::new(TimeSource::system(Skew::default()));
    let a = LogicalClocks::new(1, time.clone(), 100_000_000);
    let b = LogicalClocks::new(2, time.clone(), 100_000_000);
    b.vector.tick();
    let mut md = Metadata::new();
    a.stamp(&mut md);
    let sent = a.vector.now();
    b.merge(&md).map_err(|e| anyhow!("merge: {e}"))?;
    let received = b.vector.now();
    let mut far = Metadata::new();
    far.insert(HLC_KEY, format!("{}.0", time.now_ns() + 1_000_000_000));
    let refused = b.merge(&far).err();
    let result = format!(
        "send [{sent}] {:?} receive [{received}]; lamport {} -> {}; hlc 1 s ahead: {}",
        sent.compare(&received),
        a.lamport.now(),
        b.lamport.now(),
        refused
            .as_ref()
            .map_or("accepted".into(), |s| s.code().name().to_owned())
    );
    let ok = sent.compare(&received) == rpc_services::clock::logical::Causality::Before
        && refused.is_some_and(|s| s.code() == rpc_core::status::Code::OutOfRange);
    report.row(Row::made(
        PATH,
        "logical clocks",
        "-",
        "-",
        if ok { Ok(result) } else { Err(result) },
        start.elapsed(),
        None,
    ));

    for m in members {
        m.driver.abort();
        if let Some(server) = m.server {
            let _ = server.shutdown(Duration::from_secs(1)).await;
        }
    }
    Ok(())
}
