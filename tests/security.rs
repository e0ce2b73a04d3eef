//! The attacks of the security review (`idl/PROTOCOL.md`, sections 6.7 and
//! 7.4), each against a real server on loopback, sent by hand-made
//! datagrams and gRPC requests as an attacker on the same network would:
//!
//! - a copy of a client's request from another address gets no stored
//!   reply, cannot preempt the client's next request id, and an ACK from
//!   another address cannot raise the session's floor (UDP and gRPC);
//! - nothing the server sends to a source it has not verified is more than
//!   three times what that source sent, however the source asks;
//! - a flood of sessions from one host does not evict another host's
//!   stored replies;
//! - the server decides idempotency from the method's declaration, not
//!   from the request's flag.
//!
//! Every wait is for an event (an answer, a counter), bounded by a safety
//! net that only fails the test when the event never comes.

use bytes::Bytes;
use prost::Message as _;
use rpc_core::envelope::{Envelope, ExchangeProtocol, MessageType, VERSION};
use rpc_core::grpc::metadata as md;
use rpc_core::grpc::BytesCodec;
use rpc_core::server::{HistoryConfig, Server, ServerConfig};
use rpc_core::Code;
use rpc_tests::demo::{counter, Amount, Blob, Count};
use rpc_tests::{wait_until, Demo};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;
use tonic::codegen::http::uri::PathAndQuery;

/// A safety net for one awaited event, never the verdict.
const WAIT: Duration = Duration::from_secs(30);

/// A raw datagram peer at a chosen loopback address.
struct Raw {
    sock: UdpSocket,
    server: SocketAddr,
    sent: usize,
    received: usize,
}

impl Raw {
    async fn bind(ip: [u8; 4], server: SocketAddr) -> anyhow::Result<Raw> {
        let sock = UdpSocket::bind(SocketAddr::from((ip, 0))).await?;
        Ok(Raw {
            sock,
            server,
            sent: 0,
            received: 0,
        })
    }

    async fn send(&mut self, env: &Envelope) -> anyhow::Result<usize> {
        let bytes = env.encode_to_vec();
        self.sock.send_to(&bytes, self.server).await?;
        self.sent += bytes.len();
        Ok(bytes.len())
    }

    /// The next datagram from the server, and its size.
    async fn recv(&mut self) -> anyhow::Result<(Envelope, usize)> {
        let mut buf = vec![0u8; 70_000];
        let (n, from) = tokio::time::timeout(WAIT, self.sock.recv_from(&mut buf))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {WAIT:?}"))??;
        anyhow::ensure!(from == self.server, "datagram from {from}");
        self.received += n;
        Ok((Envelope::decode(buf.get(..n).unwrap_or_default())?, n))
    }

    /// Sends and returns the first answer.
    async fn call(&mut self, env: &Envelope) -> anyhow::Result<(Envelope, usize, usize)> {
        let sent = self.send(env).await?;
        let (answer, len) = self.recv().await?;
        Ok((answer, sent, len))
    }

    /// PING: the server's incarnation and this address's cookie.
    async fn ping(&mut self, session: u64) -> anyhow::Result<(u64, u64)> {
        let ping = Envelope {
            version: VERSION,
            r#type: MessageType::Ping as i32,
            session_id: session,
            request_id: 1,
            ..Envelope::default()
        };
        let (pong, _, _) = self.call(&ping).await?;
        anyhow::ensure!(pong.r#type == MessageType::Pong as i32, "{pong:?}");
        anyhow::ensure!(pong.cookie != 0, "PONG without a cookie");
        Ok((pong.incarnation, pong.cookie))
    }
}

fn request(session: u64, id: u64, method: u32, payload: Vec<u8>) -> Envelope {
    Envelope {
        version: VERSION,
        r#type: MessageType::Request as i32,
        request_id: id,
        session_id: session,
        service: counter::SERVICE.full_name.into(),
        method_id: method,
        attempt: 1,
        payload: payload.into(),
        protocol: ExchangeProtocol::Rr as i32,
        ..Envelope::default()
    }
}

fn increment(session: u64, id: u64, delta: i64) -> Envelope {
    request(
        session,
        id,
        counter::INCREMENT.id,
        Amount { delta }.encode_to_vec(),
    )
}

fn count_of(env: &Envelope) -> anyhow::Result<Count> {
    anyhow::ensure!(
        env.r#type == MessageType::Reply as i32 && env.status.is_none(),
        "expected a successful REPLY, got {env:?}"
    );
    Ok(Count::decode(env.payload.clone())?)
}

fn code_of(env: &Envelope) -> Option<i32> {
    env.status.as_ref().map(|s| s.code)
}

#[tokio::test]
async fn udp_a_session_answers_only_its_own_peer() -> anyhow::Result<()> {
    let demo = Demo::start(Server::builder()).await?;
    let mut victim = Raw::bind([127, 0, 0, 1], demo.addr()).await?;
    const SESSION: u64 = 0x5EC0_0001;
    let (incarnation, cookie) = victim.ping(SESSION).await?;
    let mut first = increment(SESSION, 1, 1);
    first.incarnation = incarnation;
    first.cookie = cookie;
    let (reply, _, _) = victim.call(&first).await?;
    assert_eq!(count_of(&reply)?.value, 1);

    // Another port on the same host, and another host.
    for ip in [[127, 0, 0, 1], [127, 0, 0, 2]] {
        let mut attacker = Raw::bind(ip, demo.addr()).await?;
        // 1. A bare copy of request 1: the stored reply is not replayed.
        let mut copy = request(SESSION, 1, counter::INCREMENT.id, Vec::new());
        copy.attempt = 2;
        let (answer, _, _) = attacker.call(&copy).await?;
        assert_eq!(answer.r#type, MessageType::Error as i32, "{answer:?}");
        assert_eq!(code_of(&answer), Some(Code::PermissionDenied.as_i32()));
        assert!(answer.payload.is_empty());
        // 2. The victim's next id, taken first: refused, never run.
        let hijack = increment(SESSION, 2, -100);
        let (answer, _, _) = attacker.call(&hijack).await?;
        assert_eq!(code_of(&answer), Some(Code::PermissionDenied.as_i32()));
        // 3. An ACK that would raise the floor past every future id.
        let before = demo.server.stats().foreign_refused;
        let wipe = Envelope {
            version: VERSION,
            r#type: MessageType::Ack as i32,
            session_id: SESSION,
            request_id: 1,
            ack_up_to: 1 << 62,
            ..Envelope::default()
        };
        attacker.send(&wipe).await?;
        wait_until(WAIT, "the forged ACK to be refused", || {
            demo.server.stats().foreign_refused > before
        })
        .await?;
    }
    assert_eq!(demo.server.stats().foreign_refused, 6);
    assert_eq!(demo.counter.executions(), 1, "no forged request ran");

    // The victim's own calls go on: its id 2 runs (the attacker's did not),
    // and the floor is where the victim put it.
    for (id, value) in [(2, 2), (3, 3)] {
        let mut next = increment(SESSION, id, 1);
        next.incarnation = incarnation;
        next.cookie = cookie;
        next.ack_up_to = id - 1;
        let (reply, _, _) = victim.call(&next).await?;
        assert_eq!(count_of(&reply)?.value, value);
    }
    assert_eq!(demo.counter.executions(), 3);
    Ok(())
}

/// One unary gRPC request from `local` with a hand-made `rpc-call` header.
async fn grpc_raw(
    server: SocketAddr,
    local: IpAddr,
    path: &'static str,
    payload: Vec<u8>,
    call: &md::CallHeader,
) -> Result<Bytes, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{server}"))
        .map_err(|e| tonic::Status::internal(e.to_string()))?
        .local_address(Some(local))
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    let mut request = tonic::Request::new(Bytes::from(payload));
    let header = call
        .encode()
        .parse()
        .map_err(|_| tonic::Status::internal("header"))?;
    request.metadata_mut().insert(md::CALL, header);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let response = grpc
        .unary(
            request,
            PathAndQuery::from_static(path),
            BytesCodec::default(),
        )
        .await?;
    Ok(response.into_inner())
}

#[tokio::test]
async fn grpc_a_session_answers_only_its_own_host() -> anyhow::Result<()> {
    let counter = std::sync::Arc::new(rpc_tests::CounterService::new());
    let server = Server::builder()
        .add_service(rpc_tests::demo::CounterServer::from_arc(counter.clone()))
        .serve_grpc("127.0.0.1:0")
        .await?;
    let addr = server.local_addr();
    const PATH: &str = "/demo.v1.Counter/Increment";
    let (victim, attacker): (IpAddr, IpAddr) = ([127, 0, 0, 1].into(), [127, 0, 0, 2].into());
    let call = |id: u64, attempt: u32, ack_up_to: u64| md::CallHeader {
        session: 0x5EC0_0002,
        request_id: id,
        attempt,
        incarnation: server.incarnation(),
        ack_up_to,
        ..md::CallHeader::default()
    };
    let amount = |delta: i64| Amount { delta }.encode_to_vec();
    let reply = grpc_raw(addr, victim, PATH, amount(1), &call(1, 1, 0)).await?;
    assert_eq!(Count::decode(reply)?.value, 1);

    // A copy of request 1, the victim's next id, and a floor far ahead.
    for (header, payload) in [
        (call(1, 2, 0), Vec::new()),
        (call(2, 1, 0), amount(-100)),
        (call((1 << 62) + 1, 1, 1 << 62), amount(0)),
    ] {
        let status = grpc_raw(addr, attacker, PATH, payload, &header)
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("a forged request was answered"))?;
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    }
    assert_eq!(server.stats().foreign_refused, 3);
    assert_eq!(counter.executions(), 1);
    // The victim reconnects (another port, same host) and goes on.
    for (id, value) in [(2, 2), (3, 3)] {
        let reply = grpc_raw(addr, victim, PATH, amount(1), &call(id, 1, id - 1)).await?;
        assert_eq!(Count::decode(reply)?.value, value);
    }
    assert_eq!(counter.executions(), 3);
    server.shutdown(Duration::from_secs(5)).await?;
    Ok(())
}

#[tokio::test]
async fn nothing_sent_to_an_unverified_source_exceeds_three_times_its_request() -> anyhow::Result<()>
{
    let demo = Demo::start(Server::builder()).await?;
    let mut attacker = Raw::bind([127, 0, 0, 1], demo.addr()).await?;
    const SESSION: u64 = 0x5EC0_0003;
    // A 60,000-byte echo, asynchronous so that its reply is stored: its
    // answers are no bigger than the request itself.
    let mut big = request(
        SESSION,
        1,
        counter::ECHO.id,
        Blob {
            data: vec![7; 60_000].into(),
        }
        .encode_to_vec(),
    );
    big.want_accept = true;
    let (answer, _, _) = attacker.call(&big).await?;
    assert_eq!(answer.r#type, MessageType::Accept as i32, "{answer:?}");
    wait_until(WAIT, "the echo's reply to be stored", || {
        demo.server.stats().history_bytes > 60_000
    })
    .await?;
    // Drain the REPLY sent after the ACCEPT (60 KB for 60 KB received).
    let (reply, _) = attacker.recv().await?;
    assert_eq!(reply.r#type, MessageType::Reply as i32);

    // The measured part: small datagrams asking for large answers.
    let (sent0, received0) = (attacker.sent, attacker.received);
    let mut worst: f64 = 0.0;
    let mut cookie = 0;
    for attempt in 2..102u32 {
        // A bare poll of the stored 60 KB reply.
        let mut poll = request(SESSION, 1, counter::ECHO.id, Vec::new());
        poll.want_accept = true;
        poll.attempt = attempt;
        let (answer, sent, len) = attacker.call(&poll).await?;
        assert_eq!(answer.r#type, MessageType::Pong as i32, "{answer:?}");
        cookie = answer.cookie;
        worst = worst.max(len as f64 / sent as f64);
    }
    for id in 0..20u64 {
        // PINGs, and requests for an unknown service (a long error text).
        let ping = Envelope {
            version: VERSION,
            r#type: MessageType::Ping as i32,
            session_id: SESSION + 1 + id,
            ..Envelope::default()
        };
        let (_, sent, len) = attacker.call(&ping).await?;
        worst = worst.max(len as f64 / sent as f64);
        let mut unknown = request(SESSION + 100 + id, 1, 1, Vec::new());
        unknown.service = "x".repeat(100).into();
        let (_, sent, len) = attacker.call(&unknown).await?;
        worst = worst.max(len as f64 / sent as f64);
    }
    let ratio = (attacker.received - received0) as f64 / (attacker.sent - sent0) as f64;
    assert!(worst <= 3.0, "an answer was {worst:.2} times its request");
    assert!(ratio <= 3.0, "{ratio:.2} times as many bytes out as in");
    let stats = demo.server.stats();
    assert!(stats.amplification_limited >= 100, "{stats:?}");

    // With the cookie the source is verified, and the stored reply comes.
    let mut poll = request(SESSION, 1, counter::ECHO.id, Vec::new());
    poll.want_accept = true;
    poll.attempt = 200;
    poll.cookie = cookie;
    let (answer, _, len) = attacker.call(&poll).await?;
    assert_eq!(answer.r#type, MessageType::Reply as i32);
    assert!(len > 60_000);
    assert_eq!(demo.server.stats().executions, 1, "the echo ran once");
    Ok(())
}

#[tokio::test]
async fn idempotency_is_the_methods_declaration_not_the_requests_flag() -> anyhow::Result<()> {
    let demo = Demo::start(Server::builder()).await?;
    let mut peer = Raw::bind([127, 0, 0, 1], demo.addr()).await?;
    const SESSION: u64 = 0x5EC0_0004;
    let (incarnation, cookie) = peer.ping(SESSION).await?;
    // Echo is declared idempotent: a request saying otherwise is still not
    // stored (a stored echo is what made the reflection attack work).
    let mut echo = request(
        SESSION,
        1,
        counter::ECHO.id,
        Blob {
            data: vec![1; 1000].into(),
        }
        .encode_to_vec(),
    );
    echo.idempotent = false;
    echo.cookie = cookie;
    let (reply, _, _) = peer.call(&echo).await?;
    assert_eq!(reply.r#type, MessageType::Reply as i32);
    assert_eq!(demo.server.stats().history_completed, 0);
    // Increment is not: a request calling it idempotent is still tracked,
    // and a copy is answered from the history without running again.
    let mut inc = increment(SESSION, 2, 5);
    inc.idempotent = true;
    inc.incarnation = incarnation;
    inc.cookie = cookie;
    let (first, _, _) = peer.call(&inc).await?;
    inc.attempt = 2;
    let (second, _, _) = peer.call(&inc).await?;
    assert_eq!(first, second);
    assert_eq!(demo.counter.executions(), 1);
    assert_eq!(demo.server.stats().duplicates_replayed, 1);
    Ok(())
}

#[tokio::test]
async fn a_flood_of_sessions_from_one_host_leaves_anothers_retries_answered() -> anyhow::Result<()>
{
    let config = ServerConfig {
        history: HistoryConfig {
            max_sessions: 64,
            max_sessions_per_source: 16,
            ..HistoryConfig::default()
        },
        ..ServerConfig::default()
    };
    let demo = Demo::start(Server::builder().config(config)).await?;
    let mut honest = Raw::bind([127, 0, 0, 1], demo.addr()).await?;
    const SESSION: u64 = 0x5EC0_0005;
    let (incarnation, cookie) = honest.ping(SESSION).await?;
    let mut inc = increment(SESSION, 1, 1);
    inc.incarnation = incarnation;
    inc.cookie = cookie;
    let (first, _, _) = honest.call(&inc).await?;
    assert_eq!(count_of(&first)?.value, 1);

    // 500 sessions from another host, each with one request.
    let mut flood = Raw::bind([127, 0, 0, 2], demo.addr()).await?;
    let (_, flood_cookie) = flood.ping(1).await?;
    let (mut ran, mut refused) = (0, 0);
    for session in 1..=500u64 {
        let mut req = increment(session << 20, 1, 0);
        req.incarnation = incarnation;
        req.cookie = flood_cookie;
        let (answer, _, _) = flood.call(&req).await?;
        match code_of(&answer) {
            None => ran += 1,
            Some(code) => {
                assert_eq!(code, Code::ResourceExhausted.as_i32(), "{answer:?}");
                refused += 1;
            }
        }
    }
    assert_eq!((ran, refused), (16, 484));
    assert_eq!(demo.server.stats().quota_refused, 484);

    // The honest client's retransmission still finds its stored reply.
    inc.attempt = 2;
    let (again, _, _) = honest.call(&inc).await?;
    assert_eq!(again, first);
    assert_eq!(demo.counter.executions(), 17);
    Ok(())
}

/// A client that only makes idempotent calls never PINGs; the first answer
/// it gets carries its cookie (spec 7.4), so its later requests are from a
/// verified source and the per-host rate of answers to unverified sources
/// (here 2 a second) never drops one of its answers.
#[tokio::test]
async fn a_client_that_never_pings_is_verified_by_its_first_answer() -> anyhow::Result<()> {
    let config = ServerConfig {
        unverified_rate: 2,
        ..ServerConfig::default()
    };
    let demo = Demo::start(Server::builder().config(config)).await?;
    let (channel, client) =
        rpc_tests::connect(demo.addr(), rpc_core::client::ChannelConfig::default()).await?;
    for _ in 0..50 {
        client.get(rpc_tests::demo::Empty {}).await?;
    }
    let stats = demo.server.stats();
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
    assert_eq!(channel.stats().pings, 0, "only idempotent calls: no PING");
    Ok(())
}
