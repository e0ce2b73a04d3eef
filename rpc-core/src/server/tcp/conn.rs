//! A TCP door's connections: accepting them, and reading, answering and
//! closing one.

use super::super::budget::Reservation;
use super::super::engine::{Engine, ReplySink};
use super::super::stats::bump;
#[allow(clippy::wildcard_imports)] // a part of the door: its types are the parent's
use super::*;
use crate::envelope::peek_header;
use crate::envelope::{self, Envelope, ExchangeProtocol, MessageType};
use crate::service::{PeerIdentity, TransportKind};
use crate::status::Status;
use crate::transport::tcp::{write_loop, FrameReader, Outbox, HEAD_KEEP, PREFIX_LEN, SKIP_FACTOR};
use bytes::Bytes;
use prost::Message;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Accepts connections until the door closes (or the task is aborted,
/// which ends every connection task with it).
pub(super) async fn accept_loop(engine: Arc<Engine>, door: Arc<TcpDoor>, listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(door.config.max_connections));
    let mut conns = JoinSet::new();
    let mut closing = door.closing.subscribe();
    let mut failures = 0u32;
    loop {
        tokio::select! {
            () = closed(&mut closing) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    failures = 0;
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        bump(&door.counters.refused);
                        tracing::debug!(%peer, limit = door.config.max_connections, "connection refused: too many open");
                        drop(stream);
                        continue;
                    };
                    bump(&door.counters.accepted);
                    door.open.fetch_add(1, Ordering::AcqRel);
                    let (engine, door) = (Arc::clone(&engine), Arc::clone(&door));
                    conns.spawn(async move {
                        let _open = Open(Arc::clone(&door));
                        connection(engine, door, stream, peer).await;
                        drop(slot);
                    });
                }
                Err(error) => {
                    // Out of descriptors and the like: back off, do not spin.
                    bump(&door.counters.accept_errors);
                    failures = failures.saturating_add(1);
                    tracing::debug!(%error, "accept failed");
                    let ms = 1u64 << failures.min(7);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
            },
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// Counts an open connection; wakes a draining door when the last closes.
pub(super) struct Open(Arc<TcpDoor>);

impl Drop for Open {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.closed.notify_waiters();
        }
    }
}

pub(super) async fn connection(
    engine: Arc<Engine>,
    door: Arc<TcpDoor>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
    }
    #[cfg(feature = "tls")]
    if let Some(acceptor) = door.acceptor.clone() {
        let timeout = door.config.handshake_timeout;
        let failures = &door.counters.handshake_failures;
        let shaken = crate::tls::handshake(acceptor, stream, timeout, peer, failures, "tls").await;
        if let Some((stream, identity)) = shaken {
            let (r, w) = tokio::io::split(stream);
            serve(engine, door, r, w, peer, TransportKind::Tls, identity).await;
        }
        return;
    }
    let (r, w) = stream.into_split();
    serve(engine, door, r, w, peer, TransportKind::Tcp, None).await;
}

/// The way back to one connection: its outbox.
#[derive(Clone)]
pub(super) struct TcpReply {
    outbox: Arc<Outbox>,
    peer: SocketAddr,
    limit: usize,
    /// Frames queued on this connection (for the idle check).
    sent: Arc<AtomicU64>,
    door: Arc<TcpDoor>,
    /// `Tcp`, or `Tls` inside TLS.
    transport: TransportKind,
    /// The verified client certificate (mutual TLS).
    identity: Option<Arc<PeerIdentity>>,
}

impl ReplySink for TcpReply {
    async fn send(&self, message: &[u8]) -> io::Result<()> {
        self.outbox.push(message).await?;
        bump(&self.sent);
        bump(&self.door.counters.write.frames);
        Ok(())
    }

    fn peer(&self) -> Option<SocketAddr> {
        Some(self.peer)
    }

    fn transport(&self) -> TransportKind {
        self.transport
    }

    fn identity(&self) -> Option<Arc<PeerIdentity>> {
        self.identity.clone()
    }

    fn max_message_len(&self) -> usize {
        self.limit
    }
}

/// Serves one connection (after the TLS handshake, if any) until the peer
/// closes it, an error, the idle timeout or the door's drain.
pub(super) async fn serve<R, W>(
    engine: Arc<Engine>,
    door: Arc<TcpDoor>,
    r: R,
    w: W,
    peer: SocketAddr,
    transport: TransportKind,
    identity: Option<Arc<PeerIdentity>>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let outbox = Arc::new(Outbox::new(OUTBOX_HIGH_WATER));
    let sink = TcpReply {
        outbox: Arc::clone(&outbox),
        peer,
        limit: door.config.max_frame,
        sent: Arc::new(AtomicU64::new(0)),
        door: Arc::clone(&door),
        transport,
        identity,
    };
    tracing::debug!(%peer, "connection open");
    let writer = write_loop(&outbox, w, &door.counters.write, None);
    tokio::pin!(writer);
    let reader = read_loop(&engine, &door, r, &sink);
    tokio::pin!(reader);
    tokio::select! {
        result = &mut writer => {
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "write failed; connection closed");
            }
            outbox.close();
            return;
        }
        () = &mut reader => {}
    }
    // Write what is queued (replies of this connection's last requests),
    // then shut the stream down.
    outbox.close();
    let _ = tokio::time::timeout(FLUSH_TIMEOUT, writer).await;
    tracing::debug!(%peer, "connection closed");
}

/// Reads frames and hands them to the engine until the peer closes the
/// connection, an error, a limit (oversized length, frame timeout, no
/// buffer budget in time), the idle timeout or the door's drain.
pub(super) async fn read_loop<R: AsyncRead + Unpin>(
    engine: &Arc<Engine>,
    door: &TcpDoor,
    r: R,
    sink: &TcpReply,
) {
    let mut frames = FrameReader::new(r, door.config.max_frame);
    let mut closing = door.closing.subscribe();
    // One wait for the door's closing, polled across reads: a new one per
    // read would register (and unregister) with the watch channel each time.
    let closing = closed(&mut closing);
    tokio::pin!(closing);
    let counters = &door.counters;
    // One timer for the connection, reset only when it fires: no timer
    // registration per read.
    let idle = door.config.idle_timeout;
    let far = Duration::from_secs(365 * 24 * 3600);
    let idle_timer = tokio::time::sleep(idle.unwrap_or(far));
    tokio::pin!(idle_timer);
    // The deadline of the frame being received: set when the connection
    // first waits for the rest of a frame (frames that arrive whole never
    // set it), cleared when the frame is handed on.
    let frame_timer = tokio::time::sleep(far);
    tokio::pin!(frame_timer);
    let mut frame_started = false;
    // The budget of the (large) frame being received.
    let mut reservation: Option<Reservation> = None;
    let mut received = 0u64;
    let mut seen = (received, sink.sent.load(Ordering::Relaxed));
    // Each turn hands on a frame, takes a reservation or reads: bounded by
    // the bytes the peer sends, and ended by the timers or the drain.
    loop {
        if let Some(len) = frames.front_len() {
            if len > door.config.max_frame {
                refuse_oversized(engine, door, sink, &frames, len);
                return;
            }
            if let Some(bytes) = frames.take_frame() {
                // Handed on: the budget goes back now.
                drop(reservation.take());
                frame_started = false;
                received += 1;
                handle_frame(engine, sink, bytes).await;
                continue;
            }
            if reservation.is_none() && PREFIX_LEN + len > UNBUDGETED_FRAME {
                if !frame_started {
                    frame_timer
                        .as_mut()
                        .reset(tokio::time::Instant::now() + door.config.frame_timeout);
                    frame_started = true;
                }
                let granted = match door.budget.try_reserve(len) {
                    Some(granted) => granted,
                    None => {
                        bump(&counters.budget_waits);
                        tracing::debug!(peer = %sink.peer, len, "frame waits for buffer budget");
                        let wait = door.budget.reserve(len);
                        tokio::select! {
                            biased;
                            () = &mut closing => return,
                            () = &mut frame_timer => {
                                bump(&counters.no_budget);
                                door.budget.count_refused();
                                tracing::warn!(
                                    peer = %sink.peer,
                                    len,
                                    budget = door.budget.limit(),
                                    timeout = ?door.config.frame_timeout,
                                    "no buffer budget for a frame within its timeout; connection closed"
                                );
                                return;
                            }
                            granted = wait => match granted {
                                Some(granted) => granted,
                                // More than the budget (validated against)
                                // or the budget closed: never happens.
                                None => {
                                    bump(&counters.no_budget);
                                    door.budget.count_refused();
                                    tracing::warn!(peer = %sink.peer, len, "frame can never get buffer budget; connection closed");
                                    return;
                                }
                            },
                        }
                    }
                };
                reservation = Some(granted);
            }
        }
        // Read what is missing of a frame with a reservation, or up to one
        // read buffer otherwise (a frame without one fits in it).
        let buffered = frames.buffered();
        let limit = match (frames.front_len(), &reservation) {
            (Some(len), Some(_)) => (PREFIX_LEN + len).saturating_sub(buffered),
            _ => UNBUDGETED_FRAME.saturating_sub(buffered),
        };
        if buffered > 0 && !frame_started {
            frame_timer
                .as_mut()
                .reset(tokio::time::Instant::now() + door.config.frame_timeout);
            frame_started = true;
        }
        let announced = frames.front_len();
        let read = {
            let read = frames.read_some(limit);
            tokio::pin!(read);
            loop {
                tokio::select! {
                    biased;
                    () = &mut closing => return,
                    () = &mut frame_timer, if frame_started => {
                        bump(&counters.frame_timeouts);
                        tracing::debug!(
                            peer = %sink.peer,
                            announced = ?announced,
                            buffered,
                            timeout = ?door.config.frame_timeout,
                            "frame incomplete at its timeout; connection closed"
                        );
                        return;
                    }
                    () = &mut idle_timer, if idle.is_some() => {
                        let now = (received, sink.sent.load(Ordering::Relaxed));
                        if now == seen {
                            bump(&counters.closed_idle);
                            tracing::debug!(peer = %sink.peer, "idle connection closed");
                            return;
                        }
                        seen = now;
                        idle_timer.as_mut().reset(tokio::time::Instant::now() + idle.unwrap_or(far));
                    }
                    read = &mut read => break read,
                }
            }
        };
        match read {
            Ok(0) if frames.buffered() == 0 => return,
            Ok(0) => {
                bump(&counters.read_errors);
                bump(&engine.counters().recv_errors);
                tracing::debug!(peer = %sink.peer, buffered = frames.buffered(), "stream ended inside a frame; connection closed");
                return;
            }
            Ok(_) => {
                if let (Some(r), Some(_)) = (reservation.as_mut(), frames.front_len()) {
                    r.set_filled(frames.buffered().saturating_sub(PREFIX_LEN));
                }
            }
            Err(error) => {
                bump(&counters.read_errors);
                bump(&engine.counters().recv_errors);
                tracing::debug!(peer = %sink.peer, %error, "read failed; connection closed");
                return;
            }
        }
    }
}

/// Hands one frame to the engine.
pub(super) async fn handle_frame(engine: &Arc<Engine>, sink: &TcpReply, bytes: Bytes) {
    bump(&sink.door.counters.frames_received);
    bump(&engine.counters().received);
    let len = bytes.len();
    // Decoding from `Bytes` shares the payload, no copy.
    match Envelope::decode_naming(bytes, |name| engine.service_name(name)) {
        Ok(env) => engine.handle_envelope(env, sink).await,
        Err(error) => {
            bump(&engine.counters().malformed_dropped);
            tracing::debug!(peer = %sink.peer, len, %error, "dropped undecodable frame");
        }
    }
}

/// Counts a length prefix over the limit and, when the bytes that came
/// with it name a request, queues a RESOURCE_EXHAUSTED answer (if the
/// outbox has room: this never waits); the caller closes the connection.
pub(super) fn refuse_oversized<R: AsyncRead + Unpin>(
    engine: &Arc<Engine>,
    door: &TcpDoor,
    sink: &TcpReply,
    frames: &FrameReader<R>,
    len: usize,
) {
    let counters = &door.counters;
    bump(&counters.oversized);
    let absurd = len > door.config.max_frame.saturating_mul(SKIP_FACTOR);
    if absurd {
        bump(&counters.absurd);
    }
    bump(&engine.counters().received);
    bump(&engine.counters().too_large_requests);
    let header = peek_header(frames.front_body(HEAD_KEEP));
    let answerable = header.r#type == MessageType::Request as i32
        && header.session_id != 0
        && header.request_id != 0
        && header.protocol != ExchangeProtocol::R as i32;
    tracing::debug!(
        peer = %sink.peer,
        len,
        limit = sink.limit,
        absurd,
        request_id = header.request_id,
        answerable,
        "frame over the limit; connection closed"
    );
    if !answerable {
        return;
    }
    let status = Status::resource_exhausted(format!(
        "request of {len} bytes exceeds the limit of {} bytes",
        sink.limit
    ));
    let error = Envelope::error(
        header.session_id,
        header.request_id,
        engine.incarnation(),
        envelope::WireStatus::from(&status),
    );
    bump(&engine.counters().errors);
    match sink.outbox.try_push_all(&[&error.encode_to_vec()]) {
        Ok(true) => {
            bump(&sink.sent);
            bump(&counters.write.frames);
        }
        Ok(false) | Err(_) => bump(&engine.counters().send_errors),
    }
}

/// Resolves once the door is closing.
pub(super) async fn closed(closing: &mut watch::Receiver<bool>) {
    if closing.wait_for(|c| *c).await.is_err() {
        // The door is gone: never resolve (the task is being aborted).
        std::future::pending::<()>().await;
    }
}
