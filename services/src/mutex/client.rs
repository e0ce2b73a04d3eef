//! [`LockClient`]: `let guard = locks.lock("name").await?;` over the
//! `Locks` stub, with the lease renewed in the background while the guard
//! lives and the lock released when it is dropped.
//!
//! # What "held" means here
//!
//! The client counts a lease from when it *sent* the acquire (or renewal),
//! plus the time the server says the acquire waited: never later than the
//! server's own count. When renewals fail until that moment passes, or the
//! server answers that the lock is not held (it expired, or the server
//! restarted and knows nothing), the guard is lost
//! ([`LockGuard::is_held`], [`LockGuard::lost`]). A holder that may have
//! lost its lock without knowing (a paused process) is stopped by the
//! fencing token at the resource, not by this library.
//!
//! An acquire whose outcome is unknown because the server restarted
//! ([`rpc_core::Error::OutcomeUnknown`]) cannot have left a lock held in
//! the new run: the client acquires again. So it does when a grant arrives
//! after its lease has ended (its answers lost and retransmitted for
//! longer than the lease), giving the stale grant back. An acquire that fails in a way
//! where it may have been granted (no answer before the deadline) is
//! withdrawn with `Cancel` in the background, and in any case its lease
//! ends by itself.

use crate::ids::random_u64;
use crate::proto::mutex::v1::{
    AcquireRequest, CancelRequest, LockError, LockErrorKind, LocksClient, ReleaseAllRequest,
    ReleaseRequest, ReleasedAll, RenewRequest,
};
use rpc_core::{CallError, Client, Error};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Acquires tried when the server keeps restarting under them.
const RESTART_ATTEMPTS: u32 = 3;

/// Why a lock could not be taken or given back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockClientError {
    /// The server refused (bad input, wait expired, not held, ...).
    #[error("lock refused ({kind:?}): {detail}")]
    Refused {
        /// What was wrong.
        kind: LockErrorKind,
        /// The server's words.
        detail: String,
    },
    /// The call failed (unreachable, deadline, ...); an acquire that may
    /// have been granted was withdrawn in the background.
    #[error("lock call failed")]
    Rpc(#[source] Error),
    /// The server restarted during every attempt.
    #[error("the lock server restarted during {0} acquire attempts")]
    Restarted(u32),
    /// Every grant reached this client after its lease had already ended
    /// (answers lost and retransmitted for longer than the lease): a lease
    /// too short for the network.
    #[error("{0} grants arrived after their lease had ended")]
    LateGrants(u32),
}

impl LockClientError {
    /// The server's reason, when it refused.
    pub fn kind(&self) -> Option<LockErrorKind> {
        match self {
            LockClientError::Refused { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

impl From<CallError<LockError>> for LockClientError {
    fn from(e: CallError<LockError>) -> LockClientError {
        match e {
            CallError::Raised(e, _) => LockClientError::Refused {
                kind: LockErrorKind::try_from(e.kind).unwrap_or(LockErrorKind::Unspecified),
                detail: e.detail,
            },
            CallError::Rpc(e) => LockClientError::Rpc(e),
        }
    }
}

/// Takes locks of one owner from one lock server.
#[derive(Debug, Clone)]
pub struct LockClient {
    stub: LocksClient,
    owner: String,
    lease: Duration,
    wait: Duration,
}

impl LockClient {
    /// Locks for `owner` (a name unique to this process or client) through
    /// `client`; leases of 10 s, waits of up to 30 s.
    pub fn new(client: Client, owner: impl Into<String>) -> LockClient {
        LockClient {
            stub: LocksClient::new(client),
            owner: owner.into(),
            lease: Duration::from_secs(10),
            wait: Duration::from_secs(30),
        }
    }

    /// The lease asked for (renewed every third of it).
    pub fn lease(mut self, lease: Duration) -> LockClient {
        self.lease = lease;
        self
    }

    /// How long an acquire waits in the queue.
    pub fn wait(mut self, wait: Duration) -> LockClient {
        self.wait = wait;
        self
    }

    /// The owner name.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The stub underneath.
    pub fn stub(&self) -> &LocksClient {
        &self.stub
    }

    /// Takes `lock`, waiting up to the configured wait; the guard renews
    /// it and releases it when dropped.
    ///
    /// # Errors
    /// [`LockClientError::Refused`] (`WaitExpired` when the wait ended,
    /// bad input), [`LockClientError::Rpc`], [`LockClientError::Restarted`],
    /// [`LockClientError::LateGrants`].
    ///
    /// # Cancel safety
    /// Dropping the future withdraws the acquire (a `Cancel` sent in the
    /// background), so an abandoned waiter leaves the server's queue and a
    /// grant that raced with the drop is released.
    pub async fn lock(&self, lock: &str) -> Result<LockGuard, LockClientError> {
        let margin = Duration::from_secs(2) + self.wait / 5;
        let (mut restarts, mut late) = (0, 0);
        loop {
            let acquire_id = random_u64();
            let mut withdraw = Withdraw {
                stub: Some(self.stub.clone()),
                lock: lock.to_owned(),
                owner: self.owner.clone(),
                acquire_id,
            };
            let sent = Instant::now();
            let request = AcquireRequest {
                lock: lock.to_owned(),
                owner: self.owner.clone(),
                wait_ms: millis(self.wait),
                lease_ms: millis(self.lease),
                acquire_id,
            };
            // Synchronous, not the declared deferred style: this future
            // waits for the grant anyway, and a deferred call costs every
            // acquire an ACCEPT before the grant even when the lock is free
            // (the server sends it before the handler runs). A waiting
            // acquire is still at most once: a copy that reaches the server
            // while it waits is answered IN_PROGRESS, and the client then
            // polls as it would after an ACCEPT.
            let outcome = self
                .stub
                .acquire(request)
                .synchronous()
                .timeout(self.wait + margin)
                .await;
            match outcome {
                Ok(grant) => {
                    withdraw.stub = None;
                    let waited = Duration::from_millis(u64::from(grant.waited_ms));
                    let lease = Duration::from_millis(u64::from(grant.lease_ms));
                    let until = sent + waited + lease;
                    if until > Instant::now() {
                        return Ok(LockGuard::start(self, lock, grant.token, lease, until));
                    }
                    // The answer took longer than the lease (lost and
                    // retransmitted): the lock may have moved on already.
                    // Not held: give it back in case it has not, and
                    // acquire again.
                    tracing::info!(
                        lock,
                        token = grant.token,
                        "a grant arrived after its lease ended: acquiring again"
                    );
                    release_in_background(
                        self.stub.clone(),
                        ReleaseRequest {
                            lock: lock.to_owned(),
                            owner: self.owner.clone(),
                            token: grant.token,
                        },
                    );
                    late += 1;
                    if late >= RESTART_ATTEMPTS {
                        return Err(LockClientError::LateGrants(late));
                    }
                }
                Err(CallError::Rpc(Error::OutcomeUnknown)) => {
                    // The server restarted: the new run holds nothing for
                    // us. Acquire again.
                    withdraw.stub = None;
                    tracing::info!(
                        lock,
                        "lock server restarted during an acquire: acquiring again"
                    );
                    restarts += 1;
                    if restarts >= RESTART_ATTEMPTS {
                        return Err(LockClientError::Restarted(restarts));
                    }
                }
                Err(e @ CallError::Raised(..)) => {
                    withdraw.stub = None;
                    return Err(e.into());
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Releases every lock this owner holds and withdraws its waiting
    /// acquires (after a crash of the process that used this owner name).
    ///
    /// # Errors
    /// As the call.
    pub async fn release_all(&self) -> Result<ReleasedAll, LockClientError> {
        Ok(self
            .stub
            .release_all(ReleaseAllRequest {
                owner: self.owner.clone(),
            })
            .await?)
    }
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Sends `Cancel` for an acquire when dropped armed (its stub is `Some`).
struct Withdraw {
    stub: Option<LocksClient>,
    lock: String,
    owner: String,
    acquire_id: u64,
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        let Some(stub) = self.stub.take() else { return };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let request = CancelRequest {
            lock: std::mem::take(&mut self.lock),
            owner: std::mem::take(&mut self.owner),
            acquire_id: self.acquire_id,
        };
        rt.spawn(async move {
            match stub.cancel(request).await {
                Ok(c) => tracing::debug!(?c, "abandoned acquire withdrawn"),
                Err(e) => tracing::debug!(error = %e, "withdrawing an abandoned acquire failed; its wait or lease ends it"),
            }
        });
    }
}

#[derive(Debug)]
struct Held {
    /// The client's (conservative) end of the lease.
    until: Mutex<Instant>,
    lost: watch::Sender<bool>,
}

impl Held {
    fn until(&self) -> Instant {
        *self
            .until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn extend(&self, to: Instant) {
        let mut u = self
            .until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *u = (*u).max(to);
    }

    fn lose(&self) {
        self.lost.send_replace(true);
    }
}

/// A held lock: renewed in the background, released when dropped.
#[derive(Debug)]
pub struct LockGuard {
    stub: LocksClient,
    lock: String,
    owner: String,
    token: u64,
    held: Arc<Held>,
    renewer: JoinHandle<()>,
    released: bool,
}

impl LockGuard {
    fn start(
        client: &LockClient,
        lock: &str,
        token: u64,
        lease: Duration,
        until: Instant,
    ) -> LockGuard {
        let held = Arc::new(Held {
            until: Mutex::new(until),
            lost: watch::channel(false).0,
        });
        let renewer = tokio::spawn(renew(
            client.stub.clone(),
            RenewRequest {
                lock: lock.to_owned(),
                owner: client.owner.clone(),
                token,
                lease_ms: millis(lease),
            },
            lease,
            Arc::clone(&held),
        ));
        LockGuard {
            stub: client.stub.clone(),
            lock: lock.to_owned(),
            owner: client.owner.clone(),
            token,
            held,
            renewer,
            released: false,
        }
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.lock
    }

    /// The fencing token of this grant: present it to every resource the
    /// lock protects.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Whether the lock is still held as far as this client can tell.
    pub fn is_held(&self) -> bool {
        !*self.held.lost.borrow() && Instant::now() < self.held.until()
    }

    /// Completes when the lock is lost (a renewal refused, or no renewal
    /// answered before the lease ended).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn lost(&self) {
        let mut rx = self.held.lost.subscribe();
        // The sender lives in `self.held`: wait_for cannot fail while
        // `self` is borrowed.
        let _ = rx.wait_for(|lost| *lost).await;
    }

    /// Releases the lock and waits for the server's answer.
    ///
    /// # Errors
    /// [`LockClientError::Refused`] with `NotHeld` when the lease had
    /// ended; call errors.
    pub async fn release(mut self) -> Result<(), LockClientError> {
        self.renewer.abort();
        self.released = true;
        self.stub
            .release(ReleaseRequest {
                lock: self.lock.clone(),
                owner: self.owner.clone(),
                token: self.token,
            })
            .await?;
        Ok(())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.renewer.abort();
        if self.released {
            return;
        }
        release_in_background(
            self.stub.clone(),
            ReleaseRequest {
                lock: self.lock.clone(),
                owner: self.owner.clone(),
                token: self.token,
            },
        );
    }
}

/// Sends `request` from a task of the current runtime (none outside one);
/// a failure is logged: the lease ends the grant anyway.
fn release_in_background(stub: LocksClient, request: ReleaseRequest) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        if let Err(e) = stub.release(request).await {
            tracing::debug!(error = %e, "release in the background failed; the lease ends it");
        }
    });
}

/// Renews every third of the lease until refused or out of time.
async fn renew(stub: LocksClient, request: RenewRequest, lease: Duration, held: Arc<Held>) {
    let period = (lease / 3).max(Duration::from_millis(1));
    loop {
        let until = held.until();
        let next = until.checked_sub(lease - period).unwrap_or(until);
        tokio::time::sleep_until(next.into()).await;
        if Instant::now() >= held.until() {
            tracing::warn!(lock = %request.lock, "lease ended without a renewal");
            held.lose();
            return;
        }
        let sent = Instant::now();
        let left = held.until().saturating_duration_since(sent);
        match stub
            .renew(request.clone())
            .timeout(left.max(Duration::from_millis(1)))
            .await
        {
            Ok(_) => held.extend(sent + lease),
            Err(CallError::Raised(e, _)) => {
                tracing::warn!(lock = %request.lock, detail = %e.detail, "renewal refused: lock lost");
                held.lose();
                return;
            }
            Err(e) => {
                tracing::debug!(lock = %request.lock, error = %e, "renewal failed; trying again");
                tokio::time::sleep(period / 4).await;
                if Instant::now() >= held.until() {
                    held.lose();
                    return;
                }
                // The next turn of the loop tries again at once (its
                // renewal time has passed).
            }
        }
    }
}
