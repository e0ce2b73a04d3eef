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

/// The value of an entry being written ([`Metadata::insert_with`]): text
/// can only be appended to it.
#[derive(Debug)]
pub struct ValueWriter<'a> {
    text: &'a mut String,
}

impl ValueWriter<'_> {
    /// Appends `s`.
    #[inline]
    pub fn push_str(&mut self, s: &str) {
        self.text.push_str(s);
    }
}

impl fmt::Write for ValueWriter<'_> {
    #[inline]
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.text.push_str(s);
        Ok(())
    }

    #[inline]
    fn write_char(&mut self, c: char) -> fmt::Result {
        self.text.push(c);
        Ok(())
    }
}

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
    /// Whether this entry's key is `key`: the lengths first, then the
    /// bytes (no slicing of `text` at char boundaries on the way; `get`
    /// and `insert` run this for every entry on every call).
    fn has_key(&self, text: &str, key: &str) -> bool {
        self.key_len == key.len()
            && text.as_bytes().get(self.start..self.start + self.key_len) == Some(key.as_bytes())
    }

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
        self.entries.iter().position(|e| e.has_key(&self.text, key))
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.has_key(&self.text, key))
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
        if !self.text.is_empty() {
            self.text.reserve(key.len() + value.len());
        }
        self.insert_with(key, |w| w.push_str(value))
    }

    /// Sets `key` to the value `write` appends, written straight into the
    /// map (no buffer of the caller's); true if it replaced a value.
    ///
    /// ```
    /// use std::fmt::Write as _;
    /// let mut md = rpc_core::Metadata::new();
    /// md.insert_with("clock", |w| {
    ///     let _ = write!(w, "{}.{}", 1700, 2);
    /// });
    /// assert_eq!(md.get("clock"), Some("1700.2"));
    /// ```
    pub fn insert_with(&mut self, key: &str, write: impl FnOnce(&mut ValueWriter<'_>)) -> bool {
        let position = self.position(key);
        if self.text.is_empty() {
            // Room for the usual few entries at once (a value written piece
            // by piece grows it as needed).
            self.text.reserve(128.max(key.len()));
        }
        let start = self.text.len();
        self.text.push_str(key);
        write(&mut ValueWriter {
            text: &mut self.text,
        });
        let entry = Entry {
            start,
            key_len: key.len(),
            value_len: self.text.len() - start - key.len(),
        };
        self.set_entry(position, entry)
    }

    /// Records `entry` (its text already written) in place of the entry at
    /// `position`, or after the others; true if it replaced one.
    fn set_entry(&mut self, position: Option<usize>, entry: Entry) -> bool {
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

pub(crate) mod wire;

#[cfg(test)]
mod tests;
