//! Retransmission timeout: the Jacobson/Karels estimator (RFC 6298) and
//! exponential backoff with jitter.
//!
//! The estimator keeps a smoothed round-trip time (SRTT) and its mean
//! deviation (RTTVAR); the timeout is `SRTT + 4 * RTTVAR`, clamped to
//! `[min_rto, max_rto]`. Samples come only from exchanges answered while a
//! single copy had been sent (Karn's rule): with two copies out, an answer
//! cannot be matched to the copy that caused it. Before the first sample
//! the timeout is the configured initial one.

use std::time::Duration;

/// Jitter applied to every backoff interval: the interval is multiplied by
/// a uniform factor in `[1 - JITTER, 1 + JITTER]`.
pub(crate) const JITTER: f64 = 0.25;

/// Round-trip estimator of one channel.
#[derive(Debug, Clone)]
pub(crate) struct RtoEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    min_rto: Duration,
    max_rto: Duration,
}

impl RtoEstimator {
    /// An estimator without samples: its timeout is `initial` (clamped).
    pub(crate) fn new(initial: Duration, min_rto: Duration, max_rto: Duration) -> RtoEstimator {
        RtoEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
            rto: initial.clamp(min_rto, max_rto),
            min_rto,
            max_rto,
        }
    }

    /// Feeds one round-trip sample (RFC 6298, section 2).
    pub(crate) fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(rtt);
                // RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R|; SRTT = 7/8 SRTT + 1/8 R.
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(rtt);
        self.rto = srtt
            .saturating_add(self.rttvar.saturating_mul(4))
            .clamp(self.min_rto, self.max_rto);
    }

    /// The current retransmission timeout.
    pub(crate) fn rto(&self) -> Duration {
        self.rto
    }

    /// The smoothed round-trip time, once there is a sample.
    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// The largest timeout.
    pub(crate) fn max_rto(&self) -> Duration {
        self.max_rto
    }

    /// How long to wait after sending copy number `attempt` (1 for the
    /// first) of a request: `RTO * 2^(attempt-1)`, jittered by `factor`
    /// (from [`jitter_factor`]), within `[min_rto, max_rto]`: jitter never
    /// shortens a wait below the smallest timeout.
    pub(crate) fn backoff(&self, attempt: u32, factor: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        let base = self.rto.saturating_mul(1u32 << exp);
        jittered(base, factor).max(self.min_rto).min(self.max_rto)
    }
}

/// `base * factor`, saturating.
pub(crate) fn jittered(base: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(base.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

/// A random factor in `[1 - JITTER, 1 + JITTER]`.
pub(crate) fn jitter_factor() -> f64 {
    use rand::Rng;
    rand::rng().random_range((1.0 - JITTER)..=(1.0 + JITTER))
}

/// Interval between polls of a request the server is known to have (after
/// IN_PROGRESS or ACCEPT): starts at `2 * RTO` and doubles up to `max_rto`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PollInterval {
    next: Duration,
    max: Duration,
}

impl PollInterval {
    /// The schedule starting from the estimator's current state.
    pub(crate) fn start(rto: &RtoEstimator) -> PollInterval {
        PollInterval {
            next: rto.rto().saturating_mul(2).min(rto.max_rto()),
            max: rto.max_rto(),
        }
    }

    /// The next interval (jittered), doubling the one after.
    pub(crate) fn next(&mut self, factor: f64) -> Duration {
        let current = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        jittered(current, factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn initial_rto_until_first_sample() {
        let e = RtoEstimator::new(ms(100), ms(5), ms(1000));
        assert_eq!(e.rto(), ms(100));
        assert_eq!(e.srtt(), None);
        let e = RtoEstimator::new(ms(2), ms(5), ms(1000));
        assert_eq!(e.rto(), ms(5), "initial is clamped to min");
    }

    #[test]
    fn first_sample_sets_srtt_and_half_variance() {
        let mut e = RtoEstimator::new(ms(100), ms(1), ms(10_000));
        e.sample(ms(40));
        assert_eq!(e.srtt(), Some(ms(40)));
        // RTO = 40 + 4 * 20
        assert_eq!(e.rto(), ms(120));
    }

    #[test]
    fn later_samples_are_smoothed() {
        let mut e = RtoEstimator::new(ms(100), ms(1), ms(10_000));
        e.sample(ms(40));
        e.sample(ms(80));
        // RTTVAR = (3*20 + 40)/4 = 25; SRTT = (7*40 + 80)/8 = 45; RTO = 45 + 100
        assert_eq!(e.srtt(), Some(ms(45)));
        assert_eq!(e.rto(), ms(145));
    }

    #[test]
    fn converges_and_clamps() {
        let mut e = RtoEstimator::new(ms(100), ms(5), ms(1000));
        for _ in 0..200 {
            e.sample(Duration::from_micros(50));
        }
        assert_eq!(e.rto(), ms(5), "clamped to min_rto");
        let srtt = e.srtt().unwrap_or_default();
        assert!(
            srtt >= Duration::from_micros(49) && srtt <= Duration::from_micros(51),
            "{srtt:?}"
        );
        for _ in 0..50 {
            e.sample(ms(5000));
        }
        assert_eq!(e.rto(), ms(1000), "clamped to max_rto");
    }

    #[test]
    fn backoff_doubles_with_jitter_and_cap() {
        let e = RtoEstimator::new(ms(100), ms(5), ms(1000));
        assert_eq!(e.backoff(1, 1.0), ms(100));
        assert_eq!(e.backoff(2, 1.0), ms(200));
        assert_eq!(e.backoff(3, 1.0), ms(400));
        assert_eq!(e.backoff(5, 1.0), ms(1000), "capped");
        assert_eq!(e.backoff(u32::MAX, 1.0), ms(1000), "no overflow");
        assert_eq!(e.backoff(2, 0.75), ms(150));
        assert_eq!(e.backoff(2, 1.25), ms(250));
        let floor = RtoEstimator::new(ms(5), ms(5), ms(1000));
        assert_eq!(floor.backoff(1, 0.75), ms(5), "jitter stays above min_rto");
        for _ in 0..100 {
            let f = jitter_factor();
            assert!((0.75..=1.25).contains(&f));
        }
    }

    #[test]
    fn poll_interval_starts_at_twice_rto_and_doubles_to_max() {
        let e = RtoEstimator::new(ms(100), ms(5), ms(1000));
        let mut p = PollInterval::start(&e);
        assert_eq!(p.next(1.0), ms(200));
        assert_eq!(p.next(1.0), ms(400));
        assert_eq!(p.next(1.0), ms(800));
        assert_eq!(p.next(1.0), ms(1000));
        assert_eq!(p.next(1.25), ms(1000), "jitter never exceeds the cap");
    }
}
