//! The checker on 10,000 operations over 10 keys from 5 concurrent
//! processes, generated from a correct simulated register with a seeded
//! RNG (`tests/support/sim.rs`), then on harder variants: unknown
//! outcomes, one hot key, 20 processes on it. Prints the time of each
//! check; the target for the first row is under 10 s.
//!
//! ```text
//! cargo bench -p rpc-testkit --bench linearizability
//! ```
#![allow(clippy::print_stdout, clippy::unwrap_used)] // a by-hand benchmark

#[path = "../tests/support/sim.rs"]
mod sim;

use rpc_testkit::{check, Verdict};
use sim::Sim;
use std::time::Instant;

fn main() {
    let base = Sim {
        ops: 10_000,
        keys: 10,
        processes: 5,
        indeterminate: 0.0,
        fail: 0.0,
        seed: 16,
    };
    let rows = [
        ("10 keys, 5 processes", base),
        (
            "10 keys, 5 processes, 2% indeterminate, 1% failed",
            Sim {
                indeterminate: 0.02,
                fail: 0.01,
                ..base
            },
        ),
        ("1 key, 5 processes", Sim { keys: 1, ..base }),
        (
            "1 key, 5 processes, 5% indeterminate",
            Sim {
                keys: 1,
                indeterminate: 0.05,
                ..base
            },
        ),
        (
            "1 key, 20 processes",
            Sim {
                keys: 1,
                processes: 20,
                ..base
            },
        ),
        (
            "1 key, 20 processes, 2% indeterminate",
            Sim {
                keys: 1,
                processes: 20,
                indeterminate: 0.02,
                ..base
            },
        ),
    ];
    println!("checker, 10,000 operations of a correct register per row");
    let mut wrong = false;
    for (name, sim) in rows {
        let history = sim.history();
        let started = Instant::now();
        let report = check(&history).unwrap();
        let took = started.elapsed();
        let verdict = match report.verdict {
            Verdict::Linearizable => "linearizable",
            Verdict::Unknown { .. } => "unknown (budget spent)",
            _ => {
                wrong = true;
                "NOT LINEARIZABLE: a bug"
            }
        };
        println!(
            "{name:<50} {:>9.1} ms {:>10} configurations  {verdict}",
            took.as_secs_f64() * 1e3,
            report.states,
        );
    }
    if wrong {
        std::process::exit(1);
    }
}
