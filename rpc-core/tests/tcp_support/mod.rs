//! Shared by the `tcp_*` tests: raw invocations of the hand-written test
//! service of `server_support` over any channel, a TCP proxy whose
//! connections the test can cut, and (feature `tls`) certificates made
//! with rcgen.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use crate::server_support::{TestService, INFO};
use bytes::Bytes;
use rpc_core::call::{CallOptions, Channel, Invocation, Outcome};
use rpc_core::server::{ServerHandle, TcpServerConfig};
use rpc_core::{Error, Protocol, Status, Style};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A synchronous call of `method` with `payload`.
pub async fn call(
    ch: &impl Channel,
    method: u32,
    payload: impl Into<Bytes>,
    protocol: Protocol,
    timeout: Option<Duration>,
) -> Result<Result<Bytes, Status>, Error> {
    let m = INFO.method(method).unwrap();
    let inv = Invocation {
        service: &INFO,
        method: m,
        instance: String::new(),
        payload: payload.into(),
        metadata: Default::default(),
        options: CallOptions {
            protocol,
            style: Style::Sync,
            deadline: timeout.map(|t| Instant::now() + t),
            retries: None,
            idempotent: m.idempotent,
        },
    };
    match ch.invoke(inv).await? {
        Outcome::Reply(r) => Ok(r.map(|reply| reply.payload)),
        other => panic!("a sync call got {other:?}"),
    }
}

pub fn be(n: u64) -> Bytes {
    Bytes::copy_from_slice(&n.to_be_bytes())
}

pub fn u64_of(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[8 - n..].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}

/// A TCP server with the test service on 127.0.0.1.
pub async fn serve_tcp(
    config: TcpServerConfig,
) -> (ServerHandle, Arc<crate::server_support::State>) {
    let svc = TestService::default();
    let state = Arc::clone(&svc.state);
    let handle = rpc_core::server::Server::builder()
        .add_service(svc)
        .serve_tcp_with("127.0.0.1:0", config)
        .await
        .unwrap();
    (handle, state)
}

/// Runs `f` with a time limit.
pub async fn bounded<F: std::future::Future>(limit: Duration, f: F) -> F::Output {
    tokio::time::timeout(limit, f)
        .await
        .expect("test took too long")
}

/// Waits until `cond` holds, at most `limit`.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cond()
}

/// A TCP proxy on 127.0.0.1 to `target`; [`Proxy::cut`] closes every
/// connection it carries (both sides see a reset/close), new ones are
/// accepted afterwards.
pub struct Proxy {
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
    pub accepted: Arc<std::sync::atomic::AtomicU64>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accepted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (c, a) = (Arc::clone(&conns), Arc::clone(&accepted));
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let task = tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                c.lock().unwrap().push(task);
            }
        });
        Proxy {
            addr,
            conns,
            accept,
            accepted,
        }
    }

    /// Closes every connection now.
    pub fn cut(&self) {
        for t in self.conns.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

#[cfg(feature = "tls")]
pub mod certs {
    //! A CA, a server certificate for "localhost" and client certificates.
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };

    pub struct Ca {
        pub cert: rcgen::Certificate,
        pub key: KeyPair,
    }

    impl Ca {
        pub fn new(name: &str) -> Ca {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(DnType::CommonName, name);
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let key = KeyPair::generate().unwrap();
            let cert = p.self_signed(&key).unwrap();
            Ca { cert, key }
        }

        pub fn pem(&self) -> String {
            self.cert.pem()
        }

        /// A leaf certificate and key (PEM) for `name`, for a server or a client.
        pub fn issue(&self, name: &str, client: bool) -> (String, String) {
            let mut p = CertificateParams::new(vec![name.to_owned()]).unwrap();
            p.distinguished_name.push(DnType::CommonName, name);
            p.extended_key_usages = vec![if client {
                ExtendedKeyUsagePurpose::ClientAuth
            } else {
                ExtendedKeyUsagePurpose::ServerAuth
            }];
            let key = KeyPair::generate().unwrap();
            let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
            (cert.pem(), key.serialize_pem())
        }
    }
}
