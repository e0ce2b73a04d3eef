//! TLS for the TCP and gRPC doors and clients (feature `tls`): rustls with
//! the *ring* crypto provider, through tokio-rustls.
//!
//! A server gets a [`TlsServerConfig`] (its certificate chain and key, and
//! optionally a CA that client certificates must chain to: mutual TLS)
//! in [`TcpServerConfig::tls`](crate::server::TcpServerConfig::tls) or the
//! gRPC door's `GrpcServerConfig::tls`; a client gets a [`TlsClientConfig`]
//! (the name to verify, the roots it trusts, optionally its own
//! certificate) and connects with
//! [`TcpChannel::connect_tls`](crate::client::TcpChannel::connect_tls) or
//! `GrpcChannel::connect_tls`. Everything else (framing, multiplexing,
//! reconnects, at-most-once) is the same as without TLS. Certificates and
//! keys are given as PEM.
//!
//! The same configurations serve both doors; each door names its protocol
//! with ALPN ([`ALPN_RPC`] on the TCP door, [`ALPN_H2`] on the gRPC door),
//! added to the rustls configuration when it lists no protocol. A server
//! still accepts a client that offers no protocol; one that offers only
//! other protocols (an HTTP/2 client at the TCP door) fails the handshake.
//!
//! A door that verified a client certificate hands its subject and
//! alternative names to every call of the connection
//! ([`CallContext::identity`](crate::CallContext::identity)).
//!
//! Files: this one (the configurations of servers and clients, and the
//! probe that finds whether a rustls configuration asks for client
//! certificates), `identity.rs` (the verified client certificate's names),
//! `refusal.rs` (a refused handshake told apart from a network failure),
//! `local_ca.rs` (certificates made at run time, for loopback and tests).
//!
//! ```no_run
//! # fn demo(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<(), rpc_core::tls::TlsError> {
//! use rpc_core::tls::{TlsClientConfig, TlsServerConfig};
//! let server = TlsServerConfig::from_pem(cert, key)?.client_auth(ca)?;
//! let client = TlsClientConfig::new("localhost", ca)?.identity(cert, key)?;
//! # Ok(()) }
//! ```

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::fmt;
use std::sync::Arc;
use tokio_rustls::rustls;

mod door;
mod identity;
mod local_ca;
mod refusal;

pub(crate) use door::{door_acceptor, handshake};
#[cfg(test)]
use identity::identity_of;
pub(crate) use identity::peer_identity;
pub use local_ca::LocalCa;
pub(crate) use refusal::rejection;
#[cfg(feature = "grpc")]
pub(crate) use refusal::Refusable;

/// The ALPN protocol id of the TCP door's framed envelopes (section 17 of
/// `idl/PROTOCOL.md`).
pub const ALPN_RPC: &[u8] = b"rpc.v1";

/// The ALPN protocol id of HTTP/2, which the gRPC door speaks.
pub const ALPN_H2: &[u8] = b"h2";

/// Errors of building a TLS configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The PEM text holds no certificate.
    #[error("no certificate found in the pem input")]
    NoCertificate,
    /// The PEM text holds no private key.
    #[error("no private key found in the pem input")]
    NoKey,
    /// The PEM text could not be read.
    #[error("invalid pem: {0}")]
    Pem(String),
    /// The server name is not a valid DNS name or IP address.
    #[error("invalid server name {0:?}")]
    ServerName(String),
    /// A CA certificate was refused as a trust anchor.
    #[error("invalid ca certificate")]
    Anchor(#[source] rustls::Error),
    /// A certificate could not be made ([`LocalCa`]).
    #[error("cannot make a certificate: {0}")]
    Generate(String),
    /// The client certificate verifier could not be built.
    #[error("cannot build the client certificate verifier: {0}")]
    Verifier(String),
    /// rustls refused the configuration (for example a key that does not
    /// match the certificate).
    #[error("invalid tls configuration")]
    Config(#[source] rustls::Error),
    /// The rustls configuration lists ALPN protocols, but not the one the
    /// door or channel speaks.
    #[error("the tls configuration offers the alpn protocols {offered:?}, not {needed:?}")]
    Alpn {
        /// What the configuration lists.
        offered: Vec<String>,
        /// What the door or channel needs.
        needed: String,
    },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(certs)
}

fn key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey,
        other => TlsError::Pem(other.to_string()),
    })
}

fn roots(pem: &[u8]) -> Result<rustls::RootCertStore, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    for cert in certs(pem)? {
        store.add(cert).map_err(TlsError::Anchor)?;
    }
    Ok(store)
}

/// The TLS side of a server: its identity and, for mutual TLS, the CA that
/// client certificates must chain to. Cheap to clone.
#[derive(Clone)]
pub struct TlsServerConfig {
    certs: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    config: Arc<rustls::ServerConfig>,
    /// Whether `config` refuses a client without a certificate.
    client_auth: bool,
}

impl fmt::Debug for TlsServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServerConfig")
            .field("certs", &self.certs.len())
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

impl TlsServerConfig {
    /// A server identity from a PEM certificate chain (leaf first) and a
    /// PEM private key (PKCS#8, PKCS#1 or SEC1). No client certificates
    /// are asked for.
    ///
    /// # Errors
    /// [`TlsError`] when the PEM holds no certificate or key, or rustls
    /// refuses them.
    pub fn from_pem(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<TlsServerConfig, TlsError> {
        let certs = certs(cert_chain_pem)?;
        let key = Arc::new(key(key_pem)?);
        let config = build_server(&certs, &key, None)?;
        Ok(TlsServerConfig {
            certs,
            key,
            config,
            client_auth: false,
        })
    }

    /// Mutual TLS: every client must present a certificate that chains to
    /// one of the CA certificates in `ca_pem`; a client without one is
    /// refused during the handshake.
    ///
    /// # Errors
    /// [`TlsError`] when the PEM holds no usable CA certificate.
    pub fn client_auth(self, ca_pem: &[u8]) -> Result<TlsServerConfig, TlsError> {
        let ca = Arc::new(roots(ca_pem)?);
        let config = build_server(&self.certs, &self.key, Some(&ca))?;
        Ok(TlsServerConfig {
            config,
            client_auth: true,
            ..self
        })
    }

    /// Whether the installed rustls configuration refuses clients that
    /// present no certificate: true after [`TlsServerConfig::client_auth`];
    /// after [`TlsServerConfig::with_rustls`], whatever the installed
    /// configuration does (see there).
    pub fn requires_client_auth(&self) -> bool {
        self.client_auth
    }

    /// The rustls configuration (ALPN, session resumption and the like can
    /// be tuned on a clone and put back with [`TlsServerConfig::with_rustls`]).
    pub fn rustls(&self) -> &Arc<rustls::ServerConfig> {
        &self.config
    }

    /// Replaces the rustls configuration.
    ///
    /// rustls does not tell from outside whether a configuration requires
    /// client certificates, so this finds out by a handshake with it in
    /// memory, from a client that presents none:
    /// [`TlsServerConfig::requires_client_auth`] is true when the
    /// configuration refuses that client for want of a certificate, false
    /// when the handshake succeeds (no client authentication, or an
    /// optional one) or fails for another reason (a configuration that
    /// cannot complete any handshake cannot be counted on to authenticate
    /// anyone). The certificate chain and key given before are kept for
    /// [`TlsServerConfig::client_auth`], which builds a new configuration
    /// from them.
    pub fn with_rustls(self, config: Arc<rustls::ServerConfig>) -> TlsServerConfig {
        let client_auth = refuses_anonymous_clients(&config);
        TlsServerConfig {
            config,
            client_auth,
            ..self
        }
    }

    /// An acceptor for a door that speaks `alpn`: the configuration's own
    /// ALPN list when it has one (which must name `alpn`), else `alpn`.
    pub(crate) fn acceptor(&self, alpn: &[u8]) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
        let config = if self.config.alpn_protocols.is_empty() {
            let mut config = rustls::ServerConfig::clone(&self.config);
            config.alpn_protocols = vec![alpn.to_vec()];
            Arc::new(config)
        } else if self.config.alpn_protocols.iter().any(|p| p == alpn) {
            Arc::clone(&self.config)
        } else {
            return Err(alpn_error(&self.config.alpn_protocols, alpn));
        };
        Ok(tokio_rustls::TlsAcceptor::from(config))
    }
}

fn alpn_error(offered: &[Vec<u8>], needed: &[u8]) -> TlsError {
    TlsError::Alpn {
        offered: offered
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect(),
        needed: String::from_utf8_lossy(needed).into_owned(),
    }
}

/// Whether `config` refuses a client that presents no certificate, found
/// by a handshake in memory (see [`TlsServerConfig::with_rustls`]).
fn refuses_anonymous_clients(config: &Arc<rustls::ServerConfig>) -> bool {
    let provider = provider();
    let Ok(builder) = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
    else {
        return false;
    };
    let client = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_no_client_auth();
    let Ok(name) = ServerName::try_from("localhost") else {
        return false;
    };
    let (Ok(mut client), Ok(mut server)) = (
        rustls::ClientConnection::new(Arc::new(client), name),
        rustls::ServerConnection::new(Arc::clone(config)),
    ) else {
        return false;
    };
    // A handshake takes two round trips; a few more turns cover a
    // HelloRetryRequest.
    for _ in 0..8 {
        let mut wire = Vec::new();
        while client.wants_write() {
            if client.write_tls(&mut wire).is_err() {
                return false;
            }
        }
        match feed(&mut server, &wire) {
            Ok(()) => {}
            Err(rustls::Error::NoCertificatesPresented) => return true,
            Err(_) => return false,
        }
        if !server.is_handshaking() {
            return false;
        }
        let mut wire = Vec::new();
        while server.wants_write() {
            if server.write_tls(&mut wire).is_err() {
                return false;
            }
        }
        if feed(&mut client, &wire).is_err() {
            return false;
        }
    }
    false
}

/// Hands `wire` to `conn` and processes it.
fn feed<D>(conn: &mut rustls::ConnectionCommon<D>, mut wire: &[u8]) -> Result<(), rustls::Error> {
    while !wire.is_empty() {
        if conn.read_tls(&mut wire).is_err() {
            return Err(rustls::Error::General(
                "cannot read the probe's bytes".into(),
            ));
        }
        conn.process_new_packets()?;
    }
    Ok(())
}

/// The probe's view of any server certificate: accepted (the probe only
/// learns whether the server asks for a client certificate; it sends no
/// data). Signatures are still checked.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn build_server(
    certs: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    client_ca: Option<&Arc<rustls::RootCertStore>>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::clone(ca),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs.to_vec(), key.clone_key())
        .map_err(TlsError::Config)?;
    Ok(Arc::new(config))
}

/// The TLS side of a client: the server name to verify, the roots to
/// trust and, for mutual TLS, the client's own certificate. Cheap to clone.
#[derive(Clone)]
pub struct TlsClientConfig {
    server_name: ServerName<'static>,
    roots: Arc<rustls::RootCertStore>,
    config: Arc<rustls::ClientConfig>,
    has_identity: bool,
}

impl fmt::Debug for TlsClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClientConfig")
            .field("server_name", &self.server_name)
            .field("roots", &self.roots.len())
            .field("identity", &self.has_identity)
            .finish_non_exhaustive()
    }
}

impl TlsClientConfig {
    /// Verifies the server's certificate against the CA certificates in
    /// `roots_pem`, for the name `server_name` (a DNS name or an IP
    /// address). No client certificate.
    ///
    /// # Errors
    /// [`TlsError`] for an invalid name or no usable root.
    pub fn new(server_name: &str, roots_pem: &[u8]) -> Result<TlsClientConfig, TlsError> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| TlsError::ServerName(server_name.to_owned()))?;
        let roots = Arc::new(roots(roots_pem)?);
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_root_certificates(Arc::clone(&roots))
            .with_no_client_auth();
        Ok(TlsClientConfig {
            server_name: name,
            roots,
            config: Arc::new(config),
            has_identity: false,
        })
    }

    /// Presents this certificate chain (leaf first) and key to a server
    /// that asks for one (mutual TLS).
    ///
    /// # Errors
    /// [`TlsError`] when the PEM holds no certificate or key, or rustls
    /// refuses them.
    pub fn identity(
        self,
        cert_chain_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<TlsClientConfig, TlsError> {
        let certs = certs(cert_chain_pem)?;
        let key = key(key_pem)?;
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_root_certificates(Arc::clone(&self.roots))
            .with_client_auth_cert(certs, key)
            .map_err(TlsError::Config)?;
        Ok(TlsClientConfig {
            config: Arc::new(config),
            has_identity: true,
            ..self
        })
    }

    /// The name the server's certificate is verified for.
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }

    /// A connector that offers `alpn` (and accepts a server that picks no
    /// protocol: one that predates ALPN).
    pub(crate) fn connector(&self, alpn: &[u8]) -> tokio_rustls::TlsConnector {
        let mut config = rustls::ClientConfig::clone(&self.config);
        config.alpn_protocols = vec![alpn.to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

#[cfg(test)]
mod tests;
