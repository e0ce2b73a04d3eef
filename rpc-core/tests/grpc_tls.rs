//! gRPC over TLS (feature `tls`): our gRPC channel to a TLS gRPC door,
//! with the tracked protocol (`rpc-call`, history) and the client's
//! verified identity reaching the handler; mutual TLS refusing clients,
//! reported as UNAUTHENTICATED and "not run".
#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod server_support;
mod tcp_support;

use rpc_core::call::{CallOptions, Channel, Invocation, Outcome};
use rpc_core::client::{TcpChannel, TcpConfig};
use rpc_core::grpc::server::GrpcServerConfig;
use rpc_core::grpc::GrpcChannel;
use rpc_core::server::{AuthPolicy, Server, ServerHandle};
use rpc_core::tls::{TlsClientConfig, TlsServerConfig};
use rpc_core::{AltName, Code, Error, Protocol, Status, Style, TransportKind};
use server_support::{State, TestService, ADD, ECHO, INFO};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcp_support::certs::Ca;
use tcp_support::{be, bounded, call, eventually, u64_of};

const LIMIT: Duration = Duration::from_secs(60);

/// A gRPC door over mutual TLS (client certificates from `ca`) under the
/// mutual-TLS policy.
async fn mtls_server(ca: &Ca) -> (ServerHandle, Arc<State>) {
    let (cert, key) = ca.issue("localhost", false);
    let tls = TlsServerConfig::from_pem(cert.as_bytes(), key.as_bytes())
        .unwrap()
        .client_auth(ca.pem().as_bytes())
        .unwrap();
    let svc = TestService::default();
    let state = Arc::clone(&svc.state);
    let server = Server::builder()
        .auth(AuthPolicy::MutualTls)
        .add_service(svc)
        .serve_grpc_with("127.0.0.1:0", GrpcServerConfig::default().with_tls(tls))
        .await
        .unwrap();
    (server, state)
}

/// A client trusting `ca` that presents a certificate for `name` from
/// `issuer`.
fn client(ca: &Ca, issuer: &Ca, name: &str) -> TlsClientConfig {
    let (cert, key) = issuer.issue(name, true);
    TlsClientConfig::new("localhost", ca.pem().as_bytes())
        .unwrap()
        .identity(cert.as_bytes(), key.as_bytes())
        .unwrap()
}

/// What a caller of a generated stub would get: the channel's answer
/// status, or its error.
fn failure(r: Result<Result<bytes::Bytes, Status>, Error>) -> Error {
    match r {
        Err(e) => e,
        Ok(Err(status)) => Error::Status(status),
        Ok(Ok(reply)) => panic!("the call succeeded: {reply:?}"),
    }
}

#[tokio::test]
async fn grpc_over_tls_carries_the_tracked_protocol_and_the_client_identity() {
    bounded(LIMIT, async {
        let ca = Ca::new("test ca");
        let (server, state) = mtls_server(&ca).await;
        let uri = format!("https://{}", server.local_addr());
        let ch = GrpcChannel::connect_tls(&uri, client(&ca, &ca, "client-1"))
            .await
            .unwrap();
        let deadline = Some(Duration::from_secs(20));
        let echoed = call(&ch, ECHO, &b"hello"[..], Protocol::RR, deadline)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&echoed[..], b"hello");
        let ctx = state.contexts.lock().unwrap().pop().unwrap();
        assert_eq!(ctx.transport, TransportKind::GrpcTls);
        assert!(ctx.transport.is_tls());
        assert_eq!(ctx.session_id, ch.session_id(), "a tracked call");
        let id = ctx.identity.expect("the verified client certificate");
        assert_eq!(id.common_name.as_deref(), Some("client-1"));
        assert_eq!(id.name(), "client-1");
        assert!(id.subject.contains("CN=client-1"), "{}", id.subject);
        assert_eq!(id.alt_names, vec![AltName::Dns("client-1".into())]);
        assert!(!id.certificate.is_empty());

        // A deferred call: ACCEPT first, then the result collected with
        // the same request id, answered through the reply history.
        let invocation = Invocation {
            service: &INFO,
            method: INFO.method(ADD).unwrap(),
            instance: String::new(),
            payload: be(5),
            metadata: Default::default(),
            options: CallOptions {
                protocol: Protocol::RR,
                style: Style::Deferred,
                deadline: Some(Instant::now() + Duration::from_secs(20)),
                retries: None,
                idempotent: false,
            },
        };
        let Outcome::Accepted(result) = ch.invoke(invocation).await.unwrap() else {
            panic!("a deferred call to our server is accepted first");
        };
        assert_eq!(u64_of(&result.await.unwrap().unwrap().payload), 5);
        let s = server.stats();
        assert_eq!(s.executions, 2, "{s:#?}");
        assert_eq!(s.accepts, 1, "{s:#?}");
        assert!(
            s.in_progress_hits + s.duplicates_replayed >= 1,
            "the result came through the history: {s:#?}"
        );
        assert_eq!(state.runs(), 2);
        assert_eq!(server.grpc_stats().handshake_failures, 0);
        server.shutdown(Duration::from_secs(5)).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_refused_client_is_unauthenticated_and_nothing_runs() {
    bounded(LIMIT, async {
        let ca = Ca::new("test ca");
        let (server, state) = mtls_server(&ca).await;
        let uri = format!("https://{}", server.local_addr());
        // Deadlines far beyond the test's limit: a refusal that waited for
        // the deadline would fail the test, and would not be
        // UNAUTHENTICATED.
        let deadline = Some(Duration::from_secs(600));

        let other = Ca::new("other ca");
        let anonymous = TlsClientConfig::new("localhost", ca.pem().as_bytes()).unwrap();
        let cases = [
            ("no client certificate", anonymous),
            (
                "a certificate from another ca",
                client(&ca, &other, "intruder"),
            ),
            (
                "a client that does not trust the server",
                client(&other, &ca, "client-1"),
            ),
        ];
        for (case, tls) in cases {
            let ch = GrpcChannel::lazy_tls(&uri, tls).unwrap();
            let e = failure(call(&ch, ADD, be(1), Protocol::RR, deadline).await);
            assert_eq!(e.code(), Code::Unauthenticated, "{case}: {e:?}");
            assert!(!e.may_have_run(), "{case}: {e:?}");
        }
        assert_eq!(state.runs(), 0);
        assert_eq!(server.stats().executions, 0);
        assert!(
            eventually(Duration::from_secs(30), || server
                .grpc_stats()
                .handshake_failures
                >= 2)
            .await
        );

        // Our TCP client speaks ALPN rpc.v1, which the gRPC door does not:
        // refused at the TLS layer too.
        let tcp = TcpChannel::connect_tls(
            server.local_addr(),
            client(&ca, &ca, "client-1"),
            TcpConfig::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(tcp.code(), Code::Unauthenticated, "{tcp:?}");

        // A certificate from the CA: served.
        let ch = GrpcChannel::lazy_tls(&uri, client(&ca, &ca, "client-1")).unwrap();
        let r = call(&ch, ADD, be(7), Protocol::RR, deadline).await.unwrap();
        assert_eq!(u64_of(&r.unwrap()), 7);
        assert_eq!(state.runs(), 1);
        server.shutdown(Duration::from_secs(5)).await.unwrap();
    })
    .await;
}
