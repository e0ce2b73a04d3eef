use super::vector::parse_vector_fast;
use super::wire::decimal;
use super::*;
use crate::clock::time_source::{ManualClock, Skew, TimeSourceConfig};
use rpc_core::status::Code;

const MS: i64 = 1_000_000;

fn time() -> (Arc<ManualClock>, Arc<TimeSource>) {
    let base = Arc::new(ManualClock::new(1_700_000_000_000 * MS));
    let ts = TimeSource::new(base.clone(), Skew::default(), TimeSourceConfig::default());
    (base, Arc::new(ts))
}

#[test]
fn decimals_from_the_wire_are_checked() {
    assert_eq!(decimal(b"0"), Some(0));
    assert_eq!(decimal(b"18446744073709551615"), Some(u64::MAX));
    assert_eq!(decimal(b"18446744073709551616"), None, "u64::MAX + 1");
    assert_eq!(decimal(b"99999999999999999999"), None);
    assert_eq!(decimal(b"000000000000000000001"), None, "21 digits");
    for bad in [&b""[..], b"+1", b"-1", b"1 ", b"1a", b"\xff"] {
        assert_eq!(decimal(bad), None, "{bad:?}");
    }
    assert_eq!("-5.3".parse::<Hlc>(), Ok(Hlc { l: -5, c: 3 }));
    assert!("1.4294967296".parse::<Hlc>().is_err(), "c over u32");
    assert!(
        "9223372036854775808.0".parse::<Hlc>().is_err(),
        "l over i64"
    );
    assert!("1.".parse::<Hlc>().is_err() && ".1".parse::<Hlc>().is_err());
}

#[test]
fn lamport_send_and_receive() {
    let (a, b) = (Lamport::new(), Lamport::new());
    let mut md = Metadata::new();
    assert_eq!(a.stamp(&mut md), 1);
    assert_eq!(&md[LAMPORT_KEY], "1");
    b.tick();
    b.tick();
    b.tick();
    assert_eq!(b.merge(&md).ok().flatten(), Some(4));
    assert_eq!(a.merge(&Metadata::new()).ok().flatten(), None);
    md.insert(LAMPORT_KEY, "-1");
    let err = b.merge(&md).err().map(|s| s.code());
    assert_eq!(err, Some(Code::InvalidArgument));
    assert_eq!(b.now(), 4, "a refused merge changes nothing");
}

#[test]
fn vector_clocks_classify_before_after_concurrent() {
    let (a, b) = (VectorClocks::new(1), VectorClocks::new(2));
    let a1 = a.tick();
    let mut md = Metadata::new();
    let a2 = a.stamp(&mut md);
    let b1 = b.tick();
    let b2 = b.merge(&md).ok().flatten().unwrap_or_default();
    assert_eq!(a1.compare(&a2), Causality::Before);
    assert_eq!(a2.compare(&b2), Causality::Before);
    assert_eq!(b2.compare(&a1), Causality::After);
    assert_eq!(a2.compare(&b1), Causality::Concurrent);
    assert_eq!(b1.compare(&a1), Causality::Concurrent);
    assert_eq!(a2.compare(&a2.clone()), Causality::Equal);
    assert_eq!(b2.to_string(), "1=2,2=2");
    assert_eq!("1=2,2=2".parse::<VectorClock>(), Ok(b2));
}

#[test]
fn vector_wire_format_is_checked() {
    for bad in ["1", "1=x", "x=1", "2=1,1=1", "1=1,1=2", "1=1,", "=1"] {
        let mut md = Metadata::new();
        md.insert(VECTOR_KEY, bad);
        let v = VectorClocks::new(1);
        let err = v.merge(&md).err().map(|s| s.code());
        assert_eq!(err, Some(Code::InvalidArgument), "{bad:?}");
    }
    assert_eq!("".parse::<VectorClock>(), Ok(VectorClock::default()));
    assert_eq!("3=0".parse::<VectorClock>(), Ok(VectorClock::default()));
}

#[test]
fn hlc_follows_physical_time_and_orders_within_it() {
    let (base, time) = time();
    let a = HybridClock::new(time.clone(), 100 * MS);
    let t0 = time.now_ns();
    let h1 = a.tick();
    let h2 = a.tick();
    assert_eq!((h1.l, h1.c), (t0, 0));
    assert_eq!((h2.l, h2.c), (t0, 1));
    // A remote clock 50 ms ahead: accepted, l jumps to it.
    let remote = Hlc {
        l: t0 + 50 * MS,
        c: 7,
    };
    let h3 = a.observe(remote).unwrap_or_default();
    assert_eq!(h3, Hlc { l: remote.l, c: 8 });
    base.advance(60 * MS);
    let h4 = a.tick();
    assert_eq!(h4.c, 0);
    assert!(h4 > h3);
}

#[test]
fn hlc_refuses_a_remote_clock_too_far_ahead() {
    let (_base, time) = time();
    let a = HybridClock::new(time.clone(), 100 * MS);
    let before = a.tick();
    let far = Hlc {
        l: time.now_ns() + 101 * MS,
        c: 0,
    };
    let mut md = Metadata::new();
    md.insert(HLC_KEY, far.to_string());
    let Err(status) = a.merge(&md) else {
        panic!("a clock 101 ms ahead was accepted");
    };
    assert_eq!(status.code(), Code::OutOfRange);
    assert!(status.message().contains(&far.to_string()), "{status}");
    // Both clocks named: the remote one, the local physical and hybrid.
    let local_physical = format!("local physical clock {}", time.now_ns());
    assert!(status.message().contains(&local_physical), "{status}");
    let local_hybrid = format!("local hybrid clock {before}");
    assert!(status.message().contains(&local_hybrid), "{status}");
    assert_eq!(a.now(), before);
    for bad in ["1", "x.1", "1.x", "1.-1"] {
        md.insert(HLC_KEY, bad);
        let err = a.merge(&md).err().map(|s| s.code());
        assert_eq!(err, Some(Code::InvalidArgument), "{bad:?}");
    }
}

#[test]
fn a_refused_bundle_merge_changes_no_clock() {
    let (_base, time) = time();
    let a = LogicalClocks::new(1, time.clone(), 10 * MS);
    let mut md = Metadata::new();
    md.insert(LAMPORT_KEY, "100");
    md.insert(VECTOR_KEY, "2=5");
    md.insert(HLC_KEY, format!("{}.0", time.now_ns() + 11 * MS));
    assert!(a.merge(&md).is_err());
    assert_eq!(a.lamport.now(), 0);
    assert_eq!(a.vector.now(), VectorClock::default());
    md.insert(HLC_KEY, format!("{}.0", time.now_ns() + 9 * MS));
    assert!(a.merge(&md).is_ok());
    assert_eq!(a.lamport.now(), 101);
    assert_eq!(a.vector.now().to_string(), "1=1,2=5");
}

#[test]
fn only_the_kinds_carried_are_written_and_read() {
    let (_base, time) = time();
    let a = LogicalClocks::new(1, time.clone(), 10 * MS);
    for (kinds, keys) in [
        (ClockKinds::LAMPORT, vec![LAMPORT_KEY]),
        (ClockKinds::VECTOR, vec![VECTOR_KEY]),
        (ClockKinds::HYBRID, vec![HLC_KEY]),
        (ClockKinds::ALL, vec![LAMPORT_KEY, VECTOR_KEY, HLC_KEY]),
    ] {
        let mut md = Metadata::new();
        a.stamp_kinds(&mut md, kinds);
        assert_eq!(md.keys().collect::<Vec<_>>(), keys, "{kinds}");
    }
    // A clock not carried is not read: its malformed entry refuses nothing
    // and the carried clock still merges.
    let b = LogicalClocks::new(2, time, 10 * MS);
    let mut md = Metadata::new();
    md.insert(LAMPORT_KEY, "41");
    md.insert(VECTOR_KEY, "not a vector");
    md.insert(HLC_KEY, "nor an hlc");
    assert_eq!(b.merge_kinds(&md, ClockKinds::LAMPORT), Ok(()));
    assert_eq!(b.lamport.now(), 42);
    assert_eq!(b.vector.now(), VectorClock::default());
    assert_eq!(
        b.merge_kinds(&md, ClockKinds::VECTOR).map_err(|s| s.code()),
        Err(Code::InvalidArgument)
    );
    assert_eq!(ClockKinds::ALL.to_string(), "lamport+vector+hybrid");
}

#[test]
fn vector_join_set_and_compare_agree_with_a_map() {
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
    let random = |rng: &mut rand::rngs::SmallRng| {
        let mut v = VectorClock::default();
        let mut m = BTreeMap::new();
        for _ in 0..rng.random_range(0..6) {
            let (id, c) = (rng.random_range(0..8u32), rng.random_range(0..4u64));
            v.set(id, c);
            if c == 0 {
                m.remove(&id);
            } else {
                m.insert(id, c);
            }
        }
        (v, m)
    };
    for _ in 0..5_000 {
        let ((mut a, mut ma), (b, mb)) = (random(&mut rng), random(&mut rng));
        assert_eq!(a.0, ma.iter().map(|(&i, &c)| (i, c)).collect::<Vec<_>>());
        let ids: Vec<u32> = ma.keys().chain(mb.keys()).copied().collect();
        let get = |m: &BTreeMap<u32, u64>, id| m.get(&id).copied().unwrap_or(0);
        let (less, greater) = (
            ids.iter().any(|&i| get(&ma, i) < get(&mb, i)),
            ids.iter().any(|&i| get(&ma, i) > get(&mb, i)),
        );
        let expected = match (less, greater) {
            (false, false) => Causality::Equal,
            (true, false) => Causality::Before,
            (false, true) => Causality::After,
            (true, true) => Causality::Concurrent,
        };
        assert_eq!(a.compare(&b), expected, "{a} vs {b}");
        assert_eq!(a.to_string().parse::<VectorClock>(), Ok(a.clone()));
        a.join(&b);
        for (&id, &c) in &mb {
            let e = ma.entry(id).or_insert(0);
            *e = (*e).max(c);
        }
        assert_eq!(a.0, ma.iter().map(|(&i, &c)| (i, c)).collect::<Vec<_>>());
    }
}

#[test]
fn the_one_pass_readers_agree_with_the_careful_ones() {
    for text in [
        "1=1",
        "1=4,3=7",
        "3=0",
        "1=18446744073709551615",
        "4294967295=1",
        "4294967296=1",
        "1=18446744073709551616",
        "1=1,",
        "=1",
        "1=",
        "1=1,1=2",
        "2=1,1=1",
        "01=2",
        "1=1;2=2",
    ] {
        let mut fast = Vec::new();
        let fast = parse_vector_fast(text.as_bytes(), &mut fast).map(|()| fast);
        let mut careful = Vec::new();
        let careful = parse_vector(text, &mut careful).map(|()| careful);
        if let Some(fast) = fast {
            assert_eq!(Ok(fast), careful, "{text}");
        } else {
            // Refused by the fast reader: the careful one decides.
            let twenty_digits = text.split([',', '=']).any(|n| n.len() == 20);
            assert!(careful.is_err() || twenty_digits, "{text}: {careful:?}");
        }
    }
    for text in [
        "5.3",
        "9223372036854775807.4294967295",
        "1700000000123456789.2",
    ] {
        let (l, c) = text.split_once('.').expect("l.c");
        assert_eq!(
            text.parse::<Hlc>(),
            Ok(Hlc {
                l: l.parse().expect("l"),
                c: c.parse().expect("c")
            })
        );
    }
    for bad in [
        "9223372036854775808.0",
        "1.4294967296",
        "1.2.3",
        "1.2x",
        "1.",
    ] {
        assert!(bad.parse::<Hlc>().is_err(), "{bad}");
    }
}
