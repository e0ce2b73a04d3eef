//! The append-only log of one two-phase commit party: every record is
//! flushed to disk (`fsync`) before the vote or decision it holds is sent.
//!
//! # Format
//!
//! One file, [`LOG_FILE`], in the party's data directory: a sequence of
//! frames, each
//!
//! ```text
//! magic "2PC1" (4 bytes) | length of payload (u32 LE) | CRC-32 of length and payload (u32 LE) | payload
//! ```
//!
//! where the payload is a protobuf record (`ParticipantRecord` or
//! `CoordinatorRecord` of `idl/twopc.idl`).
//!
//! # Damage
//!
//! A frame that is incomplete, has no magic, an impossible length or a
//! wrong checksum is *bad*. When no valid frame follows it, it is a torn
//! tail (a crash in the middle of an append, before the fsync that would
//! have made its vote or decision sendable): [`Log::open`] cuts it off,
//! flushes the cut, and reports it in [`Recovered::torn_tail`]. When a
//! valid frame follows it, the log is corrupt in the middle and
//! [`Log::open`] refuses it with [`LogError::Corrupt`], naming the file and
//! the offset: starting from the records before it would forget votes and
//! decisions that were already sent.

use prost::Message;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// The log's file name in a party's data directory.
pub const LOG_FILE: &str = "twopc.log";
/// The first bytes of every frame.
pub const MAGIC: [u8; 4] = *b"2PC1";
/// Bytes before a frame's payload.
pub const HEADER: usize = 12;
/// The largest payload a frame may carry.
pub const MAX_RECORD: usize = 1 << 20;

/// Why a log could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// Reading, writing or flushing the file failed.
    #[error("log {path}: {what}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A bad frame with valid frames after it.
    #[error(
        "log {path} is corrupt: bad record at byte {offset} ({why}) with valid records after it; \
         refusing to start (the records after it may hold votes or decisions already sent)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the bad frame starts.
        offset: u64,
        /// What is wrong with it.
        why: String,
    },
    /// A frame whose checksum is right but whose payload is not a record.
    #[error("log {path}: record at byte {offset} does not decode: {source}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// Where the frame starts.
        offset: u64,
        /// The cause.
        #[source]
        source: prost::DecodeError,
    },
    /// An earlier append failed part-way, so nothing more is appended
    /// (a record after a partial one would make the log unreadable, and
    /// after a failed flush the kernel may have dropped what it held): the
    /// party must stop and recover from the file.
    #[error("log {path}: an earlier append failed; restart the party to recover from the log")]
    Broken {
        /// The file.
        path: PathBuf,
    },
    /// A record larger than [`MAX_RECORD`] was to be appended.
    #[error("log {path}: record of {len} bytes is over the limit of {MAX_RECORD}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The record's encoded length.
        len: usize,
    },
    /// The blocking task that wrote the record did not finish.
    #[error("log {path}: the writing task failed: {source}")]
    Task {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// A torn tail cut off when the log was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// Where the bad frame started (the file's length after the cut).
    pub offset: u64,
    /// How many bytes were cut off.
    pub bytes: u64,
    /// What was wrong with the frame.
    pub why: String,
}

/// What [`Log::open`] read.
#[derive(Debug)]
pub struct Recovered<R> {
    /// The records, in the order they were appended.
    pub records: Vec<R>,
    /// The torn tail that was cut off, if any.
    pub torn_tail: Option<TornTail>,
}

/// The result of [`scan`]: the valid frames of a log image, and the first
/// bad one.
#[derive(Debug, PartialEq, Eq)]
pub struct Scan<'a> {
    /// Each valid frame's offset and payload, up to the first bad frame.
    pub frames: Vec<(u64, &'a [u8])>,
    /// The first bad frame: its offset, what is wrong with it, and whether
    /// a valid frame starts anywhere after it (corruption in the middle).
    pub bad: Option<(u64, String, bool)>,
}

fn checksum(len: [u8; 4], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(payload);
    h.finalize()
}

/// Encodes one frame.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len())
        .unwrap_or(u32::MAX)
        .to_le_bytes();
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&len);
    out.extend_from_slice(&checksum(len, payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The frame at `at`: its payload and its end, or what is wrong with it.
fn frame_at(bytes: &[u8], at: usize) -> Result<(&[u8], usize), String> {
    let rest = &bytes[at..];
    if rest.len() < HEADER {
        return Err(format!(
            "incomplete header: {} of {HEADER} bytes",
            rest.len()
        ));
    }
    if rest[..4] != MAGIC {
        return Err("no frame magic".to_owned());
    }
    let len_bytes = [rest[4], rest[5], rest[6], rest[7]];
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len > MAX_RECORD {
        return Err(format!("length {len} over the limit of {MAX_RECORD}"));
    }
    if rest.len() - HEADER < len {
        return Err(format!(
            "incomplete payload: {} of {len} bytes",
            rest.len() - HEADER
        ));
    }
    let sum = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]);
    let payload = &rest[HEADER..HEADER + len];
    if checksum(len_bytes, payload) != sum {
        return Err("checksum mismatch".to_owned());
    }
    Ok((payload, at + HEADER + len))
}

/// Splits a log image into frames without I/O (see the module doc for
/// what counts as bad).
pub fn scan(bytes: &[u8]) -> Scan<'_> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match frame_at(bytes, at) {
            Ok((payload, end)) => {
                frames.push((at as u64, payload));
                at = end;
            }
            Err(why) => {
                let valid_after = (at + 1..bytes.len())
                    .filter(|&i| bytes[i..].starts_with(&MAGIC))
                    .any(|i| frame_at(bytes, i).is_ok());
                return Scan {
                    frames,
                    bad: Some((at as u64, why, valid_after)),
                };
            }
        }
    }
    Scan { frames, bad: None }
}

/// Flushes a directory (its entries: files and directories made in it).
fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "flush the directory"))
}

/// A party's log, open for appending. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Log {
    path: Arc<PathBuf>,
    /// The file, and whether an append failed (then no more are made).
    file: Arc<Mutex<(File, bool)>>,
}

fn io<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> LogError + 'a {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

impl Log {
    /// Opens (or creates) the log in `dir` and reads every record; a torn
    /// tail is cut off and reported. Blocking.
    ///
    /// # Errors
    /// [`LogError::Io`] when the directory or file cannot be created, read
    /// or flushed; [`LogError::Corrupt`] for a bad frame in the middle;
    /// [`LogError::Decode`] for a frame that is not a record.
    pub fn open<R: Message + Default>(dir: &Path) -> Result<(Log, Recovered<R>), LogError> {
        // The directories this creates, innermost first: each one's entry
        // in its parent must reach the disk too.
        let created: Vec<&Path> = dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
            .collect();
        std::fs::create_dir_all(dir).map_err(io(dir, "create the data directory"))?;
        for d in created.iter().rev() {
            match d.parent() {
                Some(p) if p.as_os_str().is_empty() => sync_dir(Path::new("."))?,
                Some(p) => sync_dir(p)?,
                None => {}
            }
        }
        let path = dir.join(LOG_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io(&path, "open"))?;
        // Always, not only when the file is new: an earlier run may have
        // created it and died before flushing the directory.
        sync_dir(dir)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io(&path, "read"))?;
        let scanned = scan(&bytes);
        let mut records = Vec::with_capacity(scanned.frames.len());
        for &(offset, payload) in &scanned.frames {
            let record = R::decode(payload).map_err(|source| LogError::Decode {
                path: path.clone(),
                offset,
                source,
            })?;
            records.push(record);
        }
        let torn_tail = match scanned.bad {
            None => None,
            Some((offset, why, true)) => {
                return Err(LogError::Corrupt { path, offset, why });
            }
            Some((offset, why, false)) => {
                file.set_len(offset)
                    .map_err(io(&path, "cut the torn tail"))?;
                file.sync_all().map_err(io(&path, "flush the cut"))?;
                let tail = TornTail {
                    offset,
                    bytes: bytes.len() as u64 - offset,
                    why,
                };
                tracing::warn!(
                    path = %path.display(),
                    offset = tail.offset,
                    bytes = tail.bytes,
                    why = %tail.why,
                    "torn tail record cut off (a crash during an append)"
                );
                Some(tail)
            }
        };
        let log = Log {
            path: Arc::new(path),
            file: Arc::new(Mutex::new((file, false))),
        };
        Ok((log, Recovered { records, torn_tail }))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` and flushes it to disk; blocking.
    ///
    /// # Errors
    /// [`LogError::TooLarge`]; [`LogError::Io`] when the write or the
    /// flush fails (the record may or may not be in the file then: the
    /// party must not send what it holds).
    pub fn append_blocking<R: Message>(&self, record: &R) -> Result<(), LogError> {
        let payload = record.encode_to_vec();
        if payload.len() > MAX_RECORD {
            return Err(LogError::TooLarge {
                path: self.path.to_path_buf(),
                len: payload.len(),
            });
        }
        let frame = frame(&payload);
        let mut guard = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let (file, broken) = &mut *guard;
        if *broken {
            return Err(LogError::Broken {
                path: self.path.to_path_buf(),
            });
        }
        let written = file
            .write_all(&frame)
            .map_err(io(&self.path, "append"))
            .and_then(|()| file.sync_data().map_err(io(&self.path, "flush (fsync)")));
        if let Err(e) = &written {
            *broken = true;
            tracing::error!(path = %self.path.display(), error = %e, "log append failed: no more appends until a restart");
        }
        written
    }

    /// [`Log::append_blocking`] on tokio's blocking threads.
    ///
    /// # Errors
    /// As [`Log::append_blocking`]; [`LogError::Task`] when the blocking
    /// task panicked or was cancelled.
    ///
    /// # Cancel safety
    /// Dropping the future does not stop the append: the record may be
    /// written anyway.
    pub async fn append<R: Message + Send + 'static>(&self, record: R) -> Result<(), LogError> {
        let log = self.clone();
        tokio::task::spawn_blocking(move || log.append_blocking(&record))
            .await
            .map_err(|source| LogError::Task {
                path: self.path.to_path_buf(),
                source,
            })?
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn image(payloads: &[&[u8]]) -> Vec<u8> {
        payloads.iter().flat_map(|p| frame(p)).collect()
    }

    #[test]
    fn whole_frames_scan_back() {
        let bytes = image(&[b"one", b"", b"three"]);
        let s = scan(&bytes);
        assert_eq!(s.bad, None);
        let payloads: Vec<&[u8]> = s.frames.iter().map(|f| f.1).collect();
        assert_eq!(payloads, vec![&b"one"[..], b"", b"three"]);
    }

    #[test]
    fn a_cut_last_frame_is_a_torn_tail() {
        let bytes = image(&[b"one", b"two"]);
        for cut in 1..frame(b"two").len() {
            let s = scan(&bytes[..bytes.len() - cut]);
            assert_eq!(s.frames.len(), 1, "cut {cut}");
            let (offset, _, valid_after) = s.bad.clone().unwrap();
            assert_eq!(offset, frame(b"one").len() as u64);
            assert!(!valid_after, "cut {cut}");
        }
    }

    #[test]
    fn a_flipped_byte_in_the_last_frame_is_a_torn_tail() {
        let mut bytes = image(&[b"one", b"two"]);
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        let s = scan(&bytes);
        assert_eq!(s.frames.len(), 1);
        let (_, why, valid_after) = s.bad.unwrap();
        assert_eq!(why, "checksum mismatch");
        assert!(!valid_after);
    }

    #[test]
    fn a_flipped_byte_in_the_middle_is_corruption() {
        for at in 0..frame(b"one").len() {
            let mut bytes = image(&[b"one", b"two", b"three"]);
            bytes[at] ^= 0x01;
            let s = scan(&bytes);
            assert!(s.frames.is_empty(), "byte {at}");
            let (offset, _, valid_after) = s.bad.unwrap();
            assert_eq!(offset, 0);
            assert!(valid_after, "byte {at}: a valid frame follows");
        }
    }
}
