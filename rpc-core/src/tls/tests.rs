//! Tests of TLS: configurations, identities and refusals.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use super::*;

#[test]
fn a_rustls_error_inside_an_io_error_is_a_rejection() {
    let io = std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
    );
    let why = rejection(&io).unwrap_or_default();
    assert!(why.contains("CertificateRequired"), "{why}");
    let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
    assert_eq!(rejection(&reset), None);
}

#[cfg(feature = "grpc")]
#[tokio::test]
async fn a_tls_failure_before_any_data_survives_as_text() {
    use tokio::io::AsyncReadExt;
    let alert = std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate),
    );
    let mut stream = Refusable::new(failing(alert));
    let mut buf = [0u8; 8];
    let error = stream.read(&mut buf).await.unwrap_err();
    // What h2 keeps of an I/O error: its kind and its text.
    let copied = std::io::Error::new(error.kind(), error.to_string());
    let why = rejection(&copied).unwrap_or_default();
    assert!(why.contains("BadCertificate"), "{why}");
    // After data, a TLS error is not a refusal.
    let mut stream = Refusable::new(std::io::Cursor::new(b"x".to_vec()).chain(failing(
        std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::DecryptError),
    )));
    assert_eq!(stream.read(&mut buf).await.unwrap(), 1);
    let error = stream.read(&mut buf).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
}

/// A reader whose reads fail with `error`.
#[cfg(feature = "grpc")]
fn failing(error: std::io::Error) -> impl tokio::io::AsyncRead + Unpin {
    FailingReader(Some(error))
}

#[cfg(feature = "grpc")]
struct FailingReader(Option<std::io::Error>);

#[cfg(feature = "grpc")]
impl tokio::io::AsyncRead for FailingReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        _buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let error = self
            .0
            .take()
            .unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        std::task::Poll::Ready(Err(error))
    }
}

#[test]
fn an_unparsable_certificate_keeps_its_der() {
    let id = identity_of(b"not a certificate");
    assert_eq!(id.subject, "");
    assert_eq!(&id.certificate[..], b"not a certificate");
}
