//! A fault-injecting UDP proxy between any number of clients and one
//! upstream address.
//!
//! Clients send to the proxy's address. For every client address the proxy
//! opens one upstream-facing socket, so the upstream sees one peer per
//! client and its replies go back to the right client. Each direction has
//! its own [`FaultConfig`] and generator; one task runs both directions and
//! the timers, and one small task per client reads the upstream's replies.
//!
//! The faults can be changed while the proxy runs, from any task holding
//! the [`FaultProxy`]: [`FaultProxy::set_config`] and
//! [`FaultProxy::update_config`] replace them, [`FaultProxy::blackhole`]
//! cuts both directions (a partition) until it is turned off again,
//! [`FaultProxy::heal`] goes back to the faults the proxy started with, and
//! [`FaultProxy::stats`] reads the counters. Each change applies to every
//! datagram the proxy receives after the call returned.

use super::shaper::Shaper;
use super::{FaultConfig, FaultCounters, FaultError, FaultStats};
use crate::counter::bump;
use bytes::Bytes;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Largest datagram the proxy forwards whole (larger ones are truncated,
/// as a UDP socket would).
const MAX_DATAGRAM: usize = 65_536;

/// The faults of both directions.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProxyFaults {
    /// Applied to datagrams from clients to the upstream.
    pub client_to_server: FaultConfig,
    /// Applied to datagrams from the upstream to clients.
    pub server_to_client: FaultConfig,
}

impl ProxyFaults {
    /// No faults either way.
    pub fn none() -> ProxyFaults {
        ProxyFaults::default()
    }

    /// The same faults both ways. The server-to-client generator is seeded
    /// from `config.seed` mixed with a constant, so the two directions do not
    /// make the same decisions for the n-th datagram.
    pub fn symmetric(config: FaultConfig) -> ProxyFaults {
        let back = config.seed ^ 0x9E37_79B9_7F4A_7C15;
        ProxyFaults {
            server_to_client: config.clone().seed(back),
            client_to_server: config,
        }
    }

    /// Checks both configurations.
    ///
    /// # Errors
    /// See [`FaultConfig::validate`].
    pub fn validate(&self) -> Result<(), FaultError> {
        self.client_to_server.validate()?;
        self.server_to_client.validate()
    }
}

/// How a [`FaultProxy`] runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// The faults per direction.
    pub faults: ProxyFaults,
    /// Most clients mapped at once; a new client beyond it evicts the one
    /// idle longest (default 1024).
    pub max_clients: usize,
    /// Most datagrams queued per direction (delayed or held); more are
    /// dropped and counted as overflow (default 4096).
    pub queue_limit: usize,
    /// A client silent (both ways) for this long is forgotten (default 60 s).
    pub client_idle_timeout: Duration,
}

impl ProxyConfig {
    /// The defaults with the given faults.
    pub fn new(faults: ProxyFaults) -> ProxyConfig {
        ProxyConfig {
            faults,
            max_clients: 1024,
            queue_limit: 4096,
            client_idle_timeout: Duration::from_secs(60),
        }
    }

    fn validate(&self) -> Result<(), FaultError> {
        self.faults.validate()?;
        if self.max_clients == 0 {
            return Err(FaultError::Config("max_clients must be at least 1"));
        }
        if self.queue_limit == 0 {
            return Err(FaultError::Config("queue_limit must be at least 1"));
        }
        if self.client_idle_timeout.is_zero() {
            return Err(FaultError::Config("client_idle_timeout must not be zero"));
        }
        Ok(())
    }
}

impl Default for ProxyConfig {
    fn default() -> ProxyConfig {
        ProxyConfig::new(ProxyFaults::none())
    }
}

/// Counters of a [`FaultProxy`], as a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Datagrams from clients to the upstream.
    pub client_to_server: FaultStats,
    /// Datagrams from the upstream to clients.
    pub server_to_client: FaultStats,
    /// Clients mapped now.
    pub clients: usize,
    /// Clients forgotten because the table was full.
    pub clients_evicted: u64,
    /// Clients forgotten because they were idle.
    pub clients_expired: u64,
    /// Sends that failed (datagram lost), and upstream sockets that could
    /// not be opened (datagram lost).
    pub send_errors: u64,
    /// Datagrams from an address other than the upstream arriving on an
    /// upstream-facing socket (ignored).
    pub strays: u64,
}

#[derive(Debug, Default)]
struct Shared {
    c2s: Arc<FaultCounters>,
    s2c: Arc<FaultCounters>,
    clients: AtomicUsize,
    evicted: AtomicU64,
    expired: AtomicU64,
    send_errors: AtomicU64,
    strays: AtomicU64,
    /// Set by [`FaultProxy::blackhole`], read by the engine before it
    /// shapes or releases anything.
    blackhole: AtomicBool,
}

impl Shared {
    fn snapshot(&self) -> ProxyStats {
        ProxyStats {
            client_to_server: self.c2s.snapshot(),
            server_to_client: self.s2c.snapshot(),
            clients: self.clients.load(Ordering::Relaxed),
            clients_evicted: self.evicted.load(Ordering::Relaxed),
            clients_expired: self.expired.load(Ordering::Relaxed),
            send_errors: self.send_errors.load(Ordering::Relaxed),
            strays: self.strays.load(Ordering::Relaxed),
        }
    }
}

/// Aborts a task when dropped (so a stopped proxy leaves no reader behind).
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running fault-injecting UDP proxy. Dropping it stops it (without
/// waiting); [`FaultProxy::shutdown`] stops it and waits.
#[derive(Debug)]
pub struct FaultProxy {
    local: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    faults: watch::Sender<ProxyFaults>,
    /// The faults given at start, for [`FaultProxy::heal`].
    initial: ProxyFaults,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1:0` (an ephemeral port) forwarding to
    /// `upstream`. Must be called within a tokio runtime.
    ///
    /// # Errors
    /// An invalid configuration, or a socket that cannot be bound.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing runs until the proxy is returned.
    pub async fn loopback(
        upstream: SocketAddr,
        config: ProxyConfig,
    ) -> Result<FaultProxy, FaultError> {
        FaultProxy::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), upstream, config).await
    }

    /// Starts a proxy listening on `listen` and forwarding to `upstream`.
    /// Must be called within a tokio runtime.
    ///
    /// # Errors
    /// An invalid configuration, or a socket that cannot be bound.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing runs until the proxy is returned.
    pub async fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        config: ProxyConfig,
    ) -> Result<FaultProxy, FaultError> {
        config.validate()?;
        let socket = UdpSocket::bind(listen)
            .await
            .map_err(|source| FaultError::Bind {
                addr: listen,
                source,
            })?;
        let local = socket.local_addr().map_err(|source| FaultError::Bind {
            addr: listen,
            source,
        })?;
        let shared = Arc::new(Shared::default());
        let initial = config.faults.clone();
        let (faults_tx, faults_rx) = watch::channel(config.faults.clone());
        let (stop_tx, stop_rx) = oneshot::channel();
        // Replies from all upstream-facing sockets, bounded like the queues.
        let (up_tx, up_rx) = mpsc::channel(config.queue_limit);
        let engine = Engine {
            listen: socket,
            upstream,
            upstream_bind: upstream_bind_addr(upstream),
            c2s: Shaper::new(
                config.faults.client_to_server.clone(),
                config.queue_limit,
                shared.c2s.clone(),
            ),
            s2c: Shaper::new(
                config.faults.server_to_client.clone(),
                config.queue_limit,
                shared.s2c.clone(),
            ),
            clients: HashMap::new(),
            up_tx,
            shared: shared.clone(),
            config,
        };
        let task = tokio::spawn(engine.run(up_rx, faults_rx, stop_rx));
        tracing::debug!(%local, %upstream, "fault proxy started");
        Ok(FaultProxy {
            local,
            upstream,
            shared,
            faults: faults_tx,
            initial,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The address datagrams are forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Replaces the faults of both directions. Each direction's generator
    /// restarts from the new seed; datagrams already queued keep their
    /// schedule.
    ///
    /// # Errors
    /// [`FaultError::Probability`] or [`FaultError::Delay`] for an invalid
    /// configuration (nothing changes), [`FaultError::Closed`] when the proxy
    /// has stopped.
    pub fn set_config(&self, faults: ProxyFaults) -> Result<(), FaultError> {
        faults.validate()?;
        self.faults.send(faults).map_err(|_| FaultError::Closed)
    }

    /// Changes the faults in use with `change` (for example one
    /// probability of one direction) and returns the faults now in use.
    /// The change is made on the faults in force at the call, atomically
    /// with respect to other changes; as with [`FaultProxy::set_config`],
    /// both generators restart from their seeds.
    ///
    /// # Errors
    /// As [`FaultProxy::set_config`]: when the changed faults are invalid,
    /// nothing changes.
    pub fn update_config(
        &self,
        change: impl FnOnce(&mut ProxyFaults),
    ) -> Result<ProxyFaults, FaultError> {
        if self.faults.is_closed() {
            return Err(FaultError::Closed);
        }
        let mut outcome = Err(FaultError::Closed);
        self.faults.send_if_modified(|current| {
            let mut next = current.clone();
            change(&mut next);
            match next.validate() {
                Ok(()) => {
                    *current = next.clone();
                    outcome = Ok(next);
                    true
                }
                Err(e) => {
                    outcome = Err(e);
                    false
                }
            }
        });
        outcome
    }

    /// The faults in use.
    pub fn config(&self) -> ProxyFaults {
        self.faults.borrow().clone()
    }

    /// The faults the proxy started with.
    pub fn initial_config(&self) -> &ProxyFaults {
        &self.initial
    }

    /// Turns the blackhole on or off. While it is on, nothing leaves the
    /// proxy either way: every datagram received is dropped, and so is
    /// every queued (delayed or held) datagram falling due; all of them are
    /// counted in [`FaultStats::dropped`] and [`FaultStats::blackholed`].
    /// The generators draw nothing for them, so the seeded decisions go on
    /// where they stopped once the blackhole is off. The configured faults
    /// are kept, and the client table too.
    ///
    /// It applies to every datagram received after the call returned.
    pub fn blackhole(&self, on: bool) {
        self.shared.blackhole.store(on, Ordering::SeqCst);
        tracing::debug!(local = %self.local, on, "fault proxy blackhole");
    }

    /// Whether the blackhole is on.
    pub fn is_blackholed(&self) -> bool {
        self.shared.blackhole.load(Ordering::SeqCst)
    }

    /// Back to the faults the proxy started with, blackhole off; returns
    /// them. Both generators restart from their seeds.
    ///
    /// # Errors
    /// [`FaultError::Closed`] when the proxy has stopped.
    pub fn heal(&self) -> Result<ProxyFaults, FaultError> {
        self.set_config(self.initial.clone())?;
        self.blackhole(false);
        Ok(self.initial.clone())
    }

    /// The counters now.
    pub fn stats(&self) -> ProxyStats {
        self.shared.snapshot()
    }

    /// Stops the proxy: datagrams still queued are dropped, every socket is
    /// closed. Returns the final counters.
    ///
    /// # Cancel safety
    /// Dropping the future still stops the proxy (without waiting).
    pub async fn shutdown(mut self) -> ProxyStats {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                tracing::debug!(error = %e, "fault proxy task ended abnormally");
            }
        }
        tracing::debug!(local = %self.local, "fault proxy stopped");
        self.shared.snapshot()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Where an upstream-facing socket binds: loopback for a loopback upstream,
/// otherwise the unspecified address of the same family.
fn upstream_bind_addr(upstream: SocketAddr) -> SocketAddr {
    let ip = match (upstream.ip(), upstream.ip().is_loopback()) {
        (IpAddr::V4(_), true) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (IpAddr::V4(_), false) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (IpAddr::V6(_), true) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        (IpAddr::V6(_), false) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}

#[derive(Debug)]
struct ClientEntry {
    socket: Arc<UdpSocket>,
    last_active: Instant,
    _reader: AbortOnDrop,
}

/// The proxy's task: both directions, the timers and the client table.
#[derive(Debug)]
struct Engine {
    listen: UdpSocket,
    upstream: SocketAddr,
    upstream_bind: SocketAddr,
    c2s: Shaper<(Arc<UdpSocket>, Bytes)>,
    s2c: Shaper<(SocketAddr, Bytes)>,
    clients: HashMap<SocketAddr, ClientEntry>,
    up_tx: mpsc::Sender<(SocketAddr, Bytes)>,
    shared: Arc<Shared>,
    config: ProxyConfig,
}

impl Engine {
    async fn run(
        mut self,
        mut up_rx: mpsc::Receiver<(SocketAddr, Bytes)>,
        mut faults: watch::Receiver<ProxyFaults>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let sweep_every = (self.config.client_idle_timeout / 4).max(Duration::from_millis(100));
        let mut next_sweep = Instant::now() + sweep_every;
        loop {
            // Changes made while the loop waited apply before anything is
            // released.
            self.apply_config(&mut faults);
            self.apply_blackhole();
            let now = Instant::now();
            self.flush(now).await;
            if now >= next_sweep {
                self.expire_idle(now);
                next_sweep = now + sweep_every;
            }
            let mut wake = next_sweep;
            for deadline in [self.c2s.next_deadline(), self.s2c.next_deadline()]
                .into_iter()
                .flatten()
            {
                wake = wake.min(deadline);
            }
            // Unbiased: a flood one way must not starve the other way.
            tokio::select! {
                _ = &mut stop => break,
                changed = faults.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    // `changed()` has marked the value seen: take it as is.
                    let f = faults.borrow_and_update().clone();
                    self.use_faults(f);
                }
                received = self.listen.recv_from(&mut buf) => match received {
                    Ok((n, from)) => {
                        self.apply_config(&mut faults);
                        self.apply_blackhole();
                        self.on_client_datagram(from, Bytes::copy_from_slice(&buf[..n]));
                    }
                    // ICMP errors and the like: nothing to do but go on.
                    Err(e) => tracing::debug!(error = %e, "fault proxy: receive from clients failed"),
                },
                Some((client, datagram)) = up_rx.recv() => {
                    self.apply_config(&mut faults);
                    self.apply_blackhole();
                    let now = Instant::now();
                    if let Some(entry) = self.clients.get_mut(&client) {
                        entry.last_active = now;
                    }
                    self.s2c.push(now, (client, datagram));
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
        self.shared.clients.store(0, Ordering::Relaxed);
    }

    /// Takes a configuration given to `set_config` into use. Called before
    /// each datagram is shaped too, so that every datagram handled after
    /// `set_config` returned sees the new faults, whichever branch of the
    /// loop's `select!` happened to run first.
    fn apply_config(&mut self, faults: &mut watch::Receiver<ProxyFaults>) {
        if faults.has_changed().unwrap_or(false) {
            let f = faults.borrow_and_update().clone();
            self.use_faults(f);
        }
    }

    /// Takes the blackhole's state into use (see [`FaultProxy::blackhole`]).
    fn apply_blackhole(&mut self) {
        let on = self.shared.blackhole.load(Ordering::SeqCst);
        self.c2s.set_blackhole(on);
        self.s2c.set_blackhole(on);
    }

    fn use_faults(&mut self, f: ProxyFaults) {
        tracing::debug!(?f, "fault proxy configuration changed");
        self.c2s.set_config(f.client_to_server);
        self.s2c.set_config(f.server_to_client);
    }

    /// Sends everything that is due.
    async fn flush(&mut self, now: Instant) {
        while let Some((socket, datagram)) = self.c2s.pop_ready(now) {
            if let Err(e) = socket.send_to(&datagram, self.upstream).await {
                bump(&self.shared.send_errors);
                tracing::debug!(error = %e, upstream = %self.upstream, "fault proxy: send upstream failed");
            }
        }
        while let Some((client, datagram)) = self.s2c.pop_ready(now) {
            if let Err(e) = self.listen.send_to(&datagram, client).await {
                bump(&self.shared.send_errors);
                tracing::debug!(error = %e, %client, "fault proxy: send to client failed");
            }
        }
    }

    /// A datagram from a client: map the client if new, then shape it.
    fn on_client_datagram(&mut self, client: SocketAddr, datagram: Bytes) {
        let now = Instant::now();
        let socket = match self.clients.get_mut(&client) {
            Some(entry) => {
                entry.last_active = now;
                entry.socket.clone()
            }
            None => match self.map_client(client, now) {
                Some(socket) => socket,
                None => {
                    bump(&self.shared.send_errors);
                    return;
                }
            },
        };
        self.c2s.push(now, (socket, datagram));
    }

    /// Opens the upstream-facing socket of a new client (evicting the one
    /// idle longest when the table is full) and starts its reader.
    fn map_client(&mut self, client: SocketAddr, now: Instant) -> Option<Arc<UdpSocket>> {
        if self.clients.len() >= self.config.max_clients {
            let oldest = self
                .clients
                .iter()
                .min_by_key(|(_, e)| e.last_active)
                .map(|(a, _)| *a);
            if let Some(oldest) = oldest {
                self.clients.remove(&oldest);
                bump(&self.shared.evicted);
                tracing::debug!(client = %oldest, "fault proxy: client table full, evicted the one idle longest");
            }
        }
        let socket = match bind_nonblocking(self.upstream_bind) {
            Ok(socket) => Arc::new(socket),
            Err(e) => {
                tracing::warn!(error = %e, %client, "fault proxy: cannot open an upstream socket; datagram dropped");
                return None;
            }
        };
        let reader = tokio::spawn(read_upstream(
            socket.clone(),
            self.upstream,
            client,
            self.up_tx.clone(),
            self.shared.clone(),
        ));
        self.clients.insert(
            client,
            ClientEntry {
                socket: socket.clone(),
                last_active: now,
                _reader: AbortOnDrop(reader),
            },
        );
        self.shared
            .clients
            .store(self.clients.len(), Ordering::Relaxed);
        tracing::debug!(%client, "fault proxy: new client");
        Some(socket)
    }

    fn expire_idle(&mut self, now: Instant) {
        let timeout = self.config.client_idle_timeout;
        let before = self.clients.len();
        self.clients
            .retain(|_, e| now.duration_since(e.last_active) < timeout);
        let expired = before - self.clients.len();
        if expired > 0 {
            self.shared
                .expired
                .fetch_add(expired as u64, Ordering::Relaxed);
            tracing::debug!(expired, "fault proxy: forgot idle clients");
        }
        self.shared
            .clients
            .store(self.clients.len(), Ordering::Relaxed);
    }
}

fn bind_nonblocking(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// Reads the upstream's replies for one client and hands them to the engine.
async fn read_upstream(
    socket: Arc<UdpSocket>,
    upstream: SocketAddr,
    client: SocketAddr,
    to_engine: mpsc::Sender<(SocketAddr, Bytes)>,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) if from == upstream => {
                let datagram = Bytes::copy_from_slice(&buf[..n]);
                match to_engine.try_send((client, datagram)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        bump(&shared.s2c.received);
                        bump(&shared.s2c.overflow);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            Ok((_, from)) => {
                bump(&shared.strays);
                tracing::debug!(%from, %client, "fault proxy: datagram from a stranger on an upstream socket ignored");
            }
            Err(e) => {
                tracing::debug!(error = %e, %client, "fault proxy: receive from upstream failed");
                // Do not spin if the error persists.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}
