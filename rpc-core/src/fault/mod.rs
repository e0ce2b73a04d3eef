//! Fault injection: loss, duplication, reordering and delay of datagrams,
//! decided from a seeded random number generator so that a run can be
//! repeated.
//!
//! The pieces:
//! - [`FaultConfig`]: what happens to the datagrams of one direction (or
//!   one link) and the seed of its generator;
//! - [`Decider`]: turns a [`FaultConfig`] into one [`Decision`] per datagram
//!   (always the same number of random draws per datagram, so changing one
//!   probability does not shift the others' decisions);
//! - a scheduler (crate-private) that applies the decisions: it holds the
//!   delayed and reordered datagrams in a bounded queue and releases them on
//!   time, counting everything in [`FaultStats`];
//! - [`FaultProxy`]: a UDP proxy between clients and one upstream address
//!   that applies a [`FaultConfig`] per direction; its faults can be
//!   changed while it runs, and a blackhole cuts both directions (the
//!   `rpc-fault-proxy` binary offers the same through commands on stdin);
//! - [`crate::transport::mem::MemNetwork`]: an in-memory datagram network
//!   that uses the same decider and scheduler per link, so tests over the
//!   in-memory network and over the proxy see the same kind of faults.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rpc_core::fault::FaultError> {
//! use rpc_core::fault::{Delay, FaultConfig, FaultProxy, ProxyConfig, ProxyFaults};
//! use std::time::Duration;
//!
//! let faults = FaultConfig::seeded(42).loss(0.2).duplicate(0.1).delay(Delay::uniform(Duration::ZERO, Duration::from_millis(5)));
//! let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], 9001));
//! let proxy = FaultProxy::loopback(upstream, ProxyConfig::new(ProxyFaults::symmetric(faults))).await?;
//! println!("clients talk to {}", proxy.local_addr());
//! let stats = proxy.shutdown().await;
//! println!("dropped on the way up: {}", stats.client_to_server.dropped);
//! # Ok(()) }
//! ```

mod proxy;
pub(crate) mod shaper;

pub use proxy::{FaultProxy, ProxyConfig, ProxyFaults, ProxyStats};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// An error of the fault-injection tools.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FaultError {
    /// A probability is not a number within `0.0..=1.0`.
    #[error("{name} probability {value} is not within 0..=1")]
    Probability {
        /// Which probability (`loss`, `duplicate`, `reorder`).
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// A delay range whose minimum exceeds its maximum.
    #[error("delay minimum {min:?} exceeds maximum {max:?}")]
    Delay {
        /// The minimum given.
        min: Duration,
        /// The maximum given.
        max: Duration,
    },
    /// A socket could not be bound.
    #[error("cannot bind {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Another setting is not usable.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    /// The proxy has stopped.
    #[error("proxy has shut down")]
    Closed,
}

/// The longest delay or reorder hold applied; longer settings are refused
/// by [`FaultConfig::validate`] and capped by [`FaultConfig::clamped`].
pub const MAX_DELAY: Duration = Duration::from_secs(3600);

/// How long a datagram is delayed: uniformly between `min` and `max`
/// (both included), drawn per datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Delay {
    /// Shortest delay.
    pub min: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Delay {
    /// No delay.
    pub const NONE: Delay = Delay {
        min: Duration::ZERO,
        max: Duration::ZERO,
    };

    /// Always exactly `delay`.
    pub fn fixed(delay: Duration) -> Delay {
        Delay {
            min: delay,
            max: delay,
        }
    }

    /// Uniform between `min` and `max` (swapped if given the wrong way round).
    pub fn uniform(min: Duration, max: Duration) -> Delay {
        if min <= max {
            Delay { min, max }
        } else {
            Delay { min: max, max: min }
        }
    }

    /// `base` plus or minus up to `jitter` (never below zero).
    pub fn jitter(base: Duration, jitter: Duration) -> Delay {
        Delay {
            min: base.saturating_sub(jitter),
            max: base.saturating_add(jitter),
        }
    }

    /// Whether this never delays.
    pub fn is_zero(&self) -> bool {
        self.max.is_zero()
    }

    /// The delay for a uniform draw `u` in `0.0..1.0`, at most [`MAX_DELAY`].
    fn at(&self, u: f64) -> Duration {
        let (min, max) = (self.min.min(MAX_DELAY), self.max.min(MAX_DELAY));
        if max <= min {
            return min;
        }
        let span = (max - min).as_nanos() as f64;
        // `u < 1`, so this stays within the span; the cast saturates anyway.
        min + Duration::from_nanos((span * u) as u64)
    }
}

/// What happens to the datagrams of one direction (or one link).
///
/// Probabilities are per datagram and independent: a datagram is lost with
/// probability `loss`; a datagram that is not lost is duplicated with
/// probability `duplicate` (the copy gets its own delay) and held back for
/// reordering with probability `reorder`: it then waits until the next
/// datagram on the same path has overtaken it, or at most `reorder_hold`.
/// Every datagram (and copy) is delayed by a draw from `delay`; different
/// delays reorder datagrams too, as on a real network.
///
/// Build with the chained setters:
/// `FaultConfig::seeded(7).loss(0.2).duplicate(0.1).reorder(0.05)`.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability that a datagram is held back until a later one passed it.
    pub reorder: f64,
    /// Longest time a datagram held back for reordering waits for a later
    /// datagram to overtake it (default 10 ms).
    pub reorder_hold: Duration,
    /// Delay added to every datagram.
    pub delay: Delay,
    /// Probability that a datagram (each copy of a duplicated one on its
    /// own) is made *late*: delayed by another `late_delay` while later
    /// datagrams pass it. A late first copy of a request arriving after its
    /// reply, its acknowledgement or a server restart is the ordering that
    /// at-most-once must survive.
    pub late: f64,
    /// The extra delay of a late datagram (default 1 to 20 ms).
    pub late_delay: Delay,
    /// Seed of the random number generator; the same seed and the same
    /// sequence of datagrams give the same decisions.
    pub seed: u64,
}

impl Default for FaultConfig {
    fn default() -> FaultConfig {
        FaultConfig::none()
    }
}

impl FaultConfig {
    /// No faults at all (seed 0).
    pub fn none() -> FaultConfig {
        FaultConfig::seeded(0)
    }

    /// No faults yet, with the given seed; add faults with the setters.
    pub fn seeded(seed: u64) -> FaultConfig {
        FaultConfig {
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_hold: Duration::from_millis(10),
            delay: Delay::NONE,
            late: 0.0,
            late_delay: Delay::uniform(Duration::from_millis(1), Duration::from_millis(20)),
            seed,
        }
    }

    crate::setters::field_setters! {
        /// Sets the loss probability.
        loss(probability: f64) => loss;
        /// Sets the duplication probability.
        duplicate(probability: f64) => duplicate;
        /// Sets the reordering probability.
        reorder(probability: f64) => reorder;
        /// Sets the longest wait of a datagram held back for reordering.
        reorder_hold(hold: Duration) => reorder_hold;
        /// Sets the delay.
        delay(delay: Delay) => delay;
        /// Sets the seed.
        seed(seed: u64) => seed;
    }

    /// Makes a datagram late with `probability`, by an extra `delay`
    /// (see [`FaultConfig::late`]).
    pub fn late(mut self, probability: f64, delay: Delay) -> FaultConfig {
        self.late = probability;
        self.late_delay = delay;
        self
    }

    /// Whether this configuration changes nothing.
    pub fn is_noop(&self) -> bool {
        self.loss <= 0.0
            && self.duplicate <= 0.0
            && self.reorder <= 0.0
            && self.late <= 0.0
            && self.delay.is_zero()
    }

    /// This configuration with every setting brought into range:
    /// probabilities to `0..=1` (NaN to 0), delays and the hold to at most
    /// [`MAX_DELAY`], a reversed delay range put the right way round.
    pub fn clamped(&self) -> FaultConfig {
        let p = |v: f64| if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
        let d = |v: Duration| v.min(MAX_DELAY);
        FaultConfig {
            loss: p(self.loss),
            duplicate: p(self.duplicate),
            reorder: p(self.reorder),
            reorder_hold: d(self.reorder_hold),
            delay: Delay::uniform(d(self.delay.min), d(self.delay.max)),
            late: p(self.late),
            late_delay: Delay::uniform(d(self.late_delay.min), d(self.late_delay.max)),
            seed: self.seed,
        }
    }

    /// Checks the probabilities, the delay range and the hold.
    ///
    /// # Errors
    /// [`FaultError::Probability`] for a probability outside `0..=1` (or
    /// NaN), [`FaultError::Delay`] when `delay.min > delay.max`,
    /// [`FaultError::Config`] for a delay or hold above [`MAX_DELAY`].
    pub fn validate(&self) -> Result<(), FaultError> {
        for (name, value) in [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
            ("late", self.late),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(FaultError::Probability { name, value });
            }
        }
        if self.delay.min > self.delay.max {
            return Err(FaultError::Delay {
                min: self.delay.min,
                max: self.delay.max,
            });
        }
        if self.late_delay.min > self.late_delay.max {
            return Err(FaultError::Delay {
                min: self.late_delay.min,
                max: self.late_delay.max,
            });
        }
        if self.delay.max > MAX_DELAY
            || self.late_delay.max > MAX_DELAY
            || self.reorder_hold > MAX_DELAY
        {
            return Err(FaultError::Config(
                "delays and reorder holds are limited to one hour",
            ));
        }
        Ok(())
    }
}

/// What happens to one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The datagram is lost (the other fields are then meaningless).
    pub drop: bool,
    /// The datagram is delivered twice.
    pub duplicate: bool,
    /// The datagram is held back until a later one overtook it.
    pub reorder: bool,
    /// Delay of the datagram.
    pub delay: Duration,
    /// Delay of the copy (when `duplicate`).
    pub copy_delay: Duration,
}

/// Draws one [`Decision`] per datagram from a seeded generator.
///
/// Every decision consumes exactly five draws (loss, duplication, reorder,
/// delay, copy delay) from one generator and four (late or not, and by how
/// much, for the datagram and its copy) from a second one, whatever the
/// outcome, so the n-th datagram's fate depends only on the seed, n and
/// the probabilities (and a seed gives the same losses and duplicates with
/// or without late datagrams).
#[derive(Debug, Clone)]
pub struct Decider {
    config: FaultConfig,
    rng: StdRng,
    late_rng: StdRng,
}

impl Decider {
    /// A decider for `config`, seeded with `config.seed`.
    pub fn new(config: FaultConfig) -> Decider {
        let rng = StdRng::seed_from_u64(config.seed);
        let late_rng = StdRng::seed_from_u64(config.seed ^ 0x6c61_7465_6c61_7465);
        Decider {
            config,
            rng,
            late_rng,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &FaultConfig {
        &self.config
    }

    /// The fate of the next datagram.
    pub fn decide(&mut self) -> Decision {
        let loss: f64 = self.rng.random();
        let dup: f64 = self.rng.random();
        let reorder: f64 = self.rng.random();
        let delay: f64 = self.rng.random();
        let copy_delay: f64 = self.rng.random();
        let mut late = || {
            let (is_late, by): (f64, f64) = (self.late_rng.random(), self.late_rng.random());
            if is_late < self.config.late {
                self.config.late_delay.at(by)
            } else {
                Duration::ZERO
            }
        };
        let (late, copy_late) = (late(), late());
        let c = &self.config;
        Decision {
            drop: loss < c.loss,
            duplicate: dup < c.duplicate,
            reorder: reorder < c.reorder,
            delay: c.delay.at(delay) + late,
            copy_delay: c.delay.at(copy_delay) + copy_late,
        }
    }
}

/// Counters of one direction or link, as a snapshot.
///
/// `received + duplicated = forwarded + dropped + overflow + (datagrams
/// still queued)`; `blackholed` is part of `dropped`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Datagrams that entered the path.
    pub received: u64,
    /// Datagrams (copies included) that left the path towards their target.
    pub forwarded: u64,
    /// Datagrams lost: by the `loss` decision, or (copies included) to a
    /// blackhole ([`FaultProxy::blackhole`]).
    pub dropped: u64,
    /// Datagrams delivered twice.
    pub duplicated: u64,
    /// Datagrams held back that a later datagram actually overtook.
    pub reordered: u64,
    /// Datagrams given a non-zero delay.
    pub delayed: u64,
    /// Datagrams (copies included) dropped because the queue was full.
    pub overflow: u64,
    /// Of `dropped`, the datagrams (copies included) dropped to a blackhole:
    /// on arrival, or when they fell due while it was on.
    pub blackholed: u64,
}

impl FaultStats {
    /// Field-wise sum.
    pub fn add(&self, other: &FaultStats) -> FaultStats {
        FaultStats {
            received: self.received + other.received,
            forwarded: self.forwarded + other.forwarded,
            dropped: self.dropped + other.dropped,
            duplicated: self.duplicated + other.duplicated,
            reordered: self.reordered + other.reordered,
            delayed: self.delayed + other.delayed,
            overflow: self.overflow + other.overflow,
            blackholed: self.blackholed + other.blackholed,
        }
    }
}

/// The live counters behind a [`FaultStats`].
#[derive(Debug, Default)]
pub(crate) struct FaultCounters {
    pub(crate) received: AtomicU64,
    pub(crate) forwarded: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) duplicated: AtomicU64,
    pub(crate) reordered: AtomicU64,
    pub(crate) delayed: AtomicU64,
    pub(crate) overflow: AtomicU64,
    pub(crate) blackholed: AtomicU64,
}

impl FaultCounters {
    pub(crate) fn snapshot(&self) -> FaultStats {
        FaultStats {
            received: self.received.load(Ordering::Relaxed),
            forwarded: self.forwarded.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            duplicated: self.duplicated.load(Ordering::Relaxed),
            reordered: self.reordered.load(Ordering::Relaxed),
            delayed: self.delayed.load(Ordering::Relaxed),
            overflow: self.overflow.load(Ordering::Relaxed),
            blackholed: self.blackholed.load(Ordering::Relaxed),
        }
    }
}
