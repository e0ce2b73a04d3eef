//! A Berkeley round as its master runs it ([`ClockNode::round`]): the
//! polls (each one fan-out group call over the [`Group`], rotated), the
//! plan ([`plan_round`]), the adjustments under one round id, and what it
//! did ([`RoundReport`]); and how a member applies an adjustment once.

use super::super::berkeley::{plan_round, polls_per_round, round_id, Exclusion, RoundPolls};
use super::super::sync::Sample;
use super::{lock, ClockNode};
use crate::proto::clock::v1 as pb;
use rpc_core::{Client, GroupClient, MemberResult};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::task::JoinSet;

/// The other members' clock stubs.
#[derive(Debug, Clone)]
pub(super) struct Group {
    /// Each other member, by id.
    pub(super) clients: HashMap<u32, pb::ClockClient>,
    /// The same members' channels, named by their ids, in id order: a
    /// round's polls are group calls over them.
    pub(super) members: Vec<(String, Client)>,
}

impl Group {
    /// The group of poll `i` of a round: the members rotated by `i`. A
    /// group call sends to its members in order and times each answer
    /// from the call's start, so a member's sample also carries the sends
    /// before its own as outbound delay; rotating puts each member first
    /// in one poll, and that poll's sample is then the least delayed.
    fn rotated(&self, i: usize) -> pb::ClockGroupClient {
        let mut members = self.members.clone();
        if !members.is_empty() {
            let n = members.len();
            members.rotate_left(i % n);
        }
        pb::ClockGroupClient::new(GroupClient::from_members(members))
    }
}

/// What one Berkeley round did, as its master saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundReport {
    /// The round id.
    pub round: u64,
    /// The master's id.
    pub master_id: u32,
    /// Each member's offset from the master, ns (the master: 0).
    pub offsets: Vec<(u32, i64)>,
    /// The delay of each member's poll that was used (the least of its
    /// polls), ns.
    pub delays: Vec<(u32, i64)>,
    /// The mean of those kept.
    pub mean_ns: i64,
    /// The adjustments sent (the master's own included), and whether each
    /// was applied.
    pub adjustments: Vec<(u32, i64, bool)>,
    /// Who was left out of the average, and why.
    pub excluded: Vec<(u32, Exclusion)>,
    /// Round trips the round took: the polls (each one fan-out call), then
    /// the adjustments (sent in parallel).
    pub round_trips: u32,
}

impl RoundReport {
    /// The report as `RunRound` answers it: every member once, the master
    /// first, then by id.
    pub fn summary(&self) -> pb::RoundSummary {
        let mut ids: Vec<u32> = self
            .offsets
            .iter()
            .map(|o| o.0)
            .chain(self.adjustments.iter().map(|a| a.0))
            .chain(self.excluded.iter().map(|e| e.0))
            .filter(|&id| id != self.master_id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.insert(0, self.master_id);
        let find = |v: &[(u32, i64)], id: u32| v.iter().find(|x| x.0 == id).map(|x| x.1);
        let members = ids
            .into_iter()
            .map(|id| {
                let adjustment = self.adjustments.iter().find(|a| a.0 == id);
                pb::RoundMember {
                    id,
                    offset_ns: find(&self.offsets, id),
                    delay_ns: find(&self.delays, id),
                    delta_ns: adjustment.map(|a| a.1),
                    applied: adjustment.is_some_and(|a| a.2),
                    excluded: self
                        .excluded
                        .iter()
                        .filter(|e| e.0 == id)
                        .map(|e| e.1.to_string())
                        .collect::<Vec<_>>()
                        .join("; "),
                }
            })
            .collect();
        pb::RoundSummary {
            round: self.round,
            master_id: self.master_id,
            mean_ns: self.mean_ns,
            members,
            round_trips: self.round_trips,
        }
    }
}

impl ClockNode {
    /// Runs one Berkeley round as master and reports it: the polls
    /// ([`NodeConfig::polls`](super::NodeConfig::polls), each one fan-out group call), then each
    /// member's adjustment under one round id. Rounds never overlap: one
    /// asked for while another runs waits for it. `None` when the node is
    /// in no group. It does not check that the node is the master (a
    /// member refuses an adjustment from a master it does not follow).
    ///
    /// # Cancel safety
    /// Cancelling it may leave some members adjusted for the round and
    /// others not; the round id is used up either way.
    pub async fn round(self: Arc<Self>) -> Option<RoundReport> {
        // The group as it is when this round's turn comes, not as it was
        // when the round was asked for.
        let _running = self.round_running.lock().await;
        let group = lock(&self.group).clone()?;
        let term = u32::try_from(self.election.leader().term).unwrap_or(u32::MAX);
        let poll_round = round_id(term, lock(&self.rounds).seq.saturating_add(1));
        let polls_asked = polls_per_round(self.config.polls);
        let mut polls = RoundPolls::new(group.clients.keys().copied());
        let mut newest = lock(&self.ledger).last().unwrap_or(0);
        let mut polls_made = 0u32;
        for i in 0..polls_asked {
            let call = group.rotated(i as usize).poll(pb::PollRequest {
                round: poll_round,
                master_id: self.config.id,
            });
            // The first poll waits for every member; the later ones only
            // for as many as answered it (a dead member does not hold each
            // of them up to the timeout).
            let call = if i == 0 {
                call.all()
            } else {
                call.quorum(polls.answered())
                    .stragglers(rpc_core::Stragglers::Cancel)
            };
            let call = call.retries(0).timeout(self.config.poll_timeout);
            // The clock's own value, as the members answer with theirs.
            let t1 = self.time.read().unheld_ns();
            let outcome = call.await;
            polls_made += 1;
            for m in &outcome.members {
                let Ok(id) = m.member.parse::<u32>() else {
                    continue;
                };
                if let (MemberResult::Reply(r), Some(rtt)) = (&m.result, m.latency) {
                    newest = newest.max(r.last_round);
                    let rtt = i64::try_from(rtt.as_nanos()).unwrap_or(i64::MAX);
                    polls.answer(
                        id,
                        Sample {
                            t1,
                            t2: r.receive_ns,
                            t3: r.transmit_ns,
                            t4: t1.saturating_add(rtt),
                            server_error_ns: 0,
                        },
                    );
                }
            }
            if polls.answered() == 0 {
                break;
            }
        }
        let (readings, silent) = polls.readings();
        // The adjustments' round comes after every round a member has
        // applied, whichever master ran it.
        let round = {
            let mut r = lock(&self.rounds);
            let id = poll_round.max(newest.saturating_add(1));
            r.seq = u32::try_from(id & 0xffff_ffff).unwrap_or(u32::MAX);
            id
        };
        let plan = plan_round(self.config.id, &readings, &silent, &self.config.berkeley);
        let absurd = plan
            .excluded
            .iter()
            .filter(|(_, e)| matches!(e, Exclusion::Absurd(_)))
            .count();
        self.absurd
            .fetch_add(absurd as u64, std::sync::atomic::Ordering::Relaxed);
        let own_error = self.time.error_bound_ns();
        let mut sends = JoinSet::new();
        let mut adjustments = Vec::new();
        for &(id, delta) in &plan.adjustments {
            if id == self.config.id {
                let applied = self.apply(round, self.config.id, delta, 0).is_ok();
                adjustments.push((id, delta, applied));
                continue;
            }
            let Some(client) = group.clients.get(&id).cloned() else {
                continue;
            };
            let delay = readings
                .iter()
                .find(|r| r.id == id)
                .map_or(0, |r| r.sample.delay_ns());
            let error_ns = u64::try_from(delay).unwrap_or(0).div_ceil(2);
            let call = client.adjust(pb::Adjustment {
                round,
                master_id: self.config.id,
                delta_ns: delta,
                error_ns: error_ns.saturating_add(own_error.min(u64::MAX / 2)),
            });
            sends.spawn(async move { (id, delta, call.await) });
        }
        while let Some(done) = sends.join_next().await {
            match done {
                Ok((id, delta, Ok(r))) => {
                    adjustments.push((id, delta, r.applied));
                }
                Ok((id, delta, Err(e))) => {
                    tracing::debug!(id, error = %e, "adjustment not delivered");
                    adjustments.push((id, delta, false));
                }
                Err(e) => tracing::warn!(error = %e, "adjustment task failed"),
            }
        }
        adjustments.sort_unstable_by_key(|a| a.0);
        {
            let mut r = lock(&self.rounds);
            r.excluded.extend(plan.excluded.iter().map(|(id, _)| *id));
            r.excluded.sort_unstable();
            r.excluded.dedup();
        }
        tracing::info!(
            id = self.config.id,
            round,
            mean_ns = plan.mean_ns,
            polls = polls_made,
            excluded = ?plan.excluded,
            "berkeley round"
        );
        Some(RoundReport {
            round,
            master_id: self.config.id,
            offsets: plan.offsets,
            delays: readings
                .iter()
                .map(|r| (r.id, r.sample.delay_ns()))
                .collect(),
            mean_ns: plan.mean_ns,
            adjustments,
            excluded: plan.excluded,
            round_trips: polls_made.saturating_add(1),
        })
    }

    /// Applies round `round`'s adjustment once.
    pub(super) fn apply(
        &self,
        round: u64,
        master: u32,
        delta_ns: i64,
        error_ns: u64,
    ) -> Result<(), String> {
        let accepted = lock(&self.ledger).accept(round);
        match accepted {
            Ok(()) => {
                self.time.adjust(delta_ns);
                if !self.time.is_synchronised() || error_ns > 0 {
                    self.time.mark_synchronised(error_ns);
                }
                let mut r = lock(&self.rounds);
                r.last_round = round;
                r.last_master = master;
                Ok(())
            }
            Err(e) => {
                tracing::debug!(round, error = %e, "adjustment ignored");
                Err(e.to_string())
            }
        }
    }
}
