//! The server side of a door's TLS, the same for the TCP and gRPC doors:
//! the acceptor made once from the door's configuration, and each
//! connection's handshake, bounded and counted.

use super::{peer_identity, TlsError, TlsServerConfig};
use crate::counter::bump;
use crate::service::PeerIdentity;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The acceptor of a door that speaks `alpn`, when its configuration has
/// TLS (see [`TlsServerConfig::acceptor`]).
///
/// # Errors
/// [`TlsError::Alpn`] when the configuration's ALPN list does not name
/// `alpn`.
pub(crate) fn door_acceptor(
    tls: Option<&TlsServerConfig>,
    alpn: &[u8],
) -> Result<Option<TlsAcceptor>, TlsError> {
    tls.map(|tls| tls.acceptor(alpn)).transpose()
}

/// One connection's handshake at a door, within `timeout`: the stream and
/// the client's verified identity (verified once per connection; every
/// call on it shares it), or `None` once the failure is counted in
/// `failures` and logged. `door` starts the log lines ("tls", "grpc tls").
pub(crate) async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    timeout: Duration,
    peer: SocketAddr,
    failures: &AtomicU64,
    door: &str,
) -> Option<(TlsStream<TcpStream>, Option<Arc<PeerIdentity>>)> {
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            let identity = peer_identity(stream.get_ref().1);
            if let Some(id) = &identity {
                tracing::debug!(%peer, client = id.name(), "{door} client authenticated");
            }
            Some((stream, identity))
        }
        Ok(Err(error)) => {
            bump(failures);
            tracing::debug!(%peer, %error, "{door} handshake failed");
            None
        }
        Err(_) => {
            bump(failures);
            tracing::debug!(%peer, "{door} handshake timed out");
            None
        }
    }
}
