//! The lock service's section (`idl/mutex.idl`, issue 18) against etcd's
//! lock API, in one run, on loopback, every server a child process:
//!
//! - **ours**: a `lock-server` process, called through [`LockClient`] over
//!   UDP; its round trip is one `Inspect` (an RR call to the same process
//!   over the same transport), the unit of the targets: an uncontended
//!   acquire and release at most 2.5 round trips (p50), a hand-over at
//!   most 1.5;
//! - **etcd, 1 member and 3 members**: `Lock` with a lease, then `Unlock`
//!   (`v3lockpb`, what `etcd-client`'s lock helpers call), each client with
//!   a lease of its own granted once, as a lock session holds; its round
//!   trip is a serializable `Range` (one gRPC call answered by the member
//!   alone).
//!
//! Measured for each: the round trip (p50); acquire+release latency of one
//! client (p50, p99) and pairs per second with 1 and 16 clients, each on a
//! lock of its own (uncontended); the hand-over: a holder and one waiter
//! queued behind it (seen queued by the server before the clock starts,
//! the last look a round trip just before the release, so that no side
//! wakes from idle), the time from the holder sending its release to the
//! waiter having its grant.

use crate::etcd::{self, Etcd, EtcdCluster};
use crate::load::{closed_loop, interleaved_p50, service_binary, Load, Op, Windows};
use crate::measure::{summary, Plan};
use crate::report::{rate, us};
use anyhow::{ensure, Context as _};
use bytes::Bytes;
use rpc_core::client::UdpChannel;
use rpc_core::Client;
use rpc_services::mutex::LockClient;
use rpc_services::proto::mutex::v1::{InspectRequest, LocksClient};
use rpc_testkit::{Cluster, NodeBuilder};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The name `--only` matches for this section (any part of it).
pub(crate) const SECTION: &str = "lock service vs etcd";

/// Clients of the throughput measurement (each on its own lock).
const MANY: usize = 16;

/// What each side keeps on disk.
const OURS_PERSISTS: &str = "ours: the epoch, written and fsynced once per start of the server; \
     grants, queues and leases in memory only";
const ETCD_PERSISTS: &str =
    "etcd: every Lock and Unlock is a raft proposal (a key under the lock's \
     name, with the client's lease), in the WAL fsynced before it is acknowledged (on a quorum \
     with 3 members)";

/// One side's figures.
#[derive(Debug)]
struct Figures {
    /// The p50 of the round trip and of acquire+release, one client each,
    /// measured in alternating blocks: the unit of the targets and the
    /// pair over it.
    paired: (Duration, Duration),
    /// The p50 of the round trips made right before each hand-over's
    /// release: the hand-over's unit, measured in the same moments.
    handover_rr: Duration,
    /// Acquire+release, one client.
    one: Load,
    /// Acquire+release, [`MANY`] clients on locks of their own.
    many: Load,
    /// Hand-overs measured, p50, p99.
    handover: (usize, Duration, Duration),
    /// The holder's release answered (p50), in the same hand-overs: how
    /// much of the hand-over is the release's own round trip.
    release_answered: Duration,
}

impl Figures {
    /// The figures of `loads` and of the hand-overs' samples: the round
    /// trips before each release, the hand-overs, the releases answered.
    fn new(
        (paired, one, many): PairLoads,
        rrs: Vec<Duration>,
        handovers: Vec<Duration>,
        answered: Vec<Duration>,
    ) -> anyhow::Result<Figures> {
        Ok(Figures {
            paired,
            handover_rr: summary(rrs, "hand-over")?.1,
            one,
            many,
            handover: summary(handovers, "hand-over")?,
            release_answered: summary(answered, "hand-over")?.1,
        })
    }

    /// Acquire+release p50 in round trips (measured side by side).
    fn pair_ratio(&self) -> f64 {
        self.paired.1.as_secs_f64() / self.paired.0.as_secs_f64()
    }

    /// Hand-over p50 in round trips (each measured before its release).
    fn handover_ratio(&self) -> f64 {
        self.handover.1.as_secs_f64() / self.handover_rr.as_secs_f64()
    }
}

/// One side of the table: what it is, and its figures or why there are
/// none.
#[derive(Debug)]
struct Side {
    name: String,
    rr_is: &'static str,
    figures: Result<Figures, String>,
}

/// What the section measured.
#[derive(Debug)]
pub(crate) struct MutexReport {
    sides: Vec<Side>,
    etcd_version: Option<String>,
}

/// Runs the section (`None` when `--only` leaves it out).
pub(crate) async fn run(plan: &Plan) -> anyhow::Result<Option<MutexReport>> {
    if !plan.wants(SECTION) {
        return Ok(None);
    }
    println!("lock service section");
    let w = Windows::of(plan);
    let mut sides = Vec::new();
    let ours = ours(w).await.context("the lock service")?;
    println!("  measured ours");
    sides.push(Side {
        name: "ours (lock-server, UDP)".to_owned(),
        rr_is: "Inspect",
        figures: Ok(ours),
    });
    let installed = etcd::ensure_installed();
    let etcd_version = installed.as_ref().ok().cloned();
    for members in [1, 3] {
        let name = format!(
            "etcd, {members} member{}",
            if members == 1 { "" } else { "s" }
        );
        let figures = match &installed {
            Ok(_) => with_etcd(members, w).await.map_err(|e| format!("{e:#}")),
            Err(e) => Err(format!("etcd unavailable: {e:#}")),
        };
        println!("  measured {name}");
        sides.push(Side {
            name,
            rr_is: "Range (serializable)",
            figures,
        });
    }
    Ok(Some(MutexReport {
        sides,
        etcd_version,
    }))
}

/// An `Inspect` call: the lock server's RR round trip.
struct Inspect(LocksClient);

impl Op for Inspect {
    async fn run(&self, _i: u64) -> anyhow::Result<()> {
        self.0
            .inspect(InspectRequest {
                lock: "bench-rr".to_owned(),
            })
            .await?;
        Ok(())
    }
}

/// Acquire and release of a lock of this client's own.
struct OursPair {
    locks: LockClient,
    lock: String,
}

impl Op for OursPair {
    async fn run(&self, _i: u64) -> anyhow::Result<()> {
        let guard = self.locks.lock(&self.lock).await?;
        guard.release().await?;
        Ok(())
    }
}

async fn client(addr: SocketAddr) -> anyhow::Result<Client> {
    Ok(Client::new(UdpChannel::connect(addr).await?))
}

/// A client whose address the server has verified, as a lock client's is
/// after its first acquire (PING, PONG with the cookie). A channel that
/// only ever makes idempotent calls (`Inspect`) never PINGs, stays
/// unverified, and the server sends its answers at most 1,000 a second
/// per host: beyond, answers are dropped and retransmitted 5 ms later,
/// which made the round trip, the unit of the targets, a measure of that
/// limit and of waking from idle.
async fn verified_client(addr: SocketAddr) -> anyhow::Result<Client> {
    let c = client(addr).await?;
    let locks = LockClient::new(c.clone(), "bench-verify");
    locks.lock("bench-verify").await?.release().await?;
    Ok(c)
}

/// Our side: a `lock-server` child process.
async fn ours(w: Windows) -> anyhow::Result<Figures> {
    let bin = service_binary("lock-server")?;
    let mut nodes = Cluster::new().context("a directory for the lock server")?;
    let addr = nodes
        .start(NodeBuilder::new("lock-server", bin).args([
            "--data-dir",
            "{data}",
            "--listen",
            "{addr}",
        ]))?
        .addr();
    let rr_op = Inspect(LocksClient::new(verified_client(addr).await?));
    let pair = |i: usize| async move {
        anyhow::Ok(Arc::new(OursPair {
            locks: LockClient::new(client(addr).await?, format!("bench-client-{i}")),
            lock: format!("bench-own-{i}"),
        }))
    };
    let loads = pair_loads(&rr_op, pair, w).await?;
    let holder = LockClient::new(client(addr).await?, "bench-holder");
    let waiter = LockClient::new(client(addr).await?, "bench-waiter");
    let inspect = LocksClient::new(verified_client(addr).await?);
    let lock = "bench-handover";
    let (mut samples, mut answered, mut rrs) = (Vec::new(), Vec::new(), Vec::new());
    let end = Instant::now() + w.window;
    while samples.len() < w.handovers && Instant::now() < end {
        let held = holder.lock(lock).await?;
        let next = waiter.clone();
        let waiting = tokio::spawn(async move {
            let granted = next.lock(lock).await;
            (Instant::now(), granted)
        });
        wait_until(
            "the waiter queued at the lock server",
            Duration::ZERO,
            || async {
                let state = inspect
                    .inspect(InspectRequest {
                        lock: lock.to_owned(),
                    })
                    .await?;
                Ok(!state.waiters.is_empty())
            },
        )
        .await?;
        // The unit of this hand-over: a round trip right before it.
        let looked = Instant::now();
        let state = inspect
            .inspect(InspectRequest {
                lock: lock.to_owned(),
            })
            .await?;
        rrs.push(looked.elapsed());
        ensure!(!state.waiters.is_empty(), "the waiter left the queue");
        let released = Instant::now();
        held.release().await?;
        answered.push(released.elapsed());
        let (granted_at, granted) = waiting.await.context("the waiter task")?;
        let granted = granted?;
        samples.push(granted_at.saturating_duration_since(released));
        granted.release().await?;
    }
    let figures = Figures::new(loads, rrs, samples, answered)?;
    nodes.passed();
    Ok(figures)
}

/// The p50 of the round trip and of acquire+release side by side,
/// acquire+release with one client, and with [`MANY`].
type PairLoads = ((Duration, Duration), Load, Load);

/// Measures acquire+release on the clients `pair` makes (the `i`th):
/// the first side by side with `rr_op` and alone, then [`MANY`] at once.
async fn pair_loads<R, P, F, Fut>(rr_op: &R, mut pair: F, w: Windows) -> anyhow::Result<PairLoads>
where
    R: Op,
    P: Op,
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Arc<P>>>,
{
    let first = pair(0).await?;
    let one = closed_loop(vec![first.clone()], w).await?;
    let paired = interleaved_p50(rr_op, &*first, w).await?;
    let mut many = Vec::new();
    for i in 0..MANY {
        many.push(pair(i).await?);
    }
    let many = closed_loop(many, w).await?;
    Ok((paired, one, many))
}

/// Polls `check` until it says yes (at most 10 s), `pause` between
/// checks (none: one check after the other, so that client and server are
/// busy, not waking from idle, when the caller goes on).
async fn wait_until<F, Fut>(what: &str, pause: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if check().await? {
            return Ok(());
        }
        if pause.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(pause).await;
        }
    }
    anyhow::bail!("{what}: not within 10 s")
}

/// A serializable `Range`: etcd's gRPC round trip.
struct EtcdRead(Etcd);

impl Op for EtcdRead {
    async fn run(&self, _i: u64) -> anyhow::Result<()> {
        self.0.get(Bytes::from_static(b"bench-rr"), true).await?;
        Ok(())
    }
}

/// `Lock` and `Unlock` of a lock of this client's own, under its lease.
struct EtcdPair {
    etcd: Etcd,
    lease: i64,
    lock: String,
}

impl Op for EtcdPair {
    async fn run(&self, _i: u64) -> anyhow::Result<()> {
        let key = self.etcd.lock(&self.lock, self.lease).await?;
        self.etcd.unlock(key).await
    }
}

/// How long etcd's waiter is left waiting before the release.
const ETCD_SETTLE: Duration = Duration::from_millis(150);

/// Seconds of the lock sessions' leases (longer than the whole section).
const LEASE_TTL: i64 = 120;

/// etcd's side, with `members` members.
async fn with_etcd(members: usize, w: Windows) -> anyhow::Result<Figures> {
    let cluster = EtcdCluster::start(members).await?;
    // Every client its own connection to the leader, as separate
    // processes would have.
    let rr_op = EtcdRead(cluster.leader_client().await?);
    let pair = |i: usize| {
        let cluster = &cluster;
        async move {
            let etcd = cluster.leader_client().await?;
            let lease = etcd.lease_grant(LEASE_TTL).await?;
            anyhow::Ok(Arc::new(EtcdPair {
                etcd,
                lease,
                lock: format!("bench-own-{i}"),
            }))
        }
    };
    let loads = pair_loads(&rr_op, pair, w).await?;
    let holder = cluster.leader_client().await?;
    let holder_lease = holder.lease_grant(LEASE_TTL).await?;
    let waiter = cluster.leader_client().await?;
    let waiter_lease = waiter.lease_grant(LEASE_TTL).await?;
    let lock = "bench-handover";
    // Lock keys are `<name>/<lease in hex>`.
    let prefix = format!("{lock}/");
    let (mut samples, mut answered, mut rrs) = (Vec::new(), Vec::new(), Vec::new());
    let end = Instant::now() + 2 * w.window;
    while samples.len() < w.handovers && Instant::now() < end {
        let held = holder.lock(lock, holder_lease).await?;
        let next = waiter.clone();
        let waiting = tokio::spawn(async move {
            let granted = next.lock(lock, waiter_lease).await;
            (Instant::now(), granted)
        });
        wait_until(
            "the waiter's key in etcd",
            Duration::from_millis(1),
            || async { Ok(holder.count_prefix(prefix.as_bytes()).await? >= 2) },
        )
        .await?;
        // The waiter's key is there, but it waits on a watch of the key
        // before it, which it opens afterwards and which etcd may keep
        // in its unsynced set for up to 100 ms: the release comes after
        // that, as it would for a waiter that has been waiting a while.
        tokio::time::sleep(ETCD_SETTLE).await;
        // A round trip right before the release, as ours has its last
        // Inspect: neither side is measured waking from idle.
        let looked = Instant::now();
        let queued = holder.count_prefix(prefix.as_bytes()).await?;
        rrs.push(looked.elapsed());
        ensure!(queued >= 2, "etcd's waiter left the queue");
        let released = Instant::now();
        holder.unlock(held).await?;
        answered.push(released.elapsed());
        let (granted_at, granted) = waiting.await.context("the waiter task")?;
        let granted = granted?;
        samples.push(granted_at.saturating_duration_since(released));
        waiter.unlock(granted).await?;
    }
    let figures = Figures::new(loads, rrs, samples, answered)?;
    cluster.passed();
    Ok(figures)
}

/// Prints the section's table, the targets and what each side persists.
pub(crate) fn print(report: &MutexReport) {
    println!("\n== lock service (mutex.v1.Locks over UDP) vs etcd's lock API (v3lockpb over gRPC), every server a child process on loopback ==");
    if let Some(v) = &report.etcd_version {
        println!("  ({v})");
    }
    println!(
        "| {:<24} | {:>9} | {:>12} | {:>10} | {:>6} | {:>9} | {:>9} | {:>12} | {:>10} | {:>6} |",
        "side",
        "RR p50 us",
        "acq+rel p50",
        "p99",
        "x RR",
        "pairs/s@1",
        format!("@{MANY}"),
        "hand-over p50",
        "p99",
        "x RR"
    );
    println!(
        "|{:-<26}|{:->11}|{:->14}|{:->12}|{:->8}|{:->11}|{:->11}|{:->15}|{:->12}|{:->8}|",
        "", ":", ":", ":", ":", ":", ":", ":", ":", ":"
    );
    for side in &report.sides {
        match &side.figures {
            Ok(f) => {
                println!(
                    "| {:<24} | {:>9.1} | {:>9.1} us | {:>7.1} us | {:>5.2}x | {:>9} | {:>9} | {:>12.1} us | {:>7.1} us | {:>5.2}x |",
                    side.name,
                    us(f.paired.0),
                    us(f.one.p50),
                    us(f.one.p99),
                    f.pair_ratio(),
                    rate(f.one.per_sec),
                    rate(f.many.per_sec),
                    us(f.handover.1),
                    us(f.handover.2),
                    f.handover_ratio(),
                );
            }
            Err(why) => println!("| {:<24} | {why}", side.name),
        }
    }
    println!(
        "  RR: one round trip of the side's own transport to the same server ({}); \
         x RR: acquire+release p50 over the RR p50, both measured in alternating blocks of calls; \
         hand-over p50 over the p50 of a round trip made right before each release; \
         pairs/s@{MANY}: {MANY} clients, each on a lock of its own",
        report
            .sides
            .iter()
            .map(|s| format!("{}: {}", s.name, s.rr_is))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let ours = report.sides.first().and_then(|s| s.figures.as_ref().ok());
    if let Some(f) = ours {
        let rr = f.handover_rr.as_secs_f64();
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        let acq = f.pair_ratio();
        let hand = f.handover_ratio();
        println!(
            "  target: ours acquire+release p50 at most 2.5 RR: {acq:.2}x, {}",
            verdict(acq <= 2.5)
        );
        println!(
            "  target: ours hand-over p50 at most 1.5 RR: {hand:.2}x, {}",
            verdict(hand <= 1.5)
        );
        println!(
            "  ours, within the hand-over: the holder's release answered at p50 {:.1} us ({:.2} RR), the waiter granted at p50 {:.1} us",
            us(f.release_answered),
            f.release_answered.as_secs_f64() / rr,
            us(f.handover.1),
        );
        for side in report.sides.iter().skip(1) {
            if let Ok(e) = &side.figures {
                println!(
                    "  {}: acquire+release p50 {:.1}x ours, hand-over p50 {:.1}x ours; ours makes {:.1}x its pairs/s@{MANY}",
                    side.name,
                    e.one.p50.as_secs_f64() / f.one.p50.as_secs_f64(),
                    e.handover.1.as_secs_f64() / f.handover.1.as_secs_f64(),
                    f.many.per_sec / e.many.per_sec,
                );
            }
        }
    }
    println!("  persisted: {OURS_PERSISTS}");
    println!("  persisted: {ETCD_PERSISTS}");
    println!(
        "  hand-over: the holder releases once the waiter is queued (ours: listed by Inspect; etcd: its key \
         exists, then {} ms more for its watch on the key before it to be in place)",
        ETCD_SETTLE.as_millis()
    );
    println!("  (so the guarantees differ: etcd's lock keys survive restarts of its members; a restart of our lock server \
              forgets who holds what, holders learn it at their next renewal, --grace-ms holds back new grants for a lease, \
              and fencing tokens, increasing across restarts through the epoch, make resources refuse stale holders)");
}
