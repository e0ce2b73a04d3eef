//! Length-delimited frames over a byte stream (TCP, or TLS over TCP),
//! shared by the TCP server door and the TCP client channel.
//!
//! A frame is a `u32` big-endian length followed by that many bytes: one
//! protobuf-encoded [`Envelope`](crate::envelope::Envelope). Many calls are
//! multiplexed on one connection; the request id pairs replies with calls.
//!
//! How the pieces fit:
//! - [`FrameReader`] turns the read half of a stream into frames. A frame is
//!   split off the read buffer without copying ([`Bytes`]). With
//!   [`FrameReader::next`] (the client's), frames over the limit are skipped
//!   without being buffered (only their first bytes are kept, to name the
//!   request); a length so large that skipping it is not worth it ends the
//!   connection. Memory is reserved as bytes arrive, so a peer announcing a
//!   large frame and sending nothing costs nothing. The server drives the
//!   reader step by step instead (`front_len`, `take_frame`, `read_some`):
//!   it bounds each read by what it has budget for, and closes the
//!   connection on any length over its limit.
//! - [`Outbox`] queues encoded frames for one connection: senders append to
//!   one shared buffer (one copy), and the connection's writer takes the
//!   whole buffer and writes it at once (the writer loop), so many frames
//!   leave in one `write` system call.
//! - [`peek_header`] reads the envelope fields a transport needs (type,
//!   request id, session, attempt, ...) without decoding the payload.

use crate::envelope::tag;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::io;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

/// Default largest frame (one envelope): 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

/// Bytes of the length prefix.
pub const PREFIX_LEN: usize = 4;

/// Frames over the limit but at most this many times the limit are skipped
/// (and answered with an error when they name a request); longer ones end
/// the connection.
pub(crate) const SKIP_FACTOR: usize = 4;

/// Bytes kept from the front of an oversized frame to read its header.
pub(crate) const HEAD_KEEP: usize = 256;

/// Read buffer reserved before each read when no frame is pending.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// Largest single reservation while a big frame arrives.
const GROW_STEP: usize = 1 << 20;

/// Envelope fields read by [`peek_header`] (zero when absent).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnvelopeHeader {
    /// `type` (a [`MessageType`](crate::envelope::MessageType) number).
    pub r#type: i32,
    /// `request_id`.
    pub request_id: u64,
    /// `session_id`.
    pub session_id: u64,
    /// `incarnation`.
    pub incarnation: u64,
    /// `attempt`.
    pub attempt: u32,
    /// `protocol` (an [`ExchangeProtocol`](crate::envelope::ExchangeProtocol) number).
    pub protocol: i32,
    /// `ack_up_to`.
    pub ack_up_to: u64,
    /// `want_accept`.
    pub want_accept: bool,
    /// Every field was read (the bytes were not cut short or malformed).
    pub complete: bool,
}

impl EnvelopeHeader {
    /// The header of `env`, as [`peek_header`] would read it from its
    /// encoding.
    pub(crate) fn of(env: &crate::envelope::Envelope) -> EnvelopeHeader {
        EnvelopeHeader {
            r#type: env.r#type,
            request_id: env.request_id,
            session_id: env.session_id,
            incarnation: env.incarnation,
            attempt: env.attempt,
            protocol: env.protocol,
            ack_up_to: env.ack_up_to,
            want_accept: env.want_accept,
            complete: true,
        }
    }
}

/// Reads the scalar fields of an encoded envelope without decoding (or
/// copying) its strings, payload and metadata: length-delimited fields are
/// skipped by their length. Stops at the first field that is cut short or
/// malformed (then `complete` is false); never panics.
pub fn peek_header(bytes: &[u8]) -> EnvelopeHeader {
    let mut h = EnvelopeHeader::default();
    // Truncation to the field's width is what protobuf does.
    #[allow(clippy::cast_possible_truncation)]
    let complete = scan_scalars(bytes, |field, wire, v| {
        match (wire, field) {
            (0, tag::TYPE) => h.r#type = v as i32,
            (0, tag::REQUEST_ID) => h.request_id = v,
            (0, tag::ATTEMPT) => h.attempt = v as u32,
            (0, tag::PROTOCOL) => h.protocol = v as i32,
            (0, tag::ACK_UP_TO) => h.ack_up_to = v,
            (0, tag::WANT_ACCEPT) => h.want_accept = v != 0,
            (1, tag::SESSION_ID) => h.session_id = v,
            (1, tag::INCARNATION) => h.incarnation = v,
            _ => {}
        }
        ControlFlow::Continue(())
    });
    h.complete = complete;
    h
}

/// Reads the `type` and `request_id` of an encoded envelope (zero when
/// absent): as [`peek_header`], but stops as soon as both are read, which
/// is at the front of every envelope this crate encodes (fields are
/// written in field order), so a large payload is never walked over.
pub fn peek_type_and_id(bytes: &[u8]) -> (i32, u64) {
    let (mut r#type, mut request_id) = (None, None);
    scan_scalars(bytes, |field, wire, v| {
        match (wire, field) {
            // Truncation to the field's width is what protobuf does.
            #[allow(clippy::cast_possible_truncation)]
            (0, tag::TYPE) => r#type = Some(v as i32),
            (0, tag::REQUEST_ID) => request_id = Some(v),
            _ => {}
        }
        if r#type.is_some() && request_id.is_some() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    (r#type.unwrap_or(0), request_id.unwrap_or(0))
}

/// Walks the fields of an encoded message: hands every varint (wire type
/// 0) and fixed64 (wire type 1) field to `visit` as (field, wire type,
/// value; a field number beyond `u32` is passed as `u32::MAX`, which no
/// envelope field has), skips the length-delimited and fixed32 ones by their length,
/// until the input ends or `visit` breaks. Returns `true` when the whole
/// input was walked, `false` when it stopped at a field cut short or
/// malformed (or `visit` broke). Never panics.
fn scan_scalars(mut bytes: &[u8], mut visit: impl FnMut(u32, u64, u64) -> ControlFlow<()>) -> bool {
    while !bytes.is_empty() {
        let Some(key) = varint(&mut bytes) else {
            return false;
        };
        let (field, wire) = (u32::try_from(key >> 3).unwrap_or(u32::MAX), key & 7);
        let value = match wire {
            0 => match varint(&mut bytes) {
                Some(v) => v,
                None => return false,
            },
            1 => {
                let Some((word, rest)) = bytes.split_first_chunk::<8>() else {
                    return false;
                };
                bytes = rest;
                u64::from_le_bytes(*word)
            }
            2 => {
                let rest = varint(&mut bytes)
                    .and_then(|len| usize::try_from(len).ok())
                    .and_then(|len| bytes.get(len..));
                match rest {
                    Some(rest) => bytes = rest,
                    None => return false,
                }
                continue;
            }
            5 => {
                match bytes.get(4..) {
                    Some(rest) => bytes = rest,
                    None => return false,
                }
                continue;
            }
            _ => return false,
        };
        if visit(field, wire, value).is_break() {
            return false;
        }
    }
    true
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    // Keys and most values of an envelope are one byte.
    if let Some((&b, rest)) = bytes.split_first() {
        if b < 0x80 {
            *bytes = rest;
            return Some(u64::from(b));
        }
    }
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// One item read from a stream.
#[derive(Debug)]
pub enum Frame {
    /// A frame within the limit: one encoded envelope.
    Data(Bytes),
    /// A frame over the limit, skipped; the header of its first bytes.
    TooLarge {
        /// The announced length.
        len: usize,
        /// What its first bytes say (usually incomplete).
        header: EnvelopeHeader,
    },
}

/// Why a stream cannot be read on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The peer announced a frame far beyond the limit; the connection
    /// must be closed (skipping it would mean reading that much).
    #[error("frame of {len} bytes announced, limit is {limit}")]
    Absurd {
        /// The announced length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// Reading failed.
    #[error("read failed")]
    Io(#[source] io::Error),
}

/// Reads frames from the read half of a stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    max_frame: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader of frames up to `max_frame` bytes.
    pub fn new(io: R, max_frame: usize) -> FrameReader<R> {
        FrameReader {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            max_frame,
        }
    }

    /// Whether a complete frame is already buffered (the next
    /// [`FrameReader::next`] returns without reading).
    pub fn has_frame(&self) -> bool {
        match self.announced() {
            Some(len) => len > self.max_frame || self.buf.len() >= PREFIX_LEN + len,
            None => false,
        }
    }

    fn announced(&self) -> Option<usize> {
        let p = self.buf.get(..PREFIX_LEN)?;
        usize::try_from(u32::from_be_bytes([p[0], p[1], p[2], p[3]])).ok()
    }

    /// The length announced by the frame at the front of the buffer, once
    /// its prefix is buffered (over the limit or not).
    pub(crate) fn front_len(&self) -> Option<usize> {
        self.announced()
    }

    /// Bytes buffered: frames not taken yet and the start of the next.
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// What is buffered of the front frame after its prefix, at most
    /// `max` bytes (to read the header of a frame that will not be read).
    pub(crate) fn front_body(&self, max: usize) -> &[u8] {
        let body = self.buf.get(PREFIX_LEN..).unwrap_or_default();
        body.get(..max).unwrap_or(body)
    }

    /// Takes the front frame if it is buffered whole and within the limit.
    /// After a frame larger than a read chunk, the rest of the buffer moves
    /// to a new small one: the big allocation goes with the frame instead
    /// of staying with the connection.
    pub(crate) fn take_frame(&mut self) -> Option<Bytes> {
        let len = self.announced()?;
        if len > self.max_frame || self.buf.len() < PREFIX_LEN + len {
            return None;
        }
        self.buf.advance(PREFIX_LEN);
        let frame = self.buf.split_to(len).freeze();
        if len > READ_CHUNK && self.buf.capacity() > 2 * READ_CHUNK {
            let mut fresh = BytesMut::with_capacity(READ_CHUNK.max(self.buf.len()));
            fresh.extend_from_slice(&self.buf);
            self.buf = fresh;
        }
        Some(frame)
    }

    /// Reads once from the stream into the buffer, at most `limit` bytes
    /// (at least one): what the server reads is bounded by what it has
    /// room (or budget) for. Returns the bytes read, 0 at the end of the
    /// stream.
    ///
    /// # Errors
    /// The read error.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is read unless it completes.
    pub(crate) async fn read_some(&mut self, limit: usize) -> io::Result<usize> {
        let limit = limit.max(1);
        self.buf.reserve(limit.min(GROW_STEP));
        let mut room = (&mut self.buf).limit(limit);
        self.io.read_buf(&mut room).await
    }

    /// The next frame; `Ok(None)` at a clean end of the stream.
    ///
    /// # Errors
    /// [`FrameError`]: a read error, an end of stream inside a frame, or a
    /// length far beyond the limit.
    ///
    /// # Cancel safety
    /// Cancel safe while no oversized frame is being skipped: bytes read
    /// stay buffered. Dropping it while skipping loses the stream's framing
    /// (the caller closes the connection in that case anyway).
    pub async fn next(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            if let Some(len) = self.announced() {
                if len > self.max_frame {
                    return self.skip(len).await.map(Some);
                }
                let total = PREFIX_LEN + len;
                if self.buf.len() >= total {
                    self.buf.advance(PREFIX_LEN);
                    return Ok(Some(Frame::Data(self.buf.split_to(len).freeze())));
                }
                let missing = total - self.buf.len();
                self.buf.reserve(missing.min(GROW_STEP));
            } else {
                self.buf.reserve(READ_CHUNK);
            }
            let n = self
                .io
                .read_buf(&mut self.buf)
                .await
                .map_err(FrameError::Io)?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
        }
    }

    /// Skips an oversized frame of `len` bytes (its prefix is buffered),
    /// keeping its first bytes for the header.
    async fn skip(&mut self, len: usize) -> Result<Frame, FrameError> {
        if len > self.max_frame.saturating_mul(SKIP_FACTOR) {
            return Err(FrameError::Absurd {
                len,
                limit: self.max_frame,
            });
        }
        self.buf.advance(PREFIX_LEN);
        let keep = len.min(HEAD_KEEP);
        while self.buf.len() < keep {
            self.buf.reserve(keep - self.buf.len());
            if self
                .io
                .read_buf(&mut self.buf)
                .await
                .map_err(FrameError::Io)?
                == 0
            {
                return Err(FrameError::Truncated);
            }
        }
        let header = peek_header(&self.buf[..keep]);
        let mut left = len;
        let mut scratch = [0u8; 8192];
        // What is buffered first, then straight from the stream.
        let buffered = self.buf.len().min(left);
        self.buf.advance(buffered);
        left -= buffered;
        while left > 0 {
            let want = left.min(scratch.len());
            let n = self
                .io
                .read(&mut scratch[..want])
                .await
                .map_err(FrameError::Io)?;
            if n == 0 {
                return Err(FrameError::Truncated);
            }
            left -= n;
        }
        Ok(Frame::TooLarge { len, header })
    }
}

/// Counters of what a connection's writer did.
#[derive(Debug, Default)]
pub(crate) struct WriteCounters {
    /// Frames queued.
    pub(crate) frames: AtomicU64,
    /// Batches written (each one `write_all`).
    pub(crate) writes: AtomicU64,
}

/// The frames waiting to be written on one connection.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<OutState>,
    /// Wakes the writer.
    ready: Notify,
    /// Wakes senders waiting for room.
    room: Notify,
    /// Above this many queued bytes, senders wait.
    high_water: usize,
}

#[derive(Debug)]
struct OutState {
    buf: BytesMut,
    closed: bool,
}

impl Outbox {
    /// An open outbox; senders wait while more than `high_water` bytes are
    /// queued (a single frame is always accepted into an empty outbox).
    pub fn new(high_water: usize) -> Outbox {
        Outbox {
            state: Mutex::new(OutState {
                buf: BytesMut::with_capacity(READ_CHUNK),
                closed: false,
            }),
            ready: Notify::new(),
            room: Notify::new(),
            high_water,
        }
    }

    fn lock(&self) -> MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues one frame (`message` with its length prefix), waiting while
    /// the outbox is full.
    ///
    /// # Errors
    /// [`io::ErrorKind::BrokenPipe`] once the outbox is closed (the
    /// connection is gone); [`io::ErrorKind::InvalidInput`] for a message
    /// longer than `u32::MAX`.
    ///
    /// # Cancel safety
    /// Cancel safe: the frame is queued entirely or not at all.
    pub async fn push(&self, message: &[u8]) -> io::Result<()> {
        // The usual case first: room, no wake-up registration needed.
        if self.try_push_all(&[message])? {
            return Ok(());
        }
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            // Registered before looking again: a wake-up is not missed.
            room.as_mut().enable();
            if self.try_push_all(&[message])? {
                return Ok(());
            }
            room.await;
        }
    }

    /// Queues one frame at once, whatever the queue's length (for a
    /// bounded batch queued before the writer starts).
    ///
    /// # Errors
    /// As [`Outbox::push`].
    pub fn push_now(&self, message: &[u8]) -> io::Result<()> {
        self.enqueue(&[message], false).map(|_| ())
    }

    /// Queues every frame of `messages` at once, under one lock and with
    /// one wake-up of the writer (so they leave in one write), if there is
    /// room: when the queue is below the high-water mark, as
    /// [`Outbox::push`] would take the first of them (the burst may pass
    /// the mark; its caller bounds it). `Ok(false)`, with nothing queued,
    /// when there is no room: push them one by one then.
    ///
    /// # Errors
    /// [`io::ErrorKind::BrokenPipe`] once the outbox is closed;
    /// [`io::ErrorKind::InvalidInput`] for a message longer than
    /// `u32::MAX`. Nothing is queued then.
    pub fn try_push_all(&self, messages: &[&[u8]]) -> io::Result<bool> {
        self.enqueue(messages, true)
    }

    /// Queues `messages` under one lock with one wake-up of the writer;
    /// with `bounded`, only while the queue is below the high-water mark
    /// (`Ok(false)`, nothing queued, otherwise).
    fn enqueue(&self, messages: &[&[u8]], bounded: bool) -> io::Result<bool> {
        if messages.iter().any(|m| u32::try_from(m.len()).is_err()) {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let mut s = self.lock();
        if s.closed {
            return Err(io::Error::from(io::ErrorKind::BrokenPipe));
        }
        if bounded && !s.buf.is_empty() && s.buf.len() >= self.high_water {
            return Ok(false);
        }
        s.buf
            .reserve(messages.iter().map(|m| PREFIX_LEN + m.len()).sum());
        for message in messages {
            // Checked above.
            #[allow(clippy::cast_possible_truncation)]
            s.buf.put_u32(message.len() as u32);
            s.buf.put_slice(message);
        }
        drop(s);
        if !messages.is_empty() {
            self.ready.notify_one();
        }
        Ok(true)
    }

    /// Closes the outbox: no more frames are taken; the writer writes what
    /// is queued and ends.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
        self.room.notify_waiters();
    }

    /// Whether the outbox is closed.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

/// Writes the outbox's frames to `io` until the outbox is closed and empty
/// (then shuts the stream down) or a write fails. Each wake-up writes all
/// that is queued in one `write_all`.
///
/// # Errors
/// The write error; the outbox is closed then.
pub(crate) async fn write_loop<W: AsyncWrite + Unpin>(
    outbox: &Outbox,
    mut io: W,
    counters: &WriteCounters,
) -> io::Result<()> {
    let mut batch = BytesMut::with_capacity(READ_CHUNK);
    let result = loop {
        let closed = {
            let mut s = outbox.lock();
            std::mem::swap(&mut s.buf, &mut batch);
            s.closed
        };
        if batch.is_empty() {
            if closed {
                let _ = io.shutdown().await;
                break Ok(());
            }
            outbox.ready.notified().await;
            continue;
        }
        outbox.room.notify_waiters();
        counters.writes.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = io.write_all(&batch).await {
            break Err(e);
        }
        if let Err(e) = io.flush().await {
            break Err(e);
        }
        batch.clear();
        if batch.capacity() > 4 * GROW_STEP {
            // Do not keep a huge buffer after one big frame.
            batch = BytesMut::with_capacity(READ_CHUNK);
        }
    };
    if result.is_err() {
        outbox.close();
    }
    result
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::envelope::{Envelope, MessageType, VERSION};
    use prost::Message;

    fn env() -> Envelope {
        Envelope {
            version: VERSION,
            r#type: MessageType::Request as i32,
            request_id: 300,
            session_id: 0xdead_beef_0102_0304,
            service: "a.B".into(),
            incarnation: 9,
            attempt: 3,
            payload: Bytes::from(vec![7u8; 1000]),
            metadata: [("k".to_owned(), "v".to_owned())].into_iter().collect(),
            protocol: 3,
            ack_up_to: 299,
            want_accept: true,
            ..Default::default()
        }
    }

    #[test]
    fn peek_reads_scalars_and_skips_the_rest() {
        let bytes = env().encode_to_vec();
        let h = peek_header(&bytes);
        assert!(h.complete);
        assert_eq!(
            (h.r#type, h.request_id, h.session_id, h.incarnation),
            (1, 300, 0xdead_beef_0102_0304, 9)
        );
        assert_eq!(
            (h.attempt, h.protocol, h.ack_up_to, h.want_accept),
            (3, 3, 299, true)
        );
        // cut short: the leading fields are still there
        let h = peek_header(&bytes[..40]);
        assert!(!h.complete);
        assert_eq!(
            (h.r#type, h.request_id, h.session_id),
            (1, 300, 0xdead_beef_0102_0304)
        );
        // garbage never panics
        for n in 0..64u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37).wrapping_add(n)).collect();
            let _ = peek_header(&junk);
        }
        assert!(!peek_header(&[0xff; 11]).complete);
    }

    #[test]
    fn peek_type_and_id_agrees_with_peek_header() {
        let bytes = env().encode_to_vec();
        assert_eq!(peek_type_and_id(&bytes), (1, 300));
        // fields in another order, and absent ones
        let mut reordered = Vec::new();
        prost::encoding::uint64::encode(3, &77, &mut reordered);
        prost::encoding::int32::encode(2, &5, &mut reordered);
        assert_eq!(peek_type_and_id(&reordered), (5, 77));
        assert_eq!(peek_type_and_id(&reordered[..2]), (0, 77));
        assert_eq!(peek_type_and_id(&[]), (0, 0));
        for n in 0..64u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37).wrapping_add(n)).collect();
            let h = peek_header(&junk);
            if h.complete {
                assert_eq!(peek_type_and_id(&junk), (h.r#type, h.request_id));
            }
        }
    }

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_skipped() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let out = Outbox::new(1 << 20);
        let small = env().encode_to_vec();
        let big = vec![1u8; 5000];
        out.push(&small).await.unwrap();
        out.push(&big).await.unwrap();
        out.push(&small).await.unwrap();
        out.close();
        let counters = WriteCounters::default();
        let writer = write_loop(&out, a, &counters);
        let reader = async move {
            let mut r = FrameReader::new(b, 4096);
            let mut got = Vec::new();
            while let Some(f) = r.next().await.unwrap() {
                got.push(f);
            }
            got
        };
        let (w, got) = tokio::join!(writer, reader);
        w.unwrap();
        assert_eq!(counters.writes.load(Ordering::Relaxed), 1, "one batch");
        assert_eq!(got.len(), 3);
        assert!(matches!(&got[0], Frame::Data(d) if d[..] == small[..]));
        assert!(matches!(&got[1], Frame::TooLarge { len: 5000, .. }));
        assert!(matches!(&got[2], Frame::Data(d) if d[..] == small[..]));
    }

    #[tokio::test]
    async fn a_burst_is_queued_whole_while_there_is_room() {
        let out = Outbox::new(8);
        assert!(out.try_push_all(&[b"ab", b"cde"]).unwrap());
        assert_eq!(out.lock().buf.len(), 2 * PREFIX_LEN + 5);
        // past the high-water mark now: nothing more is taken
        assert!(!out.try_push_all(&[b"f"]).unwrap());
        assert_eq!(out.lock().buf.len(), 2 * PREFIX_LEN + 5);
        out.close();
        assert_eq!(
            out.try_push_all(&[b"g"]).unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
    }

    #[tokio::test]
    async fn absurd_length_is_refused_without_allocating() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::spawn(async move {
            let _ = a.write_all(&u32::MAX.to_be_bytes()).await;
            // and keep the stream open
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        });
        let mut r = FrameReader::new(b, 1024);
        let e = r.next().await.unwrap_err();
        assert!(matches!(e, FrameError::Absurd { len, limit: 1024 } if len == u32::MAX as usize));
        assert!(r.buf.capacity() < 1 << 20);
    }
}
