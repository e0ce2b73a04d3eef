//! Client synchronisation (Cristian / NTP), sans I/O.
//!
//! A [`Sample`] is one exchange: T1 (client sends), T2 (server receives),
//! T3 (server sends), T4 (client receives), with the server's own error
//! bound. Its offset (server minus client) is `((T2-T1)+(T3-T4))/2` and
//! its delay `(T4-T1)-(T3-T2)`; the true offset lies within half the delay
//! of the measured one. A [`SyncFilter`] keeps the last 8 samples and uses
//! the one of minimum delay (the least queueing), and reports an
//! [`Estimate`]: the offset and an error bound (half the delay, plus the
//! server's bound, plus the drift allowed since the sample), an interval
//! that contains the true offset.
//!
//! T1 and T4 are read from the client's *physical* clock
//! ([`TimeSource::physical_ns`]), which corrections do not move, so that
//! the samples of the window stay comparable while the corrected clock is
//! being disciplined; [`SyncFilter::discipline`] then steers the
//! [`TimeSource`] towards `physical + offset`.

use super::time_source::{Correction, TimeSource};
use std::collections::VecDeque;

/// How many samples the filter keeps.
pub const WINDOW: usize = 8;

/// One time exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Client clock when the request left.
    pub t1: i64,
    /// Server clock when the request arrived.
    pub t2: i64,
    /// Server clock when the reply left.
    pub t3: i64,
    /// Client clock when the reply arrived.
    pub t4: i64,
    /// The server's own error bound, ns.
    pub server_error_ns: u64,
}

/// Why a sample cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SampleError {
    /// The reply arrived before the request left (T4 < T1).
    #[error("reply before request (t4 - t1 = {0} ns)")]
    Backwards(i64),
    /// The server answered before it received (T3 < T2).
    #[error("server answered before it received (t3 - t2 = {0} ns)")]
    ServerBackwards(i64),
    /// The delay is negative: the timestamps cannot all be true.
    #[error("negative delay {0} ns")]
    NegativeDelay(i64),
    /// The offset is beyond what any real clock could be off.
    #[error("absurd offset {0} ns")]
    Absurd(i64),
}

/// Offsets beyond this (about 10 years) are absurd.
pub const ABSURD_OFFSET_NS: i64 = 10 * 365 * 86_400 * 1_000_000_000;

impl Sample {
    /// The measured offset, server minus client, ns.
    pub fn offset_ns(&self) -> i64 {
        let a = i128::from(self.t2) - i128::from(self.t1);
        let b = i128::from(self.t3) - i128::from(self.t4);
        i64::try_from((a + b) / 2).unwrap_or(if a + b > 0 { i64::MAX } else { i64::MIN })
    }

    /// The round trip minus the server's time, ns.
    pub fn delay_ns(&self) -> i64 {
        let total = i128::from(self.t4) - i128::from(self.t1);
        let server = i128::from(self.t3) - i128::from(self.t2);
        i64::try_from(total - server).unwrap_or(i64::MAX)
    }

    /// Checks that the timestamps can be true.
    ///
    /// # Errors
    /// The first [`SampleError`] that applies.
    pub fn validate(&self) -> Result<(), SampleError> {
        let rtt = self.t4.saturating_sub(self.t1);
        if rtt < 0 {
            return Err(SampleError::Backwards(rtt));
        }
        let server = self.t3.saturating_sub(self.t2);
        if server < 0 {
            return Err(SampleError::ServerBackwards(server));
        }
        let delay = self.delay_ns();
        if delay < 0 {
            return Err(SampleError::NegativeDelay(delay));
        }
        let offset = self.offset_ns();
        if offset.saturating_abs() > ABSURD_OFFSET_NS {
            return Err(SampleError::Absurd(offset));
        }
        Ok(())
    }
}

/// An offset with an error bound: the true offset (server minus client)
/// lies in `[offset_ns - error_ns, offset_ns + error_ns]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// Server minus client, ns.
    pub offset_ns: i64,
    /// Half-width of the interval, ns.
    pub error_ns: u64,
    /// The delay of the sample it comes from, ns.
    pub delay_ns: i64,
    /// The client's (physical) clock when the sample was taken (T4).
    pub at_ns: i64,
}

impl Estimate {
    /// The interval `(low, high)` of the offset.
    pub fn interval(&self) -> (i64, i64) {
        let e = i64::try_from(self.error_ns).unwrap_or(i64::MAX);
        (
            self.offset_ns.saturating_sub(e),
            self.offset_ns.saturating_add(e),
        )
    }

    /// Whether `offset_ns` lies in the interval.
    pub fn contains(&self, offset_ns: i64) -> bool {
        let (lo, hi) = self.interval();
        lo <= offset_ns && offset_ns <= hi
    }
}

/// The last [`WINDOW`] samples of one server, and the estimate from the
/// best of them.
#[derive(Debug, Clone)]
pub struct SyncFilter {
    window: VecDeque<Sample>,
    max_drift_ppm: f64,
    rejected: u64,
    added: u64,
    /// The first estimate kept for the frequency: (at, offset, half its
    /// delay).
    first: Option<(i64, i64, i64)>,
}

impl SyncFilter {
    /// A filter allowing `max_drift_ppm` of relative drift between the two
    /// clocks when it ages an estimate (500 ppm is NTP's tolerance).
    pub fn new(max_drift_ppm: f64) -> SyncFilter {
        SyncFilter {
            window: VecDeque::with_capacity(WINDOW),
            max_drift_ppm: max_drift_ppm.abs(),
            rejected: 0,
            added: 0,
            first: None,
        }
    }

    /// Adds a sample (dropping the oldest beyond [`WINDOW`]).
    ///
    /// # Errors
    /// When the sample cannot be true; it is counted and not kept.
    pub fn add(&mut self, sample: Sample) -> Result<(), SampleError> {
        if let Err(e) = sample.validate() {
            self.rejected += 1;
            tracing::debug!(error = %e, "time sample rejected");
            return Err(e);
        }
        if self.window.len() == WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(sample);
        self.added += 1;
        // The frequency's starting point: the best of the first window.
        if self.added <= WINDOW as u64 {
            if let Some(best) = self.best() {
                self.first = Some((best.t4, best.offset_ns(), (best.delay_ns().max(0) + 1) / 2));
            }
        }
        Ok(())
    }

    /// Samples rejected so far.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// The kept sample of minimum delay.
    pub fn best(&self) -> Option<&Sample> {
        self.window.iter().min_by_key(|s| s.delay_ns())
    }

    /// The estimate at client time `now_ns` (physical): the best sample's
    /// offset, its error grown by the drift allowed since it was taken.
    pub fn estimate(&self, now_ns: i64) -> Option<Estimate> {
        let s = self.best()?;
        let delay = s.delay_ns();
        let span = s.t4.saturating_sub(s.t1).max(0);
        let age = now_ns.saturating_sub(s.t4).max(0);
        let drift = ((span + age) as f64 * self.max_drift_ppm * 1e-6).ceil() as u64;
        // Half the delay, rounded up, so the interval is never too narrow.
        let half = u64::try_from(delay).unwrap_or(0).div_ceil(2);
        Some(Estimate {
            offset_ns: s.offset_ns(),
            error_ns: half.saturating_add(s.server_error_ns).saturating_add(drift),
            delay_ns: delay,
            at_ns: s.t4,
        })
    }

    /// The relative frequency of the server's clock against the client's
    /// physical clock, in ppm, from the best sample of the first window to
    /// the current best,
    /// once they are at least `min_span_ns` apart.
    pub fn frequency_ppm(&self, min_span_ns: i64) -> Option<f64> {
        let (ppm, _, span) = self.frequency()?;
        (span >= min_span_ns.max(1)).then_some(ppm)
    }

    /// The frequency (ppm), its uncertainty (ppm: the two samples' half
    /// delays over the span between them) and that span (ns).
    fn frequency(&self) -> Option<(f64, f64, i64)> {
        let (t0, o0, e0) = self.first?;
        let best = self.best()?;
        let span = best.t4.saturating_sub(t0);
        if span <= 0 {
            return None;
        }
        let ppm = (best.offset_ns().saturating_sub(o0)) as f64 / span as f64 * 1e6;
        let error = e0.saturating_add((best.delay_ns().max(0) + 1) / 2) as f64 / span as f64 * 1e6;
        Some((ppm, error, span))
    }

    /// Steers `clock` towards `physical + offset` of the estimate now:
    /// a step the first time, a slew afterwards, and marks it synchronised
    /// with the estimate's error. Once the frequency is known to within
    /// [`MAX_FREQUENCY_UNCERTAINTY_PPM`], it is applied too (capped by the
    /// clock's [`TimeSourceConfig::max_frequency_ppm`](super::TimeSourceConfig::max_frequency_ppm)),
    /// and the estimate's offset is carried forward from its sample to now
    /// at that frequency; until then the clock's frequency is left as it
    /// is. Returns the correction made, if any.
    pub fn discipline(&self, clock: &TimeSource) -> Option<(i64, Correction)> {
        let r = clock.read();
        let est = self.estimate(r.physical_ns)?;
        let mut offset = est.offset_ns;
        if let Some((ppm, error, _)) = self.frequency() {
            if error <= MAX_FREQUENCY_UNCERTAINTY_PPM {
                let applied = clock.set_frequency_ppm(ppm);
                let age = r.physical_ns.saturating_sub(est.at_ns).max(0) as f64;
                offset = offset.saturating_add((age * applied * 1e-6) as i64);
            }
        }
        let target = r.physical_ns.saturating_add(offset);
        // Correct towards the target from the clock's own value (not the
        // held reading), counting what is still being slewed in.
        let current = r.unheld_ns().saturating_add(clock.slew_remaining_ns());
        let delta = target.saturating_sub(current);
        let how = clock.adjust(delta);
        clock.mark_synchronised(est.error_ns);
        Some((delta, how))
    }
}

/// The frequency correction is applied only once its uncertainty is at
/// most this (ppm): a wrong frequency would add drift instead of removing
/// it.
pub const MAX_FREQUENCY_UNCERTAINTY_PPM: f64 = 10.0;

impl Default for SyncFilter {
    fn default() -> Self {
        SyncFilter::new(500.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::time_source::{ManualClock, Monotonic as _, Skew, TimeSourceConfig};
    use std::sync::Arc;

    const US: i64 = 1_000;
    const MS: i64 = 1_000_000;

    #[test]
    fn offset_and_delay_follow_the_formulas() {
        // Server 100 ms ahead; 30 us out, 10 us in the server, 50 us back.
        let s = Sample {
            t1: 0,
            t2: 100 * MS + 30 * US,
            t3: 100 * MS + 40 * US,
            t4: 90 * US,
            server_error_ns: 0,
        };
        assert_eq!(s.delay_ns(), 80 * US);
        // Asymmetry (30 vs 50 us) puts the measurement 10 us off: within delay/2.
        assert_eq!(s.offset_ns(), 100 * MS - 10 * US);
        assert!(s.validate().is_ok());
    }

    #[test]
    fn impossible_samples_are_rejected_and_counted() {
        let mut f = SyncFilter::default();
        let neg = Sample {
            t1: 0,
            t2: 10,
            t3: 1_000,
            t4: 100,
            server_error_ns: 0,
        };
        assert!(matches!(f.add(neg), Err(SampleError::NegativeDelay(_))));
        let years = Sample {
            t1: 0,
            t2: 20 * ABSURD_OFFSET_NS,
            t3: 20 * ABSURD_OFFSET_NS,
            t4: 10,
            server_error_ns: 0,
        };
        assert!(matches!(f.add(years), Err(SampleError::Absurd(_))));
        let back = Sample {
            t1: 10,
            t2: 0,
            t3: 0,
            t4: 5,
            server_error_ns: 0,
        };
        assert!(matches!(f.add(back), Err(SampleError::Backwards(_))));
        assert_eq!(f.rejected(), 3);
        assert!(f.estimate(0).is_none());
    }

    /// A true clock, a client at +250 ms and +100 ppm over it, a filter,
    /// and a deterministic pseudo-random source from `seed` (`rand(n)` in
    /// `0..n`).
    fn simulation(
        seed: u64,
    ) -> (
        Arc<ManualClock>,
        TimeSource,
        SyncFilter,
        impl FnMut(i64) -> i64,
    ) {
        let truth = Arc::new(ManualClock::new(1_700_000_000 * 1_000 * MS));
        let client = TimeSource::new(
            truth.clone(),
            Skew::new(250, 100.0),
            TimeSourceConfig::default(),
        );
        let mut seed = seed;
        let rand = move |n: i64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((seed >> 33) as i64).rem_euclid(n)
        };
        (truth, client, SyncFilter::new(500.0), rand)
    }

    /// One way's latency: 20 us plus a queueing delay, up to 30 us, or up
    /// to 2 ms one time in ten.
    fn one_way(rand: &mut impl FnMut(i64) -> i64) -> i64 {
        20 * US
            + if rand(10) == 0 {
                rand(2 * MS)
            } else {
                rand(30 * US)
            }
    }

    /// One exchange of `client` with the true server over the simulated
    /// network, whose request takes `out`, the server `serve` and the
    /// reply `back` (ns of true time); its sample is added to `f`.
    fn exchange(
        truth: &ManualClock,
        client: &TimeSource,
        f: &mut SyncFilter,
        [out, serve, back]: [i64; 3],
    ) {
        let t1 = client.physical_ns();
        truth.advance(out);
        let t2 = truth.now_ns();
        truth.advance(serve);
        let t3 = truth.now_ns();
        truth.advance(back);
        let t4 = client.physical_ns();
        f.add(Sample {
            t1,
            t2,
            t3,
            t4,
            server_error_ns: 0,
        })
        .expect("simulated samples are valid");
    }

    /// A deterministic network: each way takes a base latency plus a
    /// pseudo-random queueing delay (up to 2 ms, heavy-tailed), with the
    /// client at +250 ms and +100 ppm against a true server.
    #[test]
    fn the_interval_always_contains_the_true_offset() {
        let (truth, client, mut f, mut rand) = simulation(42);
        let mut errors = Vec::new();
        for i in 0..1_000 {
            let (out, serve, back) = (one_way(&mut rand), rand(5 * US), one_way(&mut rand));
            exchange(&truth, &client, &mut f, [out, serve, back]);
            // Between samples, some idle time.
            truth.advance(rand(MS));
            let now_phys = client.physical_ns();
            let est = f.estimate(now_phys).expect("a sample was kept");
            let true_offset = truth.now_ns() - now_phys;
            assert!(
                est.contains(true_offset),
                "sample {i}: {true_offset} not in {:?}",
                est.interval()
            );
            errors.push((est.offset_ns - true_offset).abs());
            f.discipline(&client);
        }
        errors.sort_unstable();
        let p99 = errors[errors.len() * 99 / 100];
        assert!(p99 < 100 * US, "p99 error {p99} ns");
        // The corrected clock followed: it stepped once, then slewed.
        let off = client.now_ns() - truth.now_ns();
        assert!(off.abs() < MS, "corrected clock {off} ns from true");
        // The frequency error shows (+100 ppm client: server appears -100).
        let ppm = f.frequency_ppm(100 * MS).expect("span long enough");
        // Both ends are minimum-delay samples (error ~15 us each) over
        // about 1.5 s of simulated time: within 20 ppm.
        assert!((ppm + 100.0).abs() < 20.0, "frequency {ppm} ppm");
    }

    /// A client whose physical clock runs 100 ppm fast samples a true
    /// server every 5 ms for 10 s of simulated time: the frequency
    /// correction is applied (about -100 ppm), and then, left alone for
    /// 10 s, the corrected clock drifts by far less than the 1 ms an
    /// uncorrected one would.
    #[test]
    fn the_frequency_is_corrected() {
        let (truth, client, mut f, mut rand) = simulation(7);
        for _ in 0..2_000 {
            let (out, back) = (20 * US + rand(20 * US), 20 * US + rand(20 * US));
            exchange(&truth, &client, &mut f, [out, 2 * US, back]);
            f.discipline(&client);
            truth.advance(5 * MS);
        }
        let ppm = client.frequency_ppm();
        assert!((ppm + 100.0).abs() < 5.0, "frequency correction {ppm} ppm");
        let drift = |c: &TimeSource| c.now_ns() - truth.now_ns() + c.slew_remaining_ns();
        let before = drift(&client);
        assert!(before.abs() < 100 * US, "{before} ns off after syncing");
        truth.advance(10_000 * MS);
        let moved = drift(&client) - before;
        assert!(moved.abs() < 100 * US, "drifted {moved} ns in 10 s");
    }
}
