//! The lock server's epoch: the high half of its fencing tokens, persisted
//! once per start.
//!
//! # Why an epoch
//!
//! A fencing token must be higher than every token issued before, also by
//! an earlier run of the server that crashed. Writing the last token to
//! disk (with an fsync) on every grant would put a disk flush on every
//! acquire. Instead the server writes one number when it starts: the
//! epoch, one more than the last run's. Tokens are `epoch << 32 |
//! counter`, the counter counting this run's grants from 1, so every token
//! of a run is higher than every token of every earlier run whatever their
//! counters were. The cost is one fsync per start (and a run can issue at
//! most 2^32 - 1 grants; then acquires are refused until a restart).
//!
//! The new epoch is written to a temporary file that is flushed, renamed
//! over `epoch` and the directory flushed, before the server answers
//! anything: a crash at any point leaves either the old or the new number,
//! and a run only issues tokens of an epoch that is on disk.
//!
//! # File
//!
//! `<data-dir>/epoch`: one line, `mutex-epoch <n>`. A missing file is a
//! fresh data directory (the first epoch is 1); anything else that cannot
//! be read or parsed is an [`EpochError`], never a guess.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

const FILE: &str = "epoch";
const PREFIX: &str = "mutex-epoch ";

/// Why the epoch could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EpochError {
    /// The data directory or the epoch file could not be read or written.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The epoch file does not hold an epoch.
    #[error("corrupt epoch file {}: {content:?} is not `mutex-epoch <n>`", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What it holds (at most 64 characters of it).
        content: String,
    },
    /// Every epoch has been used.
    #[error("epoch file {}: epoch {epoch} is the last one", path.display())]
    Exhausted {
        /// The file.
        path: PathBuf,
        /// The epoch found.
        epoch: u32,
    },
}

fn io_err<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> EpochError + 'p {
    move |source| EpochError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Reads the epoch of the last run in `dir` (0 when there was none).
///
/// # Errors
/// [`EpochError::Io`] when the file exists but cannot be read,
/// [`EpochError::Corrupt`] when it does not hold an epoch.
pub fn read(dir: &Path) -> Result<u32, EpochError> {
    let path = dir.join(FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err("reading", &path)(e)),
    };
    let corrupt = || EpochError::Corrupt {
        path: path.clone(),
        content: String::from_utf8_lossy(&bytes).chars().take(64).collect(),
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| corrupt())?;
    let number = text
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_suffix('\n'))
        .ok_or_else(corrupt)?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(corrupt());
    }
    number.parse::<u32>().map_err(|_| corrupt())
}

/// Starts a new run in `dir` (created if missing): reads the last epoch,
/// durably writes the next one and returns it.
///
/// # Errors
/// As [`read`], plus [`EpochError::Io`] when the directory or the file
/// cannot be written and [`EpochError::Exhausted`].
pub fn advance(dir: &Path) -> Result<u32, EpochError> {
    fs::create_dir_all(dir).map_err(io_err("creating the data directory", dir))?;
    let last = read(dir)?;
    let path = dir.join(FILE);
    let next = last.checked_add(1).ok_or(EpochError::Exhausted {
        path: path.clone(),
        epoch: last,
    })?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    {
        let mut f = File::create(&tmp).map_err(io_err("creating", &tmp))?;
        f.write_all(format!("{PREFIX}{next}\n").as_bytes())
            .map_err(io_err("writing", &tmp))?;
        f.sync_all().map_err(io_err("flushing", &tmp))?;
    }
    fs::rename(&tmp, &path).map_err(io_err("renaming over", &path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("flushing the data directory", dir))?;
    tracing::info!(epoch = next, dir = %dir.display(), "epoch advanced");
    Ok(next)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "mutex-epoch-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn every_start_has_a_higher_epoch() {
        let d = dir("advance");
        assert_eq!(advance(&d).unwrap(), 1);
        assert_eq!(advance(&d).unwrap(), 2);
        assert_eq!(read(&d).unwrap(), 2);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_corrupt_file_is_an_error_that_names_it() {
        let d = dir("corrupt");
        fs::create_dir_all(&d).unwrap();
        for bad in [
            &b"garbage"[..],
            b"mutex-epoch \n",
            b"mutex-epoch 12",
            b"mutex-epoch -1\n",
            b"\xff\xfe",
        ] {
            fs::write(d.join(FILE), bad).unwrap();
            let e = advance(&d).unwrap_err();
            assert!(matches!(e, EpochError::Corrupt { .. }), "{bad:?}: {e}");
            assert!(e.to_string().contains("epoch"), "{e}");
        }
        fs::write(d.join(FILE), format!("{PREFIX}{}\n", u32::MAX)).unwrap();
        assert!(matches!(
            advance(&d).unwrap_err(),
            EpochError::Exhausted { .. }
        ));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_unreadable_file_is_an_io_error() {
        let d = dir("unreadable");
        // A directory where the file should be.
        fs::create_dir_all(d.join(FILE)).unwrap();
        assert!(matches!(advance(&d).unwrap_err(), EpochError::Io { .. }));
        fs::remove_dir_all(&d).unwrap();
    }
}
