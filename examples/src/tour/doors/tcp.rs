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
    let ca = rpc_core::tls::LocalCa::new("rpc tour CA")?;
    Ok((
        ca.server_config("localhost")?,
        ca.client_config("localhost")?,
    ))
}
