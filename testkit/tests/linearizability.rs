//! The checker on generated histories: those of a correct register (and of
//! a real store under concurrent threads) are linearizable, one corrupted
//! answer makes its key fail.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[path = "support/sim.rs"]
mod sim;

use rpc_testkit::{check, History, Op, Outcome, Recorder, Response, Verdict};
use sim::Sim;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

fn sim(seed: u64) -> Sim {
    Sim {
        ops: 2_000,
        keys: 4,
        processes: 5,
        indeterminate: 0.03,
        fail: 0.01,
        seed,
    }
}

#[test]
fn histories_of_a_correct_register_are_linearizable() {
    for seed in 0..5 {
        let history = sim(seed).history();
        let report = check(&history).unwrap();
        assert!(report.is_linearizable(), "seed {seed}: {report}");
        assert_eq!(report.keys, 4);
    }
}

#[test]
fn one_corrupted_read_makes_its_key_fail() {
    for seed in 0..5 {
        let history = sim(seed).history();
        // The last read that returned a value now returns one nobody wrote.
        let (at, key) = history
            .entries()
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, e)| match (&e.op, &e.outcome) {
                (Op::Read(k), Outcome::Ok(Response::Read(Some(_)))) => Some((i, *k)),
                _ => None,
            })
            .unwrap();
        let corrupted: History<u32, u64> = history
            .entries()
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, mut e)| {
                if i == at {
                    e.outcome = Outcome::Ok(Response::Read(Some(u64::MAX)));
                }
                e
            })
            .collect();
        let report = check(&corrupted).unwrap();
        let Verdict::NotLinearizable(violation) = &report.verdict else {
            panic!("seed {seed}: {report}");
        };
        assert_eq!(violation.key, key, "seed {seed}: {report}");
        assert!(
            violation.next.iter().any(|(i, _)| *i == at),
            "seed {seed}: the corrupted read #{at} is not among the next operations: {report}"
        );
    }
}

#[test]
fn a_store_under_a_lock_recorded_from_threads_is_linearizable() {
    let store: Arc<Mutex<HashMap<u8, u32>>> = Arc::default();
    let recorder: Recorder<u8, u32> = Recorder::new();
    let threads: Vec<_> = (0..5u32)
        .map(|p| {
            let (store, recorder) = (Arc::clone(&store), recorder.clone());
            std::thread::spawn(move || {
                for i in 0..400u32 {
                    let key = (i % 3) as u8;
                    let value = p * 10_000 + i;
                    match i % 3 {
                        0 => {
                            let call = recorder.invoke(p.into(), Op::Read(key));
                            let got = store.lock().unwrap().get(&key).copied();
                            call.ok(Response::Read(got));
                        }
                        1 => {
                            let call = recorder.invoke(p.into(), Op::Write(key, value));
                            store.lock().unwrap().insert(key, value);
                            call.ok(Response::Written);
                        }
                        _ => {
                            let expected = value - 1;
                            let call = recorder.invoke(p.into(), Op::Cas(key, expected, value));
                            let mut map = store.lock().unwrap();
                            let done = map.get(&key) == Some(&expected);
                            if done {
                                map.insert(key, value);
                            }
                            drop(map);
                            call.ok(Response::Cas(done));
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let report = check(&recorder.history()).unwrap();
    assert!(report.is_linearizable(), "{report}");
    assert_eq!(report.ops, 2_000);
}
