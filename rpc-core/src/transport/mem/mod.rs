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
//!
//! # Hosts
//!
//! Besides the faults of each link, whole hosts (the IP address of a
//! socket: every port on it) can be cut apart and held, as a test of a
//! cluster needs:
//! - [`MemNetwork::partition`] cuts every host of one side from every host
//!   of the other, both ways; [`MemNetwork::isolate`] cuts one host from
//!   every other. A datagram across a cut is lost (counted as `dropped`
//!   and `blackholed` on its link), and so is one queued on a link that
//!   was cut before it fell due. Cuts add up until [`MemNetwork::heal`].
//! - [`MemNetwork::hold`] delays everything to and from a host until
//!   [`MemNetwork::release`]: datagrams are queued (and shaped by their
//!   link's faults) but not delivered, then delivered in order on release
//!   (as far as the link's queue limit kept them). A held host is a paused
//!   process, or a long GC pause, as its peers see it.
//! - [`MemNetwork::heal`] lifts every cut and isolation and releases every
//!   held host; the links keep their own faults.
//!
//! Datagrams between two sockets of the same host are never cut (a held
//! host holds them too).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use rpc_core::transport::{mem::MemNetwork, DatagramSocket};
//! use std::net::IpAddr;
//!
//! let net = MemNetwork::new();
//! let (a, b) = (net.bind("10.0.0.1:1".parse()?)?, net.bind("10.0.0.2:1".parse()?)?);
//! let (ha, hb): (IpAddr, IpAddr) = ("10.0.0.1".parse()?, "10.0.0.2".parse()?);
//! net.partition(&[ha], &[hb]);
//! a.send_to(b"lost", b.addr()).await?;
//! net.heal();
//! net.hold(hb);
//! a.send_to(b"held", b.addr()).await?; // queued until b's host is released
//! net.release(hb);
//! let mut buf = [0u8; 8];
//! let (n, _) = b.recv_from(&mut buf).await?;
//! assert_eq!(&buf[..n], b"held");
//! assert_eq!(net.link_stats(a.addr(), b.addr()).blackholed, 1);
//! # Ok(()) }
//! ```

use super::DatagramSocket;
use crate::fault::shaper::Shaper;
use crate::fault::{FaultConfig, FaultCounters, FaultStats};
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
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
    /// Pairs of hosts cut apart ([`MemNetwork::partition`]), both orders.
    cuts: HashSet<(IpAddr, IpAddr)>,
    /// Hosts cut from every other ([`MemNetwork::isolate`]).
    isolated: HashSet<IpAddr>,
    /// Hosts whose datagrams wait ([`MemNetwork::hold`]).
    held: HashSet<IpAddr>,
}

/// Whether datagrams between hosts `a` and `b` are cut.
fn is_cut(
    cuts: &HashSet<(IpAddr, IpAddr)>,
    isolated: &HashSet<IpAddr>,
    a: IpAddr,
    b: IpAddr,
) -> bool {
    a != b && (isolated.contains(&a) || isolated.contains(&b) || cuts.contains(&(a, b)))
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
            cuts: HashSet::new(),
            isolated: HashSet::new(),
            held: HashSet::new(),
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
        let cut = is_cut(&self.cuts, &self.isolated, from.ip(), to.ip());
        self.links
            .entry(to)
            .or_default()
            .entry(from)
            .or_insert_with(|| {
                let counters = Arc::new(FaultCounters::default());
                let config = faults.clone().seed(link_seed(faults.seed, from, to));
                let mut shaper = Shaper::new(config, limit, counters.clone());
                shaper.set_blackhole(cut);
                Link {
                    shaper,
                    counters,
                    explicit: false,
                }
            })
    }

    /// Puts every link's blackhole in line with the cuts between hosts.
    fn apply_cuts(&mut self) {
        let State {
            links,
            cuts,
            isolated,
            ..
        } = self;
        for (to, incoming) in links.iter_mut() {
            for (from, link) in incoming.iter_mut() {
                link.shaper
                    .set_blackhole(is_cut(cuts, isolated, from.ip(), to.ip()));
            }
        }
    }

    /// Wakes every receiver (held datagrams may have become deliverable).
    fn wake_all(&self) {
        for endpoint in self.endpoints.values() {
            endpoint.notify.notify_waiters();
        }
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

    /// Cuts every host of `side_a` from every host of `side_b`, both ways,
    /// in addition to the cuts already made (see the module docs: datagrams
    /// across a cut are lost, also those already queued). The hosts need
    /// not have sockets yet; a host on both sides is not cut from itself.
    pub fn partition(&self, side_a: &[IpAddr], side_b: &[IpAddr]) {
        let mut state = self.state();
        for &a in side_a {
            for &b in side_b.iter().filter(|&&b| b != a) {
                state.cuts.insert((a, b));
                state.cuts.insert((b, a));
            }
        }
        state.apply_cuts();
        tracing::debug!(?side_a, ?side_b, "mem network: partition");
    }

    /// Cuts `host` from every other host, also those that bind later,
    /// until [`MemNetwork::heal`].
    pub fn isolate(&self, host: IpAddr) {
        let mut state = self.state();
        state.isolated.insert(host);
        state.apply_cuts();
        tracing::debug!(%host, "mem network: host isolated");
    }

    /// Whether datagrams between hosts `a` and `b` are cut (by a partition
    /// or an isolation).
    pub fn is_cut(&self, a: IpAddr, b: IpAddr) -> bool {
        let state = self.state();
        is_cut(&state.cuts, &state.isolated, a, b)
    }

    /// Holds everything to and from `host` (every port of it) until
    /// [`MemNetwork::release`] or [`MemNetwork::heal`]: datagrams are
    /// queued on their links, shaped by the links' faults, and not
    /// delivered; sockets of the host receive nothing.
    pub fn hold(&self, host: IpAddr) {
        self.state().held.insert(host);
        tracing::debug!(%host, "mem network: host held");
    }

    /// Delivers what was held for and from `host`, in order, and lets its
    /// traffic flow again. Returns whether it was held.
    pub fn release(&self, host: IpAddr) -> bool {
        let mut state = self.state();
        let was = state.held.remove(&host);
        state.wake_all();
        tracing::debug!(%host, was, "mem network: host released");
        was
    }

    /// Whether `host` is held.
    pub fn is_held(&self, host: IpAddr) -> bool {
        self.state().held.contains(&host)
    }

    /// Lifts every partition and isolation and releases every held host.
    /// The links' own faults ([`MemNetwork::set_link_faults`],
    /// [`MemNetwork::set_default_faults`]) stay.
    pub fn heal(&self) {
        let mut state = self.state();
        state.cuts.clear();
        state.isolated.clear();
        state.held.clear();
        state.apply_cuts();
        state.wake_all();
        tracing::debug!("mem network: healed");
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
        // A held host receives nothing; `release` wakes it.
        if state.held.contains(&to.ip()) {
            return Ok(Err(None));
        }
        let State { links, held, .. } = &mut *state;
        let Some(incoming) = links.get_mut(&to) else {
            return Ok(Err(None));
        };
        let now = Instant::now();
        let mut best: Option<((Instant, u64), SocketAddr)> = None;
        for (from, link) in incoming.iter_mut() {
            if held.contains(&from.ip()) {
                continue;
            }
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
            .iter()
            .filter(|(from, _)| !held.contains(&from.ip()))
            .filter_map(|(_, l)| l.shaper.next_deadline())
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

#[cfg(test)]
mod tests;
