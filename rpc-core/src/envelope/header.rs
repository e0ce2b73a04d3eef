//! Reading an encoded envelope's scalar fields without decoding it: what
//! a transport needs to route a message (its type, request id, session,
//! attempt, ...) or to answer one it will not decode (an oversized frame),
//! without walking over or copying the payload.

use super::tag;
use std::ops::ControlFlow;

/// Envelope fields read by [`peek_header`] (zero when absent).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnvelopeHeader {
    /// `type` (a [`MessageType`](super::MessageType) number).
    pub r#type: i32,
    /// `request_id`.
    pub request_id: u64,
    /// `session_id`.
    pub session_id: u64,
    /// `incarnation`.
    pub incarnation: u64,
    /// `attempt`.
    pub attempt: u32,
    /// `protocol` (an [`ExchangeProtocol`](super::ExchangeProtocol) number).
    pub protocol: i32,
    /// `ack_up_to`.
    pub ack_up_to: u64,
    /// `want_accept`.
    pub want_accept: bool,
    /// Every field was read (the bytes were not cut short or malformed).
    pub complete: bool,
}

impl EnvelopeHeader {
    /// The header of `env`, as [`peek_header`] would read it from its
    /// encoding.
    pub(crate) fn of(env: &super::Envelope) -> EnvelopeHeader {
        EnvelopeHeader {
            r#type: env.r#type,
            request_id: env.request_id,
            session_id: env.session_id,
            incarnation: env.incarnation,
            attempt: env.attempt,
            protocol: env.protocol,
            ack_up_to: env.ack_up_to,
            want_accept: env.want_accept,
            complete: true,
        }
    }
}

/// Reads the scalar fields of an encoded envelope without decoding (or
/// copying) its strings, payload and metadata: length-delimited fields are
/// skipped by their length. Stops at the first field that is cut short or
/// malformed (then `complete` is false); never panics.
pub fn peek_header(bytes: &[u8]) -> EnvelopeHeader {
    let mut h = EnvelopeHeader::default();
    // Truncation to the field's width is what protobuf does.
    #[allow(clippy::cast_possible_truncation)]
    let complete = scan_scalars(bytes, |field, wire, v| {
        match (wire, field) {
            (0, tag::TYPE) => h.r#type = v as i32,
            (0, tag::REQUEST_ID) => h.request_id = v,
            (0, tag::ATTEMPT) => h.attempt = v as u32,
            (0, tag::PROTOCOL) => h.protocol = v as i32,
            (0, tag::ACK_UP_TO) => h.ack_up_to = v,
            (0, tag::WANT_ACCEPT) => h.want_accept = v != 0,
            (1, tag::SESSION_ID) => h.session_id = v,
            (1, tag::INCARNATION) => h.incarnation = v,
            _ => {}
        }
        ControlFlow::Continue(())
    });
    h.complete = complete;
    h
}

/// Reads the `type` and `request_id` of an encoded envelope (zero when
/// absent): as [`peek_header`], but stops as soon as both are read, which
/// is at the front of every envelope this crate encodes (fields are
/// written in field order), so a large payload is never walked over.
pub fn peek_type_and_id(bytes: &[u8]) -> (i32, u64) {
    let (mut r#type, mut request_id) = (None, None);
    scan_scalars(bytes, |field, wire, v| {
        match (wire, field) {
            // Truncation to the field's width is what protobuf does.
            #[allow(clippy::cast_possible_truncation)]
            (0, tag::TYPE) => r#type = Some(v as i32),
            (0, tag::REQUEST_ID) => request_id = Some(v),
            _ => {}
        }
        if r#type.is_some() && request_id.is_some() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    (r#type.unwrap_or(0), request_id.unwrap_or(0))
}

/// Walks the fields of an encoded message: hands every varint (wire type
/// 0) and fixed64 (wire type 1) field to `visit` as (field, wire type,
/// value; a field number beyond `u32` is passed as `u32::MAX`, which no
/// envelope field has), skips the length-delimited and fixed32 ones by their length,
/// until the input ends or `visit` breaks. Returns `true` when the whole
/// input was walked, `false` when it stopped at a field cut short or
/// malformed (or `visit` broke). Never panics.
fn scan_scalars(mut bytes: &[u8], mut visit: impl FnMut(u32, u64, u64) -> ControlFlow<()>) -> bool {
    while !bytes.is_empty() {
        let Some(key) = varint(&mut bytes) else {
            return false;
        };
        let (field, wire) = (u32::try_from(key >> 3).unwrap_or(u32::MAX), key & 7);
        let value = match wire {
            0 => match varint(&mut bytes) {
                Some(v) => v,
                None => return false,
            },
            1 => {
                let Some((word, rest)) = bytes.split_first_chunk::<8>() else {
                    return false;
                };
                bytes = rest;
                u64::from_le_bytes(*word)
            }
            2 => {
                let rest = varint(&mut bytes)
                    .and_then(|len| usize::try_from(len).ok())
                    .and_then(|len| bytes.get(len..));
                match rest {
                    Some(rest) => bytes = rest,
                    None => return false,
                }
                continue;
            }
            5 => {
                match bytes.get(4..) {
                    Some(rest) => bytes = rest,
                    None => return false,
                }
                continue;
            }
            _ => return false,
        };
        if visit(field, wire, value).is_break() {
            return false;
        }
    }
    true
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    // Keys and most values of an envelope are one byte.
    if let Some((&b, rest)) = bytes.split_first() {
        if b < 0x80 {
            *bytes = rest;
            return Some(u64::from(b));
        }
    }
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::envelope::{Envelope, MessageType, VERSION};
    use bytes::Bytes;
    use prost::Message;

    fn env() -> Envelope {
        Envelope {
            version: VERSION,
            r#type: MessageType::Request as i32,
            request_id: 300,
            session_id: 0xdead_beef_0102_0304,
            service: "a.B".into(),
            incarnation: 9,
            attempt: 3,
            payload: Bytes::from(vec![7u8; 1000]),
            metadata: [("k".to_owned(), "v".to_owned())].into_iter().collect(),
            protocol: 3,
            ack_up_to: 299,
            want_accept: true,
            ..Default::default()
        }
    }

    #[test]
    fn peek_reads_scalars_and_skips_the_rest() {
        let bytes = env().encode_to_vec();
        let h = peek_header(&bytes);
        assert!(h.complete);
        assert_eq!(
            (h.r#type, h.request_id, h.session_id, h.incarnation),
            (1, 300, 0xdead_beef_0102_0304, 9)
        );
        assert_eq!(
            (h.attempt, h.protocol, h.ack_up_to, h.want_accept),
            (3, 3, 299, true)
        );
        // cut short: the leading fields are still there
        let h = peek_header(&bytes[..40]);
        assert!(!h.complete);
        assert_eq!(
            (h.r#type, h.request_id, h.session_id),
            (1, 300, 0xdead_beef_0102_0304)
        );
        // garbage never panics
        for n in 0..64u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37).wrapping_add(n)).collect();
            let _ = peek_header(&junk);
        }
        assert!(!peek_header(&[0xff; 11]).complete);
    }

    #[test]
    fn peek_type_and_id_agrees_with_peek_header() {
        let bytes = env().encode_to_vec();
        assert_eq!(peek_type_and_id(&bytes), (1, 300));
        // fields in another order, and absent ones
        let mut reordered = Vec::new();
        prost::encoding::uint64::encode(3, &77, &mut reordered);
        prost::encoding::int32::encode(2, &5, &mut reordered);
        assert_eq!(peek_type_and_id(&reordered), (5, 77));
        assert_eq!(peek_type_and_id(&reordered[..2]), (0, 77));
        assert_eq!(peek_type_and_id(&[]), (0, 0));
        for n in 0..64u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37).wrapping_add(n)).collect();
            let h = peek_header(&junk);
            if h.complete {
                assert_eq!(peek_type_and_id(&junk), (h.r#type, h.request_id));
            }
        }
    }
}
