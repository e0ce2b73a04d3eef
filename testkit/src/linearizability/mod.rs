//! A linearizability checker for histories of the key-value model of
//! [`history`](crate::history).
//!
//! A history is linearizable when every operation that took effect can be
//! given a point between its invocation and its completion at which it
//! happened atomically, so that the points in time order replay the
//! responses on a register per key. [`Outcome::Fail`] operations did not
//! happen and are left out. [`Outcome::Indeterminate`] ones may have
//! happened at any point after their invocation, or not at all: they have
//! no completion, and the search may leave them out (a read of unknown
//! result constrains nothing and is left out at once).
//!
//! # The algorithm
//!
//! Keys are independent registers, so a history is linearizable exactly
//! when each key's sub-history is (P-compositionality, Horn and Kroening
//! 2015); each key is checked alone, in the order keys first appear.
//!
//! Per key, the search is Wing and Gong's as improved by Lowe
//! ("Testing for linearizability", 2017) and used by Porcupine: the
//! invocations and completions sorted by time (invocations first at equal
//! times: such operations are concurrent) form a doubly linked list; the
//! search walks it from the front, tries to linearize each operation whose
//! invocation it meets (the register must allow its response), removes a
//! linearized operation's two events from the list and starts again from
//! the front; meeting a completion whose operation is not linearized yet
//! means the choices so far cannot work, and the last one is undone. Every
//! configuration reached (set of linearized operations, register value)
//! is remembered, so none is explored twice: this memoisation is what
//! makes long histories tractable. A set is remembered by a 128-bit
//! fingerprint (see `op_key`), which keeps a configuration at about 40
//! bytes whatever the length of the history. The search succeeds when
//! every operation that took effect is linearized.
//!
//! Two rules cut the choices without losing a linearization:
//! - a read that returns the current value (or a compare-and-set refused
//!   by it) and may come next is taken at once, as the only choice: it
//!   leaves the value as it is and nothing pending must precede it, so if
//!   any linearization exists, one starts with it. Concurrent reads would
//!   otherwise be tried in every order;
//! - an indeterminate operation is linearized only where it changes the
//!   value and right before an operation that needs the change (see
//!   `needs_maybe`). Such operations have no completion and stay
//!   candidates to the end; tried everywhere, they would multiply the
//!   configurations.
//!
//! A budget of configurations per key ([`Checker::max_states`]) bounds the
//! time and memory on histories whose concurrency makes the search
//! explode; past it the verdict is [`Verdict::Unknown`]. Measured on
//! 10,000 operations of a correct register (release build): over 10 keys
//! from 5 processes, 5 ms; all on one key from 5 processes, 30 ms, with 5%
//! of them indeterminate, 0.5 s; one key and 20 processes, 1 to 2 s.

//! # On failure
//!
//! The report ([`Violation`]) names the key, the longest linearizable
//! prefix found (most operations that took effect), the value it leaves
//! and the operation that wrote it, and the operations that could come
//! next: one of them (the first to complete) must take effect by its
//! completion, and none can.
//!
//! # Why not `stateright`
//!
//! `stateright::semantics::LinearizabilityTester` (0.31) was the first
//! candidate. It does not fit: it is fed online (`on_invoke`/`on_return`)
//! and derives real-time order from the order of those calls, not from
//! times; a thread may have one operation in flight, so a client that
//! carries on after an indeterminate operation needs a fresh thread id per
//! such operation; its search is a depth-first enumeration of
//! interleavings without memoisation, cloning the remaining history at
//! every step (exponential on concurrent histories, quadratic at best on
//! 10,000 operations); it does not split by key; and a failure is `None`,
//! without an explanation. Wrapping it would have cost more than the
//! search here, which the benchmark measures
//! (`cargo bench -p rpc-testkit --bench linearizability`).

mod search;

use crate::history::{Entry, History, Op, Outcome, Response};
use search::*;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;
use std::time::Duration;

/// A history that cannot be judged: it is inconsistent in itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// An operation completes before its invocation.
    #[error("operation #{index} completes before it is invoked")]
    CompletedBeforeInvoked {
        /// Its index in the history.
        index: usize,
    },
    /// An operation has a response but no completion time.
    #[error("operation #{index} has a response but no completion time")]
    NoCompletion {
        /// Its index in the history.
        index: usize,
    },
    /// A response of another kind than the operation (a read answered
    /// with a compare-and-set's boolean...).
    #[error("operation #{index}: the response does not fit the operation")]
    ResponseMismatch {
        /// Its index in the history.
        index: usize,
    },
}

/// Checks `history` with the default [`Checker`].
///
/// # Errors
/// When the history is inconsistent in itself ([`HistoryError`]).
pub fn check<K, V>(history: &History<K, V>) -> Result<Report<K, V>, HistoryError>
where
    K: Clone + Eq + Hash + fmt::Debug,
    V: Clone + Eq + Hash + fmt::Debug,
{
    Checker::default().check(history)
}

/// The linearizability checker, with its search budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checker {
    max_states: u64,
}

impl Default for Checker {
    fn default() -> Self {
        Checker {
            max_states: 5_000_000,
        }
    }
}

/// The result of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report<K, V> {
    /// The verdict.
    pub verdict: Verdict<K, V>,
    /// How many keys were checked (all of them, unless one failed).
    pub keys: usize,
    /// How many operations the history has.
    pub ops: usize,
    /// How many configurations the search went through, all keys.
    pub states: u64,
}

impl<K, V> Report<K, V> {
    /// Whether the history is linearizable.
    pub fn is_linearizable(&self) -> bool {
        matches!(self.verdict, Verdict::Linearizable)
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Display for Report<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.verdict {
            Verdict::Linearizable => write!(
                f,
                "linearizable: {} operations on {} keys ({} configurations)",
                self.ops, self.keys, self.states
            ),
            Verdict::NotLinearizable(violation) => write!(f, "not linearizable: {violation}"),
            Verdict::Unknown { key, states } => write!(
                f,
                "unknown: key {key:?} needed more than {states} configurations"
            ),
        }
    }
}

/// Whether a history is linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict<K, V> {
    /// It is.
    Linearizable,
    /// It is not; why.
    NotLinearizable(Box<Violation<K, V>>),
    /// The search gave up on this key after its budget of configurations.
    Unknown {
        /// The key.
        key: K,
        /// The budget that was spent.
        states: u64,
    },
}

/// Why a key's history is not linearizable. Operations are named by their
/// index in the history (`#12`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation<K, V> {
    /// The key.
    pub key: K,
    /// How many of the key's operations took part (failed ones and reads
    /// of unknown result are left out).
    pub key_ops: usize,
    /// The longest linearizable prefix found, in linearization order.
    pub linearized: Vec<usize>,
    /// The value after that prefix.
    pub value: Option<V>,
    /// The operation of the prefix that wrote that value.
    pub written_by: Option<(usize, Entry<K, V>)>,
    /// The operations that could come next, none of which can: the first of
    /// them must take effect by its completion.
    pub next: Vec<(usize, Entry<K, V>)>,
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Display for Violation<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 8;
        write!(
            f,
            "key {:?}: the longest linearizable prefix orders {} of its {} operations",
            self.key,
            self.linearized.len(),
            self.key_ops
        )?;
        if !self.linearized.is_empty() {
            let skipped = self.linearized.len().saturating_sub(SHOWN);
            let shown: Vec<String> = self.linearized[skipped..]
                .iter()
                .map(|i| format!("#{i}"))
                .collect();
            let dots = if skipped > 0 { "..., " } else { "" };
            write!(f, " ({dots}{})", shown.join(", "))?;
        }
        match (&self.value, &self.written_by) {
            (Some(value), Some((i, e))) => {
                write!(f, " and leaves {value:?}, written by #{i}: {e}")?;
            }
            (value, _) => write!(f, " and leaves {value:?}")?,
        }
        match self.next.first() {
            Some((i, _)) => write!(
                f,
                "; then none of these can take effect, yet #{i} must by its completion:"
            )?,
            None => f.write_str("; then nothing can take effect")?,
        }
        for (i, e) in &self.next {
            write!(f, "\n  #{i}: {e}")?;
        }
        Ok(())
    }
}

impl Checker {
    /// A checker with the default budget: 5,000,000 configurations per
    /// key (about 5 s and 200 MB at most).
    pub fn new() -> Checker {
        Checker::default()
    }

    /// Gives up on a key after `states` configurations (each is
    /// remembered in about 40 bytes; a million take about a second).
    pub fn max_states(mut self, states: u64) -> Checker {
        self.max_states = states;
        self
    }

    /// Checks `history`.
    ///
    /// # Errors
    /// When the history is inconsistent in itself ([`HistoryError`]).
    pub fn check<K, V>(&self, history: &History<K, V>) -> Result<Report<K, V>, HistoryError>
    where
        K: Clone + Eq + Hash + fmt::Debug,
        V: Clone + Eq + Hash + fmt::Debug,
    {
        let entries = history.entries();
        let mut keys: Vec<&K> = Vec::new();
        let mut by_key: HashMap<&K, Vec<usize>> = HashMap::new();
        for (index, entry) in entries.iter().enumerate() {
            validate(index, entry)?;
            let key = entry.op.key();
            by_key
                .entry(key)
                .or_insert_with(|| {
                    keys.push(key);
                    Vec::new()
                })
                .push(index);
        }
        let mut report = Report {
            verdict: Verdict::Linearizable,
            keys: 0,
            ops: entries.len(),
            states: 0,
        };
        for key in keys {
            let ops = by_key.get(key).map(Vec::as_slice).unwrap_or_default();
            report.keys += 1;
            let (verdict, states) = KeySearch::new(entries, ops).run(self.max_states);
            report.states += states;
            tracing::debug!(key = ?key, ops = ops.len(), states, "key checked");
            match verdict {
                KeyVerdict::Linearizable => {}
                KeyVerdict::Unknown => {
                    report.verdict = Verdict::Unknown {
                        key: key.clone(),
                        states,
                    };
                    return Ok(report);
                }
                KeyVerdict::Violation(v) => {
                    let violation = v.describe(key, entries);
                    report.verdict = Verdict::NotLinearizable(Box::new(violation));
                    return Ok(report);
                }
            }
        }
        Ok(report)
    }
}

fn validate<K, V>(index: usize, entry: &Entry<K, V>) -> Result<(), HistoryError> {
    if entry.complete.is_some_and(|c| c < entry.invoke) {
        return Err(HistoryError::CompletedBeforeInvoked { index });
    }
    let Outcome::Ok(response) = &entry.outcome else {
        return Ok(());
    };
    if entry.complete.is_none() {
        return Err(HistoryError::NoCompletion { index });
    }
    match (&entry.op, response) {
        (Op::Read(_), Response::Read(_))
        | (Op::Write(..), Response::Written)
        | (Op::Cas(..), Response::Cas(_)) => Ok(()),
        _ => Err(HistoryError::ResponseMismatch { index }),
    }
}

/// A value an entry names: slot 0 is a read's result, a write's value or
/// a compare-and-set's expected value, slot 1 a compare-and-set's new one.
fn value_in<K, V: Clone>(entry: &Entry<K, V>, slot: u8) -> Option<V> {
    match (&entry.op, &entry.outcome) {
        (Op::Read(_), Outcome::Ok(Response::Read(v))) => v.clone(),
        (Op::Read(_), _) => None,
        (Op::Write(_, v), _) => Some(v.clone()),
        (Op::Cas(_, old, new), _) => Some(if slot == 0 { old } else { new }.clone()),
    }
}

#[cfg(test)]
mod tests;
