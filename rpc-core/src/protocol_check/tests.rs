//! The configurations checked: small ones in the suite, larger ones by
//! hand (`--ignored`).

#![allow(clippy::print_stderr)] // the number of states explored is the tests' report

use super::*;

/// Two REQUEST copies per call, one PING, one duplicated message, one
/// crash and restart; no loss (leaving a message in the network for
/// ever breaks whatever losing it breaks).
fn config(calls: Vec<Kind>) -> Config {
    Config {
        calls,
        copies: 2,
        pings: 1,
        dups: 1,
        drops: 0,
        crashes: 1,
        forgets: 0,
        history: HistoryConfig::default(),
        max_states: 5_000_000,
    }
}

fn run(config: Config) -> Report {
    let name = format!("{:?}", config.calls);
    let report = explore(config);
    if let Some((broken, path)) = &report.violation {
        panic!(
            "{name}: {broken}\ncounterexample ({} steps):\n  {}",
            path.len(),
            path.join("\n  ")
        );
    }
    assert!(
        report.complete,
        "{name}: state bound reached after {} states",
        report.states
    );
    eprintln!("{name}: {} states, every property holds", report.states);
    report
}

// A first copy delayed past a crash and restart (found the engine
// checking the incarnation only on attempts after the first).
#[test]
fn rr_with_a_duplicated_copy_and_a_crash() {
    run(config(vec![Kind::Rr]));
}

// A late copy of an RRA request after its ACK, while an older call
// keeps the floor down (found the ACK forgetting that the id ran).
#[test]
fn rra_acknowledged_while_an_older_call_runs() {
    run(Config {
        dups: 0,
        crashes: 0,
        ..config(vec![Kind::Rr, Kind::Rra])
    });
}

#[test]
fn rr_and_rra_with_duplication_and_a_crash() {
    run(Config {
        copies: 1,
        ..config(vec![Kind::Rr, Kind::Rra])
    });
}

#[test]
fn asynchronous_and_one_way_with_duplication_and_a_crash() {
    run(config(vec![Kind::Async, Kind::OneWay]));
}

#[test]
fn one_way_beside_rra_with_duplication_and_a_crash() {
    run(config(vec![Kind::OneWay, Kind::Rra]));
}

#[test]
fn idempotent_beside_rr_with_duplication_and_a_crash() {
    run(Config {
        copies: 1,
        ..config(vec![Kind::Idempotent, Kind::Rr])
    });
}

// The server forgets the session under a flood of other sessions.
// Found a late network copy of a request's *first* copy, arriving after
// the session was forgotten, running a second time when the tombstone
// had been dropped early to make room for others: tombstones now stay
// their full ttl, and a flood that finds them all in use is refused.
#[test]
fn rr_calls_when_a_flood_forgets_the_session() {
    run(Config {
        copies: 1,
        crashes: 0,
        forgets: 1,
        ..config(vec![Kind::Rr, Kind::Rr])
    });
}

/// Larger configurations: minutes in release mode.
#[test]
#[ignore = "minutes in release mode: run by hand (see the module docs)"]
fn larger_configurations() {
    for c in [
        config(vec![Kind::Rr, Kind::Rra]),
        config(vec![Kind::Idempotent, Kind::Rr]),
        config(vec![Kind::Async, Kind::Rra]),
        Config {
            crashes: 0,
            forgets: 1,
            ..config(vec![Kind::Rr, Kind::Rr])
        },
        Config {
            forgets: 1,
            ..config(vec![Kind::Rra, Kind::OneWay])
        },
        Config {
            copies: 1,
            max_states: 100_000_000,
            ..config(vec![Kind::Rra, Kind::Rr, Kind::Rra])
        },
    ] {
        run(c);
    }
}
