//! [`Client::connect`]: a client from a URI, so that a generated stub is
//! one line (`CounterClient::connect("udp://127.0.0.1:7000").await?`), and
//! the conversions from every channel into a [`Client`].

use super::{TcpChannel, UdpChannel};
use crate::call::Client;
use crate::error::Error;
use crate::transport::DatagramSocket;

/// Why [`Client::connect`] could not make a client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URI is not `udp://`, `tcp://`, `grpc://` or `http://` followed
    /// by `host:port`.
    #[error("invalid uri {0:?}: expected udp://, tcp://, grpc:// or http:// and host:port")]
    InvalidUri(String),
    /// The host name did not resolve.
    #[error("resolving {uri:?}")]
    Resolve {
        /// The URI given.
        uri: String,
        /// What the resolver said.
        #[source]
        source: std::io::Error,
    },
    /// The channel could not be made (a socket could not be bound).
    #[error(transparent)]
    Channel(#[from] Error),
    /// The gRPC channel could not be made.
    #[cfg(feature = "grpc")]
    #[error(transparent)]
    Grpc(#[from] crate::grpc::GrpcError),
}

impl Client {
    /// A client for `uri`, on the channel its scheme names, with the
    /// channel's default configuration:
    /// - `udp://host:port`: a [`UdpChannel`] (one session, one socket);
    /// - `tcp://host:port`: a [`TcpChannel`] (connects lazily and
    ///   reconnects);
    /// - `grpc://host:port` or `http://host:port`: a
    ///   [`GrpcChannel`](crate::grpc::GrpcChannel) (feature `grpc`).
    ///
    /// A host name resolves to its first address. For other
    /// configurations (TLS, timeouts), make the channel and use
    /// `Client::from(channel)`.
    ///
    /// # Errors
    /// [`ConnectError`].
    pub async fn connect(uri: &str) -> Result<Client, ConnectError> {
        let (scheme, rest) = uri
            .split_once("://")
            .ok_or_else(|| ConnectError::InvalidUri(uri.to_owned()))?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(ConnectError::InvalidUri(uri.to_owned()));
        }
        let resolve = || async {
            tokio::net::lookup_host(authority)
                .await
                .map_err(|source| ConnectError::Resolve {
                    uri: uri.to_owned(),
                    source,
                })?
                .next()
                .ok_or_else(|| ConnectError::Resolve {
                    uri: uri.to_owned(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
                })
        };
        match scheme {
            "udp" => Ok(Client::new(UdpChannel::connect(resolve().await?).await?)),
            "tcp" => Ok(Client::new(TcpChannel::connect(resolve().await?).await?)),
            #[cfg(feature = "grpc")]
            "grpc" | "http" => Ok(Client::new(
                crate::grpc::GrpcChannel::connect(&format!("http://{authority}")).await?,
            )),
            _ => Err(ConnectError::InvalidUri(uri.to_owned())),
        }
    }
}

impl<S: DatagramSocket> From<UdpChannel<S>> for Client {
    fn from(channel: UdpChannel<S>) -> Client {
        Client::new(channel)
    }
}

impl From<TcpChannel> for Client {
    fn from(channel: TcpChannel) -> Client {
        Client::new(channel)
    }
}

#[cfg(feature = "grpc")]
impl From<crate::grpc::GrpcChannel> for Client {
    fn from(channel: crate::grpc::GrpcChannel) -> Client {
        Client::new(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_uris_are_refused_with_what_was_given() {
        for uri in [
            "127.0.0.1:1",
            "ftp://127.0.0.1:1",
            "udp://",
            "udp://127.0.0.1:1/path",
        ] {
            match Client::connect(uri).await {
                Err(ConnectError::InvalidUri(u)) => assert_eq!(u, uri),
                other => panic!("{uri}: {other:?}"),
            }
        }
        // No name server is asked: the port is not a number.
        assert!(matches!(
            Client::connect("udp://127.0.0.1:port").await,
            Err(ConnectError::Resolve { .. })
        ));
        assert!(Client::connect("udp://127.0.0.1:9").await.is_ok());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        assert!(Client::connect(&format!("tcp://{addr}")).await.is_ok());
    }
}
