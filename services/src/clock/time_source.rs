//! [`TimeSource`]: the disciplined clock of one process.
//!
//! Three layers, each a pure function of the one below:
//!
//! ```text
//! base (Monotonic)          SystemClock: the system's real time, never read backwards
//!   -> physical (Skew)      base + injected offset + injected drift (tests create real skew)
//!     -> corrected          physical + correction (offset, frequency, slew); never goes backwards
//! ```
//!
//! The system clock is never touched. A correction is applied as a *step*
//! only while the clock has never been synchronised (the start); after
//! that every correction is *slewed*: the clock runs at most
//! [`TimeSourceConfig::max_slew_ppm`] faster or slower until it is in.
//! Readings never go backwards: after a backward step the readings stand
//! still ("hold") until the corrected clock has caught up.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// An underlying clock: nanoseconds that never decrease.
pub trait Monotonic: Send + Sync + fmt::Debug + 'static {
    /// The current reading, in nanoseconds.
    fn now_ns(&self) -> i64;
}

/// The process's base clock: the system's real-time clock
/// (`CLOCK_REALTIME`, Unix-epoch ns), made monotonic: a reading is never
/// less than the one before, so a step back of the system clock makes it
/// stand still rather than go back. Every process of a host reads the
/// same kernel clock, so processes on one host share it exactly (the
/// tests' "true time").
#[derive(Debug, Default)]
pub struct SystemClock {
    last: AtomicI64,
}

impl SystemClock {
    /// The system's clock.
    pub fn new() -> SystemClock {
        SystemClock::default()
    }
}

impl Monotonic for SystemClock {
    fn now_ns(&self) -> i64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let last = self.last.fetch_max(now, Ordering::SeqCst);
        now.max(last)
    }
}

/// A clock that moves only when told to: the simulated source of tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock reading `ns`.
    pub fn new(ns: i64) -> ManualClock {
        ManualClock(AtomicI64::new(ns))
    }

    /// Moves the clock forward by `ns` (negative values are ignored: the
    /// source is monotonic).
    pub fn advance(&self, ns: i64) {
        self.0.fetch_add(ns.max(0), Ordering::SeqCst);
    }
}

impl Monotonic for ManualClock {
    fn now_ns(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl<M: Monotonic + ?Sized> Monotonic for Arc<M> {
    fn now_ns(&self) -> i64 {
        (**self).now_ns()
    }
}

/// An injected error of the physical clock: a fixed offset and a drift
/// (`--clock-offset-ms`, `--drift-ppm` of `clock-node`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Skew {
    /// Added to the base clock, in ns.
    pub offset_ns: i64,
    /// How much faster than the base clock the physical clock runs, in
    /// parts per million (negative: slower). Clamped to +-100,000.
    pub drift_ppm: f64,
}

impl Skew {
    /// A skew of `offset_ms` milliseconds and `drift_ppm`.
    pub fn new(offset_ms: i64, drift_ppm: f64) -> Skew {
        Skew {
            offset_ns: offset_ms.saturating_mul(1_000_000),
            drift_ppm,
        }
    }
}

/// Limits of a [`TimeSource`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeSourceConfig {
    /// Fastest slew: the corrected clock runs at most this much faster or
    /// slower than the physical one while a correction is slewed in
    /// (default 500 ppm, as NTP's kernel discipline).
    pub max_slew_ppm: f64,
    /// Largest frequency correction accepted (default 500 ppm).
    pub max_frequency_ppm: f64,
    /// Bound on the physical clock's drift from true time, for the error
    /// bound's growth since the last synchronisation (default 500 ppm).
    pub max_drift_ppm: f64,
    /// Error bound reported while never synchronised (default 10 s).
    pub unsynchronised_bound_ns: u64,
}

impl Default for TimeSourceConfig {
    fn default() -> Self {
        TimeSourceConfig {
            max_slew_ppm: 500.0,
            max_frequency_ppm: 500.0,
            max_drift_ppm: 500.0,
            unsynchronised_bound_ns: 10_000_000_000,
        }
    }
}

/// How a correction was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Correction {
    /// At once (only before the first synchronisation). A backward step
    /// makes readings hold until the corrected clock catches up.
    Stepped,
    /// Gradually, at most [`TimeSourceConfig::max_slew_ppm`].
    Slewing,
}

#[derive(Debug)]
struct State {
    /// Physical reading at the last update, and the corrected value then.
    anchor_phys: i64,
    anchor_value: i64,
    /// Sub-nanosecond remainder of the corrected value.
    frac: f64,
    /// Frequency correction, ppm.
    freq_ppm: f64,
    /// Correction still to slew in, ns.
    slew_remaining: f64,
    /// The largest reading handed out.
    last_read: i64,
    /// `Some((physical time, error))` of the last synchronisation.
    synced: Option<(i64, u64)>,
    /// A reference clock: synchronised by definition, error 0.
    reference: bool,
}

/// The disciplined clock of a process (see the module docs). Cheap to
/// share behind an [`Arc`]; every method takes `&self`.
pub struct TimeSource {
    base: Arc<dyn Monotonic>,
    base0: i64,
    skew: Skew,
    config: TimeSourceConfig,
    state: Mutex<State>,
}

impl fmt::Debug for TimeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeSource")
            .field("skew", &self.skew)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// One reading of a [`TimeSource`] with what goes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// The corrected time, ns.
    pub now_ns: i64,
    /// The physical clock at the same moment, ns.
    pub physical_ns: i64,
    /// How far the readings are held back after a backward step, ns.
    pub hold_ns: u64,
}

impl Reading {
    /// The clock's own value, not held: what the clock *is* (for a
    /// Berkeley master measuring it), `now_ns - hold_ns`.
    pub fn unheld_ns(&self) -> i64 {
        self.now_ns
            .saturating_sub(i64::try_from(self.hold_ns).unwrap_or(i64::MAX))
    }
}

impl TimeSource {
    /// A clock over `base` with the injected `skew`, not yet synchronised.
    pub fn new(base: Arc<dyn Monotonic>, skew: Skew, config: TimeSourceConfig) -> TimeSource {
        let base0 = base.now_ns();
        let skew = Skew {
            drift_ppm: skew.drift_ppm.clamp(-100_000.0, 100_000.0),
            ..skew
        };
        let phys = base0.saturating_add(skew.offset_ns);
        TimeSource {
            base,
            base0,
            skew,
            config,
            state: Mutex::new(State {
                anchor_phys: phys,
                anchor_value: phys,
                frac: 0.0,
                freq_ppm: 0.0,
                slew_remaining: 0.0,
                last_read: i64::MIN,
                synced: None,
                reference: false,
            }),
        }
    }

    /// The process's clock: the [`SystemClock`] with `skew`.
    pub fn system(skew: Skew) -> TimeSource {
        TimeSource::new(
            Arc::new(SystemClock::new()),
            skew,
            TimeSourceConfig::default(),
        )
    }

    /// Declares this clock a reference: synchronised, error bound 0 (the
    /// true clock of a test, or a node with a better source).
    pub fn set_reference(&self) {
        self.lock().reference = true;
    }

    /// The injected skew.
    pub fn skew(&self) -> Skew {
        self.skew
    }

    /// The configuration.
    pub fn config(&self) -> &TimeSourceConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update leaves the state consistent before it can panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The physical clock: base, offset and drift, uncorrected.
    pub fn physical_ns(&self) -> i64 {
        let base = self.base.now_ns();
        let elapsed = base.saturating_sub(self.base0);
        let drift = (elapsed as f64 * self.skew.drift_ppm * 1e-6) as i64;
        base.saturating_add(self.skew.offset_ns)
            .saturating_add(drift)
    }

    /// Brings the corrected clock up to `phys`, slewing what is pending.
    fn advance(&self, s: &mut State, phys: i64) {
        let elapsed = phys.saturating_sub(s.anchor_phys).max(0);
        let e = elapsed as f64;
        let cap = e * self.config.max_slew_ppm * 1e-6;
        let slew = s.slew_remaining.clamp(-cap, cap);
        s.slew_remaining -= slew;
        let delta = e * s.freq_ppm * 1e-6 + slew + s.frac;
        let whole = delta.floor();
        s.frac = delta - whole;
        s.anchor_value = s
            .anchor_value
            .saturating_add(elapsed)
            .saturating_add(whole as i64);
        s.anchor_phys = phys;
    }

    /// Reads the clock: never less than any earlier reading.
    pub fn read(&self) -> Reading {
        let phys = self.physical_ns();
        let mut s = self.lock();
        self.advance(&mut s, phys);
        let value = s.anchor_value;
        let now = value.max(s.last_read);
        s.last_read = now;
        Reading {
            now_ns: now,
            physical_ns: phys,
            hold_ns: u64::try_from(now.saturating_sub(value)).unwrap_or(0),
        }
    }

    /// The corrected time, ns (see [`TimeSource::read`]).
    pub fn now_ns(&self) -> i64 {
        self.read().now_ns
    }

    /// Moves the clock by `delta_ns`: a step while it has never been
    /// synchronised, a slew afterwards.
    pub fn adjust(&self, delta_ns: i64) -> Correction {
        let phys = self.physical_ns();
        let mut s = self.lock();
        self.advance(&mut s, phys);
        if s.synced.is_none() && !s.reference {
            s.anchor_value = s.anchor_value.saturating_add(delta_ns);
            tracing::debug!(delta_ns, "clock stepped");
            Correction::Stepped
        } else {
            s.slew_remaining += delta_ns as f64;
            tracing::debug!(delta_ns, "clock slewing");
            Correction::Slewing
        }
    }

    /// Sets the frequency correction (clamped to
    /// [`TimeSourceConfig::max_frequency_ppm`]); returns what was set.
    pub fn set_frequency_ppm(&self, ppm: f64) -> f64 {
        let phys = self.physical_ns();
        let max = self.config.max_frequency_ppm;
        let ppm = if ppm.is_finite() {
            ppm.clamp(-max, max)
        } else {
            0.0
        };
        let mut s = self.lock();
        self.advance(&mut s, phys);
        s.freq_ppm = ppm;
        ppm
    }

    /// The frequency correction in force, ppm.
    pub fn frequency_ppm(&self) -> f64 {
        self.lock().freq_ppm
    }

    /// Records a synchronisation now, `error_ns` from the reference: from
    /// now on corrections slew, and the error bound grows from `error_ns`.
    pub fn mark_synchronised(&self, error_ns: u64) {
        let phys = self.physical_ns();
        self.lock().synced = Some((phys, error_ns));
    }

    /// Whether the clock is a reference or has been synchronised.
    pub fn is_synchronised(&self) -> bool {
        let s = self.lock();
        s.reference || s.synced.is_some()
    }

    /// Correction still being slewed in, ns.
    pub fn slew_remaining_ns(&self) -> i64 {
        let phys = self.physical_ns();
        let mut s = self.lock();
        self.advance(&mut s, phys);
        s.slew_remaining as i64
    }

    /// The error bound now: 0 for a reference; the error at the last
    /// synchronisation plus the drift bound since, plus what is still to
    /// slew in and any hold; [`TimeSourceConfig::unsynchronised_bound_ns`]
    /// when never synchronised.
    pub fn error_bound_ns(&self) -> u64 {
        let r = self.read();
        let s = self.lock();
        if s.reference {
            return 0;
        }
        match s.synced {
            None => self.config.unsynchronised_bound_ns,
            Some((at, err)) => {
                let age = r.physical_ns.saturating_sub(at).max(0) as f64;
                let drift = (age * self.config.max_drift_ppm * 1e-6).ceil() as u64;
                err.saturating_add(drift)
                    .saturating_add(s.slew_remaining.abs().ceil() as u64)
                    .saturating_add(r.hold_ns)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;
    const S: i64 = 1_000_000_000;

    fn source(skew: Skew) -> (Arc<ManualClock>, TimeSource) {
        let base = Arc::new(ManualClock::new(1_000 * S));
        let ts = TimeSource::new(base.clone(), skew, TimeSourceConfig::default());
        (base, ts)
    }

    #[test]
    fn skew_offsets_and_drifts_the_physical_clock() {
        let (base, ts) = source(Skew::new(250, 100.0));
        assert_eq!(ts.now_ns(), 1_000 * S + 250 * MS);
        base.advance(10 * S);
        // 10 s at +100 ppm: 1 ms more.
        assert_eq!(ts.now_ns(), 1_010 * S + 250 * MS + MS);
    }

    #[test]
    fn steps_only_before_the_first_synchronisation() {
        let (base, ts) = source(Skew::default());
        assert_eq!(ts.adjust(5 * MS), Correction::Stepped);
        assert_eq!(ts.now_ns(), 1_000 * S + 5 * MS);
        ts.mark_synchronised(0);
        assert_eq!(ts.adjust(5 * MS), Correction::Slewing);
        // Nothing happens until time passes ...
        assert_eq!(ts.now_ns(), 1_000 * S + 5 * MS);
        // ... then at most 500 ppm: 1 s of slewing is 0.5 ms.
        base.advance(S);
        assert_eq!(ts.now_ns(), 1_001 * S + 5 * MS + MS / 2);
        assert_eq!(ts.slew_remaining_ns(), 9 * MS / 2);
        // 9 s more finishes it; then the clock runs at the physical rate.
        base.advance(9 * S);
        assert_eq!(ts.now_ns(), 1_010 * S + 10 * MS);
        base.advance(S);
        assert_eq!(ts.now_ns(), 1_011 * S + 10 * MS);
        assert_eq!(ts.slew_remaining_ns(), 0);
    }

    #[test]
    fn a_backward_step_holds_instead_of_going_back() {
        let (base, ts) = source(Skew::default());
        let before = ts.now_ns();
        assert_eq!(ts.adjust(-3 * MS), Correction::Stepped);
        let r = ts.read();
        assert_eq!(r.now_ns, before);
        assert_eq!(r.hold_ns, 3 * MS as u64);
        base.advance(MS);
        let r = ts.read();
        assert_eq!((r.now_ns, r.hold_ns), (before, 2 * MS as u64));
        base.advance(2 * MS + 1);
        let r = ts.read();
        assert_eq!((r.now_ns, r.hold_ns), (before + 1, 0));
    }

    #[test]
    fn never_goes_backwards_under_any_corrections() {
        let (base, ts) = source(Skew::new(-40, -250.0));
        let mut last = ts.now_ns();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for i in 0..10_000 {
            match next() % 5 {
                0 => {
                    ts.adjust((next() % (20 * MS as u64)) as i64 - 10 * MS);
                }
                1 => {
                    ts.set_frequency_ppm((next() % 2_000) as f64 - 1_000.0);
                }
                2 if i == 100 => ts.mark_synchronised(MS as u64),
                _ => base.advance((next() % (MS as u64)) as i64),
            }
            let now = ts.now_ns();
            assert!(now >= last, "went back at step {i}: {now} < {last}");
            last = now;
        }
    }

    #[test]
    fn frequency_correction_is_capped_and_applied() {
        let (base, ts) = source(Skew::new(0, 100.0));
        assert_eq!(ts.set_frequency_ppm(-100.0), -100.0);
        assert_eq!(ts.set_frequency_ppm(-9_999.0), -500.0);
        ts.set_frequency_ppm(-100.0);
        let t0 = ts.now_ns();
        base.advance(10 * S);
        // Physical ran 10 s + 1 ms; corrected by -100 ppm of that: 10 s
        // less 100 ns (the second-order term).
        let ran = ts.now_ns() - t0;
        assert!((ran - 10 * S).abs() <= 200, "ran {ran}");
    }

    #[test]
    fn error_bound_grows_with_drift_and_pending_slew() {
        let (base, ts) = source(Skew::default());
        assert_eq!(ts.error_bound_ns(), 10_000_000_000);
        ts.mark_synchronised(100_000);
        assert_eq!(ts.error_bound_ns(), 100_000);
        base.advance(S);
        assert_eq!(ts.error_bound_ns(), 100_000 + 500_000);
        ts.adjust(MS);
        assert_eq!(ts.error_bound_ns(), 100_000 + 500_000 + MS as u64);
        let reference = TimeSource::new(base, Skew::default(), TimeSourceConfig::default());
        reference.set_reference();
        assert_eq!(reference.error_bound_ns(), 0);
        assert!(reference.is_synchronised());
    }
}
