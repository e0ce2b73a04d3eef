//! The election algorithms over in-memory peers.

use super::*;
use std::collections::{HashMap, HashSet};

/// Nodes in memory; a dead node answers nothing.
#[derive(Default)]
struct MemPeers {
    bullies: Mutex<HashMap<u32, Arc<Bully>>>,
    rings: Mutex<HashMap<u32, Arc<Ring>>>,
    dead: Mutex<HashSet<u32>>,
}

impl MemPeers {
    fn alive(&self, id: u32) -> bool {
        !lock(&self.dead).contains(&id)
    }
}

impl ElectionPeers for MemPeers {
    fn elect(&self, from: u32, to: Vec<u32>) -> PeerFuture<'_, Vec<u32>> {
        let answered = to
            .into_iter()
            .filter(|&id| self.alive(id))
            .filter(|id| {
                let b = lock(&self.bullies).get(id).cloned();
                b.is_some_and(|b| b.on_elect(from))
            })
            .collect();
        Box::pin(async move { answered })
    }

    fn announce(&self, leader: u32, term: u64, to: Vec<u32>) -> PeerFuture<'_, ()> {
        for id in to.into_iter().filter(|&id| self.alive(id)) {
            if let Some(b) = lock(&self.bullies).get(&id).cloned() {
                b.on_coordinator(leader, term);
            }
        }
        Box::pin(async {})
    }

    fn pass(&self, to: u32, token: RingToken) -> PeerFuture<'_, bool> {
        let ring = lock(&self.rings).get(&to).cloned();
        let took = match ring {
            Some(r) if self.alive(to) => {
                r.on_token(token);
                true
            }
            _ => false,
        };
        Box::pin(async move { took })
    }
}

fn group(n: u32) -> (Arc<MemPeers>, Vec<Arc<Bully>>, Vec<Arc<Ring>>) {
    let peers = Arc::new(MemPeers::default());
    let ids: Vec<u32> = (1..=n).collect();
    let config = ElectionConfig {
        coordinator_wait: Duration::from_millis(500),
        max_attempts: 5,
    };
    let bullies: Vec<_> = ids
        .iter()
        .map(|&id| Bully::new(id, ids.clone(), peers.clone(), config))
        .collect();
    let rings: Vec<_> = ids
        .iter()
        .map(|&id| Ring::new(id, ids.clone(), peers.clone(), config))
        .collect();
    for (b, r) in bullies.iter().zip(&rings) {
        lock(&peers.bullies).insert(b.id(), b.clone());
        lock(&peers.rings).insert(b.id(), r.clone());
    }
    (peers, bullies, rings)
}

/// Waits (bounded) until every node in `nodes` follows `leader`.
async fn all_follow(nodes: &[watch::Receiver<Leader>], leader: u32) {
    for rx in nodes {
        let mut rx = rx.clone();
        let agreed = tokio::time::timeout(
            Duration::from_secs(5),
            rx.wait_for(|l| l.id == Some(leader)),
        )
        .await;
        assert!(
            matches!(agreed, Ok(Ok(_))),
            "a node did not follow {leader}"
        );
    }
}

#[tokio::test]
async fn bully_elects_the_highest_live_id_from_the_lowest() {
    let n = 6;
    let (peers, bullies, _) = group(n);
    lock(&peers.dead).insert(6);
    let leader = bullies[0].elect().await;
    assert!(matches!(leader, Ok(l) if l.id == Some(5)), "{leader:?}");
    let live: Vec<_> = bullies[..5].iter().map(|b| b.subscribe()).collect();
    all_follow(&live, 5).await;
    // Wait for the elections that the ELECTIONs set off to end.
    for b in &bullies[..5] {
        let _idle = tokio::time::timeout(Duration::from_secs(5), b.node.running.lock()).await;
    }
    let total: u64 = bullies.iter().map(|b| b.stats().messages()).sum();
    // The lowest noticing first is bully's worst case: O(n^2), and at
    // least one ELECTION per pair of live nodes it involves.
    let n = u64::from(n);
    assert!(total <= 2 * n * n, "{total} messages");
    assert!(total >= 5 * 4 / 2, "{total} messages");
}

#[tokio::test]
async fn the_highest_needs_no_answer_and_a_returning_node_bullies() {
    let (peers, bullies, _) = group(4);
    let l = bullies[3].elect().await;
    assert!(matches!(l, Ok(l) if l.id == Some(4)));
    let followers: Vec<_> = bullies.iter().map(|b| b.subscribe()).collect();
    all_follow(&followers, 4).await;
    // 4 dies; 2 notices; 3 wins.
    lock(&peers.dead).insert(4);
    bullies[1].suspect(4);
    let l = bullies[1].elect().await;
    assert!(matches!(l, Ok(l) if l.id == Some(3)), "{l:?}");
    all_follow(&followers[..3], 3).await;
    let term3 = bullies[0].leader().term;
    // 4 comes back and runs an election: it takes over (in a term at least
    // 3's: at equal terms the higher id wins).
    lock(&peers.dead).remove(&4);
    let l = bullies[3].elect().await;
    assert!(
        matches!(l, Ok(l) if l.id == Some(4) && l.term >= term3),
        "{l:?}"
    );
    all_follow(&followers, 4).await;
}

#[tokio::test]
async fn ring_elects_the_highest_live_id_and_skips_the_dead() {
    let (peers, _, rings) = group(5);
    lock(&peers.dead).insert(5);
    lock(&peers.dead).insert(3);
    rings[1].start().await;
    let live: Vec<_> = [0, 1, 3].iter().map(|&i| rings[i].subscribe()).collect();
    all_follow(&live, 4).await;
    // 2n passes for the live ring of 3, plus one per dead node skipped.
    let passes: u64 = rings.iter().map(|r| r.passes()).sum();
    assert!((6..=12).contains(&passes), "{passes} passes");
}

#[tokio::test]
async fn a_ring_token_whose_initiator_died_still_ends() {
    let (peers, _, rings) = group(3);
    // 1's ELECTION token is at 2 when 1 dies.
    lock(&peers.dead).insert(1);
    rings[1].on_token(RingToken {
        initiator: 1,
        ids: vec![1],
        leader: None,
    });
    let live: Vec<_> = [1, 2].iter().map(|&i| rings[i].subscribe()).collect();
    all_follow(&live, 3).await;
}

#[tokio::test]
async fn concurrent_ring_elections_leave_one_token_going_round() {
    let n = 5;
    let (peers, _, rings) = group(n);
    lock(&peers.dead).insert(5);
    // Every live node notices at once.
    let elections: Vec<_> = rings[..4]
        .iter()
        .map(|r| {
            let r = r.clone();
            tokio::spawn(async move { r.elect().await })
        })
        .collect();
    for e in elections {
        let l = e.await.expect("the election task panicked");
        assert!(matches!(l, Ok(l) if l.id == Some(4)), "{l:?}");
    }
    let live: Vec<_> = rings[..4].iter().map(|r| r.subscribe()).collect();
    all_follow(&live, 4).await;
    let started: u64 = rings.iter().map(|r| r.stats().started).sum();
    let passes: u64 = rings.iter().map(|r| r.stats().messages()).sum();
    // One ELECTION and one COORDINATOR circulation (n passes each, the
    // failed pass to the dead node counted; one fewer when the initiator
    // hands the COORDINATOR to itself), plus at most n for each other
    // token before it is dropped.
    let n = u64::from(n);
    assert!(started >= 1, "no election started");
    assert!(
        (2 * n - 1..=2 * n + (started - 1) * n).contains(&passes),
        "{passes} passes, {started} started"
    );
}

#[tokio::test]
async fn one_ring_election_costs_2n_passes_and_a_lower_coordinator_is_replaced() {
    let (peers, _, rings) = group(4);
    lock(&peers.dead).insert(4);
    // 2 starts: ELECTION 2 -> 3 -> 4 (dead: a pass that fails) -> 1 -> 2,
    // then COORDINATOR from 2 to 3's successors, 4 (fails) -> 1 -> 2 -> 3.
    rings[1].start().await;
    let live: Vec<_> = rings[..3].iter().map(|r| r.subscribe()).collect();
    all_follow(&live, 3).await;
    let passes: u64 = rings.iter().map(|r| r.passes()).sum();
    assert_eq!(passes, 8, "2n passes for one election in a ring of 4");
    // 1 starts (it is the winner's next live successor: it hands the
    // COORDINATOR to itself): 2n - 1.
    rings[2].suspect(3);
    rings[0].start().await;
    let mut winner = rings[2].subscribe();
    // (The borrow `wait_for` returns is dropped here: held, it would
    // block the leader's next change.)
    let done = tokio::time::timeout(Duration::from_secs(5), async {
        winner.wait_for(|l| l.id == Some(3)).await.is_ok()
    })
    .await;
    assert_eq!(done, Ok(true), "3 did not follow itself again");
    let passes = rings.iter().map(|r| r.passes()).sum::<u64>() - passes;
    assert_eq!(passes, 7, "2n - 1 passes");
    // A COORDINATOR lower than the node's own id: it takes over.
    lock(&peers.dead).remove(&4);
    rings[3].on_token(RingToken {
        initiator: 1,
        ids: vec![1, 2, 3],
        leader: Some(3),
    });
    let all: Vec<_> = rings.iter().map(|r| r.subscribe()).collect();
    all_follow(&all, 4).await;
}
