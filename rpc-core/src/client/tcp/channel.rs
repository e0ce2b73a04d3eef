//! [`TcpChannel`]: the channel's session and exchanges over the link.

use super::super::link::Link;
use super::super::{ClientStats, Core};
#[allow(clippy::wildcard_imports)] // a part of the link: its types are the parent's
use super::*;
use crate::call::{Channel, Invocation, Outcome};
use crate::error::Error;
use futures::future::BoxFuture;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

/// A client session over TCP (or TLS over TCP) to one server: implements
/// [`Channel`] for every call style and the protocols R, RR and RRA, with
/// the datagram client's exchange logic over a reliable link (see the
/// module docs for what a stream changes: no retransmission on a healthy
/// connection, reconnects with the same session, requests sent again on
/// the new connection).
///
/// Cheap to clone; clones share the session and the connection. Dropping
/// the last clone closes the connection; calls still in flight fail with
/// [`Error::Closed`].
///
/// ```no_run
/// # async fn demo() -> Result<(), rpc_core::Error> {
/// use rpc_core::client::TcpChannel;
/// let channel = TcpChannel::connect("127.0.0.1:7000".parse().unwrap()).await?;
/// let client = rpc_core::Client::new(channel);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TcpChannel {
    core: Core<TcpLink>,
    link: Arc<LinkShared>,
}

impl fmt::Debug for TcpChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpChannel")
            .field("server", &self.link.server)
            .field("session_id", &format_args!("{:016x}", self.session_id()))
            .field("connected", &self.link.is_connected())
            .finish()
    }
}

impl TcpChannel {
    /// A channel to `server` with the default [`TcpConfig`]; waits for the
    /// first connection.
    ///
    /// # Errors
    /// [`Error::Unreachable`] when the first connection attempts (one plus
    /// the configured default retries) fail, [`Error::DeadlineExceeded`]
    /// when they take longer than `max_wait`.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub async fn connect(server: SocketAddr) -> Result<TcpChannel, Error> {
        TcpChannel::connect_with(server, TcpConfig::default()).await
    }

    /// As [`TcpChannel::connect`], with `config`.
    ///
    /// # Errors
    /// As [`TcpChannel::connect`].
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub async fn connect_with(server: SocketAddr, config: TcpConfig) -> Result<TcpChannel, Error> {
        let channel = TcpChannel::lazy(server, config, Connector::Plain);
        channel.wait_first().await?;
        Ok(channel)
    }

    /// A channel to `server` that connects when the first call needs it
    /// (and never fails to be made).
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn connect_lazy(server: SocketAddr, config: TcpConfig) -> TcpChannel {
        TcpChannel::lazy(server, config, Connector::Plain)
    }

    /// A channel to `server` over TLS: the server's certificate is verified
    /// for `tls`'s server name against its roots; `tls` may carry a client
    /// identity for mutual TLS. The client offers ALPN `rpc.v1` and also
    /// takes a server that picks no protocol. Waits for the first
    /// connection.
    ///
    /// # Errors
    /// As [`TcpChannel::connect`]; a handshake refused at the TLS layer
    /// (this client did not accept the server's certificate, or the server
    /// refused this client's) is [`Error::Status`] UNAUTHENTICATED at once,
    /// with `may_have_run` false. With TLS 1.3 a server's refusal of the
    /// client certificate comes after this returns: the first calls fail
    /// with that status instead (see the module's documentation).
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    #[cfg(feature = "tls")]
    pub async fn connect_tls(
        server: SocketAddr,
        tls: crate::tls::TlsClientConfig,
        config: TcpConfig,
    ) -> Result<TcpChannel, Error> {
        let channel = TcpChannel::lazy(server, config, Connector::Tls(tls));
        channel.wait_first().await?;
        Ok(channel)
    }

    /// As [`TcpChannel::connect_tls`], connecting when the first call needs it.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    #[cfg(feature = "tls")]
    pub fn connect_tls_lazy(
        server: SocketAddr,
        tls: crate::tls::TlsClientConfig,
        config: TcpConfig,
    ) -> TcpChannel {
        TcpChannel::lazy(server, config, Connector::Tls(tls))
    }

    fn lazy(server: SocketAddr, config: TcpConfig, connector: Connector) -> TcpChannel {
        let config = config.normalized();
        let (inbound_tx, inbound_rx) = mpsc::unbounded_channel();
        let link = Arc::new(LinkShared {
            server,
            config: config.clone(),
            connector,
            state: Mutex::new(LinkState::default()),
            inbound_tx,
            inbound_rx: tokio::sync::Mutex::new(Inbound { rx: inbound_rx }),
            status: watch::channel(LinkStatus::default()).0,
            connected: AtomicBool::new(false),
            // The first connection's generation.
            connection: AtomicU64::new(1),
            wake: Notify::new(),
            waiters: AtomicUsize::new(0),
            rejection: Mutex::new(String::new()),
            counters: LinkCounters::default(),
        });
        let manager = tokio::spawn(manage(Arc::clone(&link))).abort_handle();
        let socket = TcpLink {
            shared: Arc::clone(&link),
            manager,
        };
        let core = Core::new(socket, server, config.channel);
        TcpChannel { core, link }
    }

    async fn wait_first(&self) -> Result<(), Error> {
        let c = &self.link.config.channel;
        let deadline = Instant::now() + c.max_wait;
        self.link
            .wait_connected(deadline, c.default_retries.saturating_add(1))
            .await
    }

    /// The exchange counters and round-trip estimate (as for UDP; no
    /// retransmissions on a healthy connection).
    pub fn stats(&self) -> ClientStats {
        self.core.stats()
    }

    /// The connection counters.
    pub fn link_stats(&self) -> TcpLinkStats {
        let c = &self.link.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TcpLinkStats {
            connected: self.link.is_connected(),
            connects: get(&c.connects),
            connect_failures: get(&c.connect_failures),
            disconnects: get(&c.disconnects),
            write_stalls: get(&c.write_stalls),
            replayed: get(&c.replayed),
            suppressed: get(&c.suppressed),
            frames_sent: get(&c.write.frames),
            writes: get(&c.write.writes),
            frames_received: get(&c.frames_received),
            oversized_replies: get(&c.oversized),
        }
    }

    /// Whether a connection is up now.
    pub fn is_connected(&self) -> bool {
        self.link.is_connected()
    }

    /// The session id this channel puts on every message (the same across
    /// reconnects).
    pub fn session_id(&self) -> u64 {
        self.core.shared().session_id
    }

    /// The server's address.
    pub fn server_addr(&self) -> SocketAddr {
        self.link.server
    }

    /// The local address of the current connection.
    ///
    /// # Errors
    /// [`io::ErrorKind::NotConnected`] before the first connection.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.core.shared().link.local_addr()
    }

    /// The configuration in use (after normalization).
    pub fn config(&self) -> &TcpConfig {
        &self.link.config
    }
}

impl Channel for TcpChannel {
    /// Runs one invocation as [`UdpChannel`](crate::client::UdpChannel) does, over the connection;
    /// without a connection, first waits for one (see the module docs).
    ///
    /// # Errors
    /// As [`UdpChannel`](crate::client::UdpChannel)'s; besides, [`Error::Unreachable`] or
    /// [`Error::DeadlineExceeded`] with `may_have_run: false` when no
    /// connection could be made for the call.
    ///
    /// # Cancel safety
    /// As [`UdpChannel`](crate::client::UdpChannel)'s.
    fn invoke(&self, invocation: Invocation) -> BoxFuture<'static, Result<Outcome, Error>> {
        if self.link.is_connected() {
            return self.core.invoke(invocation);
        }
        let core = self.core.clone();
        let link = Arc::clone(&self.link);
        Box::pin(async move {
            let c = &link.config.channel;
            let deadline = invocation
                .options
                .deadline
                .map_or_else(|| Instant::now() + c.max_wait, Instant::from_std);
            let attempts = invocation
                .options
                .retries
                .unwrap_or(c.default_retries)
                .saturating_add(1);
            link.wait_connected(deadline, attempts).await?;
            core.invoke(invocation).await
        })
    }
}
