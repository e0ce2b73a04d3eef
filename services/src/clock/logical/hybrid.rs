//! The hybrid logical clock (HLC): its value ([`Hlc`]) and wire form,
//! and the clock over a [`TimeSource`] ([`HybridClock`]).

use super::super::time_source::TimeSource;
use super::wire::{leading_decimal, number, parse, push_decimal};
use super::{lock, HLC_KEY};
use rpc_core::{Metadata, Status};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

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
