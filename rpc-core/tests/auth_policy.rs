//! The server's authentication policy is enforced on every door: a door
//! that cannot meet it is refused when it is opened (on the builder or on
//! the running server), with the door and the reason in the error.
#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod server_support;
mod tcp_support;

use rpc_core::client::{TcpChannel, TcpConfig};
use rpc_core::grpc::server::GrpcServerConfig;
use rpc_core::server::{
    AuthPolicy, DoorKind, Server, ServerBuilder, ServerError, Shortfall, TcpServerConfig,
};
use rpc_core::tls::{TlsClientConfig, TlsServerConfig};
use rpc_core::Protocol;
use server_support::{TestService, ADD};
use std::time::Duration;
use tcp_support::certs::Ca;
use tcp_support::{be, bounded, call, u64_of};

const LIMIT: Duration = Duration::from_secs(60);

fn builder(policy: AuthPolicy) -> ServerBuilder {
    Server::builder()
        .auth(policy)
        .add_service(TestService::default())
}

/// Asserts that `r` is the refusal of `door` by `policy` for `reason`.
#[track_caller]
fn assert_refused<T: std::fmt::Debug>(
    r: Result<T, ServerError>,
    door: DoorKind,
    policy: AuthPolicy,
    reason: Shortfall,
) {
    match r {
        Err(ServerError::DoorRefused {
            door: d,
            policy: p,
            reason: why,
        }) => assert_eq!((d, p, why), (door, policy, reason)),
        other => panic!("expected {door} refused by {policy} ({reason}), got {other:?}"),
    }
}

#[tokio::test]
async fn every_door_that_cannot_meet_the_policy_is_refused() {
    bounded(LIMIT, async {
        let ca = Ca::new("test ca");
        let (cert, key) = ca.issue("localhost", false);
        let tls = TlsServerConfig::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        let mtls = tls.clone().client_auth(ca.pem().as_bytes()).unwrap();
        let tls_only = DoorKind::Tls { client_auth: false };
        let grpc_tls_only = DoorKind::GrpcTls { client_auth: false };

        for policy in [AuthPolicy::Tls, AuthPolicy::MutualTls] {
            use DoorKind::{Datagram, Grpc, Tcp};
            use Shortfall::NoTls;
            assert_refused(
                builder(policy).serve_udp("127.0.0.1:0").await,
                Datagram,
                policy,
                NoTls,
            );
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            assert_refused(
                builder(policy).serve_socket(socket).await,
                Datagram,
                policy,
                NoTls,
            );
            assert_refused(
                builder(policy).serve_tcp("127.0.0.1:0").await,
                Tcp,
                policy,
                NoTls,
            );
            assert_refused(
                builder(policy).serve_grpc("127.0.0.1:0").await,
                Grpc,
                policy,
                NoTls,
            );
        }
        // Mutual TLS: a TLS door must require client certificates.
        let policy = AuthPolicy::MutualTls;
        assert_refused(
            builder(policy)
                .serve_tcp_with(
                    "127.0.0.1:0",
                    TcpServerConfig::default().with_tls(tls.clone()),
                )
                .await,
            tls_only,
            policy,
            Shortfall::NoClientAuth,
        );
        assert_refused(
            builder(policy)
                .serve_grpc_with(
                    "127.0.0.1:0",
                    GrpcServerConfig::default().with_tls(tls.clone()),
                )
                .await,
            grpc_tls_only,
            policy,
            Shortfall::NoClientAuth,
        );

        // A server under mutual TLS refuses the same doors added later.
        let server = builder(policy)
            .serve_tcp_with(
                "127.0.0.1:0",
                TcpServerConfig::default().with_tls(mtls.clone()),
            )
            .await
            .unwrap();
        assert_eq!(server.auth_policy(), AuthPolicy::MutualTls);
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert_refused(
            server.serve_socket(socket).await,
            DoorKind::Datagram,
            policy,
            Shortfall::NoTls,
        );
        assert_refused(
            server.serve_tcp("127.0.0.1:0").await,
            DoorKind::Tcp,
            policy,
            Shortfall::NoTls,
        );
        assert_refused(
            server.serve_grpc("127.0.0.1:0").await,
            DoorKind::Grpc,
            policy,
            Shortfall::NoTls,
        );
        assert_refused(
            server
                .serve_tcp_with(
                    "127.0.0.1:0",
                    TcpServerConfig::default().with_tls(tls.clone()),
                )
                .await,
            tls_only,
            policy,
            Shortfall::NoClientAuth,
        );
        assert_refused(
            server
                .serve_grpc_with("127.0.0.1:0", GrpcServerConfig::default().with_tls(tls))
                .await,
            grpc_tls_only,
            policy,
            Shortfall::NoClientAuth,
        );
        // Doors that meet it open.
        server
            .serve_grpc_with(
                "127.0.0.1:0",
                GrpcServerConfig::default().with_tls(mtls.clone()),
            )
            .await
            .unwrap();
        let tls_addr = server
            .serve_tcp_with("127.0.0.1:0", TcpServerConfig::default().with_tls(mtls))
            .await
            .unwrap();
        // And they serve.
        let (c, k) = ca.issue("client-1", true);
        let client = TlsClientConfig::new("localhost", ca.pem().as_bytes())
            .unwrap()
            .identity(c.as_bytes(), k.as_bytes())
            .unwrap();
        let ch = TcpChannel::connect_tls(tls_addr, client, TcpConfig::default())
            .await
            .unwrap();
        let r = call(&ch, ADD, be(3), Protocol::RR, Some(Duration::from_secs(20))).await;
        assert_eq!(u64_of(&r.unwrap().unwrap()), 3);
        server.shutdown(Duration::from_secs(5)).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn the_tls_policy_admits_tls_doors_without_client_certificates() {
    bounded(LIMIT, async {
        let ca = Ca::new("test ca");
        let (cert, key) = ca.issue("localhost", false);
        let tls = TlsServerConfig::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        let server = builder(AuthPolicy::Tls)
            .serve_grpc_with("127.0.0.1:0", GrpcServerConfig::default().with_tls(tls.clone()))
            .await
            .unwrap();
        server
            .serve_tcp_with("127.0.0.1:0", TcpServerConfig::default().with_tls(tls))
            .await
            .unwrap();
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let e = server.serve_socket(socket).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "datagram (udp) door refused: the server's authentication policy is tls, and it does not use tls"
        );
        server.shutdown(Duration::from_secs(5)).await.unwrap();
    })
    .await;
}
