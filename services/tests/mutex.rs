//! The lock service against a real `lock-server` child process on
//! loopback, with `lock-holder` child processes that are killed and paused
//! while they hold a lock, and the fenced `Resource` served by the test.
//!
//! Verdicts are orders and tokens, never durations: every wait ends on an
//! event (a line printed, a lock's state that changes, polled every 10 ms)
//! within a bound far above what it needs. Leases are the only clock, and
//! a test only relies on a lease having ended, never on how soon.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use rpc_core::client::UdpChannel;
use rpc_core::{CallError, Client};
use rpc_services::mutex::{serve_resource, LockClient, ResourceService};
use rpc_services::proto::mutex::v1::{
    AcquireRequest, InspectRequest, LockErrorKind, LockState, LocksClient, ReadRequest,
    ResourceClient, WriteRequest,
};
use rpc_testkit::{Cluster, Node, NodeBuilder, Output};
use std::future::IntoFuture as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BOUND: Duration = Duration::from_secs(30);

fn lock_server() -> NodeBuilder {
    NodeBuilder::new("locks", env!("CARGO_BIN_EXE_lock-server"))
        .args(["--listen", "{addr}", "--data-dir", "{data}"])
        .env("RUST_LOG", "info")
        .start_timeout(Duration::from_secs(30))
}

/// A `lock-holder` that has the lock when its start returns (its
/// "address" is the line announcing the grant).
fn holder(
    name: &str,
    server: SocketAddr,
    resource: SocketAddr,
    lease_ms: u64,
    go: &Path,
) -> NodeBuilder {
    NodeBuilder::new(name, env!("CARGO_BIN_EXE_lock-holder"))
        .args(["--server", &server.to_string()])
        .args(["--resource", &resource.to_string()])
        .args(["--lock", "L", "--owner", name])
        .arg(format!("--lease-ms={lease_ms}"))
        .arg("--go-file")
        .arg(go.to_string_lossy().into_owned())
        .env("RUST_LOG", "info")
        .address_from(|line| {
            line.starts_with("holding token ")
                .then(|| SocketAddr::from(([127, 0, 0, 1], 1)))
        })
}

fn token_of(node: &mut Node) -> u64 {
    let line = tokio::task::block_in_place(|| {
        node.wait_for_line(Output::Stdout, BOUND, |l| l.starts_with("holding token "))
    })
    .unwrap();
    line.trim()
        .trim_start_matches("holding token ")
        .parse()
        .unwrap()
}

async fn locks(server: SocketAddr, owner: &str) -> LockClient {
    LockClient::new(
        Client::new(UdpChannel::connect(server).await.unwrap()),
        owner,
    )
}

async fn stub(server: SocketAddr) -> LocksClient {
    LocksClient::new(Client::new(UdpChannel::connect(server).await.unwrap()))
}

async fn resource_client(addr: SocketAddr) -> ResourceClient {
    ResourceClient::new(Client::new(UdpChannel::connect(addr).await.unwrap()))
}

async fn inspect(stub: &LocksClient, lock: &str) -> LockState {
    stub.inspect(InspectRequest {
        lock: lock.to_owned(),
    })
    .await
    .unwrap()
}

/// Polls `check` every 10 ms until it gives `Some`, at most [`BOUND`].
async fn wait_for<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    rpc_testkit::poll_until(BOUND, Duration::from_millis(10), check)
        .await
        .unwrap_or_else(|| panic!("waited {BOUND:?} for {what}"))
}

/// 8 clients x 250 increments (read, then write the value plus one) of the
/// resource, each under the lock: the value is exactly 2,000, the resource
/// refused nothing, and in its log every grant's read and write are
/// adjacent (no other client's operation between them) with tokens
/// strictly increasing from one critical section to the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_clients_increment_under_the_lock_without_overlap() {
    let mut cluster = Cluster::new().unwrap();
    let server = cluster.start(lock_server()).unwrap().addr();
    let resource = Arc::new(ResourceService::new());
    let door = serve_resource(Arc::clone(&resource), "127.0.0.1:0")
        .await
        .unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..8 {
        let locks = locks(server, &format!("client-{c}")).await;
        let res = resource_client(door.local_addr()).await;
        tasks.push(tokio::spawn(async move {
            for _ in 0..250 {
                let guard = locks.lock("counter").await.unwrap();
                let token = guard.token();
                let v = res.read(ReadRequest { token }).await.unwrap().value;
                res.write(WriteRequest {
                    token,
                    value: v + 1,
                })
                .await
                .unwrap();
                guard.release().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    assert_eq!(resource.value(), 2_000);
    let mut log = resource.log();
    assert!(
        log.iter().all(|op| op.accepted),
        "a stale token was refused"
    );
    // Read is idempotent: a retransmitted read may run twice in a row.
    let ops = log.len();
    log.dedup_by(|b, a| !a.write && !b.write && a.token == b.token);
    assert_eq!(log.len(), 4_000, "{} repeated reads", ops - log.len());
    for (i, section) in log.chunks(2).enumerate() {
        assert!(
            !section[0].write && section[1].write && section[0].token == section[1].token,
            "critical section {i} interleaved: {section:?}"
        );
        if i > 0 {
            assert!(
                section[0].token > log[2 * i - 1].token,
                "token order at {i}"
            );
        }
    }
    println!(
        "2,000 locked increments by 8 clients in {elapsed:?} ({:.0} critical sections/s; {} reads ran twice)",
        2_000.0 / elapsed.as_secs_f64(),
        ops - log.len()
    );
    cluster.passed();
}

/// A holder SIGKILLed while it holds the lock: the waiter queued behind it
/// is granted once the lease ends, with a higher token, and the dead
/// holder's token is refused by the resource after the waiter wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_loses_the_lock_at_its_lease_end() {
    let mut cluster = Cluster::new().unwrap();
    let server = cluster.start(lock_server()).unwrap().addr();
    let resource = Arc::new(ResourceService::new());
    let door = serve_resource(Arc::clone(&resource), "127.0.0.1:0")
        .await
        .unwrap();
    let go = cluster.dir().join("never");
    let lease_ms = 1_000;
    let node = cluster
        .start(holder("h1", server, door.local_addr(), lease_ms, &go))
        .unwrap();
    let dead_token = token_of(node);
    let stub = stub(server).await;
    let waiter = locks(server, "waiter").await;
    let waiting = tokio::spawn(async move {
        let guard = waiter.lock("L").await.unwrap();
        (Instant::now(), guard)
    });
    wait_for("the waiter to queue", || async {
        (inspect(&stub, "L").await.waiters == ["waiter"]).then_some(())
    })
    .await;
    let killed = Instant::now();
    tokio::task::block_in_place(|| cluster.node_mut("h1").unwrap().kill()).unwrap();
    let (granted, guard) = waiting.await.unwrap();
    println!(
        "holder killed; next grant after {:?} (lease {lease_ms} ms)",
        granted - killed
    );
    assert!(guard.token() > dead_token);
    let res = resource_client(door.local_addr()).await;
    res.write(WriteRequest {
        token: guard.token(),
        value: 1,
    })
    .await
    .unwrap();
    let stale = res
        .write(WriteRequest {
            token: dead_token,
            value: 2,
        })
        .await
        .unwrap_err();
    match stale {
        CallError::Raised(e, _) => {
            assert_eq!((e.token, e.highest_token), (dead_token, guard.token()))
        }
        other => panic!("expected StaleToken, got {other:?}"),
    }
    assert_eq!(resource.value(), 1);
    cluster.passed();
}

/// A holder SIGSTOPped past its lease: another client acquires and writes;
/// the paused holder resumes, believes no longer that it holds the lock,
/// writes anyway with its old token, and the resource refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holder_is_fenced_off_by_the_resource() {
    let mut cluster = Cluster::new().unwrap();
    let server = cluster.start(lock_server()).unwrap().addr();
    let resource = Arc::new(ResourceService::new());
    let door = serve_resource(Arc::clone(&resource), "127.0.0.1:0")
        .await
        .unwrap();
    let go = cluster.dir().join("go");
    let node = cluster
        .start(holder("h1", server, door.local_addr(), 500, &go))
        .unwrap();
    let old = token_of(node);
    tokio::task::block_in_place(|| node.pause()).unwrap();
    // Another client: granted when the paused holder's lease ends.
    let other = locks(server, "other").await;
    let guard = other.lock("L").await.unwrap();
    assert!(guard.token() > old);
    let res = resource_client(door.local_addr()).await;
    res.write(WriteRequest {
        token: guard.token(),
        value: 7,
    })
    .await
    .unwrap();
    std::fs::write(&go, b"go").unwrap();
    let node = cluster.node_mut("h1").unwrap();
    tokio::task::block_in_place(|| node.resume()).unwrap();
    let line = tokio::task::block_in_place(|| {
        node.wait_for_line(Output::Stdout, BOUND, |l| l.starts_with("write "))
    })
    .unwrap();
    assert_eq!(
        line.trim(),
        format!("write rejected highest {}", guard.token())
    );
    let held = tokio::task::block_in_place(|| {
        node.wait_for_line(Output::Stdout, BOUND, |l| l.starts_with("held "))
    })
    .unwrap();
    assert_eq!(held.trim(), "held false");
    assert_eq!(resource.value(), 7);
    guard.release().await.unwrap();
    cluster.passed();
}

/// The lock server restarted (SIGKILL, then the same data directory):
/// every token after the restart is higher than every token before; a
/// guard held across the restart learns that it lost the lock; a corrupt
/// epoch file stops the server with a message naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_keep_increasing_across_restarts() {
    let mut cluster = Cluster::new().unwrap();
    let server = cluster.start(lock_server()).unwrap().addr();
    let client = locks(server, "c").await.lease(Duration::from_millis(600));
    let mut before = Vec::new();
    for i in 0..20 {
        let g = client.lock(&format!("lock-{}", i % 3)).await.unwrap();
        before.push(g.token());
        g.release().await.unwrap();
    }
    let held = client.lock("kept").await.unwrap();
    before.push(held.token());
    let node = cluster.node_mut("locks").unwrap();
    tokio::task::block_in_place(|| node.kill()).unwrap();
    tokio::task::block_in_place(|| node.restart()).unwrap();
    assert_eq!(node.addr(), server);
    let max_before = before.iter().copied().max().unwrap();
    for i in 0..20 {
        let g = client.lock(&format!("lock-{}", i % 3)).await.unwrap();
        assert!(
            g.token() > max_before,
            "token {:#x} after the restart, {max_before:#x} before",
            g.token()
        );
        g.release().await.unwrap();
    }
    tokio::time::timeout(BOUND, held.lost())
        .await
        .expect("the guard held across the restart never learned it lost the lock");
    assert!(!held.is_held());
    drop(held);

    // A corrupt epoch file: a clear error, no panic.
    let node = cluster.node_mut("locks").unwrap();
    tokio::task::block_in_place(|| node.kill()).unwrap();
    std::fs::write(node.data_dir().join("epoch"), b"not an epoch").unwrap();
    let err = tokio::task::block_in_place(|| node.restart()).unwrap_err();
    let stderr = std::fs::read_to_string(&node.logs().stderr).unwrap();
    assert!(
        stderr.contains("corrupt epoch file") && !stderr.contains("panicked"),
        "{err}: {stderr}"
    );
    cluster.passed();
}

/// Waiters that give up leave the queue: a `LockClient::lock` future
/// dropped (it sends `Cancel`), and a plain synchronous acquire whose call
/// is dropped (CANCEL: the handler's `ctx.cancelled()`). Then waiters that
/// queue one after the other are granted in that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_waiters_leave_the_queue_and_the_rest_are_served_in_order() {
    let mut cluster = Cluster::new().unwrap();
    let server = cluster.start(lock_server()).unwrap().addr();
    let stub = stub(server).await;
    let holder = locks(server, "holder").await;
    let guard = holder.lock("L").await.unwrap();

    let quitter = locks(server, "quitter").await;
    let task = tokio::spawn(async move { quitter.lock("L").await.map(|g| g.token()) });
    wait_for("the quitter to queue", || async {
        (inspect(&stub, "L").await.waiters == ["quitter"]).then_some(())
    })
    .await;
    task.abort();
    wait_for("the dropped lock() to leave the queue", || async {
        inspect(&stub, "L").await.waiters.is_empty().then_some(())
    })
    .await;

    let raw = self::stub(server).await;
    let call = tokio::spawn(
        raw.acquire(AcquireRequest {
            lock: "L".into(),
            owner: "raw".into(),
            wait_ms: 30_000,
            lease_ms: 1_000,
            acquire_id: 1,
        })
        .synchronous()
        .timeout(Duration::from_secs(40))
        .into_future(),
    );
    wait_for("the raw acquire to queue", || async {
        (inspect(&stub, "L").await.waiters == ["raw"]).then_some(())
    })
    .await;
    call.abort();
    wait_for("the cancelled call to leave the queue", || async {
        inspect(&stub, "L").await.waiters.is_empty().then_some(())
    })
    .await;

    // Five waiters, each queued after the one before.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut names = Vec::new();
    for w in 0..5 {
        let name = format!("w{w}");
        let client = locks(server, &name).await;
        let tx = tx.clone();
        let n = name.clone();
        tokio::spawn(async move {
            let g = client.lock("L").await.unwrap();
            tx.send((n, g.token())).unwrap();
            g.release().await.unwrap();
        });
        names.push(name);
        let want = names.clone();
        wait_for("the next waiter to queue", || {
            let want = want.clone();
            let stub = stub.clone();
            async move { (inspect(&stub, "L").await.waiters == want).then_some(()) }
        })
        .await;
    }
    guard.release().await.unwrap();
    let mut order = Vec::new();
    let mut last = 0;
    for _ in 0..5 {
        let (name, token) = tokio::time::timeout(BOUND, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(token > last);
        last = token;
        order.push(name);
    }
    assert_eq!(order, names);
    cluster.passed();
}

/// Bad input: each a typed error that says which, and no lock changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_typed_error_and_changes_nothing() {
    let mut cluster = Cluster::new().unwrap();
    let server = cluster.start(lock_server()).unwrap().addr();
    let stub = stub(server).await;
    let client = locks(server, "a").await.lease(Duration::from_millis(300));
    let guard = client.lock("L").await.unwrap();
    let state = inspect(&stub, "L").await;
    let acquire = |lock: &str, lease_ms: u32, wait_ms: u32| AcquireRequest {
        lock: lock.into(),
        owner: "b".into(),
        wait_ms,
        lease_ms,
        acquire_id: 9,
    };
    let long = "x".repeat(300);
    for (req, kind) in [
        (acquire("", 1_000, 0), LockErrorKind::BadName),
        (acquire(&long, 1_000, 0), LockErrorKind::BadName),
        (acquire("L", 0, 0), LockErrorKind::BadLease),
        (acquire("L", u32::MAX, 0), LockErrorKind::BadLease),
        (acquire("L", 1_000, u32::MAX), LockErrorKind::BadWait),
        (acquire("L", 1_000, 0), LockErrorKind::WaitExpired),
    ] {
        let e = stub.acquire(req.clone()).synchronous().await.unwrap_err();
        let raised = e.raised().unwrap_or_else(|| panic!("{req:?}: {e:?}"));
        assert_eq!(raised.kind(), kind, "{req:?}: {}", raised.detail);
        assert!(!raised.detail.is_empty());
    }
    let not_held = stub
        .release(rpc_services::proto::mutex::v1::ReleaseRequest {
            lock: "L".into(),
            owner: "b".into(),
            token: guard.token(),
        })
        .await
        .unwrap_err();
    assert_eq!(not_held.raised().unwrap().kind(), LockErrorKind::NotHeld);
    let after = inspect(&stub, "L").await;
    assert_eq!(
        (after.owner.as_str(), after.token, after.waiters.len()),
        (state.owner.as_str(), state.token, 0)
    );
    // A lease that has expired is not renewed.
    let token = guard.token();
    drop(guard);
    wait_for("the release on drop", || async {
        (!inspect(&stub, "L").await.held).then_some(())
    })
    .await;
    let expired = stub
        .renew(rpc_services::proto::mutex::v1::RenewRequest {
            lock: "L".into(),
            owner: "a".into(),
            token,
            lease_ms: 1_000,
        })
        .await
        .unwrap_err();
    assert_eq!(expired.raised().unwrap().kind(), LockErrorKind::NotHeld);
    cluster.passed();
}

/// What the reply-loss test's probes saw: acquires whose outcome the
/// caller could not learn.
#[derive(Debug)]
struct Unknown {
    lock: String,
    owner: String,
    /// The acquire's deadline: the server starts no work after it and
    /// caps the wait below it, so a grant, if any, came before it.
    deadline: Instant,
    lease: Duration,
}

/// The lock server behind the framework's fault proxy, which drops 30% of
/// the datagrams from the server to the clients (replies, ACCEPTs and
/// IN_PROGRESS notes; requests all arrive). Four clients take the lock 25
/// times each and do a read and a write of the resource (served directly)
/// under it; a probe sends single-attempt acquires whose answers the
/// proxy is free to drop, on locks of their own and on the contended one.
///
/// No lock is granted twice at once: the resource's accepted operations
/// of one token come together, never interleaved with another token's,
/// with tokens strictly increasing, and the value counts the sections. A
/// client whose lease ran out unseen (its renewals' answers lost) may
/// present an old token: the resource refuses it, and by then the client
/// knows it lost the lock (a conservative lease end on the client). Every acquire whose outcome was unknown leaves no lock held past
/// its lease: once the wait and the lease have passed since it was sent,
/// the server (asked directly, not through the proxy) shows its owner
/// holding nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_reply_loss_grants_no_lock_twice_and_leaks_none() {
    use rpc_core::fault::{FaultConfig, FaultProxy, ProxyConfig, ProxyFaults};
    let mut cluster = Cluster::new().unwrap();
    let server = cluster.start(lock_server()).unwrap().addr();
    let faults = ProxyFaults {
        client_to_server: FaultConfig::none(),
        server_to_client: FaultConfig::seeded(0x30).loss(0.3),
    };
    let proxy = FaultProxy::loopback(server, ProxyConfig::new(faults))
        .await
        .unwrap();
    let lossy = proxy.local_addr();
    let resource = Arc::new(ResourceService::new());
    let door = serve_resource(Arc::clone(&resource), "127.0.0.1:0")
        .await
        .unwrap();

    let mut tasks = Vec::new();
    for c in 0..4 {
        let locks = locks(lossy, &format!("client-{c}"))
            .await
            .lease(Duration::from_secs(3))
            .wait(Duration::from_secs(20));
        let res = resource_client(door.local_addr()).await;
        tasks.push(tokio::spawn(async move {
            let (mut done, mut failed, mut fenced) = (0, 0, 0);
            while done < 25 {
                // A failed acquire may have been granted: the library
                // withdraws it, and its lease ends it in any case.
                let guard = match locks.lock("counter").await {
                    Ok(g) => g,
                    Err(e) => {
                        failed += 1;
                        assert!(failed < 50, "{failed} failed acquires, the last: {e}");
                        continue;
                    }
                };
                let token = guard.token();
                // The resource refuses a token older than one it has seen:
                // the lock had moved on after this lease ended (renewals
                // lost), and the client must know by then that it lost it.
                let v = match res.read(ReadRequest { token }).await {
                    Ok(v) => v.value,
                    Err(CallError::Raised(stale, _)) => {
                        assert!(!guard.is_held(), "{stale:?} refused while held");
                        fenced += 1;
                        continue;
                    }
                    Err(e) => panic!("read: {e}"),
                };
                match res
                    .write(WriteRequest {
                        token,
                        value: v + 1,
                    })
                    .await
                {
                    Ok(_) => {}
                    Err(CallError::Raised(stale, _)) => {
                        assert!(!guard.is_held(), "{stale:?} refused while held");
                        fenced += 1;
                        continue;
                    }
                    Err(e) => panic!("write: {e}"),
                }
                // The release's answer may be lost for good: the lease
                // ends the grant then.
                let _ = guard.release().await;
                done += 1;
            }
            (failed, fenced)
        }));
    }

    // The probe: one attempt each, so a dropped answer leaves the outcome
    // unknown; on the contended lock the one attempt usually gives up at
    // its retransmission timeout while queued (the caller walks away from
    // a waiting acquire, which the server may grant just then).
    let probe = stub(lossy).await;
    let mut unknown = Vec::new();
    let (mut granted, mut refused, mut not_run) = (0, 0, 0);
    for i in 0..40u64 {
        let (lock, wait) = if i % 2 == 0 {
            (format!("probe-{i}"), Duration::ZERO)
        } else {
            ("counter".to_owned(), Duration::from_millis(100))
        };
        let owner = format!("probe-{i}");
        let lease = Duration::from_millis(800);
        let timeout = Duration::from_millis(400);
        let deadline = Instant::now() + timeout;
        let outcome = async {
            probe
                .acquire(AcquireRequest {
                    lock: lock.clone(),
                    owner: owner.clone(),
                    wait_ms: u32::try_from(wait.as_millis()).unwrap(),
                    lease_ms: u32::try_from(lease.as_millis()).unwrap(),
                    acquire_id: i,
                })
                .synchronous()
                .retries(0)
                .deadline(deadline)
                .await
        }
        .await;
        match outcome {
            // Granted and known: left to its lease too.
            Ok(_) => granted += 1,
            Err(CallError::Raised(..)) => refused += 1,
            Err(CallError::Rpc(e)) if !e.may_have_run() => {
                tracing::debug!(i, error = %e, "probe never sent");
                not_run += 1;
            }
            Err(CallError::Rpc(_)) => {
                unknown.push(Unknown {
                    lock,
                    owner,
                    deadline,
                    lease,
                });
            }
        }
    }
    let (mut failed, mut fenced) = (0, 0);
    for t in tasks {
        let (f, s) = t.await.unwrap();
        failed += f;
        fenced += s;
    }

    // Mutual exclusion, as the resource saw it: the accepted operations of
    // one token come together (reads, then at most one write, last), and
    // tokens strictly increase from one to the next; every section wrote
    // once, so the value counts them.
    let log = resource.log();
    let accepted: Vec<_> = log.iter().filter(|op| op.accepted).collect();
    let mut writes = 0;
    for (i, op) in accepted.iter().enumerate() {
        if i > 0 {
            let before = accepted[i - 1];
            assert!(
                op.token > before.token || (op.token == before.token && !before.write),
                "operation {i} {op:?} after {before:?}: sections interleaved"
            );
        }
        writes += i64::from(op.write);
    }
    assert_eq!(writes, 100);
    assert_eq!(resource.value(), 100);
    assert_eq!(
        log.len() - accepted.len(),
        fenced,
        "refusals the clients did not see"
    );

    // No lock held past its lease by an acquire of unknown outcome.
    assert!(
        !unknown.is_empty(),
        "no probe lost its answer: the test proved nothing"
    );
    let direct = stub(server).await;
    for u in &unknown {
        let over = u.deadline + u.lease + Duration::from_millis(50);
        tokio::time::sleep_until(over.into()).await;
        let state = inspect(&direct, &u.lock).await;
        assert!(
            !(state.waiters.contains(&u.owner) || state.held && state.owner == u.owner),
            "{u:?} still holds or waits past its lease: {state:?}"
        );
    }
    let stats = proxy.shutdown().await;
    println!(
        "30% reply loss: {} of {} answers dropped; 100 sections, {failed} acquires failed \
         and were retried, {fenced} operations of lost leases fenced off; probes: {granted} granted, {refused} refused, {not_run} not run, \
         {} unknown, none held past its lease",
        stats.server_to_client.dropped,
        stats.server_to_client.received,
        unknown.len()
    );
    cluster.passed();
}

/// One `lock-server` with its UDP, TCP, TCP+TLS and gRPC doors: a client
/// per door, and the same lock table behind all four. A lock taken through
/// one door is seen held (same owner, same token) through the others and
/// refuses a try-lock through each; waiters queued through TCP, TLS and
/// gRPC are granted in turn, with rising tokens, as the holder before them
/// releases through its own door. The TLS client trusts only the CA the
/// server made at start (`tls-ca.pem` in its data directory) and checks the
/// name `localhost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_door_serves_the_same_lock_table() {
    use rpc_core::client::{TcpChannel, TcpConfig};
    use rpc_core::grpc::client::GrpcChannel;
    use rpc_core::tls::TlsClientConfig;
    let mut cluster = Cluster::new().unwrap();
    let udp = cluster
        .start(lock_server().args([
            "--tcp",
            "127.0.0.1:0",
            "--grpc",
            "127.0.0.1:0",
            "--tls",
            "127.0.0.1:0",
        ]))
        .unwrap()
        .addr();
    let mut door = |name: &str| -> SocketAddr {
        let mark = format!("lock-server {name} on ");
        let line = tokio::task::block_in_place(|| {
            cluster
                .node_mut("locks")
                .unwrap()
                .wait_for_line(Output::Stdout, BOUND, |l| l.starts_with(&mark))
        })
        .unwrap();
        line.rsplit(' ').next().unwrap().trim().parse().unwrap()
    };
    // The server prints the doors' lines in this order.
    let (tcp, tls, grpc) = (door("tcp"), door("tls"), door("grpc"));
    let ca = std::fs::read(cluster.node("locks").unwrap().data_dir().join("tls-ca.pem")).unwrap();
    let tls_config = TlsClientConfig::new("localhost", &ca).unwrap();
    let clients = [
        ("udp", Client::new(UdpChannel::connect(udp).await.unwrap())),
        ("tcp", Client::new(TcpChannel::connect(tcp).await.unwrap())),
        (
            "tls",
            Client::new(
                TcpChannel::connect_tls(tls, tls_config, TcpConfig::default())
                    .await
                    .unwrap(),
            ),
        ),
        (
            "grpc",
            Client::new(
                GrpcChannel::connect(&format!("http://{grpc}"))
                    .await
                    .unwrap(),
            ),
        ),
    ];
    let stubs: Vec<(&str, LocksClient)> = clients
        .iter()
        .map(|(name, c)| (*name, LocksClient::new(c.clone())))
        .collect();
    let lockers: Vec<LockClient> = clients
        .iter()
        .map(|(name, c)| LockClient::new(c.clone(), *name).wait(Duration::from_secs(20)))
        .collect();

    let mut last = 0;
    let mut held = lockers[0].lock("shared").await.unwrap();
    for (turn, next) in [(0usize, 1usize), (1, 2), (2, 3), (3, 0)] {
        let holder = clients[turn].0;
        assert!(
            held.token() > last,
            "{holder}: token {} after {last}",
            held.token()
        );
        last = held.token();
        // Every door sees the same holder and token, and refuses a
        // try-lock from another owner.
        for (door, stub) in &stubs {
            let state = inspect(stub, "shared").await;
            assert_eq!(
                (state.held, state.owner.as_str(), state.token),
                (true, holder, held.token()),
                "seen through {door}"
            );
            let e = stub
                .acquire(AcquireRequest {
                    lock: "shared".into(),
                    owner: format!("try-{door}"),
                    wait_ms: 0,
                    lease_ms: 1_000,
                    acquire_id: last,
                })
                .synchronous()
                .await
                .unwrap_err();
            assert_eq!(
                e.raised().map(|r| r.kind()),
                Some(LockErrorKind::WaitExpired),
                "try-lock through {door} while {holder} holds: {e:?}"
            );
        }
        // The next client queues through its own door; the holder releases
        // through its own.
        let waiter = lockers[next].clone();
        let waiting = tokio::spawn(async move { waiter.lock("shared").await.unwrap() });
        let want = [clients[next].0.to_owned()];
        wait_for("the next client to queue", || async {
            (inspect(&stubs[turn].1, "shared").await.waiters == want).then_some(())
        })
        .await;
        held.release().await.unwrap();
        held = waiting.await.unwrap();
        println!("{holder} -> {}: token {:#x}", clients[next].0, held.token());
    }
    assert!(held.token() > last);
    held.release().await.unwrap();
    for (door, stub) in &stubs {
        let state = inspect(stub, "shared").await;
        assert!(!state.held && state.waiters.is_empty(), "{door}: {state:?}");
    }
    cluster.passed();
}

/// A grant whose answers are all lost until after its lease has ended
/// (the proxy drops every datagram to the client until then): when the
/// retransmitted answer finally arrives, the client does not take the
/// stale grant for a held lock (another client could hold the lock by
/// now); it gives it back and acquires again, with a higher token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_that_arrives_after_its_lease_is_not_taken_for_held() {
    use rpc_core::fault::{FaultConfig, FaultProxy, ProxyConfig, ProxyFaults};
    let mut cluster = Cluster::new().unwrap();
    let server = cluster.start(lock_server()).unwrap().addr();
    let proxy = FaultProxy::loopback(server, ProxyConfig::new(ProxyFaults::none()))
        .await
        .unwrap();
    let client = locks(proxy.local_addr(), "late")
        .await
        .lease(Duration::from_millis(300));
    // One answered call first: the channel learns the server's
    // incarnation (an at-most-once call PINGs for it first, and would
    // never be sent with every answer dropped).
    inspect(client.stub(), "L").await;
    proxy
        .set_config(ProxyFaults {
            client_to_server: FaultConfig::none(),
            server_to_client: FaultConfig::seeded(1).loss(1.0),
        })
        .unwrap();
    let acquiring = tokio::spawn(async move {
        let guard = client.lock("L").await.unwrap();
        (guard.token(), guard.is_held(), guard)
    });
    let direct = stub(server).await;
    let stale = wait_for("the unseen grant", || async {
        let s = inspect(&direct, "L").await;
        (s.held && s.owner == "late").then_some(s.token)
    })
    .await;
    wait_for("its lease to end", || async {
        let s = inspect(&direct, "L").await;
        (!s.held || s.token != stale).then_some(())
    })
    .await;
    proxy.set_config(ProxyFaults::none()).unwrap();
    let (token, held, guard) = tokio::time::timeout(BOUND, acquiring)
        .await
        .unwrap()
        .unwrap();
    assert!(
        token > stale,
        "the stale grant {stale:#x} was returned as held"
    );
    assert!(held);
    guard.release().await.unwrap();
    let stats = proxy.shutdown().await;
    println!(
        "grant {stale:#x} seen late ({} answers dropped), then {token:#x}",
        stats.server_to_client.dropped
    );
    cluster.passed();
}
