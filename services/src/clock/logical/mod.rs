//! Logical clocks: Lamport, vector and hybrid (HLC), carried in call
//! metadata.
//!
//! Each clock has two functions for the wire: `stamp` (a send event:
//! advance, then write the clock into outgoing metadata) and `merge` (a
//! receive event: read the remote clock from incoming metadata, advance
//! past it). `merge` rejects malformed metadata with `INVALID_ARGUMENT`
//! and changes nothing then; metadata without the clock's key is not an
//! event of that clock (`Ok(None)`).
//!
//! # Metadata keys
//!
//! | key | value | example |
//! |---|---|---|
//! | [`LAMPORT_KEY`] `clock-lamport` | the counter, decimal `u64` | `42` |
//! | [`VECTOR_KEY`] `clock-vector` | `id=counter` pairs, `,`-separated, ids `u32` ascending, counters `u64`; zero entries may be left out; empty = all zero | `1=4,3=7` |
//! | [`HLC_KEY`] `clock-hlc` | `<l>.<c>`: `l` the physical part in ns since the Unix epoch (decimal `i64`), `c` the logical part (decimal `u32`) | `1700000000123456789.2` |
//!
//! # Wiring
//!
//! [`ClockInterceptor`] carries the clocks on every call and answer, as a
//! server interceptor (merge the request's clocks before the handler,
//! refusing the call when they are malformed or too far ahead; stamp the
//! answer's metadata after it) and a client interceptor (stamp each
//! request; merge each answer's clocks):
//!
//! ```no_run
//! # async fn f(clocks: std::sync::Arc<rpc_services::clock::logical::LogicalClocks>, client: rpc_core::Client) {
//! use rpc_services::clock::logical::ClockInterceptor;
//! let interceptor = ClockInterceptor::new(clocks);
//! let server = rpc_core::server::Server::builder().intercept(interceptor.clone());
//! let client = client.intercepted(interceptor);
//! # let _ = (server, client); }
//! ```
//!
//! It carries all three clocks unless told otherwise: a service that needs
//! one clock carries only that one
//! (`ClockInterceptor::new(clocks).only(ClockKinds::HYBRID)`), which costs
//! a third of the metadata. Both sides of a call should carry the same
//! kinds: a clock a side does not carry is neither written nor read by it.

use super::time_source::TimeSource;
use rpc_core::call::Invocation;
use rpc_core::intercept::{
    ClientInterceptor, ClientOutcome, Completed, Interceptor, InvocationInfo,
};
use rpc_core::{CallContext, Metadata, Status};
use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Metadata key of the Lamport clock.
pub const LAMPORT_KEY: &str = "clock-lamport";
/// Metadata key of the vector clock.
pub const VECTOR_KEY: &str = "clock-vector";
/// Metadata key of the hybrid logical clock.
pub const HLC_KEY: &str = "clock-hlc";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The clocks' states are plain values replaced whole.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

thread_local! {
    /// Scratch space of [`LogicalClocks::merge`] (it runs on every call and
    /// answer): the entries of a parsed vector.
    static SCRATCH: RefCell<Vec<(u32, u64)>> = const { RefCell::new(Vec::new()) };
}

/// Appends `v` in decimal.
fn push_decimal(out: &mut impl fmt::Write, v: impl itoa::Integer) -> fmt::Result {
    out.write_str(itoa::Buffer::new().format(v))
}

/// A decimal without sign (digits only, at least one), if it fits.
fn decimal(digits: &[u8]) -> Option<u64> {
    // 19 digits never overflow a u64; only a 20th needs checking.
    let (head, last) = match digits.len() {
        0 | 21.. => return None,
        20 => (&digits[..19], Some(digits[19])),
        _ => (digits, None),
    };
    let mut v = 0u64;
    for &b in head {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + u64::from(d);
    }
    match last {
        None => Some(v),
        Some(b) => {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            v.checked_mul(10)?.checked_add(u64::from(d))
        }
    }
}

/// [`decimal`] as the named kind of number, or why not.
fn number<T: TryFrom<u64>>(what: &str, digits: &[u8]) -> Result<T, String> {
    decimal(digits)
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| {
            format!(
                "{what} {:?} is not a decimal {}",
                String::from_utf8_lossy(digits),
                std::any::type_name::<T>()
            )
        })
}

fn malformed(key: &str, value: &str, why: impl fmt::Display) -> Status {
    Status::invalid_argument(format!("malformed {key} metadata {value:?}: {why}"))
}

/// Reads `key` from `md` and parses it; `Ok(None)` when absent.
fn parse<T: FromStr>(md: &Metadata, key: &str) -> Result<Option<T>, Status>
where
    T::Err: fmt::Display,
{
    match md.get(key) {
        None => Ok(None),
        Some(v) => v.parse::<T>().map(Some).map_err(|e| malformed(key, v, e)),
    }
}

/// A Lamport clock: one counter, advanced on every event.
#[derive(Debug, Default)]
pub struct Lamport(AtomicU64);

impl Lamport {
    /// A clock at 0.
    pub fn new() -> Lamport {
        Lamport::default()
    }

    /// The current value.
    pub fn now(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Sets the counter to `next(current)`; returns the new value.
    fn update(&self, next: impl Fn(u64) -> u64) -> u64 {
        let mut current = self.0.load(Ordering::Acquire);
        loop {
            let new = next(current);
            match self
                .0
                .compare_exchange_weak(current, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return new,
                Err(seen) => current = seen,
            }
        }
    }

    /// A local event: advances and returns the new value.
    pub fn tick(&self) -> u64 {
        self.update(|v| v.saturating_add(1))
    }

    /// A send event: advances and writes the value under [`LAMPORT_KEY`].
    pub fn stamp(&self, md: &mut Metadata) -> u64 {
        let v = self.tick();
        md.insert(LAMPORT_KEY, itoa::Buffer::new().format(v));
        v
    }

    /// A receive event: `max(local, remote) + 1`.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` when the value is not a decimal `u64`.
    pub fn merge(&self, md: &Metadata) -> Result<Option<u64>, Status> {
        let Some(remote) = parse::<u64>(md, LAMPORT_KEY)? else {
            return Ok(None);
        };
        Ok(Some(self.observe(remote)))
    }

    /// A receive event of a remote value already parsed.
    pub fn observe(&self, remote: u64) -> u64 {
        self.update(|v| v.max(remote).saturating_add(1))
    }
}

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
pub struct VectorClock(Vec<(u32, u64)>);

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
fn parse_vector(s: &str, entries: &mut Vec<(u32, u64)>) -> Result<(), String> {
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

/// The leading decimal of `b[from..]` (1 to 19 digits, so no overflow)
/// and where it ends.
fn leading_decimal(b: &[u8], from: usize) -> Option<(u64, usize)> {
    let mut v = 0u64;
    let mut at = from;
    while let Some(d) = b.get(at).map(|c| c.wrapping_sub(b'0')).filter(|&d| d <= 9) {
        if at - from == 19 {
            return None;
        }
        v = v * 10 + u64::from(d);
        at += 1;
    }
    (at > from).then_some((v, at))
}

/// [`parse_vector`] of a well-formed value in one pass over its bytes
/// (this runs on every call and answer); `None` for anything else,
/// including numbers of 20 digits, which the careful reader takes.
fn parse_vector_fast(b: &[u8], entries: &mut Vec<(u32, u64)>) -> Option<()> {
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
    fn stamp_into(&self, md: &mut Metadata) {
        let mut v = lock(&self.v);
        self.advance_own(&mut v);
        // Writing into the map cannot fail.
        md.insert_with(VECTOR_KEY, |w| {
            let _ = v.write_to(w);
        });
    }

    /// A receive event of parsed entries that returns nothing (no copy).
    fn observe_entries(&self, entries: &[(u32, u64)]) {
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

/// A hybrid logical clock value: `l` follows physical time, `c` orders
/// events within the same `l`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hlc {
    /// The physical part, ns since the Unix epoch.
    pub l: i64,
    /// The logical part.
    pub c: u32,
}

impl Hlc {
    /// Appends the wire form, `<l>.<c>`, to `out`.
    fn write_to(&self, out: &mut impl fmt::Write) -> fmt::Result {
        push_decimal(out, self.l)?;
        out.write_char('.')?;
        push_decimal(out, self.c)
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

impl FromStr for Hlc {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        // The usual value in one pass: a positive `l` and a `c`.
        if let Some((l, dot)) = leading_decimal(b, 0) {
            if let Some((c, end)) = (b.get(dot) == Some(&b'.'))
                .then(|| leading_decimal(b, dot + 1))
                .flatten()
            {
                if let (Ok(l), Ok(c), true) = (i64::try_from(l), u32::try_from(c), end == b.len()) {
                    return Ok(Hlc { l, c });
                }
            }
        }
        let dot = b.iter().position(|&x| x == b'.').ok_or("not <l>.<c>")?;
        let (l, c) = (&b[..dot], &b[dot + 1..]);
        let l = match l.strip_prefix(b"-") {
            // -(2^63) itself does not fit a positive i64 first: refused,
            // as a time before 1678 is of no use.
            Some(magnitude) => number::<i64>("l", magnitude).map(|m| -m)?,
            None => number::<i64>("l", l)?,
        };
        Ok(Hlc {
            l,
            c: number("c", c)?,
        })
    }
}

/// A hybrid logical clock over a [`TimeSource`] (Kulkarni et al., 2014):
/// never behind physical time, never more than the maximum offset ahead
/// of it, since it refuses remote clocks further ahead than that.
#[derive(Debug)]
pub struct HybridClock {
    time: Arc<TimeSource>,
    max_offset_ns: i64,
    state: Mutex<Hlc>,
}

impl HybridClock {
    /// A clock over `time` refusing remote clocks more than
    /// `max_offset_ns` ahead of it.
    pub fn new(time: Arc<TimeSource>, max_offset_ns: i64) -> HybridClock {
        HybridClock {
            time,
            max_offset_ns: max_offset_ns.max(0),
            state: Mutex::new(Hlc::default()),
        }
    }

    /// The largest remote lead accepted, ns.
    pub fn max_offset_ns(&self) -> i64 {
        self.max_offset_ns
    }

    /// The current value (no event).
    pub fn now(&self) -> Hlc {
        *lock(&self.state)
    }

    /// A local or send event.
    pub fn tick(&self) -> Hlc {
        let pt = self.time.now_ns();
        let mut s = lock(&self.state);
        let l = s.l.max(pt);
        let c = if l == s.l { s.c.saturating_add(1) } else { 0 };
        *s = Hlc { l, c };
        *s
    }

    /// A send event: advances and writes under [`HLC_KEY`].
    pub fn stamp(&self, md: &mut Metadata) -> Hlc {
        let h = self.tick();
        // Writing into the map cannot fail.
        md.insert_with(HLC_KEY, |w| {
            let _ = h.write_to(w);
        });
        h
    }

    /// A receive event.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` when malformed; `OUT_OF_RANGE` when the remote
    /// clock is more than the maximum offset ahead of the local physical
    /// clock (the message names both clocks). Nothing changes then.
    pub fn merge(&self, md: &Metadata) -> Result<Option<Hlc>, Status> {
        let Some(remote) = parse::<Hlc>(md, HLC_KEY)? else {
            return Ok(None);
        };
        self.observe(remote).map(Some)
    }

    /// A receive event of a remote value already parsed.
    ///
    /// # Errors
    /// As [`HybridClock::merge`].
    pub fn observe(&self, remote: Hlc) -> Result<Hlc, Status> {
        let pt = self.time.now_ns();
        let lead = remote.l.saturating_sub(pt);
        if lead > self.max_offset_ns {
            return Err(Status::out_of_range(format!(
                "remote hybrid clock {remote} is {lead} ns ahead of the local physical clock {pt} \
                 (local hybrid clock {}); at most {} ns accepted",
                self.now(),
                self.max_offset_ns
            )));
        }
        let mut s = lock(&self.state);
        let l = s.l.max(remote.l).max(pt);
        let c = if l == s.l && l == remote.l {
            s.c.max(remote.c).saturating_add(1)
        } else if l == s.l {
            s.c.saturating_add(1)
        } else if l == remote.l {
            remote.c.saturating_add(1)
        } else {
            0
        };
        *s = Hlc { l, c };
        Ok(*s)
    }
}

/// Which of the three clocks are carried (see [`ClockInterceptor::only`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClockKinds {
    /// The Lamport clock ([`LAMPORT_KEY`]).
    pub lamport: bool,
    /// The vector clock ([`VECTOR_KEY`]).
    pub vector: bool,
    /// The hybrid logical clock ([`HLC_KEY`]).
    pub hybrid: bool,
}

impl ClockKinds {
    /// All three.
    pub const ALL: ClockKinds = ClockKinds {
        lamport: true,
        vector: true,
        hybrid: true,
    };
    /// Only the Lamport clock.
    pub const LAMPORT: ClockKinds = ClockKinds {
        lamport: true,
        vector: false,
        hybrid: false,
    };
    /// Only the vector clock.
    pub const VECTOR: ClockKinds = ClockKinds {
        lamport: false,
        vector: true,
        hybrid: false,
    };
    /// Only the hybrid logical clock.
    pub const HYBRID: ClockKinds = ClockKinds {
        lamport: false,
        vector: false,
        hybrid: true,
    };
}

impl fmt::Display for ClockKinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (self.lamport, "lamport"),
            (self.vector, "vector"),
            (self.hybrid, "hybrid"),
        ];
        let mut first = true;
        for (_, name) in names.iter().filter(|(on, _)| *on) {
            if !first {
                f.write_str("+")?;
            }
            f.write_str(name)?;
            first = false;
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// The three clocks of one node, stamped and merged together.
#[derive(Debug)]
pub struct LogicalClocks {
    /// Lamport.
    pub lamport: Lamport,
    /// Vector.
    pub vector: VectorClocks,
    /// Hybrid.
    pub hybrid: HybridClock,
}

impl LogicalClocks {
    /// Node `id`'s clocks; the hybrid one over `time`, refusing remote
    /// clocks more than `max_offset_ns` ahead.
    pub fn new(id: u32, time: Arc<TimeSource>, max_offset_ns: i64) -> LogicalClocks {
        LogicalClocks {
            lamport: Lamport::new(),
            vector: VectorClocks::new(id),
            hybrid: HybridClock::new(time, max_offset_ns),
        }
    }

    /// A send event of every clock, written into `md`.
    pub fn stamp(&self, md: &mut Metadata) {
        self.stamp_kinds(md, ClockKinds::ALL);
    }

    /// A send event of the clocks `kinds` names, written into `md`.
    pub fn stamp_kinds(&self, md: &mut Metadata, kinds: ClockKinds) {
        if kinds.lamport {
            self.lamport.stamp(md);
        }
        if kinds.vector {
            self.vector.stamp_into(md);
        }
        if kinds.hybrid {
            self.hybrid.stamp(md);
        }
    }

    /// The stamp of a send event as a fresh map (for a reply's `stamp`
    /// field, or to copy into a call's metadata).
    pub fn stamped(&self) -> Metadata {
        let mut md = Metadata::new();
        self.stamp(&mut md);
        md
    }

    /// A receive event of every clock present in `md`. Everything is
    /// parsed and checked first, so a refusal changes no clock.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` (malformed) or `OUT_OF_RANGE` (HLC too far
    /// ahead).
    pub fn merge(&self, md: &Metadata) -> Result<(), Status> {
        self.merge_kinds(md, ClockKinds::ALL)
    }

    /// [`LogicalClocks::merge`] of the clocks `kinds` names; the others'
    /// entries are not read.
    ///
    /// # Errors
    /// As [`LogicalClocks::merge`].
    pub fn merge_kinds(&self, md: &Metadata, kinds: ClockKinds) -> Result<(), Status> {
        let lamport = if kinds.lamport {
            parse::<u64>(md, LAMPORT_KEY)?
        } else {
            None
        };
        let hlc = if kinds.hybrid {
            parse::<Hlc>(md, HLC_KEY)?
        } else {
            None
        };
        let observe_rest = |vector: Option<&[(u32, u64)]>| -> Result<(), Status> {
            if let Some(h) = hlc {
                self.hybrid.observe(h)?;
            }
            if let Some(l) = lamport {
                self.lamport.observe(l);
            }
            if let Some(entries) = vector {
                self.vector.observe_entries(entries);
            }
            Ok(())
        };
        match md.get(VECTOR_KEY).filter(|_| kinds.vector) {
            None => observe_rest(None),
            Some(text) => SCRATCH.with_borrow_mut(|entries| {
                parse_vector(text, entries).map_err(|e| malformed(VECTOR_KEY, text, e))?;
                observe_rest(Some(entries))
            }),
        }
    }
}

/// Carries a node's [`LogicalClocks`] on every request and answer (see the
/// [module docs](self)). Clones share the clocks and the counter.
#[derive(Debug, Clone)]
pub struct ClockInterceptor {
    clocks: Arc<LogicalClocks>,
    kinds: ClockKinds,
    refused_answers: Arc<AtomicU64>,
}

impl ClockInterceptor {
    /// Carries `clocks`, all three.
    pub fn new(clocks: Arc<LogicalClocks>) -> ClockInterceptor {
        ClockInterceptor {
            clocks,
            kinds: ClockKinds::ALL,
            refused_answers: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Carries only the clocks `kinds` names (the others are neither
    /// written nor read).
    #[must_use]
    pub fn only(mut self, kinds: ClockKinds) -> ClockInterceptor {
        self.kinds = kinds;
        self
    }

    /// The clocks carried.
    pub fn kinds(&self) -> ClockKinds {
        self.kinds
    }

    /// Answers whose clocks were not merged (malformed, or an HLC too far
    /// ahead): the answer is the caller's anyway, only its clocks are
    /// left out.
    pub fn refused_answers(&self) -> u64 {
        self.refused_answers.load(Ordering::Relaxed)
    }
}

impl Interceptor for ClockInterceptor {
    fn before(&self, ctx: &mut CallContext) -> Result<(), Status> {
        // A receive event; a refusal changes no clock and the call does
        // not run.
        self.clocks.merge_kinds(&ctx.metadata, self.kinds)
    }

    fn after(&self, call: &mut Completed<'_>) {
        // A send event: the answer.
        self.clocks.stamp_kinds(call.reply_metadata, self.kinds);
    }
}

impl ClientInterceptor for ClockInterceptor {
    fn before(&self, invocation: &mut Invocation) -> Result<(), Status> {
        self.clocks
            .stamp_kinds(&mut invocation.metadata, self.kinds);
        Ok(())
    }

    fn after(&self, invocation: &InvocationInfo, outcome: &ClientOutcome<'_>) {
        let metadata = match outcome {
            ClientOutcome::Answer(Ok(reply)) => Some(&reply.metadata),
            ClientOutcome::Answer(Err(status)) => status.metadata(),
            _ => None,
        };
        if let Some(md) = metadata {
            if let Err(error) = self.clocks.merge_kinds(md, self.kinds) {
                self.refused_answers.fetch_add(1, Ordering::Relaxed);
                // Expected while a peer's clock is far off (the HLC refuses
                // it): logged, counted, the answer still delivered.
                tracing::debug!(method = invocation.method.name, %error, "answer's clocks not merged");
            }
        }
    }
}

#[cfg(test)]
mod tests;
