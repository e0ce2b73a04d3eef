//! Certificates made at run time ([`LocalCa`]): for loopback
//! deployments, demonstrations and tests, not for certificates from a real
//! authority (those come as PEM to [`TlsServerConfig::from_pem`]).

use super::{TlsClientConfig, TlsError, TlsServerConfig};
use std::fmt;

/// A certificate authority made at run time, with a key that never leaves
/// the process: for a loopback deployment, a demonstration or a test, where
/// the clients are told the CA's certificate ([`LocalCa::pem`]) by hand.
pub struct LocalCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LocalCa(..)")
    }
}

fn generate(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

impl LocalCa {
    /// A new CA called `name`, with a fresh key.
    ///
    /// # Errors
    /// [`TlsError::Generate`].
    pub fn new(name: &str) -> Result<LocalCa, TlsError> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
        ca.distinguished_name.push(DnType::CommonName, name);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(generate)?;
        let cert = ca.self_signed(&key).map_err(generate)?;
        Ok(LocalCa { cert, key })
    }

    /// The CA's certificate (PEM): what clients trust.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server configuration with a certificate for `host` that this CA
    /// signed.
    ///
    /// # Errors
    /// [`TlsError::Generate`], or as [`TlsServerConfig::from_pem`].
    pub fn server_config(&self, host: &str) -> Result<TlsServerConfig, TlsError> {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
        let mut leaf = CertificateParams::new(vec![host.to_owned()]).map_err(generate)?;
        leaf.distinguished_name.push(DnType::CommonName, host);
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().map_err(generate)?;
        let cert = leaf
            .signed_by(&key, &self.cert, &self.key)
            .map_err(generate)?;
        TlsServerConfig::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
    }

    /// A client configuration that trusts this CA only, for `server_name`.
    ///
    /// # Errors
    /// As [`TlsClientConfig::new`].
    pub fn client_config(&self, server_name: &str) -> Result<TlsClientConfig, TlsError> {
        TlsClientConfig::new(server_name, self.pem().as_bytes())
    }
}
