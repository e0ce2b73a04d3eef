//! Shared by the multicast tests: the `Tally` service (generated from
//! `tally.idl` by `rpc_core::idl!`), an implementation that counts what it
//! runs, and members served over UDP on 127.0.0.1, optionally behind a
//! fault proxy.
#![allow(dead_code, unused_imports, unreachable_pub, missing_docs)]

pub mod proto {
    rpc_core::idl!("tests/multicast_support/tally.idl");
}

pub use proto::mctest::v1::{
    Amount, Count, Slice, Tally, TallyClient, TallyGroupClient, TallyServer, Total, Work,
};

use rpc_core::client::{ChannelConfig, UdpChannel};
use rpc_core::fault::{FaultConfig, FaultProxy, ProxyConfig, ProxyFaults};
use rpc_core::multicast::{GroupSocket, MulticastClient, MulticastConfig, SharedSocket};
use rpc_core::server::{Server, ServerHandle};
use rpc_core::{CallContext, Client, Status};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::Command;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[path = "../common/gate.rs"]
mod gate;
pub use gate::Gate;

/// One member's state: its part for `Sum`, its counter and how many times
/// the non-idempotent operations ran.
#[derive(Debug, Default)]
pub struct TallyImpl {
    pub part: u32,
    value: Mutex<i64>,
    executions: AtomicU64,
    /// When set, `add` and `slow` wait at this gate before they count.
    gate: Mutex<Option<Gate>>,
    /// Handlers that reached the gate (held or not).
    entered: AtomicU64,
}

impl TallyImpl {
    pub fn new(part: u32) -> TallyImpl {
        TallyImpl {
            part,
            ..TallyImpl::default()
        }
    }

    pub fn value(&self) -> i64 {
        *self.value.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn executions(&self) -> u64 {
        self.executions.load(Ordering::SeqCst)
    }

    /// From now on `add` and `slow` wait at `gate` before they count.
    pub fn hold(&self, gate: &Gate) {
        *self.gate.lock().unwrap_or_else(|p| p.into_inner()) = Some(gate.clone());
    }

    /// How many `add` and `slow` handlers have started (reached the gate).
    pub fn entered(&self) -> u64 {
        self.entered.load(Ordering::SeqCst)
    }

    async fn at_gate(&self) {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let gate = self.gate.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(gate) = gate {
            gate.pass().await;
        }
    }

    fn add(&self, delta: i64) -> Count {
        let mut v = self.value.lock().unwrap_or_else(|p| p.into_inner());
        *v += delta;
        let executions = self.executions.fetch_add(1, Ordering::SeqCst) + 1;
        Count {
            value: *v,
            executions,
        }
    }
}

/// Shares one implementation between the server and the test.
#[derive(Debug, Clone)]
pub struct Shared(pub Arc<TallyImpl>);

impl Tally for Shared {
    async fn add(&self, _ctx: CallContext, request: Amount) -> Result<Count, Status> {
        self.0.at_gate().await;
        Ok(self.0.add(request.delta))
    }

    async fn add_acked(&self, _ctx: CallContext, request: Amount) -> Result<Count, Status> {
        Ok(self.0.add(request.delta))
    }

    async fn sum(&self, _ctx: CallContext, request: Slice) -> Result<Total, Status> {
        if request.parts == 0 {
            return Err(Status::invalid_argument("parts must be at least 1"));
        }
        let parts = request.parts as usize;
        let part = self.0.part as usize % parts;
        let sum = request.values.iter().skip(part).step_by(parts).sum();
        Ok(Total {
            sum,
            part: self.0.part,
        })
    }

    async fn slow(&self, _ctx: CallContext, request: Work) -> Result<Count, Status> {
        self.0.at_gate().await;
        if request.millis > 0 {
            tokio::time::sleep(Duration::from_millis(u64::from(request.millis.min(5_000)))).await;
        }
        Ok(self.0.add(1))
    }

    async fn nudge(&self, _ctx: CallContext, request: Amount) -> Result<(), Status> {
        self.0.add(request.delta);
        Ok(())
    }

    async fn fill(&self, _ctx: CallContext, request: Work) -> Result<Slice, Status> {
        // `millis` values: an answer much larger than its request.
        let values = vec![i64::from(self.0.part) + 1000; request.millis.min(10_000) as usize];
        Ok(Slice { values, parts: 0 })
    }
}

/// A running member: its server, its state, the address clients use (the
/// server's, or its proxy's).
pub struct Member {
    pub name: String,
    pub tally: Arc<TallyImpl>,
    pub server: ServerHandle,
    pub proxy: Option<FaultProxy>,
    pub addr: SocketAddr,
}

/// Starts member `part` on 127.0.0.1; behind a proxy applying `faults` in
/// both directions when given.
pub async fn member(part: u32, faults: Option<FaultConfig>) -> anyhow::Result<Member> {
    let tally = Arc::new(TallyImpl::new(part));
    let server = Server::builder()
        .add_service(TallyServer::from_arc(Arc::new(Shared(tally.clone()))))
        .serve_udp("127.0.0.1:0")
        .await?;
    let (proxy, addr) = match faults {
        Some(f) => {
            let p = FaultProxy::loopback(
                server.local_addr(),
                ProxyConfig::new(ProxyFaults::symmetric(f)),
            )
            .await?;
            let a = p.local_addr();
            (Some(p), a)
        }
        None => (None, server.local_addr()),
    };
    Ok(Member {
        name: format!("m{part}"),
        tally,
        server,
        proxy,
        addr,
    })
}

/// A fast-retransmitting channel config for loopback tests.
pub fn fast_config() -> ChannelConfig {
    let mut c = ChannelConfig::default();
    c.initial_rto = Duration::from_millis(20);
    c.min_rto = Duration::from_millis(5);
    c.max_rto = Duration::from_millis(200);
    c
}

/// A UDP client of `addr`.
pub async fn client(addr: SocketAddr, config: ChannelConfig) -> anyhow::Result<Client> {
    Ok(Client::new(UdpChannel::connect_with(addr, config).await?))
}

/// Bound of every namespace test body.
pub const LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// A network namespace of a test (`lo` up, multicast on, a 224.0.0.0/4
/// route on `lo`); deleted on drop.
pub struct Netns {
    pub name: String,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output().map_err(|e| {
        anyhow::anyhow!(
            "cannot run `ip {}` ({e}): the IP multicast tests need iproute2 and root",
            args.join(" ")
        )
    })?;
    if !out.status.success() {
        anyhow::bail!(
            "`ip {}` failed: {}: the IP multicast tests need root and `ip netns`",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Netns {
    pub fn create() -> anyhow::Result<Netns> {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "rpcmc-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        // From here on the guard deletes it, whatever happens next.
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns.name, "link", "set", "lo", "multicast", "on"])?;
        ip(&["-n", &ns.name, "route", "add", "224.0.0.0/4", "dev", "lo"])?;
        Ok(ns)
    }

    /// Runs `body` on a thread inside the namespace, on a current-thread
    /// runtime of its own.
    pub fn run<F, Fut>(&self, body: F) -> anyhow::Result<()>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        self.run_on(false, body)
    }

    /// As [`Netns::run`], on a runtime whose clock is paused: tokio time
    /// moves only when every task of the runtime (client and members alike)
    /// waits, and then jumps to the next timer. A re-send timer therefore
    /// cannot fire while a member still has work to do, however busy the
    /// machine is; [`hold_clock_until`] keeps the clock still until an
    /// event has happened. `LIMIT` is then in that clock too: a call that
    /// waits for nothing fails at once instead of after a minute.
    pub fn run_paused<F, Fut>(&self, body: F) -> anyhow::Result<()>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        self.run_on(true, body)
    }

    fn run_on<F, Fut>(&self, paused: bool, body: F) -> anyhow::Result<()>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        let path = format!("/var/run/netns/{}", self.name);
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            let file =
                std::fs::File::open(&path).map_err(|e| anyhow::anyhow!("open {path}: {e}"))?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| anyhow::anyhow!("setns into {path}: {e}"))?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(paused)
                .build()?;
            rt.block_on(async move { tokio::time::timeout(LIMIT, body()).await? })
        });
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("test thread panicked"))?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            tracing::warn!("could not delete namespace {}: {e}", self.name);
        }
    }
}

/// Keeps a paused clock (see [`Netns::run_paused`]) still until `cond`
/// holds: yields without ever waiting on a timer, so the runtime is never
/// idle and cannot move its time, while every other task (members, the
/// client's receive task, a call polled alongside) runs and sockets are
/// polled. The verdict is the event; 30 s of real time is only the safety
/// net of a broken build.
pub async fn hold_clock_until(what: &str, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let give_up = std::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        anyhow::ensure!(
            std::time::Instant::now() < give_up,
            "{what}: did not happen within 30 s"
        );
        tokio::task::yield_now().await;
    }
    Ok(())
}

/// The group of the namespace tests (inside their own namespace).
pub const GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 42, 1), 7400);

/// A member that serves the Tally service on its own unicast socket and on
/// the group.
pub struct GroupMember {
    pub tally: Arc<TallyImpl>,
    pub server: ServerHandle,
    pub membership: GroupSocket,
    pub addr: SocketAddr,
}

pub async fn group_member(part: u32, join: bool) -> anyhow::Result<GroupMember> {
    group_member_on(GROUP, part, join).await
}

/// As [`group_member`], on another group.
pub async fn group_member_on(
    group: SocketAddrV4,
    part: u32,
    join: bool,
) -> anyhow::Result<GroupMember> {
    let tally = Arc::new(TallyImpl::new(part));
    let unicast = SharedSocket::bind("127.0.0.1:0".parse()?).await?;
    let addr = unicast.socket().local_addr()?;
    let server = Server::builder()
        .add_service(TallyServer::from_arc(Arc::new(Shared(tally.clone()))))
        .serve_socket(unicast.clone())
        .await?;
    let membership = GroupSocket::join(group, Ipv4Addr::LOCALHOST, unicast)?;
    if !join {
        membership.leave()?;
    }
    server.serve_socket(membership.clone()).await?;
    Ok(GroupMember {
        tally,
        server,
        membership,
        addr,
    })
}

pub fn mc_config(initial_rto: Duration) -> MulticastConfig {
    let mut c = MulticastConfig::default();
    c.interface = Ipv4Addr::LOCALHOST;
    c.initial_rto = initial_rto;
    c.max_rto = Duration::from_millis(200);
    c
}

pub async fn multicast_client(initial_rto: Duration) -> anyhow::Result<MulticastClient> {
    Ok(MulticastClient::connect(GROUP, "127.0.0.1:0".parse()?, mc_config(initial_rto)).await?)
}
