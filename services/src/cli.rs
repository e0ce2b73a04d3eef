//! What the package's binaries (`lock-server`, `raft-node`, ...) share:
//! their logging set-up and their line-by-line output to a test harness.

use std::io::Write as _;

/// Logs to stderr through `tracing`, filtered by `RUST_LOG` or, without
/// it, by `default` (an `EnvFilter` directive such as `"info"`).
pub fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Writes `line` to stdout and flushes it at once (a harness reading the
/// process's output waits for it).
///
/// # Errors
/// When stdout cannot be written.
pub fn say(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}
