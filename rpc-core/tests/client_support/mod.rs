//! A scriptable fake server for the client tests: a real UDP socket on
//! 127.0.0.1 that decodes every datagram as an envelope, records it, and
//! answers what the test's behaviour function says (wire.md, or not).
#![allow(dead_code, unreachable_pub)]

use prost::Message;
use rpc_core::client::{ChannelConfig, UdpChannel};
use rpc_core::envelope::{Envelope, MessageType, VERSION};
use rpc_core::{Client, MethodInfo, Protocol, ServiceInfo, Style};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;

/// The message of every test method.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Num {
    /// A number.
    #[prost(uint64, tag = "1")]
    pub n: u64,
    /// Padding, to make messages large.
    #[prost(bytes = "vec", tag = "2")]
    pub pad: Vec<u8>,
}

pub fn num(n: u64) -> Num {
    Num { n, pad: Vec::new() }
}

const fn method(
    name: &'static str,
    id: u32,
    idempotent: bool,
    protocol: Protocol,
    style: Style,
) -> MethodInfo {
    MethodInfo {
        name,
        id,
        request_type: "test.Num",
        response_type: "test.Num",
        raises_type: "",
        oneway: matches!(style, Style::OneWay),
        idempotent,
        protocol,
        style,
        timeout_ms: 0,
        retries: None,
    }
}

/// Non-idempotent, RR.
pub static ADD: MethodInfo = method("Add", 11, false, Protocol::RR, Style::Sync);
/// Idempotent, RR.
pub static READ: MethodInfo = method("Read", 12, true, Protocol::RR, Style::Sync);
/// Non-idempotent, RRA.
pub static ADD_RRA: MethodInfo = method("AddAcked", 13, false, Protocol::RRA, Style::Sync);
/// Idempotent, RRA.
pub static READ_RRA: MethodInfo = method("ReadAcked", 14, true, Protocol::RRA, Style::Sync);
/// One-way.
pub static HINT: MethodInfo = method("Hint", 15, false, Protocol::R, Style::OneWay);
/// Non-idempotent, RR; the real test service sleeps `n` ms.
pub static SLOW: MethodInfo = method("Slow", 16, false, Protocol::RR, Style::Sync);
/// Idempotent, RR; the real test service replies `n` bytes of padding.
pub static FILL: MethodInfo = method("Fill", 17, true, Protocol::RR, Style::Sync);

pub static SERVICE: ServiceInfo = ServiceInfo {
    package: "test",
    name: "Calc",
    full_name: "test.Calc",
    methods: &[
        method("Add", 11, false, Protocol::RR, Style::Sync),
        method("Read", 12, true, Protocol::RR, Style::Sync),
        method("AddAcked", 13, false, Protocol::RRA, Style::Sync),
        method("ReadAcked", 14, true, Protocol::RRA, Style::Sync),
        method("Hint", 15, false, Protocol::R, Style::OneWay),
        method("Slow", 16, false, Protocol::RR, Style::Sync),
        method("Fill", 17, true, Protocol::RR, Style::Sync),
    ],
};

/// What the fake server does with one received envelope.
#[derive(Debug)]
pub enum Action {
    /// Send this envelope to the sender now.
    Send(Envelope),
    /// Send this envelope to the sender after a delay.
    After(Duration, Envelope),
    /// Send raw bytes to the sender.
    Raw(Vec<u8>),
    /// Send this envelope to the sender once the gate is open: a handler
    /// that cannot finish before the test says so.
    Held(Gate, Envelope),
}

#[path = "../common/gate.rs"]
mod gate;
pub use gate::Gate;

/// How long a test waits for an event before it gives up: a safety net
/// against a broken build, never the verdict.
pub const WAIT: Duration = Duration::from_secs(30);

pub type Behaviour = Box<dyn FnMut(&Envelope) -> Vec<Action> + Send>;

/// A fake server running until dropped.
pub struct FakeServer {
    pub addr: SocketAddr,
    pub socket: Arc<UdpSocket>,
    log: Arc<Mutex<Vec<(Envelope, SocketAddr)>>>,
    undecodable: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    pub async fn start(
        mut behaviour: impl FnMut(&Envelope) -> Vec<Action> + Send + 'static,
    ) -> anyhow::Result<FakeServer> {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = socket.local_addr()?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let undecodable = Arc::new(Mutex::new(0));
        let (s, l, u) = (socket.clone(), log.clone(), undecodable.clone());
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 70_000];
            loop {
                let Ok((n, peer)) = s.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(env) = Envelope::decode(&buf[..n]) else {
                    *u.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                    continue;
                };
                l.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((env.clone(), peer));
                for action in behaviour(&env) {
                    match action {
                        Action::Send(e) => {
                            let _ = s.send_to(&e.encode_to_vec(), peer).await;
                        }
                        Action::Raw(bytes) => {
                            let _ = s.send_to(&bytes, peer).await;
                        }
                        Action::Held(gate, e) => {
                            let s = s.clone();
                            tokio::spawn(async move {
                                gate.pass().await;
                                let _ = s.send_to(&e.encode_to_vec(), peer).await;
                            });
                        }
                        Action::After(delay, e) => {
                            let s = s.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(delay).await;
                                let _ = s.send_to(&e.encode_to_vec(), peer).await;
                            });
                        }
                    }
                }
            }
        });
        Ok(FakeServer {
            addr,
            socket,
            log,
            undecodable,
            task,
        })
    }

    /// Everything received so far.
    pub fn log(&self) -> Vec<Envelope> {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(e, _)| e.clone())
            .collect()
    }

    /// Senders of everything received so far.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, p)| *p)
            .collect()
    }

    /// Everything of type `kind` received so far.
    pub fn received(&self, kind: MessageType) -> Vec<Envelope> {
        self.log()
            .into_iter()
            .filter(|e| e.r#type == kind as i32)
            .collect()
    }

    /// Waits (at most `limit`) until `cond` holds on the log.
    pub async fn wait_for(&self, limit: Duration, cond: impl Fn(&[Envelope]) -> bool) -> bool {
        let end = tokio::time::Instant::now() + limit;
        loop {
            if cond(&self.log()) {
                return true;
            }
            if tokio::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// An answer of `kind` to `req`, from incarnation `inc`.
pub fn answer(req: &Envelope, kind: MessageType, inc: u64) -> Envelope {
    Envelope {
        version: VERSION,
        r#type: kind as i32,
        request_id: req.request_id,
        session_id: req.session_id,
        incarnation: inc,
        ..Default::default()
    }
}

/// The REPLY the test service computes: n + 1000.
pub fn reply(req: &Envelope, inc: u64) -> Envelope {
    let n = Num::decode(req.payload.clone())
        .map(|m| m.n)
        .unwrap_or(u64::MAX);
    Envelope {
        payload: num(n + 1000).encode_to_vec().into(),
        ..answer(req, MessageType::Reply, inc)
    }
}

/// A well-behaved server without history: PONG to PING, REPLY to every
/// RR/RRA REQUEST, nothing to R and ACK.
pub fn standard(inc: u64) -> impl FnMut(&Envelope) -> Vec<Action> + Send + 'static {
    move |e| standard_answer(e, inc)
}

pub fn standard_answer(e: &Envelope, inc: u64) -> Vec<Action> {
    match MessageType::try_from(e.r#type) {
        Ok(MessageType::Ping) => vec![Action::Send(answer(e, MessageType::Pong, inc))],
        Ok(MessageType::Request)
            if e.protocol != rpc_core::envelope::ExchangeProtocol::R as i32 =>
        {
            vec![Action::Send(reply(e, inc))]
        }
        _ => vec![],
    }
}

pub fn is(e: &Envelope, kind: MessageType) -> bool {
    e.r#type == kind as i32
}

/// A config with quick timers for tests.
pub fn fast_config() -> ChannelConfig {
    let mut c = ChannelConfig::default();
    c.initial_rto = Duration::from_millis(20);
    c.min_rto = Duration::from_millis(5);
    c.max_rto = Duration::from_millis(200);
    c.max_wait = Duration::from_secs(5);
    c
}

pub async fn channel(
    server: &FakeServer,
    config: ChannelConfig,
) -> anyhow::Result<(UdpChannel, Client)> {
    let channel = UdpChannel::connect_with(server.addr, config).await?;
    Ok((channel.clone(), Client::new(channel)))
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Runs a test body with a time limit.
pub async fn bounded<F: std::future::Future<Output = anyhow::Result<()>>>(
    limit: Duration,
    f: F,
) -> anyhow::Result<()> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| anyhow::anyhow!("test did not finish within {limit:?}"))?
}
