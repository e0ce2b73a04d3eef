//! The duplicate filter's decision for one REQUEST: run it, answer it from
//! the history, or refuse it, and why.
//!
//! Sans-IO like the history it consults: it takes the time as an argument
//! and sends nothing. The engine calls it under the history's lock for
//! every request that names a known service and method, and so does the
//! protocol model checker (`tests` below), which explores every ordering,
//! loss, duplication and crash of small configurations against this very
//! function.
//!
//! The rules, in order:
//! 0. a request for a session that belongs to another peer is refused
//!    before anything of it is applied (not even its `ack_up_to`);
//! 1. the request's `ack_up_to` raises the session's floor; a request at
//!    or below its own `ack_up_to` is stale;
//! 2. an untracked request (idempotent and synchronous: at-least-once)
//!    runs unless the server is stopping;
//! 3. the history's verdict: at or below the floor (stale) or acknowledged
//!    (a late copy) is dropped; completed is answered from the history;
//!    running gets IN_PROGRESS (ACCEPT); evicted gets "outcome unknown";
//! 4. a request new to the history runs, except a copy that names another
//!    incarnation of the server than this one (whatever its attempt
//!    number: the network may deliver a first copy late) or that may belong
//!    to a session forgotten without a trace: those could have run before,
//!    so they are refused with "outcome unknown" and never run.

use super::history::{History, Lookup, Owner, Ownership, Peer, RegisterError};
use bytes::Bytes;
use std::time::Instant;

/// What the duplicate filter needs of a REQUEST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) session: u64,
    pub(crate) request_id: u64,
    pub(crate) attempt: u32,
    /// The server incarnation the client named (0: it knows none).
    pub(crate) incarnation: u64,
    pub(crate) ack_up_to: u64,
    /// Protocol R.
    pub(crate) oneway: bool,
    /// The method is declared idempotent (the server's declaration, never
    /// the request's flag).
    pub(crate) idempotent: bool,
    pub(crate) want_accept: bool,
}

impl Request {
    /// Whether the request goes through the history: all but idempotent
    /// synchronous requests (which run at least once and need no history).
    pub(crate) fn tracked(&self) -> bool {
        self.oneway || !self.idempotent || self.want_accept
    }
}

/// The decision for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admission {
    /// At or below the session's acknowledged floor: drop.
    Stale,
    /// Done and its reply acknowledged: a late copy, drop.
    Acked,
    /// Done: send this stored answer again.
    Replay(Bytes),
    /// A duplicate of a one-way request: drop.
    DuplicateDropped,
    /// Still running: IN_PROGRESS (or ACCEPT).
    InProgress,
    /// Its reply was evicted: "outcome unknown".
    Evicted,
    /// It names another incarnation: "outcome unknown: server restarted".
    Restarted,
    /// New, but the server is shutting down: UNAVAILABLE.
    ShuttingDown,
    /// New, but the session table is full of running sessions.
    TooManySessions,
    /// The session belongs to another peer: refuse, apply nothing.
    Foreign,
    /// New, but its source is over a quota (sessions or stored bytes).
    OverQuota(RegisterError),
    /// New: registered (tracked requests), run it.
    Run,
}

/// The decision, and whether answers to this request may be larger than
/// three times its size (its sender's address is verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) admission: Admission,
    pub(crate) verified: bool,
}

/// Decides what to do with `req` from `owner`, registering it in `history`
/// when it is to run. `proves` says whether this message proves its
/// sender's address (asked only when the answer matters). `incarnation` is
/// this server's; `stopping`: a graceful shutdown has begun.
pub(crate) fn admit(
    history: &mut History,
    req: &Request,
    owner: &Owner,
    proves: &dyn Fn() -> bool,
    incarnation: u64,
    stopping: bool,
    now: Instant,
) -> Verdict {
    let verified = match history.ownership(req.session, owner, proves) {
        Ownership::Foreign => {
            return Verdict {
                admission: Admission::Foreign,
                verified: false,
            }
        }
        Ownership::Own { verified } => verified,
        Ownership::Unknown => proves(),
    };
    let peer = Peer { owner, verified };
    Verdict {
        admission: decide(history, req, peer, incarnation, stopping, now),
        verified,
    }
}

fn decide(
    history: &mut History,
    req: &Request,
    peer: Peer<'_>,
    incarnation: u64,
    stopping: bool,
    now: Instant,
) -> Admission {
    let (session, request_id) = (req.session, req.request_id);
    if req.ack_up_to > 0 {
        history.ack(session, 0, req.ack_up_to, now);
    }
    // A request its own client declares finished (at or below the floor it
    // carries) is stale, even for a session this server does not know yet.
    if request_id <= req.ack_up_to {
        return Admission::Stale;
    }
    if !req.tracked() {
        return if stopping {
            Admission::ShuttingDown
        } else {
            Admission::Run
        };
    }
    match history.lookup(session, request_id, now) {
        Lookup::Stale => return Admission::Stale,
        Lookup::Acked => return Admission::Acked,
        Lookup::Completed(Some(reply)) => return Admission::Replay(reply),
        Lookup::Completed(None) => return Admission::DuplicateDropped,
        Lookup::InProgress => return Admission::InProgress,
        Lookup::Evicted => return Admission::Evicted,
        Lookup::Absent => {}
    }
    // A copy meant for another incarnation may have run there. Idempotent
    // requests may run again anyway.
    let at_most_once = req.oneway || !req.idempotent;
    if at_most_once && req.incarnation != 0 && req.incarnation != incarnation {
        return Admission::Restarted;
    }
    if stopping {
        return Admission::ShuttingDown;
    }
    match history.register(session, request_id, req.oneway, req.ack_up_to, peer, now) {
        Ok(()) => Admission::Run,
        Err(RegisterError::TooManySessions) => Admission::TooManySessions,
        Err(RegisterError::Foreign) => Admission::Foreign,
        Err(e @ (RegisterError::SourceSessions | RegisterError::SourceBytes)) => {
            Admission::OverQuota(e)
        }
    }
}
