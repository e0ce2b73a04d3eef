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

fn nonzero_u64() -> u64 {
    loop {
        let n: u64 = rand::random();
        if n != 0 {
            return n;
        }
    }
}

impl TraceContext {
    /// A new trace, sampled.
    pub fn new_root() -> TraceContext {
        let trace_id = loop {
            let n: u128 = rand::random();
            if n != 0 {
                break n;
            }
        };
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
        let version = hex_u64(&b[0..2])?;
        if version == 0xff || (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
            return None;
        }
        let trace_id = (u128::from(hex_u64(&b[3..19])?) << 64) | u128::from(hex_u64(&b[19..35])?);
        let span_id = hex_u64(&b[36..52])?;
        let flags = hex_u64(&b[53..55])?;
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

/// The value of each byte as a lower-case hex digit; 0x80 for any other.
const HEX_VALUE: [u8; 256] = {
    let mut table = [0x80u8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// The value of lower-case hex digits (at most 16 of them); `None` for
/// anything else.
fn hex_u64(digits: &[u8]) -> Option<u64> {
    let mut n = 0u64;
    let mut bad = 0u8;
    for &c in digits {
        let v = HEX_VALUE[usize::from(c)];
        bad |= v;
        n = (n << 4) | u64::from(v & 0xf);
    }
    (bad & 0x80 == 0 && digits.len() <= 16).then_some(n)
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

    #[tokio::test]
    async fn the_current_context_is_scoped() {
        assert_eq!(TraceContext::current(), None);
        let root = TraceContext::new_root();
        let seen = root.scope(async { TraceContext::current() }).await;
        assert_eq!(seen, Some(root));
        assert_eq!(TraceContext::current(), None);
    }
}
