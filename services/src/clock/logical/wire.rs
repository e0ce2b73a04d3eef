//! Numbers and values as the clocks write them into call metadata and
//! read them back: decimals without allocation, and the refusal of a
//! malformed value (`INVALID_ARGUMENT`, naming the key and the value).

use rpc_core::{Metadata, Status};
use std::fmt;
use std::str::FromStr;

/// Appends `v` in decimal.
pub(super) fn push_decimal(out: &mut impl fmt::Write, v: impl itoa::Integer) -> fmt::Result {
    out.write_str(itoa::Buffer::new().format(v))
}

/// A decimal without sign (digits only, at least one), if it fits.
pub(super) fn decimal(digits: &[u8]) -> Option<u64> {
    // 19 digits never overflow a u64; only a 20th needs checking.
    let (head, last) = match digits.len() {
        0 | 21.. => return None,
        20 => (&digits[..19], Some(digits[19])),
        _ => (digits, None),
    };
    let mut v = 0u64;
    for &b in head {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + u64::from(d);
    }
    match last {
        None => Some(v),
        Some(b) => {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            v.checked_mul(10)?.checked_add(u64::from(d))
        }
    }
}

/// [`decimal`] as the named kind of number, or why not.
pub(super) fn number<T: TryFrom<u64>>(what: &str, digits: &[u8]) -> Result<T, String> {
    decimal(digits)
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| {
            format!(
                "{what} {:?} is not a decimal {}",
                String::from_utf8_lossy(digits),
                std::any::type_name::<T>()
            )
        })
}

pub(super) fn malformed(key: &str, value: &str, why: impl fmt::Display) -> Status {
    Status::invalid_argument(format!("malformed {key} metadata {value:?}: {why}"))
}

/// Reads `key` from `md` and parses it; `Ok(None)` when absent.
pub(super) fn parse<T: FromStr>(md: &Metadata, key: &str) -> Result<Option<T>, Status>
where
    T::Err: fmt::Display,
{
    match md.get(key) {
        None => Ok(None),
        Some(v) => v.parse::<T>().map(Some).map_err(|e| malformed(key, v, e)),
    }
}

/// The leading decimal of `b[from..]` (1 to 19 digits, so no overflow)
/// and where it ends.
pub(super) fn leading_decimal(b: &[u8], from: usize) -> Option<(u64, usize)> {
    let mut v = 0u64;
    let mut at = from;
    while let Some(d) = b.get(at).map(|c| c.wrapping_sub(b'0')).filter(|&d| d <= 9) {
        if at - from == 19 {
            return None;
        }
        v = v * 10 + u64::from(d);
        at += 1;
    }
    (at > from).then_some((v, at))
}
