//! The datagram door of a server: one receiving task per socket feeds every
//! datagram to the [`Engine`]; replies go back to the sender's address.

use super::engine::{Engine, ReplySink};
use super::stats::bump;
use crate::service::TransportKind;
use crate::transport::DatagramSocket;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The way back to one datagram peer.
#[derive(Debug)]
pub(crate) struct DatagramReply<S> {
    socket: Arc<S>,
    peer: SocketAddr,
    limit: usize,
}

impl<S> Clone for DatagramReply<S> {
    fn clone(&self) -> Self {
        DatagramReply { socket: Arc::clone(&self.socket), peer: self.peer, limit: self.limit }
    }
}

impl<S: DatagramSocket> ReplySink for DatagramReply<S> {
    async fn send(&self, message: &[u8]) -> io::Result<()> {
        self.socket.send_to(message, self.peer).await.map(|_| ())
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
}

/// Receives datagrams until the task is aborted. The socket is drained
/// without yielding as long as datagrams are ready (tokio's cooperative
/// budget still yields now and then); each is handled on this task.
pub(crate) async fn recv_loop<S: DatagramSocket>(engine: Arc<Engine>, socket: Arc<S>) {
    let limit = engine.config().max_datagram;
    // One byte more than the limit, so that an oversized datagram shows.
    let mut buf = vec![0u8; limit.saturating_add(1)];
    let mut failures: u32 = 0;
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, peer)) => {
                failures = 0;
                let message = buf.get(..n).unwrap_or(&buf[..]);
                let sink = DatagramReply { socket: Arc::clone(&socket), peer, limit };
                engine.handle_message(message, &sink).await;
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
