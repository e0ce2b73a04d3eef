//! Histories of operations on a key-value store, as clients saw them.
//!
//! A [`Recorder`] is shared by the clients of a test (it is `Clone`, `Send`
//! and `Sync`): a client calls [`Recorder::invoke`] just before sending a
//! request and completes the returned [`Call`] just after the answer (or
//! its absence) is known. Both times come from one monotonic clock, so the
//! history keeps the real-time order of operations across clients.
//! [`Recorder::history`] takes the [`History`] that
//! [`check`](crate::linearizability::check) judges.
//!
//! The model: each key holds at most one value, absent at first.
//! [`Op::Read`] returns it (or `None`), [`Op::Write`] replaces it,
//! [`Op::Cas`] replaces it only when it equals the expected value and says
//! whether it did. An operation's [`Outcome`] is what the client knows:
//! it took effect with this [`Response`], it definitely did not
//! ([`Outcome::Fail`]), or it may or may not have
//! ([`Outcome::Indeterminate`]: a timeout, a lost connection, "outcome
//! unknown").

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// An operation on one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op<K, V> {
    /// Reads the key's value.
    Read(K),
    /// Sets the key's value.
    Write(K, V),
    /// Compare and set: `Cas(key, expected, new)` sets `new` when the value
    /// is `expected`.
    Cas(K, V, V),
}

impl<K, V> Op<K, V> {
    /// The key the operation is on.
    pub fn key(&self) -> &K {
        match self {
            Op::Read(key) | Op::Write(key, _) | Op::Cas(key, _, _) => key,
        }
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Display for Op<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Read(k) => write!(f, "read({k:?})"),
            Op::Write(k, v) => write!(f, "write({k:?}, {v:?})"),
            Op::Cas(k, old, new) => write!(f, "cas({k:?}, {old:?} -> {new:?})"),
        }
    }
}

/// What an operation that took effect returned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Response<V> {
    /// A read's value (`None`: the key has none).
    Read(Option<V>),
    /// A write was done.
    Written,
    /// Whether a compare-and-set replaced the value.
    Cas(bool),
}

/// What the client knows about an operation's effect.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome<V> {
    /// It took effect (between invocation and completion) and returned
    /// this.
    Ok(Response<V>),
    /// It definitely did not take effect.
    Fail,
    /// It may or may not have taken effect, at any time after its
    /// invocation (even after the client gave up).
    Indeterminate,
}

impl<V: fmt::Debug> fmt::Display for Outcome<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok(Response::Read(Some(v))) => write!(f, "{v:?}"),
            Outcome::Ok(Response::Read(None)) => f.write_str("none"),
            Outcome::Ok(Response::Written) => f.write_str("ok"),
            Outcome::Ok(Response::Cas(done)) => write!(f, "{done}"),
            Outcome::Fail => f.write_str("failed"),
            Outcome::Indeterminate => f.write_str("indeterminate"),
        }
    }
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry<K, V> {
    /// The client (process) that made it; a client makes one operation at
    /// a time.
    pub process: u64,
    /// The operation.
    pub op: Op<K, V>,
    /// When it was invoked, on the recorder's clock.
    pub invoke: Duration,
    /// When the client learned its outcome; `None` while it is pending
    /// (then the outcome is [`Outcome::Indeterminate`]).
    pub complete: Option<Duration>,
    /// What the client knows of its effect.
    pub outcome: Outcome<V>,
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Display for Entry<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p{} {} -> {} [{:?}, ",
            self.process, self.op, self.outcome, self.invoke
        )?;
        match self.complete {
            Some(at) => write!(f, "{at:?}]"),
            None => f.write_str("pending]"),
        }
    }
}

/// A history: operations in invocation order when recorded, in any order
/// when built by hand (the checker orders them by time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History<K, V> {
    entries: Vec<Entry<K, V>>,
}

impl<K, V> Default for History<K, V> {
    fn default() -> Self {
        History {
            entries: Vec::new(),
        }
    }
}

impl<K, V> History<K, V> {
    /// An empty history.
    pub fn new() -> Self {
        History::default()
    }

    /// Adds an operation; returns its index.
    pub fn push(&mut self, entry: Entry<K, V>) -> usize {
        self.entries.push(entry);
        self.entries.len() - 1
    }

    /// The operations; an operation's index here is its number in the
    /// checker's reports.
    pub fn entries(&self) -> &[Entry<K, V>] {
        &self.entries
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no operation.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<K, V> FromIterator<Entry<K, V>> for History<K, V> {
    fn from_iter<I: IntoIterator<Item = Entry<K, V>>>(iter: I) -> Self {
        History {
            entries: iter.into_iter().collect(),
        }
    }
}

/// Records the operations of many clients (tasks, threads) into one
/// history; cheap to clone, all clones record into the same history.
#[derive(Debug)]
pub struct Recorder<K, V> {
    inner: Arc<Shared<K, V>>,
}

#[derive(Debug)]
struct Shared<K, V> {
    epoch: Instant,
    entries: Mutex<Vec<Entry<K, V>>>,
}

impl<K, V> Clone for Recorder<K, V> {
    fn clone(&self) -> Self {
        Recorder {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, V> Default for Recorder<K, V> {
    fn default() -> Self {
        Recorder {
            inner: Arc::new(Shared {
                epoch: Instant::now(),
                entries: Mutex::new(Vec::new()),
            }),
        }
    }
}

impl<K: Clone, V: Clone> Recorder<K, V> {
    /// A recorder whose clock starts now.
    pub fn new() -> Self {
        Recorder::default()
    }

    /// The time on the recorder's clock.
    pub fn now(&self) -> Duration {
        self.inner.epoch.elapsed()
    }

    /// Records that `process` invokes `op` now; complete the returned
    /// [`Call`] when its outcome is known. A call dropped without being
    /// completed is recorded as [`Outcome::Indeterminate`] (a cancelled
    /// task cannot know whether its request took effect).
    pub fn invoke(&self, process: u64, op: Op<K, V>) -> Call<K, V> {
        let mut entries = self.lock();
        let invoke = self.now();
        entries.push(Entry {
            process,
            op,
            invoke,
            complete: None,
            outcome: Outcome::Indeterminate,
        });
        Call {
            recorder: self.clone(),
            index: entries.len() - 1,
            done: false,
        }
    }

    /// The history so far; calls not completed yet appear as pending and
    /// indeterminate.
    pub fn history(&self) -> History<K, V> {
        History {
            entries: self.lock().clone(),
        }
    }

    fn complete(&self, index: usize, outcome: Outcome<V>) {
        let mut entries = self.lock();
        let now = self.now();
        if let Some(entry) = entries.get_mut(index) {
            entry.complete = Some(now);
            entry.outcome = outcome;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry<K, V>>> {
        // A panic elsewhere leaves the entries whole: each update is one
        // assignment.
        self.inner
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// An operation in progress, from [`Recorder::invoke`]; completing it
/// records the completion time and outcome.
#[derive(Debug)]
#[must_use = "a call dropped at once is recorded as indeterminate"]
pub struct Call<K: Clone, V: Clone> {
    recorder: Recorder<K, V>,
    index: usize,
    done: bool,
}

impl<K: Clone, V: Clone> Call<K, V> {
    /// The operation took effect and returned `response`.
    pub fn ok(self, response: Response<V>) {
        self.complete(Outcome::Ok(response));
    }

    /// The operation definitely did not take effect.
    pub fn fail(self) {
        self.complete(Outcome::Fail);
    }

    /// The operation may or may not have taken effect.
    pub fn indeterminate(self) {
        self.complete(Outcome::Indeterminate);
    }

    /// Completes the operation with `outcome`.
    pub fn complete(mut self, outcome: Outcome<V>) {
        self.done = true;
        self.recorder.complete(self.index, outcome);
    }
}

impl<K: Clone, V: Clone> Drop for Call<K, V> {
    fn drop(&mut self) {
        if !self.done {
            self.recorder.complete(self.index, Outcome::Indeterminate);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_from_many_threads_in_real_time_order() {
        let recorder: Recorder<&str, u32> = Recorder::new();
        let threads: Vec<_> = (0..4u32)
            .map(|p| {
                let recorder = recorder.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        let call = recorder.invoke(u64::from(p), Op::Write("k", p * 1000 + i));
                        call.ok(Response::Written);
                    }
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
        let history = recorder.history();
        assert_eq!(history.len(), 400);
        for (i, e) in history.entries().iter().enumerate() {
            assert!(e.complete.is_some_and(|c| c >= e.invoke), "entry {i}: {e}");
            assert_eq!(e.outcome, Outcome::Ok(Response::Written));
        }
        // Each process's operations follow each other in time.
        for p in 0..4 {
            let mine: Vec<_> = history
                .entries()
                .iter()
                .filter(|e| e.process == p)
                .collect();
            for w in mine.windows(2) {
                assert!(w[0].complete.is_some_and(|c| c <= w[1].invoke));
            }
        }
    }

    #[test]
    fn a_dropped_call_is_indeterminate_and_a_pending_one_has_no_completion() {
        let recorder: Recorder<&str, u32> = Recorder::new();
        drop(recorder.invoke(1, Op::Write("k", 1)));
        let pending = recorder.invoke(2, Op::Read("k"));
        recorder.invoke(3, Op::Cas("k", 1, 2)).fail();
        let h = recorder.history();
        assert_eq!(h.entries()[0].outcome, Outcome::Indeterminate);
        assert!(h.entries()[0].complete.is_some());
        assert_eq!(h.entries()[1].outcome, Outcome::Indeterminate);
        assert_eq!(h.entries()[1].complete, None);
        assert_eq!(h.entries()[2].outcome, Outcome::Fail);
        pending.ok(Response::Read(None));
        assert_eq!(
            recorder.history().entries()[1].outcome,
            Outcome::Ok(Response::Read(None))
        );
    }
}
