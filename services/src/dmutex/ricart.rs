//! Ricart–Agrawala: a peer that wants to enter multicasts REQUEST
//! (Lamport timestamp, id) to the N-1 others (`RicartAgrawala.Request`, a
//! group call that completes when all have answered) and enters when
//! every one has given its permission, the call's reply.
//!
//! A peer receiving a request answers at once, unless it is inside, or
//! asking with an earlier (timestamp, id): then its handler waits, and the
//! permission goes when it leaves (the deferred reply). 2(N-1) messages
//! per entry; synchronisation delay one message (the deferred
//! permission). No FIFO channels needed: a peer that answered a request
//! before asking itself has seen the request's timestamp, so its own is
//! later and the earlier requester defers it.
//!
//! The timestamps come from the clock service's [`Lamport`](crate::clock::logical::Lamport) clock.

use super::{DmutexError, GroupPeer};
use crate::proto::dmutex::v1 as pb;
use rpc_core::{CallContext, Client, Status};
use tokio::sync::watch;

/// Where a peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not asking.
    Released,
    /// Asking, with this timestamp.
    Wanted(u64),
    /// Inside.
    Held(u64),
}

impl State {
    /// Whether a peer `me` in this state gives its permission to `ask` now.
    fn permits(self, me: u32, ask: &pb::Ask) -> bool {
        match self {
            State::Released => true,
            State::Held(_) => false,
            State::Wanted(ts) => (ts, me) > (ask.timestamp, ask.from),
        }
    }
}

/// A peer of Ricart–Agrawala (see the module docs).
#[derive(Debug)]
pub struct RicartPeer {
    /// Its id, counters, clock and the stub of the others.
    pub(super) me: GroupPeer<pb::RicartAgrawalaGroupClient>,
    state: watch::Sender<State>,
}

impl RicartPeer {
    pub(super) fn new(id: u32, n: usize) -> RicartPeer {
        RicartPeer {
            me: GroupPeer::new(id, n),
            state: watch::Sender::new(State::Released),
        }
    }

    pub(super) fn connect(&self, clients: &[Client]) -> Result<(), DmutexError> {
        self.me.connect(clients, pb::RicartAgrawalaGroupClient::new)
    }

    pub(super) async fn enter(&self) -> Result<(), DmutexError> {
        // The timestamp is taken and the state set in one step, so a
        // request arriving meanwhile is judged against both.
        let timestamp = self.me.begin(
            &self.state,
            |s| *s == State::Released,
            |s, timestamp| *s = State::Wanted(timestamp),
        )?;
        if self.me.n > 1 {
            let outcome = self
                .me
                .to_all_others(timestamp, |o, ask| o.request(ask))
                .await
                .inspect_err(|_| {
                    self.state.send_replace(State::Released);
                })?;
            for (_, p) in outcome.replies() {
                self.me.clock.observe(p.timestamp);
            }
        }
        self.state.send_replace(State::Held(timestamp));
        self.me.meter.entered();
        Ok(())
    }

    pub(super) fn exit(&self) -> Result<(), DmutexError> {
        let left = self.state.send_if_modified(|s| {
            if matches!(s, State::Held(_)) {
                *s = State::Released;
                return true;
            }
            false
        });
        if left {
            Ok(())
        } else {
            Err(DmutexError::State("not inside"))
        }
    }
}

impl pb::RicartAgrawala for RicartPeer {
    async fn request(&self, ctx: CallContext, ask: pb::Ask) -> Result<pb::Permission, Status> {
        self.me.clock.observe(ask.timestamp);
        let mut rx = self.state.subscribe();
        let permitted = async { rx.wait_for(|s| s.permits(self.me.id, &ask)).await.is_ok() };
        tokio::select! {
            ok = permitted => {
                if !ok {
                    return Err(Status::unavailable("the peer is stopping"));
                }
            }
            () = ctx.cancelled() => return Err(Status::cancelled("the request was withdrawn")),
        }
        self.me.meter.sent(1);
        Ok(pb::Permission {
            from: self.me.id,
            timestamp: self.me.clock.tick(),
        })
    }
}
