//! TLS for the TCP transport (feature `tls`): rustls with the *ring*
//! crypto provider, through tokio-rustls.
//!
//! A server gets a [`TlsServerConfig`] (its certificate chain and key, and
//! optionally a CA that client certificates must chain to: mutual TLS)
//! in [`TcpServerConfig::tls`](crate::server::TcpServerConfig::tls); a
//! client gets a [`TlsClientConfig`] (the name to verify, the roots it
//! trusts, optionally its own certificate) and connects with
//! [`TcpChannel::connect_tls`](crate::client::TcpChannel::connect_tls).
//! Everything else (framing, multiplexing, reconnects, at-most-once) is the
//! same as over plain TCP. Certificates and keys are given as PEM.
//!
//! ```no_run
//! # fn demo(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<(), rpc_core::tls::TlsError> {
//! use rpc_core::tls::{TlsClientConfig, TlsServerConfig};
//! let server = TlsServerConfig::from_pem(cert, key)?.client_auth(ca)?;
//! let client = TlsClientConfig::new("localhost", ca)?.identity(cert, key)?;
//! # Ok(()) }
//! ```

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::fmt;
use std::sync::Arc;
use tokio_rustls::rustls;

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
    /// The client certificate verifier could not be built.
    #[error("cannot build the client certificate verifier: {0}")]
    Verifier(String),
    /// rustls refused the configuration (for example a key that does not
    /// match the certificate).
    #[error("invalid tls configuration")]
    Config(#[source] rustls::Error),
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
    client_ca: Option<Arc<rustls::RootCertStore>>,
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for TlsServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServerConfig")
            .field("certs", &self.certs.len())
            .field("client_auth", &self.client_ca.is_some())
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
            client_ca: None,
            config,
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
            client_ca: Some(ca),
            config,
            ..self
        })
    }

    /// Whether client certificates are required.
    pub fn requires_client_auth(&self) -> bool {
        self.client_ca.is_some()
    }

    /// The rustls configuration (ALPN, session resumption and the like can
    /// be tuned on a clone and put back with [`TlsServerConfig::with_rustls`]).
    pub fn rustls(&self) -> &Arc<rustls::ServerConfig> {
        &self.config
    }

    /// Replaces the rustls configuration.
    pub fn with_rustls(self, config: Arc<rustls::ServerConfig>) -> TlsServerConfig {
        TlsServerConfig { config, ..self }
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config))
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

    pub(crate) fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(Arc::clone(&self.config))
    }
}
