//! The key-value state machine without I/O: the map, and each client's
//! last write (its sequence number and answer) so that a retried write is
//! applied once.
//!
//! [`Kv::apply`] is deterministic: every node applies the same commands in
//! the same log order and reaches the same state and answers.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Longest key, in bytes.
pub const MAX_KEY: usize = 1024;
/// Longest value, in bytes: a write with its key and framing fits one
/// Raft entry batch of one entry under the datagram limit.
pub const MAX_VALUE: usize = 16 * 1024;

/// Who wrote: a client and the number of this write among its writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Writer {
    /// The client (not 0).
    pub client: u64,
    /// The write's number (from 1; a retry repeats it).
    pub seq: u64,
}

/// A write, as it is kept in the Raft log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// Who writes.
        writer: Writer,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: String,
        /// Who writes.
        writer: Writer,
    },
    /// Sets `key` to `value` if its value is `expected` (`None`: no value).
    Cas {
        /// The key.
        key: String,
        /// The value expected.
        expected: Option<Vec<u8>>,
        /// The new value.
        value: Vec<u8>,
        /// Who writes.
        writer: Writer,
    },
    /// Several clients' writes in one log entry, applied in order (the
    /// leader groups the writes that arrive while earlier ones are being
    /// committed, so that they share one append and one fsync).
    Batch {
        /// The writes.
        commands: Vec<Command>,
    },
}

impl Command {
    /// Who writes (`None` for a [`Command::Batch`], whose writes each
    /// have theirs).
    pub fn writer(&self) -> Option<Writer> {
        match self {
            Command::Put { writer, .. }
            | Command::Delete { writer, .. }
            | Command::Cas { writer, .. } => Some(*writer),
            Command::Batch { .. } => None,
        }
    }

    /// About how many bytes the command takes in the log.
    pub fn size(&self) -> usize {
        const OVERHEAD: usize = 32;
        match self {
            Command::Put { key, value, .. } => OVERHEAD + key.len() + value.len(),
            Command::Delete { key, .. } => OVERHEAD + key.len(),
            Command::Cas {
                key,
                expected,
                value,
                ..
            } => OVERHEAD + key.len() + value.len() + expected.as_ref().map_or(0, Vec::len),
            Command::Batch { commands } => {
                OVERHEAD + commands.iter().map(Command::size).sum::<usize>()
            }
        }
    }
}

/// What applying a command did (the same on every node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// A put: the previous value.
    Put {
        /// The key's value before.
        previous: Option<Vec<u8>>,
    },
    /// A delete.
    Deleted {
        /// Whether the key had a value.
        existed: bool,
    },
    /// A compare-and-set.
    Cas {
        /// Whether the value was replaced.
        swapped: bool,
        /// The key's value before.
        current: Option<Vec<u8>>,
    },
    /// A compare-and-set that expected a value on a key without one.
    CasKeyNotFound,
    /// A write older than the client's last one: not applied.
    Stale {
        /// The client's last sequence number applied.
        last: u64,
    },
    /// No command (a blank or membership entry).
    Nothing,
    /// A [`Command::Batch`]: the outcome of each of its writes, in order.
    Batch {
        /// The outcomes.
        outcomes: Vec<Outcome>,
    },
}

/// A client's last applied write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Its sequence number.
    pub seq: u64,
    /// Its answer, given again to a retry.
    pub outcome: Outcome,
}

/// The store: keys, values, and clients' sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kv {
    /// The data.
    pub map: BTreeMap<String, Vec<u8>>,
    /// Per client: its last write.
    pub sessions: BTreeMap<u64, Session>,
}

impl Kv {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Vec<u8>> {
        self.map.get(key)
    }

    /// A digest of the data (keys and values, not the sessions): equal on
    /// two nodes that applied the same log (FNV-1a over the map in key
    /// order, each key and value preceded by its length).
    pub fn digest(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |bytes: &[u8]| {
            for b in u64::try_from(bytes.len())
                .unwrap_or(u64::MAX)
                .to_le_bytes()
                .iter()
                .chain(bytes)
            {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        for (k, v) in &self.map {
            feed(k.as_bytes());
            feed(v);
        }
        h
    }

    /// Applies `command` once: a command whose writer's sequence number
    /// was the client's last gets that write's answer again, and an older
    /// one is [`Outcome::Stale`]; neither changes the map.
    pub fn apply(&mut self, command: Command) -> Outcome {
        match command {
            Command::Batch { commands } => Outcome::Batch {
                outcomes: commands.into_iter().map(|c| self.apply(c)).collect(),
            },
            Command::Put { key, value, writer } => self.once(writer, |kv| Outcome::Put {
                previous: kv.map.insert(key, value),
            }),
            Command::Delete { key, writer } => self.once(writer, |kv| Outcome::Deleted {
                existed: kv.map.remove(&key).is_some(),
            }),
            Command::Cas {
                key,
                expected,
                value,
                writer,
            } => self.once(writer, |kv| {
                let current = kv.map.get(&key).cloned();
                match (&expected, &current) {
                    (Some(_), None) => Outcome::CasKeyNotFound,
                    _ if expected == current => {
                        kv.map.insert(key, value);
                        Outcome::Cas {
                            swapped: true,
                            current,
                        }
                    }
                    _ => Outcome::Cas {
                        swapped: false,
                        current,
                    },
                }
            }),
        }
    }

    /// Runs `write` unless `writer`'s sequence number is its last (that
    /// write's answer again) or older ([`Outcome::Stale`]), and records it
    /// as the client's last.
    fn once(&mut self, writer: Writer, write: impl FnOnce(&mut Kv) -> Outcome) -> Outcome {
        if let Some(s) = self.sessions.get(&writer.client) {
            if writer.seq == s.seq {
                return s.outcome.clone();
            }
            if writer.seq < s.seq {
                return Outcome::Stale { last: s.seq };
            }
        }
        let outcome = write(self);
        self.sessions.insert(
            writer.client,
            Session {
                seq: writer.seq,
                outcome: outcome.clone(),
            },
        );
        outcome
    }
}

/// Checks a key against the limits.
///
/// # Errors
/// The reason, in words.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("the key is empty".to_owned());
    }
    if key.len() > MAX_KEY {
        return Err(format!(
            "the key has {} bytes, more than the limit of {MAX_KEY}",
            key.len()
        ));
    }
    Ok(())
}

/// Checks a value against the limit.
///
/// # Errors
/// The reason, in words.
pub fn check_value(value: &[u8]) -> Result<(), String> {
    if value.len() > MAX_VALUE {
        return Err(format!(
            "the value has {} bytes, more than the limit of {MAX_VALUE}",
            value.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &[u8], client: u64, seq: u64) -> Command {
        Command::Put {
            key: key.to_owned(),
            value: value.to_vec(),
            writer: Writer { client, seq },
        }
    }

    #[test]
    fn a_retried_write_is_applied_once_and_answered_alike() {
        let mut kv = Kv::default();
        assert_eq!(
            kv.apply(put("k", b"1", 7, 1)),
            Outcome::Put { previous: None }
        );
        assert_eq!(
            kv.apply(put("k", b"2", 8, 1)),
            Outcome::Put {
                previous: Some(b"1".to_vec())
            }
        );
        // Client 7's retry of its first write: the first answer, no effect.
        assert_eq!(
            kv.apply(put("k", b"1", 7, 1)),
            Outcome::Put { previous: None }
        );
        assert_eq!(kv.get("k"), Some(&b"2".to_vec()));
        assert_eq!(
            kv.apply(put("k", b"3", 7, 2)).clone(),
            Outcome::Put {
                previous: Some(b"2".to_vec())
            }
        );
        assert_eq!(kv.apply(put("k", b"1", 7, 1)), Outcome::Stale { last: 2 });
        assert_eq!(kv.get("k"), Some(&b"3".to_vec()));
    }

    #[test]
    fn compare_and_set() {
        let mut kv = Kv::default();
        let cas = |expected: Option<&[u8]>, value: &[u8], seq| Command::Cas {
            key: "k".to_owned(),
            expected: expected.map(<[u8]>::to_vec),
            value: value.to_vec(),
            writer: Writer { client: 1, seq },
        };
        assert_eq!(kv.apply(cas(Some(b"x"), b"y", 1)), Outcome::CasKeyNotFound);
        assert_eq!(
            kv.apply(cas(None, b"a", 2)),
            Outcome::Cas {
                swapped: true,
                current: None
            }
        );
        assert_eq!(
            kv.apply(cas(Some(b"b"), b"c", 3)),
            Outcome::Cas {
                swapped: false,
                current: Some(b"a".to_vec())
            }
        );
        assert_eq!(
            kv.apply(cas(Some(b"a"), b"c", 4)),
            Outcome::Cas {
                swapped: true,
                current: Some(b"a".to_vec())
            }
        );
        assert_eq!(kv.get("k"), Some(&b"c".to_vec()));
    }

    #[test]
    fn the_digest_follows_the_data_not_the_sessions() {
        let mut a = Kv::default();
        let mut b = Kv::default();
        assert_eq!(a.digest(), b.digest());
        a.apply(put("k", b"1", 1, 1));
        b.apply(put("k", b"1", 2, 1));
        assert_eq!(a.digest(), b.digest());
        b.apply(put("k", b"2", 2, 2));
        assert_ne!(a.digest(), b.digest());
        // Lengths are fed: ("ab", "") differs from ("a", "b").
        let mut c = Kv::default();
        c.apply(put("ab", b"", 3, 1));
        let mut d = Kv::default();
        d.apply(put("a", b"b", 3, 1));
        assert_ne!(c.digest(), d.digest());
    }

    #[test]
    fn limits() {
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(MAX_KEY)).is_ok());
        assert!(check_key(&"k".repeat(MAX_KEY + 1)).is_err());
        assert!(check_value(&vec![0; MAX_VALUE]).is_ok());
        assert!(check_value(&vec![0; MAX_VALUE + 1]).is_err());
    }
}
