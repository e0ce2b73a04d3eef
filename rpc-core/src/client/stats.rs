//! Counters of a client channel and their snapshot, [`ClientStats`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A snapshot of a channel's counters, from
/// [`UdpChannel::stats`](super::UdpChannel::stats). Counters only grow;
/// `srtt` and `rto` are the estimator's current values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// The channel's session id.
    pub session_id: u64,
    /// Invocations started (every style).
    pub calls: u64,
    /// REQUEST datagrams sent, first copies, retransmissions and polls.
    pub attempts: u64,
    /// REQUEST datagrams sent that were not a first copy (retransmissions
    /// and polls for a result).
    pub retransmissions: u64,
    /// PING datagrams sent (first copies and retransmissions).
    pub pings: u64,
    /// REPLY and ERROR datagrams that completed a call.
    pub replies: u64,
    /// ACCEPT datagrams received for a call in progress (the first and the
    /// answers to polls).
    pub accepts: u64,
    /// IN_PROGRESS datagrams received for a call in progress.
    pub in_progress: u64,
    /// Datagrams (REPLY, ERROR, ACCEPT, IN_PROGRESS, PONG) for calls that
    /// had already completed: duplicates and late answers.
    pub late_replies: u64,
    /// Datagrams naming a request id this session never used, or another
    /// session.
    pub unknown_replies: u64,
    /// Datagrams dropped as malformed: undecodable bytes, a version other
    /// than 1, a message type a client does not accept.
    pub malformed_drops: u64,
    /// Datagrams from an address other than the server's.
    pub foreign_drops: u64,
    /// ACK datagrams sent (RRA), including re-ACKs of late replies.
    pub acks_sent: u64,
    /// CANCEL messages sent: calls abandoned (dropped, or given up) after a
    /// copy of their request was sent and before their answer.
    pub cancels_sent: u64,
    /// RRA replies acknowledged by the `ack_up_to` of another ACK of the
    /// same burst instead of an ACK of their own.
    pub acks_coalesced: u64,
    /// RRA answers that needed no ACK datagram: a REQUEST or PING carrying
    /// an `ack_up_to` at or above their id left within
    /// `ChannelConfig::ack_delay` of their arrival.
    pub acks_piggybacked: u64,
    /// Calls that failed with a deadline (the caller's, or the channel's
    /// cap on waiting for a call without deadline).
    pub timeouts: u64,
    /// Calls that failed because every allowed attempt went unanswered.
    pub unreachable: u64,
    /// Calls that failed with "outcome unknown: server restarted".
    pub outcome_unknown: u64,
    /// Requests refused before sending because they exceeded
    /// `max_datagram`.
    pub too_large: u64,
    /// Errors reported by the socket when sending or receiving.
    pub io_errors: u64,
    /// Calls that had to wait for the send window
    /// (`ChannelConfig::max_window`) before taking a request id.
    pub window_waits: u64,
    /// The smoothed round-trip time, once measured.
    pub srtt: Option<Duration>,
    /// The current retransmission timeout.
    pub rto: Duration,
    /// The last server incarnation seen (0: none yet).
    pub incarnation: u64,
}

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// The live counters, updated without locks.
        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $(pub(crate) $name: AtomicU64,)*
        }

        impl Counters {
            /// Copies the counters into `stats`.
            pub(crate) fn fill(&self, stats: &mut ClientStats) {
                $(stats.$name = self.$name.load(Ordering::Relaxed);)*
            }
        }
    };
}

counters!(
    calls,
    attempts,
    retransmissions,
    pings,
    replies,
    accepts,
    in_progress,
    late_replies,
    unknown_replies,
    malformed_drops,
    foreign_drops,
    acks_sent,
    cancels_sent,
    acks_coalesced,
    acks_piggybacked,
    timeouts,
    unreachable,
    outcome_unknown,
    too_large,
    io_errors,
    window_waits,
);

pub(crate) use crate::counter::bump;
