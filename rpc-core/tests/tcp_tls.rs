//! TLS over the TCP transport (feature `tls`): a round trip, mutual TLS
//! refusing clients without a certificate signed by the right CA (at once,
//! as UNAUTHENTICATED, not run), the handler seeing the transport and the
//! client's identity, and what `requires_client_auth` says of an installed
//! rustls configuration.
#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used)]

mod server_support;
mod tcp_support;

use rpc_core::client::{TcpChannel, TcpConfig};
use rpc_core::server::{AuthPolicy, Server, TcpServerConfig};
use rpc_core::tls::{TlsClientConfig, TlsError, TlsServerConfig};
use rpc_core::{AltName, Code, Error, Protocol, Status, TransportKind};
use server_support::{TestService, ADD, ECHO};
use std::sync::Arc;
use std::time::Duration;
use tcp_support::certs::Ca;
use tcp_support::{be, bounded, call, eventually, serve_tcp, u64_of};

const LIMIT: Duration = Duration::from_secs(60);

/// What a caller of a generated stub would get: the channel's answer
/// status, or its error.
fn failure(r: Result<Result<bytes::Bytes, Status>, Error>) -> Error {
    match r {
        Err(e) => e,
        Ok(Err(status)) => Error::Status(status),
        Ok(Ok(reply)) => panic!("the call succeeded: {reply:?}"),
    }
}

/// Asserts that `e` is a refusal at the TLS layer: UNAUTHENTICATED, the
/// request did not run.
fn assert_refused(e: &Error, case: &str) {
    assert_eq!(e.code(), Code::Unauthenticated, "{case}: {e:?}");
    assert!(!e.may_have_run(), "{case}: {e:?}");
}

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
        assert_refused(&e, "untrusted server");
        // Nor one that expects another name.
        let misnamed = TlsClientConfig::new("example.com", ca.pem().as_bytes()).unwrap();
        let e = TcpChannel::connect_tls(server.local_addr(), misnamed, quick())
            .await
            .unwrap_err();
        assert_refused(&e, "another name");
        assert!(
            eventually(Duration::from_secs(30), || server
                .tcp_stats()
                .handshake_failures
                >= 2)
            .await
        );
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

        // Deadlines far beyond the test's limit: a refusal that waited for
        // the deadline would fail the test, and would not be
        // UNAUTHENTICATED.
        let deadline = Some(Duration::from_secs(600));

        // No client certificate: refused (with TLS 1.3 the server's alert
        // comes on the client's first read, after it wrote its request),
        // reported as UNAUTHENTICATED, nothing runs.
        let anonymous = TlsClientConfig::new("localhost", ca.pem().as_bytes()).unwrap();
        let ch = TcpChannel::connect_tls_lazy(addr, anonymous, quick());
        let e = failure(call(&ch, ADD, be(1), Protocol::RR, deadline).await);
        assert_refused(&e, "no client certificate");
        // A call waiting for a connection after that is refused too.
        let e = failure(call(&ch, ADD, be(1), Protocol::RR, deadline).await);
        assert_refused(&e, "no client certificate, again");
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
        // (With TLS 1.3 the client finishes its side of the handshake, so
        // `connect_tls` returns; the refusal comes with the first call.)
        let ch = TcpChannel::connect_tls(addr, intruder, quick())
            .await
            .unwrap();
        let e = failure(call(&ch, ADD, be(1), Protocol::RRA, deadline).await);
        assert_refused(&e, "another ca");
        assert_eq!(state.runs(), 0);
        assert_eq!(server.stats().requests, 0);

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

#[tokio::test]
async fn the_handler_sees_the_transport_and_the_client_identity() {
    bounded(LIMIT, async {
        let ca = Ca::new("test ca");
        let (cert, key) = ca.issue("localhost", false);
        let tls = TlsServerConfig::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        let mtls = tls.clone().client_auth(ca.pem().as_bytes()).unwrap();
        let svc = TestService::default();
        let state = Arc::clone(&svc.state);
        // The default policy admits every door: mutual TLS, TLS, plain.
        let server = Server::builder()
            .add_service(svc)
            .serve_tcp_with("127.0.0.1:0", TcpServerConfig::default().with_tls(mtls))
            .await
            .unwrap();
        let tls_addr = server
            .serve_tcp_with("127.0.0.1:0", TcpServerConfig::default().with_tls(tls))
            .await
            .unwrap();
        let plain_addr = server.serve_tcp("127.0.0.1:0").await.unwrap();
        let (c, k) = ca.issue("client-1", true);
        let with_cert = TlsClientConfig::new("localhost", ca.pem().as_bytes())
            .unwrap()
            .identity(c.as_bytes(), k.as_bytes())
            .unwrap();
        let without = TlsClientConfig::new("localhost", ca.pem().as_bytes()).unwrap();
        let deadline = Some(Duration::from_secs(20));
        let channels = [
            TcpChannel::connect_tls(server.local_addr(), with_cert, quick())
                .await
                .unwrap(),
            TcpChannel::connect_tls(tls_addr, without, quick())
                .await
                .unwrap(),
            TcpChannel::connect_with(plain_addr, quick()).await.unwrap(),
        ];
        for ch in &channels {
            let r = call(ch, ECHO, &b"who"[..], Protocol::RR, deadline).await;
            assert_eq!(&r.unwrap().unwrap()[..], b"who");
        }
        let contexts = std::mem::take(&mut *state.contexts.lock().unwrap());
        let seen: Vec<_> = contexts
            .iter()
            .map(|ctx| (ctx.transport, ctx.identity.as_ref().map(|i| i.name())))
            .collect();
        assert_eq!(
            seen,
            vec![
                (TransportKind::Tls, Some("client-1")),
                (TransportKind::Tls, None),
                (TransportKind::Tcp, None),
            ]
        );
        let id = contexts[0].identity.as_ref().unwrap();
        assert_eq!(id.common_name.as_deref(), Some("client-1"));
        assert_eq!(id.alt_names, vec![AltName::Dns("client-1".into())]);
        assert_eq!(id.dns_names().collect::<Vec<_>>(), vec!["client-1"]);
        // The calls of one connection share the identity made for it.
        let again = call(&channels[0], ECHO, &b"again"[..], Protocol::RR, deadline).await;
        again.unwrap().unwrap();
        let next = state.contexts.lock().unwrap().pop().unwrap();
        assert!(Arc::ptr_eq(
            next.identity.as_ref().unwrap(),
            contexts[0].identity.as_ref().unwrap()
        ));
    })
    .await;
}

#[tokio::test]
async fn the_tls_door_names_its_protocol_and_takes_clients_that_name_none() {
    use prost::Message;
    use rpc_core::envelope::{Envelope, MessageType, VERSION};
    use rustls_pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;

    bounded(LIMIT, async {
        let ca = Ca::new("test ca");
        let (cert, key) = ca.issue("localhost", false);
        let tls = TlsServerConfig::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        let (server, _) = serve_tcp(TcpServerConfig::default().with_tls(tls)).await;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls_pki_types::CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap())
            .unwrap();
        let connect = |alpn: Vec<Vec<u8>>| {
            let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
            config.alpn_protocols = alpn;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let addr = server.local_addr();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
                connector.connect(name, tcp).await
            }
        };
        // A client that offers our protocol gets it.
        let ours = connect(vec![b"rpc.v1".to_vec()]).await.unwrap();
        assert_eq!(ours.get_ref().1.alpn_protocol(), Some(&b"rpc.v1"[..]));
        // A client that offers none is served: a PING gets its PONG.
        let mut none = connect(Vec::new()).await.unwrap();
        assert_eq!(none.get_ref().1.alpn_protocol(), None);
        let ping = Envelope {
            version: VERSION,
            r#type: MessageType::Ping as i32,
            request_id: 1,
            session_id: 99,
            ..Envelope::default()
        }
        .encode_to_vec();
        none.write_all(&u32::try_from(ping.len()).unwrap().to_be_bytes())
            .await
            .unwrap();
        none.write_all(&ping).await.unwrap();
        let len = none.read_u32().await.unwrap();
        let mut frame = vec![0u8; usize::try_from(len).unwrap()];
        none.read_exact(&mut frame).await.unwrap();
        let pong = Envelope::decode(frame.as_slice()).unwrap();
        assert_eq!(pong.r#type, MessageType::Pong as i32);
        // One that offers only another protocol (HTTP/2) is refused.
        assert!(connect(vec![b"h2".to_vec()]).await.is_err());
    })
    .await;
}

#[test]
fn requires_client_auth_follows_the_installed_rustls_configuration() {
    let ca = Ca::new("test ca");
    let (cert, key) = ca.issue("localhost", false);
    let plain = TlsServerConfig::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let mtls = plain.clone().client_auth(ca.pem().as_bytes()).unwrap();
    assert!(!plain.requires_client_auth());
    assert!(mtls.requires_client_auth());
    // A configuration without client authentication installed over a
    // mutual-TLS one: no longer required.
    let replaced = mtls.clone().with_rustls(Arc::clone(plain.rustls()));
    assert!(!replaced.requires_client_auth());
    // And the other way round.
    let replaced = plain.clone().with_rustls(Arc::clone(mtls.rustls()));
    assert!(replaced.requires_client_auth());
    // A tuned copy of the mutual-TLS configuration still requires it.
    let mut tuned = (**mtls.rustls()).clone();
    tuned.alpn_protocols = vec![b"rpc.v1".to_vec()];
    tuned.max_fragment_size = Some(4096);
    assert!(mtls
        .clone()
        .with_rustls(Arc::new(tuned))
        .requires_client_auth());
    // What the mutual-TLS policy makes of it.
    let door = TcpServerConfig::default().with_tls(mtls.with_rustls(Arc::clone(plain.rustls())));
    assert_eq!(
        AuthPolicy::MutualTls.check(door.door_kind()),
        Err(rpc_core::server::Shortfall::NoClientAuth)
    );
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
