//! The clock service in process over UDP on loopback: adjustments applied
//! at most once per round, clock metadata checked before the handler, and
//! the logical clocks over 1,000 random messages among 3 nodes.
#![allow(clippy::unwrap_used)]

use rand::{Rng, SeedableRng};
use rpc_core::client::UdpChannel;
use rpc_core::server::{Server, ServerHandle};
use rpc_core::status::Code;
use rpc_core::{CallError, Client, Metadata};
use rpc_services::clock::logical::{
    Causality, ClockInterceptor, LogicalClocks, VectorClock, HLC_KEY, VECTOR_KEY,
};
use rpc_services::clock::{ClockNode, ClockService, NodeConfig, Skew, TimeSource};
use rpc_services::proto::clock::v1 as pb;
use std::sync::Arc;

async fn serve(id: u32) -> (ServerHandle, Arc<ClockNode>, pb::ClockClient) {
    let node = ClockNode::new(
        NodeConfig::new(id),
        Arc::new(TimeSource::system(Skew::default())),
    );
    let server = Server::builder()
        .intercept(node.interceptor())
        .add_service(pb::ClockServer::new(ClockService(node.clone())))
        .serve_udp("127.0.0.1:0")
        .await
        .unwrap();
    let client = pb::ClockClient::new(Client::new(
        UdpChannel::connect(server.local_addr()).await.unwrap(),
    ));
    (server, node, client)
}

/// A copy of an adjustment that reaches the member by another way (a new
/// session, so the framework's duplicate filter cannot know it) is not
/// applied twice, and an older round is ignored.
#[tokio::test]
async fn an_adjustment_is_applied_once_per_round() {
    let (server, node, first) = serve(2).await;
    // Node 2 follows master 9.
    node.bully().on_coordinator(9, 1);
    let second = pb::ClockClient::new(Client::new(
        UdpChannel::connect(server.local_addr()).await.unwrap(),
    ));
    let adj = |round| pb::Adjustment {
        round,
        master_id: 9,
        delta_ns: 1_000_000,
        error_ns: 0,
    };
    let before = node.time().read().unheld_ns();
    let r = first.adjust(adj(7)).await.unwrap();
    assert!(r.applied, "{r:?}");
    let r = second.adjust(adj(7)).await.unwrap();
    assert!(!r.applied && r.last_round == 7, "{r:?}");
    let r = first.adjust(adj(6)).await.unwrap();
    assert!(!r.applied, "{r:?}");
    // From a master node 2 does not follow: refused.
    let r = first
        .adjust(pb::Adjustment {
            master_id: 3,
            ..adj(8)
        })
        .await
        .unwrap();
    assert!(!r.applied && r.reason.contains("follows"), "{r:?}");
    // One step of 1 ms in all (the first adjustment steps; it ran once).
    let moved = node.time().read().unheld_ns() - before;
    assert!(
        (1_000_000..1_000_000 + 100_000_000).contains(&moved),
        "{moved}"
    );
    assert_eq!(node.status().adjustments_ignored, 2);
    let r = second.adjust(adj(8)).await.unwrap();
    assert!(r.applied, "{r:?}");
}

/// Malformed clock metadata is refused with INVALID_ARGUMENT before the
/// handler does anything; an HLC too far ahead with OUT_OF_RANGE naming
/// both clocks; well-formed stamps are merged and the reply is stamped.
#[tokio::test]
async fn clock_metadata_is_checked_before_the_handler() {
    let (_server, node, client) = serve(1).await;
    let code = |r: Result<pb::TimeReading, CallError<rpc_core::Never>>| match r {
        Err(CallError::Rpc(rpc_core::Error::Status(s))) => Some((s.code(), s.message().to_owned())),
        Err(other) => Some((Code::Unknown, other.to_string())),
        Ok(_) => None,
    };
    let bad = client
        .get_time(pb::TimeRequest::default())
        .metadata(VECTOR_KEY, "1=x")
        .await;
    let (c, _) = code(bad).unwrap();
    assert_eq!(c, Code::InvalidArgument);
    // An adjustment from the master the node follows, with a malformed
    // Lamport stamp: refused, and its handler never ran (nothing applied,
    // nothing ignored).
    node.bully().on_coordinator(9, 1);
    let adjusted = client
        .adjust(pb::Adjustment {
            round: 1,
            master_id: 9,
            delta_ns: 1_000_000,
            error_ns: 0,
        })
        .metadata(rpc_services::clock::logical::LAMPORT_KEY, "-1")
        .await;
    match adjusted {
        Err(CallError::Rpc(rpc_core::Error::Status(s))) => {
            assert_eq!(s.code(), Code::InvalidArgument, "{s:?}")
        }
        other => panic!("a malformed stamp was not refused: {other:?}"),
    }
    let s = node.status();
    assert_eq!((s.last_round, s.adjustments_ignored), (0, 0), "{s:?}");
    let far = format!("{}.0", node.time().now_ns() + 10_000_000_000);
    let local_hlc = node.clocks().hybrid.now();
    let sent = node.time().now_ns();
    let ahead = client
        .get_time(pb::TimeRequest::default())
        .metadata(HLC_KEY, far.clone())
        .await;
    let answered = node.time().now_ns();
    let (c, message) = code(ahead).unwrap();
    assert_eq!(c, Code::OutOfRange);
    // Both clocks named: the remote one as sent, the local physical clock
    // as read while the call was handled, and the local hybrid clock.
    assert!(message.contains(&far), "remote clock not named: {message}");
    let physical: i64 = message
        .split("local physical clock ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("local physical clock not named: {message}"));
    assert!(
        (sent..=answered).contains(&physical),
        "local physical clock {physical} not read during the call [{sent}, {answered}]: {message}"
    );
    assert_eq!(
        node.clocks().hybrid.now(),
        local_hlc,
        "a refused call moved the HLC"
    );
    assert!(
        message.contains(&format!("local hybrid clock {local_hlc}")),
        "local hybrid clock {local_hlc} not named: {message}"
    );
    assert_eq!(
        node.clocks().lamport.now(),
        0,
        "a refused call changed the clock"
    );

    // A well-formed stamp: merged, and the answer carries the node's.
    let caller = Arc::new(LogicalClocks::new(
        7,
        Arc::new(TimeSource::system(Skew::default())),
        1_000_000_000,
    ));
    let mut md = Metadata::new();
    caller.stamp(&mut md);
    let mut call = client.get_time(pb::TimeRequest::default());
    for (k, v) in md {
        call = call.metadata(k, v);
    }
    let (_reading, answer) = call.with_metadata().await.unwrap();
    caller.merge(&answer).unwrap();
    let v: VectorClock = answer[VECTOR_KEY].parse().unwrap();
    assert_eq!((v.get(7), v.get(1)), (1, 2), "{v}");
    assert_eq!(caller.vector.now().compare(&v), Causality::After);

    // The same through the client interceptor: stamped and merged by it.
    let intercepted = pb::ClockClient::new(
        Client::new(UdpChannel::connect(_server.local_addr()).await.unwrap())
            .intercepted(ClockInterceptor::new(caller.clone())),
    );
    intercepted
        .get_time(pb::TimeRequest::default())
        .await
        .unwrap();
    let now = caller.vector.now();
    assert_eq!((now.get(7), now.get(1)), (4, 4), "{now}");
}

/// 1,000 messages among 3 nodes with random sends, receives and local
/// events: Lamport timestamps respect the true happens-before order,
/// vector clocks classify every pair of events exactly, and HLC stays
/// within the maximum offset of physical time.
#[test]
fn logical_clocks_over_random_messages() {
    const NODES: usize = 3;
    const MAX_OFFSET: i64 = 50_000_000;
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    // Each node's physical clock: the true clock with its own skew.
    let base = Arc::new(rpc_services::clock::time_source::ManualClock::new(
        1_700_000_000_000_000_000,
    ));
    let clocks: Vec<LogicalClocks> = (0..NODES)
        .map(|i| {
            let t = TimeSource::new(
                base.clone(),
                Skew::new(i as i64 * 10, 0.0),
                Default::default(),
            );
            LogicalClocks::new(i as u32 + 1, Arc::new(t), MAX_OFFSET)
        })
        .collect();
    // Events: (node, lamport, vector); happens-before as predecessor sets.
    let mut events: Vec<(usize, u64, VectorClock)> = Vec::new();
    let mut preds: Vec<Vec<usize>> = Vec::new();
    let mut last: [Option<usize>; NODES] = [None; NODES];
    let mut in_flight: Vec<(usize, Metadata, usize)> = Vec::new();
    let mut messages = 0;
    let record = |node: usize,
                  c: &LogicalClocks,
                  from: Option<usize>,
                  events: &mut Vec<_>,
                  preds: &mut Vec<Vec<usize>>,
                  last: &mut [Option<usize>; NODES]| {
        let mut p: Vec<usize> = last[node].into_iter().collect();
        p.extend(from);
        events.push((node, c.lamport.now(), c.vector.now()));
        preds.push(p);
        last[node] = Some(events.len() - 1);
        events.len() - 1
    };
    while messages < 1_000 || !in_flight.is_empty() {
        base.advance(rng.random_range(0..1_000_000));
        let node = rng.random_range(0..NODES);
        let action = rng.random_range(0..3);
        if action == 0 && messages < 1_000 {
            let mut md = Metadata::new();
            clocks[node].stamp(&mut md);
            let e = record(
                node,
                &clocks[node],
                None,
                &mut events,
                &mut preds,
                &mut last,
            );
            let to = (node + rng.random_range(1..NODES)) % NODES;
            in_flight.push((to, md, e));
            messages += 1;
        } else if action == 1 && !in_flight.is_empty() {
            let (to, md, sent) = in_flight.swap_remove(rng.random_range(0..in_flight.len()));
            clocks[to].merge(&md).unwrap();
            let pt = clocks[to].hybrid.now().l;
            record(
                to,
                &clocks[to],
                Some(sent),
                &mut events,
                &mut preds,
                &mut last,
            );
            // HLC within the maximum offset of true time.
            let truth = rpc_services::clock::time_source::Monotonic::now_ns(&*base);
            assert!((pt - truth).abs() <= MAX_OFFSET, "hlc {pt} vs true {truth}");
        } else {
            clocks[node].lamport.tick();
            clocks[node].vector.tick();
            clocks[node].hybrid.tick();
            record(
                node,
                &clocks[node],
                None,
                &mut events,
                &mut preds,
                &mut last,
            );
        }
    }
    // Transitive closure of happens-before (events are in a topological
    // order: predecessors come first), as bitsets.
    let n = events.len();
    let words = n.div_ceil(64);
    let mut before = vec![vec![0u64; words]; n];
    for (e, ps) in preds.iter().enumerate() {
        for &p in ps {
            let (lo, hi) = before.split_at_mut(e);
            for (w, pw) in hi[0].iter_mut().zip(&lo[p]) {
                *w |= pw;
            }
            hi[0][p / 64] |= 1 << (p % 64);
        }
    }
    let hb = |a: usize, b: usize| before[b][a / 64] & (1 << (a % 64)) != 0;
    // The library's `compare` on every ordered pair of events.
    let mut concurrent = 0u64;
    for a in 0..n {
        for b in 0..n {
            if a == b {
                continue;
            }
            let expected = if hb(a, b) {
                assert!(events[a].1 < events[b].1, "Lamport: {a} -> {b}");
                Causality::Before
            } else if hb(b, a) {
                Causality::After
            } else {
                concurrent += 1;
                Causality::Concurrent
            };
            assert_eq!(
                events[a].2.compare(&events[b].2),
                expected,
                "events {a} ({}), {b} ({})",
                events[a].2,
                events[b].2
            );
        }
    }
    assert!(concurrent > 0, "no concurrent events: the check is vacuous");
    assert!(n > 2_000, "{n} events");
}
