//! Memory a stranger can make the server hold: a frame must arrive within
//! its timeout, a frame that gets no buffer budget in that time closes its
//! connection, a length over the limit closes the connection at once, and
//! the gRPC door takes its large messages from the same budget as the TCP
//! doors. (The attack itself is in `tcp_budget_attack.rs`.)
//!
//! Every wait is for an event (a counter, a closed socket), bounded by a
//! generous safety limit; nothing is judged by the wall clock.
#![allow(clippy::unwrap_used)]

mod budget_support;
mod server_support;
mod tcp_support;

use budget_support::{closed_by_server, door, partial_frame, serve, until, LIMIT, MIB};
use bytes::BytesMut;
use prost::Message;
use rpc_core::client::TcpChannel;
use rpc_core::envelope::{Envelope, MessageType};
use rpc_core::grpc::server::GrpcServerConfig;
use rpc_core::grpc::GrpcChannel;
use rpc_core::server::TcpServerConfig;
use rpc_core::{Code, Error, Protocol};
use server_support::{code, msg_type, request, ADD, ECHO, SLOW};
use std::time::Duration;
use tcp_support::{be, bounded, call, u64_of};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn a_length_just_over_the_limit_closes_the_connection_at_once() {
    bounded(LIMIT, async {
        // The default limit (16 MiB), and no frame timeout to speak of: the
        // close cannot come from a timer.
        let (server, state) = serve(256 * MIB, door(Duration::from_secs(3600))).await;
        let addr = server.local_addr();
        let limit = TcpServerConfig::default().max_frame;
        // A bare length prefix, the stream kept open.
        let mut raw = TcpStream::connect(addr).await.unwrap();
        raw.write_all(&u32::try_from(limit + 1).unwrap().to_be_bytes())
            .await
            .unwrap();
        assert!(closed_by_server(&mut raw).await.is_empty());
        let t = server.tcp_stats();
        assert_eq!((t.oversized_frames, t.absurd_lengths), (1, 0), "{t:?}");
        assert_eq!(server.stats().too_large_requests, 1);

        // With the start of a request after the prefix (one write): the
        // request is answered RESOURCE_EXHAUSTED, then the connection is
        // closed.
        let mut env = request(7, 1, ECHO);
        env.payload = vec![1u8; 100].into();
        let mut bytes = BytesMut::new();
        bytes.extend_from_slice(&u32::try_from(limit + 1).unwrap().to_be_bytes());
        bytes.extend_from_slice(&env.encode_to_vec());
        let mut raw = TcpStream::connect(addr).await.unwrap();
        raw.write_all(&bytes).await.unwrap();
        let got = closed_by_server(&mut raw).await;
        let len = usize::try_from(u32::from_be_bytes(got[..4].try_into().unwrap())).unwrap();
        assert_eq!(got.len(), 4 + len, "one frame, then the end");
        let reply = Envelope::decode(&got[4..]).unwrap();
        assert_eq!(msg_type(&reply), MessageType::Error);
        assert_eq!(code(&reply), Some(Code::ResourceExhausted));
        assert_eq!(reply.request_id, 1);
        assert_eq!(server.tcp_stats().oversized_frames, 2);
        assert_eq!(state.runs(), 0);
        assert_eq!(
            server.buffer_stats().reservations,
            0,
            "nothing was buffered"
        );
    })
    .await;
}

#[tokio::test]
async fn a_frame_stalled_past_its_timeout_closes_its_connection() {
    bounded(LIMIT, async {
        let (server, state) = serve(256 * MIB, door(Duration::from_millis(200))).await;
        let addr = server.local_addr();
        // A small frame (no budget needed), a large one (with budget) and
        // a prefix cut short: each stalls, each is closed.
        let mut small = partial_frame(addr, 1000, 10).await;
        let mut large = partial_frame(addr, 4 * MIB, 1 << 20).await;
        let mut cut = TcpStream::connect(addr).await.unwrap();
        cut.write_all(&[0, 0]).await.unwrap();
        for s in [&mut small, &mut large, &mut cut] {
            closed_by_server(s).await;
        }
        until("the three closes counted", || {
            server.tcp_stats().closed_frame_timeout == 3
        })
        .await;
        let b = server.buffer_stats();
        assert_eq!((b.reservations, b.reserved, b.filled), (1, 0, 0), "{b:?}");
        // A connection that sends nothing is not concerned (idle timeout),
        // and whole frames pass.
        let ch = TcpChannel::connect(addr).await.unwrap();
        let r = call(&ch, ADD, be(3), Protocol::RR, Some(Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(u64_of(&r.unwrap()), 3);
        assert_eq!(state.runs(), 1);
        let t = server.tcp_stats();
        assert_eq!((t.closed_no_budget, t.read_errors), (0, 0), "{t:?}");
    })
    .await;
}

#[tokio::test]
async fn requests_waiting_for_a_handler_hold_their_bytes_from_the_budget() {
    bounded(LIMIT, async {
        let budget = 4 * MIB;
        let svc = server_support::TestService::default();
        let state = std::sync::Arc::clone(&svc.state);
        // One handler slot: the large requests behind a held one wait.
        let mut config = door(Duration::from_secs(3600));
        config.max_frame = 2 * MIB;
        let server = rpc_core::server::Server::builder()
            .buffer_budget(budget)
            .max_concurrent(1)
            .add_service(svc)
            .serve_tcp_with("127.0.0.1:0", config)
            .await
            .unwrap();
        let ch = TcpChannel::connect(server.local_addr()).await.unwrap();
        let slow = |payload: Vec<u8>| {
            let ch = ch.clone();
            tokio::spawn(async move {
                call(
                    &ch,
                    SLOW,
                    payload,
                    Protocol::RR,
                    Some(Duration::from_secs(60)),
                )
                .await
            })
        };
        // A large held request runs (its frame's bytes go back when it
        // starts); three more wait for its slot, each holding its 1 MiB.
        let mut calls = vec![slow(vec![1u8; MIB])];
        until("the first running", || state.runs() == 1).await;
        for _ in 0..3 {
            calls.push(slow(vec![2u8; MIB]));
        }
        until("three waiting requests holding their bytes", || {
            server.buffer_stats().reserved == 3 * MIB
        })
        .await;
        // A fifth frame (1 MiB and its header) cannot even be read until
        // one of them runs.
        calls.push(slow(vec![3u8; MIB]));
        until("the fifth waiting for budget", || {
            server.tcp_stats().budget_waits == 1
        })
        .await;
        let b = server.buffer_stats();
        assert!(b.reserved <= budget && b.peak <= budget, "{b:?}");
        assert_eq!(state.runs(), 1, "the others wait for the handler slot");
        assert_eq!(server.stats().overloaded, 0);
        // Let them all run: every byte comes back.
        state.release(5);
        for c in calls {
            let r = c.await.unwrap().unwrap();
            assert_eq!(r.unwrap(), b"slow".to_vec());
        }
        until("every reservation back", || {
            server.buffer_stats().reserved == 0
        })
        .await;
        assert_eq!(state.runs(), 5);
    })
    .await;
}
#[tokio::test]
async fn a_frame_without_budget_in_time_closes_its_connection() {
    bounded(LIMIT, async {
        let budget = MIB;
        let mut patient = door(Duration::from_secs(3600));
        patient.max_frame = MIB;
        let mut hasty = door(Duration::from_millis(200));
        hasty.max_frame = MIB;
        // Two doors, one budget: a frame on the patient door holds all of
        // it for as long as the test wants.
        let (server, state) = serve(budget, patient).await;
        let hasty_addr = server.serve_tcp_with("127.0.0.1:0", hasty).await.unwrap();
        let holder = partial_frame(server.local_addr(), MIB, 100 * 1024).await;
        until("the holder's reservation", || {
            server.buffer_stats().reserved == budget
        })
        .await;
        // A large frame on the hasty door waits, then its connection is
        // closed at its frame timeout.
        let mut waiter = partial_frame(hasty_addr, MIB, 10).await;
        closed_by_server(&mut waiter).await;
        until("the close counted", || {
            server.tcp_stats().closed_no_budget == 1
        })
        .await;
        let (t, b) = (server.tcp_stats(), server.buffer_stats());
        assert_eq!((t.budget_waits, t.closed_frame_timeout), (1, 0), "{t:?}");
        assert_eq!((b.refused, b.reserved), (1, budget), "{b:?}");
        // Small calls still pass on the hasty door.
        let ch = TcpChannel::connect(hasty_addr).await.unwrap();
        let r = call(&ch, ADD, be(2), Protocol::RR, Some(Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(u64_of(&r.unwrap()), 2);
        // The holder leaves; a large frame (on the patient door: its
        // arrival is not raced against a short timeout) now reserves,
        // arrives whole, is handed on and gives its bytes back.
        drop(holder);
        until("the holder's budget back", || {
            server.buffer_stats().reserved == 0
        })
        .await;
        let ch = TcpChannel::connect(server.local_addr()).await.unwrap();
        let big = vec![9u8; 900 * 1024];
        let r = call(
            &ch,
            ECHO,
            big.clone(),
            Protocol::RR,
            Some(Duration::from_secs(10)),
        )
        .await
        .unwrap();
        assert_eq!(r.unwrap(), big);
        let b = server.buffer_stats();
        assert_eq!((b.reservations, b.reserved, b.filled), (2, 0, 0), "{b:?}");
        assert_eq!(state.runs(), 2);
    })
    .await;
}

#[tokio::test]
async fn grpc_requests_take_large_messages_from_the_same_budget() {
    bounded(LIMIT, async {
        // The smallest budget a gRPC door takes: one message of 16 MiB.
        let budget = 16 * MIB;
        let (server, _state) = serve(budget, door(Duration::from_secs(3600))).await;
        let grpc_addr = server
            .serve_grpc_with("127.0.0.1:0", GrpcServerConfig::default())
            .await
            .unwrap();
        let ch = GrpcChannel::connect(&format!("http://{grpc_addr}"))
            .await
            .unwrap();
        // A TCP frame holds the whole budget.
        let holder = partial_frame(server.local_addr(), budget, 1000).await;
        until("the holder's reservation", || {
            server.buffer_stats().reserved == budget
        })
        .await;
        // Small gRPC calls pass on their connection's allowance; a large
        // message is refused at once.
        let r = call(&ch, ADD, be(4), Protocol::RR, Some(Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(u64_of(&r.unwrap()), 4);
        let big = vec![3u8; 200 * 1024];
        let refused = call(
            &ch,
            ECHO,
            big.clone(),
            Protocol::RR,
            Some(Duration::from_secs(10)),
        )
        .await;
        let code = match refused {
            Ok(Err(status)) => status.code(),
            Err(Error::Status(status)) => status.code(),
            other => panic!("expected RESOURCE_EXHAUSTED, got {other:?}"),
        };
        assert_eq!(code, Code::ResourceExhausted);
        let g = server.grpc_stats();
        assert_eq!((g.refused_no_budget, g.receive_timeouts), (1, 0), "{g:?}");
        // Once the budget is back, the large message passes, and gives its
        // bytes back.
        drop(holder);
        until("the holder's budget back", || {
            server.buffer_stats().reserved == 0
        })
        .await;
        let r = call(
            &ch,
            ECHO,
            big.clone(),
            Protocol::RR,
            Some(Duration::from_secs(10)),
        )
        .await
        .unwrap();
        assert_eq!(r.unwrap(), big);
        until("the message's budget back", || {
            server.buffer_stats().reserved == 0
        })
        .await;
        let b = server.buffer_stats();
        assert_eq!((b.reservations, b.refused), (2, 1), "{b:?}");
    })
    .await;
}

/// A bare HTTP/2 client, enough to open gRPC calls and stall them.
mod h2 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const DATA: u8 = 0;
    const HEADERS: u8 = 1;
    const RST_STREAM: u8 = 3;
    const SETTINGS: u8 = 4;
    const GOAWAY: u8 = 7;
    const END_STREAM: u8 = 1;
    const END_HEADERS: u8 = 4;
    const ACK: u8 = 1;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// Literal header fields without indexing (no Huffman): short names
    /// and values only.
    fn hpack(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut block = Vec::new();
        for (name, value) in fields {
            block.push(0);
            block.push(u8::try_from(name.len()).unwrap());
            block.extend_from_slice(name.as_bytes());
            block.push(u8::try_from(value.len()).unwrap());
            block.extend_from_slice(value.as_bytes());
        }
        block
    }

    pub(crate) async fn connect(addr: std::net::SocketAddr) -> TcpStream {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(PREFACE).await.unwrap();
        s.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
        s
    }

    /// Opens a gRPC call of `path` on `stream` (odd, increasing) and sends
    /// `data` without ending the request.
    pub(crate) async fn open_call(s: &mut TcpStream, stream: u32, path: &str, data: &[u8]) {
        let block = hpack(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]);
        s.write_all(&frame(HEADERS, END_HEADERS, stream, &block))
            .await
            .unwrap();
        if !data.is_empty() {
            s.write_all(&frame(DATA, 0, stream, data)).await.unwrap();
        }
    }

    /// Reads frames (acknowledging the server's settings) until the server
    /// has ended each of `streams` (a HEADERS frame ending the stream, or a
    /// reset). Panics on a GOAWAY or the end of the connection.
    pub(crate) async fn wait_ended(s: &mut TcpStream, streams: &[u32]) {
        let mut open: Vec<u32> = streams.to_vec();
        // Bounded: the server sends a few frames per stream.
        for _ in 0..10_000 {
            if open.is_empty() {
                return;
            }
            let mut head = [0u8; 9];
            s.read_exact(&mut head).await.unwrap();
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let (kind, flags) = (head[3], head[4]);
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; len];
            s.read_exact(&mut payload).await.unwrap();
            match kind {
                SETTINGS if flags & ACK == 0 => {
                    s.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
                }
                HEADERS if flags & END_STREAM != 0 => open.retain(|&o| o != stream),
                DATA if flags & END_STREAM != 0 => open.retain(|&o| o != stream),
                RST_STREAM => open.retain(|&o| o != stream),
                GOAWAY => panic!("the server closed the connection"),
                _ => {}
            }
        }
        panic!("streams {open:?} never ended");
    }
}

#[tokio::test]
async fn grpc_requests_must_arrive_within_the_receive_timeout() {
    bounded(LIMIT, async {
        let (server, state) = serve(256 * MIB, door(Duration::from_secs(3600))).await;
        let grpc_addr = server
            .serve_grpc_with(
                "127.0.0.1:0",
                GrpcServerConfig::default().with_receive_timeout(Duration::from_millis(200)),
            )
            .await
            .unwrap();
        let mut s = h2::connect(grpc_addr).await;
        // A message announced (100 bytes) and cut short, and a call whose
        // body never starts: both stall, both are refused.
        let mut data = vec![0u8, 0, 0, 0, 100];
        data.extend_from_slice(&[7u8; 10]);
        h2::open_call(&mut s, 1, "/test.v1.Counter/Echo", &data).await;
        h2::open_call(&mut s, 3, "/test.v1.Counter/Echo", &[]).await;
        h2::wait_ended(&mut s, &[1, 3]).await;
        let g = server.grpc_stats();
        assert_eq!((g.receive_timeouts, g.refused_no_budget), (2, 0), "{g:?}");
        assert_eq!(g.connections_open, 1, "the connection stays: {g:?}");
        assert_eq!(state.runs(), 0);
        // Whole requests pass.
        let ch = GrpcChannel::connect(&format!("http://{grpc_addr}"))
            .await
            .unwrap();
        let r = call(&ch, ADD, be(6), Protocol::RR, Some(Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(u64_of(&r.unwrap()), 6);
    })
    .await;
}

#[tokio::test]
async fn grpc_connections_over_the_limit_are_closed_at_once() {
    bounded(LIMIT, async {
        let (server, _state) = serve(256 * MIB, door(Duration::from_secs(3600))).await;
        let mut config = GrpcServerConfig::default();
        config.max_connections = 1;
        let grpc_addr = server.serve_grpc_with("127.0.0.1:0", config).await.unwrap();
        let _first = h2::connect(grpc_addr).await;
        until("the first connection served", || {
            server.grpc_stats().connections_open == 1
        })
        .await;
        let mut second = TcpStream::connect(grpc_addr).await.unwrap();
        closed_by_server(&mut second).await;
        let g = server.grpc_stats();
        assert_eq!(
            (
                g.connections_accepted,
                g.connections_refused,
                g.connections_open
            ),
            (1, 1, 1),
            "{g:?}"
        );
    })
    .await;
}
