//! [`DatagramSocket`] for [`tokio::net::UdpSocket`], with batched I/O on
//! Linux through `quinn-udp` (the batched UDP I/O of the quinn QUIC stack,
//! which holds the `unsafe` system calls; this crate has none):
//! - [`DatagramSocket::recv_batch`]: one `recvmmsg` takes every queued
//!   datagram (up to the batch's slots) once the socket is readable; a
//!   short batch tells that the socket is empty, so no system call is
//!   spent finding it empty;
//! - [`DatagramSocket::send_batch`]: runs of datagrams to the same target
//!   with the same length (the last of a run may be shorter) go out as one
//!   `sendmsg` with UDP segmentation offload (`UDP_SEGMENT`): the kernel
//!   walks its network stack once for the run and cuts it into the
//!   original datagrams, which the receiver gets one by one as usual. Any
//!   other datagram is sent alone. GSO is used only for segments of at most
//!   [`GSO_MAX_SEGMENT`] bytes (below any usual path MTU, which GSO cannot
//!   exceed); a kernel or device without it falls back to single sends for
//!   good.
//!
//! The sockets keep plain UDP's options (see `linux::state`); ECN, which
//! `quinn-udp` also offers, is not used. Other platforms use the trait's
//! default loops (`quinn-udp` receives one datagram per call there, and
//! drops a truncated one where `recv_from` truncates it).

use super::{DatagramSocket, RecvBatch, SendBatch, SendReport};
use std::future::Future;
use std::io;
use std::net::SocketAddr;

impl DatagramSocket for tokio::net::UdpSocket {
    #[allow(clippy::manual_async_fn)] // as the trait declares it
    fn send_to(
        &self,
        buf: &[u8],
        target: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        // tokio's `send_to` future (generic over address lookups) is
        // several times larger than this one, which is part of the state of
        // every call: it is boxed, and only needed when the socket buffer
        // is full. (Not `poll_send_to`: it wakes only the last of several
        // tasks waiting to send on one socket.)
        async move {
            match self.try_send_to(buf, target) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    Box::pin(tokio::net::UdpSocket::send_to(self, buf, target)).await
                }
                sent => sent,
            }
        }
    }

    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
        tokio::net::UdpSocket::recv_from(self, buf)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::UdpSocket::local_addr(self)
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn recv_batch(&self, batch: &mut RecvBatch) -> impl Future<Output = io::Result<usize>> + Send {
        linux::recv_batch(self, batch)
    }

    #[cfg(target_os = "linux")]
    fn send_batch(&self, batch: &SendBatch) -> impl Future<Output = SendReport> + Send {
        linux::send_batch(self, batch)
    }
}

/// Socket buffer size asked for on the UDP sockets the framework creates
/// (the kernel caps it at `net.core.rmem_max` / `wmem_max`). The default
/// (about 208 KiB) holds only about 150 small datagrams: with 64 calls in
/// flight, each answered by an ACCEPT and a REPLY, a burst can overflow it
/// and the lost datagrams cost retransmission timeouts.
const SOCKET_BUFFER: usize = 4 << 20;

/// Prepares a socket the framework created and reads only through
/// [`DatagramSocket::recv_batch`] (best effort: a refusal is logged at
/// debug and the socket keeps its defaults):
/// - larger receive and send buffers;
/// - on Linux, UDP generic receive offload (`UDP_GRO`): a run of datagrams
///   sent with segmentation offload (as [`DatagramSocket::send_batch`]
///   sends bursts) arrives as one buffer, copied once, which `recv_batch`
///   cuts back into the original datagrams. Never set it on a socket read
///   with plain `recv_from`, which would see the run as one datagram.
pub(crate) fn tune_socket(socket: &tokio::net::UdpSocket) {
    #[cfg(unix)]
    {
        use nix::sys::socket::{setsockopt, sockopt};
        if let Err(error) = setsockopt(socket, sockopt::RcvBuf, &SOCKET_BUFFER) {
            tracing::debug!(%error, "could not enlarge the UDP receive buffer");
        }
        if let Err(error) = setsockopt(socket, sockopt::SndBuf, &SOCKET_BUFFER) {
            tracing::debug!(%error, "could not enlarge the UDP send buffer");
        }
    }
    // Only when `recv_batch` can cut a coalesced run (it cannot without
    // `quinn-udp`'s state).
    #[cfg(target_os = "linux")]
    if linux::state().is_some() {
        use nix::sys::socket::{setsockopt, sockopt};
        if let Err(error) = setsockopt(socket, sockopt::UdpGroSegment, &true) {
            tracing::debug!(%error, "UDP GRO not available; datagrams arrive one by one");
        }
    }
    #[cfg(not(unix))]
    let _ = (socket, SOCKET_BUFFER);
}

/// Largest segment sent with GSO: fits the payload of a 1280-byte IPv6
/// packet (the smallest MTU IPv6 allows), so a run never fails for its
/// segment size on a real path.
#[cfg(target_os = "linux")]
pub(crate) const GSO_MAX_SEGMENT: usize = 1200;

/// Most segments in one GSO send (the kernel's `UDP_MAX_SEGMENTS` is 64 on
/// older kernels).
#[cfg(target_os = "linux")]
const GSO_MAX_SEGMENTS: usize = 64;

/// Largest run sent with GSO: the whole run travels as one IP packet.
#[cfg(target_os = "linux")]
const GSO_MAX_BYTES: usize = 60_000;

/// Fewest slots a receive offers (see `linux::recv_batch`).
#[cfg(any(target_os = "linux", target_os = "android"))]
const MIN_OFFER: usize = 4;

/// The UDP offloads through `quinn-udp`, the batched I/O of the quinn QUIC
/// stack (its `unsafe` system calls and control messages stay in it).
#[cfg(any(target_os = "linux", target_os = "android"))]
mod linux {
    use super::MIN_OFFER;
    use super::{RecvBatch, SendBatch, SendReport};
    use quinn_udp::{RecvMeta, UdpSocketState, BATCH_SIZE};
    use std::io::{self, IoSliceMut};
    use std::net::SocketAddr;
    use std::sync::OnceLock;
    use tokio::io::Interest;
    use tokio::net::UdpSocket;

    /// `quinn-udp`'s state, one for the process, or `None` when it could
    /// not be made (the receive then takes datagrams one by one, and
    /// [`super::tune_socket`] asks for no GRO).
    ///
    /// quinn makes one per socket with `UdpSocketState::new`, which also
    /// sets the options QUIC wants on it: among them "do not fragment"
    /// (a datagram above the path MTU would fail instead of being
    /// fragmented, unlike a plain UDP socket) and a kernel timestamp and
    /// packet information on every datagram received. The framework's
    /// sockets keep plain UDP's behaviour: the state is made on a probe
    /// socket that is never bound and is closed at once. What it keeps is
    /// the host's (whether the kernel offers GSO, and whether `sendmsg`
    /// refused an argument); receiving reads none of it.
    pub(super) fn state() -> Option<&'static UdpSocketState> {
        static STATE: OnceLock<Option<UdpSocketState>> = OnceLock::new();
        STATE
            .get_or_init(|| {
                let made = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
                    .and_then(|probe| UdpSocketState::new((&probe).into()));
                made.map_err(
                    |error| tracing::debug!(%error, "no batched UDP I/O; datagrams go one by one"),
                )
                .ok()
            })
            .as_ref()
    }

    pub(super) async fn recv_batch(socket: &UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.clear();
        let Some(state) = state() else {
            return recv_one_by_one(socket, batch).await;
        };
        loop {
            socket.readable().await?;
            // One `recvmmsg` takes whatever is queued, up to the slots it
            // offers: a lone datagram, or a burst (kept whole, so that a
            // train of requests stays one train; with GRO a train from one
            // sender takes one slot). When it fills fewer slots than
            // offered, the kernel found the socket empty: the
            // closure then reports `WouldBlock` so that tokio clears the
            // readiness (as tokio's own stream reads do after a short
            // read), and the next receive waits for the socket instead of
            // paying a system call to find it empty. A datagram arriving
            // meanwhile raises a new edge, so nothing is missed.
            // At most what one `recvmmsg` takes: a short batch must mean an
            // empty socket.
            let (mut filled, offered) = (0, batch.offer.clamp(1, batch.slots).min(BATCH_SIZE));
            let received = socket.try_io(Interest::READABLE, || {
                filled = recvmmsg(state, socket, batch, offered)?;
                // Twice what this call needed next time (at least a few
                // slots): a burst doubles its way up to every slot.
                batch.offer = filled.saturating_mul(2).clamp(MIN_OFFER, batch.slots);
                if filled < offered {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(())
                }
            });
            match received {
                Ok(()) => return Ok(batch.len()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if filled > 0 {
                        return Ok(batch.len());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One `recvmmsg` (through `quinn-udp`) into the first `offered` slots
    /// of the batch, without waiting; returns how many slots were filled.
    /// Each datagram is truncated to the slot (`recvmmsg` reports the bytes
    /// it copied). A slot holding several datagrams coalesced by UDP GRO
    /// (see [`super::tune_socket`]) is cut back into them at the segment
    /// size the kernel reports (`RecvMeta::stride`, the whole length for a
    /// single datagram).
    ///
    /// # Errors
    /// The system call's (`WouldBlock` when nothing is queued); a sender
    /// of a family other than IP, which a UDP socket never reports, fails
    /// the batch.
    fn recvmmsg(
        state: &UdpSocketState,
        socket: &UdpSocket,
        batch: &mut RecvBatch,
        offered: usize,
    ) -> io::Result<usize> {
        let RecvBatch {
            buf,
            slot_len,
            meta,
            ..
        } = batch;
        meta.clear();
        let slot_len = *slot_len;
        let n = offered
            .min(BATCH_SIZE)
            .min(buf.len().checked_div(slot_len).unwrap_or(0));
        if n == 0 {
            return Ok(0);
        }
        // A quiet socket is offered a few slots: only that many slices and
        // `RecvMeta` are made then (all of them take about 4 KiB).
        if n <= MIN_OFFER {
            recv_into::<MIN_OFFER>(state, socket, buf, slot_len, n, meta)
        } else {
            recv_into::<BATCH_SIZE>(state, socket, buf, slot_len, n, meta)
        }
    }

    /// [`recvmmsg`] with room for `N` slots (`n` at most) on the stack.
    fn recv_into<const N: usize>(
        state: &UdpSocketState,
        socket: &UdpSocket,
        buf: &mut [u8],
        slot_len: usize,
        n: usize,
        meta: &mut Vec<(std::ops::Range<usize>, SocketAddr)>,
    ) -> io::Result<usize> {
        let mut slots = buf.chunks_exact_mut(slot_len);
        let mut bufs: [IoSliceMut<'_>; N] =
            std::array::from_fn(|_| IoSliceMut::new(slots.next().unwrap_or(&mut [])));
        let mut metas = [RecvMeta::default(); N];
        let n = n.min(N);
        let got = state
            .recv(
                socket.into(),
                bufs.get_mut(..n).unwrap_or_default(),
                metas.get_mut(..n).unwrap_or_default(),
            )?
            .min(n);
        for (i, m) in metas.iter().take(got).enumerate() {
            let start = i * slot_len;
            let end = start + m.len.min(slot_len);
            // A single datagram reports its own length; 0 is not a size.
            let segment = if m.stride == 0 { slot_len } else { m.stride };
            let mut at = start;
            loop {
                let next = at.saturating_add(segment).min(end);
                meta.push((at..next, m.addr));
                if next >= end {
                    break;
                }
                at = next;
            }
        }
        Ok(got)
    }

    /// Without `quinn-udp`'s state: waits for one datagram, then takes
    /// those already queued, one system call each (GRO is then off, so
    /// every datagram arrives alone).
    async fn recv_one_by_one(socket: &UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
        let slot_len = batch.slot_len;
        let RecvBatch { buf, meta, .. } = batch;
        for (i, slot) in buf.chunks_exact_mut(slot_len).enumerate() {
            let received = if i == 0 {
                socket.recv_from(slot).await
            } else {
                match socket.try_recv_from(slot) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    received => received,
                }
            };
            let start = i * slot_len;
            match received {
                Ok((n, from)) => meta.push((start..start + n.min(slot_len), from)),
                Err(e) if i == 0 => return Err(e),
                // Reported again by the next call, when nothing else is queued.
                Err(_) => break,
            }
        }
        Ok(meta.len())
    }

    #[cfg(target_os = "linux")]
    pub(super) async fn send_batch(socket: &UdpSocket, batch: &SendBatch) -> SendReport {
        use super::{GSO_MAX_BYTES, GSO_MAX_SEGMENT, GSO_MAX_SEGMENTS};
        use std::sync::atomic::{AtomicBool, Ordering};

        /// Cleared when the kernel or the device refuses GSO.
        static GSO: AtomicBool = AtomicBool::new(true);

        let state = state();
        // 1 when the kernel has no GSO (or `quinn-udp` saw it refused).
        let max_segments = state.map_or(1, |s| s.max_gso_segments().min(GSO_MAX_SEGMENTS));
        let mut report = SendReport::default();
        let items = &batch.items;
        let mut i = 0;
        while let Some((first, target)) = items.get(i) {
            // The run: datagrams i..end to the same target, all as long as
            // the first except possibly the last.
            let seg = first.len();
            let mut end = i + 1;
            let mut bytes = seg;
            if GSO.load(Ordering::Relaxed) && seg > 0 && seg <= GSO_MAX_SEGMENT {
                while let Some((next, t)) = items.get(end) {
                    if t != target
                        || next.len() > seg
                        || end - i >= max_segments
                        || bytes + next.len() > GSO_MAX_BYTES
                    {
                        break;
                    }
                    bytes += next.len();
                    end += 1;
                    if next.len() < seg {
                        break;
                    }
                }
            }
            if let (true, Some(state)) = (end - i > 1, state) {
                let span = batch.span(i..end);
                report.syscalls += 1;
                match send_gso(state, socket, span, seg, *target).await {
                    Ok(()) => {
                        report.sent += end - i;
                        i = end;
                        continue;
                    }
                    Err(e) => {
                        let refused = matches!(
                            e.raw_os_error(),
                            Some(
                                errno::EIO | errno::ENOPROTOOPT | errno::EOPNOTSUPP | errno::EINVAL
                            )
                        );
                        if refused && GSO.swap(false, Ordering::Relaxed) {
                            tracing::debug!(error = %e, "UDP GSO refused; sending datagrams one by one from now on");
                        }
                        if !refused {
                            // A failure of the run as a whole (e.g. no
                            // route): count every datagram of it.
                            report.failed += end - i;
                            report.error = Some(e);
                            i = end;
                            continue;
                        }
                        // Refused: send this run one by one below.
                    }
                }
            }
            for (datagram, to) in items
                .get(i..end)
                .unwrap_or_default()
                .iter()
                .map(|(r, t)| (batch.buf.get(r.clone()).unwrap_or_default(), *t))
            {
                report.syscalls += 1;
                // The trait's send (tries at once before waiting), not
                // tokio's inherent one.
                match super::DatagramSocket::send_to(socket, datagram, to).await {
                    Ok(_) => report.sent += 1,
                    Err(e) => report.fail(e),
                }
            }
            i = end;
        }
        report
    }

    /// Error numbers that mean "no GSO here".
    #[cfg(target_os = "linux")]
    mod errno {
        use nix::errno::Errno;
        pub(super) const EIO: i32 = Errno::EIO as i32;
        pub(super) const ENOPROTOOPT: i32 = Errno::ENOPROTOOPT as i32;
        pub(super) const EOPNOTSUPP: i32 = Errno::EOPNOTSUPP as i32;
        pub(super) const EINVAL: i32 = Errno::EINVAL as i32;
    }

    /// One `sendmsg` (through `quinn-udp`) of `span`, cut by the kernel
    /// into `segment`-byte datagrams to `target`; waits while the socket
    /// buffer is full.
    #[cfg(target_os = "linux")]
    async fn send_gso(
        state: &UdpSocketState,
        socket: &UdpSocket,
        span: &[u8],
        segment: usize,
        target: SocketAddr,
    ) -> io::Result<()> {
        let transmit = quinn_udp::Transmit {
            destination: target,
            ecn: None,
            contents: span,
            segment_size: Some(segment),
            src_ip: None,
        };
        socket
            .async_io(Interest::WRITABLE, || {
                state.try_send(socket.into(), &transmit)
            })
            .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::net::UdpSocket;

    async fn bound() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").await.unwrap()
    }

    /// Receives until `n` datagrams arrived (bounded in time).
    async fn receive(socket: &UdpSocket, n: usize) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut batch = RecvBatch::new(8, 2048);
        let mut got = Vec::new();
        while got.len() < n {
            let received =
                tokio::time::timeout(Duration::from_secs(2), socket.recv_batch(&mut batch)).await;
            let count = received.expect("datagrams within 2 s").unwrap();
            assert_eq!(count, batch.len());
            got.extend(batch.iter().map(|(d, from)| (d.to_vec(), from)));
        }
        got
    }

    #[tokio::test]
    async fn a_batch_arrives_whole_and_in_order() {
        let (tx, a, b) = (bound().await, bound().await, bound().await);
        let (to_a, to_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let mut batch = SendBatch::new();
        // A run for `a` (equal lengths, then a shorter last one), one for
        // `b`, a longer one for `a`, and one above the GSO segment size.
        for i in 0..20u8 {
            batch.push(&[i; 100], to_a);
        }
        batch.push(&[20; 40], to_a);
        batch.push(&[21; 100], to_b);
        batch.push_with(to_a, |buf| buf.extend_from_slice(&[22; 300]));
        batch.push(&[23; 1500], to_a);
        let report = tx.send_batch(&batch).await;
        assert_eq!((report.sent, report.failed), (24, 0), "{report:?}");
        assert!(report.syscalls <= 24, "{report:?}");
        let from_tx = tx.local_addr().unwrap();
        let at_a = receive(&a, 23).await;
        let mut expected: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 100]).collect();
        expected.extend([vec![20; 40], vec![22; 300], vec![23; 1500]]);
        assert_eq!(
            at_a.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>(),
            expected
        );
        assert!(at_a.iter().all(|(_, from)| *from == from_tx));
        assert_eq!(receive(&b, 1).await, vec![(vec![21; 100], from_tx)]);
    }

    #[tokio::test]
    async fn a_coalesced_run_is_cut_back_into_its_datagrams() {
        // A receiver with UDP GRO (as the framework's own sockets are):
        // a GSO run may arrive as one buffer, which must come back as the
        // original datagrams, the shorter last one included, whether or
        // not the kernel coalesced it.
        let (tx, rx) = (bound().await, bound().await);
        tune_socket(&rx);
        let to = rx.local_addr().unwrap();
        let mut batch = SendBatch::new();
        for i in 0..20u8 {
            batch.push(&[i; 100], to);
        }
        batch.push(&[20; 40], to);
        batch.push(&[21; 100], to);
        let report = tx.send_batch(&batch).await;
        assert_eq!((report.sent, report.failed), (22, 0), "{report:?}");
        let mut got = Vec::new();
        let mut recv = RecvBatch::new(4, 65_536);
        while got.len() < 22 {
            tokio::time::timeout(Duration::from_secs(2), rx.recv_batch(&mut recv))
                .await
                .expect("datagrams within 2 s")
                .unwrap();
            got.extend(recv.iter().map(|(d, _)| d.to_vec()));
        }
        let mut expected: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 100]).collect();
        expected.extend([vec![20; 40], vec![21; 100]]);
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn the_sender_of_an_ipv6_datagram_is_reported() {
        // Loopback only; a host without IPv6 has nothing to check.
        let (Ok(tx), Ok(rx)) = (
            UdpSocket::bind("[::1]:0").await,
            UdpSocket::bind("[::1]:0").await,
        ) else {
            return;
        };
        tune_socket(&rx);
        tx.send_to(b"six", rx.local_addr().unwrap()).await.unwrap();
        let got = receive(&rx, 1).await;
        assert_eq!(got, vec![(b"six".to_vec(), tx.local_addr().unwrap())]);
    }

    #[tokio::test]
    async fn an_empty_datagram_is_received_as_one() {
        let (tx, rx) = (bound().await, bound().await);
        tune_socket(&rx);
        let to = rx.local_addr().unwrap();
        tx.send_to(&[], to).await.unwrap();
        tx.send_to(b"after", to).await.unwrap();
        let got = receive(&rx, 2).await;
        let from = tx.local_addr().unwrap();
        assert_eq!(got, vec![(Vec::new(), from), (b"after".to_vec(), from)]);
    }

    #[tokio::test]
    async fn recv_batch_takes_a_burst_and_truncates_to_the_slot() {
        let (tx, rx) = (bound().await, bound().await);
        let to = rx.local_addr().unwrap();
        for i in 0..30u8 {
            tx.send_to(&[i; 64], to).await.unwrap();
        }
        tx.send_to(&[99; 3000], to).await.unwrap();
        let mut batch = RecvBatch::new(8, 2048);
        let mut got = Vec::new();
        let mut calls = 0;
        while got.len() < 31 {
            tokio::time::timeout(Duration::from_secs(2), rx.recv_batch(&mut batch))
                .await
                .unwrap()
                .unwrap();
            calls += 1;
            got.extend(batch.iter().map(|(d, _)| d.to_vec()));
        }
        assert!(
            calls < 31,
            "a burst is taken several datagrams at a time ({calls} calls)"
        );
        assert_eq!(
            got[..30],
            (0..30u8).map(|i| vec![i; 64]).collect::<Vec<_>>()[..]
        );
        assert_eq!(
            got[30],
            vec![99; 2048],
            "truncated to the slot, as recv_from truncates"
        );
    }
}
