//! Transports. A datagram transport is anything that implements
//! [`DatagramSocket`]: a real UDP socket ([`tokio::net::UdpSocket`]) or the
//! in-memory network of [`mem`] (with its own loss, duplication, reordering
//! and delay, for unit tests). The UDP server and client are generic over it.
//! A TCP connection is not one: [`tcp`] frames a byte stream, and the
//! client sends through it as a reliable link (`client/link.rs`,
//! `client/tcp`), not as a socket that may lose what it sends.
//!
//! Batches: [`DatagramSocket::recv_batch`] and [`DatagramSocket::send_batch`]
//! move several datagrams per call. Their default implementations loop
//! over the single-datagram methods (the in-memory network uses them); UDP
//! overrides them on Linux with `recvmmsg` and UDP segmentation offload
//! (GSO), see `udp.rs`. The server and the client drain their socket in
//! batches and flush what they have to send once a burst is handled.

pub mod mem;
pub mod tcp;
mod udp;

pub(crate) use udp::tune_socket;

use futures::FutureExt;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;

/// A datagram socket: UDP or the in-memory network.
///
/// Both methods take `&self`, so one socket can be shared by a receiving
/// task and any number of sending tasks.
pub trait DatagramSocket: Send + Sync + 'static {
    /// Sends one datagram to `target`.
    ///
    /// # Errors
    /// When the socket cannot send (the in-memory network never fails a
    /// send: lost datagrams are lost silently, as on a real network).
    fn send_to(
        &self,
        buf: &[u8],
        target: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send;

    /// Receives one datagram; returns its length and sender. A datagram
    /// longer than `buf` is truncated (as UDP does).
    ///
    /// # Errors
    /// When the socket is closed or broken.
    ///
    /// # Cancel safety
    /// Cancel safe: no datagram is lost when the future is dropped.
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;

    /// The address this socket is bound to.
    ///
    /// # Errors
    /// When the OS cannot tell.
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// Receives at least one datagram into `batch` (cleared first), then as
    /// many more as are already queued, up to [`RecvBatch::slots`]; returns
    /// how many. Each datagram is truncated to [`RecvBatch::slot_len`]
    /// bytes, as [`DatagramSocket::recv_from`] truncates to its buffer.
    ///
    /// The default implementation waits in `recv_from` for the first
    /// datagram, then takes the others while `recv_from` is ready at once.
    ///
    /// # Errors
    /// When the socket is closed or broken and nothing was received.
    ///
    /// # Cancel safety
    /// Cancel safe if `recv_from` is: no datagram is lost when the future
    /// is dropped (`batch` may then hold a partial batch, which the next
    /// call clears).
    fn recv_batch(&self, batch: &mut RecvBatch) -> impl Future<Output = io::Result<usize>> + Send {
        async move {
            batch.clear();
            let slot = batch.slot_len;
            for i in 0..batch.slots {
                let start = i * slot;
                let Some(buf) = batch.buf.get_mut(start..start + slot) else {
                    break;
                };
                let received = if i == 0 {
                    self.recv_from(buf).await
                } else {
                    // `recv_from` is cancel safe: polling it once loses nothing.
                    match self.recv_from(buf).now_or_never() {
                        Some(received) => received,
                        None => break,
                    }
                };
                match received {
                    Ok((n, from)) => batch.meta.push((start..start + n.min(slot), from)),
                    Err(e) if i == 0 => return Err(e),
                    // Reported again by the next call, when nothing else is queued.
                    Err(_) => break,
                }
            }
            Ok(batch.meta.len())
        }
    }

    /// Sends every datagram of `batch`, in order, each to its own target.
    /// A datagram that cannot be sent is skipped (and counted in the
    /// report); the others are still sent. `batch` is left as it is.
    ///
    /// The default implementation calls [`DatagramSocket::send_to`] once
    /// per datagram.
    ///
    /// # Cancel safety
    /// Not cancel safe: when the future is dropped, an unknown prefix of the
    /// batch has been sent.
    fn send_batch(&self, batch: &SendBatch) -> impl Future<Output = SendReport> + Send {
        async move {
            let mut report = SendReport::default();
            for (datagram, target) in batch.iter() {
                report.syscalls += 1;
                match self.send_to(datagram, target).await {
                    Ok(_) => report.sent += 1,
                    Err(e) => report.fail(e),
                }
            }
            report
        }
    }
}

/// Buffers for up to `slots` received datagrams of at most `slot_len`
/// bytes each, filled by [`DatagramSocket::recv_batch`].
pub struct RecvBatch {
    buf: Vec<u8>,
    slots: usize,
    slot_len: usize,
    /// Where in `buf` each datagram received lies, and its sender, in
    /// order (a slot may hold several datagrams coalesced by UDP GRO).
    meta: Vec<(Range<usize>, SocketAddr)>,
    /// Slots offered to the next batched receive (see `transport::udp`):
    /// preparing a slot costs, so a lone datagram is not offered all.
    offer: usize,
    /// Whole messages a stream transport received, kept as they were read
    /// (not copied into `buf`): decoding from them shares their bytes.
    frames: Vec<(bytes::Bytes, SocketAddr)>,
}

impl fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvBatch")
            .field("slots", &self.slots)
            .field("slot_len", &self.slot_len)
            .field("received", &self.len())
            .finish()
    }
}

impl RecvBatch {
    /// Room for `slots` datagrams (at least 1) of `slot_len` bytes each
    /// (at least 1); allocates `slots * slot_len` bytes.
    pub fn new(slots: usize, slot_len: usize) -> RecvBatch {
        let (slots, slot_len) = (slots.max(1), slot_len.max(1));
        RecvBatch {
            buf: vec![0; slots.saturating_mul(slot_len)],
            slots,
            slot_len,
            meta: Vec::with_capacity(slots),
            offer: slots,
            frames: Vec::new(),
        }
    }

    /// How many receive buffers the batch has: each takes one datagram, or
    /// one run of datagrams the kernel coalesced (UDP GRO), so a receive
    /// may return more datagrams than slots.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The largest datagram kept whole; longer ones are truncated to it.
    pub fn slot_len(&self) -> usize {
        self.slot_len
    }

    /// How many datagrams the last receive returned.
    pub fn len(&self) -> usize {
        self.meta.len() + self.frames.len()
    }

    /// Whether the batch holds no datagram.
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty() && self.frames.is_empty()
    }

    /// Forgets the received datagrams.
    pub fn clear(&mut self) {
        self.meta.clear();
        self.frames.clear();
    }

    /// The received datagrams (truncated to `slot_len`) and their senders.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> + '_ {
        self.copied()
            .chain(self.frames.iter().map(|(frame, from)| (&frame[..], *from)))
    }

    /// The datagrams received into the batch's own buffer (all of them,
    /// except those [`RecvBatch::take_frames`] hands over).
    pub(crate) fn copied(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> + '_ {
        self.meta
            .iter()
            .map(|(range, from)| (self.buf.get(range.clone()).unwrap_or_default(), *from))
    }

    /// Appends a whole message a stream transport received, as it is (no
    /// copy; see `transport::tcp`).
    pub(crate) fn push_frame(&mut self, frame: bytes::Bytes, from: SocketAddr) {
        self.frames.push((frame, from));
    }

    /// Takes the messages added by [`RecvBatch::push_frame`], in order.
    pub(crate) fn take_frames(&mut self) -> std::vec::Drain<'_, (bytes::Bytes, SocketAddr)> {
        self.frames.drain(..)
    }
}

/// Datagrams waiting to be sent together by [`DatagramSocket::send_batch`]:
/// their bytes back to back in one buffer, each with its target.
#[derive(Debug, Default, Clone)]
pub struct SendBatch {
    buf: Vec<u8>,
    items: Vec<(Range<usize>, SocketAddr)>,
}

impl SendBatch {
    /// An empty batch.
    pub fn new() -> SendBatch {
        SendBatch::default()
    }

    /// Queues a copy of `datagram` for `target`.
    pub fn push(&mut self, datagram: &[u8], target: SocketAddr) {
        let start = self.buf.len();
        self.buf.extend_from_slice(datagram);
        self.items.push((start..self.buf.len(), target));
    }

    /// Queues a datagram for `target` written by `write` straight into the
    /// batch's buffer (it must only append). Returns what `write` returned.
    pub fn push_with<R>(&mut self, target: SocketAddr, write: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        let start = self.buf.len();
        let result = write(&mut self.buf);
        let end = self.buf.len().max(start);
        self.items.push((start..end, target));
        result
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Forgets every datagram (keeps the memory).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.items.clear();
    }

    /// Moves every datagram of `other` to the end of this batch.
    pub fn append(&mut self, other: &mut SendBatch) {
        let offset = self.buf.len();
        self.buf.extend_from_slice(&other.buf);
        self.items.extend(
            other
                .items
                .drain(..)
                .map(|(r, t)| (r.start + offset..r.end + offset, t)),
        );
        other.buf.clear();
    }

    /// The queued datagrams, in order, with where each lies in
    /// [`SendBatch::buffer`].
    pub(crate) fn iter_placed(&self) -> impl Iterator<Item = (&[u8], Range<usize>)> + '_ {
        self.items
            .iter()
            .map(|(r, _)| (self.buf.get(r.clone()).unwrap_or_default(), r.clone()))
    }

    /// Every queued datagram, back to back (see
    /// [`SendBatch::iter_placed`] for where each lies).
    pub(crate) fn buffer(&self) -> &[u8] {
        &self.buf
    }

    /// The queued datagrams, in order, with their targets.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> + '_ {
        self.items
            .iter()
            .map(|(r, t)| (self.buf.get(r.clone()).unwrap_or_default(), *t))
    }

    /// The bytes of datagrams `range` (indexes into the batch), which lie
    /// back to back in the buffer.
    fn span(&self, range: Range<usize>) -> &[u8] {
        let (Some(first), Some(last)) = (
            self.items.get(range.start),
            range.end.checked_sub(1).and_then(|l| self.items.get(l)),
        ) else {
            return &[];
        };
        self.buf.get(first.0.start..last.0.end).unwrap_or_default()
    }
}

/// What [`DatagramSocket::send_batch`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct SendReport {
    /// Datagrams handed to the network.
    pub sent: usize,
    /// Datagrams that could not be sent.
    pub failed: usize,
    /// The last error seen, when some datagram failed.
    pub error: Option<io::Error>,
    /// System calls made (for tests and statistics).
    pub syscalls: usize,
}

impl SendReport {
    fn fail(&mut self, error: io::Error) {
        self.failed += 1;
        self.error = Some(error);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn send_batch_keeps_datagrams_apart() {
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        let mut batch = SendBatch::new();
        batch.push(b"one", a);
        batch.push_with(b, |buf| buf.extend_from_slice(b"two"));
        let mut more = SendBatch::new();
        more.push(b"three", a);
        batch.append(&mut more);
        assert!(more.is_empty());
        let items: Vec<(&[u8], SocketAddr)> = batch.iter().collect();
        assert_eq!(
            items,
            vec![(&b"one"[..], a), (&b"two"[..], b), (&b"three"[..], a)]
        );
        assert_eq!(batch.span(1..3), b"twothree");
        batch.clear();
        assert_eq!(batch.len(), 0);
    }

    #[tokio::test]
    async fn the_default_batches_loop_over_single_datagrams() {
        let net = mem::MemNetwork::new();
        let tx = net.bind("10.0.0.1:1".parse().unwrap()).unwrap();
        let rx = net.bind("10.0.0.2:2".parse().unwrap()).unwrap();
        let to = rx.local_addr().unwrap();
        let mut batch = SendBatch::new();
        for i in 0..5u8 {
            batch.push(&[i; 10], to);
        }
        let report = tx.send_batch(&batch).await;
        assert_eq!((report.sent, report.failed, report.syscalls), (5, 0, 5));
        let mut received = RecvBatch::new(3, 4);
        assert_eq!(rx.recv_batch(&mut received).await.unwrap(), 3);
        let got: Vec<Vec<u8>> = received.iter().map(|(d, _)| d.to_vec()).collect();
        assert_eq!(
            got,
            vec![vec![0; 4], vec![1; 4], vec![2; 4]],
            "truncated to the slot length"
        );
        assert_eq!(rx.recv_batch(&mut received).await.unwrap(), 2);
    }
}
