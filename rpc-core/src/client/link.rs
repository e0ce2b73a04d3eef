//! What a channel's exchanges send through: a [`Link`] to one server,
//! which says whether it can lose messages.
//!
//! Two kinds:
//! - every [`DatagramSocket`] (UDP, the in-memory network): *unreliable*.
//!   A datagram may be lost, duplicated or reordered, so an exchange sends
//!   copies of its request on the retransmission timer (`client/rto.rs`);
//! - the TCP link (`client/tcp`): *reliable*. A connection loses nothing
//!   while it lives, so an exchange sends its request once; the link sends
//!   it again, by itself, on the connection that replaces a broken one
//!   (the server's history keeps that from running it twice). What the
//!   exchange still needs to know is that a connection was replaced: the
//!   answer to a request the old connection carried went to it and is
//!   lost, and must be polled for. [`Link::connection`] numbers the
//!   connections for that.
//!
//! The channel itself is written once over this trait (`client/mod.rs`,
//! `client/exchange`, `client/receive.rs`).

use crate::envelope::{Envelope, EnvelopeHeader};
use crate::transport::{DatagramSocket, RecvBatch, SendBatch, SendReport};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;

/// One message for a [`Link`] to send.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outgoing<'a> {
    /// The encoded message.
    pub(crate) bytes: &'a [u8],
    /// Where to (a link to one server may ignore it).
    pub(crate) to: SocketAddr,
    /// What `bytes` encode, when the sender has it: a link that routes by
    /// message reads it instead of decoding the bytes again.
    pub(crate) envelope: Option<&'a Envelope>,
}

/// Messages for [`Link::send_batch`]: a [`SendBatch`] (what a datagram
/// link sends as it is) and, beside it, the envelope header of each message
/// when its sender gave it (what a link that routes by message reads
/// instead of decoding the bytes again). One header entry per message.
#[derive(Debug, Default)]
pub(crate) struct OutgoingBatch {
    datagrams: SendBatch,
    headers: Vec<Option<EnvelopeHeader>>,
}

impl OutgoingBatch {
    /// Queues a copy of `message` for `to`, with its envelope's header
    /// when the sender has it.
    pub(crate) fn push(&mut self, message: &[u8], to: SocketAddr, header: Option<EnvelopeHeader>) {
        self.datagrams.push(message, to);
        self.headers.push(header);
    }

    /// Queues a message for `to` written by `write` straight into the
    /// batch's buffer, as [`SendBatch::push_with`] (without a header).
    pub(crate) fn push_with<R>(
        &mut self,
        to: SocketAddr,
        write: impl FnOnce(&mut Vec<u8>) -> R,
    ) -> R {
        self.headers.push(None);
        self.datagrams.push_with(to, write)
    }

    /// Messages queued.
    pub(crate) fn len(&self) -> usize {
        self.datagrams.len()
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.datagrams.is_empty()
    }

    /// Forgets every message (keeps the memory).
    pub(crate) fn clear(&mut self) {
        self.datagrams.clear();
        self.headers.clear();
    }

    /// Moves every message of `other` to the end of this batch.
    pub(crate) fn append(&mut self, other: &mut OutgoingBatch) {
        self.datagrams.append(&mut other.datagrams);
        self.headers.append(&mut other.headers);
    }

    /// The messages as datagrams, for [`DatagramSocket::send_batch`].
    pub(crate) fn datagrams(&self) -> &SendBatch {
        &self.datagrams
    }

    /// The queued messages, in order, with where each lies in
    /// [`OutgoingBatch::buffer`] and its header when its sender gave one.
    pub(crate) fn iter_with_headers(
        &self,
    ) -> impl Iterator<Item = (&[u8], Range<usize>, Option<&EnvelopeHeader>)> + '_ {
        self.datagrams
            .iter_placed()
            .zip(self.headers.iter())
            .map(|((message, at), header)| (message, at, header.as_ref()))
    }

    /// Every queued message, back to back.
    pub(crate) fn buffer(&self) -> &[u8] {
        self.datagrams.buffer()
    }
}

/// A channel's way to one server (see the module docs).
pub(crate) trait Link: Send + Sync + 'static {
    /// Sends one message; returns its length.
    ///
    /// # Errors
    /// When the message cannot be sent (a reliable link keeps what it
    /// cannot send now, and does not fail).
    fn send(&self, message: Outgoing<'_>) -> impl Future<Output = io::Result<usize>> + Send;

    /// Sends every message of `batch`, as
    /// [`DatagramSocket::send_batch`].
    ///
    /// # Cancel safety
    /// Not cancel safe: an unknown prefix of the batch has been sent.
    fn send_batch(&self, batch: &OutgoingBatch) -> impl Future<Output = SendReport> + Send;

    /// Receives at least one message into `batch`, as
    /// [`DatagramSocket::recv_batch`].
    ///
    /// # Errors
    /// When the link is closed or broken and nothing was received.
    ///
    /// # Cancel safety
    /// Cancel safe: no message is lost when the future is dropped.
    fn recv_batch(&self, batch: &mut RecvBatch) -> impl Future<Output = io::Result<usize>> + Send;

    /// The local address (of the current connection, for a stream).
    ///
    /// # Errors
    /// When there is none or the OS cannot tell.
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// Whether a message sent is delivered unless the link says otherwise
    /// (by a new [`Link::connection`]). An exchange over a reliable link
    /// does not retransmit on its timer.
    fn reliable(&self) -> bool;

    /// The number of the connection that carries a message sent now (the
    /// next one while none is up); it changes when a connection is
    /// replaced. Always 0 on an unreliable link.
    fn connection(&self) -> u64;
}

impl<S: DatagramSocket> Link for S {
    fn send(&self, message: Outgoing<'_>) -> impl Future<Output = io::Result<usize>> + Send {
        self.send_to(message.bytes, message.to)
    }

    /// Sends the datagrams; the headers are not needed.
    fn send_batch(&self, batch: &OutgoingBatch) -> impl Future<Output = SendReport> + Send {
        DatagramSocket::send_batch(self, batch.datagrams())
    }

    fn recv_batch(&self, batch: &mut RecvBatch) -> impl Future<Output = io::Result<usize>> + Send {
        DatagramSocket::recv_batch(self, batch)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        DatagramSocket::local_addr(self)
    }

    fn reliable(&self) -> bool {
        false
    }

    fn connection(&self) -> u64 {
        0
    }
}
