//! The server: hosts [`Service`]s and answers them over UDP (or any
//! [`DatagramSocket`]) as `idl/PROTOCOL.md` specifies: duplicate filtering,
//! a reply history for at-most-once, ACCEPT for asynchronous calls,
//! incarnations, deadlines, size limits and graceful shutdown.
//!
//! How the pieces fit:
//! - [`ServerBuilder`] collects the services and limits ([`ServerConfig`],
//!   [`HistoryConfig`]) and starts the server with its first door; it
//!   returns a [`ServerHandle`] (address, counters, shutdown).
//! - The serving verbs are the same on both: `serve_udp(addr)`,
//!   `serve_tcp(addr)`, `serve_grpc(addr)` (feature `grpc`), each with a
//!   `_with(addr, config)` form where the door has limits of its own
//!   (`serve_tcp_with`, `serve_grpc_with`), and `serve_socket(socket)` for
//!   a datagram socket made by the caller. On the builder a verb starts the
//!   server and returns its handle; on the handle it opens one more door
//!   to the same engine and returns the door's address.
//! - [`Engine`] is the transport-agnostic core: given one message and a
//!   [`ReplySink`] back to its sender it decides everything; the reply
//!   history ([`History`]) lives inside it, keyed by client session, so
//!   every transport of a server shares it.
//! - `udp` is the datagram door: one task per socket receives datagrams and
//!   hands them to the engine; handlers that are not ready on their first
//!   poll continue in their own tasks, bounded by `max_concurrent`.
//! - `tcp` is the stream door (TCP, optionally TLS with feature `tls`):
//!   length-delimited frames, many calls per connection, a batching writer
//!   per connection ([`TcpServerConfig`], [`ServerBuilder::serve_tcp`],
//!   [`ServerHandle::serve_tcp`] to add it to a running server).
//! - [`AuthPolicy`] (one per server, [`ServerBuilder::auth`]) says which
//!   doors may be opened at all: under a TLS policy only TLS doors, under
//!   mutual TLS only TLS doors that require client certificates; any other
//!   door is refused when it is added ([`ServerError::DoorRefused`]).
//!
//! ```no_run
//! # async fn demo(svc: impl rpc_core::Service) -> Result<(), Box<dyn std::error::Error>> {
//! use rpc_core::server::{HistoryConfig, Server};
//! use std::time::Duration;
//!
//! let handle = Server::builder()
//!     .max_concurrent(256)
//!     .history(HistoryConfig { ttl: Duration::from_secs(30), ..HistoryConfig::default() })
//!     .add_service(svc)
//!     .serve_udp("127.0.0.1:0")
//!     .await?;
//! let tcp = handle.serve_tcp("127.0.0.1:0").await?; // one more door
//! println!("listening on {} (udp) and {tcp} (tcp)", handle.local_addr());
//! handle.shutdown(Duration::from_secs(5)).await?;
//! # Ok(()) }
//! ```

pub(crate) mod admit;
mod auth;
pub(crate) mod budget;
mod engine;
pub(crate) mod history;
mod stats;
mod tcp;
mod udp;
mod verify;

pub use auth::{AuthPolicy, DoorKind, Shortfall};
pub use budget::BufferStats;
#[cfg(feature = "grpc")]
pub(crate) use engine::Untracked;
pub use engine::{Engine, ReplySink};
pub use history::{EvictionCounts, History, HistoryConfig, HistorySize};
pub use stats::ServerStats;
pub use tcp::{TcpServerConfig, TcpStats, UNBUDGETED_FRAME};

use budget::ByteBudget;

use crate::service::Service;
use crate::transport::DatagramSocket;
use std::collections::HashSet;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Errors of starting and stopping a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The socket could not be bound.
    #[error("cannot bind the server socket")]
    Bind(#[source] io::Error),
    /// The socket could not tell its address.
    #[error("cannot read the socket's local address")]
    LocalAddr(#[source] io::Error),
    /// Two services with the same full name were added.
    #[error("service {0} added twice")]
    DuplicateService(String),
    /// A limit is out of range.
    #[error("invalid server configuration: {0}")]
    InvalidConfig(String),
    /// A door cannot meet the server's [`AuthPolicy`]; it was not opened.
    #[error("{door} door refused: the server's authentication policy is {policy}, and {reason}")]
    DoorRefused {
        /// The door that was refused.
        door: DoorKind,
        /// The server's policy.
        policy: AuthPolicy,
        /// What the door lacks.
        reason: Shortfall,
    },
    /// Handlers were still running when the shutdown timeout passed; they
    /// were cancelled.
    #[error("shutdown timed out; {cancelled} handler task(s) cancelled")]
    ShutdownTimeout {
        /// Handler tasks cancelled.
        cancelled: usize,
    },
}

/// Limits of a server.
///
/// Defaults: `max_concurrent` 1024, `max_pending` 4096, `max_datagram`
/// 65,000, `buffer_budget` 256 MiB, `history` [`HistoryConfig::default`],
/// `unverified_rate` 1,000.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Handlers running at the same time. Default 1024.
    pub max_concurrent: usize,
    /// Requests waiting for a free handler slot; beyond it a request is
    /// refused with RESOURCE_EXHAUSTED (it did not run). Default 4096.
    pub max_pending: usize,
    /// Largest datagram received or sent; a bigger reply becomes a
    /// RESOURCE_EXHAUSTED reply naming its size and the limit. Default 65,000.
    pub max_datagram: usize,
    /// Bytes that partly received messages of all the stream doors (TCP
    /// frames over [`UNBUDGETED_FRAME`], gRPC requests over a connection's
    /// small allowance) may hold together. A TCP frame reserves its length
    /// before its body is read and waits, up to its frame timeout, when
    /// the budget is spent; a gRPC request is refused at once with
    /// RESOURCE_EXHAUSTED. A request of any door that has to wait for a
    /// handler slot holds its payload's bytes from the same budget until
    /// it starts, and is refused (RESOURCE_EXHAUSTED, stored as its answer)
    /// when they are not free. See [`TcpServerConfig`] and the gRPC door's
    /// `GrpcServerConfig` for what each connection may hold besides. Must
    /// be at least every door's largest message (a TCP door's `max_frame`,
    /// the gRPC door's 16 MiB) and at least 64 KiB. Default 256 MiB
    /// (sixteen frames of the default 16 MiB limit at once).
    pub buffer_budget: usize,
    /// The reply history.
    pub history: HistoryConfig,
    /// Messages a second (and the burst) that one host may be sent on a
    /// datagram door while its address is not verified (PONGs, errors and
    /// small answers; `idl/PROTOCOL.md`, section 7.4); beyond, they are
    /// dropped and counted. 0: no limit. Default 1,000.
    pub unverified_rate: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_concurrent: 1024,
            max_pending: 4096,
            max_datagram: 65_000,
            buffer_budget: 256 << 20,
            history: HistoryConfig::default(),
            unverified_rate: 1000,
        }
    }
}

impl ServerConfig {
    fn validate(&self) -> Result<(), ServerError> {
        if self.max_concurrent == 0 || self.max_concurrent > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(ServerError::InvalidConfig(format!(
                "max_concurrent must be at least 1, is {}",
                self.max_concurrent
            )));
        }
        if self.max_datagram < 256 {
            return Err(ServerError::InvalidConfig(format!(
                "max_datagram must be at least 256 bytes (an error reply must fit), is {}",
                self.max_datagram
            )));
        }
        if self.buffer_budget < (64 << 10)
            || self.buffer_budget > tokio::sync::Semaphore::MAX_PERMITS
        {
            return Err(ServerError::InvalidConfig(format!(
                "buffer_budget must be at least 64 KiB, is {}",
                self.buffer_budget
            )));
        }
        if self.history.ttl.is_zero() {
            return Err(ServerError::InvalidConfig(
                "history ttl must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Entry point: [`Server::builder`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Server;

impl Server {
    /// A builder with the default limits and no services.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }
}

/// Collects services and limits, then starts serving.
#[derive(Default)]
pub struct ServerBuilder {
    config: ServerConfig,
    services: Vec<Arc<dyn Service>>,
    incarnation: Option<u64>,
    auth: AuthPolicy,
    interceptors: Vec<Arc<dyn crate::intercept::Interceptor>>,
    /// (service full name, method name, handler slots).
    method_limits: Vec<(String, String, usize)>,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.services.iter().map(|s| s.info().full_name).collect();
        f.debug_struct("ServerBuilder")
            .field("config", &self.config)
            .field("services", &names)
            .field("auth", &self.auth)
            .finish()
    }
}

impl ServerBuilder {
    crate::setters::field_setters! {
        /// The authentication policy every door of the server must meet
        /// (default [`AuthPolicy::None`]): doors that cannot are refused with
        /// [`ServerError::DoorRefused`] when they are opened, here or on the
        /// running server's handle.
        auth(policy: AuthPolicy) => auth;
        /// Handlers running at the same time (default 1024).
        max_concurrent(n: usize) => config.max_concurrent;
        /// Requests waiting for a handler slot before new ones are refused
        /// (default 4096).
        max_pending(n: usize) => config.max_pending;
        /// Largest datagram received or sent (default 65,000 bytes).
        max_datagram(n: usize) => config.max_datagram;
        /// Bytes that partly received TCP frames and gRPC requests may hold,
        /// all connections together (default 256 MiB; see
        /// [`ServerConfig::buffer_budget`]).
        buffer_budget(bytes: usize) => config.buffer_budget;
        /// Limits of the reply history.
        history(history: HistoryConfig) => config.history;
        /// All limits at once.
        config(config: ServerConfig) => config;
    }

    /// A fixed incarnation instead of a random one (0: random). For
    /// simulations and tests; a real restart must show a new incarnation.
    pub fn incarnation(mut self, incarnation: u64) -> Self {
        self.incarnation = (incarnation != 0).then_some(incarnation);
        self
    }

    /// Hosts `service`, found by callers under its
    /// [`ServiceInfo::full_name`](crate::ServiceInfo::full_name).
    pub fn add_service<S: Service>(mut self, service: S) -> Self {
        self.services.push(Arc::new(service));
        self
    }

    /// Hosts a shared service.
    pub fn add_shared_service(mut self, service: Arc<dyn Service>) -> Self {
        self.services.push(service);
        self
    }

    /// Gives `method` of `service` (its full name) a pool of `limit`
    /// handler slots of its own, instead of `max_concurrent`'s. For methods
    /// whose handlers wait long (a lock grant, a long poll): however many
    /// of them wait, the server's other methods keep their slots. Requests
    /// beyond the limit wait for a slot of the pool (counted in
    /// `max_pending`) as any other.
    pub fn method_concurrency(mut self, service: &str, method: &str, limit: usize) -> Self {
        self.method_limits
            .push((service.to_owned(), method.to_owned(), limit));
        self
    }

    /// Runs `interceptor` around every call of every service, on every
    /// door. Interceptors run `before` in the order they are added and
    /// `after` in reverse (see [`crate::intercept`]).
    pub fn intercept(mut self, interceptor: impl crate::intercept::Interceptor) -> Self {
        self.interceptors.push(Arc::new(interceptor));
        self
    }

    /// The engine and the buffer budget its doors share.
    fn build(self) -> Result<(Arc<Engine>, Arc<ByteBudget>), ServerError> {
        self.config.validate()?;
        let budget = ByteBudget::new(self.config.buffer_budget);
        let mut seen = HashSet::new();
        for s in &self.services {
            if !seen.insert(s.info().full_name) {
                return Err(ServerError::DuplicateService(s.info().full_name.to_owned()));
            }
        }
        let mut method_permits = crate::hash::FastMap::default();
        for (service, method, limit) in &self.method_limits {
            let info = self
                .services
                .iter()
                .map(|s| s.info())
                .find(|i| i.full_name == service)
                .ok_or_else(|| {
                    ServerError::InvalidConfig(format!(
                        "method_concurrency names service {service}, which the server does not host"
                    ))
                })?;
            let m = info.method_by_name(method).ok_or_else(|| {
                ServerError::InvalidConfig(format!(
                    "method_concurrency names {service}/{method}, which does not exist"
                ))
            })?;
            if *limit == 0 {
                return Err(ServerError::InvalidConfig(format!(
                    "method_concurrency of {service}/{method} is 0: it could never run"
                )));
            }
            method_permits.insert(
                (info.full_name, m.id),
                Arc::new(tokio::sync::Semaphore::new(*limit)),
            );
        }
        let incarnation = self.incarnation.unwrap_or_else(random_incarnation);
        let mut engine = Engine::new(self.config, self.services, incarnation, Arc::clone(&budget));
        engine.interceptors = crate::intercept::Chain(self.interceptors.into());
        engine.method_permits = method_permits;
        let engine = Arc::new(engine);
        Ok((engine, budget))
    }

    /// Checks that a first door of kind `door` meets the policy, builds
    /// the engine and returns a handle without doors yet; every builder
    /// verb then opens its door on it with the handle's verb of the same
    /// name.
    pub(crate) fn start(self, door: DoorKind) -> Result<ServerHandle, ServerError> {
        self.auth.admit(door)?;
        let auth = self.auth;
        let (engine, budget) = self.build()?;
        Ok(ServerHandle::new(engine, budget, auth))
    }

    /// Starts the server with a UDP door bound to `addr`.
    ///
    /// # Errors
    /// [`ServerError::Bind`] when the address cannot be bound; the
    /// configuration errors of [`ServerBuilder::serve_socket`].
    pub async fn serve_udp(
        self,
        addr: impl tokio::net::ToSocketAddrs,
    ) -> Result<ServerHandle, ServerError> {
        let handle = self.start(DoorKind::Datagram)?;
        handle.serve_udp(addr).await?;
        Ok(handle)
    }

    /// Starts the server with a datagram door on `socket` (a UDP socket
    /// made by the caller, the in-memory network's, a multicast group's).
    ///
    /// # Errors
    /// [`ServerError::DoorRefused`] under a TLS [`AuthPolicy`] (a datagram
    /// door has no TLS), [`ServerError::InvalidConfig`] for a limit out of
    /// range, [`ServerError::DuplicateService`] when two services share a
    /// name, [`ServerError::LocalAddr`] when the socket cannot tell its
    /// address.
    pub async fn serve_socket<S: DatagramSocket>(
        self,
        socket: S,
    ) -> Result<ServerHandle, ServerError> {
        let handle = self.start(DoorKind::Datagram)?;
        handle.serve_socket(socket).await?;
        Ok(handle)
    }
}

fn random_incarnation() -> u64 {
    loop {
        let n: u64 = rand::random();
        if n != 0 {
            return n;
        }
    }
}

/// A running server.
///
/// # Drop
/// Dropping the handle stops the server abruptly, as a crash would: no
/// more datagrams are read, running handlers are cancelled at their next
/// await point, and the sockets close once those tasks are gone. Keep the
/// handle alive for as long as the server should run; call
/// [`ServerHandle::shutdown`] to stop gracefully.
pub struct ServerHandle {
    engine: Arc<Engine>,
    /// Shared by the stream doors (TCP, gRPC).
    budget: Arc<ByteBudget>,
    /// Every door added must meet it.
    auth: AuthPolicy,
    /// The first door's address.
    local_addr: OnceLock<SocketAddr>,
    doors: Mutex<Vec<JoinHandle<()>>>,
    tcp_doors: Doors<tcp::TcpDoor>,
    #[cfg(feature = "grpc")]
    pub(crate) grpc_doors: Doors<crate::grpc::server::GrpcDoor>,
    sweeper: JoinHandle<()>,
}

/// Binds the listening socket of a stream door (TCP, gRPC) to `addr`;
/// returns it with its address.
pub(crate) async fn listen(
    addr: impl tokio::net::ToSocketAddrs,
) -> Result<(tokio::net::TcpListener, SocketAddr), ServerError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(ServerError::Bind)?;
    let local_addr = listener.local_addr().map_err(ServerError::LocalAddr)?;
    Ok((listener, local_addr))
}

/// The doors of one kind (TCP, gRPC) a server has opened: what its
/// counters are summed over and its shutdown drains.
pub(crate) struct Doors<D>(Mutex<Vec<Arc<D>>>);

impl<D> Default for Doors<D> {
    fn default() -> Doors<D> {
        Doors(Mutex::default())
    }
}

impl<D> Doors<D> {
    /// Keeps `door`.
    pub(crate) fn push(&self, door: Arc<D>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(door);
    }

    /// The doors now (a copy of the list: the lock is not held while the
    /// caller uses them).
    pub(crate) fn all(&self) -> Vec<Arc<D>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The counters of every door, summed by `add_to`.
    pub(crate) fn sum<S: Default>(&self, add_to: impl Fn(&D, &mut S)) -> S {
        let mut stats = S::default();
        for door in self.0.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            add_to(door, &mut stats);
        }
        stats
    }
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.local_addr())
            .field("engine", &self.engine)
            .finish()
    }
}

impl ServerHandle {
    /// A handle over `engine` without doors yet; starts the history
    /// sweeper. The first door opened sets [`ServerHandle::local_addr`].
    fn new(engine: Arc<Engine>, budget: Arc<ByteBudget>, auth: AuthPolicy) -> ServerHandle {
        let sweeper = tokio::spawn(sweep_loop(Arc::downgrade(&engine)));
        ServerHandle {
            engine,
            budget,
            auth,
            local_addr: OnceLock::new(),
            doors: Mutex::default(),
            tcp_doors: Doors::default(),
            #[cfg(feature = "grpc")]
            grpc_doors: Doors::default(),
            sweeper,
        }
    }

    /// Adds a door listening on `addr`: a task feeding this server's
    /// engine. Shutdown aborts it after draining the handlers (a door that
    /// owns connection tasks should own them in a way that aborting it
    /// ends them, e.g. a `JoinSet`).
    pub(crate) fn add_door(&self, addr: SocketAddr, door: JoinHandle<()>) {
        if self.local_addr.set(addr).is_ok() {
            tracing::debug!(local_addr = %addr, incarnation = self.engine.incarnation(), auth = %self.auth, "server started");
        }
        self.doors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(door);
    }

    /// The buffer budget the stream doors share.
    #[cfg(feature = "grpc")]
    pub(crate) fn budget(&self) -> &Arc<ByteBudget> {
        &self.budget
    }

    /// Serves the same services, with the same engine and history, on a
    /// UDP socket bound to `addr` as well. Returns its address.
    ///
    /// # Errors
    /// [`ServerError::DoorRefused`] under a TLS [`AuthPolicy`],
    /// [`ServerError::Bind`] when the address cannot be bound,
    /// [`ServerError::LocalAddr`].
    pub async fn serve_udp(
        &self,
        addr: impl tokio::net::ToSocketAddrs,
    ) -> Result<SocketAddr, ServerError> {
        self.auth.admit(DoorKind::Datagram)?;
        let socket = tokio::net::UdpSocket::bind(addr)
            .await
            .map_err(ServerError::Bind)?;
        crate::transport::tune_socket(&socket);
        self.serve_socket(socket).await
    }

    /// Serves the same services, with the same engine and history, on
    /// the datagram socket `socket` as well. Returns its address.
    ///
    /// # Errors
    /// [`ServerError::DoorRefused`] under a TLS [`AuthPolicy`],
    /// [`ServerError::LocalAddr`] when the socket cannot tell its address.
    pub async fn serve_socket<S: DatagramSocket>(
        &self,
        socket: S,
    ) -> Result<SocketAddr, ServerError> {
        self.auth.admit(DoorKind::Datagram)?;
        let addr = socket.local_addr().map_err(ServerError::LocalAddr)?;
        let door = tokio::spawn(udp::recv_loop(Arc::clone(&self.engine), Arc::new(socket)));
        self.add_door(addr, door);
        Ok(addr)
    }

    /// The address of the first door the server was started with.
    pub fn local_addr(&self) -> SocketAddr {
        // Every builder verb opens its door before it returns the handle.
        self.local_addr
            .get()
            .copied()
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The authentication policy every door of this server meets.
    pub fn auth_policy(&self) -> AuthPolicy {
        self.auth
    }

    /// This run's incarnation (random, non-zero; carried on every message
    /// the server sends).
    pub fn incarnation(&self) -> u64 {
        self.engine.incarnation()
    }

    /// A snapshot of the counters and the history's size.
    pub fn stats(&self) -> ServerStats {
        self.engine.stats()
    }

    /// The buffer budget of the stream doors: bytes reserved now and at
    /// most, waits and refusals ([`ServerConfig::buffer_budget`]).
    pub fn buffer_stats(&self) -> BufferStats {
        self.budget.stats()
    }

    /// The engine, for other transports to feed messages to.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Stops gracefully: new requests are refused with UNAVAILABLE
    /// ("shutting down") while duplicates are still answered from the
    /// history and ACKs applied; running handlers get up to `timeout` to
    /// finish and send their replies; then the sockets close. When this
    /// returns, the sockets are closed (unless a handler blocks its thread
    /// without ever yielding).
    ///
    /// # Errors
    /// [`ServerError::ShutdownTimeout`] when handlers were still running at
    /// the timeout: they were cancelled (their requests may have run
    /// partly; their clients see no reply).
    ///
    /// # Cancel safety
    /// Dropping the future stops the server abruptly (see the type's docs).
    pub async fn shutdown(self, timeout: Duration) -> Result<(), ServerError> {
        self.engine.begin_shutdown();
        let drained = self.engine.wait_idle(timeout).await;
        let cancelled = self.engine.in_flight();
        if !drained {
            self.engine.cancel_all();
            // Cancelled tasks end at their next poll.
            self.engine.wait_idle(Duration::from_secs(1)).await;
        }
        // TCP connections write their queued replies and close.
        self.drain_tcp(Duration::from_secs(2)).await;
        let doors = std::mem::take(&mut *self.doors.lock().unwrap_or_else(PoisonError::into_inner));
        for door in doors {
            door.abort();
            let _ = door.await;
        }
        self.sweeper.abort();
        tracing::debug!(local_addr = %self.local_addr(), drained, "server stopped");
        if drained {
            Ok(())
        } else {
            Err(ServerError::ShutdownTimeout { cancelled })
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.engine.begin_shutdown();
        self.engine.cancel_all();
        for door in self
            .doors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            door.abort();
        }
        self.sweeper.abort();
    }
}

async fn sweep_loop(engine: std::sync::Weak<Engine>) {
    let period = match engine.upgrade() {
        Some(e) => e.config().history.effective_sweep_interval(),
        None => return,
    };
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        interval.tick().await;
        match engine.upgrade() {
            Some(e) => e.sweep(),
            None => return,
        }
    }
}
