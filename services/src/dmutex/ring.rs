//! The token ring: one token goes around the peers in id order (peer i
//! passes it to peer (i + 1) mod N, `TokenRing.Pass`); whoever holds it
//! may enter. A peer that wants to enter waits for the token and keeps it
//! while inside; one that does not want it passes it on (after
//! [`PeerConfig::ring_idle_pass`], so that an idle ring does not spin).
//!
//! Messages per entry: 1 when every peer wants to enter, more (up to
//! unbounded: the token circulates while nobody wants it) otherwise.
//! Synchronisation delay: 1 to N-1 messages. A pass whose outcome is
//! unknown is sent again with the same hop count, which the successor
//! ignores if it already took that token (every pass increases the count),
//! so a lost acknowledgement never makes a second token. A successor that
//! answers none of `PASS_TRIES` sends, or refuses the pass, is skipped
//! (the next one is tried) and left out of this peer's later passes until
//! it is heard from (a token from it): crash-stop, since each try costs
//! the whole retransmission schedule of a pass. Skipping assumes the
//! silent peer is dead: one that was only paused and kept the token would
//! resume with a second token. A token lost with its holder is not
//! regenerated.

use super::{DmutexError, Meter, PeerConfig};
use crate::proto::dmutex::v1 as pb;
use rpc_core::{CallContext, Client, Status};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::watch;

/// Sends of one pass to a successor whose answers do not come, before it
/// is taken for crashed.
const PASS_TRIES: u32 = 3;

#[derive(Debug, Clone, Copy, Default)]
struct State {
    token: bool,
    wanting: bool,
    inside: bool,
    /// Hops of the token when it arrived.
    hops: u64,
}

/// A peer of the token ring (see the module docs).
#[derive(Debug)]
pub struct RingPeer {
    id: u32,
    n: usize,
    config: PeerConfig,
    pub(super) meter: Meter,
    state: watch::Sender<State>,
    stubs: OnceLock<Vec<pb::TokenRingClient>>,
    stopped: AtomicBool,
    /// Successors that did not take the token: not tried again.
    crashed: Vec<AtomicBool>,
    /// Itself, for the tasks that pass the token on.
    me: OnceLock<std::sync::Weak<RingPeer>>,
}

impl RingPeer {
    pub(super) fn new(id: u32, n: usize, config: PeerConfig) -> RingPeer {
        RingPeer {
            id,
            n,
            config,
            meter: Meter::default(),
            state: watch::Sender::new(State::default()),
            stubs: OnceLock::new(),
            stopped: AtomicBool::new(false),
            crashed: (0..n).map(|_| AtomicBool::new(false)).collect(),
            me: OnceLock::new(),
        }
    }

    pub(super) fn connect(self: &Arc<Self>, clients: Vec<Client>) -> Result<(), DmutexError> {
        if clients.len() != self.n {
            return Err(DmutexError::GroupSize(clients.len()));
        }
        let _ = self.me.set(Arc::downgrade(self));
        let stubs = clients.into_iter().map(pb::TokenRingClient::new).collect();
        if self.stubs.set(stubs).is_err() {
            return Err(DmutexError::State("the peer is already connected"));
        }
        if self.id == 0 {
            self.state.send_modify(|s| s.token = true);
            self.idle();
        }
        Ok(())
    }

    /// Stops passing the token on (it stays where it is).
    pub(super) fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    /// The token is here and nobody here wants it: pass it on after the
    /// idle pause, unless this peer wants it by then.
    fn idle(&self) {
        let Some(me) = self.me.get().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        let pause = self.config.ring_idle_pass;
        tokio::spawn(async move {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            me.pass_on().await;
        });
    }

    /// Takes the token off this peer to pass it on, when it is here and
    /// not in use: `leaving`, the holder just left the critical section
    /// (it passes even if it asks again at once, for fairness); otherwise
    /// only if nobody here wants it. Returns its hops.
    fn take(&self, leaving: bool) -> Option<u64> {
        let mut hops = None;
        self.state.send_if_modified(|s| {
            let give = s.token && !s.inside && (leaving || !s.wanting);
            if give && !self.stopped.load(Ordering::Relaxed) {
                s.token = false;
                hops = Some(s.hops);
                return true;
            }
            false
        });
        hops
    }

    /// Passes the token to the next peer that takes it, unless this peer
    /// wants it.
    async fn pass_on(&self) {
        if let Some(hops) = self.take(false) {
            self.send(hops).await;
        }
    }

    /// Sends the token (taken off this peer) to the next peer that takes
    /// it; keeps it when none does.
    async fn send(&self, mut hops: u64) {
        let Some(stubs) = self.stubs.get() else {
            return;
        };
        for step in 1..self.n {
            let to = (self.id as usize + step) % self.n;
            if self
                .crashed
                .get(to)
                .is_some_and(|c| c.load(Ordering::Relaxed))
            {
                continue;
            }
            let Some(stub) = stubs.get(to) else { continue };
            hops += 1;
            // A pass whose outcome is unknown may have handed the token
            // over: it is sent again with the same hops (a copy the
            // successor already took is ignored there), and only after
            // every try the successor is taken for crashed.
            for attempt in 1..=PASS_TRIES {
                self.meter.sent(1);
                match stub
                    .pass(pb::Token {
                        from: self.id,
                        hops,
                    })
                    .await
                {
                    Ok(_) => return,
                    Err(e)
                        if matches!(&e, rpc_core::CallError::Rpc(inner) if inner.may_have_run())
                            && attempt < PASS_TRIES =>
                    {
                        tracing::warn!(from = self.id, to, attempt, error = %e, "ring: pass outcome unknown; sending the same token again");
                    }
                    Err(e) => {
                        tracing::warn!(from = self.id, to, error = %e, "ring: token not taken, skipping the peer until it is heard from");
                        if let Some(c) = self.crashed.get(to) {
                            c.store(true, Ordering::Relaxed);
                        }
                        break;
                    }
                }
            }
        }
        if self.n > 1 {
            tracing::error!(id = self.id, "ring: no peer took the token; keeping it");
        }
        self.state.send_modify(|s| s.token = true);
    }

    pub(super) async fn enter(&self) -> Result<(), DmutexError> {
        if self.stubs.get().is_none() {
            return Err(DmutexError::State("the peer is not connected"));
        }
        let asked = self.state.send_if_modified(|s| {
            if s.wanting || s.inside {
                return false;
            }
            s.wanting = true;
            true
        });
        if !asked {
            return Err(DmutexError::State("already inside or asking"));
        }
        let mut rx = self.state.subscribe();
        let _ = rx.wait_for(|s| s.token).await;
        self.state.send_modify(|s| {
            s.inside = true;
            s.wanting = false;
        });
        self.meter.entered();
        Ok(())
    }

    pub(super) async fn exit(&self) -> Result<(), DmutexError> {
        let left = self.state.send_if_modified(|s| {
            let was = s.inside;
            s.inside = false;
            was
        });
        if !left {
            return Err(DmutexError::State("not inside"));
        }
        if let Some(hops) = self.take(true) {
            if let Some(me) = self.me.get().and_then(std::sync::Weak::upgrade) {
                tokio::spawn(async move { me.send(hops).await });
            }
        }
        Ok(())
    }
}

impl pb::TokenRing for RingPeer {
    async fn pass(&self, _ctx: CallContext, token: pb::Token) -> Result<pb::Ack, Status> {
        // Heard from: the sender is alive whatever an earlier pass said.
        if let Some(c) = usize::try_from(token.from)
            .ok()
            .and_then(|from| self.crashed.get(from))
        {
            c.store(false, Ordering::Relaxed);
        }
        let mut duplicate = false;
        let mut stale = false;
        let wanting = {
            let mut wanting = false;
            self.state.send_if_modified(|s| {
                if token.hops <= s.hops {
                    // A copy of a pass this peer already took (sent again
                    // after an unknown outcome): the token went on from here.
                    stale = true;
                    return false;
                }
                duplicate = s.token;
                s.token = true;
                s.hops = token.hops;
                wanting = s.wanting;
                true
            });
            wanting
        };
        if stale {
            tracing::debug!(
                id = self.id,
                from = token.from,
                hops = token.hops,
                "ring: a copy of a token already taken; ignored"
            );
            return Ok(pb::Ack { from: self.id });
        }
        if duplicate {
            tracing::error!(
                id = self.id,
                from = token.from,
                "ring: a second token arrived"
            );
        }
        if !wanting {
            self.idle();
        }
        Ok(pb::Ack { from: self.id })
    }
}
