#![allow(clippy::unwrap_used)]
use super::*;

const S: Duration = Duration::from_secs(1);

fn table(now: Instant) -> LockTable {
    LockTable::new(7, Limits::default(), now)
}

fn granted(a: Acquired) -> Granted {
    match a {
        Acquired::Granted(g) => g,
        Acquired::Queued(_) => panic!("queued"),
    }
}

fn queued(a: Acquired) -> WaiterId {
    match a {
        Acquired::Queued(id) => id,
        Acquired::Granted(_) => panic!("granted"),
    }
}

#[test]
fn fifo_grants_with_increasing_tokens() {
    let t0 = Instant::now();
    let mut t = table(t0);
    let a = granted(t.acquire("x", "a", 1, S, t0).unwrap());
    assert_eq!(a.token, 7 << 32 | 1);
    let b = queued(t.acquire("x", "b", 1, S, t0).unwrap());
    let c = queued(t.acquire("x", "c", 1, S, t0).unwrap());
    let g = t.release("x", "a", a.token, t0).unwrap();
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].waiter, Some(b));
    assert!(g[0].token > a.token);
    let g2 = t.release("x", "b", g[0].token, t0).unwrap();
    assert_eq!(g2[0].waiter, Some(c));
    assert!(g2[0].token > g[0].token);
}

#[test]
fn an_expired_lease_goes_to_the_next_waiter() {
    let t0 = Instant::now();
    let mut t = table(t0);
    let a = granted(t.acquire("x", "a", 1, S, t0).unwrap());
    let b = queued(t.acquire("x", "b", 2, S, t0).unwrap());
    assert_eq!(t.next_deadline(), Some(t0 + S));
    assert!(t.expire(t0 + S / 2).is_empty());
    let g = t.expire(t0 + S);
    assert_eq!(g[0].waiter, Some(b));
    // The old holder can neither renew nor release.
    let e = t.renew("x", "a", a.token, S, t0 + S).unwrap_err();
    assert_eq!(e.kind, LockErrorKind::NotHeld);
    let e = t.release("x", "a", a.token, t0 + S).unwrap_err();
    assert_eq!(e.kind, LockErrorKind::NotHeld);
}

#[test]
fn an_expired_lease_is_not_renewed_even_when_nobody_took_the_lock() {
    let t0 = Instant::now();
    let mut t = table(t0);
    let a = granted(t.acquire("x", "a", 1, S, t0).unwrap());
    assert!(t.renew("x", "a", a.token, S, t0 + S / 2).is_ok());
    let e = t.renew("x", "a", a.token, S, t0 + 2 * S).unwrap_err();
    assert_eq!(e.kind, LockErrorKind::NotHeld);
}

#[test]
fn bad_input_changes_nothing() {
    let t0 = Instant::now();
    let mut t = table(t0);
    let a = granted(t.acquire("x", "a", 1, S, t0).unwrap());
    let long = "n".repeat(257);
    for (lock, owner, lease, kind) in [
        ("", "a", S, LockErrorKind::BadName),
        (long.as_str(), "a", S, LockErrorKind::BadName),
        ("x\n", "a", S, LockErrorKind::BadName),
        ("x", "", S, LockErrorKind::BadOwner),
        ("x", "b", Duration::ZERO, LockErrorKind::BadLease),
        ("x", "b", Duration::from_secs(3600), LockErrorKind::BadLease),
    ] {
        let e = t.acquire(lock, owner, 9, lease, t0).unwrap_err();
        assert_eq!(e.kind, kind, "{lock:?} {owner:?} {lease:?}");
    }
    assert_eq!(
        t.release("x", "b", a.token, t0).unwrap_err().kind,
        LockErrorKind::NotHeld
    );
    assert_eq!(
        t.release("x", "a", a.token + 1, t0).unwrap_err().kind,
        LockErrorKind::NotHeld
    );
    assert_eq!(
        t.check_wait(Duration::from_secs(61)).unwrap_err().kind,
        LockErrorKind::BadWait
    );
    let v = t.inspect("x", t0);
    assert_eq!(
        v.holder.map(|h| (h.0, h.1)),
        Some(("a".to_owned(), a.token))
    );
    assert!(v.waiters.is_empty());
}

#[test]
fn cancel_and_withdraw_leave_the_queue_and_release_all_frees_everything() {
    let t0 = Instant::now();
    let mut t = table(t0);
    let a = granted(t.acquire("x", "a", 1, S, t0).unwrap());
    let _b = queued(t.acquire("x", "b", 2, S, t0).unwrap());
    let c = queued(t.acquire("x", "c", 3, S, t0).unwrap());
    let out = t.cancel("x", "b", 2, t0).unwrap();
    assert!(out.was_waiting && !out.released && out.grants.is_empty());
    let (found, grants) = t.withdraw("x", c, t0);
    assert!(found && grants.is_empty());
    assert!(t.inspect("x", t0).waiters.is_empty());
    let _ = granted(t.acquire("y", "a", 4, S, t0).unwrap());
    let d = queued(t.acquire("y", "d", 5, S, t0).unwrap());
    let (released, withdrawn, grants) = t.release_all("a", t0).unwrap();
    assert_eq!((released, withdrawn.len()), (2, 0));
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].waiter, Some(d));
    assert!(t.inspect("x", t0).holder.is_none());
    let _ = a;
}

#[test]
fn nothing_is_granted_during_the_grace_period() {
    let t0 = Instant::now();
    let mut t = LockTable::new(1, Limits::default(), t0 + S);
    let a = queued(t.acquire("x", "a", 1, S, t0).unwrap());
    assert_eq!(t.next_deadline(), Some(t0 + S));
    assert!(t.expire(t0).is_empty());
    let g = t.expire(t0 + S);
    assert_eq!(g[0].waiter, Some(a));
}
