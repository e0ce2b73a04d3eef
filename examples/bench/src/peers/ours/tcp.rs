//! Ours over TCP: RR on a non-idempotent method through a `TcpChannel`
//! (one connection), at-most-once on.

use super::{echo, start_echo, Door, OurEcho};
use crate::report::OURS_TCP_RR;
use crate::target::{Role, Target};
use crate::EchoMsg;
use anyhow::ensure;
use rpc_core::server::ServerHandle;
use tokio::runtime::Handle;

/// The framework over TCP: a server with a TCP door, a `TcpChannel` (one
/// connection) to it; RR on a non-idempotent method, so at-most-once is on
/// (duplicate filter and reply history).
#[derive(Debug)]
pub(crate) struct OursTcp {
    /// First, so that it is dropped first: dropping it stops the server.
    _server: ServerHandle,
    client: rpc_core::Client,
    channel: rpc_core::client::TcpChannel,
    request: EchoMsg,
}

impl OursTcp {
    pub(crate) async fn start(server_rt: &Handle) -> anyhow::Result<OursTcp> {
        let server = start_echo(server_rt, OurEcho::default(), Door::Tcp).await?;
        let channel = rpc_core::client::TcpChannel::connect(server.local_addr()).await?;
        let client = rpc_core::Client::new(channel.clone());
        Ok(OursTcp {
            _server: server,
            client,
            channel,
            request: EchoMsg::payload(),
        })
    }
}

impl Target for OursTcp {
    fn name(&self) -> String {
        OURS_TCP_RR.to_owned()
    }

    fn role(&self) -> Role {
        Role::Measured
    }

    fn note(&self) -> String {
        let c = self.channel.stats();
        let l = self.channel.link_stats();
        format!(
            "{} calls, {} retransmissions; client frames per write {:.1} (all runs, the sequential one included)",
            c.calls,
            c.retransmissions,
            l.frames_sent as f64 / l.writes.max(1) as f64
        )
    }

    async fn call(&self) -> anyhow::Result<()> {
        use rpc_core::{Never, Protocol};
        let reply = self
            .client
            .call::<EchoMsg, EchoMsg, Never>(&echo::INFO, &echo::ECHO, &self.request)
            .protocol(Protocol::RR)
            .await?;
        ensure!(reply.data == self.request.data, "ours TCP: wrong echo");
        Ok(())
    }
}
