//! Where each outgoing message of the link goes: the connection, nowhere (already carried), or kept for the next connection.

#[allow(clippy::wildcard_imports)] // a part of the link: its types are the parent's
use super::*;
use crate::envelope::{peek_header, Envelope, EnvelopeHeader, ExchangeProtocol, MessageType};
use crate::transport::tcp::Outbox;
use bytes::Bytes;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What to do with one outgoing message.
pub(super) enum Route {
    Write(Arc<Outbox>),
    /// Already carried by the connection up: not written again.
    Suppressed,
    /// No connection: kept for the next one.
    Kept,
    /// No connection, and not worth keeping (ACK).
    Dropped,
}

/// Routes one outgoing message `buf`; `header` is its envelope's header
/// when the sender gave it (else it is read from `buf`); `keep` makes the
/// copy of `buf` kept for a new connection (asked for at most once, and
/// only when the message is kept).
pub(super) fn route(
    st: &mut LinkState,
    header: Option<&EnvelopeHeader>,
    buf: &[u8],
    keep: impl FnOnce() -> Bytes,
    now: Instant,
) -> Route {
    let h = header.copied().unwrap_or_else(|| peek_header(buf));
    let kind = match MessageType::try_from(h.r#type) {
        Ok(MessageType::Request) if h.protocol == ExchangeProtocol::R as i32 => Some(Kind::OneWay),
        Ok(MessageType::Request) => Some(Kind::Request),
        Ok(MessageType::Ping) => Some(Kind::Ping),
        _ => None,
    };
    // The session needs nothing at or below its low-water mark.
    st.outstanding.drop_through(h.ack_up_to);
    if h.r#type == MessageType::Cancel as i32 {
        // An abandoned call's request is not sent again on a new connection.
        st.outstanding.remove(h.request_id);
    }
    let conn = st.conn.clone();
    let Some(kind) = kind else {
        return match conn {
            Some((_, outbox)) => Route::Write(outbox),
            None => Route::Dropped,
        };
    };
    let entry = st.outstanding.get_or_insert_with(h.request_id, || Pending {
        frame: Bytes::new(),
        kind,
        first_gen: None,
        stored_at: now,
        answered: false,
    });
    if entry.answered {
        return Route::Suppressed;
    }
    if entry.kind != kind {
        // A REQUEST after the call's PING: no connection has carried it
        // yet, whichever carried the PING.
        entry.first_gen = None;
    }
    entry.frame = keep();
    entry.kind = kind;
    entry.stored_at = now;
    let Some((gen, outbox)) = conn else {
        return Route::Kept;
    };
    match kind {
        Kind::Request if entry.first_gen == Some(gen) => Route::Suppressed,
        Kind::OneWay => {
            st.outstanding.remove(h.request_id);
            Route::Write(outbox)
        }
        _ => {
            entry.first_gen.get_or_insert(gen);
            Route::Write(outbox)
        }
    }
}

/// A copy of `frame` for a new connection: attempt + 1, the deadline
/// reduced by `elapsed` (the time since `frame` was made). `None` when its
/// deadline has passed, or, for a request without a deadline, when
/// `max_wait` has: its call has given up then. (Not `max_wait` for a
/// request with a deadline: over a healthy connection no copy refreshes
/// `frame`, so `elapsed` can pass `max_wait` while its call still waits.)
pub(super) fn refreshed(frame: &Bytes, elapsed: Duration, max_wait: Duration) -> Option<Bytes> {
    let mut env = Envelope::decode(frame.clone()).ok()?;
    env.attempt = env.attempt.saturating_add(1);
    if env.deadline_us == 0 && elapsed > max_wait {
        return None;
    }
    if env.deadline_us > 0 {
        let spent = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        if spent >= env.deadline_us {
            return None;
        }
        env.deadline_us -= spent;
    }
    Some(Bytes::from(env.encode_to_vec()))
}
