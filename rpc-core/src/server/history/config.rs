//! The history's limits ([`HistoryConfig`]) and what it reports
//! ([`EvictionCounts`]).

use std::time::Duration;

/// Limits of the reply history.
///
/// Defaults: `ttl` 60 s, `sweep_interval` `None` (ttl / 4), `max_per_session`
/// 1024, `max_entries` 100,000, `max_bytes` 128 MiB, `max_sessions` 10,000,
/// `max_tombstones` 40,000, `max_sessions_per_source` 1,024,
/// `max_bytes_per_source` 16 MiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    /// How long a completed reply is kept after it was stored. Default 60 s.
    pub ttl: Duration,
    /// How often the server sweeps entries older than `ttl` (and idle empty
    /// sessions). `None` (the default): `ttl / 4`, at least 1 ms.
    pub sweep_interval: Option<Duration>,
    /// Completed entries kept per session; beyond it the oldest of that
    /// session goes. Default 1024.
    pub max_per_session: usize,
    /// Completed entries kept in total; beyond it the oldest goes.
    /// Default 100,000.
    pub max_entries: usize,
    /// Bytes of stored replies kept in total; beyond it the oldest goes
    /// (counted with the global cap). Bounds memory when replies are large.
    /// Default 128 MiB.
    pub max_bytes: usize,
    /// Sessions remembered; beyond it the least recently active session
    /// without running requests is forgotten, leaving a tombstone.
    /// Default 10,000.
    pub max_sessions: usize,
    /// Tombstones of forgotten sessions kept (each for one ttl, never
    /// dropped earlier: a late copy of one of the session's requests must
    /// find it). While they are all in use, no session is forgotten and a
    /// request that would create one more session than `max_sessions` is
    /// refused (RESOURCE_EXHAUSTED, not run). About 100 bytes each.
    /// Default 40,000.
    pub max_tombstones: usize,
    /// Sessions one source (a host, or a verified client identity) may
    /// hold; a request that would create one more is refused
    /// (RESOURCE_EXHAUSTED, not run) until that source's sessions end.
    /// Default 1,024.
    pub max_sessions_per_source: usize,
    /// Bytes of stored replies one source may hold; while it holds more,
    /// its new requests are refused (RESOURCE_EXHAUSTED, not run) until
    /// acknowledgements or age free them. Default 16 MiB.
    pub max_bytes_per_source: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            ttl: Duration::from_secs(60),
            sweep_interval: None,
            max_per_session: 1024,
            max_entries: 100_000,
            max_bytes: 128 << 20,
            max_sessions: 10_000,
            max_tombstones: 40_000,
            max_sessions_per_source: 1024,
            max_bytes_per_source: 16 << 20,
        }
    }
}

impl HistoryConfig {
    /// The effective sweep period.
    pub fn effective_sweep_interval(&self) -> Duration {
        self.sweep_interval
            .unwrap_or(self.ttl / 4)
            .max(Duration::from_millis(1))
    }
}

/// Evictions from the history, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EvictionCounts {
    /// Dropped because the client acknowledged them (ACK or `ack_up_to`).
    pub ack: u64,
    /// Dropped because they were older than the ttl.
    pub age: u64,
    /// Dropped because their session had too many completed entries.
    pub session_cap: u64,
    /// Dropped because the history had too many completed entries or bytes.
    pub global_cap: u64,
    /// Dropped with their session because there were too many sessions.
    pub session_limit: u64,
    /// Markers of acknowledged requests dropped by age or a cap before the
    /// floor passed them (a late copy of one gets "outcome unknown").
    pub markers: u64,
}
