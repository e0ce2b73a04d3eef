//! Errors about nodes: each names the node and, once they exist, its log
//! files.

use super::process::Exit;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// The files a node's run writes its standard output and error to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logs {
    /// Standard output of the run.
    pub stdout: PathBuf,
    /// Standard error of the run.
    pub stderr: PathBuf,
}

impl fmt::Display for Logs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stdout {}, stderr {}",
            self.stdout.display(),
            self.stderr.display()
        )
    }
}

/// An error about a node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The name cannot name the node's directory.
    #[error("node {node:?}: invalid name (it names the node's directory: not empty, no '/', not '.' or '..')")]
    InvalidName {
        /// The name given.
        node: String,
    },
    /// Another node of the cluster has this name.
    #[error("node {node:?}: the cluster already has a node of this name")]
    DuplicateName {
        /// The name given.
        node: String,
    },
    /// A directory or log file could not be made.
    #[error("node {node:?}: cannot create {} ({logs})", path.display())]
    Io {
        /// The node.
        node: String,
        /// What could not be created.
        path: PathBuf,
        /// The log files of the run.
        logs: Logs,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The binary could not be started (missing, not executable).
    #[error("node {node:?}: cannot start {} ({logs})", program.display())]
    Spawn {
        /// The node.
        node: String,
        /// The binary.
        program: PathBuf,
        /// The log files of the run.
        logs: Logs,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The process exited before printing its address.
    #[error(
        "node {node:?} {exit} before printing its address ({logs}){}",
        ends_with("stderr", stderr_tail)
    )]
    ExitedAtStart {
        /// The node.
        node: String,
        /// How it ended.
        exit: Exit,
        /// The log files of the run.
        logs: Logs,
        /// The last lines of its standard error.
        stderr_tail: String,
    },
    /// The process printed no address in time; it was killed.
    #[error(
        "node {node:?} printed no address within {waited:?} and was killed ({logs}){}",
        ends_with("stdout", stdout_tail)
    )]
    NoAddress {
        /// The node.
        node: String,
        /// How long it was given.
        waited: Duration,
        /// The log files of the run.
        logs: Logs,
        /// The last lines of its standard output.
        stdout_tail: String,
    },
    /// The node's process has exited, so it cannot do what was asked.
    #[error("node {node:?} is not running: it {exit} ({logs})")]
    NotRunning {
        /// The node.
        node: String,
        /// How its process ended.
        exit: Exit,
        /// The log files of the run.
        logs: Logs,
    },
    /// The node's process is running: it must be killed before a restart.
    #[error("node {node:?} is still running (pid {pid}): kill it before restarting ({logs})")]
    Running {
        /// The node.
        node: String,
        /// Its process.
        pid: u32,
        /// The log files of the run.
        logs: Logs,
    },
    /// A signal could not be sent or the process could not be observed.
    #[error("node {node:?}: cannot {what} ({logs})")]
    Os {
        /// The node.
        node: String,
        /// What was being done.
        what: &'static str,
        /// The log files of the run.
        logs: Logs,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// What was awaited did not happen in time.
    #[error("node {node:?} did not {what} within {waited:?} ({logs})")]
    Timeout {
        /// The node.
        node: String,
        /// What was awaited.
        what: &'static str,
        /// How long.
        waited: Duration,
        /// The log files of the run.
        logs: Logs,
    },
}

fn ends_with(name: &str, tail: &str) -> String {
    if tail.is_empty() {
        return format!("; its {name} is empty");
    }
    let mut text = format!("; its {name} ends with:");
    for line in tail.lines() {
        text.push_str("\n    ");
        text.push_str(line);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_quote_the_end_of_a_log() {
        let logs = Logs {
            stdout: "/t/a/run-1.stdout".into(),
            stderr: "/t/a/run-1.stderr".into(),
        };
        let err = NodeError::NoAddress {
            node: "a".into(),
            waited: Duration::from_secs(1),
            logs: logs.clone(),
            stdout_tail: "hello\nstill starting".into(),
        };
        assert_eq!(
            err.to_string(),
            "node \"a\" printed no address within 1s and was killed \
             (stdout /t/a/run-1.stdout, stderr /t/a/run-1.stderr); \
             its stdout ends with:\n    hello\n    still starting"
        );
        let err = NodeError::ExitedAtStart {
            node: "a".into(),
            exit: Exit::Code(3),
            logs,
            stderr_tail: String::new(),
        };
        assert_eq!(
            err.to_string(),
            "node \"a\" exited with code 3 before printing its address \
             (stdout /t/a/run-1.stdout, stderr /t/a/run-1.stderr); its stderr is empty"
        );
    }
}
