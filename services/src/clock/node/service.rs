//! [`ClockService`]: the `clock.v1.Clock` handlers over a [`ClockNode`]
//! (readings, polls, adjustments, membership, status, rounds on request).

use super::{lock, ClockNode};
use crate::proto::clock::v1 as pb;
use rpc_core::{CallContext, Status};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// The `clock.v1.Clock` service over a shared [`ClockNode`].
#[derive(Debug, Clone)]
pub struct ClockService(pub Arc<ClockNode>);

impl pb::Clock for ClockService {
    async fn get_time(
        &self,
        _ctx: CallContext,
        request: pb::TimeRequest,
    ) -> Result<pb::TimeReading, Status> {
        let t2 = self.0.time.now_ns();
        let node = &self.0;
        let mut reading = pb::TimeReading {
            origin_ns: request.client_transmit_ns,
            receive_ns: t2,
            transmit_ns: 0,
            error_bound_ns: node.time.error_bound_ns(),
            synchronised: node.time.is_synchronised(),
            node_id: node.config.id,
        };
        (reading.receive_ns, reading.transmit_ns) =
            node.config.answer_times(t2, node.time.now_ns());
        Ok(reading)
    }

    async fn poll(
        &self,
        _ctx: CallContext,
        request: pb::PollRequest,
    ) -> Result<pb::PollReply, Status> {
        // The clock's own value, not held after a backward step: the
        // master measures what the clock is.
        let t2 = self.0.time.read().unheld_ns();
        let node = &self.0;
        if node.election.leader().id == Some(request.master_id) {
            lock(&node.rounds).last_heard = Some(Instant::now());
        }
        let mut reply = pb::PollReply {
            round: request.round,
            node_id: node.config.id,
            receive_ns: t2,
            transmit_ns: 0,
            last_round: lock(&node.ledger).last().unwrap_or(0),
        };
        (reply.receive_ns, reply.transmit_ns) =
            node.config.answer_times(t2, node.time.read().unheld_ns());
        Ok(reply)
    }

    async fn adjust(
        &self,
        _ctx: CallContext,
        request: pb::Adjustment,
    ) -> Result<pb::AdjustResult, Status> {
        let node = &self.0;
        let leader = node.election.leader().id;
        if leader != Some(request.master_id) {
            // Only the master this node follows adjusts it (two masters can
            // coexist for a moment around an election).
            return Ok(pb::AdjustResult {
                applied: false,
                last_round: lock(&node.ledger).last().unwrap_or(0),
                reason: format!(
                    "adjustment from {} but this node follows {leader:?}",
                    request.master_id
                ),
            });
        }
        let outcome = node.apply(
            request.round,
            request.master_id,
            request.delta_ns,
            request.error_ns,
        );
        let last_round = lock(&node.ledger).last().unwrap_or(0);
        Ok(pb::AdjustResult {
            applied: outcome.is_ok(),
            last_round,
            reason: outcome.err().unwrap_or_default(),
        })
    }

    async fn configure(
        &self,
        _ctx: CallContext,
        request: pb::Membership,
    ) -> Result<pb::NodeStatus, Status> {
        let mut members = Vec::new();
        let mut ids = std::collections::HashSet::new();
        for m in &request.members {
            let addr: SocketAddr = m.addr.parse().map_err(|e| {
                Status::invalid_argument(format!("member {} address {:?}: {e}", m.id, m.addr))
            })?;
            // One address an id: polls and adjustments must reach the same
            // member.
            if !ids.insert(m.id) {
                return Err(Status::invalid_argument(format!(
                    "member id {} is given twice",
                    m.id
                )));
            }
            members.push((m.id, addr));
        }
        self.0
            .configure(&members)
            .await
            .map_err(|e| Status::internal(format!("joining the group: {e}")))?;
        Ok(self.0.status())
    }

    async fn status(
        &self,
        _ctx: CallContext,
        _request: pb::Empty,
    ) -> Result<pb::NodeStatus, Status> {
        Ok(self.0.status())
    }

    async fn run_round(
        &self,
        _ctx: CallContext,
        _request: pb::Empty,
    ) -> Result<pb::RoundSummary, Status> {
        let node = &self.0;
        let id = node.config.id;
        let leader = node.election.leader().id;
        if leader != Some(id) {
            return Err(Status::failed_precondition(format!(
                "node {id} is not the master: it follows {leader:?}"
            )));
        }
        let report = node
            .clone()
            .round()
            .await
            .ok_or_else(|| Status::failed_precondition(format!("node {id} is in no group")))?;
        Ok(report.summary())
    }
}
