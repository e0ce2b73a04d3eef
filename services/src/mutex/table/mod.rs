//! The lock table: every lock's holder, lease and queue of waiters, as a
//! state machine without I/O. Time is an argument (the server's monotonic
//! clock); the server around it delivers grants to waiting handlers and
//! calls [`LockTable::expire`] when [`LockTable::next_deadline`] comes.
//!
//! Every operation either changes the table as documented or returns a
//! [`Refusal`] and changes nothing.

use crate::proto::mutex::v1::LockErrorKind;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Limits on what callers may ask for.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest lock name and owner, in bytes.
    pub max_name_len: usize,
    /// Longest lease granted.
    pub max_lease: Duration,
    /// Longest wait in a queue.
    pub max_wait: Duration,
    /// Waiters per lock.
    pub max_waiters: usize,
    /// Locks held or waited for at once.
    pub max_locks: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_name_len: 256,
            max_lease: Duration::from_secs(300),
            max_wait: Duration::from_secs(60),
            max_waiters: 10_000,
            max_locks: 100_000,
        }
    }
}

/// Why an operation was refused; the table is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What was wrong.
    pub kind: LockErrorKind,
    /// In words.
    pub detail: String,
}

impl Refusal {
    fn new(kind: LockErrorKind, detail: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            detail: detail.into(),
        }
    }
}

/// A waiting acquire's handle, unique in one table.
pub type WaiterId = u64;

/// A grant: who holds which lock with which token until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    /// The lock.
    pub lock: String,
    /// The fencing token.
    pub token: u64,
    /// The lease.
    pub lease: Duration,
    /// When it expires unless renewed.
    pub expires: Instant,
    /// The waiter granted (`None` for an acquire granted at once).
    pub waiter: Option<WaiterId>,
    /// When the acquire arrived.
    pub arrived: Instant,
}

/// What an acquire did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// The lock was free: granted now.
    Granted(Granted),
    /// Queued behind the holder and earlier waiters.
    Queued(WaiterId),
}

/// What a cancel did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelOutcome {
    /// The acquire was waiting and left the queue.
    pub was_waiting: bool,
    /// The waiter that left the queue.
    pub withdrawn: Option<WaiterId>,
    /// The acquire had been granted and the lock was released.
    pub released: bool,
    /// Grants that the release made (the next waiter).
    pub grants: Vec<Granted>,
}

/// A lock's state, for [`LockTable::inspect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockView {
    /// Holder's owner and token and the lease left.
    pub holder: Option<(String, u64, Duration)>,
    /// Owners of the waiters, in grant order.
    pub waiters: Vec<String>,
}

#[derive(Debug)]
struct Holder {
    owner: String,
    acquire_id: u64,
    token: u64,
    expires: Instant,
}

#[derive(Debug)]
struct Waiter {
    id: WaiterId,
    owner: String,
    acquire_id: u64,
    lease: Duration,
    arrived: Instant,
}

#[derive(Debug, Default)]
struct Lock {
    holder: Option<Holder>,
    queue: VecDeque<Waiter>,
}

/// Where the tokens come from: `epoch << 32 | counter`, the counter
/// counting this run's grants from 1.
#[derive(Debug)]
struct Tokens {
    epoch: u32,
    counter: u32,
}

impl Tokens {
    fn next(&mut self) -> Option<u64> {
        self.counter = self.counter.checked_add(1)?;
        Some(u64::from(self.epoch) << 32 | u64::from(self.counter))
    }
}

/// Every lock of one server run.
#[derive(Debug)]
pub struct LockTable {
    limits: Limits,
    locks: HashMap<String, Lock>,
    tokens: Tokens,
    next_waiter: WaiterId,
    /// No grant before this instant (the grace period after a start).
    grants_from: Instant,
}

fn check_name(what: &str, name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if name.len() > max {
        return Err(format!("{what} of {} bytes exceeds {max}", name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{what} {name:?} has control characters"));
    }
    Ok(())
}

impl LockTable {
    /// An empty table issuing tokens of `epoch`, granting nothing before
    /// `grants_from` (acquires queue until then).
    pub fn new(epoch: u32, limits: Limits, grants_from: Instant) -> LockTable {
        LockTable {
            limits,
            locks: HashMap::new(),
            tokens: Tokens { epoch, counter: 0 },
            next_waiter: 1,
            grants_from,
        }
    }

    /// The epoch of this run's tokens.
    pub fn epoch(&self) -> u32 {
        self.tokens.epoch
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Checks a lock name and an owner.
    ///
    /// # Errors
    /// [`LockErrorKind::BadName`], [`LockErrorKind::BadOwner`].
    pub fn check_names(&self, lock: &str, owner: &str) -> Result<(), Refusal> {
        check_name("lock name", lock, self.limits.max_name_len)
            .map_err(|d| Refusal::new(LockErrorKind::BadName, d))?;
        check_name("owner", owner, self.limits.max_name_len)
            .map_err(|d| Refusal::new(LockErrorKind::BadOwner, d))
    }

    fn check_lease(&self, lease: Duration) -> Result<(), Refusal> {
        if lease.is_zero() || lease > self.limits.max_lease {
            return Err(Refusal::new(
                LockErrorKind::BadLease,
                format!(
                    "lease of {} ms is not in 1..={} ms",
                    lease.as_millis(),
                    self.limits.max_lease.as_millis()
                ),
            ));
        }
        Ok(())
    }

    /// Checks a wait against the limit.
    ///
    /// # Errors
    /// [`LockErrorKind::BadWait`].
    pub fn check_wait(&self, wait: Duration) -> Result<(), Refusal> {
        if wait > self.limits.max_wait {
            return Err(Refusal::new(
                LockErrorKind::BadWait,
                format!(
                    "wait of {} ms exceeds {} ms",
                    wait.as_millis(),
                    self.limits.max_wait.as_millis()
                ),
            ));
        }
        Ok(())
    }

    /// Takes `lock` for `owner` if it is free and nobody waits, else
    /// queues the acquire (a `wait` of zero is the caller's business: it
    /// cancels the waiter at once).
    ///
    /// # Errors
    /// Bad names or lease ([`LockErrorKind::BadName`],
    /// [`LockErrorKind::BadOwner`], [`LockErrorKind::BadLease`]),
    /// [`LockErrorKind::TooMany`] waiters or locks,
    /// [`LockErrorKind::TokensExhausted`].
    pub fn acquire(
        &mut self,
        lock: &str,
        owner: &str,
        acquire_id: u64,
        lease: Duration,
        now: Instant,
    ) -> Result<Acquired, Refusal> {
        self.check_names(lock, owner)?;
        self.check_lease(lease)?;
        if !self.locks.contains_key(lock) && self.locks.len() >= self.limits.max_locks {
            return Err(Refusal::new(
                LockErrorKind::TooMany,
                format!("{} locks in use, the limit", self.locks.len()),
            ));
        }
        self.expire_one(lock, now);
        let free = self
            .locks
            .get(lock)
            .is_none_or(|l| l.holder.is_none() && l.queue.is_empty());
        if free && now >= self.grants_from {
            let token = self.tokens.next().ok_or_else(exhausted)?;
            let expires = now + lease;
            self.locks.entry(lock.to_owned()).or_default().holder = Some(Holder {
                owner: owner.to_owned(),
                acquire_id,
                token,
                expires,
            });
            return Ok(Acquired::Granted(Granted {
                lock: lock.to_owned(),
                token,
                lease,
                expires,
                waiter: None,
                arrived: now,
            }));
        }
        let max_waiters = self.limits.max_waiters;
        let entry = self.locks.entry(lock.to_owned()).or_default();
        if entry.queue.len() >= max_waiters {
            return Err(Refusal::new(
                LockErrorKind::TooMany,
                format!("{} waiters on {lock:?}, the limit", entry.queue.len()),
            ));
        }
        let id = self.next_waiter;
        self.next_waiter += 1;
        entry.queue.push_back(Waiter {
            id,
            owner: owner.to_owned(),
            acquire_id,
            lease,
            arrived: now,
        });
        Ok(Acquired::Queued(id))
    }

    /// Releases `lock` held by `owner` with `token`; the next waiter is
    /// granted at once (returned).
    ///
    /// # Errors
    /// Bad names, [`LockErrorKind::NotHeld`] (also when the lease has
    /// expired, even if nobody took the lock since).
    pub fn release(
        &mut self,
        lock: &str,
        owner: &str,
        token: u64,
        now: Instant,
    ) -> Result<Vec<Granted>, Refusal> {
        self.check_names(lock, owner)?;
        let mut grants = self.expire_one(lock, now);
        let held = self.locks.get(lock).and_then(|l| l.holder.as_ref());
        match held {
            Some(h) if h.owner == owner && h.token == token => {}
            _ => return Err(not_held(lock, owner, token)),
        }
        if let Some(l) = self.locks.get_mut(lock) {
            l.holder = None;
        }
        grants.extend(self.grant_next(lock, now));
        Ok(grants)
    }

    /// Extends the lease of `lock` held by `owner` with `token` to `lease`
    /// from now.
    ///
    /// # Errors
    /// Bad names or lease, [`LockErrorKind::NotHeld`] (an expired lease
    /// is not renewed).
    pub fn renew(
        &mut self,
        lock: &str,
        owner: &str,
        token: u64,
        lease: Duration,
        now: Instant,
    ) -> Result<Instant, Refusal> {
        self.check_names(lock, owner)?;
        self.check_lease(lease)?;
        match self.locks.get_mut(lock).and_then(|l| l.holder.as_mut()) {
            Some(h) if h.owner == owner && h.token == token && h.expires > now => {
                h.expires = now + lease;
                Ok(h.expires)
            }
            _ => Err(not_held(lock, owner, token)),
        }
    }

    /// Withdraws the acquire `acquire_id` of `owner` on `lock`: out of the
    /// queue if it waits, released if it holds the lock (the grants this
    /// makes are returned). Nothing to withdraw is not an error.
    ///
    /// # Errors
    /// Bad names.
    pub fn cancel(
        &mut self,
        lock: &str,
        owner: &str,
        acquire_id: u64,
        now: Instant,
    ) -> Result<CancelOutcome, Refusal> {
        self.check_names(lock, owner)?;
        let mut grants = self.expire_one(lock, now);
        let mut out = CancelOutcome {
            was_waiting: false,
            withdrawn: None,
            released: false,
            grants: Vec::new(),
        };
        if let Some(l) = self.locks.get_mut(lock) {
            if let Some(at) = l
                .queue
                .iter()
                .position(|w| w.owner == owner && w.acquire_id == acquire_id)
            {
                out.withdrawn = l.queue.remove(at).map(|w| w.id);
                out.was_waiting = true;
            }
            if l.holder
                .as_ref()
                .is_some_and(|h| h.owner == owner && h.acquire_id == acquire_id)
            {
                l.holder = None;
                out.released = true;
            }
        }
        grants.extend(self.grant_next(lock, now));
        out.grants = grants;
        Ok(out)
    }

    /// Removes the waiter `id` from its queue (its handler gave up).
    /// Returns whether it was still waiting; `false` means it was granted
    /// already (the grant is on its way to the handler).
    pub fn withdraw(&mut self, lock: &str, id: WaiterId, now: Instant) -> (bool, Vec<Granted>) {
        let mut found = false;
        if let Some(l) = self.locks.get_mut(lock) {
            let before = l.queue.len();
            l.queue.retain(|w| w.id != id);
            found = l.queue.len() < before;
        }
        // The head may have left: the next may be grantable now.
        let grants = self.grant_next(lock, now);
        (found, grants)
    }

    /// Releases every lock `owner` holds and withdraws its waiting
    /// acquires. Returns (released, withdrawn waiter ids, grants made).
    ///
    /// # Errors
    /// A bad owner.
    pub fn release_all(
        &mut self,
        owner: &str,
        now: Instant,
    ) -> Result<(u32, Vec<WaiterId>, Vec<Granted>), Refusal> {
        check_name("owner", owner, self.limits.max_name_len)
            .map_err(|d| Refusal::new(LockErrorKind::BadOwner, d))?;
        let mut released = 0u32;
        let mut withdrawn = Vec::new();
        let mut touched = Vec::new();
        for (name, l) in &mut self.locks {
            if l.holder.as_ref().is_some_and(|h| h.owner == owner) {
                l.holder = None;
                released += 1;
                touched.push(name.clone());
            }
            let before = l.queue.len();
            l.queue.retain(|w| {
                let mine = w.owner == owner;
                if mine {
                    withdrawn.push(w.id);
                }
                !mine
            });
            if l.queue.len() < before {
                touched.push(name.clone());
            }
        }
        let mut grants = Vec::new();
        for name in touched {
            grants.extend(self.grant_next(&name, now));
        }
        Ok((released, withdrawn, grants))
    }

    /// Frees every lock whose lease has expired by `now` and grants each to
    /// its next waiter (also the first grants after the grace period).
    pub fn expire(&mut self, now: Instant) -> Vec<Granted> {
        let names: Vec<String> = self
            .locks
            .iter()
            .filter(|(_, l)| match &l.holder {
                Some(h) => h.expires <= now,
                None => !l.queue.is_empty(),
            })
            .map(|(n, _)| n.clone())
            .collect();
        let mut grants = Vec::new();
        for name in names {
            grants.extend(self.expire_one(&name, now));
        }
        grants
    }

    /// When [`LockTable::expire`] has something to do next: the earliest
    /// lease end, or the end of the grace period while acquires wait.
    pub fn next_deadline(&self) -> Option<Instant> {
        let leases = self
            .locks
            .values()
            .filter_map(|l| l.holder.as_ref().map(|h| h.expires));
        let grace = self
            .locks
            .values()
            .any(|l| l.holder.is_none() && !l.queue.is_empty())
            .then_some(self.grants_from);
        leases.chain(grace).min()
    }

    /// A lock's state.
    pub fn inspect(&self, lock: &str, now: Instant) -> LockView {
        match self.locks.get(lock) {
            None => LockView {
                holder: None,
                waiters: Vec::new(),
            },
            Some(l) => LockView {
                holder: l
                    .holder
                    .as_ref()
                    .filter(|h| h.expires > now)
                    .map(|h| (h.owner.clone(), h.token, h.expires - now)),
                waiters: l.queue.iter().map(|w| w.owner.clone()).collect(),
            },
        }
    }

    /// Frees `lock` if its lease has expired, then grants it to the next
    /// waiter if free.
    fn expire_one(&mut self, lock: &str, now: Instant) -> Vec<Granted> {
        if let Some(l) = self.locks.get_mut(lock) {
            if l.holder.as_ref().is_some_and(|h| h.expires <= now) {
                if let Some(h) = l.holder.take() {
                    tracing::info!(lock, owner = %h.owner, token = h.token, "lease expired");
                }
            }
        }
        self.grant_next(lock, now)
    }

    /// Grants a free `lock` to the head of its queue; forgets a lock with
    /// no holder and no waiters.
    fn grant_next(&mut self, lock: &str, now: Instant) -> Vec<Granted> {
        let Some(l) = self.locks.get_mut(lock) else {
            return Vec::new();
        };
        let mut grants = Vec::new();
        if l.holder.is_none() && now >= self.grants_from {
            if let Some(w) = l.queue.pop_front() {
                match self.tokens.next() {
                    Some(token) => {
                        let expires = now + w.lease;
                        l.holder = Some(Holder {
                            owner: w.owner,
                            acquire_id: w.acquire_id,
                            token,
                            expires,
                        });
                        grants.push(Granted {
                            lock: lock.to_owned(),
                            token,
                            lease: w.lease,
                            expires,
                            waiter: Some(w.id),
                            arrived: w.arrived,
                        });
                    }
                    None => {
                        // Out of tokens: the waiter stays first in line
                        // until the server is restarted with a new epoch.
                        tracing::error!(lock, "tokens of this epoch exhausted: restart the server");
                        l.queue.push_front(w);
                    }
                }
            }
        }
        if l.holder.is_none() && l.queue.is_empty() {
            self.locks.remove(lock);
        }
        grants
    }
}

fn exhausted() -> Refusal {
    Refusal::new(
        LockErrorKind::TokensExhausted,
        "every token of this epoch was issued: restart the server for a new epoch",
    )
}

fn not_held(lock: &str, owner: &str, token: u64) -> Refusal {
    Refusal::new(
        LockErrorKind::NotHeld,
        format!("{owner:?} does not hold {lock:?} with token {token:#x}"),
    )
}

#[cfg(test)]
mod tests;
