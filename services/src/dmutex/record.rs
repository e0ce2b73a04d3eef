//! A record of critical sections that peers in different processes share:
//! one file that every peer appends `enter <id> <n> <t> <asked>` and
//! `exit <id> <n> <t>` lines to (and `left <id> <n> <t>` once its `exit`
//! has returned; times in microseconds of the system clock, which the
//! processes of one machine share: for measuring synchronisation delays,
//! never for a verdict), each line one `write` on a descriptor opened with `O_APPEND`,
//! so lines from different processes never interleave and their order in
//! the file is the order of the writes. [`check`] reads it back: two
//! `enter`s without the `exit` of the first between them is an overlap.
//!
//! A peer writes `enter` after its `enter` returned and `exit` before it
//! calls `exit`, as with [`super::monitor::CsMonitor`]: an overlap in the
//! file is one that happened. The file also orders the entries, which the
//! sequential shape of the `dmutex-peer` binary waits on ([`count_lines`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Appends lines to the shared record.
#[derive(Debug)]
pub struct SectionLog {
    file: File,
    id: u32,
}

impl SectionLog {
    /// Opens (creates) the record at `path` for peer `id`, in append mode.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(path: &Path, id: u32) -> io::Result<SectionLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(SectionLog { file, id })
    }

    fn line(&mut self, what: &str, n: u64, asked: Option<SystemTime>) -> io::Result<()> {
        // One buffer, one write: appends from several processes do not
        // interleave within a line.
        let mut line = format!("{what} {} {n} {}", self.id, micros(SystemTime::now()));
        if let Some(asked) = asked {
            line.push_str(&format!(" {}", micros(asked)));
        }
        line.push('\n');
        self.file.write_all(line.as_bytes())
    }

    /// This peer's entry number `n`, asked for at `asked`, began (its
    /// `enter` returned).
    ///
    /// # Errors
    /// When the write fails.
    pub fn enter(&mut self, n: u64, asked: SystemTime) -> io::Result<()> {
        self.line("enter", n, Some(asked))
    }

    /// This peer's entry number `n` is about to end (before its `exit`).
    ///
    /// # Errors
    /// When the write fails.
    pub fn exit(&mut self, n: u64) -> io::Result<()> {
        self.line("exit", n, None)
    }

    /// This peer's `exit` of entry `n` has returned (its release messages
    /// are delivered): what a peer that takes turns waits for.
    ///
    /// # Errors
    /// When the write fails.
    pub fn left(&mut self, n: u64) -> io::Result<()> {
        self.line("left", n, None)
    }
}

/// Microseconds since the Unix epoch (0 before it).
fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Complete lines in the record at `path` (0 when it does not exist yet).
///
/// # Errors
/// When the file exists but cannot be read.
pub fn count_lines(path: &Path) -> io::Result<u64> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(bytes.iter().filter(|&&b| b == b'\n').count() as u64),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// What a record shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordReport {
    /// Entries, by peer id.
    pub entries: Vec<u64>,
    /// Entries while another peer was inside.
    pub overlaps: u64,
    /// The first overlap: the line number (from 1) of the `enter` and the
    /// peer that was inside then.
    pub first_overlap: Option<(usize, u32)>,
    /// Order of entries: the peer of each `enter`, in file order.
    pub order: Vec<u32>,
    /// Synchronisation delays: from an `exit` to the next `enter` of a
    /// peer that had asked before that exit.
    pub sync_delays: Vec<Duration>,
}

impl RecordReport {
    /// The mean synchronisation delay, when there was a sample.
    pub fn sync_delay_mean(&self) -> Option<Duration> {
        let k = u32::try_from(self.sync_delays.len())
            .ok()
            .filter(|&k| k > 0)?;
        Some(self.sync_delays.iter().sum::<Duration>() / k)
    }
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The file could not be read.
    #[error("cannot read the record")]
    Io(#[from] io::Error),
    /// A line that is not `enter|exit <id> <n>`, or an `exit` of a peer
    /// that was not inside.
    #[error("line {line}: {detail}")]
    Malformed {
        /// The line number (from 1).
        line: usize,
        /// What is wrong.
        detail: String,
    },
}

/// Reads the record at `path` and checks it (see the module docs).
///
/// # Errors
/// [`RecordError`] when it cannot be read or a line is malformed.
pub fn check(path: &Path) -> Result<RecordReport, RecordError> {
    let text = std::fs::read_to_string(path)?;
    check_text(&text)
}

/// [`check`] on the record's text.
///
/// # Errors
/// [`RecordError::Malformed`].
pub fn check_text(text: &str) -> Result<RecordReport, RecordError> {
    let mut report = RecordReport::default();
    let mut inside: Vec<u32> = Vec::new();
    let mut last_exit: Option<u64> = None;
    for (i, line) in text.lines().enumerate() {
        let bad = |detail: &str| RecordError::Malformed {
            line: i + 1,
            detail: format!("{detail}: {line:?}"),
        };
        let mut words = line.split(' ');
        let what = words.next().unwrap_or_default();
        let id: u32 = words
            .next()
            .and_then(|w| w.parse().ok())
            .ok_or_else(|| bad("no peer id"))?;
        if id as usize >= super::MAX_PEERS {
            return Err(bad("a peer id beyond the largest group"));
        }
        let _n: u64 = words
            .next()
            .and_then(|w| w.parse().ok())
            .ok_or_else(|| bad("no entry number"))?;
        // Optional: when it was written and (enter) when it was asked for.
        let mut time = || -> Result<Option<u64>, RecordError> {
            words
                .next()
                .map(|w| w.parse().map_err(|_| bad("a time that is not a number")))
                .transpose()
        };
        let (at, asked) = (time()?, time()?);
        match what {
            "enter" => {
                if let (Some(at), Some(asked), Some(exit)) = (at, asked, last_exit) {
                    if asked <= exit {
                        report
                            .sync_delays
                            .push(Duration::from_micros(at.saturating_sub(exit)));
                    }
                }
                if let Some(&other) = inside.first() {
                    report.overlaps += 1;
                    report.first_overlap.get_or_insert((i + 1, other));
                }
                inside.push(id);
                let k = id as usize;
                if report.entries.len() <= k {
                    report.entries.resize(k + 1, 0);
                }
                report.entries[k] += 1;
                report.order.push(id);
            }
            "exit" => {
                let pos = inside
                    .iter()
                    .position(|&x| x == id)
                    .ok_or_else(|| bad("exit of a peer that was not inside"))?;
                inside.remove(pos);
                last_exit = at.or(last_exit);
            }
            "left" => {}
            _ => return Err(bad("neither enter, exit nor left")),
        }
    }
    Ok(report)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_overlap_is_two_enters_without_the_exit_between() {
        let ok = check_text("enter 0 0\nexit 0 0\nenter 1 0\nexit 1 0\n").unwrap();
        assert_eq!((ok.overlaps, ok.entries.clone()), (0, vec![1, 1]));
        assert_eq!(ok.order, vec![0, 1]);
        let bad = check_text("enter 0 0\nenter 1 0\nexit 0 0\nexit 1 0\n").unwrap();
        assert_eq!((bad.overlaps, bad.first_overlap), (1, Some((2, 0))));
        assert!(check_text("exit 0 0\n").is_err());
        // Peer 1 asked at 5, before peer 0's exit at 20, and entered at 26.
        let timed =
            check_text("enter 0 0 10 1\nexit 0 0 20\nenter 1 0 26 5\nexit 1 0 30\n").unwrap();
        assert_eq!(timed.sync_delays, vec![Duration::from_micros(6)]);
        // Peer 1 asked only after the exit: no hand-over to measure.
        let late = check_text("enter 0 0 10 1\nexit 0 0 20\nenter 1 0 26 21\n").unwrap();
        assert!(late.sync_delays.is_empty());
        assert!(check_text("enter x 0\n").is_err());
    }

    #[test]
    fn lines_appended_by_two_writers_stay_whole() {
        let dir = std::env::temp_dir().join(format!("dmutex-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("record");
        let _ = std::fs::remove_file(&path);
        let mut a = SectionLog::open(&path, 0).unwrap();
        let mut b = SectionLog::open(&path, 1).unwrap();
        a.enter(0, SystemTime::now()).unwrap();
        a.exit(0).unwrap();
        a.left(0).unwrap();
        b.enter(0, SystemTime::now()).unwrap();
        b.exit(0).unwrap();
        assert_eq!(count_lines(&path).unwrap(), 5);
        let report = check(&path).unwrap();
        assert_eq!(report.entries, vec![1, 1]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
