//! The Berkeley algorithm, sans I/O: the master's arithmetic
//! ([`RoundPolls`], [`plan_round`]) and the member's guard against applying
//! an adjustment twice ([`AdjustLedger`]).
//!
//! One round has one round id and sends each member one adjustment. Its
//! master reads its clock (T1) and polls every member with one fan-out
//! group call, taking each member's arrival as T4 = T1 + that member's
//! round trip; it does so a few times in a row ([`RoundPolls`]: 4 by
//! default, at most [`WINDOW`]), and keeps each member's sample of minimum
//! delay, as NTP's filter does ([`SyncFilter`]): a poll delayed on one side
//! (a loaded machine) would put the round-trip compensation off by up to
//! half that delay, and the least delayed of several is the least off. A
//! member's offset from the master is then estimated as in NTP,
//! `((T2-T1)+(T3-T4))/2`. Readings that cannot be true (negative delay,
//! years off) are excluded as absurd; of the rest, those further than a
//! bound from the median are excluded as outliers. The master (offset 0)
//! and the members kept are averaged, and each gets its own adjustment:
//! `mean - offset`.
//!
//! Round ids increase strictly across masters: [`round_id`] puts the
//! master's election term in the high 32 bits, so a new master's rounds
//! come after every round of the old one.

use super::sync::{Sample, SampleError, SyncFilter, WINDOW};
use std::collections::BTreeMap;
use std::fmt;

/// One member's answer to a poll, on the master's clock (T1, T4) and the
/// member's (T2, T3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberReading {
    /// The member's id.
    pub id: u32,
    /// The exchange.
    pub sample: Sample,
}

/// Why a member was left out of a round's average.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exclusion {
    /// Its timestamps cannot be true.
    Absurd(SampleError),
    /// Its offset is further than the bound from the median.
    Outlier {
        /// Its offset from the master, ns.
        offset_ns: i64,
        /// Its distance from the median, ns.
        distance_ns: i64,
    },
    /// It did not answer the poll.
    NoAnswer,
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exclusion::Absurd(e) => write!(f, "absurd: {e}"),
            Exclusion::Outlier {
                offset_ns,
                distance_ns,
            } => write!(
                f,
                "outlier: {offset_ns} ns from the master, {distance_ns} ns from the median"
            ),
            Exclusion::NoAnswer => f.write_str("no answer"),
        }
    }
}

/// The answers to one round's polls, each member's kept in a
/// [`SyncFilter`]: a member's reading for the round is its sample of
/// minimum delay (or, when none of its answers could be true, its last
/// answer, which [`plan_round`] then excludes as absurd).
#[derive(Debug, Clone, Default)]
pub struct RoundPolls {
    members: BTreeMap<u32, MemberPolls>,
}

#[derive(Debug, Clone, Default)]
struct MemberPolls {
    filter: SyncFilter,
    /// The last answer that could not be true.
    absurd: Option<Sample>,
    answers: u32,
}

impl RoundPolls {
    /// The polls of a round over `members` (the master not among them).
    pub fn new(members: impl IntoIterator<Item = u32>) -> RoundPolls {
        RoundPolls {
            members: members
                .into_iter()
                .map(|id| (id, MemberPolls::default()))
                .collect(),
        }
    }

    /// Records member `id`'s answer to one poll. The filter keeps
    /// [`WINDOW`] samples, so a round polls at most that many times.
    pub fn answer(&mut self, id: u32, sample: Sample) {
        let m = self.members.entry(id).or_default();
        m.answers = m.answers.saturating_add(1);
        if m.filter.add(sample).is_err() {
            m.absurd = Some(sample);
        }
    }

    /// Members that answered at least one poll.
    pub fn answered(&self) -> usize {
        self.members.values().filter(|m| m.answers > 0).count()
    }

    /// Each member's reading (its minimum-delay sample), and the members
    /// that answered no poll.
    pub fn readings(&self) -> (Vec<MemberReading>, Vec<u32>) {
        let mut readings = Vec::new();
        let mut silent = Vec::new();
        for (&id, m) in &self.members {
            match m.filter.best().copied().or(m.absurd) {
                Some(sample) => readings.push(MemberReading { id, sample }),
                None => silent.push(id),
            }
        }
        (readings, silent)
    }
}

/// Most polls of each member in one round: [`WINDOW`], what the filter
/// keeps (`clock-node --polls` takes 1 to this).
pub const MAX_POLLS: u32 = {
    assert!(WINDOW <= u32::MAX as usize);
    WINDOW as u32
};

/// Polls of one round: `asked`, at least 1 and at most [`MAX_POLLS`].
pub fn polls_per_round(asked: u32) -> u32 {
    asked.clamp(1, MAX_POLLS)
}

/// Limits of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BerkeleyConfig {
    /// Members further than this from the median are outliers (default 1 s).
    pub outlier_bound_ns: i64,
    /// Whether outliers (not absurd members) still get an adjustment
    /// towards the mean (default true: their clock is wrong, not their
    /// answer).
    pub correct_outliers: bool,
}

impl Default for BerkeleyConfig {
    fn default() -> Self {
        BerkeleyConfig {
            outlier_bound_ns: 1_000_000_000,
            correct_outliers: true,
        }
    }
}

/// What a round decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundPlan {
    /// Each member's estimated offset from the master (the master: 0), for
    /// members with a plausible reading.
    pub offsets: Vec<(u32, i64)>,
    /// The mean offset of the master and the members kept.
    pub mean_ns: i64,
    /// Each member's adjustment (the master's own included).
    pub adjustments: Vec<(u32, i64)>,
    /// Who was left out of the average, and why.
    pub excluded: Vec<(u32, Exclusion)>,
}

/// The master `master`'s round over `readings` (members that answered)
/// and `silent` (members that did not).
pub fn plan_round(
    master: u32,
    readings: &[MemberReading],
    silent: &[u32],
    config: &BerkeleyConfig,
) -> RoundPlan {
    let mut excluded: Vec<(u32, Exclusion)> =
        silent.iter().map(|&id| (id, Exclusion::NoAnswer)).collect();
    let mut offsets = vec![(master, 0i64)];
    for r in readings {
        match r.sample.validate() {
            Ok(()) => offsets.push((r.id, r.sample.offset_ns())),
            Err(e) => excluded.push((r.id, Exclusion::Absurd(e))),
        }
    }
    let mut sorted: Vec<i64> = offsets.iter().map(|&(_, o)| o).collect();
    sorted.sort_unstable();
    let median = median(&sorted);
    let mut kept = Vec::new();
    for &(id, o) in &offsets {
        let distance = o.saturating_sub(median).saturating_abs();
        if distance > config.outlier_bound_ns {
            excluded.push((
                id,
                Exclusion::Outlier {
                    offset_ns: o,
                    distance_ns: distance,
                },
            ));
        } else {
            kept.push(o);
        }
    }
    let mean = if kept.is_empty() {
        0
    } else {
        let sum: i128 = kept.iter().map(|&o| i128::from(o)).sum();
        i64::try_from(sum / kept.len() as i128).unwrap_or(0)
    };
    let adjustments = offsets
        .iter()
        .filter(|(id, _)| {
            config.correct_outliers
                || !excluded
                    .iter()
                    .any(|(x, e)| x == id && matches!(e, Exclusion::Outlier { .. }))
        })
        .map(|&(id, o)| (id, mean.saturating_sub(o)))
        .collect();
    RoundPlan {
        offsets,
        mean_ns: mean,
        adjustments,
        excluded,
    }
}

fn median(sorted: &[i64]) -> i64 {
    match sorted.len() {
        0 => 0,
        n if n % 2 == 1 => sorted[n / 2],
        n => {
            let (a, b) = (i128::from(sorted[n / 2 - 1]), i128::from(sorted[n / 2]));
            i64::try_from((a + b) / 2).unwrap_or(0)
        }
    }
}

/// The id of round `seq` of a master in election term `term`.
pub fn round_id(term: u32, seq: u32) -> u64 {
    (u64::from(term) << 32) | u64::from(seq)
}

/// Why an adjustment was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Ignored {
    /// This round's adjustment was applied already.
    #[error("round {0} was applied already")]
    Repeat(u64),
    /// The round is older than the last one applied.
    #[error("round {round} is older than the last applied, {last}")]
    Old {
        /// The adjustment's round.
        round: u64,
        /// The last applied.
        last: u64,
    },
}

/// A member's record of applied rounds: each round at most once, never
/// one older than the last.
#[derive(Debug, Clone, Default)]
pub struct AdjustLedger {
    last: Option<u64>,
    ignored: u64,
}

impl AdjustLedger {
    /// Accepts `round` if it is newer than every round applied.
    ///
    /// # Errors
    /// [`Ignored`] otherwise (counted).
    pub fn accept(&mut self, round: u64) -> Result<(), Ignored> {
        match self.last {
            Some(last) if round == last => {
                self.ignored += 1;
                Err(Ignored::Repeat(round))
            }
            Some(last) if round < last => {
                self.ignored += 1;
                Err(Ignored::Old { round, last })
            }
            _ => {
                self.last = Some(round);
                Ok(())
            }
        }
    }

    /// The last round applied.
    pub fn last(&self) -> Option<u64> {
        self.last
    }

    /// Adjustments ignored so far.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;
    const US: i64 = 1_000;

    /// A member `offset` from the master, polled at master time `t1` with
    /// `out`/`back` one-way delays.
    fn reading(id: u32, offset: i64, t1: i64, out: i64, back: i64) -> MemberReading {
        let t2 = t1 + out + offset;
        let t3 = t2 + 10 * US;
        MemberReading {
            id,
            sample: Sample {
                t1,
                t2,
                t3,
                t4: t1 + out + 10 * US + back,
                server_error_ns: 0,
            },
        }
    }

    #[test]
    fn round_trips_are_compensated_outliers_and_absurd_excluded() {
        // Master 4 at 0; members at -300, -120, +80, +5000 ms.
        let readings = [
            reading(1, -300 * MS, 0, 100 * US, 100 * US),
            reading(2, -120 * MS, 0, 2 * MS, 2 * MS), // slow but symmetric
            reading(3, 80 * MS, 0, 50 * US, 50 * US),
            reading(5, 5_000 * MS, 0, 100 * US, 100 * US),
        ];
        let plan = plan_round(4, &readings, &[6], &BerkeleyConfig::default());
        assert!(plan.offsets.contains(&(2, -120 * MS)), "{:?}", plan.offsets);
        let mean = (-300 - 120 + 80) * MS / 4;
        assert_eq!(plan.mean_ns, mean);
        let adj = |id| plan.adjustments.iter().find(|a| a.0 == id).map(|a| a.1);
        assert_eq!(adj(4), Some(mean));
        assert_eq!(adj(1), Some(mean + 300 * MS));
        assert_eq!(adj(5), Some(mean - 5_000 * MS), "outliers are corrected");
        assert!(plan
            .excluded
            .iter()
            .any(|(id, e)| *id == 5 && matches!(e, Exclusion::Outlier { .. })));
        assert!(plan.excluded.contains(&(6, Exclusion::NoAnswer)));
    }

    #[test]
    fn a_round_keeps_each_members_least_delayed_poll() {
        // Member 1 (-300 ms): its first answer was held up 5 ms on the way
        // back (alone, it would put the offset 2.5 ms off); the three
        // after it were not. Member 3 answers absurdly; member 6 never.
        let mut polls = RoundPolls::new([1, 3, 6]);
        polls.answer(1, reading(1, -300 * MS, 0, 100 * US, 5 * MS).sample);
        let alone = reading(1, -300 * MS, 0, 100 * US, 5 * MS)
            .sample
            .offset_ns();
        assert!((alone + 300 * MS).abs() > 2 * MS, "{alone}");
        for (i, back) in [(1, 120 * US), (2, 90 * US), (3, 150 * US)] {
            polls.answer(1, reading(1, -300 * MS, i * MS, 100 * US, back).sample);
        }
        let mut negative = reading(3, 0, 0, 100 * US, 100 * US);
        negative.sample.t3 = negative.sample.t2 + 5 * MS;
        polls.answer(3, negative.sample);
        polls.answer(3, negative.sample);
        assert_eq!(polls.answered(), 2);
        let (readings, silent) = polls.readings();
        assert_eq!(silent, vec![6]);
        let plan = plan_round(4, &readings, &silent, &BerkeleyConfig::default());
        let one = plan.offsets.iter().find(|o| o.0 == 1).map(|o| o.1);
        // The 90 us poll: 5 us off (its asymmetry), not 2.5 ms.
        assert_eq!(one, Some(-300 * MS + 5 * US));
        assert!(plan
            .excluded
            .iter()
            .any(|(id, e)| *id == 3 && matches!(e, Exclusion::Absurd(_))));
        assert!(plan.excluded.contains(&(6, Exclusion::NoAnswer)));
        assert_eq!(
            (polls_per_round(0), polls_per_round(4), polls_per_round(99)),
            (1, 4, 8)
        );
    }

    #[test]
    fn absurd_readings_are_never_averaged_nor_adjusted() {
        let years = 20 * 365 * 86_400 * 1_000 * MS;
        let mut negative = reading(2, 0, 0, 100 * US, 100 * US);
        negative.sample.t3 = negative.sample.t2 + 5 * MS; // longer than the round trip
        let readings = [
            reading(1, 10 * MS, 0, 100 * US, 100 * US),
            reading(3, years, 0, 100 * US, 100 * US),
            negative,
        ];
        let plan = plan_round(9, &readings, &[], &BerkeleyConfig::default());
        assert_eq!(plan.mean_ns, 5 * MS);
        assert_eq!(plan.adjustments.len(), 2);
        assert_eq!(
            plan.excluded
                .iter()
                .filter(|(_, e)| matches!(e, Exclusion::Absurd(_)))
                .count(),
            2
        );
    }

    #[test]
    fn a_round_is_applied_at_most_once_and_never_an_old_one() {
        let mut l = AdjustLedger::default();
        assert_eq!(l.accept(round_id(1, 1)), Ok(()));
        assert_eq!(
            l.accept(round_id(1, 1)),
            Err(Ignored::Repeat(round_id(1, 1)))
        );
        assert_eq!(l.accept(round_id(1, 2)), Ok(()));
        assert!(matches!(l.accept(round_id(1, 1)), Err(Ignored::Old { .. })));
        // A new master's first round comes after the old master's last.
        assert_eq!(l.accept(round_id(2, 1)), Ok(()));
        assert!(matches!(l.accept(round_id(1, 3)), Err(Ignored::Old { .. })));
        assert_eq!(l.ignored(), 3);
        assert_eq!(l.last(), Some(round_id(2, 1)));
    }
}
