//! Who the peer of a server-side connection is: the subject and
//! alternative names of the client certificate the door verified.

use crate::service::{AltName, PeerIdentity};
use bytes::Bytes;
use std::net::IpAddr;
use std::sync::Arc;
use tokio_rustls::rustls;

/// The identity of the peer of a server-side TLS connection: its verified
/// leaf certificate, when it presented one. A certificate the verifier
/// accepted but that cannot be parsed here still yields its DER, with an
/// empty subject.
pub(crate) fn peer_identity(conn: &rustls::ServerConnection) -> Option<Arc<PeerIdentity>> {
    let leaf = conn.peer_certificates()?.first()?;
    Some(Arc::new(identity_of(leaf.as_ref())))
}

pub(super) fn identity_of(der: &[u8]) -> PeerIdentity {
    use x509_cert::der::oid::db::rfc4519::CN;
    use x509_cert::der::Decode;
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::SubjectAltName;

    let mut identity = PeerIdentity {
        subject: String::new(),
        common_name: None,
        alt_names: Vec::new(),
        certificate: Bytes::copy_from_slice(der),
    };
    let cert = match x509_cert::Certificate::from_der(der) {
        Ok(cert) => cert,
        Err(error) => {
            tracing::debug!(%error, "verified client certificate not parsed");
            return identity;
        }
    };
    let tbs = &cert.tbs_certificate;
    identity.subject = tbs.subject.to_string();
    identity.common_name = tbs
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == CN)
        .and_then(|atv| std::str::from_utf8(atv.value.value()).ok())
        .map(str::to_owned);
    if let Ok(Some((_, SubjectAltName(names)))) = tbs.get::<SubjectAltName>() {
        for name in names {
            let alt = match name {
                GeneralName::DnsName(n) => AltName::Dns(n.to_string()),
                GeneralName::UniformResourceIdentifier(n) => AltName::Uri(n.to_string()),
                GeneralName::Rfc822Name(n) => AltName::Email(n.to_string()),
                GeneralName::IpAddress(octets) => match octets.as_bytes().len() {
                    4 | 16 => {
                        let b = octets.as_bytes();
                        let ip = if b.len() == 4 {
                            IpAddr::from([b[0], b[1], b[2], b[3]])
                        } else {
                            let mut a = [0u8; 16];
                            a.copy_from_slice(b);
                            IpAddr::from(a)
                        };
                        AltName::Ip(ip)
                    }
                    _ => continue,
                },
                _ => continue,
            };
            identity.alt_names.push(alt);
        }
    }
    identity
}
