//! The TCP door, plain and with TLS: one connection to the same server,
//! framed envelopes, the same engine and history behind it; and the
//! certificates of the TLS door, made for the run.

use super::Door;
use anyhow::Context as _;
use rpc_core::client::{TcpChannel, TcpConfig};
use rpc_core::tls::{TlsClientConfig, TlsServerConfig};
use rpc_core::Client;
use rpc_services::proto::demo::v1::CounterClient;
use std::net::SocketAddr;

/// TCP (optionally TLS) to the same server: one connection, framed
/// envelopes, the same engine and history behind it.
pub(crate) struct TcpDoor {
    name: String,
    client: CounterClient,
}

impl TcpDoor {
    /// One connection to `addr`, over TLS when `tls` is given.
    pub(crate) async fn connect(
        name: &str,
        addr: SocketAddr,
        tls: Option<TlsClientConfig>,
    ) -> anyhow::Result<TcpDoor> {
        let config = TcpConfig::default();
        let channel = match tls {
            Some(tls) => TcpChannel::connect_tls(addr, tls, config).await,
            None => TcpChannel::connect_with(addr, config).await,
        }
        .with_context(|| format!("connecting {name} to {addr}"))?;
        let client = CounterClient::new(Client::new(channel));
        Ok(TcpDoor {
            name: name.to_owned(),
            client,
        })
    }
}

impl Door for TcpDoor {
    fn name(&self) -> &str {
        &self.name
    }
    fn client(&self) -> &CounterClient {
        &self.client
    }
}

/// A CA, and a server certificate for `localhost` it signed (PEM): for
/// the TLS door.
pub(crate) fn tls_configs() -> anyhow::Result<(TlsServerConfig, TlsClientConfig)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "rpc tour CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key)?;
    let server = TlsServerConfig::from_pem(
        leaf_cert.pem().as_bytes(),
        leaf_key.serialize_pem().as_bytes(),
    )?;
    let client = TlsClientConfig::new("localhost", ca_cert.pem().as_bytes())?;
    Ok((server, client))
}
