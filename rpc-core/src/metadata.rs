//! [`Metadata`]: the string pairs carried with a call and its answer.
//!
//! A small map kept as one text buffer and a list of entries, in the order
//! they were set: a call carries a handful of entries (a token, a trace
//! parent, logical clocks), so a linear scan finds a key faster than
//! hashing it, and a decoded envelope's metadata costs two allocations
//! whatever its number of entries (it cost two per entry and a hash table
//! as a `HashMap<String, String>`, a quarter of the per-call cost of three
//! interceptors).
//!
//! ```
//! use rpc_core::Metadata;
//!
//! let mut md = Metadata::new();
//! md.insert("tenant", "blue");
//! md.insert("tenant", "green"); // replaces
//! assert_eq!(md.get("tenant"), Some("green"));
//! assert_eq!(md.len(), 1);
//! let pairs: Vec<(&str, &str)> = md.iter().collect();
//! assert_eq!(pairs, [("tenant", "green")]);
//! ```

use std::fmt;

/// Metadata carried with a call or its answer (logical clocks, auth
/// tokens, trace context, ...): string keys to string values, one value a
/// key. Keys are lowercase ASCII by convention, as in gRPC. Iteration
/// follows the order entries were first set; equality ignores order.
#[derive(Clone, Default)]
pub struct Metadata {
    /// Every key and value, back to back (with the text of replaced and
    /// removed entries until the next compaction).
    text: String,
    /// Where each live entry's key and value are in `text`.
    entries: Vec<Entry>,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    start: usize,
    key_len: usize,
    value_len: usize,
}

impl Entry {
    fn key<'a>(&self, text: &'a str) -> &'a str {
        text.get(self.start..self.start + self.key_len)
            .unwrap_or_default()
    }

    fn value<'a>(&self, text: &'a str) -> &'a str {
        let from = self.start + self.key_len;
        text.get(from..from + self.value_len).unwrap_or_default()
    }

    fn len(&self) -> usize {
        self.key_len + self.value_len
    }
}

impl Metadata {
    /// No entries (allocates nothing).
    pub const fn new() -> Metadata {
        Metadata {
            text: String::new(),
            entries: Vec::new(),
        }
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The bytes of every key and value together (what the envelope's
    /// caps count).
    pub fn text_len(&self) -> usize {
        self.entries.iter().map(Entry::len).sum()
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.key(&self.text) == key)
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.key(&self.text) == key)
            .map(|e| e.value(&self.text))
    }

    /// Whether `key` is set.
    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// Sets `key` to `value`; true if it replaced a value (which keeps the
    /// key's place in the order).
    pub fn insert(&mut self, key: impl AsRef<str>, value: impl AsRef<str>) -> bool {
        let (key, value) = (key.as_ref(), value.as_ref());
        let position = self.position(key);
        if self.text.is_empty() {
            // Room for the usual few entries at once.
            self.text.reserve(128.max(key.len() + value.len()));
        }
        let entry = self.push_text(key, value);
        match position {
            Some(i) => {
                self.entries[i] = entry;
                self.compact_if_wasteful();
                true
            }
            None => {
                self.entries.push(entry);
                false
            }
        }
    }

    fn push_text(&mut self, key: &str, value: &str) -> Entry {
        let start = self.text.len();
        self.text.push_str(key);
        self.text.push_str(value);
        Entry {
            start,
            key_len: key.len(),
            value_len: value.len(),
        }
    }

    /// Removes `key`; its value, if it was set.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let i = self.position(key)?;
        let value = self.entries[i].value(&self.text).to_owned();
        self.entries.remove(i);
        self.compact_if_wasteful();
        Some(value)
    }

    /// Removes `key`; whether it was set (as [`Metadata::remove`], without
    /// copying the value out).
    pub fn discard(&mut self, key: &str) -> bool {
        match self.position(key) {
            Some(i) => {
                self.entries.remove(i);
                self.compact_if_wasteful();
                true
            }
            None => false,
        }
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.text.clear();
        self.entries.clear();
    }

    /// Keeps only the entries for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        let text = &self.text;
        self.entries.retain(|e| keep(e.key(text), e.value(text)));
        self.compact_if_wasteful();
    }

    /// The entries, in the order their keys were first set.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            text: &self.text,
            entries: self.entries.iter(),
        }
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(k, _)| k)
    }

    /// Rewrites the text without what replaced and removed entries left,
    /// once that is more than half of it.
    fn compact_if_wasteful(&mut self) {
        let live = self.text_len();
        if self.text.len() <= 256 || live * 2 >= self.text.len() {
            return;
        }
        let mut text = String::with_capacity(live);
        for e in &mut self.entries {
            let start = text.len();
            text.push_str(e.key(&self.text));
            text.push_str(e.value(&self.text));
            e.start = start;
        }
        self.text = text;
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl PartialEq for Metadata {
    fn eq(&self, other: &Metadata) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl Eq for Metadata {}

/// The entries of a [`Metadata`], in order.
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    text: &'a str,
    entries: std::slice::Iter<'a, Entry>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<(&'a str, &'a str)> {
        let e = self.entries.next()?;
        Some((e.key(self.text), e.value(self.text)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Metadata {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Owned pairs (one allocation per string; borrow with [`Metadata::iter`]
/// where that is enough).
impl IntoIterator for Metadata {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect::<Vec<_>>()
            .into_iter()
    }
}

/// `md["key"]`, as for a `HashMap`.
///
/// # Panics
/// When `key` is not set (use [`Metadata::get`] otherwise).
impl std::ops::Index<&str> for Metadata {
    type Output = str;

    fn index(&self, key: &str) -> &str {
        match self.get(key) {
            Some(value) => value,
            None => panic!("no metadata entry {key:?}"),
        }
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Extend<(K, V)> for Metadata {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Metadata {
        let mut md = Metadata::new();
        md.extend(iter);
        md
    }
}

/// The protobuf encoding of metadata as the envelope's field
/// `map<string, string> metadata`: one length-delimited entry message
/// (key = 1, value = 2) per pair, byte for byte what prost writes for a
/// map, read without a hash table or an allocation per string.
pub(crate) mod wire {
    use super::Metadata;
    use prost::encoding::{
        decode_key, decode_varint, encode_key, encode_varint, encoded_len_varint, key_len,
        skip_field, DecodeContext, WireType,
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
    fn read_str(
        len: usize,
        buf: &mut impl bytes::Buf,
        text: &mut String,
    ) -> Result<(), DecodeError> {
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
                let existing = md.position(key);
                let entry = md.push_text(key, value);
                match existing {
                    Some(i) => {
                        md.entries[i] = entry;
                        md.compact_if_wasteful();
                    }
                    None => md.entries.push(entry),
                }
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
                    let n = usize::try_from(decode_varint(buf)?)
                        .map_err(|_| error("string too long"))?;
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
            let existing = md.entries.iter().position(|e| e.key(&md.text) == key);
            let entry = super::Entry {
                start,
                key_len: key_at.1 - key_at.0,
                value_len: value_at.1 - value_at.0,
            };
            match existing {
                Some(i) => {
                    md.entries[i] = entry;
                    md.compact_if_wasteful();
                }
                None => md.entries.push(entry),
            }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replace_remove_keep_order_and_compact() {
        let mut md = Metadata::new();
        assert!(!md.insert("a", "1"));
        assert!(!md.insert(String::from("b"), "2"));
        assert!(md.insert("a", "3"));
        assert_eq!(md.iter().collect::<Vec<_>>(), [("a", "3"), ("b", "2")]);
        assert_eq!(md.remove("a").as_deref(), Some("3"));
        assert!(!md.discard("a"));
        assert_eq!(md.get("b"), Some("2"));
        for i in 0..200 {
            md.insert("x", i.to_string());
        }
        assert!(
            md.text.len() <= 256 + 8,
            "replaced values are compacted away"
        );
        assert_eq!(md.get("x"), Some("199"));
        assert_eq!(md.text_len(), 2 + 4);
    }

    #[test]
    fn equality_ignores_order() {
        let a: Metadata = [("k", "v"), ("j", "w")].into_iter().collect();
        let b: Metadata = [("j", "w"), ("k", "v")].into_iter().collect();
        assert_eq!(a, b);
        let c: Metadata = [("j", "w"), ("k", "x")].into_iter().collect();
        assert_ne!(a, c);
        assert_eq!(format!("{a:?}"), r#"{"k": "v", "j": "w"}"#);
    }

    #[test]
    fn wire_format_is_prosts_map_and_reads_back() {
        use prost::encoding::{hash_map, string, DecodeContext, WireType};
        let md: Metadata = [
            ("traceparent", "00-ab-cd-01"),
            ("", "empty key"),
            ("empty value", ""),
        ]
        .into_iter()
        .collect();
        let mut ours = Vec::new();
        wire::encode(13, &md, &mut ours);
        assert_eq!(ours.len(), wire::encoded_len(13, &md));
        // Each entry as prost writes a one-entry map.
        let mut theirs = Vec::new();
        for (k, v) in &md {
            let one: std::collections::HashMap<String, String> =
                [(k.to_owned(), v.to_owned())].into_iter().collect();
            hash_map::encode(
                string::encode,
                string::encoded_len,
                string::encode,
                string::encoded_len,
                13,
                &one,
                &mut theirs,
            );
        }
        assert_eq!(ours, theirs);

        let mut back = Metadata::new();
        let mut buf = &ours[..];
        while !buf.is_empty() {
            let (tag, wire) = prost::encoding::decode_key(&mut buf).expect("key");
            assert_eq!((tag, wire), (13, WireType::LengthDelimited));
            wire::merge_entry(
                wire,
                &mut back,
                &mut buf,
                DecodeContext::default(),
                (64, 16 << 10),
            )
            .expect("entry");
        }
        assert_eq!(back, md);
    }

    #[test]
    fn random_bytes_never_panic_and_agree_with_prost() {
        use prost::encoding::{hash_map, string, DecodeContext, WireType};
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let alphabet = [
            0x0a, 0x12, 0x18, 0x80, 0x00, 0x01, 0x02, 0x03, 0x7f, 0xff, 0xc3, 0xa9, b'k',
        ];
        for _ in 0..20_000 {
            let len = rng.random_range(0..12);
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            let mut ours = Metadata::new();
            let mut buf = &bytes[..];
            let mine = wire::merge_entry(
                WireType::LengthDelimited,
                &mut ours,
                &mut buf,
                DecodeContext::default(),
                (64, 16 << 10),
            );
            let mut theirs = std::collections::HashMap::<String, String>::new();
            let mut buf = &bytes[..];
            let prost = hash_map::merge(
                string::merge,
                string::merge,
                &mut theirs,
                &mut buf,
                DecodeContext::default(),
            );
            assert_eq!(mine.is_ok(), prost.is_ok(), "{bytes:02x?}");
            if mine.is_ok() {
                assert_eq!(ours, theirs.iter().collect::<Metadata>(), "{bytes:02x?}");
            }
        }
    }

    #[test]
    fn hostile_entries_are_refused_or_read_as_protobuf_reads_them() {
        use prost::encoding::{DecodeContext, WireType};
        let read = |bytes: &[u8]| {
            let mut md = Metadata::new();
            let mut buf = bytes;
            wire::merge_entry(
                WireType::LengthDelimited,
                &mut md,
                &mut buf,
                DecodeContext::default(),
                (2, 16),
            )
            .map(|()| md)
        };
        // Value before key, an unknown field between them, a repeated key.
        let md = read(&[11, 0x12, 1, b'v', 0x18, 7, 0x0a, 1, b'x', 0x0a, 1, b'k']).expect("valid");
        assert_eq!(md.iter().collect::<Vec<_>>(), [("k", "v")]);
        assert!(
            read(&[3, 0x0a, 5, b'k']).is_err(),
            "string longer than the entry"
        );
        assert!(
            read(&[9, 0x0a, 1, b'k']).is_err(),
            "entry longer than the buffer"
        );
        assert!(read(&[4, 0x0a, 2, 0xff, 0xfe]).is_err(), "not UTF-8");
        // A length that runs past the entry into what follows it.
        assert!(
            read(&[2, 0x0a, 0x80, 0x00, 0x00, 0x00]).is_err(),
            "length past the entry"
        );
        assert!(
            read(&[1, 0x0a, 0x03, b'a', b'b', b'c']).is_err(),
            "key past the entry"
        );
        assert!(
            read(&[7, 0x0a, 1, b'k', 0x12, 2, 0xc3, 0x28]).is_err(),
            "not UTF-8, usual shape"
        );
        let md = read(&[8, 0x0a, 1, b'k', 0x12, 3, 0xc3, 0xa9, b'!']).expect("UTF-8 value");
        assert_eq!(md.get("k"), Some("\u{e9}!"));
        let md = read(&[3, 0x12, 1, b'v']).expect("no key");
        assert_eq!(md.get(""), Some("v"));
        assert!(
            read(&[
                19, 0x0a, 17, b'k', b'k', b'k', b'k', b'k', b'k', b'k', b'k', b'k', b'k', b'k',
                b'k', b'k', b'k', b'k', b'k', b'k'
            ])
            .is_err(),
            "over the byte cap"
        );
    }
}
