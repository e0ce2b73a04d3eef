//! Connecting a [`GrpcChannel`](super::GrpcChannel): the tonic endpoint
//! for a URI and, with TLS, the connector that makes its connections.

use super::GrpcError;
#[cfg(feature = "tls")]
use futures::future::BoxFuture;
#[cfg(feature = "tls")]
use std::fmt;
use tonic::transport::Endpoint;

pub(super) fn endpoint(uri: &str) -> Result<Endpoint, GrpcError> {
    Endpoint::from_shared(uri.to_owned())
        .map(|e| e.tcp_nodelay(true))
        .map_err(|_| GrpcError::InvalidUri(uri.to_owned()))
}

/// An endpoint for `uri` whose connections a [`TlsConnect`] makes: the
/// connector gets a plain `http://` URI (so that no TLS of tonic's own is
/// ever tried on it), requests carry the `https://` origin.
#[cfg(feature = "tls")]
pub(super) fn tls_endpoint(
    uri: &str,
    tls: crate::tls::TlsClientConfig,
) -> Result<(Endpoint, TlsConnect), GrpcError> {
    let invalid = || GrpcError::InvalidUri(uri.to_owned());
    let authority = uri
        .strip_prefix("https://")
        .unwrap_or(uri)
        .trim_end_matches('/')
        .to_owned();
    if authority.is_empty() || authority.contains('/') {
        return Err(invalid());
    }
    let origin = tonic::codegen::http::Uri::try_from(format!("https://{authority}"))
        .map_err(|_| invalid())?;
    let endpoint = endpoint(&format!("http://{authority}"))?.origin(origin);
    let connect = TlsConnect {
        connector: tls.connector(crate::tls::ALPN_H2),
        server_name: tls.server_name().clone(),
    };
    Ok((endpoint, connect))
}

/// Makes a channel's connections: TCP, then TLS offering ALPN `h2`, the
/// stream wrapped so that a server's refusal of the client certificate
/// (TLS 1.3: an alert on the first read) is recognised in the call's error.
#[cfg(feature = "tls")]
#[derive(Clone)]
pub(super) struct TlsConnect {
    connector: tokio_rustls::TlsConnector,
    server_name: rustls_pki_types::ServerName<'static>,
}

#[cfg(feature = "tls")]
impl fmt::Debug for TlsConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnect")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "tls")]
type TlsIo = hyper_util::rt::TokioIo<
    crate::tls::Refusable<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
>;

#[cfg(feature = "tls")]
impl tower::Service<tonic::codegen::http::Uri> for TlsConnect {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = BoxFuture<'static, Result<TlsIo, std::io::Error>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), std::io::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, target: tonic::codegen::http::Uri) -> Self::Future {
        let (connector, server_name) = (self.connector.clone(), self.server_name.clone());
        Box::pin(async move {
            // An IPv6 literal comes bracketed in a URI.
            let host = target.host().unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = target.port_u16().unwrap_or(443);
            let tcp = tokio::net::TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            let stream = connector.connect(server_name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(crate::tls::Refusable::new(
                stream,
            )))
        })
    }
}
