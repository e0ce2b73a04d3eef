//! The properties that must hold in every reachable state.

#[allow(clippy::wildcard_imports)] // the model's parts share its imports
use super::*;

/// The properties; `Some(what is broken)`.
pub(super) fn check(s: &State, config: &Config) -> Option<String> {
    for (i, call) in s.calls.iter().enumerate() {
        if call.id == 0 {
            continue;
        }
        let runs: Vec<u64> = s
            .runs
            .iter()
            .filter(|(id, _)| *id == call.id)
            .map(|&(_, inc)| inc)
            .collect();
        match call.kind {
            Kind::Idempotent => {}
            Kind::OneWay => {
                let mut incs = runs.clone();
                incs.sort_unstable();
                incs.dedup();
                if incs.len() != runs.len() {
                    return Some(format!(
                        "one-way call {i} (id {}) ran twice in one incarnation",
                        call.id
                    ));
                }
                if call.named != 0 && runs.len() > 1 {
                    return Some(format!(
                        "one-way call {i} (id {}) named incarnation {} and ran {} times",
                        call.id,
                        call.named,
                        runs.len()
                    ));
                }
            }
            _ => {
                if runs.len() > 1 {
                    return Some(format!(
                        "call {i} (id {}, {:?}) ran {} times (incarnations {runs:?})",
                        call.id,
                        call.kind,
                        runs.len()
                    ));
                }
            }
        }
        if let Phase::Done(outcome) = call.phase {
            if outcome == Outcome::Ok && runs.is_empty() {
                return Some(format!(
                    "call {i} (id {}) reported OK but never ran",
                    call.id
                ));
            }
            if outcome.did_not_run() && !runs.is_empty() {
                return Some(format!(
                    "call {i} (id {}) reported {outcome:?} (did not run) but ran",
                    call.id
                ));
            }
        }
    }
    let size = s.history.size();
    let cap = &config.history;
    if size.completed + size.acked > cap.max_entries
        || size.bytes > cap.max_bytes
        || size.sessions > cap.max_sessions
    {
        return Some(format!("history over its caps: {size:?}"));
    }
    None
}
