//! Histories of a correct simulated register, for the checker's tests and
//! benchmark.
//!
//! Processes (clients) take turns by time: each invokes an operation on a
//! random key, which takes 5 to 200 µs, then thinks 0 to 20 µs, so about
//! half of them overlap another. Each operation gets a linearization point
//! inside its interval (an indeterminate one, anywhere after its
//! invocation, up to three times its duration, or none at all); the
//! responses are computed by applying the operations in the order of those
//! points to one register per key. Every history is so linearizable by
//! construction.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rpc_testkit::{Entry, History, Op, Outcome, Response};
use std::collections::HashMap;
use std::time::Duration;

/// What to simulate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sim {
    pub(crate) ops: usize,
    pub(crate) keys: u32,
    pub(crate) processes: u64,
    /// Share of operations whose outcome is unknown.
    pub(crate) indeterminate: f64,
    /// Share of operations that definitely fail.
    pub(crate) fail: f64,
    pub(crate) seed: u64,
}

impl Sim {
    pub(crate) fn history(&self) -> History<u32, u64> {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut clock: Vec<u64> = (0..self.processes)
            .map(|_| rng.random_range(0..10_000))
            .collect();
        // Written values are unique; the last generated per key is what a
        // compare-and-set expects, more often than not.
        let mut next_value = 1u64;
        let mut last_written: HashMap<u32, u64> = HashMap::new();
        // (entry, linearization point if it takes effect)
        let mut ops: Vec<(Entry<u32, u64>, Option<u64>)> = Vec::with_capacity(self.ops);
        for _ in 0..self.ops {
            let p = (0..clock.len()).min_by_key(|&p| clock[p]).unwrap_or(0);
            let invoke = clock[p];
            let took = rng.random_range(5_000..200_000);
            let complete = invoke + took;
            clock[p] = complete + rng.random_range(0..20_000);
            let key = rng.random_range(0..self.keys);
            let op = match rng.random_range(0..10) {
                0..=4 => Op::Read(key),
                5..=7 => {
                    next_value += 1;
                    last_written.insert(key, next_value);
                    Op::Write(key, next_value)
                }
                _ => {
                    let expected = match last_written.get(&key) {
                        Some(&v) if rng.random_bool(0.7) => v,
                        _ => rng.random_range(0..next_value.max(1)),
                    };
                    next_value += 1;
                    Op::Cas(key, expected, next_value)
                }
            };
            let fate: f64 = rng.random();
            let (outcome, point) = if fate < self.indeterminate {
                let point = rng
                    .random_bool(0.5)
                    .then(|| invoke + rng.random_range(0..=3 * took));
                (Outcome::Indeterminate, point)
            } else if fate < self.indeterminate + self.fail {
                (Outcome::Fail, None)
            } else {
                // Filled in below, in the order of the points.
                (
                    Outcome::Ok(Response::Written),
                    Some(invoke + rng.random_range(0..=took)),
                )
            };
            let entry = Entry {
                process: p as u64,
                op,
                invoke: Duration::from_nanos(invoke),
                complete: Some(Duration::from_nanos(complete)),
                outcome,
            };
            ops.push((entry, point));
        }
        let mut order: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].1.is_some()).collect();
        order.sort_by_key(|&i| (ops[i].1, i));
        let mut store: HashMap<u32, u64> = HashMap::new();
        for i in order {
            let entry = &mut ops[i].0;
            let response = match entry.op {
                Op::Read(k) => Response::Read(store.get(&k).copied()),
                Op::Write(k, v) => {
                    store.insert(k, v);
                    Response::Written
                }
                Op::Cas(k, old, new) => {
                    let done = store.get(&k) == Some(&old);
                    if done {
                        store.insert(k, new);
                    }
                    Response::Cas(done)
                }
            };
            if entry.outcome != Outcome::Indeterminate {
                entry.outcome = Outcome::Ok(response);
            }
        }
        ops.into_iter().map(|(entry, _)| entry).collect()
    }
}
