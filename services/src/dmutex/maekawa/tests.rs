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
