//! The protobuf encoding of metadata as the envelope's field
//! `map<string, string> metadata`: one length-delimited entry message
//! (key = 1, value = 2) per pair, byte for byte what prost writes for a
//! map, read without a hash table or an allocation per string.

use super::{Entry, Metadata};
use prost::encoding::{
    decode_key, decode_varint, encode_key, encode_varint, encoded_len_varint, key_len, skip_field,
    DecodeContext, WireType,
};
use prost::DecodeError;

fn string_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        key_len(tag) + encoded_len_varint(s.len() as u64) + s.len()
    }
}

fn entry_len(key: &str, value: &str) -> usize {
    string_len(1, key) + string_len(2, value)
}

fn put_string(tag: u32, s: &str, buf: &mut impl bytes::BufMut) {
    if !s.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(s.len() as u64, buf);
        buf.put_slice(s.as_bytes());
    }
}

/// Bytes that [`encode`] writes.
pub(crate) fn encoded_len(tag: u32, md: &Metadata) -> usize {
    md.iter()
        .map(|(k, v)| {
            let len = entry_len(k, v);
            key_len(tag) + encoded_len_varint(len as u64) + len
        })
        .sum()
}

/// Writes every entry as field `tag`.
pub(crate) fn encode(tag: u32, md: &Metadata, buf: &mut impl bytes::BufMut) {
    for (k, v) in md {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(entry_len(k, v) as u64, buf);
        put_string(1, k, buf);
        put_string(2, v, buf);
    }
}

#[allow(deprecated)] // prost offers no other way to make a decode error of one's own.
fn error(message: &'static str) -> DecodeError {
    DecodeError::new(message)
}

/// Reads `len` bytes of `buf` as UTF-8 onto the end of `text`.
fn read_str(len: usize, buf: &mut impl bytes::Buf, text: &mut String) -> Result<(), DecodeError> {
    if len > buf.remaining() {
        return Err(error("buffer underflow"));
    }
    let chunk = buf.chunk();
    if chunk.len() >= len {
        let s = std::str::from_utf8(&chunk[..len])
            .map_err(|_| error("invalid string value: data is not UTF-8 encoded"))?;
        text.push_str(s);
    } else {
        let mut bytes = vec![0; len];
        buf.copy_to_slice(&mut bytes);
        let s = std::str::from_utf8(&bytes)
            .map_err(|_| error("invalid string value: data is not UTF-8 encoded"))?;
        text.push_str(s);
        return Ok(());
    }
    buf.advance(len);
    Ok(())
}

/// Reads one entry (the field's value, after its key) into `md`; a
/// later entry with the same key replaces an earlier one, as for a
/// protobuf map. Refuses an entry that takes `md` over `max_entries`
/// or `max_bytes`.
pub(crate) fn merge_entry(
    wire_type: WireType,
    md: &mut Metadata,
    buf: &mut impl bytes::Buf,
    ctx: DecodeContext,
    (max_entries, max_bytes): (usize, usize),
) -> Result<(), DecodeError> {
    if wire_type != WireType::LengthDelimited {
        return Err(error("invalid wire type for a metadata entry"));
    }
    let len = usize::try_from(decode_varint(buf)?).map_err(|_| error("entry too long"))?;
    if len > buf.remaining() {
        return Err(error("buffer underflow"));
    }
    if md.text.is_empty() {
        md.text.reserve(len.max(128));
    }
    let chunk = buf.chunk();
    if let Some((k, v)) = chunk.get(..len).and_then(canonical_entry) {
        // One check of the whole entry: its other bytes (tags, short
        // lengths) are ASCII, so it is UTF-8 exactly when the key and
        // the value are.
        if let Ok(whole) = std::str::from_utf8(&chunk[..len]) {
            let (key, value) = (
                whole.get(k).unwrap_or_default(),
                whole.get(v).unwrap_or_default(),
            );
            md.insert(key, value);
            buf.advance(len);
            return within_caps(md, max_entries, max_bytes);
        }
    }
    let end = buf.remaining() - len;
    let start = md.text.len();
    let (mut key_at, mut value_at) = (None, None);
    while buf.remaining() > end {
        let (field, wire) = decode_key(buf)?;
        match (field, wire) {
            (1 | 2, WireType::LengthDelimited) => {
                let n =
                    usize::try_from(decode_varint(buf)?).map_err(|_| error("string too long"))?;
                // A key or length may run past the entry's end (a
                // hostile entry): then nothing of it is left.
                let room = buf
                    .remaining()
                    .checked_sub(end)
                    .ok_or_else(|| error("delimited length exceeded"))?;
                if n > room {
                    return Err(error("buffer underflow"));
                }
                let from = md.text.len();
                read_str(n, buf, &mut md.text)?;
                let at = Some((from, md.text.len()));
                if field == 1 {
                    key_at = at;
                } else {
                    value_at = at;
                }
            }
            _ => skip_field(wire, field, buf, ctx.clone())?,
        }
    }
    if buf.remaining() != end {
        return Err(error("delimited length exceeded"));
    }
    // A missing field is the empty string; the last copy of a field wins.
    let key_at = key_at.unwrap_or((start, start));
    let value_at = value_at.unwrap_or((md.text.len(), md.text.len()));
    if key_at.0 == start && key_at.1 == value_at.0 && value_at.1 == md.text.len() {
        // Key then value, as every encoder writes them: already in place.
        let key = md.text.get(key_at.0..key_at.1).unwrap_or_default();
        let existing = md.position(key);
        let entry = Entry {
            start,
            key_len: key_at.1 - key_at.0,
            value_len: value_at.1 - value_at.0,
        };
        md.set_entry(existing, entry);
    } else {
        let key = md
            .text
            .get(key_at.0..key_at.1)
            .unwrap_or_default()
            .to_owned();
        let value = md
            .text
            .get(value_at.0..value_at.1)
            .unwrap_or_default()
            .to_owned();
        md.text.truncate(start);
        md.insert(&key, &value);
    }
    within_caps(md, max_entries, max_bytes)
}

fn within_caps(md: &Metadata, max_entries: usize, max_bytes: usize) -> Result<(), DecodeError> {
    if md.len() > max_entries {
        return Err(error("more than 64 metadata entries"));
    }
    if md.text_len() > max_bytes {
        return Err(error("more than 16 KiB of metadata"));
    }
    Ok(())
}

/// Where the key and value are in an entry written as every encoder
/// writes a short one (`0x0a len key 0x12 len value`, each string
/// under 128 bytes, either absent when empty); `None` for any other
/// shape, which the general reader takes.
fn canonical_entry(b: &[u8]) -> Option<(std::ops::Range<usize>, std::ops::Range<usize>)> {
    let mut at = 0;
    let mut key = 0..0;
    if b.first() == Some(&0x0a) {
        let n = usize::from(*b.get(1)?);
        if n >= 0x80 {
            return None;
        }
        key = 2..2 + n;
        at = key.end;
    }
    let mut value = at..at;
    if at < b.len() {
        if b[at] != 0x12 {
            return None;
        }
        let n = usize::from(*b.get(at + 1)?);
        if n >= 0x80 {
            return None;
        }
        value = at + 2..at + 2 + n;
        at = value.end;
    }
    (at == b.len()).then_some((key, value))
}
