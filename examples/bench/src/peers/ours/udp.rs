//! Ours over UDP, one row a call style: RR and RRA (synchronous,
//! at-most-once), asynchronous (returns at the ACCEPT), one-way (returns
//! once sent).

use super::{clock_interceptor, echo, start_echo_with, Door, Interceptors, OurEcho, BENCH_TOKEN};
use crate::target::{Role, Target};
use crate::EchoMsg;
use anyhow::ensure;
use rpc_core::server::ServerHandle;
use rpc_services::clock::logical::ClockKinds;
use std::sync::atomic::Ordering;
use tokio::runtime::Handle;

/// Which call style a row of ours measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OurStyle {
    /// Synchronous, RR, at-most-once.
    Rr,
    /// As `Rr`, with the three shipped interceptors on both sides
    /// (authentication, trace context, metrics).
    RrIntercepted,
    /// As `Rr`, with the clock service's logical clocks (those named)
    /// carried by its interceptor on both sides.
    RrClock(ClockKinds),
    /// Synchronous, RRA, at-most-once.
    Rra,
    /// Asynchronous (returns at the server's ACCEPT), RR.
    Async,
    /// One-way (protocol R): returns once the datagram is sent.
    OneWay,
}

/// The framework's UDP server and a `UdpChannel` (one session, one socket)
/// to it, called through the same typed path generated stubs use.
#[derive(Debug)]
pub(crate) struct Ours {
    /// First, so that it is dropped first: dropping it stops the server.
    _server: ServerHandle,
    style: OurStyle,
    client: rpc_core::Client,
    channel: rpc_core::client::UdpChannel,
    request: EchoMsg,
    echo: OurEcho,
}

impl Ours {
    pub(crate) async fn start(server_rt: &Handle, style: OurStyle) -> anyhow::Result<Ours> {
        let echo = OurEcho::default();
        let interceptors = match style {
            OurStyle::RrIntercepted => Interceptors::Shipped,
            OurStyle::RrClock(kinds) => Interceptors::Clock(kinds),
            _ => Interceptors::None,
        };
        let server = start_echo_with(server_rt, echo.clone(), Door::Udp, interceptors).await?;
        let channel = rpc_core::client::UdpChannel::connect(server.local_addr()).await?;
        let mut client = rpc_core::Client::new(channel.clone());
        if let Interceptors::Clock(kinds) = interceptors {
            client = client.intercepted(clock_interceptor(2, kinds));
        }
        if interceptors == Interceptors::Shipped {
            use rpc_core::intercept::{
                auth::BearerToken, metrics::Metrics, trace::TracePropagation,
            };
            client = client
                .intercepted(BearerToken::new(BENCH_TOKEN))
                .intercepted(TracePropagation)
                .intercepted(Metrics::new());
        }
        Ok(Ours {
            _server: server,
            style,
            client,
            channel,
            request: EchoMsg::payload(),
            echo,
        })
    }
}

impl Target for Ours {
    fn name(&self) -> String {
        match self.style {
            OurStyle::Rr => "ours UDP RR (sync)".to_owned(),
            OurStyle::RrIntercepted => "ours UDP RR (sync), 3 interceptors".to_owned(),
            OurStyle::RrClock(ClockKinds::ALL) => crate::report::OURS_UDP_RR_CLOCK.to_owned(),
            OurStyle::RrClock(kinds) => format!("ours UDP RR (sync), {kinds} clock interceptor"),
            OurStyle::Rra => "ours UDP RRA (sync)".to_owned(),
            OurStyle::Async => "ours UDP async (at ACCEPT)".to_owned(),
            OurStyle::OneWay => "ours UDP one-way (R, sent)".to_owned(),
        }
    }

    fn role(&self) -> Role {
        Role::Measured
    }

    fn note(&self) -> String {
        let c = self.channel.stats();
        let mut note = format!("{} calls, {} retransmissions", c.calls, c.retransmissions);
        if self.style == OurStyle::Rra {
            note.push_str(&format!(
                ", {} ACKs sent, {} replies acknowledged by a coalesced ACK",
                c.acks_sent, c.acks_coalesced
            ));
        }
        if self.style == OurStyle::OneWay {
            note.push_str(&format!(
                ", {} notes ran",
                self.echo.notes.load(Ordering::Relaxed)
            ));
        }
        note
    }

    async fn call(&self) -> anyhow::Result<()> {
        use rpc_core::{Never, Protocol};
        let call = |protocol| {
            self.client
                .call::<EchoMsg, EchoMsg, Never>(&echo::INFO, &echo::ECHO, &self.request)
                .protocol(protocol)
        };
        match self.style {
            OurStyle::Rr | OurStyle::RrIntercepted | OurStyle::RrClock(_) | OurStyle::Rra => {
                let protocol = if self.style == OurStyle::Rra {
                    Protocol::RRA
                } else {
                    Protocol::RR
                };
                let reply = call(protocol).await?;
                ensure!(reply.data == self.request.data, "ours: wrong echo");
            }
            OurStyle::Async => call(Protocol::RR).asynchronous().await?,
            OurStyle::OneWay => {
                self.client
                    .one_way(&echo::INFO, &echo::NOTE, &self.request)
                    .await?
            }
        }
        Ok(())
    }
}
