//! The server's authentication policy: one per server, set on the
//! [`ServerBuilder`](super::ServerBuilder) and enforced on every door as it
//! is opened. A door that cannot meet the policy (a datagram door or a
//! plain-text stream door under a TLS policy, a TLS door that does not
//! require client certificates under mutual TLS) is refused with
//! [`ServerError::DoorRefused`](super::ServerError::DoorRefused) naming
//! the door and what it lacks, so a service is protected whichever door a
//! caller comes through, not only behind the door that happens to be
//! configured for it.
//!
//! Handlers see what the doors verified in
//! [`CallContext::transport`](crate::CallContext::transport) and
//! [`CallContext::identity`](crate::CallContext::identity).

use std::fmt;

/// How a server's callers must authenticate, enforced on every door.
///
/// The policy is checked when a door is opened; it adds nothing per call.
/// More policies (credentials carried in metadata and checked per call)
/// may join these, so match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AuthPolicy {
    /// No authentication: every door may be opened (the default).
    #[default]
    None,
    /// Every door must be a TLS door (TCP with TLS, gRPC with TLS): callers
    /// have verified the server, the traffic is protected, callers are not
    /// identified. Datagram doors (UDP, the in-memory network, IP
    /// multicast) and plain-text stream doors are refused.
    Tls,
    /// Every door must be a TLS door that requires a client certificate
    /// chaining to its CA (`tls::TlsServerConfig::requires_client_auth`,
    /// feature `tls`): every call has a verified
    /// [`CallContext::identity`](crate::CallContext::identity).
    MutualTls,
}

impl fmt::Display for AuthPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthPolicy::None => "none",
            AuthPolicy::Tls => "tls",
            AuthPolicy::MutualTls => "mutual tls",
        })
    }
}

/// A kind of door, as the authentication policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DoorKind {
    /// A datagram door: UDP, the in-memory network or an IP multicast
    /// membership (no TLS).
    Datagram,
    /// A TCP door without TLS.
    Tcp,
    /// A TCP door with TLS.
    Tls {
        /// Whether it requires client certificates.
        client_auth: bool,
    },
    /// A gRPC door without TLS (plain-text HTTP/2).
    Grpc,
    /// A gRPC door with TLS.
    GrpcTls {
        /// Whether it requires client certificates.
        client_auth: bool,
    },
}

impl fmt::Display for DoorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DoorKind::Datagram => "datagram (udp)",
            DoorKind::Tcp => "plain tcp",
            DoorKind::Tls { .. } => "tls",
            DoorKind::Grpc => "plain grpc",
            DoorKind::GrpcTls { .. } => "grpc tls",
        })
    }
}

/// What a door lacks to meet a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Shortfall {
    /// The door does not use TLS.
    NoTls,
    /// The door uses TLS but does not require client certificates.
    NoClientAuth,
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Shortfall::NoTls => "it does not use tls",
            Shortfall::NoClientAuth => "its tls configuration does not require client certificates",
        })
    }
}

impl AuthPolicy {
    /// Whether a door of kind `door` meets this policy.
    ///
    /// # Errors
    /// What the door lacks.
    pub fn check(self, door: DoorKind) -> Result<(), Shortfall> {
        let (tls, client_auth) = match door {
            DoorKind::Datagram | DoorKind::Tcp | DoorKind::Grpc => (false, false),
            DoorKind::Tls { client_auth } | DoorKind::GrpcTls { client_auth } => {
                (true, client_auth)
            }
        };
        match self {
            AuthPolicy::None => Ok(()),
            AuthPolicy::Tls if tls => Ok(()),
            AuthPolicy::MutualTls if tls && client_auth => Ok(()),
            AuthPolicy::MutualTls if tls => Err(Shortfall::NoClientAuth),
            AuthPolicy::Tls | AuthPolicy::MutualTls => Err(Shortfall::NoTls),
        }
    }

    /// [`AuthPolicy::check`] as the error a server reports (and logs).
    pub(crate) fn admit(self, door: DoorKind) -> Result<(), super::ServerError> {
        self.check(door).map_err(|reason| {
            tracing::warn!(%door, policy = %self, %reason, "door refused by the authentication policy");
            super::ServerError::DoorRefused {
                door,
                policy: self,
                reason,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_policy_admits_the_doors_it_can() {
        let all = [
            DoorKind::Datagram,
            DoorKind::Tcp,
            DoorKind::Tls { client_auth: false },
            DoorKind::Tls { client_auth: true },
            DoorKind::Grpc,
            DoorKind::GrpcTls { client_auth: false },
            DoorKind::GrpcTls { client_auth: true },
        ];
        let admitted = |p: AuthPolicy| -> Vec<DoorKind> {
            all.iter()
                .copied()
                .filter(|d| p.check(*d).is_ok())
                .collect()
        };
        assert_eq!(admitted(AuthPolicy::None), all.to_vec());
        assert_eq!(
            admitted(AuthPolicy::Tls),
            vec![all[2], all[3], all[5], all[6]]
        );
        assert_eq!(admitted(AuthPolicy::MutualTls), vec![all[3], all[6]]);
        assert_eq!(
            AuthPolicy::MutualTls.check(DoorKind::GrpcTls { client_auth: false }),
            Err(Shortfall::NoClientAuth)
        );
        assert_eq!(
            AuthPolicy::MutualTls.check(DoorKind::Datagram),
            Err(Shortfall::NoTls)
        );
    }
}
