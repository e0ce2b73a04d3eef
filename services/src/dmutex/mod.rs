//! Distributed mutual exclusion among N peer processes: the five classic
//! algorithms, their messages the calls of `idl/dmutex.idl` (package
//! `dmutex.v1`).
//!
//! Every peer is a server of the framework (one UDP door) and a client of
//! the others. A [`Peer`] offers the same two operations whatever the
//! algorithm: [`Peer::enter`] (waits until this peer is in the critical
//! section) and [`Peer::exit`]. [`start_local`] starts a group of N peers
//! in this process, each with its own socket on loopback.
//!
//! | algorithm | module | messages per entry (theory) | synchronisation delay |
//! |---|---|---|---|
//! | central server | [`central`] | 3 (request, grant, release) | 2 messages |
//! | token ring | [`ring`] | 1 to unbounded | 1 to N-1 messages |
//! | Ricart–Agrawala | [`ricart`] | 2(N-1) | 1 message |
//! | Lamport | [`lamport`] | 3(N-1) | 1 message |
//! | Maekawa | [`maekawa`] | 3(K-1) with voting sets of K (about 3 sqrt N), up to about 5(K-1) under contention | 2 messages |
//!
//! **What is counted.** Each peer counts the messages of the algorithm
//! that it sends ([`PeerStats::messages`]): a request, a grant, a token, a
//! permission, a REPLY, a release, a vote. Where the algorithm's message
//! is an answer (the coordinator's grant, Ricart–Agrawala's deferred
//! permission, Lamport's REPLY) it is the reply of the call that carried
//! the request, and the replying peer counts it. The other calls' replies
//! only acknowledge receipt (they make the channel reliable, which the
//! theory assumes) and are not counted; neither are retransmissions. A
//! message to oneself (Maekawa's voter that is also the candidate) is a
//! function call, not a message. The central coordinator is hosted by
//! peer 0, whose own requests also go to it by call, so every entry costs
//! the same three messages.
//!
//! **Synchronisation delay** (the time from one peer's exit to the next
//! peer's entry, while that one was waiting) is measured by
//! [`monitor::CsMonitor`], which also checks mutual exclusion; [`workload`]
//! drives a group and reports both with the message counts. Peers in
//! separate processes (the `dmutex-peer` binary) share a [`record`] file
//! instead, checked afterwards.
//!
//! None of the algorithms tolerates a crashed peer (that is what the lock
//! server of [`crate::mutex`] with leases is for): a peer that stops
//! answering makes the others' calls fail with [`DmutexError::Peer`].
//! Mutual exclusion still holds (tested with peer 0 SIGKILLed among five
//! processes); what stops is progress:
//! - central server, coordinator dead: a release to it fails once its
//!   retransmissions go unanswered; a waiting request is not answered
//!   until its call's deadline (a minute); nobody enters again;
//! - Lamport, Ricart–Agrawala: every entry needs every peer's answer, so
//!   nobody enters again;
//! - token ring: the dead peer is skipped and left out of later passes,
//!   and the others go on, unless the token died with it;
//! - Maekawa: a candidate whose voting set holds the dead peer never gets
//!   its vote; the others enter while their voters live.

pub mod central;
pub mod lamport;
pub mod maekawa;
pub mod monitor;
pub mod record;
pub mod ricart;
pub mod ring;
pub mod workload;

use rpc_core::client::UdpChannel;
use rpc_core::server::{ServerError, ServerHandle};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Largest group [`start_local`] starts.
pub const MAX_PEERS: usize = 64;

/// Handler slots for the calls that wait (a deferred grant or permission):
/// a pool of their own, so that waiting handlers never take the slots of
/// the messages that end their wait.
pub const WAITING_SLOTS: usize = 1024;

/// The five algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// A coordinator grants the critical section in arrival order.
    Central,
    /// A token passed around a ring; its holder may enter.
    TokenRing,
    /// Multicast requests; permissions deferred by earlier requesters.
    RicartAgrawala,
    /// Request queues ordered by Lamport timestamps; replies; releases.
    Lamport,
    /// Voting sets, with inquire and relinquish against deadlock.
    Maekawa,
}

impl Algorithm {
    /// Every algorithm, in the order of the theory.
    pub const ALL: [Algorithm; 5] = [
        Algorithm::Central,
        Algorithm::TokenRing,
        Algorithm::RicartAgrawala,
        Algorithm::Lamport,
        Algorithm::Maekawa,
    ];

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Central => "central server",
            Algorithm::TokenRing => "token ring",
            Algorithm::RicartAgrawala => "Ricart-Agrawala",
            Algorithm::Lamport => "Lamport",
            Algorithm::Maekawa => "Maekawa",
        }
    }

    /// The messages per entry the theory predicts for `n` peers without
    /// contention: the formula, and its value when it has one (the token
    /// ring has none: 1 to unbounded). Maekawa's is `3(K-1)` for the
    /// voting sets [`maekawa::voting_sets`] builds (K their largest size;
    /// a peer's own vote costs no message).
    pub fn theory(self, n: usize) -> (String, Option<f64>) {
        let m = n.saturating_sub(1) as f64;
        match self {
            Algorithm::Central => ("3".into(), Some(3.0)),
            Algorithm::TokenRing => ("1 to unbounded".into(), None),
            Algorithm::RicartAgrawala => (format!("2(N-1) = {}", 2.0 * m), Some(2.0 * m)),
            Algorithm::Lamport => (format!("3(N-1) = {}", 3.0 * m), Some(3.0 * m)),
            Algorithm::Maekawa => {
                let k = maekawa::voting_sets(n)
                    .iter()
                    .map(Vec::len)
                    .max()
                    .unwrap_or(1);
                let v = 3.0 * (k as f64 - 1.0);
                (
                    format!(
                        "3(K-1) = {v}, K = {k} (3 sqrt N = {:.1})",
                        3.0 * (n as f64).sqrt()
                    ),
                    Some(v),
                )
            }
        }
    }

    /// The synchronisation delay of the theory, in messages.
    pub fn sync_delay_theory(self) -> &'static str {
        match self {
            Algorithm::Central | Algorithm::Maekawa => "2",
            Algorithm::TokenRing => "1 to N-1",
            Algorithm::RicartAgrawala | Algorithm::Lamport => "1",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What went wrong in a group of peers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DmutexError {
    /// A peer's server could not be started.
    #[error("peer {peer}: cannot serve")]
    Serve {
        /// The peer.
        peer: u32,
        /// Why.
        #[source]
        source: Box<ServerError>,
    },
    /// A socket to a peer could not be made.
    #[error("cannot reach peer {peer} at {addr}")]
    Connect {
        /// The peer.
        peer: u32,
        /// Its address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: Box<rpc_core::Error>,
    },
    /// A message to a peer was not delivered (or its answer was an error):
    /// the algorithm cannot go on without it.
    #[error("peer {peer}: {detail}")]
    Peer {
        /// The peer.
        peer: u32,
        /// What happened.
        detail: String,
    },
    /// `enter` while already inside or asking, `exit` while not inside,
    /// or an operation before the peer knows the others.
    #[error("{0}")]
    State(&'static str),
    /// A group of this size is not supported.
    #[error("a group of {0} peers (1 to {MAX_PEERS})")]
    GroupSize(usize),
}

/// How the peers of a group behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerConfig {
    /// How long a ring peer that does not want the token keeps it before
    /// passing it on (default 1 ms): the token circulates while nobody
    /// wants it, as in the classic ring, at this pace.
    pub ring_idle_pass: Duration,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            ring_idle_pass: Duration::from_millis(1),
        }
    }
}

/// A peer's counters.
#[derive(Debug, Default)]
pub(crate) struct Meter {
    entries: AtomicU64,
    messages: AtomicU64,
}

impl Meter {
    pub(crate) fn sent(&self, messages: u64) {
        self.messages.fetch_add(messages, Ordering::Relaxed);
    }

    pub(crate) fn entered(&self) {
        self.entries.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a peer has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer.
    pub id: u32,
    /// Times it entered the critical section.
    pub entries: u64,
    /// Messages of the algorithm it sent (see the module docs).
    pub messages: u64,
}

/// Formats a failed member of a group call for [`DmutexError::Peer`].
pub(crate) fn member_failure<R: fmt::Debug, E: fmt::Debug>(
    outcome: &rpc_core::GroupOutcome<R, E>,
) -> Option<DmutexError> {
    let bad = outcome.members.iter().find(|m| !m.result.is_success())?;
    let peer = bad.member.parse().unwrap_or(u32::MAX);
    Some(DmutexError::Peer {
        peer,
        detail: format!("{:?}", bad.result),
    })
}

/// What a peer of the two timestamp algorithms (Ricart–Agrawala,
/// Lamport) holds alike: its id among `n`, its counters, its Lamport
/// clock, and the group stub `G` of the `n - 1` others, set once
/// connected.
#[derive(Debug)]
pub(crate) struct GroupPeer<G> {
    id: u32,
    n: usize,
    meter: Meter,
    clock: crate::clock::logical::Lamport,
    others: std::sync::OnceLock<G>,
}

impl<G> GroupPeer<G> {
    fn new(id: u32, n: usize) -> GroupPeer<G> {
        GroupPeer {
            id,
            n,
            meter: Meter::default(),
            clock: crate::clock::logical::Lamport::new(),
            others: std::sync::OnceLock::new(),
        }
    }

    /// Connects to the others among `clients` (one a peer, by id), through
    /// the group stub `stub` makes.
    fn connect(
        &self,
        clients: &[rpc_core::Client],
        stub: impl FnOnce(rpc_core::GroupClient) -> G,
    ) -> Result<(), DmutexError> {
        let group = others(self.id, self.n, clients)?;
        self.others
            .set(stub(group))
            .map_err(|_| DmutexError::State("the peer is already connected"))
    }

    /// The group stub of the others.
    fn others(&self) -> Result<&G, DmutexError> {
        self.others
            .get()
            .ok_or(DmutexError::State("the peer is not connected"))
    }

    /// Starts a request of this peer: when `idle` says the peer neither
    /// asks nor is inside, takes a timestamp and lets `record` write it
    /// into `state`, in one step, so that a request arriving meanwhile is
    /// judged against both. Returns the timestamp.
    ///
    /// # Errors
    /// [`DmutexError::State`] when the peer is not connected, or already
    /// asks or is inside (nothing changes then).
    fn begin<S>(
        &self,
        state: &tokio::sync::watch::Sender<S>,
        idle: impl FnOnce(&S) -> bool,
        record: impl FnOnce(&mut S, u64),
    ) -> Result<u64, DmutexError> {
        self.others()?;
        let mut timestamp = 0;
        let asked = state.send_if_modified(|s| {
            if !idle(s) {
                return false;
            }
            timestamp = self.clock.tick();
            record(s, timestamp);
            true
        });
        if asked {
            Ok(timestamp)
        } else {
            Err(DmutexError::State("already inside or asking"))
        }
    }

    /// Sends this peer's `Ask` for `timestamp` to each of the `n - 1`
    /// others through `call` (the method of the group stub), as one group
    /// call to all of them (counted), and waits for every answer.
    ///
    /// # Errors
    /// [`DmutexError::State`] when the peer is not connected;
    /// [`DmutexError::Peer`] naming the first member that failed.
    async fn to_all_others<R, E>(
        &self,
        timestamp: u64,
        call: impl FnOnce(&G, crate::proto::dmutex::v1::Ask) -> rpc_core::GroupCall<R, E>,
    ) -> Result<rpc_core::GroupOutcome<R, E>, DmutexError>
    where
        R: prost::Message + Default + Send + fmt::Debug + 'static,
        E: rpc_core::Raisable + fmt::Debug,
    {
        let ask = crate::proto::dmutex::v1::Ask {
            from: self.id,
            timestamp,
        };
        let call = call(self.others()?, ask);
        self.meter.sent(self.n as u64 - 1);
        let outcome = call.all().await;
        match member_failure(&outcome) {
            Some(e) => Err(e),
            None => Ok(outcome),
        }
    }
}

/// A group of every peer of `clients` (by id) but `me`, each member named
/// by its id.
pub(crate) fn others(
    me: u32,
    n: usize,
    clients: &[rpc_core::Client],
) -> Result<rpc_core::GroupClient, DmutexError> {
    if clients.len() != n {
        return Err(DmutexError::GroupSize(clients.len()));
    }
    let group = rpc_core::GroupClient::new();
    for (id, c) in clients.iter().enumerate() {
        if id != me as usize {
            group.add(id.to_string(), c.clone());
        }
    }
    Ok(group)
}

/// One algorithm's peer.
#[derive(Debug, Clone)]
enum Node {
    Central(Arc<central::CentralPeer>),
    Ring(Arc<ring::RingPeer>),
    Ricart(Arc<ricart::RicartPeer>),
    Lamport(Arc<lamport::LamportPeer>),
    Maekawa(Arc<maekawa::MaekawaPeer>),
}

/// One peer of a group: enter and exit the critical section.
///
/// A peer asks for one entry at a time: `enter`, then `exit`, then `enter`
/// again. Clones share the peer.
#[derive(Debug, Clone)]
pub struct Peer {
    id: u32,
    algorithm: Algorithm,
    node: Node,
}

impl Peer {
    /// A peer `id` of `n` running `algorithm`, not yet serving nor knowing
    /// the others: serve it with [`Peer::serve`], then [`Peer::connect`].
    pub fn new(algorithm: Algorithm, id: u32, n: usize, config: PeerConfig) -> Peer {
        let node = match algorithm {
            Algorithm::Central => Node::Central(Arc::new(central::CentralPeer::new(id))),
            Algorithm::TokenRing => Node::Ring(Arc::new(ring::RingPeer::new(id, n, config))),
            Algorithm::RicartAgrawala => Node::Ricart(Arc::new(ricart::RicartPeer::new(id, n))),
            Algorithm::Lamport => Node::Lamport(Arc::new(lamport::LamportPeer::new(id, n))),
            Algorithm::Maekawa => Node::Maekawa(Arc::new(maekawa::MaekawaPeer::new(id, n))),
        };
        Peer {
            id,
            algorithm,
            node,
        }
    }

    /// Its id (0 to N-1).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Its algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Serves the peer's algorithm service on UDP at `addr` (the calls
    /// that wait in a pool of [`WAITING_SLOTS`] handler slots).
    ///
    /// # Errors
    /// [`DmutexError::Serve`] when the address cannot be bound.
    pub async fn serve(&self, addr: &str) -> Result<ServerHandle, DmutexError> {
        let builder = rpc_core::server::Server::builder();
        let builder = match &self.node {
            Node::Central(p) => builder
                .method_concurrency("dmutex.v1.Central", "Acquire", WAITING_SLOTS)
                .add_service(crate::proto::dmutex::v1::CentralServer::from_arc(p.clone())),
            Node::Ring(p) => builder.add_service(
                crate::proto::dmutex::v1::TokenRingServer::from_arc(p.clone()),
            ),
            Node::Ricart(p) => builder
                .method_concurrency("dmutex.v1.RicartAgrawala", "Request", WAITING_SLOTS)
                .add_service(crate::proto::dmutex::v1::RicartAgrawalaServer::from_arc(
                    p.clone(),
                )),
            Node::Lamport(p) => builder.add_service(
                crate::proto::dmutex::v1::LamportQueueServer::from_arc(p.clone()),
            ),
            Node::Maekawa(p) => {
                builder.add_service(crate::proto::dmutex::v1::MaekawaServer::from_arc(p.clone()))
            }
        };
        builder
            .serve_udp(addr)
            .await
            .map_err(|source| DmutexError::Serve {
                peer: self.id,
                source: Box::new(source),
            })
    }

    /// Tells the peer where every peer of the group (itself included) is,
    /// by id, and starts it (the ring's peer 0 takes the token).
    ///
    /// # Errors
    /// [`DmutexError::Connect`] when a socket cannot be made;
    /// [`DmutexError::GroupSize`] when `addrs` is not the group.
    pub async fn connect(&self, addrs: &[SocketAddr]) -> Result<(), DmutexError> {
        let mut channels = Vec::with_capacity(addrs.len());
        for (i, &addr) in addrs.iter().enumerate() {
            let peer = u32::try_from(i).unwrap_or(u32::MAX);
            let channel =
                UdpChannel::connect(addr)
                    .await
                    .map_err(|source| DmutexError::Connect {
                        peer,
                        addr,
                        source: Box::new(source),
                    })?;
            channels.push(rpc_core::Client::new(channel));
        }
        match &self.node {
            Node::Central(p) => p.connect(&channels),
            Node::Ring(p) => p.connect(channels),
            Node::Ricart(p) => p.connect(&channels),
            Node::Lamport(p) => p.connect(&channels),
            Node::Maekawa(p) => p.connect(channels),
        }
    }

    /// Waits until this peer is in the critical section.
    ///
    /// # Errors
    /// [`DmutexError::Peer`] when a message the algorithm needs was not
    /// delivered; [`DmutexError::State`] when already inside or asking.
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped `enter` may leave the request standing
    /// at the other peers (the algorithms have no withdrawal).
    pub async fn enter(&self) -> Result<(), DmutexError> {
        match &self.node {
            Node::Central(p) => p.enter().await,
            Node::Ring(p) => p.enter().await,
            Node::Ricart(p) => p.enter().await,
            Node::Lamport(p) => p.enter().await,
            Node::Maekawa(p) => p.enter().await,
        }
    }

    /// Leaves the critical section.
    ///
    /// # Errors
    /// [`DmutexError::State`] when not inside; [`DmutexError::Peer`] when
    /// a release was not delivered.
    pub async fn exit(&self) -> Result<(), DmutexError> {
        match &self.node {
            Node::Central(p) => p.exit().await,
            Node::Ring(p) => p.exit().await,
            Node::Ricart(p) => p.exit(),
            Node::Lamport(p) => p.exit().await,
            Node::Maekawa(p) => p.exit().await,
        }
    }

    /// Its counters.
    pub fn stats(&self) -> PeerStats {
        let meter = match &self.node {
            Node::Central(p) => &p.meter,
            Node::Ring(p) => &p.meter,
            Node::Ricart(p) => &p.me.meter,
            Node::Lamport(p) => &p.me.meter,
            Node::Maekawa(p) => &p.meter,
        };
        PeerStats {
            id: self.id,
            entries: meter.entries.load(Ordering::Relaxed),
            messages: meter.messages.load(Ordering::Relaxed),
        }
    }

    /// Stops what the peer does on its own (the ring's peer stops passing
    /// the token on).
    pub fn stop(&self) {
        if let Node::Ring(p) = &self.node {
            p.stop();
        }
    }
}

/// A group of peers in this process, each with its own UDP socket on
/// loopback.
#[derive(Debug)]
pub struct LocalGroup {
    algorithm: Algorithm,
    peers: Vec<Peer>,
    servers: Vec<ServerHandle>,
}

/// Starts `n` peers of `algorithm` on `127.0.0.1` (ports chosen by the
/// system) and connects them to each other.
///
/// # Errors
/// [`DmutexError::GroupSize`] for 0 or more than [`MAX_PEERS`] peers; the
/// errors of [`Peer::serve`] and [`Peer::connect`].
pub async fn start_local(
    algorithm: Algorithm,
    n: usize,
    config: PeerConfig,
) -> Result<LocalGroup, DmutexError> {
    if n == 0 || n > MAX_PEERS {
        return Err(DmutexError::GroupSize(n));
    }
    let mut peers = Vec::with_capacity(n);
    let mut servers = Vec::with_capacity(n);
    for id in 0..n {
        let peer = Peer::new(algorithm, u32::try_from(id).unwrap_or(u32::MAX), n, config);
        servers.push(peer.serve("127.0.0.1:0").await?);
        peers.push(peer);
    }
    let addrs: Vec<SocketAddr> = servers.iter().map(ServerHandle::local_addr).collect();
    for peer in &peers {
        peer.connect(&addrs).await?;
    }
    tracing::debug!(%algorithm, n, "dmutex: local group started");
    Ok(LocalGroup {
        algorithm,
        peers,
        servers,
    })
}

impl LocalGroup {
    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The peers, by id.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// The addresses of the peers' servers, by id.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(ServerHandle::local_addr).collect()
    }

    /// Entries and messages of every peer, summed.
    pub fn totals(&self) -> PeerStats {
        self.peers.iter().fold(PeerStats::default(), |a, p| {
            let s = p.stats();
            PeerStats {
                id: 0,
                entries: a.entries + s.entries,
                messages: a.messages + s.messages,
            }
        })
    }

    /// Stops the peers and their servers.
    pub async fn stop(self) {
        for p in &self.peers {
            p.stop();
        }
        for s in self.servers {
            if let Err(e) = s.shutdown(Duration::from_millis(200)).await {
                tracing::debug!(error = %e, "dmutex: peer server stopped with calls running");
            }
        }
    }
}
