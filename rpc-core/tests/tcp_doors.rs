//! One server, several doors: UDP and TCP clients call the same engine
//! (same history, counters and incarnation).
#![allow(clippy::unwrap_used)]

mod server_support;
mod tcp_support;

use rpc_core::client::{TcpChannel, UdpChannel};
use rpc_core::server::Server;
use rpc_core::Protocol;
use server_support::{TestService, ADD, GET};
use std::sync::Arc;
use std::time::Duration;
use tcp_support::{be, bounded, call, eventually, u64_of};

#[tokio::test]
async fn udp_and_tcp_clients_share_one_server() {
    bounded(Duration::from_secs(20), async {
        let svc = TestService::default();
        let state = Arc::clone(&svc.state);
        let server = Server::builder()
            .add_service(svc)
            .serve_udp("127.0.0.1:0")
            .await
            .unwrap();
        let tcp_addr = server.serve_tcp("127.0.0.1:0").await.unwrap();
        assert_eq!(server.tcp_addrs(), vec![tcp_addr]);
        let udp = UdpChannel::connect(server.local_addr()).await.unwrap();
        let tcp = TcpChannel::connect(tcp_addr).await.unwrap();
        let deadline = Some(Duration::from_secs(5));
        let mut all = Vec::new();
        for i in 0..100u64 {
            // The last call of each session is RRA: its ACK empties the
            // history (an RR reply stays until the session's next request).
            let protocol = if i % 2 == 1 {
                Protocol::RRA
            } else {
                Protocol::RR
            };
            let (u, t) = tokio::join!(
                call(&udp, ADD, be(1), protocol, deadline),
                call(&tcp, ADD, be(1), protocol, deadline)
            );
            all.push(u64_of(&u.unwrap().unwrap()));
            all.push(u64_of(&t.unwrap().unwrap()));
        }
        all.sort_unstable();
        assert_eq!(
            all,
            (1..=200).collect::<Vec<_>>(),
            "one counter, every call once"
        );
        assert_eq!(state.runs(), 200);
        let s = server.stats();
        assert_eq!(
            s.executions, 200,
            "UDP copies may be retransmitted; none ran twice"
        );
        assert_eq!(
            udp.stats().incarnation,
            tcp.stats().incarnation,
            "the same engine answers both"
        );
        assert!(
            eventually(Duration::from_secs(30), || server.stats().history_len == 0).await,
            "{:?}",
            server.stats()
        );
        let v = call(&tcp, GET, vec![], Protocol::RR, deadline)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(u64_of(&v), 200);
        server.shutdown(Duration::from_secs(2)).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_tcp_server_can_also_serve_udp() {
    bounded(Duration::from_secs(20), async {
        let svc = TestService::default();
        let server = Server::builder()
            .add_service(svc)
            .serve_tcp("127.0.0.1:0")
            .await
            .unwrap();
        let udp_addr = server.serve_udp("127.0.0.1:0").await.unwrap();
        let tcp = TcpChannel::connect(server.local_addr()).await.unwrap();
        let udp = UdpChannel::connect(udp_addr).await.unwrap();
        let a = call(&tcp, ADD, be(2), Protocol::RR, None)
            .await
            .unwrap()
            .unwrap();
        let b = call(&udp, ADD, be(3), Protocol::RR, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((u64_of(&a), u64_of(&b)), (2, 5));
        assert_eq!(server.tcp_stats().connections_accepted, 1);
    })
    .await;
}
