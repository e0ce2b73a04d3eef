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

use crate::history::{Entry, History, Op, Outcome, Response};
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

/// A register value: 0 is "none", `n` the `n`th distinct value of the key.
type Value = u32;

/// What an operation does to the register, values interned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// A read that returned this.
    Read(Value),
    /// A write that took effect.
    Write(Value),
    /// A compare-and-set that replaced `.0` with `.1`.
    CasDone(Value, Value),
    /// A compare-and-set that found another value than this.
    CasRefused(Value),
    /// A write that may have taken effect.
    MaybeWrite(Value),
    /// A compare-and-set that may have taken effect.
    MaybeCas(Value, Value),
}

impl Step {
    /// The value after this step from `value`, if the step fits there. A
    /// maybe-step fits only where it changes the value: elsewhere it is the
    /// same as leaving it out.
    fn apply(self, value: Value) -> Option<Value> {
        match self {
            Step::Read(v) => (v == value).then_some(value),
            Step::Write(v) => Some(v),
            Step::CasDone(old, new) => (old == value).then_some(new),
            Step::CasRefused(old) => (old != value).then_some(value),
            Step::MaybeWrite(v) => (v != value).then_some(v),
            Step::MaybeCas(old, new) => (old == value && new != value).then_some(new),
        }
    }

    fn is_maybe(self) -> bool {
        matches!(self, Step::MaybeWrite(_) | Step::MaybeCas(..))
    }

    fn writes(self) -> bool {
        matches!(
            self,
            Step::Write(_) | Step::CasDone(..) | Step::MaybeWrite(_) | Step::MaybeCas(..)
        )
    }
}

/// Whether `step`, right after a maybe-step that changed the value from
/// `before`, needs that change: it would not fit on `before`, and it is no
/// write (which would make the change pointless).
///
/// If a key's history linearizes, it linearizes with every maybe-step so
/// followed: a maybe-step followed by a write, by another maybe-write or by
/// nothing can be left out; one followed by a step that fits without it can
/// be moved after that step (a maybe-step has no completion, and the steps
/// that fit on both values are the ones that keep the value: reads of it,
/// refused compare-and-sets); repeat. Searching only those linearizations
/// keeps the operations of unknown outcome, which stay candidates to the
/// end, from multiplying the configurations.
fn needs_maybe(step: Step, before: Value) -> bool {
    !matches!(step, Step::Write(_) | Step::MaybeWrite(_)) && step.apply(before).is_none()
}

/// A fingerprint of a set of operations: the XOR of a 128-bit key per
/// operation ([`op_key`]), updated in O(1) as operations come and go, and
/// 16 bytes to remember whatever the number of operations. Two distinct
/// sets share a fingerprint with odds of 2^-128 per pair: over a billion
/// configurations, below 10^-20, far below the odds of a memory error. A
/// shared fingerprint could only hide a linearization, never invent one.
fn op_key(op: usize) -> u128 {
    let half = |salt: u64| {
        let mut hasher = std::hash::DefaultHasher::new();
        (op, salt).hash(&mut hasher);
        std::hash::Hasher::finish(&hasher)
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

/// One event of the list: the invocation or the completion of an
/// operation (by its index among the key's operations).
#[derive(Debug, Clone, Copy)]
struct Event {
    op: u32,
    call: bool,
}

/// The search over one key's operations.
#[derive(Debug)]
struct KeySearch {
    /// History index of each operation taking part.
    index: Vec<usize>,
    steps: Vec<Step>,
    /// Whether the operation took effect for sure (it must be linearized).
    certain: Vec<bool>,
    /// Each operation's [`op_key`].
    keys: Vec<u128>,
    /// Node `0` is the head, `len - 1` the tail; the others are events.
    events: Vec<Event>,
    next: Vec<u32>,
    prev: Vec<u32>,
    /// The nodes of each operation's invocation and completion (0: none).
    call_node: Vec<u32>,
    ret_node: Vec<u32>,
    /// Where each interned value was first seen, `values[n - 1]` for
    /// value `n`: (history index, [`value_in`] slot).
    values: Vec<(usize, u8)>,
}

/// What a failed search found: operations as indices among the key's.
#[derive(Debug)]
struct KeyViolation {
    key_ops: usize,
    linearized: Vec<usize>,
    value: Option<(usize, u8)>,
    written_by: Option<usize>,
    next: Vec<usize>,
}

#[derive(Debug)]
enum KeyVerdict {
    Linearizable,
    Violation(KeyViolation),
    Unknown,
}

impl KeySearch {
    /// Prepares the search over the operations `ops` (history indices) of
    /// one key.
    fn new<'h, K, V: Eq + Hash>(entries: &'h [Entry<K, V>], ops: &[usize]) -> KeySearch {
        let mut interned: HashMap<&'h V, Value> = HashMap::new();
        let mut values = Vec::new();
        let mut intern = |v: &'h V, at: usize, slot: u8| -> Value {
            *interned.entry(v).or_insert_with(|| {
                values.push((at, slot));
                Value::try_from(values.len()).unwrap_or(Value::MAX)
            })
        };
        let mut search = KeySearch {
            index: Vec::new(),
            steps: Vec::new(),
            certain: Vec::new(),
            keys: Vec::new(),
            events: Vec::new(),
            next: Vec::new(),
            prev: Vec::new(),
            call_node: Vec::new(),
            ret_node: Vec::new(),
            values: Vec::new(),
        };
        let mut times: Vec<(Duration, bool, u32)> = Vec::new();
        for &at in ops {
            let entry = &entries[at];
            let step = match (&entry.op, &entry.outcome) {
                (_, Outcome::Fail) | (Op::Read(_), Outcome::Indeterminate) => continue,
                (Op::Read(_), Outcome::Ok(Response::Read(v))) => {
                    Step::Read(v.as_ref().map_or(0, |v| intern(v, at, 0)))
                }
                (Op::Write(_, v), Outcome::Ok(_)) => Step::Write(intern(v, at, 0)),
                (Op::Write(_, v), Outcome::Indeterminate) => Step::MaybeWrite(intern(v, at, 0)),
                (Op::Cas(_, old, new), Outcome::Ok(Response::Cas(true))) => {
                    Step::CasDone(intern(old, at, 0), intern(new, at, 1))
                }
                (Op::Cas(_, old, _), Outcome::Ok(_)) => Step::CasRefused(intern(old, at, 0)),
                (Op::Cas(_, old, new), Outcome::Indeterminate) => {
                    Step::MaybeCas(intern(old, at, 0), intern(new, at, 1))
                }
                // Ruled out by `validate`.
                (Op::Read(_), Outcome::Ok(_)) => continue,
            };
            let op = u32::try_from(search.steps.len()).unwrap_or(u32::MAX);
            let certain = matches!(entry.outcome, Outcome::Ok(_));
            times.push((entry.invoke, false, op));
            if certain {
                // `validate` made sure of a completion time.
                times.push((entry.complete.unwrap_or(Duration::MAX), true, op));
            }
            search.index.push(at);
            search.steps.push(step);
            search.certain.push(certain);
            search.keys.push(op_key(search.keys.len()));
        }
        search.values = values;
        // Invocations before completions at equal times: concurrent.
        times.sort_unstable();
        let n = search.steps.len();
        search.call_node = vec![0; n];
        search.ret_node = vec![0; n];
        search.events.push(Event { op: 0, call: false });
        for (node, &(_, ret, op)) in (1u32..).zip(&times) {
            search.events.push(Event { op, call: !ret });
            let slot = if ret {
                &mut search.ret_node
            } else {
                &mut search.call_node
            };
            slot[op as usize] = node;
        }
        search.events.push(Event { op: 0, call: false });
        let len = u32::try_from(search.events.len()).unwrap_or(u32::MAX);
        search.next = (1..=len).collect();
        search.prev = (0..len).map(|i| i.saturating_sub(1)).collect();
        search
    }

    fn tail(&self) -> u32 {
        u32::try_from(self.events.len() - 1).unwrap_or(u32::MAX)
    }

    fn unlink(&mut self, node: u32) {
        let (p, n) = (self.prev[node as usize], self.next[node as usize]);
        self.next[p as usize] = n;
        self.prev[n as usize] = p;
    }

    fn relink(&mut self, node: u32) {
        let (p, n) = (self.prev[node as usize], self.next[node as usize]);
        self.next[p as usize] = node;
        self.prev[n as usize] = node;
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call_node[op]);
        if self.ret_node[op] != 0 {
            self.unlink(self.ret_node[op]);
        }
    }

    fn unlift(&mut self, op: usize) {
        if self.ret_node[op] != 0 {
            self.relink(self.ret_node[op]);
        }
        self.relink(self.call_node[op]);
    }

    /// The first operation among the next candidates (the invocations
    /// before the first completion in the list) whose step leaves `value`
    /// as it is and fits there: a read of it, or a refused compare-and-set.
    fn free_op(&self, value: Value) -> Option<usize> {
        let mut node = self.next[0];
        while node != self.tail() {
            let event = self.events[node as usize];
            if !event.call {
                return None;
            }
            let op = event.op as usize;
            if self.certain[op]
                && matches!(self.steps[op], Step::Read(_) | Step::CasRefused(_))
                && self.steps[op].apply(value).is_some()
            {
                return Some(op);
            }
            node = self.next[node as usize];
        }
        None
    }

    /// The candidates at the configuration where the search got stuck on
    /// the completion `entry` (the end when `None`): the operation it
    /// completes first, then the other invocations before it.
    fn stuck_at(&self, entry: u32, completes: Option<usize>) -> Vec<usize> {
        let mut next: Vec<usize> = completes.into_iter().collect();
        let mut node = self.next[0];
        while node != entry {
            let event = self.events[node as usize];
            if event.call && Some(event.op as usize) != completes {
                next.push(event.op as usize);
            }
            node = self.next[node as usize];
        }
        next
    }

    /// Runs the search; the verdict and the number of configurations.
    fn run(mut self, max_states: u64) -> (KeyVerdict, u64) {
        let tail = self.tail();
        let mut left = self.certain.iter().filter(|&&c| c).count();
        let total = left;
        // The configuration: the linearized operations, the value, and
        // whether the last linearized operation is a maybe-one.
        let mut linearized: u128 = 0;
        let mut value: Value = 0;
        let mut after_maybe = false;
        let mut seen: HashSet<(u128, Value, bool)> = HashSet::new();
        // Per linearized operation: the value and flag before it, and
        // whether it was forced (no alternative to try when it is undone).
        let mut stack: Vec<(usize, Value, bool, bool)> = Vec::new();
        // The deepest configuration (most certain operations linearized),
        // whether the search is still at it, and where it got stuck.
        let mut best: Vec<usize> = Vec::new();
        let mut best_done = 0;
        let mut at_best = true;
        let mut stuck: Option<Vec<usize>> = None;
        let mut states = 0u64;
        let mut entry = self.next[0];
        let mut fresh = true;
        while left > 0 {
            // What to try: a free operation when entering a configuration,
            // else the invocation at `entry`; `None`: undo the last choice.
            let mut forced = false;
            let candidate = if fresh {
                fresh = false;
                entry = self.next[0];
                // Taking a free operation at once loses nothing: it leaves
                // the value as it is, and no pending operation has to come
                // before it. So it is the only choice here.
                match self.free_op(value).filter(|_| !after_maybe) {
                    Some(op) => {
                        forced = true;
                        Some(op)
                    }
                    None => continue,
                }
            } else if entry != tail && self.events[entry as usize].call {
                Some(self.events[entry as usize].op as usize)
            } else {
                // A completion (or the end): its operation cannot wait.
                if at_best && stuck.is_none() {
                    let completes =
                        (entry != tail).then(|| self.events[entry as usize].op as usize);
                    stuck = Some(self.stuck_at(entry, completes));
                }
                None
            };
            if let Some(op) = candidate {
                let step = self.steps[op];
                // Only linearizations where a maybe-step is followed by a
                // step that needs it are searched (see `needs_maybe`).
                let fits = match stack.last() {
                    Some(&(_, before, ..)) if after_maybe && !needs_maybe(step, before) => None,
                    _ => step.apply(value),
                };
                if let Some(after) = fits {
                    if seen.insert((linearized ^ self.keys[op], after, step.is_maybe())) {
                        linearized ^= self.keys[op];
                        states += 1;
                        if states > max_states {
                            return (KeyVerdict::Unknown, states);
                        }
                        stack.push((op, value, after_maybe, forced));
                        value = after;
                        after_maybe = step.is_maybe();
                        self.lift(op);
                        if self.certain[op] {
                            left -= 1;
                        }
                        if total - left > best_done {
                            best_done = total - left;
                            best = stack.iter().map(|&(op, ..)| op).collect();
                            at_best = true;
                            stuck = None;
                        }
                        fresh = true;
                        continue;
                    }
                }
                if !forced {
                    entry = self.next[entry as usize];
                    continue;
                }
                // A forced step seen before failed then: so does this
                // configuration.
            }
            // Undo choices up to the last one that has an alternative.
            loop {
                let Some((op, before, before_maybe, was_forced)) = stack.pop() else {
                    let violation = self.violation(best, stuck.unwrap_or_default());
                    return (KeyVerdict::Violation(violation), states);
                };
                at_best = false;
                value = before;
                after_maybe = before_maybe;
                linearized ^= self.keys[op];
                self.unlift(op);
                if self.certain[op] {
                    left += 1;
                }
                if !was_forced {
                    entry = self.next[self.call_node[op] as usize];
                    break;
                }
            }
        }
        (KeyVerdict::Linearizable, states)
    }

    /// The report of a failed search, from the deepest configuration found
    /// (`best`, in linearization order) and the candidates there.
    fn violation(&self, best: Vec<usize>, next: Vec<usize>) -> KeyViolation {
        let written_by = best
            .iter()
            .rev()
            .find(|&&op| self.steps[op].writes())
            .copied();
        let value = best
            .iter()
            .fold(0, |v, &op| self.steps[op].apply(v).unwrap_or(v));
        let to_history = |ops: Vec<usize>| ops.into_iter().map(|op| self.index[op]).collect();
        KeyViolation {
            key_ops: self.steps.len(),
            value: (value != 0).then(|| self.values[value as usize - 1]),
            written_by: written_by.map(|op| self.index[op]),
            linearized: to_history(best),
            next: to_history(next),
        }
    }
}

impl KeyViolation {
    /// The report, with values and entries taken from the history.
    fn describe<K: Clone, V: Clone>(self, key: &K, entries: &[Entry<K, V>]) -> Violation<K, V> {
        let entry = |i: usize| (i, entries[i].clone());
        Violation {
            key: key.clone(),
            key_ops: self.key_ops,
            linearized: self.linearized,
            value: self
                .value
                .and_then(|(at, slot)| value_in(&entries[at], slot)),
            written_by: self.written_by.map(entry),
            next: self.next.into_iter().map(entry).collect(),
        }
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
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    type H = History<&'static str, u32>;

    /// Times in milliseconds.
    fn ms(t: u64) -> Duration {
        Duration::from_millis(t)
    }

    fn done(
        h: &mut H,
        p: u64,
        op: Op<&'static str, u32>,
        at: (u64, u64),
        r: Response<u32>,
    ) -> usize {
        h.push(Entry {
            process: p,
            op,
            invoke: ms(at.0),
            complete: Some(ms(at.1)),
            outcome: Outcome::Ok(r),
        })
    }

    fn unsure(
        h: &mut H,
        p: u64,
        op: Op<&'static str, u32>,
        at: (u64, u64),
        outcome: Outcome<u32>,
    ) -> usize {
        h.push(Entry {
            process: p,
            op,
            invoke: ms(at.0),
            complete: Some(ms(at.1)),
            outcome,
        })
    }

    fn read(v: Option<u32>) -> Response<u32> {
        Response::Read(v)
    }

    fn verdict(h: &H) -> Verdict<&'static str, u32> {
        check(h).unwrap().verdict
    }

    fn violation(h: &H) -> Violation<&'static str, u32> {
        match verdict(h) {
            Verdict::NotLinearizable(v) => *v,
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn sequential_and_concurrent_histories_that_linearize() {
        let mut h = H::new();
        assert!(check(&h).unwrap().is_linearizable());
        done(&mut h, 1, Op::Read("x"), (0, 1), read(None));
        done(&mut h, 1, Op::Write("x", 1), (2, 3), Response::Written);
        done(&mut h, 2, Op::Read("x"), (4, 5), read(Some(1)));
        assert!(check(&h).unwrap().is_linearizable());

        // A read concurrent with a write sees either value; once one
        // client saw the new value, no later read sees the old one.
        let mut h = H::new();
        done(&mut h, 1, Op::Write("x", 1), (0, 10), Response::Written);
        done(&mut h, 2, Op::Read("x"), (1, 2), read(None));
        done(&mut h, 3, Op::Read("x"), (3, 4), read(Some(1)));
        done(&mut h, 2, Op::Read("x"), (5, 6), read(Some(1)));
        assert!(check(&h).unwrap().is_linearizable());

        // Concurrent writes take effect in either order.
        let mut h = H::new();
        done(&mut h, 1, Op::Write("x", 1), (0, 10), Response::Written);
        done(&mut h, 2, Op::Write("x", 2), (0, 10), Response::Written);
        done(&mut h, 3, Op::Read("x"), (11, 12), read(Some(1)));
        assert!(check(&h).unwrap().is_linearizable());

        // Compare-and-set: one of two concurrent ones from 1 wins.
        let mut h = H::new();
        done(&mut h, 1, Op::Write("x", 1), (0, 1), Response::Written);
        done(&mut h, 1, Op::Cas("x", 1, 2), (2, 5), Response::Cas(true));
        done(&mut h, 2, Op::Cas("x", 1, 3), (3, 6), Response::Cas(false));
        done(&mut h, 3, Op::Read("x"), (7, 8), read(Some(2)));
        assert!(check(&h).unwrap().is_linearizable());

        // Equal times cannot order: a completion and an invocation at the
        // same instant are concurrent.
        let mut h = H::new();
        done(&mut h, 1, Op::Write("x", 1), (0, 5), Response::Written);
        done(&mut h, 2, Op::Read("x"), (5, 6), read(None));
        assert!(check(&h).unwrap().is_linearizable());
    }

    #[test]
    fn a_stale_read_is_not_linearizable_and_the_report_says_why() {
        let mut h = H::new();
        let w1 = done(&mut h, 1, Op::Write("x", 1), (0, 1), Response::Written);
        let w2 = done(&mut h, 2, Op::Write("x", 2), (2, 3), Response::Written);
        let r = done(&mut h, 3, Op::Read("x"), (4, 5), read(Some(1)));
        let v = violation(&h);
        assert_eq!(v.key, "x");
        assert_eq!(v.key_ops, 3);
        assert_eq!(v.linearized, [w1, w2]);
        assert_eq!(v.value, Some(2));
        assert_eq!(v.written_by.as_ref().map(|(i, _)| *i), Some(w2));
        assert_eq!(v.next.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [r]);
        let text = check(&h).unwrap().to_string();
        assert!(text.contains("not linearizable: key \"x\""), "{text}");
        assert!(
            text.contains("leaves 2, written by #1: p2 write(\"x\", 2) -> ok"),
            "{text}"
        );
        assert!(text.contains("#2: p3 read(\"x\") -> 1"), "{text}");
    }

    #[test]
    fn a_lost_write_is_not_linearizable() {
        let mut h = H::new();
        let w = done(&mut h, 1, Op::Write("x", 1), (0, 1), Response::Written);
        done(&mut h, 2, Op::Read("x"), (2, 3), read(Some(1)));
        let lost = done(&mut h, 2, Op::Read("x"), (4, 5), read(None));
        let v = violation(&h);
        assert_eq!(v.value, Some(1));
        assert_eq!(v.written_by.map(|(i, _)| i), Some(w));
        assert_eq!(v.next[0].0, lost);

        // A write overwritten, then seen again.
        let mut h = H::new();
        done(&mut h, 1, Op::Write("x", 1), (0, 1), Response::Written);
        done(&mut h, 2, Op::Write("x", 2), (0, 2), Response::Written);
        done(&mut h, 3, Op::Read("x"), (3, 4), read(Some(2)));
        done(&mut h, 3, Op::Read("x"), (5, 6), read(Some(1)));
        assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
    }

    #[test]
    fn cas_anomalies_are_not_linearizable() {
        // Two compare-and-sets from the same value both succeed.
        let mut h = H::new();
        done(&mut h, 1, Op::Write("x", 0), (0, 1), Response::Written);
        let a = done(&mut h, 1, Op::Cas("x", 0, 1), (2, 5), Response::Cas(true));
        let b = done(&mut h, 2, Op::Cas("x", 0, 2), (3, 6), Response::Cas(false));
        assert!(check(&h).unwrap().is_linearizable());
        h = h
            .entries()
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, mut e)| {
                if i == b {
                    e.outcome = Outcome::Ok(Response::Cas(true));
                }
                e
            })
            .collect();
        let v = violation(&h);
        assert_eq!(v.linearized.len(), 2);
        let mut next: Vec<_> = v.next.iter().map(|(i, _)| *i).collect();
        next.sort_unstable();
        assert!(next == [b] || next == [a], "{next:?}");

        // A refusal while the value was the expected one.
        let mut h = H::new();
        done(&mut h, 1, Op::Write("x", 1), (0, 1), Response::Written);
        let refused = done(&mut h, 2, Op::Cas("x", 1, 2), (2, 3), Response::Cas(false));
        assert_eq!(violation(&h).next[0].0, refused);

        // A success on an absent key.
        let mut h = H::new();
        done(&mut h, 1, Op::Cas("x", 1, 2), (0, 1), Response::Cas(true));
        assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
    }

    #[test]
    fn an_indeterminate_write_can_explain_a_read() {
        // Only the indeterminate write explains the 2.
        let mut h = H::new();
        done(&mut h, 1, Op::Write("x", 1), (0, 1), Response::Written);
        let maybe = unsure(&mut h, 2, Op::Write("x", 2), (2, 3), Outcome::Indeterminate);
        done(&mut h, 3, Op::Read("x"), (10, 11), read(Some(2)));
        assert!(check(&h).unwrap().is_linearizable());
        // As a failure (it did not happen) it does not.
        let mut failed = h.clone();
        failed = failed
            .entries()
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, mut e)| {
                if i == maybe {
                    e.outcome = Outcome::Fail;
                }
                e
            })
            .collect();
        assert!(matches!(verdict(&failed), Verdict::NotLinearizable(_)));

        // It may take effect after its client gave up...
        let mut h = H::new();
        done(&mut h, 1, Op::Write("x", 1), (0, 1), Response::Written);
        unsure(&mut h, 2, Op::Write("x", 2), (2, 3), Outcome::Indeterminate);
        done(&mut h, 3, Op::Read("x"), (4, 5), read(Some(1)));
        done(&mut h, 3, Op::Read("x"), (6, 7), read(Some(2)));
        assert!(check(&h).unwrap().is_linearizable());
        // ...or never, and it may still be pending.
        let mut h = H::new();
        done(&mut h, 1, Op::Write("x", 1), (0, 1), Response::Written);
        h.push(Entry {
            process: 2,
            op: Op::Write("x", 2),
            invoke: ms(2),
            complete: None,
            outcome: Outcome::Indeterminate,
        });
        done(&mut h, 3, Op::Read("x"), (4, 5), read(Some(1)));
        done(&mut h, 3, Op::Read("x"), (8, 9), read(Some(1)));
        assert!(check(&h).unwrap().is_linearizable());

        // An indeterminate compare-and-set too, and a refusal explained by
        // an indeterminate write.
        let mut h = H::new();
        done(&mut h, 1, Op::Write("x", 1), (0, 1), Response::Written);
        unsure(
            &mut h,
            2,
            Op::Cas("x", 1, 5),
            (2, 3),
            Outcome::Indeterminate,
        );
        done(&mut h, 3, Op::Cas("x", 1, 6), (4, 5), Response::Cas(false));
        done(&mut h, 3, Op::Read("x"), (6, 7), read(Some(5)));
        assert!(check(&h).unwrap().is_linearizable());
    }

    #[test]
    fn an_indeterminate_operation_cannot_save_these() {
        // Invoked after the read that needs it completed.
        let mut h = H::new();
        done(&mut h, 1, Op::Write("x", 1), (0, 1), Response::Written);
        let r = done(&mut h, 3, Op::Read("x"), (2, 3), read(Some(2)));
        unsure(&mut h, 2, Op::Write("x", 2), (5, 6), Outcome::Indeterminate);
        assert_eq!(violation(&h).next[0].0, r);

        // Needed twice: it takes effect at most once.
        let mut h = H::new();
        done(&mut h, 1, Op::Write("x", 1), (0, 1), Response::Written);
        unsure(
            &mut h,
            2,
            Op::Cas("x", 1, 2),
            (2, 3),
            Outcome::Indeterminate,
        );
        done(&mut h, 3, Op::Read("x"), (4, 5), read(Some(2)));
        done(&mut h, 3, Op::Read("x"), (6, 7), read(Some(1)));
        done(&mut h, 3, Op::Read("x"), (8, 9), read(Some(2)));
        assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));

        // A compare-and-set whose expected value was never there.
        let mut h = H::new();
        done(&mut h, 1, Op::Write("x", 1), (0, 1), Response::Written);
        unsure(
            &mut h,
            2,
            Op::Cas("x", 7, 2),
            (2, 3),
            Outcome::Indeterminate,
        );
        done(&mut h, 3, Op::Read("x"), (4, 5), read(Some(2)));
        assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));

        // A read of unknown result explains nothing.
        let mut h = H::new();
        done(&mut h, 1, Op::Write("x", 1), (0, 1), Response::Written);
        unsure(&mut h, 2, Op::Read("x"), (2, 3), Outcome::Indeterminate);
        done(&mut h, 3, Op::Read("x"), (4, 5), read(None));
        assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
    }

    #[test]
    fn keys_are_checked_apart_and_the_failing_one_is_named() {
        let mut h = H::new();
        done(&mut h, 1, Op::Write("x", 1), (0, 10), Response::Written);
        done(&mut h, 2, Op::Write("y", 1), (0, 1), Response::Written);
        done(&mut h, 2, Op::Read("x"), (2, 3), read(Some(1)));
        done(&mut h, 3, Op::Read("y"), (2, 3), read(Some(1)));
        // Across keys the real-time order is the same as within one.
        done(&mut h, 1, Op::Read("y"), (11, 12), read(Some(1)));
        let report = check(&h).unwrap();
        assert!(report.is_linearizable());
        assert_eq!((report.keys, report.ops), (2, 5));

        done(&mut h, 3, Op::Read("y"), (13, 14), read(None));
        let v = violation(&h);
        assert_eq!(v.key, "y");
        assert_eq!(v.key_ops, 4);
    }

    #[test]
    fn inconsistent_histories_are_errors() {
        let mut h = H::new();
        done(&mut h, 1, Op::Write("x", 1), (5, 4), Response::Written);
        assert_eq!(
            check(&h),
            Err(HistoryError::CompletedBeforeInvoked { index: 0 })
        );
        let mut h = H::new();
        done(&mut h, 1, Op::Read("x"), (0, 1), read(None));
        done(&mut h, 1, Op::Read("x"), (2, 3), Response::Cas(true));
        assert_eq!(check(&h), Err(HistoryError::ResponseMismatch { index: 1 }));
        let mut h = H::new();
        h.push(Entry {
            process: 1,
            op: Op::Write("x", 1),
            invoke: ms(0),
            complete: None,
            outcome: Outcome::Ok(Response::Written),
        });
        assert_eq!(check(&h), Err(HistoryError::NoCompletion { index: 0 }));
    }

    #[test]
    fn the_search_gives_up_after_its_budget() {
        let mut h = H::new();
        for p in 0..8 {
            done(
                &mut h,
                p,
                Op::Write("x", p as u32),
                (0, 10),
                Response::Written,
            );
        }
        done(&mut h, 9, Op::Read("x"), (11, 12), read(Some(99)));
        assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
        let report = Checker::new().max_states(10).check(&h).unwrap();
        assert_eq!(
            report.verdict,
            Verdict::Unknown {
                key: "x",
                states: 11
            }
        );
        assert!(report.to_string().starts_with("unknown: key \"x\""));
    }
}
