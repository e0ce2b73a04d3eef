//! Memory a stranger can make the server hold: a frame must arrive within
//! its timeout, a frame that gets no buffer budget in that time closes its
//! connection, and a length over the limit closes the connection at once.
//! (The attack itself is in `tcp_budget_attack.rs`.)
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
use rpc_core::server::TcpServerConfig;
use rpc_core::{Code, Protocol};
use server_support::{code, msg_type, request, ADD, ECHO};
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
        let hasty_addr = server.serve_tcp_also("127.0.0.1:0", hasty).await.unwrap();
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
