//! Vector clocks: the value ([`VectorClock`]), how two values are
//! ordered ([`Causality`]), its wire form and the fast and careful
//! readers of it, and one node's clock ([`VectorClocks`]).

use super::wire::{leading_decimal, number, parse, push_decimal};
use super::{lock, VECTOR_KEY};
use rpc_core::{Metadata, Status};
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

/// How two events (or vector clocks) are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causality {
    /// The first happened before the second.
    Before,
    /// The first happened after the second.
    After,
    /// Neither happened before the other.
    Concurrent,
    /// The same clock (the same event).
    Equal,
}

/// A vector clock value: a counter per node id (absent = 0).
///
/// Kept as `(id, counter)` pairs sorted by id, without zero counters: a
/// vector has one entry per node of a small group and is joined and
/// written on every call and answer, where a scan of a few pairs is
/// cheaper than a tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VectorClock(pub(super) Vec<(u32, u64)>);

impl VectorClock {
    /// The counter of `id`.
    pub fn get(&self, id: u32) -> u64 {
        self.0
            .binary_search_by_key(&id, |&(i, _)| i)
            .map_or(0, |at| self.0[at].1)
    }

    /// Sets the counter of `id`.
    pub fn set(&mut self, id: u32, v: u64) {
        match (self.0.binary_search_by_key(&id, |&(i, _)| i), v) {
            (Ok(at), 0) => {
                self.0.remove(at);
            }
            (Ok(at), v) => self.0[at].1 = v,
            (Err(_), 0) => {}
            (Err(at), v) => self.0.insert(at, (id, v)),
        }
    }

    /// Raises every counter to at least `other`'s.
    pub fn join(&mut self, other: &VectorClock) {
        self.join_entries(&other.0);
    }

    /// [`VectorClock::join`] of entries sorted by id.
    fn join_entries(&mut self, entries: &[(u32, u64)]) {
        let mut from = 0;
        for &(id, v) in entries {
            // Both sorted: each search starts where the last one ended.
            match self.0[from..].binary_search_by_key(&id, |&(i, _)| i) {
                Ok(at) => {
                    let e = &mut self.0[from + at];
                    e.1 = e.1.max(v);
                    from += at + 1;
                }
                Err(at) => {
                    if v > 0 {
                        self.0.insert(from + at, (id, v));
                        from += at + 1;
                    } else {
                        from += at;
                    }
                }
            }
        }
    }

    /// Appends the wire form (see the module docs) to `out`.
    fn write_to(&self, out: &mut impl fmt::Write) -> fmt::Result {
        for (i, &(id, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.write_char(',')?;
            }
            push_decimal(out, id)?;
            out.write_char('=')?;
            push_decimal(out, v)?;
        }
        Ok(())
    }

    /// How the event stamped `self` relates to the one stamped `other`.
    pub fn compare(&self, other: &VectorClock) -> Causality {
        let (mut less, mut greater) = (false, false);
        let (mut a, mut b) = (self.0.iter().peekable(), other.0.iter().peekable());
        // A walk of both sorted lists; an id missing on one side is 0 there
        // (and present ones are never 0).
        loop {
            match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(_), None) => {
                    greater = true;
                    break;
                }
                (None, Some(_)) => {
                    less = true;
                    break;
                }
                (Some(&&(ia, va)), Some(&&(ib, vb))) => {
                    if ia < ib {
                        greater = true;
                        a.next();
                    } else if ib < ia {
                        less = true;
                        b.next();
                    } else {
                        less |= va < vb;
                        greater |= va > vb;
                        a.next();
                        b.next();
                    }
                }
            }
        }
        match (less, greater) {
            (false, false) => Causality::Equal,
            (true, false) => Causality::Before,
            (false, true) => Causality::After,
            (true, true) => Causality::Concurrent,
        }
    }
}

impl fmt::Display for VectorClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

/// Most entries a vector clock may have on the wire.
pub const MAX_VECTOR_ENTRIES: usize = 1024;

impl FromStr for VectorClock {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut entries = Vec::new();
        parse_vector(s, &mut entries)?;
        Ok(VectorClock(entries))
    }
}

/// Parses the wire form of a vector clock into `entries` (cleared first;
/// ids ascending, zero counters left out).
pub(super) fn parse_vector(s: &str, entries: &mut Vec<(u32, u64)>) -> Result<(), String> {
    entries.clear();
    let b = s.as_bytes();
    if b.is_empty() || parse_vector_fast(b, entries).is_some() {
        return Ok(());
    }
    // Something unusual or wrong: the careful reader says what.
    entries.clear();
    // One pass over the bytes (this runs on every call and answer):
    // `id=counter`, then `,` or the end, and again.
    let mut at = 0;
    let mut last = None;
    for n in 0.. {
        if n >= MAX_VECTOR_ENTRIES {
            return Err(format!("more than {MAX_VECTOR_ENTRIES} entries"));
        }
        let entry_end = b[at..]
            .iter()
            .position(|&c| c == b',')
            .map_or(b.len(), |n| at + n);
        let pair = &b[at..entry_end];
        let Some(eq) = pair.iter().position(|&c| c == b'=') else {
            return Err(format!(
                "entry {:?} is not id=counter",
                String::from_utf8_lossy(pair)
            ));
        };
        let id: u32 = number("id", &pair[..eq])?;
        let c: u64 = number("counter", &pair[eq + 1..])?;
        if last.is_some_and(|l| l >= id) {
            return Err(format!("ids not ascending at {id}"));
        }
        last = Some(id);
        if c > 0 {
            entries.push((id, c));
        }
        if entry_end == b.len() {
            break;
        }
        at = entry_end + 1;
    }
    Ok(())
}

/// [`parse_vector`] of a well-formed value in one pass over its bytes
/// (this runs on every call and answer); `None` for anything else,
/// including numbers of 20 digits, which the careful reader takes.
pub(super) fn parse_vector_fast(b: &[u8], entries: &mut Vec<(u32, u64)>) -> Option<()> {
    let mut at = 0;
    let mut last = None;
    for _ in 0..MAX_VECTOR_ENTRIES {
        let (id, next) = leading_decimal(b, at)?;
        let id = u32::try_from(id).ok()?;
        if b.get(next) != Some(&b'=') || last.is_some_and(|l| l >= id) {
            return None;
        }
        let (c, next) = leading_decimal(b, next + 1)?;
        last = Some(id);
        if c > 0 {
            entries.push((id, c));
        }
        match b.get(next) {
            None => return Some(()),
            Some(b',') => at = next + 1,
            Some(_) => return None,
        }
    }
    None
}

/// The vector clock of node `id`.
#[derive(Debug)]
pub struct VectorClocks {
    id: u32,
    v: Mutex<VectorClock>,
}

impl VectorClocks {
    /// Node `id`'s clock, all zero.
    pub fn new(id: u32) -> VectorClocks {
        VectorClocks {
            id,
            v: Mutex::new(VectorClock::default()),
        }
    }

    /// Advances this node's own entry of `v` (every event does).
    fn advance_own(&self, v: &mut VectorClock) {
        let own = v.get(self.id).saturating_add(1);
        v.set(self.id, own);
    }

    /// The current value.
    pub fn now(&self) -> VectorClock {
        lock(&self.v).clone()
    }

    /// A local event: advances the own entry; returns the new value.
    pub fn tick(&self) -> VectorClock {
        let mut v = lock(&self.v);
        self.advance_own(&mut v);
        v.clone()
    }

    /// A send event: advances and writes under [`VECTOR_KEY`].
    pub fn stamp(&self, md: &mut Metadata) -> VectorClock {
        let v = self.tick();
        md.insert(VECTOR_KEY, v.to_string());
        v
    }

    /// A send event that only writes the new value under [`VECTOR_KEY`]
    /// (straight into `md`, no copy of the vector).
    pub(super) fn stamp_into(&self, md: &mut Metadata) {
        let mut v = lock(&self.v);
        self.advance_own(&mut v);
        // Writing into the map cannot fail.
        md.insert_with(VECTOR_KEY, |w| {
            let _ = v.write_to(w);
        });
    }

    /// A receive event of parsed entries that returns nothing (no copy).
    pub(super) fn observe_entries(&self, entries: &[(u32, u64)]) {
        let mut v = lock(&self.v);
        v.join_entries(entries);
        self.advance_own(&mut v);
    }

    /// A receive event: joins the remote vector, then advances.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` when the value is malformed (see the module docs).
    pub fn merge(&self, md: &Metadata) -> Result<Option<VectorClock>, Status> {
        let Some(remote) = parse::<VectorClock>(md, VECTOR_KEY)? else {
            return Ok(None);
        };
        Ok(Some(self.observe(&remote)))
    }

    /// A receive event of a remote vector already parsed.
    pub fn observe(&self, remote: &VectorClock) -> VectorClock {
        {
            let mut v = lock(&self.v);
            v.join(remote);
        }
        self.tick()
    }
}
