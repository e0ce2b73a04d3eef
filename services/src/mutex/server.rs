//! [`LockServer`]: `mutex.v1.Locks` over a [`LockTable`].
//!
//! The table lives under one mutex, never held across an await. A waiting
//! `Acquire` handler parks on a oneshot channel that the grant is sent to
//! (by a release, a cancel, or the lease reaper); it also wakes when its
//! wait ends or its call is cancelled ([`CallContext::cancelled`]: the
//! deadline, or the caller dropped the call), and then leaves the queue. A
//! grant that reaches a handler whose caller is gone is released at once,
//! so an abandoned acquire never holds a lock.
//!
//! The reaper is one task ([`LockServer::run_reaper`]) that sleeps until
//! the table's next lease end and frees what expired. A call wakes it only
//! when it made something due before the reaper's own wake-up (a lease
//! shorter than the time left, the end of the grace period), so that an
//! ordinary acquire or release costs no task switch besides its own.

use super::table::{Acquired, Granted, Limits, LockTable, Refusal, WaiterId};
use crate::proto::mutex::v1::{
    AcquireRequest, CancelRequest, Cancelled, Grant, InspectRequest, LockError, LockErrorKind,
    LockState, Locks, ReleaseAllRequest, ReleaseRequest, Released, ReleasedAll, RenewRequest,
};
use rpc_core::{CallContext, Code, MethodError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};

/// How much of the time left before the caller's deadline a wait may use:
/// the rest is for the answer to reach the caller.
const DEADLINE_SHARE: f64 = 0.9;

/// What the server runs with.
#[derive(Debug, Clone)]
pub struct LockServerConfig {
    /// The epoch of this run's tokens ([`super::epoch::advance`]).
    pub epoch: u32,
    /// What callers may ask for.
    pub limits: Limits,
    /// No grant until this long after the start (acquires queue): set it
    /// to the longest lease to keep holders of the previous run exclusive
    /// until their leases have surely ended; fencing tokens protect
    /// resources either way. Default zero.
    pub grace: Duration,
}

impl LockServerConfig {
    /// Tokens of `epoch`, default limits, no grace period.
    pub fn new(epoch: u32) -> LockServerConfig {
        LockServerConfig {
            epoch,
            limits: Limits::default(),
            grace: Duration::ZERO,
        }
    }
}

#[derive(Debug)]
struct Inner {
    table: LockTable,
    /// Parked handlers, by waiter id.
    waiting: HashMap<WaiterId, oneshot::Sender<Granted>>,
    /// When the reaper wakes next by itself (`None`: it is not asleep
    /// yet). A change that needs it no earlier leaves it asleep.
    reaper_at: Option<Instant>,
}

impl Inner {
    /// Wakes the reaper only if it would sleep past `at`, when something
    /// (a lease end, the end of the grace period) is due: most changes
    /// (a lease of seconds granted, a lock released) need no early wake,
    /// and the wake would cost every call a task switch (on a runtime
    /// with more threads, a wake-up of another thread).
    fn due(&mut self, at: Instant, changed: &Notify) {
        if self.reaper_at.is_none_or(|r| at < r) {
            // The reaper sets its own time again when it runs.
            self.reaper_at = None;
            changed.notify_one();
        }
    }
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    /// Wakes the reaper when a lease or a queue changed.
    changed: Notify,
}

/// The lock server: implements [`Locks`]; clones share one table.
#[derive(Debug, Clone)]
pub struct LockServer {
    shared: Arc<Shared>,
}

fn refusal(r: Refusal) -> MethodError<LockError> {
    let code = match r.kind {
        LockErrorKind::BadName
        | LockErrorKind::BadOwner
        | LockErrorKind::BadLease
        | LockErrorKind::BadWait => Code::InvalidArgument,
        LockErrorKind::TooMany | LockErrorKind::TokensExhausted => Code::ResourceExhausted,
        LockErrorKind::WaitExpired => Code::DeadlineExceeded,
        LockErrorKind::Cancelled => Code::Cancelled,
        LockErrorKind::NotHeld | LockErrorKind::Unspecified => Code::FailedPrecondition,
    };
    let message = r.detail.clone();
    MethodError::raised_with(
        LockError {
            kind: r.kind as i32,
            detail: r.detail,
        },
        code,
        message,
    )
}

fn raise(kind: LockErrorKind, detail: impl Into<String>) -> MethodError<LockError> {
    refusal(Refusal {
        kind,
        detail: detail.into(),
    })
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// The answer to a grant. `waited_ms` runs from the acquire's arrival to
/// the grant itself (when its lease began), not to when the handler got
/// round to answering: a client counts its lease from its send plus this
/// wait, which must not end later than the server's lease.
fn grant_reply(g: &Granted) -> Grant {
    let granted_at = g.expires.checked_sub(g.lease).unwrap_or(g.arrived);
    Grant {
        lock: g.lock.clone(),
        token: g.token,
        lease_ms: millis(g.lease),
        waited_ms: millis(granted_at.saturating_duration_since(g.arrived)),
    }
}

impl LockServer {
    /// A server with an empty table.
    pub fn new(config: LockServerConfig) -> LockServer {
        let table = LockTable::new(config.epoch, config.limits, Instant::now() + config.grace);
        LockServer {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner {
                    table,
                    waiting: HashMap::new(),
                    reaper_at: None,
                }),
                changed: Notify::new(),
            }),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Every change to the table is made by one call that leaves it
        // consistent before it can panic: a poisoned lock is still usable.
        self.shared
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The epoch of this run's tokens.
    pub fn epoch(&self) -> u32 {
        self.inner().table.epoch()
    }

    /// Frees expired leases and grants the locks to their next waiters,
    /// sleeping until the next lease end in between; runs until the server
    /// is dropped.
    pub async fn run_reaper(self) {
        let shared = self.shared;
        loop {
            let changed = shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let next = {
                let server = LockServer {
                    shared: Arc::clone(&shared),
                };
                let mut inner = server.inner();
                let now = Instant::now();
                // Running now: what it grants here needs no wake.
                inner.reaper_at = Some(now);
                let grants = inner.table.expire(now);
                server.deliver(&mut inner, grants);
                // Wake at least once a second to see whether the reaper is
                // the last one holding the table.
                let at = Instant::now() + Duration::from_secs(1);
                let at = inner.table.next_deadline().map_or(at, |next| next.min(at));
                // Changes to the table that need the reaper earlier than
                // this wake it (`Inner::due`), under the same lock.
                inner.reaper_at = Some(at);
                at
            };
            let at = next;
            tokio::select! {
                () = tokio::time::sleep_until(at.into()) => {}
                () = changed => {}
            }
            if Arc::strong_count(&shared) == 1 {
                return;
            }
        }
    }

    /// Sends grants to their handlers (see [`deliver`]).
    fn deliver(&self, inner: &mut Inner, grants: Vec<Granted>) {
        deliver(inner, grants, &self.shared.changed);
    }

    /// Settles a waiter that stopped waiting (`why`): out of the queue, or,
    /// if its grant raced in, the grant is returned when the caller is
    /// still there and released when it is not.
    fn give_up(
        &self,
        lock: &str,
        owner: &str,
        id: WaiterId,
        rx: &mut oneshot::Receiver<Granted>,
        caller_gone: bool,
        why: MethodError<LockError>,
    ) -> Result<Grant, MethodError<LockError>> {
        let now = Instant::now();
        let mut inner = self.inner();
        inner.waiting.remove(&id);
        let (was_waiting, grants) = inner.table.withdraw(lock, id, now);
        self.deliver(&mut inner, grants);
        if was_waiting {
            return Err(why);
        }
        match rx.try_recv() {
            Ok(g) if !caller_gone => Ok(grant_reply(&g)),
            Ok(g) => {
                tracing::debug!(
                    lock,
                    token = g.token,
                    "grant to a caller that gave up: released"
                );
                let grants = inner
                    .table
                    .release(lock, owner, g.token, now)
                    .unwrap_or_default();
                self.deliver(&mut inner, grants);
                Err(why)
            }
            Err(_) => Err(why),
        }
    }
}

/// Sends each grant to its parked handler; a grant whose handler is gone
/// (it cannot be: handlers remove themselves first) is released and the
/// lock goes on to the next waiter. The reaper (`changed`) is woken if it
/// would sleep past the end of a lease granted here.
fn deliver(inner: &mut Inner, grants: Vec<Granted>, changed: &Notify) {
    let mut pending = grants;
    let mut rounds = 0usize;
    while let Some(g) = pending.pop() {
        rounds += 1;
        inner.due(g.expires, changed);
        let Some(id) = g.waiter else { continue };
        let Some(tx) = inner.waiting.remove(&id) else {
            // Not parked (yet): the handler is between its acquire and its
            // park under this same lock, which cannot be; or it left.
            tracing::warn!(lock = %g.lock, token = g.token, "grant without a waiting handler: released");
            release_orphan(inner, &g, &mut pending);
            continue;
        };
        if let Err(g) = tx.send(g) {
            release_orphan(inner, &g, &mut pending);
        }
        if rounds > 1_000_000 {
            tracing::error!("grant delivery did not settle");
            return;
        }
    }
}

fn release_orphan(inner: &mut Inner, g: &Granted, pending: &mut Vec<Granted>) {
    let now = Instant::now();
    if let Some((owner, token, _)) = inner.table.inspect(&g.lock, now).holder {
        if token == g.token {
            if let Ok(more) = inner.table.release(&g.lock, &owner, token, now) {
                pending.extend(more);
            }
        }
    }
}

impl Locks for LockServer {
    async fn acquire(
        &self,
        ctx: CallContext,
        request: AcquireRequest,
    ) -> Result<Grant, MethodError<LockError>> {
        let now = Instant::now();
        let wait = Duration::from_millis(u64::from(request.wait_ms));
        let lease = Duration::from_millis(u64::from(request.lease_ms));
        let (id, mut rx) = {
            let mut inner = self.inner();
            inner.table.check_wait(wait).map_err(refusal)?;
            match inner
                .table
                .acquire(
                    &request.lock,
                    &request.owner,
                    request.acquire_id,
                    lease,
                    now,
                )
                .map_err(refusal)?
            {
                Acquired::Granted(g) => {
                    tracing::debug!(lock = %request.lock, owner = %request.owner, token = g.token, "granted");
                    inner.due(g.expires, &self.shared.changed);
                    return Ok(grant_reply(&g));
                }
                Acquired::Queued(id) => {
                    let (tx, rx) = oneshot::channel();
                    inner.waiting.insert(id, tx);
                    // Queued during the grace period, the reaper grants it
                    // when the period ends.
                    if let Some(at) = inner.table.next_deadline() {
                        inner.due(at, &self.shared.changed);
                    }
                    (id, rx)
                }
            }
        };
        // The wait, capped below the caller's deadline.
        let mut until = now + wait;
        if let Some(deadline) = ctx.deadline {
            let left = deadline.saturating_duration_since(now);
            until = until.min(now + left.mul_f64(DEADLINE_SHARE));
        }
        tokio::select! {
            granted = &mut rx => match granted {
                Ok(g) if !ctx.is_cancelled() => {
                    tracing::debug!(lock = %request.lock, owner = %request.owner, token = g.token, "granted after a wait");
                    Ok(grant_reply(&g))
                }
                // Granted as the caller left: give it back.
                Ok(g) => {
                    let mut inner = self.inner();
                    let grants = inner
                        .table
                        .release(&request.lock, &request.owner, g.token, Instant::now())
                        .unwrap_or_default();
                    self.deliver(&mut inner, grants);
                    Err(raise(LockErrorKind::Cancelled, "the caller gave up as the lock was granted"))
                }
                Err(_) => Err(raise(LockErrorKind::Cancelled, "the acquire was withdrawn")),
            },
            () = tokio::time::sleep_until(until.into()) => self.give_up(
                &request.lock,
                &request.owner,
                id,
                &mut rx,
                ctx.is_cancelled(),
                raise(
                    LockErrorKind::WaitExpired,
                    format!("{:?} not granted within {} ms", request.lock, millis(until - now)),
                ),
            ),
            () = ctx.cancelled() => self.give_up(
                &request.lock,
                &request.owner,
                id,
                &mut rx,
                true,
                raise(LockErrorKind::Cancelled, "the caller gave up"),
            ),
        }
    }

    async fn release(
        &self,
        _ctx: CallContext,
        request: ReleaseRequest,
    ) -> Result<Released, MethodError<LockError>> {
        let handed_over = {
            let mut inner = self.inner();
            let grants = inner
                .table
                .release(&request.lock, &request.owner, request.token, Instant::now())
                .map_err(refusal)?;
            let handed_over = !grants.is_empty();
            self.deliver(&mut inner, grants);
            handed_over
        };
        if handed_over {
            // The next holder's grant goes out before this answer: its
            // handler was woken above and runs first if this one steps
            // back once. The releaser only learns that it no longer holds
            // the lock; the waiter waits for the grant (the hand-over).
            tokio::task::yield_now().await;
        }
        Ok(Released {
            lock: request.lock,
            handed_over,
        })
    }

    async fn renew(
        &self,
        _ctx: CallContext,
        request: RenewRequest,
    ) -> Result<Grant, MethodError<LockError>> {
        let lease = Duration::from_millis(u64::from(request.lease_ms));
        let now = Instant::now();
        let mut inner = self.inner();
        inner
            .table
            .renew(&request.lock, &request.owner, request.token, lease, now)
            .map_err(refusal)?;
        // A shorter lease than before may end before the reaper wakes.
        inner.due(now + lease, &self.shared.changed);
        drop(inner);
        Ok(Grant {
            lock: request.lock,
            token: request.token,
            lease_ms: request.lease_ms,
            waited_ms: 0,
        })
    }

    async fn cancel(
        &self,
        _ctx: CallContext,
        request: CancelRequest,
    ) -> Result<Cancelled, MethodError<LockError>> {
        let mut inner = self.inner();
        let out = inner
            .table
            .cancel(
                &request.lock,
                &request.owner,
                request.acquire_id,
                Instant::now(),
            )
            .map_err(refusal)?;
        // A withdrawn waiter's handler learns it when its sender drops.
        if let Some(id) = out.withdrawn {
            inner.waiting.remove(&id);
        }
        self.deliver(&mut inner, out.grants);
        drop(inner);
        Ok(Cancelled {
            was_waiting: out.was_waiting,
            released: out.released,
        })
    }

    async fn release_all(
        &self,
        _ctx: CallContext,
        request: ReleaseAllRequest,
    ) -> Result<ReleasedAll, MethodError<LockError>> {
        let mut inner = self.inner();
        let (released, withdrawn, grants) = inner
            .table
            .release_all(&request.owner, Instant::now())
            .map_err(refusal)?;
        for id in &withdrawn {
            // Dropping the sender tells the parked handler.
            inner.waiting.remove(id);
        }
        self.deliver(&mut inner, grants);
        drop(inner);
        Ok(ReleasedAll {
            released,
            cancelled: u32::try_from(withdrawn.len()).unwrap_or(u32::MAX),
        })
    }

    async fn inspect(
        &self,
        _ctx: CallContext,
        request: InspectRequest,
    ) -> Result<LockState, MethodError<LockError>> {
        let inner = self.inner();
        let view = inner.table.inspect(&request.lock, Instant::now());
        let (held, owner, token, left) = match view.holder {
            Some((o, t, l)) => (true, o, t, millis(l)),
            None => (false, String::new(), 0, 0),
        };
        Ok(LockState {
            lock: request.lock,
            held,
            owner,
            token,
            lease_left_ms: left,
            waiters: view.waiters,
            epoch: inner.table.epoch(),
        })
    }
}
