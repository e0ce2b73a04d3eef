//! The UDP door, two paths: straight to the server (`udp direct`), and
//! through the fault-injecting proxy (`udp proxy 20%`), where the channel
//! starts retransmitting early and keeps trying.

use super::Door;
use anyhow::Context as _;
use rpc_core::client::{ChannelConfig, UdpChannel};
use rpc_core::Client;
use rpc_services::proto::demo::v1::CounterClient;
use std::net::SocketAddr;
use std::time::Duration;

/// UDP, straight to the server or through the fault proxy.
pub(crate) struct UdpDoor {
    name: String,
    channel: UdpChannel,
    client: CounterClient,
    lossy: bool,
}

impl UdpDoor {
    /// A channel of its own to `addr`; `lossy` when the path loses
    /// datagrams (the proxy).
    pub(crate) async fn connect(
        name: &str,
        addr: SocketAddr,
        lossy: bool,
    ) -> anyhow::Result<UdpDoor> {
        let mut config = ChannelConfig::default();
        if lossy {
            // Start retransmitting early and keep trying: a fifth of the
            // datagrams vanish each way.
            config.initial_rto = Duration::from_millis(20);
            config.max_rto = Duration::from_millis(250);
            config.default_retries = 30;
        }
        let channel = UdpChannel::connect_with(addr, config)
            .await
            .context("binding a client socket")?;
        let client = CounterClient::new(Client::new(channel.clone()));
        Ok(UdpDoor {
            name: name.to_owned(),
            channel,
            client,
            lossy,
        })
    }
}

impl Door for UdpDoor {
    fn name(&self) -> &str {
        &self.name
    }
    fn client(&self) -> &CounterClient {
        &self.client
    }
    fn retransmissions(&self) -> Option<u64> {
        Some(self.channel.stats().retransmissions)
    }
    fn lossy(&self) -> bool {
        self.lossy
    }
    fn oversize(&self) -> usize {
        // Over the channel's datagram limit (65,000 bytes by default).
        70_000
    }
}
