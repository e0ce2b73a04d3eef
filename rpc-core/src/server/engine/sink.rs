//! The way back to a message's sender ([`ReplySink`]), the one thing a
//! door gives the engine, and the owner a session must belong to, which
//! the sink tells.

use crate::server::history::Owner;
use crate::service::{PeerIdentity, TransportKind};
use bytes::Bytes;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

/// The way back to the peer a message came from.
///
/// Cloned when a handler outlives the first poll (the clone moves into the
/// spawned task), so it should be cheap: an `Arc` and an address, or a
/// queue sender.
pub trait ReplySink: Clone + Send + Sync + 'static {
    /// Sends one encoded envelope to the peer.
    ///
    /// # Errors
    /// When the transport cannot send; the engine counts and logs it (the
    /// peer will retransmit).
    fn send(&self, message: &[u8]) -> impl Future<Output = io::Result<()>> + Send;

    /// Sends one encoded envelope the engine holds as [`Bytes`] (a reply,
    /// also kept in the history): a transport that passes messages on
    /// whole takes the handle instead of copying. By default, [`Self::send`].
    ///
    /// # Errors
    /// As [`Self::send`].
    fn send_shared(&self, message: Bytes) -> impl Future<Output = io::Result<()>> + Send {
        async move { self.send(&message).await }
    }

    /// The peer's address, when the transport knows it.
    fn peer(&self) -> Option<SocketAddr>;

    /// The transport, as handlers see it in [`CallContext::transport`](crate::CallContext::transport).
    fn transport(&self) -> TransportKind;

    /// The peer's verified identity (a TLS door that required a client
    /// certificate), as handlers see it in [`CallContext::identity`](crate::CallContext::identity). Made
    /// once per connection: this is an `Arc` clone per request at most. By
    /// default, none.
    fn identity(&self) -> Option<Arc<PeerIdentity>> {
        None
    }

    /// The largest message this transport carries: bigger incoming messages
    /// are dropped, bigger replies become a RESOURCE_EXHAUSTED reply.
    fn max_message_len(&self) -> usize;

    /// Whether the transport itself shows that the peer receives what is
    /// sent to its address (a connection does; a datagram's source address
    /// can be forged). By default `true`; datagram doors say `false`, and
    /// the engine then screens answers to sources not yet verified.
    fn address_proven(&self) -> bool {
        true
    }
}

/// The peer a message's session must belong to: the verified client
/// certificate on mutual TLS, the address and port on datagrams, the host
/// on other connections (a reconnect comes from another port), anyone in
/// process.
pub(super) fn owner_of<K: ReplySink>(sink: &K) -> Owner {
    if let Some(identity) = sink.identity() {
        return Owner::Identity(identity);
    }
    match sink.peer() {
        None => Owner::Local,
        Some(addr) if !sink.address_proven() => Owner::Addr(addr),
        Some(addr) => Owner::Host(addr.ip()),
    }
}
