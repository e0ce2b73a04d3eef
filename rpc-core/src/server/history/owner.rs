//! Whose a session is: [`Owner`] (the peer that created it), what
//! [`History::ownership`](super::History::ownership) says about a message's
//! sender, and the per-source quota accounting ([`Sources`]): sessions and
//! stored bytes per host or identity, in slots the sessions point at.

use crate::hash::FastMap;
use crate::service::PeerIdentity;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The peer a session belongs to: only messages from it may register,
/// replay or acknowledge the session's requests.
#[derive(Debug, Clone)]
pub(crate) enum Owner {
    /// A datagram peer: its address and port (the client's socket).
    Addr(SocketAddr),
    /// A stream peer (TCP, gRPC) without a verified identity: its host,
    /// since a reconnect comes from another port.
    Host(IpAddr),
    /// A peer with a verified client certificate (mutual TLS), from any
    /// address: the same subject and alternative names are the same peer.
    Identity(Arc<PeerIdentity>),
    /// A peer without an address (in-process transports): anyone.
    Local,
}

impl PartialEq for Owner {
    fn eq(&self, other: &Owner) -> bool {
        match (self, other) {
            (Owner::Addr(a), Owner::Addr(b)) => a == b,
            (Owner::Host(a), Owner::Host(b)) => a == b,
            (Owner::Identity(a), Owner::Identity(b)) => {
                // One connection's calls share one `Arc`.
                Arc::ptr_eq(a, b) || (a.subject == b.subject && a.alt_names == b.alt_names)
            }
            (Owner::Local, Owner::Local) => true,
            _ => false,
        }
    }
}

impl Eq for Owner {}

impl std::hash::Hash for Owner {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        std::mem::discriminant(self).hash(h);
        match self {
            Owner::Addr(a) => a.hash(h),
            Owner::Host(a) => a.hash(h),
            Owner::Identity(id) => id.subject.hash(h),
            Owner::Local => {}
        }
    }
}

impl Owner {
    /// The source whose quota the owner's sessions count against.
    pub(crate) fn source(&self) -> Owner {
        match self {
            Owner::Addr(addr) => Owner::Host(addr.ip()),
            other => other.clone(),
        }
    }
}

/// What [`History::ownership`] found for a session and a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ownership {
    /// No such session.
    Unknown,
    /// The session belongs to this peer; `verified`: its address has been
    /// shown to receive what is sent to it (always true but on datagrams).
    Own { verified: bool },
    /// The session belongs to another peer.
    Foreign,
}

/// Sessions and stored bytes of one source.
#[derive(Debug, Clone, Default)]
pub(super) struct SourceUse {
    /// The source (`None`: a free slot).
    key: Option<Owner>,
    sessions: usize,
    bytes: usize,
}

/// Sessions and stored bytes per source, in slots that sessions point at:
/// storing or dropping a reply updates its source without hashing.
#[derive(Debug, Clone, Default)]
pub(super) struct Sources {
    slots: FastMap<Owner, usize>,
    usage: Vec<SourceUse>,
    free: Vec<usize>,
}

impl Sources {
    /// What `source` holds now (zeros when nothing).
    pub(super) fn of(&self, source: &Owner) -> (usize, usize) {
        self.slots
            .get(source)
            .and_then(|&i| self.usage.get(i))
            .map_or((0, 0), |u| (u.sessions, u.bytes))
    }

    /// The bytes the source in `slot` holds.
    pub(super) fn bytes(&self, slot: usize) -> usize {
        self.usage.get(slot).map_or(0, |u| u.bytes)
    }

    /// Counts one more session of `source`; returns its slot.
    pub(super) fn add_session(&mut self, source: Owner) -> usize {
        let slot = match self.slots.get(&source) {
            Some(&slot) => slot,
            None => {
                let slot = self.free.pop().unwrap_or(self.usage.len());
                if slot == self.usage.len() {
                    self.usage.push(SourceUse::default());
                }
                self.slots.insert(source.clone(), slot);
                if let Some(u) = self.usage.get_mut(slot) {
                    u.key = Some(source);
                }
                slot
            }
        };
        if let Some(u) = self.usage.get_mut(slot) {
            u.sessions += 1;
        }
        slot
    }

    pub(super) fn add_bytes(&mut self, slot: usize, bytes: usize) {
        if let Some(u) = self.usage.get_mut(slot) {
            u.bytes += bytes;
        }
    }

    /// Takes `sessions` and `bytes` off the source in `slot`; frees the
    /// slot of a source that holds nothing (no session points at it).
    pub(super) fn release(&mut self, slot: usize, sessions: usize, bytes: usize) {
        let Some(u) = self.usage.get_mut(slot) else {
            return;
        };
        u.sessions = u.sessions.saturating_sub(sessions);
        u.bytes = u.bytes.saturating_sub(bytes);
        if u.sessions == 0 && u.bytes == 0 {
            if let Some(key) = u.key.take() {
                self.slots.remove(&key);
                self.free.push(slot);
            }
        }
    }
}

/// Who registers a request: the session's owner-to-be and whether this
/// message verified its address.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer<'a> {
    pub(crate) owner: &'a Owner,
    pub(crate) verified: bool,
}
