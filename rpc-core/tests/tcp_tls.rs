//! TLS over the TCP transport (feature `tls`): a round trip, and mutual
//! TLS refusing clients without a certificate signed by the right CA.
#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used)]

mod server_support;
mod tcp_support;

use rpc_core::client::{TcpChannel, TcpConfig};
use rpc_core::server::TcpServerConfig;
use rpc_core::tls::{TlsClientConfig, TlsError, TlsServerConfig};
use rpc_core::{Error, Protocol};
use server_support::{ADD, ECHO};
use std::time::Duration;
use tcp_support::certs::Ca;
use tcp_support::{be, bounded, call, eventually, serve_tcp, u64_of};

const LIMIT: Duration = Duration::from_secs(60);

fn quick() -> TcpConfig {
    let mut c = TcpConfig::default();
    c.channel.default_retries = 2;
    c
}

#[tokio::test]
async fn tls_round_trip() {
    bounded(LIMIT, async {
        let ca = Ca::new("test ca");
        let (cert, key) = ca.issue("localhost", false);
        let tls = TlsServerConfig::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        assert!(!tls.requires_client_auth());
        let (server, state) = serve_tcp(TcpServerConfig::default().with_tls(tls)).await;
        let client_tls = TlsClientConfig::new("localhost", ca.pem().as_bytes()).unwrap();
        let ch = TcpChannel::connect_tls(server.local_addr(), client_tls, quick())
            .await
            .unwrap();
        let calls =
            (0..50).map(|_| call(&ch, ADD, be(1), Protocol::RRA, Some(Duration::from_secs(5))));
        for r in futures::future::join_all(calls).await {
            r.unwrap().unwrap();
        }
        assert_eq!(state.runs(), 50);
        let big = vec![3u8; 300 * 1024];
        let r = call(
            &ch,
            ECHO,
            big.clone(),
            Protocol::RR,
            Some(Duration::from_secs(5)),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(r, big);
        // A client that does not trust the server's CA is refused.
        let other = Ca::new("other ca");
        let wrong = TlsClientConfig::new("localhost", other.pem().as_bytes()).unwrap();
        let e = TcpChannel::connect_tls(server.local_addr(), wrong, quick())
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Unreachable {
                    may_have_run: false,
                    ..
                }
            ),
            "{e:?}"
        );
        // Nor one that expects another name.
        let misnamed = TlsClientConfig::new("example.com", ca.pem().as_bytes()).unwrap();
        assert!(
            TcpChannel::connect_tls(server.local_addr(), misnamed, quick())
                .await
                .is_err()
        );
        assert!(server.tcp_stats().handshake_failures >= 2);
        // A plain TCP client cannot talk to a TLS door.
        let plain = TcpChannel::connect_with(server.local_addr(), quick())
            .await
            .unwrap();
        let r = call(
            &plain,
            ADD,
            be(1),
            Protocol::RR,
            Some(Duration::from_millis(500)),
        )
        .await;
        assert!(r.is_err(), "{r:?}");
        assert_eq!(state.runs(), 51);
    })
    .await;
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    bounded(LIMIT, async {
        let ca = Ca::new("test ca");
        let (cert, key) = ca.issue("localhost", false);
        let tls = TlsServerConfig::from_pem(cert.as_bytes(), key.as_bytes())
            .unwrap()
            .client_auth(ca.pem().as_bytes())
            .unwrap();
        assert!(tls.requires_client_auth());
        let (server, state) = serve_tcp(TcpServerConfig::default().with_tls(tls)).await;
        let addr = server.local_addr();

        // No client certificate: refused (the handshake fails on the
        // server; the client sees its connection closed), nothing runs.
        let anonymous = TlsClientConfig::new("localhost", ca.pem().as_bytes()).unwrap();
        let ch = TcpChannel::connect_tls_lazy(addr, anonymous, quick());
        let r = call(&ch, ADD, be(1), Protocol::RR, Some(Duration::from_secs(2))).await;
        assert!(r.is_err(), "{r:?}");
        assert!(
            eventually(Duration::from_secs(30), || server
                .tcp_stats()
                .handshake_failures
                >= 1)
            .await
        );

        // A certificate from another CA: refused.
        let other = Ca::new("other ca");
        let (c2, k2) = other.issue("intruder", true);
        let intruder = TlsClientConfig::new("localhost", ca.pem().as_bytes())
            .unwrap()
            .identity(c2.as_bytes(), k2.as_bytes())
            .unwrap();
        let ch = TcpChannel::connect_tls_lazy(addr, intruder, quick());
        let r = call(&ch, ADD, be(1), Protocol::RR, Some(Duration::from_secs(2))).await;
        assert!(r.is_err(), "{r:?}");
        assert_eq!(state.runs(), 0);

        // A certificate signed by the CA: works.
        let (c3, k3) = ca.issue("client-1", true);
        let good = TlsClientConfig::new("localhost", ca.pem().as_bytes())
            .unwrap()
            .identity(c3.as_bytes(), k3.as_bytes())
            .unwrap();
        let ch = TcpChannel::connect_tls(addr, good, quick()).await.unwrap();
        let r = call(&ch, ADD, be(7), Protocol::RRA, Some(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(u64_of(&r.unwrap()), 7);
        assert_eq!(state.runs(), 1);
    })
    .await;
}

#[test]
fn bad_pem_is_a_typed_error() {
    assert!(matches!(
        TlsServerConfig::from_pem(b"nothing", b"nothing"),
        Err(TlsError::NoCertificate)
    ));
    let ca = Ca::new("ca");
    let (cert, _) = ca.issue("localhost", false);
    assert!(matches!(
        TlsServerConfig::from_pem(cert.as_bytes(), b""),
        Err(TlsError::NoKey)
    ));
    assert!(matches!(
        TlsClientConfig::new("not a name!", ca.pem().as_bytes()),
        Err(TlsError::ServerName(_))
    ));
    // A key that does not match the certificate.
    let (_, other_key) = ca.issue("x", false);
    assert!(TlsServerConfig::from_pem(cert.as_bytes(), other_key.as_bytes()).is_err());
}
