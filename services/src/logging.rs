//! The log set-up of the package's binaries, and of other programs that
//! run the services (the tour, the benchmark). It writes nothing itself:
//! it installs a `tracing` subscriber that logs to stderr.

/// Logs to stderr through `tracing`, filtered by `RUST_LOG` or, without
/// it, by `default` (an `EnvFilter` directive such as `"info"`).
/// Keeps a global subscriber that is already installed (a test harness's,
/// or one a program set up itself) and says so in the log.
pub fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    if installed.is_err() {
        tracing::debug!("a tracing subscriber is already installed; it stays");
    }
}
