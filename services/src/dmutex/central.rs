//! The central server algorithm: a coordinator (hosted by peer 0) grants
//! the critical section to one peer at a time, in arrival order.
//!
//! A peer sends REQUEST (`Central.Acquire`, deferred: the coordinator's
//! reply is the GRANT, sent when the peer's turn comes) and, on leaving,
//! RELEASE (`Central.Release`). Three messages per entry; the
//! synchronisation delay is two (the release, then the next grant).
//! Peer 0's own requests go to the coordinator by call like everyone
//! else's, so that its entries cost the same.

use super::{DmutexError, Meter};
use crate::lock::lock;
use crate::proto::dmutex::v1 as pb;
use rpc_core::{CallContext, Client, Status};
use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};
use tokio::sync::oneshot;

/// The coordinator's state (used at peer 0 only).
#[derive(Debug, Default)]
struct Coordinator {
    holder: Option<u32>,
    /// Waiting requests in arrival order: the peer and where its grant goes.
    queue: VecDeque<(u32, oneshot::Sender<u64>)>,
    grants: u64,
}

impl Coordinator {
    /// Grants to the first waiter whose handler is still there.
    fn grant_next(&mut self) {
        while let Some((peer, tx)) = self.queue.pop_front() {
            self.grants += 1;
            if tx.send(self.grants).is_ok() {
                self.holder = Some(peer);
                return;
            }
            self.grants -= 1;
        }
        self.holder = None;
    }
}

/// A peer of the central server algorithm (see the module docs).
#[derive(Debug)]
pub struct CentralPeer {
    id: u32,
    pub(super) meter: Meter,
    coordinator: Mutex<Coordinator>,
    stub: OnceLock<pb::CentralClient>,
    inside: Mutex<bool>,
}

impl CentralPeer {
    pub(super) fn new(id: u32) -> CentralPeer {
        CentralPeer {
            id,
            meter: Meter::default(),
            coordinator: Mutex::new(Coordinator::default()),
            stub: OnceLock::new(),
            inside: Mutex::new(false),
        }
    }

    pub(super) fn connect(&self, clients: &[Client]) -> Result<(), DmutexError> {
        let coordinator = clients
            .first()
            .ok_or(DmutexError::State("a group without peer 0"))?;
        // A second connect keeps the first coordinator.
        let _ = self.stub.set(pb::CentralClient::new(coordinator.clone()));
        Ok(())
    }

    fn stub(&self) -> Result<&pb::CentralClient, DmutexError> {
        self.stub
            .get()
            .ok_or(DmutexError::State("the peer is not connected"))
    }

    fn failed<E: std::fmt::Debug>(e: rpc_core::CallError<E>) -> DmutexError {
        DmutexError::Peer {
            peer: 0,
            detail: e.to_string(),
        }
    }

    pub(super) async fn enter(&self) -> Result<(), DmutexError> {
        let stub = self.stub()?;
        {
            let mut inside = lock(&self.inside);
            if *inside {
                return Err(DmutexError::State("already inside"));
            }
            *inside = true;
        }
        self.meter.sent(1);
        let granted = async {
            let handle = stub
                .acquire(pb::Ask {
                    from: self.id,
                    timestamp: 0,
                })
                .await?;
            handle.await
        }
        .await;
        match granted {
            Ok(_) => {
                self.meter.entered();
                Ok(())
            }
            Err(e) => {
                *lock(&self.inside) = false;
                Err(Self::failed(e))
            }
        }
    }

    pub(super) async fn exit(&self) -> Result<(), DmutexError> {
        let stub = self.stub()?;
        if !std::mem::replace(&mut *lock(&self.inside), false) {
            return Err(DmutexError::State("not inside"));
        }
        self.meter.sent(1);
        stub.release(pb::Ask {
            from: self.id,
            timestamp: 0,
        })
        .await
        .map(|_| ())
        .map_err(Self::failed)
    }
}

impl pb::Central for CentralPeer {
    async fn acquire(&self, ctx: CallContext, request: pb::Ask) -> Result<pb::Granted, Status> {
        let mut rx = {
            let mut c = lock(&self.coordinator);
            if c.holder.is_none() && c.queue.is_empty() {
                c.grants += 1;
                c.holder = Some(request.from);
                self.meter.sent(1);
                return Ok(pb::Granted { grants: c.grants });
            }
            let (tx, rx) = oneshot::channel();
            c.queue.push_back((request.from, tx));
            rx
        };
        tokio::select! {
            grant = &mut rx => match grant {
                Ok(grants) => {
                    self.meter.sent(1);
                    Ok(pb::Granted { grants })
                }
                Err(_) => Err(Status::internal("the coordinator dropped the request")),
            },
            () = ctx.cancelled() => {
                // A grant that raced the cancel is given back.
                rx.close();
                let mut c = lock(&self.coordinator);
                if rx.try_recv().is_ok() {
                    c.grant_next();
                }
                Err(Status::cancelled("the request was cancelled before its grant"))
            }
        }
    }

    async fn release(&self, _ctx: CallContext, request: pb::Ask) -> Result<pb::Ack, Status> {
        let mut c = lock(&self.coordinator);
        if c.holder != Some(request.from) {
            return Err(Status::failed_precondition(format!(
                "peer {} does not hold the critical section (holder {:?})",
                request.from, c.holder
            )));
        }
        c.grant_next();
        Ok(pb::Ack { from: self.id })
    }
}
