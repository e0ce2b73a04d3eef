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
//!
//! Frames are opaque bytes here: what they say is the envelope module's
//! business ([`crate::envelope::peek_header`]).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
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

/// One item read from a stream.
#[derive(Debug)]
pub enum Frame {
    /// A frame within the limit: one encoded envelope.
    Data(Bytes),
    /// A frame over the limit, skipped; its first bytes.
    TooLarge {
        /// The announced length.
        len: usize,
        /// Its first bytes (at most 256): enough for the
        /// receiver to read who sent it and answer.
        head: Bytes,
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
        let head = Bytes::copy_from_slice(&self.buf[..keep]);
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
        Ok(Frame::TooLarge { len, head })
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
/// that is queued in one batch. With a `stall` limit, a batch whose writing
/// makes no progress (no byte taken, or no flush done) for that long fails
/// the loop: a peer that stops reading would otherwise hold the outbox's
/// senders forever.
///
/// # Errors
/// The write error, or a [`WriteStalled`] one for a stall; the outbox is
/// closed then.
pub(crate) async fn write_loop<W: AsyncWrite + Unpin>(
    outbox: &Outbox,
    mut io: W,
    counters: &WriteCounters,
    stall: Option<Duration>,
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
        if let Err(e) = write_batch(&mut io, &batch, stall).await {
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

/// Why [`write_loop`] gave up a connection whose peer stopped reading (the
/// source of its [`io::ErrorKind::TimedOut`] error).
#[derive(Debug, thiserror::Error)]
#[error("no write progress: the peer stopped reading")]
pub(crate) struct WriteStalled;

impl WriteStalled {
    /// Whether `error` is a stall (not a failed write).
    pub(crate) fn is(error: &io::Error) -> bool {
        error.get_ref().is_some_and(|e| e.is::<WriteStalled>())
    }
}

/// Writes and flushes `batch`; with a `stall` limit, fails with
/// [`WriteStalled`] when one write or the flush makes no progress for that
/// long.
async fn write_batch<W: AsyncWrite + Unpin>(
    io: &mut W,
    batch: &[u8],
    stall: Option<Duration>,
) -> io::Result<()> {
    let Some(limit) = stall else {
        io.write_all(batch).await?;
        return io.flush().await;
    };
    let stalled = || io::Error::new(io::ErrorKind::TimedOut, WriteStalled);
    let mut rest = batch;
    while !rest.is_empty() {
        let n = tokio::time::timeout(limit, io.write(rest))
            .await
            .map_err(|_| stalled())??;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        rest = rest.get(n..).unwrap_or_default();
    }
    tokio::time::timeout(limit, io.flush())
        .await
        .map_err(|_| stalled())?
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_skipped() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let out = Outbox::new(1 << 20);
        // Framing carries opaque bytes: any will do.
        let small: Vec<u8> = (0..200u16).map(|i| (i % 251) as u8).collect();
        let big = vec![1u8; 5000];
        out.push(&small).await.unwrap();
        out.push(&big).await.unwrap();
        out.push(&small).await.unwrap();
        out.close();
        let counters = WriteCounters::default();
        let writer = write_loop(&out, a, &counters, None);
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
