//! Address verification on datagram doors (`idl/PROTOCOL.md`, section 7.4):
//! a datagram's source address can be forged, so until a source shows that
//! it receives what is sent to its address, the server sends it at most
//! three times the bytes it received, and at most
//! [`ServerConfig::unverified_rate`](super::ServerConfig::unverified_rate)
//! messages a second per host. A source shows it by echoing the *cookie* of
//! a PONG: a keyed hash of its address and port, with a key that is secret
//! and new at every server start (as QUIC's Retry token and DTLS's
//! HelloVerifyRequest cookie do). A session whose owner once showed a valid
//! cookie stays verified (it is bound to that address).
//!
//! Every answer to an unverified source carries the source's cookie, so a
//! client's second request is verified even if it never PINGs (a client
//! that only makes idempotent calls). An answer too big for an unverified
//! source is not sent; a PONG carrying the cookie goes in its place (the
//! answer, when tracked, is stored as usual), and the client sends its
//! request again with the cookie.
//!
//! Stream doors (TCP, TLS, gRPC) need none of this: a connection proves
//! its address.

use super::engine::{Engine, ReplySink};
use super::stats::bump;
use crate::envelope::MessageType;
use crate::hash::FastMap;
use crate::service::TransportKind;
use bytes::Bytes;
use prost::Message;
use std::hash::BuildHasher;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// How much more a server may send an unverified source than it received.
pub(crate) const AMPLIFICATION: usize = 3;

/// Hosts whose rate is tracked at once; beyond, the table starts afresh
/// (logged), which at worst lets each host send one more burst.
const MAX_TRACKED_HOSTS: usize = 65_536;

/// Cookies and the per-host rate limit of answers to unverified sources.
#[derive(Debug)]
pub(crate) struct Verifier {
    /// SipHash with random keys (std's `RandomState`): a keyed
    /// pseudo-random function, unpredictable without the key.
    key: std::hash::RandomState,
    /// Answers a second (and the burst) per host; 0: no limit.
    rate: u32,
    buckets: Mutex<FastMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Verifier {
    /// A verifier with a fresh random key, allowing `rate` answers a second
    /// per unverified host (0: unlimited).
    pub(crate) fn new(rate: u32) -> Verifier {
        Verifier {
            key: std::hash::RandomState::new(),
            rate,
            buckets: Mutex::new(FastMap::default()),
        }
    }

    /// The cookie for `addr` (never 0, which means "none").
    pub(crate) fn cookie(&self, addr: SocketAddr) -> u64 {
        self.key.hash_one(addr).max(1)
    }

    /// Whether `cookie` is the one issued to `addr`.
    pub(crate) fn is_valid(&self, addr: SocketAddr, cookie: u64) -> bool {
        cookie != 0 && cookie == self.cookie(addr)
    }

    /// Takes one answer from `ip`'s allowance; `false` when it is spent.
    pub(crate) fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let rate = f64::from(self.rate);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_TRACKED_HOSTS && !buckets.contains_key(&ip) {
            tracing::warn!(
                hosts = buckets.len(),
                "too many unverified hosts to track; starting the rate table afresh"
            );
            buckets.clear();
        }
        let bucket = buckets.entry(ip).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What may go to an unverified source in place of a message.
pub(crate) enum Screened {
    /// The message itself.
    Pass,
    /// This PONG with the source's cookie instead (the message was too big).
    Retry(Bytes),
    /// Nothing (over the rate, or even a PONG would be too big).
    Drop,
}

impl Engine {
    /// Decides what an unverified source at `peer` may be sent in place of
    /// a message of `len` bytes, answering (`session`, `request_id`) to a
    /// message of `received` bytes. Counts what it withholds.
    pub(crate) fn screen(
        &self,
        peer: Option<SocketAddr>,
        len: usize,
        received: usize,
        session: u64,
        request_id: u64,
    ) -> Screened {
        let Some(peer) = peer else {
            return Screened::Pass;
        };
        let counters = self.counters();
        if !self.verifier().allow(peer.ip(), Instant::now()) {
            bump(&counters.rate_limited);
            tracing::debug!(%peer, "answer to an unverified source over its rate; dropped");
            return Screened::Drop;
        }
        let limit = received.saturating_mul(AMPLIFICATION);
        if len <= limit {
            return Screened::Pass;
        }
        bump(&counters.amplification_limited);
        let mut pong = self.control(MessageType::Pong, session, request_id, None);
        pong.cookie = self.verifier().cookie(peer);
        let pong = pong.encode_to_vec();
        if pong.len() <= limit {
            tracing::debug!(%peer, len, limit, "answer too big for an unverified source; sent a cookie instead");
            Screened::Retry(Bytes::from(pong))
        } else {
            tracing::debug!(%peer, len, limit, "answer too big for an unverified source; dropped");
            Screened::Drop
        }
    }
}

/// A sink to a source whose address is not verified: every message goes
/// through [`Engine::screen`] against the size of the request it answers.
pub(crate) struct Unverified<K> {
    pub(crate) inner: K,
    pub(crate) engine: Arc<Engine>,
    /// Bytes of the request being answered.
    pub(crate) received: usize,
    pub(crate) session: u64,
    pub(crate) request_id: u64,
}

impl<K: Clone> Clone for Unverified<K> {
    fn clone(&self) -> Self {
        Unverified {
            inner: self.inner.clone(),
            engine: Arc::clone(&self.engine),
            received: self.received,
            session: self.session,
            request_id: self.request_id,
        }
    }
}

impl<K: ReplySink> Unverified<K> {
    fn screen(&self, len: usize) -> Screened {
        self.engine.screen(
            self.inner.peer(),
            len,
            self.received,
            self.session,
            self.request_id,
        )
    }
}

impl<K: ReplySink> Unverified<K> {
    /// `message` with the source's cookie appended (a protobuf field may
    /// follow the others; a later copy of a field wins), so that its next
    /// request carries it and is verified without a PING.
    fn with_cookie(&self, message: &[u8]) -> Bytes {
        let cookie = self
            .inner
            .peer()
            .map_or(0, |p| self.engine.verifier().cookie(p));
        crate::envelope::with_cookie(message, cookie)
    }
}

impl<K: ReplySink> ReplySink for Unverified<K> {
    async fn send(&self, message: &[u8]) -> io::Result<()> {
        match self.screen(message.len() + crate::envelope::COOKIE_FIELD_LEN) {
            Screened::Pass => self.inner.send_shared(self.with_cookie(message)).await,
            Screened::Retry(pong) => self.inner.send_shared(pong).await,
            Screened::Drop => Ok(()),
        }
    }

    async fn send_shared(&self, message: Bytes) -> io::Result<()> {
        match self.screen(message.len() + crate::envelope::COOKIE_FIELD_LEN) {
            Screened::Pass => self.inner.send_shared(self.with_cookie(&message)).await,
            Screened::Retry(pong) => self.inner.send_shared(pong).await,
            Screened::Drop => Ok(()),
        }
    }

    fn peer(&self) -> Option<SocketAddr> {
        self.inner.peer()
    }

    fn transport(&self) -> TransportKind {
        self.inner.transport()
    }

    fn max_message_len(&self) -> usize {
        self.inner.max_message_len()
    }

    fn address_proven(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn cookies_are_per_address_and_per_server() {
        let a = SocketAddr::from(([127, 0, 0, 1], 4000));
        let b = SocketAddr::from(([127, 0, 0, 1], 4001));
        let v = Verifier::new(0);
        assert!(v.is_valid(a, v.cookie(a)));
        assert!(!v.is_valid(b, v.cookie(a)));
        assert!(!v.is_valid(a, 0));
        // Another server (or a restart) has another key.
        assert!(!Verifier::new(0).is_valid(a, v.cookie(a)));
    }

    #[test]
    fn the_rate_limit_is_a_token_bucket_per_host() {
        let v = Verifier::new(10);
        let (one, two) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let t0 = Instant::now();
        assert_eq!((0..20).filter(|_| v.allow(one, t0)).count(), 10);
        // Another host has its own allowance.
        assert!(v.allow(two, t0));
        // Refills at the rate: 100 ms is one more answer.
        let later = t0 + Duration::from_millis(100);
        assert_eq!((0..5).filter(|_| v.allow(one, later)).count(), 1);
        // Unlimited when the rate is 0.
        let free = Verifier::new(0);
        assert!((0..1000).all(|_| free.allow(one, t0)));
    }
}
