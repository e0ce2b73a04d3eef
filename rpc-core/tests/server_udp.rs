//! The UDP server against hand-built envelopes on 127.0.0.1: duplicate
//! filtering, the reply history and its eviction, incarnations, errors,
//! limits and deadlines (`idl/PROTOCOL.md`, sections 9 "Serving a message"
//! and 10 "The reply history").
#![allow(clippy::unwrap_used)]

mod server_support;

use rpc_core::envelope::{Envelope, ExchangeProtocol, MessageType, SERVER_RESTARTED, VERSION};
use rpc_core::server::{HistoryConfig, Server};
use rpc_core::{Code, TransportKind};
use server_support::*;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

#[tokio::test]
async fn duplicate_runs_once_and_gets_the_same_reply_bytes() {
    tokio::time::timeout(T, async {
        let (server, state) = serve(Server::builder()).await;
        let peer = Peer::new(server.local_addr()).await;
        let req = request(11, 1, ADD);
        peer.send(&req).await;
        let first = peer.recv_raw().await;
        let mut again = req.clone();
        again.attempt = 2;
        again.incarnation = server.incarnation();
        peer.send(&again).await;
        let second = peer.recv_raw().await;
        assert_eq!(
            first, second,
            "the stored reply is sent again, byte for byte"
        );
        assert_eq!(state.runs(), 1);
        let reply = prost::Message::decode(first.as_slice())
            .map(|e: Envelope| e)
            .unwrap();
        assert_eq!(msg_type(&reply), MessageType::Reply);
        assert_eq!(value(&reply), 1);
        assert_eq!(reply.incarnation, server.incarnation());
        assert_eq!(reply.request_id, 1);
        assert_eq!(reply.session_id, 11);
        let s = server.stats();
        assert_eq!(
            (s.requests, s.executions, s.replies, s.duplicates_replayed),
            (2, 1, 1, 1)
        );
        assert_eq!(s.history_completed, 1);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn duplicate_of_a_running_request_gets_in_progress_or_accept() {
    tokio::time::timeout(T, async {
        let (server, state) = serve(Server::builder()).await;
        let peer = Peer::new(server.local_addr()).await;
        let req = request(12, 1, SLOW);
        peer.send(&req).await;
        wait_stats(&server, |s| s.executions == 1).await;
        let mut dup = req.clone();
        dup.attempt = 2;
        let answer = peer.call(&dup).await;
        assert_eq!(msg_type(&answer), MessageType::InProgress);
        assert_eq!(answer.incarnation, server.incarnation());
        // The same id polled with want_accept (deferred style) gets ACCEPT.
        dup.want_accept = true;
        dup.attempt = 3;
        assert_eq!(msg_type(&peer.call(&dup).await), MessageType::Accept);
        state.release(1);
        let reply = peer.recv().await;
        assert_eq!(msg_type(&reply), MessageType::Reply);
        assert_eq!(&reply.payload[..], b"slow");
        assert_eq!(state.runs(), 1);
        assert_eq!(server.stats().in_progress_hits, 2);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn want_accept_gets_accept_first_then_the_reply_then_replays() {
    tokio::time::timeout(T, async {
        let (server, state) = serve(Server::builder()).await;
        let peer = Peer::new(server.local_addr()).await;
        let mut req = request(13, 1, SLOW);
        req.want_accept = true;
        let accept = peer.call(&req).await;
        assert_eq!(msg_type(&accept), MessageType::Accept);
        assert_eq!(accept.request_id, 1);
        state.release(1);
        let reply = peer.recv().await;
        assert_eq!(msg_type(&reply), MessageType::Reply);
        // The poll after the reply was lost: stored reply again.
        req.attempt = 2;
        let replay = peer.call(&req).await;
        assert_eq!(replay, reply);
        // Idempotent want_accept requests are kept in the history too.
        let mut get = request(13, 2, GET);
        get.idempotent = true;
        get.want_accept = true;
        assert_eq!(msg_type(&peer.call(&get).await), MessageType::Accept);
        let r1 = peer.recv().await;
        get.attempt = 2;
        assert_eq!(peer.call(&get).await, r1);
        assert_eq!(state.runs(), 2);
        assert_eq!(server.stats().accepts, 2);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn explicit_ack_drops_the_entry_and_ack_up_to_raises_the_floor() {
    tokio::time::timeout(T, async {
        let (server, state) = serve(Server::builder()).await;
        let peer = Peer::new(server.local_addr()).await;
        for id in 1..=3 {
            let mut r = request(14, id, ADD);
            r.protocol = ExchangeProtocol::Rra as i32;
            assert_eq!(msg_type(&peer.call(&r).await), MessageType::Reply);
        }
        assert_eq!(server.stats().history_completed, 3);
        peer.send(&ack(14, 2, 0)).await;
        let s = wait_stats(&server, |s| s.acks == 1).await;
        assert_eq!(
            (s.history_completed, s.evicted_ack, s.unknown_acks),
            (2, 1, 0)
        );
        // The reply is gone, not the fact that 2 ran: a late copy of it,
        // above the floor, is dropped without running.
        assert_eq!(server.stats().history_acked, 1);
        let mut late2 = request(14, 2, ADD);
        late2.attempt = 1;
        peer.send(&late2).await;
        wait_stats(&server, |s| s.acked_dropped == 1).await;
        assert_eq!(state.runs(), 3);
        // A second ACK of the same id finds the marker.
        peer.send(&ack(14, 2, 0)).await;
        let s = wait_stats(&server, |s| s.acks == 2).await;
        assert_eq!((s.unknown_acks, s.evicted_ack), (0, 1));
        // Request 4 carries ack_up_to = 3: entries 1 and 3 and the marker
        // of 2 go, floor = 3.
        let mut r4 = request(14, 4, ADD);
        r4.ack_up_to = 3;
        assert_eq!(value(&peer.call(&r4).await), 4);
        let s = server.stats();
        assert_eq!(
            (s.history_completed, s.history_acked, s.evicted_ack),
            (1, 0, 3)
        );
        // A late duplicate of 1 is stale: dropped silently, not run.
        let mut late = request(14, 1, ADD);
        late.attempt = 2;
        peer.send(&late).await;
        peer.expect_silence(Duration::from_millis(100)).await;
        assert_eq!(server.stats().stale_dropped, 1);
        assert_eq!(state.runs(), 4);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn session_cap_evicts_oldest_and_a_late_retry_gets_outcome_unknown() {
    tokio::time::timeout(T, async {
        let history = HistoryConfig {
            max_per_session: 2,
            ..HistoryConfig::default()
        };
        let (server, state) = serve(Server::builder().history(history)).await;
        let peer = Peer::new(server.local_addr()).await;
        for id in 1..=4 {
            peer.call(&request(15, id, ADD)).await;
        }
        let s = server.stats();
        assert_eq!((s.history_completed, s.evicted_session_cap), (2, 2));
        let mut retry = request(15, 1, ADD);
        retry.attempt = 2;
        retry.incarnation = server.incarnation();
        let answer = peer.call(&retry).await;
        assert_eq!(msg_type(&answer), MessageType::Error);
        assert_eq!(code(&answer), Some(Code::Aborted));
        assert_eq!(
            answer.status.unwrap().message,
            "reply no longer in history; outcome unknown"
        );
        assert_eq!(state.runs(), 4);
        assert_eq!(server.stats().evicted_refused, 1);
        // Entry 4 is still there.
        let mut retry4 = request(15, 4, ADD);
        retry4.attempt = 2;
        assert_eq!(value(&peer.call(&retry4).await), 4);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn global_cap_evicts_oldest_across_sessions() {
    tokio::time::timeout(T, async {
        let history = HistoryConfig {
            max_entries: 3,
            ..HistoryConfig::default()
        };
        let (server, _state) = serve(Server::builder().history(history)).await;
        let peer = Peer::new(server.local_addr()).await;
        for session in 1..=5u64 {
            peer.call(&request(100 + session, 1, ADD)).await;
        }
        let s = server.stats();
        assert_eq!((s.history_completed, s.evicted_global_cap), (3, 2));
        let mut retry = request(101, 1, ADD);
        retry.attempt = 2;
        assert_eq!(code(&peer.call(&retry).await), Some(Code::Aborted));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn entries_older_than_the_ttl_are_swept() {
    tokio::time::timeout(T, async {
        let history = HistoryConfig {
            ttl: Duration::from_millis(500),
            sweep_interval: Some(Duration::from_millis(20)),
            ..HistoryConfig::default()
        };
        let (server, state) = serve(Server::builder().history(history)).await;
        let peer = Peer::new(server.local_addr()).await;
        peer.call(&request(16, 1, ADD)).await;
        // Stored, or (after a stall longer than the ttl) already swept.
        let s = server.stats();
        assert_eq!(s.history_completed as u64 + s.evicted_age, 1, "{s:?}");
        let s = wait_stats(&server, |s| s.evicted_age == 1).await;
        assert_eq!(s.history_completed, 0);
        let mut retry = request(16, 1, ADD);
        retry.attempt = 2;
        let answer = peer.call(&retry).await;
        assert_eq!(code(&answer), Some(Code::Aborted), "{answer:?}");
        assert_eq!(state.runs(), 1);
        // The empty session is forgotten after another idle ttl.
        let s = wait_stats(&server, |s| s.history_sessions == 0).await;
        assert_eq!(s.sessions_forgotten, 1);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn retransmission_to_another_incarnation_is_refused_without_running() {
    tokio::time::timeout(T, async {
        let (server, state) = serve(Server::builder()).await;
        let peer = Peer::new(server.local_addr()).await;
        let mut retry = request(17, 5, ADD);
        retry.attempt = 2;
        retry.incarnation = server.incarnation() ^ 0xFFFF;
        let answer = peer.call(&retry).await;
        assert_eq!(msg_type(&answer), MessageType::Error);
        let status = answer.status.unwrap();
        assert_eq!(Code::from_i32(status.code), Code::Aborted);
        assert_eq!(status.details_type, SERVER_RESTARTED);
        assert_eq!(status.message, "outcome unknown: server restarted");
        assert_eq!(state.runs(), 0);
        assert_eq!(server.stats().outcome_unknown, 1);
        // So is a first attempt naming another incarnation: the network may
        // have delivered it late, after it ran there.
        let mut first = request(17, 6, ADD);
        first.incarnation = server.incarnation() ^ 0xFFFF;
        let answer = peer.call(&first).await;
        assert_eq!(msg_type(&answer), MessageType::Error);
        assert_eq!(answer.status.unwrap().details_type, SERVER_RESTARTED);
        assert_eq!(state.runs(), 0);
        // A first attempt naming this incarnation, or none, is new work.
        let mut named = request(17, 7, ADD);
        named.incarnation = server.incarnation();
        assert_eq!(msg_type(&peer.call(&named).await), MessageType::Reply);
        assert_eq!(
            msg_type(&peer.call(&request(17, 8, ADD)).await),
            MessageType::Reply
        );
        // An idempotent retransmission may run again anywhere.
        let mut get = request(17, 9, GET);
        get.idempotent = true;
        get.attempt = 3;
        get.incarnation = 42;
        assert_eq!(msg_type(&peer.call(&get).await), MessageType::Reply);
        assert_eq!(state.runs(), 3);
        assert_eq!(server.stats().outcome_unknown, 2);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn unknown_service_or_method_gets_unimplemented() {
    tokio::time::timeout(T, async {
        let (server, state) = serve(Server::builder()).await;
        let peer = Peer::new(server.local_addr()).await;
        let mut r = request(18, 1, ADD);
        r.service = "no.such.Service".into();
        let answer = peer.call(&r).await;
        assert_eq!(msg_type(&answer), MessageType::Error);
        assert_eq!(code(&answer), Some(Code::Unimplemented));
        assert!(answer.status.unwrap().message.contains("no.such.Service"));
        let answer = peer.call(&request(18, 2, 999)).await;
        assert_eq!(code(&answer), Some(Code::Unimplemented));
        assert!(answer.status.unwrap().message.contains(SERVICE));
        assert_eq!(state.runs(), 0);
        let s = server.stats();
        assert_eq!((s.unimplemented, s.history_len), (2, 0));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn oversized_reply_becomes_resource_exhausted() {
    tokio::time::timeout(T, async {
        let (server, _state) = serve(Server::builder().max_datagram(2_000)).await;
        let peer = Peer::new(server.local_addr()).await;
        // A 1,900-byte reply to a small request needs a verified address.
        let cookie = peer.cookie(19).await;
        let mut r = request(19, 1, BIG);
        r.cookie = cookie;
        r.payload = 1_900u32.to_be_bytes().to_vec().into();
        let ok = peer.call(&r).await;
        assert_eq!(ok.payload.len(), 1_900);
        let mut r = request(19, 2, BIG);
        r.cookie = cookie;
        r.payload = 5_000u32.to_be_bytes().to_vec().into();
        let answer = peer.call(&r).await;
        assert_eq!(msg_type(&answer), MessageType::Reply);
        assert!(answer.payload.is_empty());
        let status = answer.status.unwrap();
        assert_eq!(Code::from_i32(status.code), Code::ResourceExhausted);
        assert!(
            status.message.starts_with("reply of 50"),
            "size named: {}",
            status.message
        );
        assert!(
            status.message.ends_with("exceeds the limit of 2000 bytes"),
            "{}",
            status.message
        );
        assert_eq!(server.stats().too_large_replies, 1);
        // A datagram over max_datagram is dropped and counted.
        let mut huge = request(19, 3, ECHO);
        huge.payload = vec![1u8; 3_000].into();
        peer.send(&huge).await;
        wait_stats(&server, |s| s.too_large_requests == 1).await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn deadlines_travel_to_the_handler_and_expired_work_does_not_run() {
    tokio::time::timeout(T, async {
        // One handler slot, held by a slow call, so that the next waits.
        let (server, state) = serve(Server::builder().max_concurrent(1)).await;
        let peer = Peer::new(server.local_addr()).await;
        let before = Instant::now();
        let mut echo = request(20, 1, ECHO);
        echo.deadline_us = 5_000_000;
        peer.call(&echo).await;
        let ctx = state.contexts.lock().unwrap().pop().unwrap();
        let deadline = ctx.deadline.unwrap();
        assert!(
            deadline >= before + Duration::from_secs(5)
                && deadline <= Instant::now() + Duration::from_secs(5)
        );
        assert_eq!(ctx.transport, TransportKind::Udp);
        assert_eq!((ctx.session_id, ctx.request_id, ctx.attempt), (20, 1, 1));
        assert_eq!(ctx.peer, Some(peer.socket.local_addr().unwrap()));

        peer.send(&request(20, 2, SLOW)).await;
        wait_stats(&server, |s| s.executions == 2).await;
        let mut late = request(20, 3, ADD);
        late.deadline_us = 20_000;
        peer.send(&late).await;
        // Once the server has taken the request (queued behind Slow), its
        // deadline is at most 20 ms away: wait past it, then free the slot.
        wait_stats(&server, |s| s.requests == 3).await;
        let taken = Instant::now();
        tokio::time::sleep_until((taken + Duration::from_millis(21)).into()).await;
        assert_eq!(server.stats().executions, 2, "Add is still waiting");
        state.release(1);
        let a = peer.recv().await;
        let b = peer.recv().await;
        let expired = if a.request_id == 3 { a } else { b };
        assert_eq!(msg_type(&expired), MessageType::Error);
        assert_eq!(code(&expired), Some(Code::DeadlineExceeded));
        assert_eq!(
            state.counter.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "Add did not run"
        );
        // Stored as the outcome: a retry gets the same answer, still not run.
        late.attempt = 2;
        assert_eq!(peer.call(&late).await, expired);
        assert_eq!(server.stats().deadline_exceeded, 1);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn ping_gets_pong_with_incarnation() {
    tokio::time::timeout(T, async {
        let (server, _state) = serve(Server::builder().incarnation(0xABCD)).await;
        assert_eq!(server.incarnation(), 0xABCD);
        let peer = Peer::new(server.local_addr()).await;
        let ping = Envelope {
            version: VERSION,
            r#type: MessageType::Ping as i32,
            session_id: 21,
            request_id: 9,
            ..Envelope::default()
        };
        let pong = peer.call(&ping).await;
        assert_eq!(msg_type(&pong), MessageType::Pong);
        assert_eq!(
            (pong.incarnation, pong.session_id, pong.request_id),
            (0xABCD, 21, 9)
        );
        assert_eq!(server.stats().pings, 1);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn one_way_runs_once_and_never_answers() {
    tokio::time::timeout(T, async {
        let (server, state) = serve(Server::builder()).await;
        let peer = Peer::new(server.local_addr()).await;
        let mut r = request(22, 1, ADD);
        r.protocol = ExchangeProtocol::R as i32;
        peer.send(&r).await;
        peer.send(&r).await;
        wait_stats(&server, |s| s.requests == 2).await;
        peer.expect_silence(Duration::from_millis(100)).await;
        assert_eq!(state.runs(), 1);
        let s = server.stats();
        assert_eq!((s.executions, s.duplicates_dropped, s.replies), (1, 1, 0));
        // Unknown method over R: counted, still silent.
        let mut bad = request(22, 2, 999);
        bad.protocol = ExchangeProtocol::R as i32;
        peer.send(&bad).await;
        wait_stats(&server, |s| s.unimplemented == 1).await;
        peer.expect_silence(Duration::from_millis(50)).await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn idempotent_sync_bypasses_the_history() {
    tokio::time::timeout(T, async {
        let (server, state) = serve(Server::builder()).await;
        let peer = Peer::new(server.local_addr()).await;
        let mut get = request(23, 1, GET);
        get.idempotent = true;
        peer.call(&get).await;
        get.attempt = 2;
        peer.call(&get).await;
        assert_eq!(state.runs(), 2, "at-least-once: run again");
        let s = server.stats();
        assert_eq!((s.history_len, s.duplicates_replayed), (0, 0));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn handler_errors_and_panics_become_replies_with_status() {
    tokio::time::timeout(T, async {
        let (server, _state) = serve(Server::builder()).await;
        let peer = Peer::new(server.local_addr()).await;
        let fail = peer.call(&request(24, 1, FAIL)).await;
        assert_eq!(msg_type(&fail), MessageType::Reply);
        assert_eq!(code(&fail), Some(Code::FailedPrecondition));
        let sync_panic = peer.call(&request(24, 2, PANIC)).await;
        assert_eq!(code(&sync_panic), Some(Code::Internal));
        let mut later = request(24, 3, PANIC);
        later.payload = vec![1].into();
        let async_panic = peer.call(&later).await;
        assert_eq!(code(&async_panic), Some(Code::Internal));
        assert_eq!(server.stats().handler_panics, 2);
        // Still serving.
        assert_eq!(value(&peer.call(&request(24, 4, ADD)).await), 1);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn beyond_max_pending_requests_are_refused_and_not_run() {
    tokio::time::timeout(T, async {
        let (server, state) = serve(Server::builder().max_concurrent(1).max_pending(1)).await;
        let peer = Peer::new(server.local_addr()).await;
        peer.send(&request(25, 1, SLOW)).await; // runs
        peer.send(&request(25, 2, SLOW)).await; // waits
        wait_stats(&server, |s| s.requests == 2).await;
        let refused = peer.call(&request(25, 3, ADD)).await;
        assert_eq!(refused.request_id, 3);
        assert_eq!(code(&refused), Some(Code::ResourceExhausted));
        assert_eq!(server.stats().overloaded, 1);
        state.release(2);
        let mut got = vec![peer.recv().await.request_id, peer.recv().await.request_id];
        got.sort_unstable();
        assert_eq!(got, vec![1, 2]);
        // The refusal is the request's answer: a copy arriving later gets
        // it again and never runs (its caller may have been told it did not).
        let mut retry = request(25, 3, ADD);
        retry.attempt = 2;
        let again = peer.call(&retry).await;
        assert_eq!(code(&again), Some(Code::ResourceExhausted));
        assert_eq!(server.stats().duplicates_replayed, 1);
        assert_eq!(state.runs(), 2);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn several_services_are_routed_by_full_name() {
    use rpc_core::server::ServerError;
    tokio::time::timeout(T, async {
        let dup = Server::builder()
            .add_service(TestService::default())
            .add_service(TestService::default())
            .serve_udp("127.0.0.1:0")
            .await;
        assert!(matches!(dup, Err(ServerError::DuplicateService(ref n)) if n == SERVICE));
        let bad = Server::builder()
            .max_concurrent(0)
            .serve_udp("127.0.0.1:0")
            .await;
        assert!(matches!(bad, Err(ServerError::InvalidConfig(_))));

        let (server, state) = serve(Server::builder().add_service(Other)).await;
        let peer = Peer::new(server.local_addr()).await;
        let mut r = request(26, 1, ADD);
        r.service = "test.v1.Other".into();
        assert_eq!(&peer.call(&r).await.payload[..], b"other");
        assert_eq!(value(&peer.call(&request(26, 2, ADD)).await), 1);
        assert_eq!(state.runs(), 1);
    })
    .await
    .unwrap();
}

#[derive(Debug)]
struct Other;

static OTHER_METHODS: [rpc_core::MethodInfo; 1] = [rpc_core::MethodInfo {
    name: "Add",
    id: ADD,
    request_type: "test.v1.Raw",
    response_type: "test.v1.Raw",
    raises_type: "",
    oneway: false,
    idempotent: false,
    protocol: rpc_core::Protocol::RR,
    style: rpc_core::Style::Sync,
    timeout_ms: 0,
    retries: None,
}];

static OTHER: rpc_core::ServiceInfo = rpc_core::ServiceInfo {
    package: "test.v1",
    name: "Other",
    full_name: "test.v1.Other",
    methods: &OTHER_METHODS,
};

impl rpc_core::Service for Other {
    fn info(&self) -> &'static rpc_core::ServiceInfo {
        &OTHER
    }
    fn call(
        &self,
        _method_id: u32,
        _ctx: rpc_core::CallContext,
        _request: bytes::Bytes,
    ) -> futures::future::BoxFuture<'static, Result<bytes::Bytes, rpc_core::Status>> {
        Box::pin(async { Ok(bytes::Bytes::from_static(b"other")) })
    }
}

#[tokio::test]
async fn a_second_door_shares_the_history() {
    tokio::time::timeout(T, async {
        let (server, state) = serve(Server::builder()).await;
        let second = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let second_addr = server.serve_socket(second).await.unwrap();
        assert_ne!(second_addr, server.local_addr());
        let mut a = Peer::new(server.local_addr()).await;
        let first = a.call(&request(40, 1, ADD)).await;
        // The same session (from the same socket: a session belongs to its
        // peer's address) retries through the other door.
        a.server = second_addr;
        let mut retry = request(40, 1, ADD);
        retry.attempt = 2;
        assert_eq!(a.call(&retry).await, first);
        assert_eq!(state.runs(), 1);
        // Another socket naming the session is refused, on either door.
        let b = Peer::new(second_addr).await;
        retry.attempt = 3;
        assert_eq!(code(&b.call(&retry).await), Some(Code::PermissionDenied));
        assert_eq!(server.stats().foreign_refused, 1);
        server.shutdown(Duration::from_secs(1)).await.unwrap();
        assert!(
            tokio::net::UdpSocket::bind(second_addr).await.is_ok(),
            "both doors closed"
        );
    })
    .await
    .unwrap();
}
