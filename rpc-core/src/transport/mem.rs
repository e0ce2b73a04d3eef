//! An in-memory datagram network for tests: sockets bound to ordinary
//! [`SocketAddr`]s exchange datagrams without touching the OS, with loss,
//! duplication, reordering and delay decided per link (sender to receiver)
//! from a seed, by the same code as [`crate::fault::FaultProxy`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use rpc_core::fault::FaultConfig;
//! use rpc_core::transport::{mem::MemNetwork, DatagramSocket};
//!
//! let net = MemNetwork::new();
//! let server = net.bind("127.0.0.1:4000".parse()?)?;
//! let client = net.bind("127.0.0.1:0".parse()?)?; // an ephemeral port
//! net.set_link_faults(client.local_addr()?, server.local_addr()?, FaultConfig::seeded(1).duplicate(1.0));
//! client.send_to(b"hi", server.local_addr()?).await?;
//! let mut buf = [0u8; 16];
//! let (n, from) = server.recv_from(&mut buf).await?;
//! assert_eq!((&buf[..n], from), (&b"hi"[..], client.local_addr()?));
//! let (n, _) = server.recv_from(&mut buf).await?; // the duplicate
//! assert_eq!(&buf[..n], b"hi");
//! # Ok(()) }
//! ```
//!
//! Time is tokio's: under `tokio::time::pause` the delays are exact and a
//! test is fully deterministic. A datagram sent to an address nobody is
//! bound to is lost (counted as unroutable). Each link queues at most
//! [`MemNetwork::queue_limit`] datagrams; more are dropped (counted as
//! overflow). [`MemNetwork::restart`] simulates a crash: the old socket
//! stops working, datagrams queued for it are lost, and a new socket gets
//! the same address.

use super::DatagramSocket;
use crate::fault::shaper::Shaper;
use crate::fault::{FaultConfig, FaultCounters, FaultStats};
use bytes::Bytes;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Largest datagram accepted (as for UDP over IPv4 and IPv6 without jumbograms).
const MAX_DATAGRAM: usize = 65_535;

/// Default per-link queue limit.
const DEFAULT_QUEUE_LIMIT: usize = 4096;

/// Ports handed out for `port 0` binds.
const EPHEMERAL: std::ops::RangeInclusive<u16> = 49152..=65535;

/// Counters of a whole [`MemNetwork`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemStats {
    /// Sum over every link.
    pub links: FaultStats,
    /// Datagrams sent to an address nobody was bound to.
    pub unroutable: u64,
}

/// An in-memory datagram network; cheap to clone (clones share the network).
#[derive(Debug, Clone, Default)]
pub struct MemNetwork {
    shared: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct Endpoint {
    generation: u64,
    notify: Arc<Notify>,
}

#[derive(Debug)]
struct Link {
    shaper: Shaper<Bytes>,
    counters: Arc<FaultCounters>,
    /// Configured for this link explicitly (not from the default).
    explicit: bool,
}

#[derive(Debug)]
struct State {
    default_faults: FaultConfig,
    queue_limit: usize,
    endpoints: HashMap<SocketAddr, Endpoint>,
    /// Links by receiver, then sender. A link outlives restarts of its
    /// ends, so its generator continues where it was.
    links: HashMap<SocketAddr, HashMap<SocketAddr, Link>>,
    next_generation: u64,
    next_port: u16,
    unroutable: u64,
}

impl Default for State {
    fn default() -> State {
        State {
            default_faults: FaultConfig::none(),
            queue_limit: DEFAULT_QUEUE_LIMIT,
            endpoints: HashMap::new(),
            links: HashMap::new(),
            next_generation: 1,
            next_port: *EPHEMERAL.start(),
            unroutable: 0,
        }
    }
}

/// The seed of a link configured from the default: the default seed mixed
/// with both addresses (stable across runs and platforms), so links differ.
fn link_seed(seed: u64, from: SocketAddr, to: SocketAddr) -> u64 {
    // FNV-1a over the addresses' text, then a splitmix64 finaliser.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in from
        .to_string()
        .bytes()
        .chain([b'>'])
        .chain(to.to_string().bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl State {
    fn link(&mut self, from: SocketAddr, to: SocketAddr) -> &mut Link {
        let (faults, limit) = (&self.default_faults, self.queue_limit);
        self.links
            .entry(to)
            .or_default()
            .entry(from)
            .or_insert_with(|| {
                let counters = Arc::new(FaultCounters::default());
                let config = faults.clone().seed(link_seed(faults.seed, from, to));
                Link {
                    shaper: Shaper::new(config, limit, counters.clone()),
                    counters,
                    explicit: false,
                }
            })
    }

    fn unbind(&mut self, addr: SocketAddr) -> bool {
        let Some(endpoint) = self.endpoints.remove(&addr) else {
            return false;
        };
        if let Some(incoming) = self.links.get_mut(&addr) {
            for link in incoming.values_mut() {
                link.shaper.clear();
            }
        }
        // Wake its receivers so they see that the socket is gone.
        endpoint.notify.notify_waiters();
        true
    }

    fn free_port(&mut self, ip: std::net::IpAddr) -> Option<u16> {
        let span = usize::from(EPHEMERAL.end() - EPHEMERAL.start()) + 1;
        for _ in 0..span {
            let port = self.next_port;
            self.next_port = if port == *EPHEMERAL.end() {
                *EPHEMERAL.start()
            } else {
                port + 1
            };
            if !self.endpoints.contains_key(&SocketAddr::new(ip, port)) {
                return Some(port);
            }
        }
        None
    }
}

impl MemNetwork {
    /// An empty network without faults.
    pub fn new() -> MemNetwork {
        MemNetwork::default()
    }

    /// An empty network whose links all apply `faults` (each link's
    /// generator seeded from `faults.seed` and the link's two addresses).
    /// Out-of-range settings are clamped (see [`FaultConfig::clamped`]).
    pub fn with_faults(faults: FaultConfig) -> MemNetwork {
        let net = MemNetwork::new();
        net.set_default_faults(faults);
        net
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-done in
        // a way that matters to a test network; keep going.
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets the faults of every link not configured with
    /// [`MemNetwork::set_link_faults`], now and later; existing links restart
    /// their generators. Out-of-range settings are clamped (see
    /// [`FaultConfig::clamped`]).
    pub fn set_default_faults(&self, faults: FaultConfig) {
        let faults = faults.clamped();
        let mut state = self.state();
        for (to, incoming) in state.links.iter_mut() {
            for (from, link) in incoming.iter_mut().filter(|(_, l)| !l.explicit) {
                link.shaper
                    .set_config(faults.clone().seed(link_seed(faults.seed, *from, *to)));
            }
        }
        state.default_faults = faults;
    }

    /// Sets the faults of datagrams from `from` to `to` (one direction; the
    /// generator is seeded with `faults.seed` as is). The link need not
    /// be in use yet. Out-of-range settings are clamped (see
    /// [`FaultConfig::clamped`]).
    pub fn set_link_faults(&self, from: SocketAddr, to: SocketAddr, faults: FaultConfig) {
        let mut state = self.state();
        let link = state.link(from, to);
        link.shaper.set_config(faults.clamped());
        link.explicit = true;
    }

    /// The most datagrams queued per link.
    pub fn queue_limit(&self) -> usize {
        self.state().queue_limit
    }

    /// Sets the most datagrams queued per link (for links created from now on).
    pub fn set_queue_limit(&self, limit: usize) {
        self.state().queue_limit = limit.max(1);
    }

    /// Binds a socket to `addr`; port 0 picks a free port on that IP.
    ///
    /// # Errors
    /// [`io::ErrorKind::AddrInUse`] when a live socket has `addr`, or when
    /// no port is free.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<MemSocket> {
        let mut state = self.state();
        let addr = if addr.port() == 0 {
            let port = state
                .free_port(addr.ip())
                .ok_or_else(|| io::Error::new(io::ErrorKind::AddrInUse, "no free port"))?;
            SocketAddr::new(addr.ip(), port)
        } else {
            addr
        };
        if state.endpoints.contains_key(&addr) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{addr} is in use"),
            ));
        }
        let generation = state.next_generation;
        state.next_generation += 1;
        let notify = Arc::new(Notify::new());
        state.endpoints.insert(
            addr,
            Endpoint {
                generation,
                notify: notify.clone(),
            },
        );
        Ok(MemSocket {
            net: self.clone(),
            addr,
            generation,
            notify,
        })
    }

    /// Unbinds `addr` as if its process crashed: the socket bound there
    /// fails every later call, datagrams queued for it are lost. Returns
    /// whether something was bound.
    pub fn unbind(&self, addr: SocketAddr) -> bool {
        self.state().unbind(addr)
    }

    /// A crash and restart of the endpoint at `addr`: [`MemNetwork::unbind`]
    /// then [`MemNetwork::bind`] on the same address. The links keep their
    /// generators, so a seeded test stays repeatable across the restart.
    ///
    /// # Errors
    /// As [`MemNetwork::bind`].
    pub fn restart(&self, addr: SocketAddr) -> io::Result<MemSocket> {
        self.unbind(addr);
        self.bind(addr)
    }

    /// Whether a live socket has `addr`.
    pub fn is_bound(&self, addr: SocketAddr) -> bool {
        self.state().endpoints.contains_key(&addr)
    }

    /// The counters of the link from `from` to `to` (zero if it never carried
    /// anything).
    pub fn link_stats(&self, from: SocketAddr, to: SocketAddr) -> FaultStats {
        let state = self.state();
        state
            .links
            .get(&to)
            .and_then(|incoming| incoming.get(&from))
            .map(|l| l.counters.snapshot())
            .unwrap_or_default()
    }

    /// The counters of the whole network.
    pub fn stats(&self) -> MemStats {
        let state = self.state();
        let links = state
            .links
            .values()
            .flat_map(|incoming| incoming.values())
            .fold(FaultStats::default(), |sum, l| {
                sum.add(&l.counters.snapshot())
            });
        MemStats {
            links,
            unroutable: state.unroutable,
        }
    }

    fn send(
        &self,
        from: SocketAddr,
        generation: u64,
        buf: &[u8],
        to: SocketAddr,
    ) -> io::Result<usize> {
        if buf.len() > MAX_DATAGRAM {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "datagram too large",
            ));
        }
        let mut state = self.state();
        if state.endpoints.get(&from).map(|e| e.generation) != Some(generation) {
            return Err(closed());
        }
        let Some(notify) = state.endpoints.get(&to).map(|e| e.notify.clone()) else {
            state.unroutable += 1;
            tracing::trace!(%from, %to, "mem network: nobody bound at the target, datagram lost");
            return Ok(buf.len());
        };
        let now = Instant::now();
        state
            .link(from, to)
            .shaper
            .push(now, Bytes::copy_from_slice(buf));
        drop(state);
        notify.notify_waiters();
        Ok(buf.len())
    }

    /// Delivers the next due datagram for `to` into `buf`, or says when to
    /// look again.
    fn try_recv(
        &self,
        to: SocketAddr,
        generation: u64,
        buf: &mut [u8],
    ) -> io::Result<Result<(usize, SocketAddr), Option<Instant>>> {
        let mut state = self.state();
        if state.endpoints.get(&to).map(|e| e.generation) != Some(generation) {
            return Err(closed());
        }
        let Some(incoming) = state.links.get_mut(&to) else {
            return Ok(Err(None));
        };
        let now = Instant::now();
        let mut best: Option<((Instant, u64), SocketAddr)> = None;
        for (from, link) in incoming.iter_mut() {
            if let Some(key) = link.shaper.ready_at(now) {
                if best.is_none_or(|(b, _)| key < b) {
                    best = Some((key, *from));
                }
            }
        }
        if let Some((_, from)) = best {
            if let Some(datagram) = incoming
                .get_mut(&from)
                .and_then(|l| l.shaper.pop_ready(now))
            {
                let n = datagram.len().min(buf.len());
                buf[..n].copy_from_slice(&datagram[..n]);
                return Ok(Ok((n, from)));
            }
        }
        Ok(Err(incoming
            .values()
            .filter_map(|l| l.shaper.next_deadline())
            .min()))
    }
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "socket was unbound from the in-memory network",
    )
}

/// A socket of a [`MemNetwork`]. Dropping it unbinds its address (unless
/// the address was restarted since, in which case the new socket stays).
#[derive(Debug)]
pub struct MemSocket {
    net: MemNetwork,
    addr: SocketAddr,
    generation: u64,
    notify: Arc<Notify>,
}

impl MemSocket {
    /// The network this socket belongs to.
    pub fn network(&self) -> &MemNetwork {
        &self.net
    }

    /// The bound address (same as [`DatagramSocket::local_addr`], infallible).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MemSocket {
    fn drop(&mut self) {
        let mut state = self.net.state();
        if state.endpoints.get(&self.addr).map(|e| e.generation) == Some(self.generation) {
            state.unbind(self.addr);
        }
    }
}

impl DatagramSocket for MemSocket {
    /// Never blocks; a datagram lost by the faults or sent to nobody still
    /// counts as sent.
    ///
    /// # Errors
    /// [`io::ErrorKind::NotConnected`] once this socket was unbound;
    /// [`io::ErrorKind::InvalidInput`] for a datagram above 65,535 bytes.
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        self.net.send(self.addr, self.generation, buf, target)
    }

    /// # Errors
    /// [`io::ErrorKind::NotConnected`] once this socket was unbound.
    ///
    /// # Cancel safety
    /// Cancel safe: a datagram is taken from the queue only in the same
    /// step that returns it.
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Register before looking, so a send in between is not missed.
            notified.as_mut().enable();
            match self.net.try_recv(self.addr, self.generation, buf)? {
                Ok(received) => return Ok(received),
                Err(Some(deadline)) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(deadline) => {}
                    }
                }
                Err(None) => notified.await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}
