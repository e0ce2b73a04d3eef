#![allow(clippy::unwrap_used)]

use super::*;
use std::collections::BTreeMap;

#[test]
fn any_two_voting_sets_meet() {
    for n in 1..=40 {
        let sets = voting_sets(n);
        assert_eq!(sets.len(), n);
        for (i, a) in sets.iter().enumerate() {
            assert!(a.contains(&id(i)), "n {n}: set {i} lacks itself");
            for b in &sets {
                assert!(a.iter().any(|x| b.contains(x)), "n {n}: {a:?} and {b:?}");
            }
        }
    }
    let largest = |n| voting_sets(n).iter().map(Vec::len).max().unwrap_or(0);
    assert_eq!(
        (largest(3), largest(5), largest(9), largest(16)),
        (2, 3, 5, 7)
    );
}

/// Drives `n` cores in memory, delivering messages in a seeded random
/// order that keeps each link FIFO, with every peer asking `rounds`
/// times and staying inside for a random number of deliveries; checks
/// that no two are ever inside together and that every entry happens.
fn run(n: usize, rounds: u32, seed: u64) {
    type Links = BTreeMap<(u32, u32), VecDeque<Message>>;
    fn push(links: &mut Links, from: u32, out: Vec<Message>) {
        for m in out {
            links.entry((from, m.to)).or_default().push_back(m);
        }
    }
    let sets = voting_sets(n);
    let mut cores: Vec<MaekawaCore> = (0..n)
        .map(|i| MaekawaCore::new(id(i), sets[i].clone()))
        .collect();
    let mut links = Links::new();
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = |m: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % m as u64) as usize
    };
    let mut clock = 0u64;
    let mut left = vec![rounds; n];
    let mut entries = 0;
    let mut holder: Option<(usize, usize)> = None;
    for (i, core) in cores.iter_mut().enumerate() {
        clock += 1;
        let out = core.request(clock);
        push(&mut links, id(i), out);
        left[i] -= 1;
    }
    for _ in 0..1_000_000 {
        let ready: Vec<usize> = (0..n).filter(|&i| cores[i].may_enter()).collect();
        match holder {
            Some((h, _)) => assert_eq!(ready, vec![h], "n {n} seed {seed}: with {h} inside"),
            None => assert!(ready.len() <= 1, "n {n} seed {seed}: {ready:?} together"),
        }
        match holder {
            Some((h, 0)) => {
                holder = None;
                let out = cores[h].release();
                push(&mut links, id(h), out);
                if left[h] > 0 {
                    left[h] -= 1;
                    clock += 1;
                    let out = cores[h].request(clock);
                    push(&mut links, id(h), out);
                }
                continue;
            }
            Some((h, k)) => holder = Some((h, k - 1)),
            None => {
                if let Some(&i) = ready.first() {
                    assert!(cores[i].enter());
                    entries += 1;
                    holder = Some((i, next(4)));
                    continue;
                }
            }
        }
        let busy: Vec<(u32, u32)> = links
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(k, _)| *k)
            .collect();
        if busy.is_empty() {
            if holder.is_some() {
                continue;
            }
            break;
        }
        let (from, to) = busy[next(busy.len())];
        let Some(m) = links.get_mut(&(from, to)).and_then(VecDeque::pop_front) else {
            continue;
        };
        let out = cores[to as usize].receive(from, m.kind, m.request);
        push(&mut links, to, out);
    }
    assert_eq!(entries, n as u32 * rounds, "n {n} seed {seed}: entries");
}

#[test]
fn mutual_exclusion_and_no_deadlock_in_memory() {
    for n in [2, 3, 4, 5, 7, 9] {
        for seed in 1..=40 {
            run(n, 4, seed);
        }
    }
}

/// Two messages handled at the same time, on two threads, by voter 0 of
/// five (whose vote candidates 3 and 4 need): candidate 4's request with
/// the later timestamp and candidate 3's with the earlier one. When 4's
/// is handled first, the voter votes for it and then, 3's going first,
/// asks 4 to give the vote back: 4's link must carry the VOTE before the
/// INQUIRE, or 4 ignores the inquiry (it has no such vote), the voter
/// never asks again, and the peers deadlock. Both are then released, for
/// the next round. Every link's queue must show each INQUIRE and
/// RELINQUISH after the VOTE it is about, and each VOTE once per request.
///
/// The messages of one event used to be queued after the core was
/// unlocked, so the two handlers could queue in the other order; this
/// test saw it within a few thousand rounds, and dmutex_procs saw it as
/// five processes waiting forever.
#[test]
fn messages_handled_at_once_leave_on_each_link_in_the_order_made() {
    use std::sync::Barrier;
    const ROUNDS: u64 = 50_000;
    let peer = MaekawaPeer::new(0, 5);
    let mut queues = peer.unsent.lock().unwrap().take().expect("not connected");
    let message = |from: u32, kind: VoteKind, request: Request| pb::VoteMessage {
        from,
        kind: kind as i32,
        timestamp: request.0,
        candidate: request.1,
    };
    let barrier = Barrier::new(2);
    let (peer, barrier) = (&peer, &barrier);
    std::thread::scope(|s| {
        let early = s.spawn(move || {
            for round in 0..ROUNDS {
                barrier.wait();
                let r3 = (10 * round + 10, 3);
                peer.handle(&message(3, VoteKind::Request, r3)).unwrap();
                barrier.wait();
            }
        });
        for round in 0..ROUNDS {
            barrier.wait();
            let r4 = (10 * round + 11, 4);
            peer.handle(&message(4, VoteKind::Request, r4)).unwrap();
            barrier.wait();
            // Both handled: release both (the voter's next vote, if any,
            // goes to the other).
            let r3 = (10 * round + 10, 3);
            peer.handle(&message(4, VoteKind::Release, r4)).unwrap();
            peer.handle(&message(3, VoteKind::Release, r3)).unwrap();
        }
        early.join().unwrap();
    });
    for to in [3usize, 4] {
        let rx = queues[to].as_mut().expect("a link");
        let mut voted = HashSet::new();
        let mut seen = 0;
        while let Ok((m, _)) = rx.try_recv() {
            seen += 1;
            let kind = VoteKind::try_from(m.kind).unwrap();
            let request = (m.timestamp, m.candidate);
            match kind {
                VoteKind::Vote => {
                    assert!(voted.insert(request), "to {to}: two votes for {request:?}")
                }
                VoteKind::Inquire => assert!(
                    voted.contains(&request),
                    "to {to}: INQUIRE about {request:?} before the VOTE for it \
                     (message {seen} on the link)"
                ),
                _ => {}
            }
        }
        assert!(seen as u64 >= ROUNDS, "to {to}: {seen} messages");
    }
}
