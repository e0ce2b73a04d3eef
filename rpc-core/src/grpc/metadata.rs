//! What travels in gRPC metadata: the session fields our two ends
//! exchange (`rpc-*`), the deadline (`grpc-timeout`) and the call's
//! [`Metadata`] map.

use crate::service::Metadata;
use std::time::Duration;
use tonic::metadata::{KeyAndValueRef, MetadataKey, MetadataMap, MetadataValue};

/// The per-call fields of our protocol, in one header (one HPACK literal
/// per call instead of five): `<session>.<request id>.<attempt>.<incarnation>.<ack_up_to>.<flags>`,
/// the numbers in decimal, `flags` any of `R` (protocol R), `A` (protocol
/// RRA; neither: RR), `a` (continue at the server's ACCEPT: asynchronous
/// and deferred calls), `i` (idempotent: no reply history), `c` (not a
/// request: the CANCEL of the session's request with this id, sent with an
/// empty message when the caller abandoned it). Its presence
/// marks a caller that speaks our protocol: the call goes through the
/// engine's duplicate filter and reply history. A server refuses a call
/// whose `rpc-call` is malformed, or has a zero session or attempt, with
/// INVALID_ARGUMENT (it never runs it as a plain call).
/// Example: `9311.17.1.5520.16.` (an RR call, the 17th of session 9311).
pub const CALL: &str = "rpc-call";
/// On a response: the server's incarnation (decimal).
pub const INCARNATION: &str = "rpc-incarnation";

/// The fields of [`CALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallHeader {
    /// Client session id (non-zero).
    pub session: u64,
    /// Request id within the session.
    pub request_id: u64,
    /// Which copy of the request this is (1 for the first).
    pub attempt: u32,
    /// The server incarnation the client last saw (0: none yet), on every
    /// copy: a server refuses a non-idempotent copy that names another.
    pub incarnation: u64,
    /// Every call of the session with an id up to this one has ended on
    /// the client: the server may drop their replies from its history.
    pub ack_up_to: u64,
    /// Protocol R (one-way).
    pub protocol_r: bool,
    /// Protocol RRA.
    pub protocol_rra: bool,
    /// The caller continues at the server's ACCEPT.
    pub accept: bool,
    /// The method is idempotent.
    pub idempotent: bool,
    /// A CANCEL of `request_id`, not a request (idl/PROTOCOL.md, 11.1).
    pub cancel: bool,
}

impl CallHeader {
    /// The header value.
    pub fn encode(&self) -> String {
        // Only ASCII digits, dots and flag letters are written.
        String::from_utf8_lossy(&self.encode_bytes()).into_owned()
    }

    /// The header value as bytes: digits written by hand, not through
    /// `format!` (a quarter of the client's per-call header cost).
    fn encode_bytes(&self) -> Vec<u8> {
        // Four u64 of at most 20 digits, a u32 of 10, five dots, five flags.
        let mut out = Vec::with_capacity(4 * 20 + 10 + 5 + 5);
        for n in [
            self.session,
            self.request_id,
            u64::from(self.attempt),
            self.incarnation,
            self.ack_up_to,
        ] {
            push_decimal(&mut out, n);
            out.push(b'.');
        }
        for (on, c) in [
            (self.protocol_r, b'R'),
            (self.protocol_rra, b'A'),
            (self.accept, b'a'),
            (self.idempotent, b'i'),
            (self.cancel, b'c'),
        ] {
            if on {
                out.push(c);
            }
        }
        out
    }

    /// Parses a header value; `None` when it is not six well-formed fields
    /// (five plain decimal numbers, no sign, then flags from `RAaic`).
    pub fn parse(value: &str) -> Option<CallHeader> {
        let mut parts = value.trim().as_bytes().split(|&b| b == b'.');
        let mut number = || parse_decimal(parts.next()?);
        let (session, request_id, attempt, incarnation, ack_up_to) =
            (number()?, number()?, number()?, number()?, number()?);
        let flags = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let mut h = CallHeader {
            session,
            request_id,
            attempt: u32::try_from(attempt).ok()?,
            incarnation,
            ack_up_to,
            ..CallHeader::default()
        };
        for &c in flags {
            match c {
                b'R' => h.protocol_r = true,
                b'A' => h.protocol_rra = true,
                b'a' => h.accept = true,
                b'i' => h.idempotent = true,
                b'c' => h.cancel = true,
                _ => return None,
            }
        }
        Some(h)
    }

    /// Puts the header on `map`, marked sensitive: HTTP/2 sends it as a
    /// never-indexed literal (it changes with every call, so indexing it
    /// would only churn the HPACK tables of both ends).
    pub fn put(&self, map: &mut MetadataMap) {
        if let Ok(mut value) = MetadataValue::try_from(self.encode_bytes()) {
            value.set_sensitive(true);
            map.insert(CALL, value);
        }
    }

    /// The header on `map`, if present and well-formed.
    pub fn get(map: &MetadataMap) -> Option<CallHeader> {
        CallHeader::parse(map.get(CALL)?.to_str().ok()?)
    }
}

/// Appends `n` in decimal, two digits per division (the session id has
/// about 20).
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    while n >= 100 {
        // Below 100: the index of a pair.
        #[allow(clippy::cast_possible_truncation)]
        let pair = (n % 100) as usize * 2;
        n /= 100;
        start -= 2;
        if let (Some(dst), Some(src)) =
            (digits.get_mut(start..start + 2), PAIRS.get(pair..pair + 2))
        {
            dst.copy_from_slice(src);
        }
    }
    // Below 100 now.
    #[allow(clippy::cast_possible_truncation)]
    let n = n as usize;
    if n >= 10 {
        start -= 2;
        if let (Some(dst), Some(src)) = (
            digits.get_mut(start..start + 2),
            PAIRS.get(n * 2..n * 2 + 2),
        ) {
            dst.copy_from_slice(src);
        }
    } else {
        start -= 1;
        if let Some(d) = digits.get_mut(start) {
            // A digit: below 10.
            #[allow(clippy::cast_possible_truncation)]
            let digit = n as u8;
            *d = b'0' + digit;
        }
    }
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
}

/// A plain decimal number (digits only, at least one, no overflow).
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &c| {
        let d = c.checked_sub(b'0').filter(|d| *d < 10)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// On a response: `1` when it is an ACCEPT (an empty message sent before
/// the handler finished), not the result.
pub const ACCEPTED: &str = "rpc-accepted";
/// Object instance (absent: the default instance).
pub const INSTANCE: &str = "rpc-instance";
/// The gRPC deadline header.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// Headers that are HTTP/2 or gRPC machinery, never user metadata.
const RESERVED: [&str; 8] = [
    "content-type",
    "date",
    "server",
    "te",
    "user-agent",
    "content-length",
    "accept-encoding",
    "host",
];

/// Whether `key` is reserved: ours (`rpc-`), gRPC's (`grpc-`) or HTTP's.
pub fn is_reserved(key: &str) -> bool {
    key.starts_with("rpc-")
        || key.starts_with("grpc-")
        || key.starts_with(':')
        || RESERVED.contains(&key)
}

/// The decimal number under `key`, if present and well-formed.
pub fn get_u64(map: &MetadataMap, key: &str) -> Option<u64> {
    map.get(key)?.to_str().ok()?.trim().parse().ok()
}

/// The ASCII value under `key`.
pub fn get_str<'a>(map: &'a MetadataMap, key: &str) -> Option<&'a str> {
    map.get(key)?.to_str().ok()
}

/// Inserts `value` under one of the `rpc-*` keys (always valid ASCII).
pub fn put(map: &mut MetadataMap, key: &'static str, value: impl ToString) {
    if let Ok(v) = MetadataValue::try_from(value.to_string()) {
        map.insert(key, v);
    }
}

/// Inserts a static value under one of the `rpc-*` keys.
pub fn put_static(map: &mut MetadataMap, key: &'static str, value: &'static str) {
    map.insert(key, MetadataValue::from_static(value));
}

/// The caller's metadata map: every ASCII entry that is not reserved.
/// Binary (`-bin`) entries and values that are not visible ASCII are not
/// part of it (they are skipped, logged at debug).
pub fn user_metadata(map: &MetadataMap) -> Metadata {
    let mut out = Metadata::new();
    for entry in map.iter() {
        match entry {
            KeyAndValueRef::Ascii(key, value) => {
                let key = key.as_str();
                if is_reserved(key) {
                    continue;
                }
                match value.to_str() {
                    Ok(v) => {
                        out.insert(key, v);
                    }
                    Err(_) => tracing::debug!(key, "metadata value is not visible ASCII; skipped"),
                }
            }
            KeyAndValueRef::Binary(key, _) => {
                tracing::debug!(key = key.as_str(), "binary metadata skipped")
            }
        }
    }
    out
}

/// Why a metadata entry cannot travel over gRPC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// The key is not a valid lowercase ASCII header name, ends in `-bin`,
    /// or is reserved (`rpc-`, `grpc-`, HTTP headers).
    #[error("metadata key {0:?} cannot travel over grpc")]
    Key(String),
    /// The value is not visible ASCII (0x20..=0x7e).
    #[error("metadata value of {0:?} is not visible ascii")]
    Value(String),
}

/// Adds the caller's metadata to a request's metadata.
///
/// # Errors
/// [`MetadataError`] for the first entry that cannot travel as gRPC ASCII
/// metadata.
pub fn put_user_metadata(map: &mut MetadataMap, metadata: &Metadata) -> Result<(), MetadataError> {
    for (k, v) in metadata {
        put_entry(map, k, v)?;
    }
    Ok(())
}

/// Adds one entry, if it can travel as gRPC ASCII metadata.
fn put_entry(map: &mut MetadataMap, k: &str, v: &str) -> Result<(), MetadataError> {
    if is_reserved(k) || k.ends_with("-bin") || k.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(MetadataError::Key(k.to_owned()));
    }
    let key =
        MetadataKey::from_bytes(k.as_bytes()).map_err(|_| MetadataError::Key(k.to_owned()))?;
    if !v.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(MetadataError::Value(k.to_owned()));
    }
    let value = MetadataValue::try_from(v).map_err(|_| MetadataError::Value(k.to_owned()))?;
    map.insert(key, value);
    Ok(())
}

/// Adds an answer's metadata to a response's headers or trailers,
/// skipping (logged at debug) each entry that cannot travel as gRPC ASCII
/// metadata; returns how many were skipped.
pub fn put_reply_metadata(map: &mut MetadataMap, metadata: &Metadata) -> usize {
    let mut skipped = 0;
    for (k, v) in metadata {
        if let Err(error) = put_entry(map, k, v) {
            tracing::debug!(%error, "reply metadata entry cannot travel over gRPC; skipped");
            skipped += 1;
        }
    }
    skipped
}

/// Parses a `grpc-timeout` value: 1 to 8 digits and a unit (`H`, `M`, `S`,
/// `m`, `u`, `n`).
pub fn parse_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats `timeout` as a `grpc-timeout` value, in the finest unit that
/// fits in 8 digits, rounded up (a positive timeout never becomes zero).
pub fn format_timeout(timeout: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let nanos = timeout.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (per, unit) in units {
        let n = nanos.div_ceil(per);
        if n <= MAX {
            return format!("{n}{unit}");
        }
    }
    format!("{MAX}H")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_written_as_format_writes_them() {
        let mut samples = vec![0, u64::MAX, u64::MAX - 1];
        let mut p = 1u64;
        while let Some(next) = p.checked_mul(10) {
            samples.extend([p - 1, p, p + 1, p * 5 + 3]);
            p = next;
        }
        samples.extend([p - 1, p, p + 1]);
        for n in samples {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    #[test]
    fn the_call_header_round_trips_and_rejects_garbage() {
        let h = CallHeader {
            session: u64::MAX,
            request_id: 17,
            attempt: 2,
            incarnation: 5520,
            ack_up_to: 16,
            protocol_rra: true,
            accept: true,
            ..CallHeader::default()
        };
        assert_eq!(h.encode(), format!("{}.17.2.5520.16.Aa", u64::MAX));
        assert_eq!(CallHeader::parse(&h.encode()), Some(h));
        let cancel = CallHeader {
            cancel: true,
            ..CallHeader::default()
        };
        assert_eq!(cancel.encode(), "0.0.0.0.0.c");
        assert_eq!(CallHeader::parse("0.0.0.0.0.c"), Some(cancel));
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            12345,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let h = CallHeader {
                session: n,
                request_id: n,
                attempt: u32::try_from(n).unwrap_or(u32::MAX),
                incarnation: n,
                ack_up_to: n,
                protocol_r: true,
                idempotent: true,
                ..CallHeader::default()
            };
            let a = u32::try_from(n).unwrap_or(u32::MAX);
            assert_eq!(h.encode(), format!("{n}.{n}.{a}.{n}.{n}.Ri"));
            assert_eq!(CallHeader::parse(&h.encode()), Some(h));
        }
        assert_eq!(
            CallHeader::parse("1.2.1.0.0."),
            Some(CallHeader {
                session: 1,
                request_id: 2,
                attempt: 1,
                ..CallHeader::default()
            })
        );
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4.5",
            "1.2.3.4.5.x",
            "1.2.3.4.5..",
            "a.2.3.4.5.",
            "1.2.99999999999.4.5.",
            "+1.2.3.4.5.",
            "1.2.3.4.18446744073709551616.",
            "1.2..4.5.",
            "1.2.3.4.5.Rx",
        ] {
            assert_eq!(CallHeader::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn timeouts_round_trip() {
        assert_eq!(parse_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_timeout("123456789m"), None);
        assert_eq!(parse_timeout("m"), None);
        assert_eq!(parse_timeout(""), None);
        assert_eq!(parse_timeout("1x"), None);
        for d in [
            Duration::from_nanos(5),
            Duration::from_millis(250),
            Duration::from_secs(100_000),
            Duration::from_secs(10 << 30),
        ] {
            let back = parse_timeout(&format_timeout(d)).unwrap_or_default();
            assert!(
                back >= d && back.as_secs_f64() <= d.as_secs_f64() * 1.0001 + 1e-6,
                "{d:?} -> {back:?}"
            );
        }
    }

    #[test]
    fn user_metadata_skips_reserved_and_binary() {
        let mut map = MetadataMap::new();
        let mut user = Metadata::new();
        user.insert("trace-id", "abc");
        assert!(put_user_metadata(&mut map, &user).is_ok());
        put(&mut map, INCARNATION, 7u64);
        map.insert_bin(
            "blob-bin",
            tonic::metadata::MetadataValue::from_bytes(b"\x00\x01"),
        );
        assert_eq!(user_metadata(&map), user);
        assert_eq!(get_u64(&map, INCARNATION), Some(7));
        let mut bad = Metadata::new();
        bad.insert("grpc-x", "1");
        assert!(put_user_metadata(&mut map, &bad).is_err());
        let mut bad = Metadata::new();
        bad.insert("k", "é");
        assert_eq!(
            put_user_metadata(&mut map, &bad),
            Err(MetadataError::Value("k".into()))
        );
    }
}
