//! W3C trace context (`traceparent`) across calls: [`TracePropagation`]
//! is both a server and a client interceptor.
//!
//! - On the server, `before` reads the caller's `traceparent` metadata
//!   entry (or starts a new trace when there is none, or it is malformed)
//!   and gives the call its own span id in the same trace
//!   ([`CallContext::trace`]). The server records `trace_id`, `span_id`
//!   and `parent_id` on the handler's `rpc_call` tracing span and runs the
//!   handler inside the context, so [`TraceContext::current`] is the
//!   handler's.
//! - On the client, `before` sends the current context (the handler's,
//!   inside a handler; one a caller set with [`TraceContext::scope`]; else a
//!   new trace) as `traceparent`: the calls a handler makes are children
//!   of it.
//!
//! The format is version `00` of the W3C Trace Context recommendation:
//! `00-<trace id, 32 hex>-<parent id, 16 hex>-<flags, 2 hex>`.
//!
//! ```
//! use rpc_core::intercept::trace::TraceContext;
//!
//! let root = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
//! let child = root.child();
//! assert_eq!(child.trace_id, root.trace_id);
//! assert_ne!(child.span_id, root.span_id);
//! assert!(child.header().starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
//! ```

use super::{ClientInterceptor, Interceptor};
use crate::call::Invocation;
use crate::service::CallContext;
use crate::status::Status;
use std::fmt;
use std::future::Future;

/// The metadata key of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// One span's place in a trace (W3C Trace Context, version 00).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace (never 0).
    pub trace_id: u128,
    /// This span (never 0).
    pub span_id: u64,
    /// The span this one is a child of (0: a root).
    pub parent_id: u64,
    /// The `sampled` flag.
    pub sampled: bool,
}

/// A random `u64` from a per-thread generator seeded from the operating
/// system's (ids need to be unpredictable enough not to collide, not
/// secret; the shared `rand::rng()` cost more per id than the rest of the
/// header's work).
fn random_u64() -> u64 {
    use rand::{RngCore, SeedableRng};
    thread_local! {
        static RNG: std::cell::RefCell<rand::rngs::SmallRng> =
            std::cell::RefCell::new(rand::rngs::SmallRng::from_rng(&mut rand::rng()));
    }
    RNG.with(|rng| rng.borrow_mut().next_u64())
}

fn nonzero_u64() -> u64 {
    loop {
        let n = random_u64();
        if n != 0 {
            return n;
        }
    }
}

impl TraceContext {
    /// A new trace, sampled.
    pub fn new_root() -> TraceContext {
        let trace_id = (u128::from(random_u64()) << 64) | u128::from(nonzero_u64());
        TraceContext {
            trace_id,
            span_id: nonzero_u64(),
            parent_id: 0,
            sampled: true,
        }
    }

    /// A new span of the same trace, child of this one.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            trace_id: self.trace_id,
            span_id: nonzero_u64(),
            parent_id: self.span_id,
            sampled: self.sampled,
        }
    }

    /// Parses a `traceparent` value. `None` when it is malformed: wrong
    /// lengths, upper-case or non-hex digits, version `ff`, all-zero ids.
    /// A version above `00` is read as `00` (its first four fields), as
    /// the recommendation asks.
    pub fn parse(value: &str) -> Option<TraceContext> {
        // By hand (this runs on every call): `vv-<32>-<16>-<2>`, and for a
        // version above 00 possibly `-more` after it.
        let b = value.trim_ascii().as_bytes();
        if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let version = hex_u8([b[0], b[1]])?;
        if version == 0xff || (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
            return None;
        }
        let sixteen = |at: usize| -> Option<u64> { hex_u64(b.get(at..at + 16)?.try_into().ok()?) };
        let trace_id = (u128::from(sixteen(3)?) << 64) | u128::from(sixteen(19)?);
        let span_id = sixteen(36)?;
        let flags = hex_u8([b[53], b[54]])?;
        if trace_id == 0 || span_id == 0 {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id,
            parent_id: 0,
            sampled: flags & 1 == 1,
        })
    }

    /// The `traceparent` value naming this span as the parent.
    pub fn header(&self) -> String {
        self.header_bytes().as_str().to_owned()
    }

    /// [`TraceContext::header`] without allocating.
    pub fn header_bytes(&self) -> TraceHeader {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        fn put(out: &mut [u8], n: u64) {
            let digits = out.len();
            for (i, o) in out.iter_mut().enumerate() {
                *o = HEX[((n >> (4 * (digits - 1 - i))) & 0xf) as usize];
            }
        }
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        // Truncations pick the high and low halves of the trace id.
        #[allow(clippy::cast_possible_truncation)]
        {
            put(&mut out[3..19], (self.trace_id >> 64) as u64);
            put(&mut out[19..35], self.trace_id as u64);
        }
        put(&mut out[36..52], self.span_id);
        if self.sampled {
            out[54] = b'1';
        }
        TraceHeader(out)
    }

    /// The context of the running handler (or of [`TraceContext::scope`]),
    /// if any.
    pub fn current() -> Option<TraceContext> {
        CURRENT.try_with(|c| *c).ok()
    }

    /// Runs `future` with this as the current context.
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        CURRENT.scope(self, future).await
    }

    /// Runs `f` with this as the current context.
    pub fn sync_scope<R>(self, f: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self, f)
    }
}

/// A future polled with a context current (or as it is, with `None`):
/// what the server runs a handler in. Unlike [`TraceContext::scope`] it
/// is `Unpin` when the future is, so the engine can poll a handler once
/// on the receiving task and then move it to a task of its own without
/// boxing it again.
pub(crate) struct InContext<F> {
    pub(crate) context: Option<TraceContext>,
    pub(crate) future: F,
}

impl<F: Future + Unpin> Future for InContext<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.get_mut();
        let future = std::pin::Pin::new(&mut this.future);
        match this.context {
            Some(c) => c.sync_scope(|| future.poll(cx)),
            None => future.poll(cx),
        }
    }
}

/// The value of 16 lower-case hex digits; `None` for anything else.
///
/// Eight digits at a time in one `u64` (this runs three times for every
/// call a server takes with trace propagation on): every byte is checked
/// to be `0-9` or `a-f` at once, then the nibbles are packed.
fn hex_u64(digits: &[u8; 16]) -> Option<u64> {
    let (hi, lo) = digits.split_at(8);
    let (hi, lo) = (hex_u32(hi.try_into().ok()?)?, hex_u32(lo.try_into().ok()?)?);
    Some((u64::from(hi) << 32) | u64::from(lo))
}

/// [`hex_u64`] for eight digits.
fn hex_u32(digits: &[u8; 8]) -> Option<u32> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let x = u64::from_be_bytes(*digits);
    if x & HIGH != 0 {
        return None;
    }
    // With every byte below 0x80, adding `0x80 - c` to each byte sets its
    // high bit exactly when the byte is at least `c`, and never carries
    // into the next byte.
    let at_least = |c: u64| x.wrapping_add((0x80 - c) * ONES) & HIGH;
    let digit = at_least(0x30) & !at_least(0x3a);
    let letter = at_least(0x61) & !at_least(0x67);
    if digit | letter != HIGH {
        return None;
    }
    // `0`-`9` are 0x30-0x39 and `a`-`f` 0x61-0x66: the low nibble, plus 9
    // for a letter.
    let mut v = (x & (ONES * 0x0f)) + (letter >> 7) * 9;
    // Pack the nibbles (first digit highest): pairs, quads, then all.
    v = (v | (v >> 4)) & 0x00ff_00ff_00ff_00ff;
    v = (v | (v >> 8)) & 0x0000_ffff_0000_ffff;
    v = (v | (v >> 16)) & 0xffff_ffff;
    u32::try_from(v).ok()
}

/// The value of two lower-case hex digits.
fn hex_u8(digits: [u8; 2]) -> Option<u8> {
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some((nibble(digits[0])? << 4) | nibble(digits[1])?)
}

/// A `traceparent` value, on the stack ([`TraceContext::header_bytes`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceHeader([u8; 55]);

impl TraceHeader {
    /// The value.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits, letters and dashes are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for TraceHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.header_bytes().as_str())
    }
}

/// Propagates the W3C trace context: a server interceptor and a client
/// interceptor (see the [module docs](self)).
#[derive(Debug, Clone, Copy, Default)]
pub struct TracePropagation;

impl Interceptor for TracePropagation {
    fn before(&self, ctx: &mut CallContext) -> Result<(), Status> {
        let parent = ctx.metadata(TRACEPARENT).and_then(|v| {
            let parsed = TraceContext::parse(v);
            if parsed.is_none() {
                tracing::debug!(value = v, "malformed traceparent: a new trace starts");
            }
            parsed
        });
        ctx.trace = Some(match parent {
            Some(p) => p.child(),
            None => TraceContext::new_root(),
        });
        Ok(())
    }
}

impl ClientInterceptor for TracePropagation {
    fn before(&self, invocation: &mut Invocation) -> Result<(), Status> {
        let current = TraceContext::current().unwrap_or_else(TraceContext::new_root);
        invocation
            .metadata
            .insert(TRACEPARENT, current.header_bytes().as_str());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_version_00() {
        let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceContext::parse(v).expect("the example of the recommendation");
        assert_eq!(t.header(), v);
        assert!(t.sampled);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
        // A later version's extra fields are ignored.
        assert!(TraceContext::parse(&format!("01{}-more", &v[2..])).is_some());
    }

    #[test]
    fn hex_digits_are_read_eight_at_a_time_exactly_as_one_at_a_time() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        for _ in 0..2_000 {
            let n: u64 = rng.random();
            let text = format!("{n:016x}");
            let digits: [u8; 16] = text.as_bytes().try_into().expect("16 digits");
            assert_eq!(hex_u64(&digits), Some(n), "{text}");
            // Any byte that is not a lower-case hex digit, anywhere, is refused.
            let mut bad = digits;
            let at = rng.random_range(0..16);
            for c in (0..=255u8).filter(|c| !matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
                bad[at] = c;
                assert_eq!(hex_u64(&bad), None, "{c:#x} at {at}");
            }
        }
        assert_eq!(hex_u8(*b"ff"), Some(0xff));
        assert_eq!(hex_u8(*b"0g"), None);
    }

    #[tokio::test]
    async fn the_current_context_is_scoped() {
        assert_eq!(TraceContext::current(), None);
        let root = TraceContext::new_root();
        let seen = root.scope(async { TraceContext::current() }).await;
        assert_eq!(seen, Some(root));
        assert_eq!(TraceContext::current(), None);
    }
}
