//! The datagram door of a server: one receiving task per socket drains the
//! socket in batches ([`DatagramSocket::recv_batch`]) and feeds every
//! datagram to the [`Engine`]. Answers decided while a batch is handled
//! (PONG, ACCEPT, IN_PROGRESS, replayed and fresh REPLYs of handlers ready
//! on their first poll, ERRORs) are queued and sent together
//! ([`DatagramSocket::send_batch`]) once the batch is handled, before the
//! task waits for the socket again: a lone request is answered as soon as
//! it is handled (nothing waits to fill a batch), a burst costs a few
//! system calls instead of one per datagram. Replies of handlers that
//! finish later, in their own tasks, are sent at once.

use super::engine::{Engine, ReplySink};
use super::stats::bump;
use crate::service::TransportKind;
use crate::transport::{DatagramSocket, RecvBatch, SendBatch};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Datagrams taken from the socket per receive call.
const RECV_BATCH: usize = 32;

/// The way back to one datagram peer.
#[derive(Debug)]
pub(crate) struct DatagramReply<S> {
    socket: Arc<S>,
    peer: SocketAddr,
    limit: usize,
    /// The receiving task's outgoing batch, while the datagram is handled
    /// on that task; `None` in a clone (a spawned handler sends at once).
    queue: Option<Arc<Mutex<SendBatch>>>,
}

impl<S> Clone for DatagramReply<S> {
    fn clone(&self) -> Self {
        DatagramReply {
            socket: Arc::clone(&self.socket),
            peer: self.peer,
            limit: self.limit,
            queue: None,
        }
    }
}

impl<S: DatagramSocket> ReplySink for DatagramReply<S> {
    async fn send(&self, message: &[u8]) -> io::Result<()> {
        match &self.queue {
            Some(queue) => {
                queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(message, self.peer);
                Ok(())
            }
            None => self.socket.send_to(message, self.peer).await.map(|_| ()),
        }
    }

    fn peer(&self) -> Option<SocketAddr> {
        Some(self.peer)
    }

    fn transport(&self) -> TransportKind {
        TransportKind::Udp
    }

    fn max_message_len(&self) -> usize {
        self.limit
    }

    fn address_proven(&self) -> bool {
        false
    }
}

/// Receives datagrams until the task is aborted. Each batch is handled on
/// this task, then its answers are flushed (see the module docs).
pub(crate) async fn recv_loop<S: DatagramSocket>(engine: Arc<Engine>, socket: Arc<S>) {
    let limit = engine.config().max_datagram;
    // One byte more than the limit, so that an oversized datagram shows.
    let mut batch = RecvBatch::new(RECV_BATCH, limit.saturating_add(1));
    let queue = Arc::new(Mutex::new(SendBatch::new()));
    // The batch being sent, swapped with the queue so that no lock is held
    // across the send.
    let mut sending = SendBatch::new();
    let mut failures: u32 = 0;
    // One sink for every datagram of the task, readdressed per datagram
    // (no reference-count traffic per message).
    let mut sink = DatagramReply {
        socket: Arc::clone(&socket),
        peer: SocketAddr::from(([0, 0, 0, 0], 0)),
        limit,
        queue: Some(Arc::clone(&queue)),
    };
    loop {
        match socket.recv_batch(&mut batch).await {
            Ok(_) => {
                failures = 0;
                for (message, peer) in batch.iter() {
                    sink.peer = peer;
                    engine.handle_message(message, &sink).await;
                }
                std::mem::swap(
                    &mut *queue.lock().unwrap_or_else(PoisonError::into_inner),
                    &mut sending,
                );
                if !sending.is_empty() {
                    let report = socket.send_batch(&sending).await;
                    for _ in 0..report.failed {
                        bump(&engine.counters().send_errors);
                    }
                    if let Some(error) = report.error {
                        tracing::debug!(%error, failed = report.failed, "send failed");
                    }
                    sending.clear();
                }
            }
            Err(error) => {
                bump(&engine.counters().recv_errors);
                tracing::debug!(%error, "receive failed");
                // ICMP errors surface as one-off failures; a broken socket
                // fails every time: back off so that it does not spin.
                failures = failures.saturating_add(1);
                if failures > 1 {
                    let ms = 1u64 << failures.min(8).saturating_sub(2);
                    tokio::time::sleep(Duration::from_millis(ms.min(100))).await;
                }
            }
        }
    }
}
