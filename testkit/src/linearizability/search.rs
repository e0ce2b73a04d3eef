//! The search for one key: the history's operations on that key as
//! events and small integer values, and the depth-first search for a
//! linearization with memoised configurations (Wing & Gong with Lowe's
//! memoisation; see the module docs of `linearizability`).

#[allow(clippy::wildcard_imports)] // the checker's parts share its imports
use super::*;

/// A register value: 0 is "none", `n` the `n`th distinct value of the key.
pub(super) type Value = u32;

/// What an operation does to the register, values interned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
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
pub(super) fn needs_maybe(step: Step, before: Value) -> bool {
    !matches!(step, Step::Write(_) | Step::MaybeWrite(_)) && step.apply(before).is_none()
}

/// A fingerprint of a set of operations: the XOR of a 128-bit key per
/// operation ([`op_key`]), updated in O(1) as operations come and go, and
/// 16 bytes to remember whatever the number of operations. Two distinct
/// sets share a fingerprint with odds of 2^-128 per pair: over a billion
/// configurations, below 10^-20, far below the odds of a memory error. A
/// shared fingerprint could only hide a linearization, never invent one.
pub(super) fn op_key(op: usize) -> u128 {
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
pub(super) struct Event {
    op: u32,
    call: bool,
}

/// The search over one key's operations.
#[derive(Debug)]
pub(super) struct KeySearch {
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
pub(super) struct KeyViolation {
    key_ops: usize,
    linearized: Vec<usize>,
    value: Option<(usize, u8)>,
    written_by: Option<usize>,
    next: Vec<usize>,
}

#[derive(Debug)]
pub(super) enum KeyVerdict {
    Linearizable,
    Violation(KeyViolation),
    Unknown,
}

impl KeySearch {
    /// Prepares the search over the operations `ops` (history indices) of
    /// one key.
    pub(super) fn new<'h, K, V: Eq + Hash>(entries: &'h [Entry<K, V>], ops: &[usize]) -> KeySearch {
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
    pub(super) fn run(mut self, max_states: u64) -> (KeyVerdict, u64) {
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
    pub(super) fn describe<K: Clone, V: Clone>(
        self,
        key: &K,
        entries: &[Entry<K, V>],
    ) -> Violation<K, V> {
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
