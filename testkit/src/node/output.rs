//! Reading a node's output files: new complete lines as they are written,
//! the address rule, and the tail of a file for error messages.

use std::fmt;
use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The standard rule that finds a node's address in a line of its standard
/// output: the whole line (trimmed) is a socket address (`127.0.0.1:4000`,
/// `[::1]:4000`), or the line contains `listening on <addr>` (ASCII case
/// ignored), the address being the next word, without surrounding quotes,
/// brackets of prose or a final `.`, `,` or `;`.
///
/// ```
/// use rpc_testkit::address_in_line;
/// let addr = "127.0.0.1:4000".parse().ok();
/// assert_eq!(address_in_line("127.0.0.1:4000"), addr);
/// assert_eq!(address_in_line("INFO server: Listening on 127.0.0.1:4000, udp"), addr);
/// assert_eq!(address_in_line("started"), None);
/// ```
pub fn address_in_line(line: &str) -> Option<SocketAddr> {
    let line = line.trim();
    if let Ok(addr) = line.parse() {
        return Some(addr);
    }
    const MARK: &str = "listening on ";
    // ASCII lowercasing keeps every byte offset.
    let at = line.to_ascii_lowercase().find(MARK)?;
    let word = line.get(at + MARK.len()..)?.split_whitespace().next()?;
    word.trim_matches(['"', '\'', '`', '(', ')', '.', ',', ';'])
        .parse()
        .ok()
}

/// A function from a line of output to the address it gives, if any.
type Rule = dyn Fn(&str) -> Option<SocketAddr> + Send + Sync;

/// The rule a node's address is read with.
#[derive(Clone)]
pub(crate) struct AddressRule(Arc<Rule>);

impl AddressRule {
    pub(crate) fn new(rule: impl Fn(&str) -> Option<SocketAddr> + Send + Sync + 'static) -> Self {
        AddressRule(Arc::new(rule))
    }

    pub(crate) fn find(&self, line: &str) -> Option<SocketAddr> {
        (self.0)(line)
    }
}

impl Default for AddressRule {
    fn default() -> Self {
        AddressRule::new(address_in_line)
    }
}

impl fmt::Debug for AddressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AddressRule(..)")
    }
}

/// Follows a file that a child writes: each call returns the lines
/// completed since the previous one. A line still being written (no `\n`
/// yet) waits for the next call, so a half-written address is never read.
#[derive(Debug)]
pub(crate) struct Lines {
    path: PathBuf,
    file: Option<File>,
    partial: Vec<u8>,
}

impl Lines {
    pub(crate) fn new(path: &Path) -> Lines {
        Lines {
            path: path.to_path_buf(),
            file: None,
            partial: Vec::new(),
        }
    }

    /// The complete lines written since the last call (invalid UTF-8
    /// replaced).
    pub(crate) fn read_new(&mut self) -> io::Result<Vec<String>> {
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(File::open(&self.path)?),
        };
        file.read_to_end(&mut self.partial)?;
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Ok(Vec::new());
        };
        let rest = self.partial.split_off(end + 1);
        let done = std::mem::replace(&mut self.partial, rest);
        Ok(done
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| {
                String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line)).into_owned()
            })
            .collect())
    }
}

/// The last `lines` lines of a file (from its last 4 KiB at most), for
/// error messages; empty when the file cannot be read.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    const WINDOW: u64 = 4096;
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(WINDOW)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let text = String::from_utf8_lossy(&bytes);
        let all: Vec<&str> = text.lines().collect();
        Ok(all[all.len().saturating_sub(lines)..].join("\n"))
    };
    read().unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn the_standard_rule() {
        let v4: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let v6: SocketAddr = "[::1]:4000".parse().unwrap();
        assert_eq!(address_in_line("  127.0.0.1:4000 "), Some(v4));
        assert_eq!(address_in_line("[::1]:4000"), Some(v6));
        assert_eq!(address_in_line("listening on 127.0.0.1:4000"), Some(v4));
        assert_eq!(address_in_line("server Listening on [::1]:4000."), Some(v6));
        assert_eq!(address_in_line("LISTENING ON `127.0.0.1:4000`"), Some(v4));
        assert_eq!(address_in_line("listening on port 4000"), None);
        assert_eq!(address_in_line("127.0.0.1"), None);
        assert_eq!(address_in_line("connected to 127.0.0.1:4000"), None);
        assert_eq!(address_in_line(""), None);
    }

    #[test]
    fn only_complete_lines_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut file = File::create(&path).unwrap();
        let mut lines = Lines::new(&path);
        assert!(lines.read_new().unwrap().is_empty());
        write!(file, "first\r\nsecond\n127.0.0.1:4").unwrap();
        assert_eq!(lines.read_new().unwrap(), ["first", "second"]);
        assert!(lines.read_new().unwrap().is_empty());
        writeln!(file, "000").unwrap();
        assert_eq!(lines.read_new().unwrap(), ["127.0.0.1:4000"]);
        assert_eq!(tail(&path, 2), "second\n127.0.0.1:4000");
        assert_eq!(tail(&dir.path().join("missing"), 2), "");
    }
}
