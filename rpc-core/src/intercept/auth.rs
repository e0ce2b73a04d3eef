//! Bearer-token authentication: [`BearerAuth`] on the server checks the
//! `authorization: Bearer <token>` metadata entry of every call against
//! its tokens and rules; [`BearerToken`] on the client adds it.
//!
//! - No token, or a token the server does not know: UNAUTHENTICATED.
//! - A known token whose principal the rule of the method does not allow:
//!   PERMISSION_DENIED.
//! - Either way the call does not run (ERROR; the caller is told it did
//!   not run). Allowed: the handler sees the principal as
//!   [`CallContext::identity`] ([`PeerIdentity::principal`]), unless a TLS
//!   door already verified a client certificate (which then stays).
//!
//! Rules name a service (`demo.v1.Counter`) and a method (`Increment`, or
//! `*` for all of the service's methods); the most specific rule wins.
//! Methods without a rule are governed by the default: every known token
//! ([`BearerAuth::new`]) or also callers without a token
//! ([`BearerAuth::allow_anonymous_by_default`]).
//!
//! ```
//! use rpc_core::intercept::auth::{BearerAuth, BearerToken};
//!
//! let server = BearerAuth::new()
//!     .token("s3cret-alice", "alice")
//!     .token("s3cret-bob", "bob")
//!     .rule("demo.v1.Counter", "Withdraw", ["alice"]);
//! let client = BearerToken::new("s3cret-alice");
//! # let _ = (server, client);
//! ```
//!
//! Tokens are compared in constant time. Over a door without TLS a token
//! travels in clear: use TLS doors where the network is not trusted.

use super::{ClientInterceptor, Interceptor};
use crate::call::Invocation;
use crate::service::{CallContext, PeerIdentity};
use crate::status::Status;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

/// The metadata key carrying the credential (as in HTTP and gRPC).
pub const AUTHORIZATION: &str = "authorization";

/// Who may call a method.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    /// Any caller, with or without a token.
    Anyone,
    /// Any caller with a known token.
    Authenticated,
    /// These principals.
    Principals(HashSet<String>),
}

/// The server side: checks bearer tokens per service and method.
#[derive(Clone)]
pub struct BearerAuth {
    /// Token -> principal.
    tokens: HashMap<String, Arc<PeerIdentity>>,
    /// (service, method or `*`) -> who may call.
    rules: HashMap<(String, String), Allowed>,
    default: Allowed,
}

impl fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the tokens themselves.
        f.debug_struct("BearerAuth")
            .field("tokens", &self.tokens.len())
            .field("rules", &self.rules)
            .field("default", &self.default)
            .finish()
    }
}

impl Default for BearerAuth {
    fn default() -> Self {
        BearerAuth::new()
    }
}

impl BearerAuth {
    /// No tokens yet; every method needs a known token.
    pub fn new() -> BearerAuth {
        BearerAuth {
            tokens: HashMap::new(),
            rules: HashMap::new(),
            default: Allowed::Authenticated,
        }
    }

    /// Methods without a rule take callers without a token too.
    #[must_use]
    pub fn allow_anonymous_by_default(mut self) -> BearerAuth {
        self.default = Allowed::Anyone;
        self
    }

    /// `token` authenticates `principal`.
    #[must_use]
    pub fn token(mut self, token: impl Into<String>, principal: impl Into<String>) -> BearerAuth {
        self.tokens.insert(
            token.into(),
            Arc::new(PeerIdentity::principal(principal.into())),
        );
        self
    }

    /// Only `principals` may call `method` (`*`: every method) of
    /// `service` (its full name, `package.Service`).
    #[must_use]
    pub fn rule<I, S>(mut self, service: &str, method: &str, principals: I) -> BearerAuth
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rules.insert(
            (service.to_owned(), method.to_owned()),
            Allowed::Principals(principals.into_iter().map(Into::into).collect()),
        );
        self
    }

    /// Anyone, even without a token, may call `method` (`*`: every method)
    /// of `service`.
    #[must_use]
    pub fn public(mut self, service: &str, method: &str) -> BearerAuth {
        self.rules
            .insert((service.to_owned(), method.to_owned()), Allowed::Anyone);
        self
    }

    fn allowed(&self, service: &str, method: &str) -> &Allowed {
        // Two lookups with owned keys would allocate per call; rules are
        // few, so scan them.
        let mut service_wide = None;
        for ((s, m), allowed) in &self.rules {
            if s == service {
                if m == method {
                    return allowed;
                }
                if m == "*" {
                    service_wide = Some(allowed);
                }
            }
        }
        service_wide.unwrap_or(&self.default)
    }

    fn principal(&self, presented: &str) -> Option<&Arc<PeerIdentity>> {
        // Constant time in the token's contents: every known token is
        // compared in full.
        let mut found = None;
        for (token, identity) in &self.tokens {
            if constant_time_eq(token.as_bytes(), presented.as_bytes()) {
                found = Some(identity);
            }
        }
        found
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token in an `authorization` value (`Bearer <token>`, the scheme in
/// any case).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_ascii().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_ascii())
        .filter(|t| !t.is_empty())
}

impl Interceptor for BearerAuth {
    fn before(&self, ctx: &mut CallContext) -> Result<(), Status> {
        let service = ctx.service;
        let allowed = self.allowed(service, ctx.method.name);
        let presented = ctx.metadata.get(AUTHORIZATION).map(bearer);
        let identity = match presented {
            None if *allowed == Allowed::Anyone => return Ok(()),
            None => {
                tracing::debug!(service, method = ctx.method.name, "refused: no credential");
                return Err(Status::unauthenticated("a bearer token is required"));
            }
            Some(None) => {
                return Err(Status::unauthenticated(
                    "malformed authorization (expected `Bearer <token>`)",
                ))
            }
            Some(Some(token)) => match self.principal(token) {
                Some(identity) => identity,
                None => {
                    tracing::debug!(service, method = ctx.method.name, "refused: unknown token");
                    return Err(Status::unauthenticated("unknown bearer token"));
                }
            },
        };
        // The credential is the door's business, not the handler's.
        ctx.metadata.discard(AUTHORIZATION);
        if let Allowed::Principals(who) = allowed {
            let name = identity.name();
            if !who.contains(name) {
                tracing::debug!(
                    service,
                    method = ctx.method.name,
                    principal = name,
                    "refused: not allowed"
                );
                return Err(Status::permission_denied(format!(
                    "{name} may not call {service}/{}",
                    ctx.method.name
                )));
            }
        }
        if ctx.identity.is_none() {
            ctx.identity = Some(Arc::clone(identity));
        }
        Ok(())
    }
}

/// The client side: adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct BearerToken {
    value: String,
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

impl BearerToken {
    /// Presents `token`.
    pub fn new(token: impl AsRef<str>) -> BearerToken {
        BearerToken {
            value: format!("Bearer {}", token.as_ref()),
        }
    }
}

impl ClientInterceptor for BearerToken {
    fn before(&self, invocation: &mut Invocation) -> Result<(), Status> {
        invocation.metadata.insert(AUTHORIZATION, &self.value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{MethodInfo, Protocol, Style};

    static METHOD: MethodInfo = MethodInfo {
        name: "Withdraw",
        id: 1,
        request_type: "",
        response_type: "",
        raises_type: "",
        oneway: false,
        idempotent: false,
        protocol: Protocol::RR,
        style: Style::Sync,
        timeout_ms: 0,
        retries: None,
    };

    fn ctx(token: Option<&str>) -> CallContext {
        let mut ctx = CallContext::local(&METHOD);
        ctx.service = "demo.v1.Counter";
        if let Some(t) = token {
            ctx.metadata.insert(AUTHORIZATION, t);
        }
        ctx
    }

    fn auth() -> BearerAuth {
        BearerAuth::new()
            .token("alice-token", "alice")
            .token("bob-token", "bob")
            .rule("demo.v1.Counter", "Withdraw", ["alice"])
    }

    #[test]
    fn tokens_and_rules_decide() {
        let auth = auth();
        let mut ok = ctx(Some("Bearer alice-token"));
        assert_eq!(auth.before(&mut ok), Ok(()));
        assert_eq!(ok.peer_identity().map(PeerIdentity::name), Some("alice"));
        assert_eq!(
            ok.metadata(AUTHORIZATION),
            None,
            "the credential is removed"
        );

        let code = |token| auth.before(&mut ctx(token)).map_err(|s| s.code());
        use crate::Code;
        assert_eq!(code(Some("Bearer bob-token")), Err(Code::PermissionDenied));
        assert_eq!(code(None), Err(Code::Unauthenticated));
        assert_eq!(code(Some("Bearer nope")), Err(Code::Unauthenticated));
        assert_eq!(code(Some("Basic alice-token")), Err(Code::Unauthenticated));
        assert_eq!(code(Some("bearer  alice-token ")), Ok(()));
    }

    #[test]
    fn public_methods_and_anonymous_defaults() {
        let auth = auth().public("demo.v1.Counter", "*");
        // The method's own rule is more specific than the service's.
        assert!(auth.before(&mut ctx(None)).is_err());
        let open = BearerAuth::new().allow_anonymous_by_default();
        assert_eq!(open.before(&mut ctx(None)), Ok(()));
        assert!(open.before(&mut ctx(Some("Bearer nope"))).is_err());
    }

    #[test]
    fn the_client_adds_the_token_and_debug_hides_it() {
        assert_eq!(format!("{:?}", BearerToken::new("x")), "BearerToken(..)");
        assert!(!format!("{:?}", auth()).contains("alice-token"));
    }
}
