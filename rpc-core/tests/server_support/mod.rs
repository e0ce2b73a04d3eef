//! Shared by the `server_*` tests: a hand-written service, a raw UDP peer
//! that speaks envelopes, and helpers. No client exists yet on this branch:
//! envelopes are built and encoded here with prost.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use bytes::Bytes;
use futures::future::BoxFuture;
use prost::Message;
use rpc_core::envelope::{Envelope, ExchangeProtocol, MessageType, VERSION};
use rpc_core::server::{ServerBuilder, ServerHandle, ServerStats};
use rpc_core::{CallContext, Code, MethodInfo, Protocol, Service, ServiceInfo, Status, Style};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

pub const ADD: u32 = 1;
pub const SLOW: u32 = 2;
pub const BIG: u32 = 3;
pub const ECHO: u32 = 4;
pub const GET: u32 = 5;
pub const PANIC: u32 = 6;
pub const FAIL: u32 = 7;
pub const SERVICE: &str = "test.v1.Counter";

const fn method(name: &'static str, id: u32, idempotent: bool) -> MethodInfo {
    MethodInfo {
        name,
        id,
        request_type: "test.v1.Raw",
        response_type: "test.v1.Raw",
        raises_type: "",
        oneway: false,
        idempotent,
        protocol: Protocol::RR,
        style: Style::Sync,
        timeout_ms: 0,
        retries: None,
    }
}

static METHODS: [MethodInfo; 7] = [
    method("Add", ADD, false),
    method("Slow", SLOW, false),
    method("Big", BIG, false),
    method("Echo", ECHO, false),
    method("Get", GET, true),
    method("Panic", PANIC, false),
    method("Fail", FAIL, false),
];

pub static INFO: ServiceInfo = ServiceInfo {
    package: "test.v1",
    name: "Counter",
    full_name: SERVICE,
    methods: &METHODS,
};

/// What the test service saw.
#[derive(Debug)]
pub struct State {
    /// Handler executions, all methods.
    pub runs: AtomicU64,
    /// The counter `Add` adds to.
    pub counter: AtomicU64,
    /// `Slow` waits for a permit here.
    pub gate: tokio::sync::Semaphore,
    /// Contexts of `Echo` calls.
    pub contexts: Mutex<Vec<CallContext>>,
}

impl Default for State {
    fn default() -> Self {
        State {
            runs: AtomicU64::new(0),
            counter: AtomicU64::new(0),
            gate: tokio::sync::Semaphore::new(0),
            contexts: Mutex::new(Vec::new()),
        }
    }
}

impl State {
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::SeqCst)
    }
    /// Lets `n` `Slow` calls finish.
    pub fn release(&self, n: usize) {
        self.gate.add_permits(n);
    }
}

/// A service implemented by hand (raw bytes in and out):
/// - Add: counter += payload as u64 (big endian, 1 when empty); replies the new value.
/// - Slow: waits until the test releases it, replies "slow".
/// - Big: replies with as many bytes as the u32 payload says.
/// - Echo: records the context, replies the payload.
/// - Get (idempotent): replies the counter.
/// - Panic: panics (synchronously when the payload is empty, on poll otherwise).
/// - Fail: replies with a FAILED_PRECONDITION status.
#[derive(Debug, Clone, Default)]
pub struct TestService {
    pub state: Arc<State>,
}

fn u64_of(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[8 - n..].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}

impl Service for TestService {
    fn info(&self) -> &'static ServiceInfo {
        &INFO
    }

    fn call(
        &self,
        method_id: u32,
        ctx: CallContext,
        request: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, Status>> {
        let state = Arc::clone(&self.state);
        state.runs.fetch_add(1, Ordering::SeqCst);
        match method_id {
            ADD => {
                let by = if request.is_empty() {
                    1
                } else {
                    u64_of(&request)
                };
                let v = state.counter.fetch_add(by, Ordering::SeqCst) + by;
                Box::pin(async move { Ok(Bytes::copy_from_slice(&v.to_be_bytes())) })
            }
            SLOW => Box::pin(async move {
                match state.gate.acquire().await {
                    Ok(p) => p.forget(),
                    Err(_) => return Err(Status::internal("gate closed")),
                }
                Ok(Bytes::from_static(b"slow"))
            }),
            BIG => {
                let n = u64_of(&request) as usize;
                Box::pin(async move { Ok(Bytes::from(vec![0xAB; n])) })
            }
            ECHO => {
                tracing::info!("echo handler runs");
                state.contexts.lock().unwrap().push(ctx);
                Box::pin(async move { Ok(request) })
            }
            GET => {
                let v = state.counter.load(Ordering::SeqCst);
                Box::pin(async move { Ok(Bytes::copy_from_slice(&v.to_be_bytes())) })
            }
            PANIC if request.is_empty() => panic!("test handler panics synchronously"),
            PANIC => Box::pin(async move {
                tokio::task::yield_now().await;
                panic!("test handler panics when polled")
            }),
            FAIL => {
                Box::pin(async move { Err(Status::new(Code::FailedPrecondition, "told to fail")) })
            }
            other => rpc_core::codegen::unimplemented(&INFO, other),
        }
    }
}

/// A REQUEST for `method` of the test service with the usual defaults.
pub fn request(session: u64, id: u64, method: u32) -> Envelope {
    Envelope {
        version: VERSION,
        r#type: MessageType::Request as i32,
        request_id: id,
        session_id: session,
        service: SERVICE.into(),
        method_id: method,
        attempt: 1,
        protocol: ExchangeProtocol::Rr as i32,
        ..Envelope::default()
    }
}

/// An ACK.
pub fn ack(session: u64, id: u64, ack_up_to: u64) -> Envelope {
    Envelope {
        version: VERSION,
        r#type: MessageType::Ack as i32,
        request_id: id,
        session_id: session,
        ack_up_to,
        ..Envelope::default()
    }
}

pub fn msg_type(env: &Envelope) -> MessageType {
    MessageType::try_from(env.r#type).unwrap_or(MessageType::Unspecified)
}

pub fn code(env: &Envelope) -> Option<Code> {
    env.status.as_ref().map(|s| Code::from_i32(s.code))
}

/// A raw UDP peer on 127.0.0.1 talking to one server.
#[derive(Debug)]
pub struct Peer {
    pub socket: UdpSocket,
    pub server: SocketAddr,
}

pub const WAIT: Duration = Duration::from_secs(30);

impl Peer {
    pub async fn new(server: SocketAddr) -> Peer {
        Peer {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            server,
        }
    }

    pub async fn send(&self, env: &Envelope) {
        self.send_raw(&env.encode_to_vec()).await;
    }

    pub async fn send_raw(&self, bytes: &[u8]) {
        self.socket.send_to(bytes, self.server).await.unwrap();
    }

    /// The next datagram, raw; panics after [`WAIT`].
    pub async fn recv_raw(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 70_000];
        let (n, from) = tokio::time::timeout(WAIT, self.socket.recv_from(&mut buf))
            .await
            .expect("no datagram from the server in time")
            .unwrap();
        assert_eq!(from, self.server);
        buf.truncate(n);
        buf
    }

    /// The next envelope; panics after [`WAIT`].
    pub async fn recv(&self) -> Envelope {
        Envelope::decode(self.recv_raw().await.as_slice())
            .expect("server sent an undecodable envelope")
    }

    /// Asserts that nothing arrives within `d`.
    pub async fn expect_silence(&self, d: Duration) {
        let mut buf = vec![0u8; 70_000];
        if let Ok(r) = tokio::time::timeout(d, self.socket.recv_from(&mut buf)).await {
            let (n, _) = r.unwrap();
            panic!("unexpected datagram: {:?}", Envelope::decode(&buf[..n]));
        }
    }

    /// PINGs for `session` and returns the cookie of the PONG (which
    /// verifies this peer's address: answers may then be large).
    pub async fn cookie(&self, session: u64) -> u64 {
        let ping = Envelope {
            version: rpc_core::envelope::VERSION,
            r#type: MessageType::Ping as i32,
            session_id: session,
            ..Envelope::default()
        };
        let pong = self.call(&ping).await;
        assert_eq!(pong.r#type, MessageType::Pong as i32, "{pong:?}");
        assert_ne!(pong.cookie, 0, "a PONG to a datagram carries a cookie");
        pong.cookie
    }

    /// Sends `env` and returns the answer.
    pub async fn call(&self, env: &Envelope) -> Envelope {
        self.send(env).await;
        self.recv().await
    }
}

/// A server with the test service on 127.0.0.1.
pub async fn serve(builder: ServerBuilder) -> (ServerHandle, Arc<State>) {
    let svc = TestService::default();
    let state = Arc::clone(&svc.state);
    let handle = builder
        .add_service(svc)
        .serve_udp("127.0.0.1:0")
        .await
        .unwrap();
    (handle, state)
}

/// Polls the server's counters until `cond` holds; panics after [`WAIT`].
pub async fn wait_stats(handle: &ServerHandle, cond: impl Fn(&ServerStats) -> bool) -> ServerStats {
    let start = Instant::now();
    loop {
        let s = handle.stats();
        if cond(&s) {
            return s;
        }
        assert!(
            start.elapsed() < WAIT,
            "condition not reached; stats: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn value(env: &Envelope) -> u64 {
    u64_of(&env.payload)
}
