//! The receiving task: every datagram from the group, routed to its call.

#[allow(clippy::wildcard_imports)]
// a part of the multicast client: its types are the parent's
use super::*;
use crate::client::answer_kind;
use crate::counter::bump;
use crate::envelope::{Envelope, MessageType, VERSION};
use prost::Message;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub(super) async fn receive_loop(shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65_536];
    let mut ack_buf = Vec::with_capacity(64);
    let mut errors = 0u32;
    loop {
        let (n, from) = match shared.socket.recv_from(&mut buf).await {
            Ok(r) => {
                errors = 0;
                r
            }
            Err(e) => {
                errors = errors.saturating_add(1);
                tracing::debug!(error = %e, "multicast client receive error");
                if errors > 8 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                continue;
            }
        };
        let Some(ack) = route(&shared, buf.get(..n).unwrap_or_default(), from) else {
            continue;
        };
        let ack_up_to = shared.lock().calls.ack_up_to();
        let env = Envelope::ack(shared.session_id, ack, ack_up_to);
        ack_buf.clear();
        let _ = env.encode(&mut ack_buf);
        bump(&shared.counters.acks);
        if let Err(e) = shared.socket.send_to(&ack_buf, from).await {
            tracing::debug!(error = %e, %from, "could not send ACK");
        }
    }
}

/// Routes one datagram to its call; returns a request id to ACK to `from`.
pub(super) fn route(shared: &Shared, bytes: &[u8], from: SocketAddr) -> Option<u64> {
    let env = match Envelope::decode(bytes) {
        Ok(env) if env.version == VERSION && env.session_id == shared.session_id => env,
        _ => {
            bump(&shared.counters.dropped);
            tracing::debug!(%from, len = bytes.len(), "dropped datagram (undecodable, other version or session)");
            return None;
        }
    };
    let kind = match answer_kind(env.r#type) {
        Some(k) => k,
        None => {
            bump(&shared.counters.dropped);
            return None;
        }
    };
    let id = env.request_id;
    let is_answer = matches!(kind, MessageType::Reply | MessageType::Error);
    let mut st = shared.lock();
    // A member's cookie is taken from its PONG only (a unicast session
    // takes the cookie any answer carries).
    let cookie = if kind == MessageType::Pong {
        env.cookie
    } else {
        0
    };
    if env.incarnation != 0 || cookie != 0 {
        let member = st.members.entry(from).or_default();
        member.saw_incarnation(env.incarnation);
        member.saw_cookie(cookie);
    }
    let ack = (is_answer && st.calls.acknowledges(id)).then_some(id);
    let delivered = st
        .calls
        .get(id)
        .is_some_and(|tx| tx.send(Incoming { from, kind, env }).is_ok());
    if !delivered {
        bump(&shared.counters.late);
    }
    ack
}
