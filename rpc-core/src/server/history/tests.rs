//! Unit tests of the reply history (ownership and quotas included).
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use super::idmap::IdMap;
use super::*;
use std::net::SocketAddr;
use std::time::Duration;

static ANYONE: Owner = Owner::Local;
/// An in-process peer (quotas and ownership are tested below).
const LOCAL: Peer<'static> = Peer {
    owner: &ANYONE,
    verified: true,
};

#[test]
fn id_map_behaves_as_an_ordered_map() {
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (mut ours, mut model) = (IdMap::default(), BTreeMap::new());
    let mut next = 1u64;
    for step in 0..20_000u64 {
        // Mostly ascending ids, some old, some repeated.
        let id = match rng.random_range(0..10) {
            0..=5 => {
                next += 1;
                next
            }
            6 | 7 => rng.random_range(1..=next),
            _ => model.keys().next().copied().unwrap_or(1),
        };
        match rng.random_range(0..4) {
            0 | 1 => assert_eq!(ours.insert(id, step), model.insert(id, step)),
            2 => assert_eq!(ours.remove(&id), model.remove(&id)),
            _ => {
                if let Some(v) = ours.get_mut(&id) {
                    *v += 1;
                }
                if let Some(v) = model.get_mut(&id) {
                    *v += 1;
                }
            }
        }
        assert_eq!(ours.get(&id), model.get(&id));
        assert_eq!(ours.first_key_value(), model.first_key_value());
        assert_eq!(ours.is_empty(), model.is_empty());
    }
    assert!(ours.iter().eq(model.iter()));
}

fn cfg() -> HistoryConfig {
    HistoryConfig {
        ttl: Duration::from_secs(10),
        sweep_interval: None,
        max_per_session: 4,
        max_entries: 10,
        max_bytes: 1 << 20,
        max_sessions: 3,
        max_tombstones: 100,
        max_sessions_per_source: 1000,
        max_bytes_per_source: 1 << 20,
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[test]
fn register_complete_replay() {
    let now = Instant::now();
    let mut h = History::new(cfg());
    assert_eq!(h.lookup(7, 1, now), Lookup::Absent);
    assert_eq!(h.register(7, 1, false, 0, LOCAL, now), Ok(()));
    assert_eq!(h.lookup(7, 1, now), Lookup::InProgress);
    assert!(h.complete(7, 1, b("r1"), now));
    assert_eq!(h.lookup(7, 1, now), Lookup::Completed(Some(b("r1"))));
    assert_eq!(
        h.size(),
        HistorySize {
            completed: 1,
            acked: 0,
            in_progress: 0,
            sessions: 1,
            bytes: 2,
            tombstones: 0
        }
    );
    // Completing twice does nothing.
    assert!(!h.complete(7, 1, b("again"), now));
    assert_eq!(h.lookup(7, 1, now), Lookup::Completed(Some(b("r1"))));
}

#[test]
fn ack_and_ack_up_to_drop_entries_and_raise_floor() {
    let now = Instant::now();
    let mut h = History::new(cfg());
    for id in 1..=4 {
        h.register(1, id, false, 0, LOCAL, now).unwrap();
        h.complete(1, id, b("r"), now);
    }
    assert!(h.ack(1, 3, 0, now));
    // The reply is gone, the fact that id 3 ran is not: a late copy of
    // it must never be taken for new.
    assert_eq!(h.lookup(1, 3, now), Lookup::Acked);
    assert_eq!(h.evictions().ack, 1);
    assert_eq!(h.size().acked, 1);
    assert!(h.ack(1, 3, 0, now), "a repeated ack finds the marker");
    assert_eq!(h.evictions().ack, 1, "and counts nothing twice");
    assert!(h.ack(1, 0, 2, now));
    assert_eq!(h.lookup(1, 1, now), Lookup::Stale);
    assert_eq!(h.lookup(1, 2, now), Lookup::Stale);
    assert_eq!(h.lookup(1, 4, now), Lookup::Completed(Some(b("r"))));
    assert_eq!(h.evictions().ack, 3);
    assert_eq!(h.size().completed, 1);
    // The marker of 3, right above the new floor, is folded into it.
    assert_eq!(h.session_marks(1), Some((3, 0)));
    assert_eq!(h.lookup(1, 3, now), Lookup::Stale);
    assert_eq!(h.size().acked, 0);
    // A lower ack_up_to never lowers the floor.
    h.ack(1, 0, 1, now);
    assert_eq!(h.session_marks(1), Some((3, 0)));
    // Unknown session: not created.
    assert!(!h.ack(99, 5, 5, now));
    assert_eq!(h.size().sessions, 1);
}

#[test]
fn acked_markers_stay_until_the_floor_passes_them() {
    let now = Instant::now();
    let mut h = History::new(cfg());
    for id in 1..=4 {
        h.register(1, id, false, 0, LOCAL, now).unwrap();
    }
    h.complete(1, 3, b("r3"), now);
    h.complete(1, 4, b("r4"), now);
    // 1 and 2 still run; 3 and 4 are acknowledged with a floor of 0.
    h.ack(1, 3, 0, now);
    h.ack(1, 4, 0, now);
    assert_eq!(
        (h.size().completed, h.size().acked, h.size().bytes),
        (0, 2, 0)
    );
    assert_eq!(h.lookup(1, 3, now), Lookup::Acked);
    assert_eq!(h.lookup(1, 4, now), Lookup::Acked);
    // Completing a marker's request stores nothing.
    assert!(!h.complete(1, 4, b("again"), now));
    // The floor reaches 2: the markers 3 and 4 are folded into it.
    h.complete(1, 1, b("r1"), now);
    h.complete(1, 2, b("r2"), now);
    h.ack(1, 0, 2, now);
    assert_eq!(h.session_marks(1), Some((4, 0)));
    assert_eq!(
        h.size(),
        HistorySize {
            sessions: 1,
            ..HistorySize::default()
        }
    );
    let (order, _) = h.queue_lens();
    assert!(order <= 4);
}

#[test]
fn markers_count_against_the_caps_and_their_eviction_is_outcome_unknown() {
    let now = Instant::now();
    let mut h = History::new(cfg());
    // Id 1 runs for ever, so the floor stays at 0.
    h.register(1, 1, false, 0, LOCAL, now).unwrap();
    for id in 2..=7 {
        h.register(1, id, false, 0, LOCAL, now).unwrap();
        h.complete(1, id, b("r"), now);
        h.ack(1, id, 0, now);
    }
    // max_per_session is 4: two markers (2, 3) went, oldest first.
    assert_eq!(h.size().acked, 4);
    assert_eq!(h.evictions().markers, 2);
    assert_eq!(h.evictions().session_cap, 0, "no reply was lost");
    assert_eq!(h.lookup(1, 2, now), Lookup::Evicted);
    assert_eq!(h.lookup(1, 3, now), Lookup::Evicted);
    assert_eq!(h.lookup(1, 4, now), Lookup::Acked);
    // And by age.
    h.sweep(now + Duration::from_secs(10));
    assert_eq!(h.size().acked, 0);
    assert_eq!(h.evictions().markers, 6);
    assert_eq!(
        h.lookup(1, 7, now + Duration::from_secs(10)),
        Lookup::Evicted
    );
    assert_eq!(
        h.lookup(1, 1, now + Duration::from_secs(10)),
        Lookup::InProgress
    );
}

#[test]
fn a_forgotten_sessions_old_ids_have_an_unknown_outcome_for_one_ttl() {
    let now = Instant::now();
    let mut h = History::new(cfg());
    for session in 1..=3 {
        h.register(session, 5, false, 4, LOCAL, now).unwrap();
        h.complete(session, 5, b("r"), now);
    }
    // A fourth session pushes session 1 (least recent) out.
    h.register(4, 1, false, 0, LOCAL, now).unwrap();
    assert_eq!(h.sessions_evicted(), 1);
    assert_eq!(h.lookup(1, 5, now), Lookup::Evicted, "ran: never again");
    assert_eq!(h.lookup(1, 4, now), Lookup::Evicted);
    assert_eq!(h.lookup(1, 6, now), Lookup::Absent, "never seen: new");
    // Coming back, the session knows its old ids' fate.
    h.register(1, 6, false, 0, LOCAL, now).unwrap();
    assert_eq!(h.session_marks(1), Some((0, 5)));
    assert_eq!(h.lookup(1, 5, now), Lookup::Evicted);
    // A tombstone lasts one ttl.
    h.register(5, 1, false, 0, LOCAL, now).unwrap(); // forgets session 2
    assert_eq!(h.lookup(2, 5, now), Lookup::Evicted);
    let later = now + Duration::from_secs(10);
    h.sweep(later);
    assert_eq!(h.lookup(2, 5, later), Lookup::Absent);
    assert_eq!(h.tombstones(), 0);
}

#[test]
fn a_tombstone_is_never_dropped_early_new_sessions_are_refused_instead() {
    // A tombstone dropped before its ttl let a late network copy of a
    // forgotten session's first request look like a new session's first
    // request and run a second time (found by the model checker).
    let now = Instant::now();
    let mut h = History::new(HistoryConfig {
        max_sessions: 2,
        max_tombstones: 2,
        ..cfg()
    });
    for session in 1..=4u64 {
        h.register(session, 1, false, 0, LOCAL, now).unwrap();
        h.complete(session, 1, b("r"), now);
    }
    // Sessions 1 and 2 were forgotten; both tombstones are in use.
    assert_eq!(h.sessions_evicted(), 2);
    assert_eq!(h.tombstones(), 2);
    assert_eq!(
        h.register(5, 1, false, 0, LOCAL, now),
        Err(RegisterError::TooManySessions),
        "no room for one more tombstone: refused, nothing forgotten"
    );
    assert_eq!(h.size().sessions, 2);
    for session in 1..=2u64 {
        assert_eq!(
            h.lookup(session, 1, now),
            Lookup::Evicted,
            "session {session}"
        );
    }
    // Known sessions carry on.
    h.register(3, 2, false, 0, LOCAL, now).unwrap();
    // One ttl later the tombstones have expired and there is room again.
    let later = now + Duration::from_secs(10);
    h.register(5, 1, false, 0, LOCAL, later).unwrap();
    assert_eq!(h.tombstones(), 1);
    assert_eq!(h.lookup(1, 1, later), Lookup::Absent);
}

#[test]
fn a_forgotten_session_comes_back_with_its_old_ids_unknown() {
    // Found by tests/hostile.rs: session 1 forgotten; its client's next
    // request (id 5) made the session known again, and a late copy of id 1
    // (which had run) must not find a known session and a new id.
    let now = Instant::now();
    let mut h = History::new(HistoryConfig {
        max_sessions: 2,
        ..cfg()
    });
    for session in 1..=3u64 {
        h.register(session, 1, false, 0, LOCAL, now).unwrap();
        h.complete(session, 1, b("r"), now);
    }
    h.register(1, 5, false, 0, LOCAL, now).unwrap();
    assert_eq!(h.lookup(1, 1, now), Lookup::Evicted, "ran: never again");
    assert_eq!(h.lookup(1, 2, now), Lookup::Absent, "never seen: new");
    // Without an overflow, a new session's first id may be any: the ids
    // below it were never seen and are new.
    let mut fresh = History::new(cfg());
    fresh.register(9, 3, false, 0, LOCAL, now).unwrap();
    assert_eq!(fresh.lookup(9, 1, now), Lookup::Absent);
}

#[test]
fn ack_of_running_entry_means_reply_is_not_stored() {
    let now = Instant::now();
    let mut h = History::new(cfg());
    h.register(1, 5, false, 0, LOCAL, now).unwrap();
    h.ack(1, 0, 5, now);
    assert_eq!(h.size().in_progress, 0);
    assert!(!h.complete(1, 5, b("late"), now));
    assert_eq!(h.lookup(1, 5, now), Lookup::Stale);
    assert_eq!(h.size().completed, 0);
}

#[test]
fn per_session_cap_evicts_oldest_and_marks_evicted() {
    let now = Instant::now();
    let mut h = History::new(cfg());
    for id in 1..=6 {
        h.register(1, id, false, 0, LOCAL, now).unwrap();
        h.complete(1, id, b("r"), now);
    }
    assert_eq!(h.size().completed, 4);
    assert_eq!(h.evictions().session_cap, 2);
    assert_eq!(h.lookup(1, 1, now), Lookup::Evicted);
    assert_eq!(h.lookup(1, 2, now), Lookup::Evicted);
    assert_eq!(h.lookup(1, 3, now), Lookup::Completed(Some(b("r"))));
    assert_eq!(h.lookup(1, 7, now), Lookup::Absent);
}

#[test]
fn running_entries_are_never_evicted_by_caps() {
    let now = Instant::now();
    let mut h = History::new(cfg());
    for id in 1..=8 {
        h.register(1, id, false, 0, LOCAL, now).unwrap();
    }
    assert_eq!(h.size().in_progress, 8);
    h.complete(1, 8, b("r"), now);
    assert_eq!(h.evictions(), EvictionCounts::default());
    assert_eq!(h.lookup(1, 1, now), Lookup::InProgress);
}

#[test]
fn global_cap_evicts_oldest_stored_first() {
    let now = Instant::now();
    let mut h = History::new(HistoryConfig {
        max_sessions: 100,
        ..cfg()
    });
    for session in 1..=4u64 {
        for id in 1..=3 {
            h.register(session, id, false, 0, LOCAL, now).unwrap();
            h.complete(session, id, b("r"), now);
        }
    }
    assert_eq!(h.size().completed, 10);
    assert_eq!(h.evictions().global_cap, 2);
    assert_eq!(h.lookup(1, 1, now), Lookup::Evicted);
    assert_eq!(h.lookup(1, 2, now), Lookup::Evicted);
    assert_eq!(h.lookup(1, 3, now), Lookup::Completed(Some(b("r"))));
}

#[test]
fn age_sweep_evicts_and_forgets_idle_sessions() {
    let t0 = Instant::now();
    let mut h = History::new(cfg());
    h.register(1, 1, false, 0, LOCAL, t0).unwrap();
    h.complete(1, 1, b("r"), t0);
    h.register(1, 2, false, 0, LOCAL, t0).unwrap();
    let t1 = t0 + Duration::from_secs(5);
    h.complete(1, 2, b("r"), t1);
    h.sweep(t0 + Duration::from_secs(11));
    assert_eq!(h.evictions().age, 1);
    assert_eq!(
        h.lookup(1, 1, t0 + Duration::from_secs(11)),
        Lookup::Evicted
    );
    assert_eq!(
        h.lookup(1, 2, t0 + Duration::from_secs(11)),
        Lookup::Completed(Some(b("r")))
    );
    h.sweep(t0 + Duration::from_secs(16));
    assert_eq!(h.evictions().age, 2);
    assert_eq!(h.size().sessions, 1, "session was active at 11 s");
    h.sweep(t0 + Duration::from_secs(40));
    assert_eq!(h.size().sessions, 0);
    assert_eq!(h.sessions_forgotten(), 1);

    // A session idle for long whose last entry ages out now is kept for
    // another ttl, so that a retry still learns "outcome unknown".
    let mut h = History::new(cfg());
    h.register(2, 1, false, 0, LOCAL, t0).unwrap();
    h.complete(2, 1, b("r"), t0);
    let late = t0 + Duration::from_secs(100);
    h.sweep(late);
    assert_eq!(h.evictions().age, 1);
    assert_eq!(h.size().sessions, 1);
    h.sweep(late + Duration::from_secs(9));
    assert_eq!(h.size().sessions, 1);
    h.sweep(late + Duration::from_secs(10));
    assert_eq!(h.size().sessions, 0);
}

#[test]
fn running_entries_survive_the_sweep() {
    let t0 = Instant::now();
    let mut h = History::new(cfg());
    h.register(1, 1, false, 0, LOCAL, t0).unwrap();
    h.sweep(t0 + Duration::from_secs(100));
    assert_eq!(
        h.lookup(1, 1, t0 + Duration::from_secs(100)),
        Lookup::InProgress
    );
    assert_eq!(h.size().sessions, 1);
}

#[test]
fn session_limit_forgets_least_recent_idle_session() {
    let now = Instant::now();
    let mut h = History::new(cfg());
    h.register(1, 1, false, 0, LOCAL, now).unwrap(); // stays running
    h.register(2, 1, false, 0, LOCAL, now).unwrap();
    h.complete(2, 1, b("r"), now);
    h.register(3, 1, false, 0, LOCAL, now).unwrap();
    h.complete(3, 1, b("r"), now);
    h.register(4, 1, false, 0, LOCAL, now).unwrap();
    assert_eq!(h.size().sessions, 3);
    assert_eq!(h.lookup(1, 1, now), Lookup::InProgress);
    assert_eq!(
        h.lookup(2, 1, now),
        Lookup::Evicted,
        "session 2 was forgotten: what it ran has an unknown outcome"
    );
    assert_eq!(h.lookup(2, 2, now), Lookup::Absent);
    assert_eq!(h.evictions().session_limit, 1);
    assert_eq!(h.sessions_evicted(), 1);
    // All sessions running: refuse.
    let mut h = History::new(HistoryConfig {
        max_sessions: 2,
        ..cfg()
    });
    h.register(1, 1, false, 0, LOCAL, now).unwrap();
    h.register(2, 1, false, 0, LOCAL, now).unwrap();
    assert_eq!(
        h.register(3, 1, false, 0, LOCAL, now),
        Err(RegisterError::TooManySessions)
    );
}

#[test]
fn a_new_session_starts_at_the_requests_ack_up_to() {
    let now = Instant::now();
    let mut h = History::new(cfg());
    h.register(9, 50, false, 49, LOCAL, now).unwrap();
    assert_eq!(h.session_marks(9), Some((49, 0)));
    assert_eq!(h.lookup(9, 30, now), Lookup::Stale);
    // An existing session keeps its floor.
    h.register(9, 51, false, 0, LOCAL, now).unwrap();
    assert_eq!(h.session_marks(9), Some((49, 0)));
}

#[test]
fn byte_cap_evicts_oldest_and_bytes_are_accounted() {
    let now = Instant::now();
    let mut h = History::new(HistoryConfig {
        max_bytes: 1_000,
        max_sessions: 100,
        ..cfg()
    });
    let reply = Bytes::from(vec![0u8; 400]);
    for session in 1..=3u64 {
        h.register(session, 1, false, 0, LOCAL, now).unwrap();
        h.complete(session, 1, reply.clone(), now);
    }
    assert_eq!(h.size().bytes, 800);
    assert_eq!(h.evictions().global_cap, 1);
    assert_eq!(h.lookup(1, 1, now), Lookup::Evicted);
    h.ack(2, 1, 0, now);
    assert_eq!(h.size().bytes, 400);
    h.sweep(now + Duration::from_secs(60));
    // Session 3 stays another ttl after its entry aged out.
    assert_eq!(
        h.size(),
        HistorySize {
            completed: 0,
            acked: 0,
            in_progress: 0,
            sessions: 1,
            bytes: 0,
            tombstones: 0
        }
    );
}

#[test]
fn one_way_tombstones() {
    let now = Instant::now();
    let mut h = History::new(cfg());
    h.register(1, 1, true, 0, LOCAL, now).unwrap();
    assert_eq!(h.lookup(1, 1, now), Lookup::Completed(None));
    h.unregister(1, 1);
    assert_eq!(h.lookup(1, 1, now), Lookup::Absent);
    assert_eq!(h.size().completed, 0);
}

#[test]
fn flood_of_sessions_stays_bounded() {
    let now = Instant::now();
    let mut h = History::new(HistoryConfig {
        max_sessions: 100,
        max_entries: 150,
        max_per_session: 8,
        ..HistoryConfig::default()
    });
    for session in 1..=10_000u64 {
        for id in 1..=3 {
            h.register(session, id, false, 0, LOCAL, now).unwrap();
            h.complete(session, id, b("reply"), now);
        }
        h.ack(session, 0, 1, now);
    }
    let size = h.size();
    assert!(size.sessions <= 100);
    assert!(size.completed <= 150);
    assert_eq!(size.bytes, 5 * size.completed, "bytes accounted");
    let (order, activity) = h.queue_lens();
    assert!(order <= 2 * size.completed + 64 + 1, "order queue {order}");
    assert!(
        activity <= 2 * size.sessions + 64 + 1,
        "activity queue {activity}"
    );
    let e = h.evictions();
    assert_eq!(e.ack, 10_000);
    assert_eq!(h.sessions_evicted(), 10_000 - 100);
    // Every completed entry is accounted for: kept, acked or evicted.
    assert_eq!(
        size.completed as u64 + e.ack + e.age + e.session_cap + e.global_cap + e.session_limit,
        30_000
    );
}

#[test]
fn steady_rra_keeps_queues_small() {
    let now = Instant::now();
    let mut h = History::new(HistoryConfig::default());
    for id in 1..=100_000u64 {
        h.register(1, id, false, 0, LOCAL, now).unwrap();
        h.complete(1, id, b("r"), now);
        h.ack(1, id, id - 1, now);
    }
    assert_eq!(h.size().completed, 0);
    let (order, activity) = h.queue_lens();
    assert!(order <= 65 && activity <= 67, "{order} {activity}");
}

fn udp(port: u16) -> Owner {
    Owner::Addr(SocketAddr::from(([127, 0, 0, 1], port)))
}

#[test]
fn a_session_belongs_to_the_peer_that_created_it() {
    let now = Instant::now();
    let mut h = History::new(cfg());
    let (me, other) = (udp(1000), udp(2000));
    let mine = Peer {
        owner: &me,
        verified: false,
    };
    assert_eq!(h.ownership(7, &me, &|| false), Ownership::Unknown);
    h.register(7, 1, false, 0, mine, now).unwrap();
    assert_eq!(
        h.ownership(7, &me, &|| false),
        Ownership::Own { verified: false }
    );
    // Another port of the same host is another peer.
    assert_eq!(h.ownership(7, &other, &|| true), Ownership::Foreign);
    let theirs = Peer {
        owner: &other,
        verified: true,
    };
    assert_eq!(
        h.register(7, 2, false, 0, theirs, now),
        Err(RegisterError::Foreign)
    );
    // A message that proves the owner's address marks the session.
    assert_eq!(
        h.ownership(7, &me, &|| true),
        Ownership::Own { verified: true }
    );
    assert_eq!(
        h.ownership(7, &me, &|| false),
        Ownership::Own { verified: true }
    );
}

#[test]
fn a_forgotten_sessions_tombstone_keeps_its_owner() {
    let now = Instant::now();
    let mut h = History::new(HistoryConfig {
        max_sessions: 1,
        ..cfg()
    });
    let (me, other) = (udp(1000), udp(2000));
    let mine = Peer {
        owner: &me,
        verified: true,
    };
    let theirs = Peer {
        owner: &other,
        verified: true,
    };
    h.register(1, 1, false, 0, mine, now).unwrap();
    h.complete(1, 1, b("x"), now);
    h.register(2, 1, false, 0, theirs, now).unwrap(); // forgets session 1
    h.complete(2, 1, b("y"), now);
    assert_eq!(h.ownership(1, &other, &|| true), Ownership::Foreign);
    assert_eq!(
        h.register(1, 9, false, 0, theirs, now),
        Err(RegisterError::Foreign)
    );
    assert_eq!(h.ownership(1, &me, &|| true), Ownership::Unknown);
}

#[test]
fn source_quotas_refuse_a_flood_without_evicting_others() {
    let now = Instant::now();
    let mut h = History::new(HistoryConfig {
        max_sessions: 10,
        max_sessions_per_source: 3,
        max_bytes_per_source: 10,
        ..cfg()
    });
    let honest = udp(1000);
    let honest_peer = Peer {
        owner: &honest,
        verified: true,
    };
    h.register(100, 1, false, 0, honest_peer, now).unwrap();
    h.complete(100, 1, b("reply"), now);
    // Another host floods new sessions, one port each.
    let mut refused = 0;
    for port in 0..50u16 {
        let owner = Owner::Addr(SocketAddr::from(([127, 0, 0, 2], port)));
        let peer = Peer {
            owner: &owner,
            verified: true,
        };
        match h.register(u64::from(port) + 1, 1, false, 0, peer, now) {
            Ok(()) => assert!(h.complete(u64::from(port) + 1, 1, b("r"), now)),
            Err(e) => {
                assert_eq!(e, RegisterError::SourceSessions);
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 47);
    let flooder = Owner::Host("127.0.0.2".parse().unwrap());
    assert_eq!(h.source_use(&flooder), (3, 3));
    // The honest session and its reply are still there.
    assert_eq!(h.lookup(100, 1, now), Lookup::Completed(Some(b("reply"))));
    // Bytes: a source over its byte quota is refused new requests
    // until acknowledgements free them.
    h.register(100, 2, false, 0, honest_peer, now).unwrap();
    h.complete(100, 2, b("0123456789"), now);
    assert_eq!(h.source_use(&honest.source()), (1, 15));
    assert_eq!(
        h.register(100, 3, false, 0, honest_peer, now),
        Err(RegisterError::SourceBytes)
    );
    h.ack(100, 0, 2, now);
    assert_eq!(h.source_use(&honest.source()), (1, 0));
    h.register(100, 3, false, 0, honest_peer, now).unwrap();
    // Sessions that end give their quota back.
    h.sweep(now + Duration::from_secs(3600));
    h.sweep(now + Duration::from_secs(7200));
    assert_eq!(h.source_use(&flooder), (0, 0));
}
