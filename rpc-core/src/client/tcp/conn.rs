//! The connection manager: connecting (with backoff), and the reading and writing of one connection.

use super::route::refreshed;
#[allow(clippy::wildcard_imports)] // a part of the link: its types are the parent's
use super::*;
use crate::counter::bump;
use crate::envelope::{peek_header, peek_type_and_id, Envelope, MessageType};
use crate::status::Status;
use crate::transport::tcp::{write_loop, Frame, FrameError, FrameReader, Outbox, WriteStalled};
use bytes::Bytes;
use prost::Message;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Connects whenever calls need a connection, until aborted.
pub(super) async fn manage(link: Arc<LinkShared>) {
    let mut failures: u32 = 0;
    loop {
        loop {
            let woken = link.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if link.needed() {
                break;
            }
            woken.await;
        }
        match connect(&link).await {
            Ok(()) => {
                // `connect` returns when the connection ends.
                failures = 0;
            }
            Err(Some(lived)) if lived >= STABLE_CONNECTION => failures = 0,
            Err(Some(_)) => failures = failures.saturating_add(1),
            Err(None) => {
                failures = failures.saturating_add(1);
                bump(&link.counters.connect_failures);
                link.status.send_modify(|s| s.failures += 1);
            }
        }
        if failures > 0 {
            let exp = failures.saturating_sub(1).min(20);
            let base = link
                .config
                .backoff_initial
                .saturating_mul(1u32 << exp)
                .min(link.config.backoff_max);
            let wait = crate::client::rto::jittered(base, crate::client::rto::jitter_factor())
                .min(link.config.backoff_max);
            tokio::time::sleep(wait).await;
        }
    }
}

/// One connection, from connecting to its end. `Err(None)`: it could not
/// be established; `Err(Some(lived))`: it broke after `lived`.
pub(super) async fn connect(link: &Arc<LinkShared>) -> Result<(), Option<Duration>> {
    #[cfg(test)]
    if let Some(stream) = super::tests::dial(link.server).await {
        // An in-memory connection the test plays the server on.
        let started = Instant::now();
        let (r, w) = tokio::io::split(stream.ok_or(None)?);
        run(link, r, w, None).await;
        return Err(Some(started.elapsed()));
    }
    let timeout = link.config.connect_timeout;
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(link.server)).await {
        Ok(Ok(s)) => s,
        Ok(Err(error)) => {
            tracing::debug!(server = %link.server, %error, "connection failed");
            return Err(None);
        }
        Err(_) => {
            tracing::debug!(server = %link.server, "connection timed out");
            return Err(None);
        }
    };
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().ok();
    let started = Instant::now();
    match &link.connector {
        Connector::Plain => {
            let (r, w) = stream.into_split();
            run(link, r, w, local).await;
        }
        #[cfg(feature = "tls")]
        Connector::Tls(tls) => {
            let handshake = tls
                .connector(crate::tls::ALPN_RPC)
                .connect(tls.server_name().clone(), stream);
            match tokio::time::timeout(timeout, handshake).await {
                Ok(Ok(stream)) => {
                    let (r, w) = tokio::io::split(stream);
                    run(link, r, w, local).await;
                }
                Ok(Err(error)) => {
                    tracing::debug!(server = %link.server, %error, "tls handshake failed");
                    if let Some(reason) = crate::tls::rejection(&error) {
                        link.reject(None, reason);
                    }
                    return Err(None);
                }
                Err(_) => {
                    tracing::debug!(server = %link.server, "tls handshake timed out");
                    return Err(None);
                }
            }
        }
    }
    Err(Some(started.elapsed()))
}

/// Serves one established connection until it breaks.
pub(super) async fn run<R, W>(link: &Arc<LinkShared>, r: R, w: W, local: Option<SocketAddr>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let outbox = Arc::new(Outbox::new(OUTBOX_HIGH_WATER));
    let gen = {
        let mut st = link.lock();
        st.gen += 1;
        let gen = st.gen;
        st.conn = Some((gen, Arc::clone(&outbox)));
        link.connection.store(gen, Ordering::Release);
        st.local = local;
        let now = Instant::now();
        let max_wait = link.config.channel.max_wait;
        let mut expired = Vec::new();
        let mut replayed = 0u64;
        for (id, p) in st.outstanding.0.iter_mut() {
            let id = *id;
            if p.answered {
                expired.push(id);
                continue;
            }
            let elapsed = now.saturating_duration_since(p.stored_at);
            if p.first_gen.is_some() && p.kind != Kind::Ping {
                match refreshed(&p.frame, elapsed, max_wait) {
                    Some(frame) => {
                        p.frame = frame;
                        p.stored_at = now;
                        replayed += 1;
                    }
                    _ => {
                        expired.push(id);
                        continue;
                    }
                }
            }
            p.first_gen.get_or_insert(gen);
            // The writer is not running yet: queue regardless of length.
            let _ = outbox.push_now(&p.frame);
            bump(&link.counters.write.frames);
            if p.kind == Kind::OneWay {
                expired.push(id);
            }
        }
        for id in expired {
            st.outstanding.remove(id);
        }
        link.counters
            .replayed
            .fetch_add(replayed, Ordering::Relaxed);
        if replayed > 0 {
            tracing::debug!(server = %link.server, replayed, "requests sent again on the new connection");
        }
        gen
    };
    bump(&link.counters.connects);
    link.set_connected(true);
    tracing::debug!(server = %link.server, gen, "connected");
    let stall = Some(link.config.write_stall);
    let writer = write_loop(&outbox, w, &link.counters.write, stall);
    tokio::pin!(writer);
    let reader = read_loop(link, r);
    tokio::pin!(reader);
    tokio::select! {
        result = &mut writer => {
            match result {
                Err(error) if WriteStalled::is(&error) => {
                    bump(&link.counters.write_stalls);
                    tracing::warn!(server = %link.server, gen, stall = ?link.config.write_stall, "connection given up: the server stopped reading");
                }
                Err(error) => tracing::debug!(server = %link.server, %error, "write failed"),
                Ok(()) => {}
            }
        }
        ended = &mut reader => {
            // TLS 1.3: the server's refusal of the client's certificate is
            // an alert on the first read, before any frame.
            #[cfg(feature = "tls")]
            if let ReadEnd::Failed { frames: 0, error } = ended {
                if let Some(reason) = crate::tls::rejection(&error) {
                    link.reject(Some(gen), reason);
                }
            }
            #[cfg(not(feature = "tls"))]
            let _ = ended;
        }
    }
    outbox.close();
    {
        let mut st = link.lock();
        if st.conn.as_ref().is_some_and(|(g, _)| *g == gen) {
            st.conn = None;
            link.connection.store(gen + 1, Ordering::Release);
        }
    }
    bump(&link.counters.disconnects);
    link.set_connected(false);
    tracing::debug!(server = %link.server, gen, "disconnected");
}

/// How a connection's reading ended (what TLS makes of it: see `run`).
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
pub(super) enum ReadEnd {
    /// The server closed it, or sent something that ends it.
    Closed,
    /// A read failed after `frames` frames.
    Failed { frames: u64, error: FrameError },
}

pub(super) async fn read_loop<R: AsyncRead + Unpin>(link: &LinkShared, r: R) -> ReadEnd {
    let mut frames = FrameReader::new(r, link.config.max_frame);
    let mut received = 0u64;
    loop {
        let frame = match frames.next().await {
            Ok(Some(frame)) => frame,
            Ok(None) => return ReadEnd::Closed,
            Err(FrameError::Absurd { len, limit }) => {
                bump(&link.counters.oversized);
                tracing::debug!(server = %link.server, len, limit, "absurd frame length from the server");
                return ReadEnd::Closed;
            }
            Err(error) => {
                tracing::debug!(server = %link.server, %error, "read failed");
                return ReadEnd::Failed {
                    frames: received,
                    error,
                };
            }
        };
        received += 1;
        match frame {
            Frame::Data(bytes) => {
                bump(&link.counters.frames_received);
                let (r#type, request_id) = peek_type_and_id(&bytes);
                match MessageType::try_from(r#type) {
                    Ok(MessageType::Reply | MessageType::Error) => {
                        if let Some(p) = link.lock().outstanding.get_mut(request_id) {
                            p.answered = true;
                            p.frame = Bytes::new();
                        }
                    }
                    Ok(MessageType::Pong) => {
                        let mut st = link.lock();
                        if st
                            .outstanding
                            .get(request_id)
                            .is_some_and(|p| p.kind == Kind::Ping)
                        {
                            st.outstanding.remove(request_id);
                        }
                    }
                    _ => {}
                }
                let _ = link.inbound_tx.send(bytes);
            }
            Frame::TooLarge { len, head } => {
                let header = peek_header(&head);
                bump(&link.counters.oversized);
                tracing::debug!(server = %link.server, len, request_id = header.request_id, "reply over max_frame skipped");
                let is_answer = header.r#type == MessageType::Reply as i32
                    || header.r#type == MessageType::Error as i32;
                if is_answer && header.request_id != 0 {
                    if let Some(p) = link.lock().outstanding.get_mut(header.request_id) {
                        p.answered = true;
                        p.frame = Bytes::new();
                    }
                    let status = Status::resource_exhausted(format!(
                        "reply of {len} bytes exceeds the client's limit of {} bytes",
                        link.config.max_frame
                    ));
                    let env = Envelope::error(
                        header.session_id,
                        header.request_id,
                        header.incarnation,
                        crate::envelope::WireStatus::from(&status),
                    );
                    let _ = link.inbound_tx.send(Bytes::from(env.encode_to_vec()));
                }
            }
        }
    }
}
