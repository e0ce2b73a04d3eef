//! The engine without sockets: a sink that collects what it is given.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use super::*;
use crate::service::CallContext;
use crate::service::{Protocol, ServiceInfo, Style, TransportKind};
use crate::status::Code;
use std::io;
use std::net::SocketAddr;

const FAST: u32 = 1;
const GATED: u32 = 2;

static METHODS: [MethodInfo; 2] = [method("Fast", FAST), method("Gated", GATED)];
static INFO: ServiceInfo = ServiceInfo {
    package: "t",
    name: "S",
    full_name: "t.S",
    methods: &METHODS,
};

const fn method(name: &'static str, id: u32) -> MethodInfo {
    MethodInfo {
        name,
        id,
        request_type: "",
        response_type: "",
        raises_type: "",
        oneway: false,
        idempotent: false,
        protocol: Protocol::RR,
        style: Style::Sync,
        timeout_ms: 0,
        retries: None,
    }
}

#[derive(Default)]
struct Svc {
    runs: std::sync::atomic::AtomicU64,
    gate: Arc<Notify>,
}

impl Service for Arc<Svc> {
    fn info(&self) -> &'static ServiceInfo {
        &INFO
    }
    fn call(
        &self,
        method_id: u32,
        _ctx: CallContext,
        _req: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, Status>> {
        let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        let gate = Arc::clone(&self.gate);
        Box::pin(async move {
            if method_id == GATED {
                gate.notified().await;
            }
            Ok(Bytes::copy_from_slice(&n.to_be_bytes()))
        })
    }
}

/// A "connection": collects every message sent to it.
#[derive(Clone, Default)]
struct Conn {
    out: Arc<Mutex<Vec<Vec<u8>>>>,
    peer: Option<SocketAddr>,
    identity: Option<Arc<crate::service::PeerIdentity>>,
}

impl Conn {
    fn taken(&self) -> Vec<Envelope> {
        std::mem::take(&mut *self.out.lock().unwrap())
            .iter()
            .map(|b| Envelope::decode(b.as_slice()).unwrap())
            .collect()
    }
}

impl ReplySink for Conn {
    async fn send(&self, message: &[u8]) -> io::Result<()> {
        self.out.lock().unwrap().push(message.to_vec());
        Ok(())
    }
    fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }
    fn transport(&self) -> TransportKind {
        TransportKind::Tcp
    }
    fn identity(&self) -> Option<Arc<crate::service::PeerIdentity>> {
        self.identity.clone()
    }
    fn max_message_len(&self) -> usize {
        16 << 20
    }
}

fn tls_conn(host: [u8; 4], name: &str) -> Conn {
    Conn {
        peer: Some(SocketAddr::from((host, 4000))),
        identity: Some(Arc::new(crate::service::PeerIdentity {
            subject: format!("CN={name}"),
            common_name: Some(name.to_owned()),
            alt_names: Vec::new(),
            certificate: Bytes::new(),
        })),
        ..Conn::default()
    }
}

#[tokio::test]
async fn under_mutual_tls_a_session_belongs_to_the_certificate() {
    let (engine, svc) = engine();
    let alice = tls_conn([10, 0, 0, 1], "alice");
    engine.handle_message(&req(1, FAST, 1), &alice).await;
    let first = alice.taken();
    // Alice from another host (a new connection, a new Arc) continues.
    let moved = tls_conn([10, 0, 0, 2], "alice");
    engine.handle_message(&req(1, FAST, 2), &moved).await;
    assert_eq!(moved.taken(), first);
    // Mallory on Alice's host is another peer.
    let mallory = tls_conn([10, 0, 0, 1], "mallory");
    engine.handle_message(&req(1, FAST, 3), &mallory).await;
    let refused = mallory.taken();
    assert_eq!(refused.len(), 1);
    let code = refused[0].status.as_ref().map(|s| s.code);
    assert_eq!(code, Some(Code::PermissionDenied.as_i32()));
    assert_eq!(svc.runs.load(Ordering::SeqCst), 1);
    assert_eq!(engine.stats().foreign_refused, 1);
}

fn engine() -> (Arc<Engine>, Arc<Svc>) {
    let svc = Arc::new(Svc::default());
    let engine = Engine::new(
        ServerConfig::default(),
        vec![Arc::new(Arc::clone(&svc))],
        77,
        ByteBudget::new(256 << 20),
    );
    (Arc::new(engine), svc)
}

fn req(id: u64, method: u32, attempt: u32) -> Vec<u8> {
    Envelope {
        version: VERSION,
        r#type: MessageType::Request as i32,
        request_id: id,
        session_id: 5,
        service: "t.S".into(),
        method_id: method,
        attempt,
        incarnation: if attempt > 1 { 77 } else { 0 },
        ..Envelope::default()
    }
    .encode_to_vec()
}

#[test]
fn clip_cuts_at_char_boundaries() {
    assert_eq!(clip("héllo", 2), "h");
    assert_eq!(clip("héllo", 3), "hé");
    assert_eq!(clip("abc", 10), "abc");
}

#[tokio::test]
async fn a_ready_handler_is_answered_on_the_receiving_task() {
    let (engine, svc) = engine();
    let conn = Conn::default();
    engine.handle_message(&req(1, FAST, 1), &conn).await;
    // No spawn, no yield: the reply is out when handle_message returns.
    let out = conn.taken();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].r#type, MessageType::Reply as i32);
    assert_eq!(engine.in_flight(), 0);
    assert_eq!(svc.runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn at_most_once_survives_a_reconnect() {
    let (engine, svc) = engine();
    let (first, second) = (Conn::default(), Conn::default());
    engine.handle_message(&req(1, GATED, 1), &first).await;
    assert_eq!(engine.in_flight(), 1);
    // The first connection breaks; the client retries on a new one.
    engine.handle_message(&req(1, GATED, 2), &second).await;
    assert_eq!(
        second.taken().iter().map(|e| e.r#type).collect::<Vec<_>>(),
        vec![MessageType::InProgress as i32]
    );
    svc.gate.notify_one();
    assert!(engine.wait_idle(Duration::from_secs(2)).await);
    // The reply went to the broken connection; the retry gets it from
    // the history, without a second execution.
    let lost = first.taken();
    assert_eq!(lost.len(), 1);
    engine.handle_message(&req(1, GATED, 3), &second).await;
    let replayed = second.taken();
    assert_eq!(replayed, lost);
    assert_eq!(svc.runs.load(Ordering::SeqCst), 1);
    let s = engine.stats();
    assert_eq!(
        (s.executions, s.in_progress_hits, s.duplicates_replayed),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn shutdown_refuses_new_work_but_replays() {
    let (engine, svc) = engine();
    let conn = Conn::default();
    engine.handle_message(&req(1, FAST, 1), &conn).await;
    let reply = conn.taken();
    engine.begin_shutdown();
    engine.handle_message(&req(2, FAST, 1), &conn).await;
    let refused = conn.taken();
    assert_eq!(refused[0].r#type, MessageType::Error as i32);
    assert_eq!(
        refused[0].status.as_ref().map(|s| s.code),
        Some(Code::Unavailable as i32)
    );
    engine.handle_message(&req(1, FAST, 2), &conn).await;
    assert_eq!(conn.taken(), reply);
    assert_eq!(svc.runs.load(Ordering::SeqCst), 1);
}
