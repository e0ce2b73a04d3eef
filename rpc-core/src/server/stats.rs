//! Server counters: [`Counters`] are bumped on the hot path (relaxed
//! atomics); [`ServerStats`] is a snapshot readable from code.

use super::history::{EvictionCounts, HistorySize};
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// The live counters of one server.
        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $(pub(crate) $name: AtomicU64,)*
        }

        impl Counters {
            fn fill(&self, s: &mut ServerStats) {
                $(s.$name = self.$name.load(Ordering::Relaxed);)*
            }
        }

        /// A snapshot of a server's counters (all since start) and of its
        /// reply history.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct ServerStats {
            $($(#[$doc])* pub $name: u64,)*
            /// Entries in the reply history now (completed + running +
            /// acknowledged markers).
            pub history_len: usize,
            /// Completed entries (stored replies and one-way tombstones) now.
            pub history_completed: usize,
            /// Entries of requests running now.
            pub history_in_progress: usize,
            /// Markers of acknowledged requests (reply dropped) now.
            pub history_acked: usize,
            /// Client sessions remembered now.
            pub history_sessions: usize,
            /// Bytes of stored replies now.
            pub history_bytes: usize,
            /// Tombstones of forgotten sessions now (each kept one ttl).
            pub history_tombstones: usize,
            /// History entries dropped because the client acknowledged them.
            pub evicted_ack: u64,
            /// History entries dropped because they were older than the ttl.
            pub evicted_age: u64,
            /// History entries dropped by the per-session cap.
            pub evicted_session_cap: u64,
            /// History entries dropped by the global cap.
            pub evicted_global_cap: u64,
            /// History entries dropped with their session by the session limit.
            pub evicted_session_limit: u64,
            /// Acknowledged markers dropped by age or a cap before the floor
            /// passed them.
            pub evicted_markers: u64,
            /// Empty sessions forgotten after being idle longer than the ttl.
            pub sessions_forgotten: u64,
            /// Sessions forgotten (with their entries) because of `max_sessions`.
            pub sessions_evicted: u64,
        }
    };
}

counters! {
    /// Datagrams (or frames) received.
    received,
    /// Well-formed REQUEST messages.
    requests,
    /// PING messages answered with PONG.
    pings,
    /// ACK messages.
    acks,
    /// ACKs naming a request the history does not hold (late, duplicate or unknown).
    unknown_acks,
    /// Handlers started.
    executions,
    /// REPLY messages sent for a fresh execution (replays not included).
    replies,
    /// ERROR messages sent.
    errors,
    /// ACCEPT messages sent.
    accepts,
    /// Duplicates of running requests (answered IN_PROGRESS or ACCEPT).
    in_progress_hits,
    /// Duplicates answered with the stored reply.
    duplicates_replayed,
    /// Duplicates of one-way requests (or of requests completed without a
    /// reply), dropped.
    duplicates_dropped,
    /// Requests at or below the session's acknowledged floor, dropped.
    stale_dropped,
    /// Late copies of requests whose reply the client acknowledged (RRA),
    /// dropped.
    acked_dropped,
    /// Requests refused because they name another incarnation of the
    /// server ("outcome unknown: server restarted"), whatever their attempt.
    outcome_unknown,
    /// Retransmissions refused because their reply was evicted from the
    /// history ("reply no longer in history; outcome unknown").
    evicted_refused,
    /// Requests for an unknown service or method (UNIMPLEMENTED).
    unimplemented,
    /// Requests whose deadline passed before they started (not run).
    deadline_exceeded,
    /// Requests refused because the server is shutting down.
    shutdown_refused,
    /// Requests refused because `max_pending` requests were already waiting.
    overloaded,
    /// Requests refused because the session table was full of running
    /// sessions (or every tombstone was in use).
    sessions_refused,
    /// Requests an interceptor refused before the handler ran (ERROR).
    intercept_refused,
    /// CANCEL messages received (from the session's owner or not).
    cancels,
    /// CANCELs that reached a running handler (the others found the call
    /// finished, or not there yet).
    cancels_applied,
    /// Requests and ACKs naming a session that belongs to another peer
    /// (refused with PERMISSION_DENIED, or ignored): nothing of them applied.
    foreign_refused,
    /// Requests refused because their source held too many sessions or
    /// stored bytes (RESOURCE_EXHAUSTED, not run).
    quota_refused,
    /// Answers to unverified datagram sources over three times the request,
    /// replaced by a PONG with a cookie (or dropped).
    amplification_limited,
    /// Answers to unverified datagram sources dropped because their host
    /// was over `unverified_rate`.
    rate_limited,
    /// Replies over the size limit, replaced by a RESOURCE_EXHAUSTED reply.
    too_large_replies,
    /// Incoming datagrams over `max_datagram`, dropped.
    too_large_requests,
    /// Undecodable messages, dropped.
    malformed_dropped,
    /// Messages with a version other than 1, dropped.
    version_dropped,
    /// Messages of a type a server does not take (client-bound, unspecified
    /// or unknown types, unknown exchange protocol) or with session id 0, dropped.
    unexpected_dropped,
    /// Handlers that panicked (answered INTERNAL).
    handler_panics,
    /// Sends that failed.
    send_errors,
    /// Receive errors on the transport.
    recv_errors,
}

pub(crate) use crate::counter::bump;

impl Counters {
    pub(crate) fn snapshot(
        &self,
        size: HistorySize,
        evicted: EvictionCounts,
        forgotten: u64,
        sessions_evicted: u64,
    ) -> ServerStats {
        let mut s = ServerStats {
            history_len: size.completed + size.in_progress + size.acked,
            history_completed: size.completed,
            history_in_progress: size.in_progress,
            history_acked: size.acked,
            history_sessions: size.sessions,
            history_bytes: size.bytes,
            history_tombstones: size.tombstones,
            evicted_ack: evicted.ack,
            evicted_age: evicted.age,
            evicted_session_cap: evicted.session_cap,
            evicted_global_cap: evicted.global_cap,
            evicted_session_limit: evicted.session_limit,
            evicted_markers: evicted.markers,
            sessions_forgotten: forgotten,
            sessions_evicted,
            ..ServerStats::default()
        };
        self.fill(&mut s);
        s
    }
}

impl ServerStats {
    /// Every message dropped as bad input (malformed, wrong version,
    /// unexpected type, too large).
    pub fn bad_input_dropped(&self) -> u64 {
        self.malformed_dropped
            + self.version_dropped
            + self.unexpected_dropped
            + self.too_large_requests
    }

    /// Every history eviction, all kinds together.
    pub fn evicted_total(&self) -> u64 {
        self.evicted_ack
            + self.evicted_age
            + self.evicted_session_cap
            + self.evicted_global_cap
            + self.evicted_session_limit
    }
}
