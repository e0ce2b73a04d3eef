//! How a client tells a refused handshake (a certificate not accepted,
//! by either side) from a network failure: the rustls error behind an I/O
//! error, and, for TLS 1.3's late refusal of a client certificate, a
//! stream that reports it on the first read.

use tokio_rustls::rustls;

/// Why a TLS handshake (or the first read after it, where TLS 1.3 reports
/// the server's refusal of a client certificate) failed at the TLS layer,
/// if `error` or one of its sources is a rustls error, or the refusal a
/// [`Refusable`] stream reported; `None` for plain I/O errors (refused,
/// reset, timed out), which say nothing about credentials.
pub(crate) fn rejection(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        let io = e.downcast_ref::<std::io::Error>();
        if let Some(io) = io.filter(|io| io.kind() == std::io::ErrorKind::PermissionDenied) {
            if let Some(reason) = io.to_string().strip_prefix(REFUSED) {
                return Some(reason.to_owned());
            }
        }
        let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
            io.and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = tls {
            return Some(describe(tls));
        }
        next = e.source();
    }
    None
}

/// The start of the message of the I/O error a [`Refusable`] stream
/// reports.
const REFUSED: &str = "tls refused before any data: ";

/// A client's TLS stream that reports a TLS-layer failure of a read before
/// any data came from the server as a refusal (an I/O error of kind
/// `PermissionDenied` whose message names it, found by [`rejection`]).
///
/// With TLS 1.3 a server refuses a client certificate after the client has
/// finished its side of the handshake: the client learns it from an alert
/// on its first read. Before any data came, the server has processed
/// nothing the client sent. The refusal is carried in the error's kind and
/// text because HTTP/2 (h2) keeps only those of an I/O error when it
/// reports a connection's failure to its streams.
#[cfg(feature = "grpc")]
#[derive(Debug)]
pub(crate) struct Refusable<S> {
    inner: S,
    /// Data has come from the server.
    data: bool,
}

#[cfg(feature = "grpc")]
impl<S> Refusable<S> {
    pub(crate) fn new(inner: S) -> Refusable<S> {
        Refusable { inner, data: false }
    }
}

#[cfg(feature = "grpc")]
impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Refusable<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut self.inner).poll_read(cx, buf) {
            std::task::Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.data = true;
                }
                std::task::Poll::Ready(Ok(()))
            }
            std::task::Poll::Ready(Err(error)) if !self.data => {
                std::task::Poll::Ready(Err(match rejection(&error) {
                    Some(reason) => std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        format!("{REFUSED}{reason}"),
                    ),
                    None => error,
                }))
            }
            other => other,
        }
    }
}

#[cfg(feature = "grpc")]
impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Refusable<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A rustls error as the reason of a refusal.
fn describe(tls: &rustls::Error) -> String {
    match tls {
        rustls::Error::AlertReceived(alert) => {
            format!("the server refused the tls handshake ({alert:?})")
        }
        rustls::Error::InvalidCertificate(why) => {
            format!("the server's certificate was not accepted: {why:?}")
        }
        other => format!("tls handshake failed: {other}"),
    }
}
