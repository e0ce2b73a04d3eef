//! A cluster's network: one fault proxy per directed link between named
//! members, so that a test partitions, isolates, slows and loses traffic
//! between nodes while they run.
//!
//! # Members and links
//!
//! A member is a *node*, which serves at an address ([`Net::add_node`]),
//! or a *client*, which only calls nodes ([`Net::add_client`]): the
//! clients of a test are a member too, so that a partition can cut them
//! from some nodes. For every member `x` and every node `y` there is one
//! proxy, the link `x -> y`, in front of `y`: `x` sends to
//! [`Net::addr`]`(x, y)` instead of `y`'s own address, and `y`'s answers to
//! what `x` sent come back through the same proxy. So a node's peers must
//! be given the proxies' addresses, not each other's:
//!
//! - nodes that need their peers' addresses at start get them from
//!   [`Net::addr`] after all members were added with the addresses they
//!   will listen on ([`reserve_udp_addr`] / [`reserve_tcp_addr`] pick free
//!   ports on loopback; start each node with
//!   [`NodeBuilder::listen`](crate::NodeBuilder::listen) on its address);
//! - nodes that need no peers (servers that only answer clients) are
//!   started first and added with the address they printed.
//!
//! A node restarted on the same address ([`Node::restart`](crate::Node::restart))
//! stays behind its proxies.
//!
//! # Faults
//!
//! Traffic from `x` to `y` is what `x` sends to `y` (through the link
//! `x -> y`) and what `x` answers to `y`'s requests (back through the link
//! `y -> x`). Each direction between two members has:
//!
//! - a cut: [`Net::partition`] cuts every member of one side from every
//!   member of the other, both ways; [`Net::isolate`] cuts one member from
//!   all others (also those added later). Cuts add up until [`Net::heal`].
//! - faults ([`LinkFaults`]: loss, duplication, reordering, delay):
//!   [`Net::set_default_faults`] for every direction, [`Net::set_link_faults`]
//!   for one, [`Net::set_node_faults`] for every direction to and from a
//!   member. [`Net::heal`] lifts the cuts and the per-link and per-node
//!   faults, back to the defaults.
//!
//! Over UDP (`Net::udp`, feature `udp`) each link is an
//! `rpc_core::fault::FaultProxy`: a cut is a loss of every datagram of the
//! direction (both directions cut: the proxy is blackholed, which also
//! drops what it still queued), faults are the proxy's faults, each
//! direction's generator seeded from the network's seed and the two names.
//! Over TCP ([`Net::tcp`]) each link is a [`TcpFaultProxy`]: a link is
//! blackholed when either direction is cut (a TCP connection carries both),
//! a delay holds every chunk for the range's upper bound (a stream keeps
//! its order), and loss, duplication and reordering are refused
//! ([`NetError::Unsupported`]): TCP repairs them below the application.
//!
//! Every control method is synchronous and returns once the proxies
//! apply the change to what they receive next; adding members is
//! asynchronous (it starts proxies) and needs a tokio runtime.
//!
//! ```
//! use rpc_testkit::{Net, LinkFaults};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! // Two TCP servers (any: here plain listeners) and a client.
//! let a = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let b = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let mut net = Net::tcp();
//! net.add_node("a", a.local_addr()?).await?;
//! net.add_node("b", b.local_addr()?).await?;
//! net.add_client("client").await?;
//! // "a" reaches "b" at this address, the client reaches "b" at another.
//! assert_ne!(net.addr("a", "b")?, net.addr("client", "b")?);
//! net.partition(&["a", "client"], &["b"])?;
//! assert!(net.is_cut("client", "b")? && !net.is_cut("client", "a")?);
//! net.set_node_faults("a", LinkFaults::none().delay(Duration::from_millis(5), Duration::from_millis(5)))?;
//! net.heal()?;
//! assert!(!net.is_cut("client", "b")?);
//! // A name the network does not know is an error that names it.
//! let err = net.isolate("c").unwrap_err();
//! assert!(err.to_string().contains("\"c\""), "{err}");
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```

#[cfg(feature = "udp")]
mod udp;

use crate::tcp_proxy::{Direction, TcpFaultProxy};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Faults of one direction of traffic between two members.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub struct LinkFaults {
    /// Probability that a datagram is lost (UDP only).
    pub loss: f64,
    /// Probability that a datagram is delivered twice (UDP only).
    pub duplicate: f64,
    /// Probability that a datagram is held back until a later one passed
    /// it (UDP only).
    pub reorder: f64,
    /// Shortest delay added to each datagram (or chunk).
    pub delay_min: Duration,
    /// Longest delay added to each datagram (or chunk).
    pub delay_max: Duration,
}

setters! {
    LinkFaults {
        /// Sets the loss probability.
        loss(probability: f64) => loss,
        /// Sets the duplication probability.
        duplicate(probability: f64) => duplicate,
        /// Sets the reordering probability.
        reorder(probability: f64) => reorder,
    }
}

impl LinkFaults {
    /// No faults.
    pub fn none() -> LinkFaults {
        LinkFaults::default()
    }

    /// Delays each datagram by a uniform draw between `min` and `max`
    /// (swapped if given the wrong way round).
    pub fn delay(mut self, min: Duration, max: Duration) -> LinkFaults {
        self.delay_min = min.min(max);
        self.delay_max = min.max(max);
        self
    }

    /// Whether these faults change nothing.
    pub fn is_none(&self) -> bool {
        self.loss <= 0.0 && self.duplicate <= 0.0 && self.reorder <= 0.0 && self.delay_max.is_zero()
    }

    fn validate(&self) -> Result<(), String> {
        for (name, p) in [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name} probability {p} is not within 0..=1"));
            }
        }
        Ok(())
    }
}

/// An error of a [`Net`]; each names the members concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// A name that is no member of the network.
    #[error("unknown node {node:?} (the network has: {})", known.join(", "))]
    UnknownNode {
        /// The name given.
        node: String,
        /// The members' names.
        known: Vec<String>,
    },
    /// A member of this name exists already.
    #[error("node {node:?}: the network already has a member of this name")]
    DuplicateName {
        /// The name given.
        node: String,
    },
    /// There is no link from `from` to `to`: `to` is a client (it serves
    /// nothing), or both are the same member.
    #[error("no link from {from:?} to {to:?}: {to:?} is a client or the same member")]
    NoLink {
        /// The sender.
        from: String,
        /// The receiver.
        to: String,
    },
    /// Faults a link of this network cannot apply.
    #[error("link {from:?} -> {to:?}: {what}")]
    Unsupported {
        /// The sender.
        from: String,
        /// The receiver.
        to: String,
        /// What cannot be done.
        what: &'static str,
    },
    /// Faults out of range.
    #[error("link {from:?} -> {to:?}: {what}")]
    InvalidFaults {
        /// The sender.
        from: String,
        /// The receiver.
        to: String,
        /// What is wrong.
        what: String,
    },
    /// A link's proxy could not be started or changed.
    #[error("link {from:?} -> {to:?}: proxy error")]
    Proxy {
        /// The sender.
        from: String,
        /// The receiver.
        to: String,
        /// What the proxy said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The state of one direction between two members, as applied to a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Way {
    pub(crate) cut: bool,
    pub(crate) faults: LinkFaults,
}

/// The proxy of one link.
#[derive(Debug)]
enum Proxy {
    #[cfg(feature = "udp")]
    Udp(Box<rpc_core::fault::FaultProxy>),
    Tcp(TcpFaultProxy),
}

impl Proxy {
    fn local_addr(&self) -> SocketAddr {
        match self {
            #[cfg(feature = "udp")]
            Proxy::Udp(p) => p.local_addr(),
            Proxy::Tcp(p) => p.local_addr(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    #[cfg(feature = "udp")]
    Udp,
    Tcp,
}

#[derive(Debug)]
struct Member {
    name: String,
    /// Where it serves; `None` for a client.
    addr: Option<SocketAddr>,
}

#[derive(Debug)]
struct Link {
    proxy: Proxy,
    /// What was last applied: (forward, back).
    applied: (Way, Way),
}

/// The network of a cluster: members, one proxy per link, cuts and faults
/// (see the module docs). Dropping it stops the proxies.
#[derive(Debug)]
pub struct Net {
    kind: Kind,
    /// Seeds the UDP links' generators.
    #[cfg_attr(not(feature = "udp"), allow(dead_code))]
    seed: u64,
    members: Vec<Member>,
    /// By (from, to); `to` is a node.
    links: BTreeMap<(String, String), Link>,
    /// Directed pairs cut by partitions.
    cuts: BTreeSet<(String, String)>,
    isolated: BTreeSet<String>,
    defaults: LinkFaults,
    /// Directed faults set since the last heal.
    faults: BTreeMap<(String, String), LinkFaults>,
}

/// A free address on loopback for a UDP node to listen on: bound to port 0,
/// read back and released. Another process may take the port before the
/// node binds it (the node then fails to start, with a clear error).
///
/// # Errors
/// When no socket can be bound.
pub fn reserve_udp_addr() -> std::io::Result<SocketAddr> {
    std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()
}

/// As [`reserve_udp_addr`], for a TCP node.
///
/// # Errors
/// When no socket can be bound.
pub fn reserve_tcp_addr() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()
}

impl Net {
    /// An empty network whose links are TCP fault proxies.
    pub fn tcp() -> Net {
        Net::empty(Kind::Tcp, 0)
    }

    fn empty(kind: Kind, seed: u64) -> Net {
        Net {
            kind,
            seed,
            members: Vec::new(),
            links: BTreeMap::new(),
            cuts: BTreeSet::new(),
            isolated: BTreeSet::new(),
            defaults: LinkFaults::none(),
            faults: BTreeMap::new(),
        }
    }

    /// The members' names, in the order they were added.
    pub fn members(&self) -> Vec<String> {
        self.members.iter().map(|m| m.name.clone()).collect()
    }

    /// The names of the members that serve (nodes), in the order added.
    pub fn nodes(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.addr.is_some())
            .map(|m| m.name.clone())
            .collect()
    }

    /// Adds a node that serves at `addr` (it need not run yet), with a
    /// link from every member to it and from it to every node.
    ///
    /// # Errors
    /// [`NetError::DuplicateName`]; [`NetError::Proxy`] when a proxy
    /// cannot start (then the node is not added).
    ///
    /// # Cancel safety
    /// Not cancel safe: cancelled, the node may be half added.
    pub async fn add_node(&mut self, name: &str, addr: SocketAddr) -> Result<(), NetError> {
        self.add(name, Some(addr)).await
    }

    /// Adds a client: a member that serves nothing, with a link from it to
    /// every node.
    ///
    /// # Errors
    /// As [`Net::add_node`].
    ///
    /// # Cancel safety
    /// As [`Net::add_node`].
    pub async fn add_client(&mut self, name: &str) -> Result<(), NetError> {
        self.add(name, None).await
    }

    async fn add(&mut self, name: &str, addr: Option<SocketAddr>) -> Result<(), NetError> {
        if self.member(name).is_some() {
            return Err(NetError::DuplicateName {
                node: name.to_owned(),
            });
        }
        let mut new = Vec::new();
        for other in &self.members {
            if let Some(upstream) = other.addr {
                new.push((name.to_owned(), other.name.clone(), upstream));
            }
            if let Some(upstream) = addr {
                new.push((other.name.clone(), name.to_owned(), upstream));
            }
        }
        let mut started = Vec::new();
        for (from, to, upstream) in new {
            let proxy = self.start_proxy(&from, &to, upstream).await?;
            started.push(((from, to), proxy));
        }
        self.members.push(Member {
            name: name.to_owned(),
            addr,
        });
        for (key, proxy) in started {
            tracing::debug!(from = %key.0, to = %key.1, addr = %proxy.local_addr(), "net: link added");
            self.links.insert(
                key,
                Link {
                    proxy,
                    applied: (Way::default(), Way::default()),
                },
            );
        }
        self.apply()
    }

    async fn start_proxy(
        &self,
        from: &str,
        to: &str,
        upstream: SocketAddr,
    ) -> Result<Proxy, NetError> {
        let error = |source: Box<dyn std::error::Error + Send + Sync>| NetError::Proxy {
            from: from.to_owned(),
            to: to.to_owned(),
            source,
        };
        match self.kind {
            #[cfg(feature = "udp")]
            Kind::Udp => udp::start(upstream)
                .await
                .map(|p| Proxy::Udp(Box::new(p)))
                .map_err(error),
            Kind::Tcp => TcpFaultProxy::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), upstream)
                .await
                .map(Proxy::Tcp)
                .map_err(|e| error(Box::new(e))),
        }
    }

    fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    fn known(&self, name: &str) -> Result<(), NetError> {
        match self.member(name) {
            Some(_) => Ok(()),
            None => Err(NetError::UnknownNode {
                node: name.to_owned(),
                known: self.members(),
            }),
        }
    }

    /// Where `from` sends to reach `to`: the address of the link's proxy.
    ///
    /// # Errors
    /// [`NetError::UnknownNode`], [`NetError::NoLink`].
    pub fn addr(&self, from: &str, to: &str) -> Result<SocketAddr, NetError> {
        self.known(from)?;
        self.known(to)?;
        self.links
            .get(&(from.to_owned(), to.to_owned()))
            .map(|l| l.proxy.local_addr())
            .ok_or_else(|| NetError::NoLink {
                from: from.to_owned(),
                to: to.to_owned(),
            })
    }

    /// The UDP proxy of the link `from -> to` (for its counters), if the
    /// network is over UDP and the link exists.
    #[cfg(feature = "udp")]
    pub fn udp_proxy(&self, from: &str, to: &str) -> Option<&rpc_core::fault::FaultProxy> {
        match &self.links.get(&(from.to_owned(), to.to_owned()))?.proxy {
            Proxy::Udp(p) => Some(p),
            Proxy::Tcp(_) => None,
        }
    }

    /// The TCP proxy of the link `from -> to` (for its counters), if the
    /// network is over TCP and the link exists.
    pub fn tcp_proxy(&self, from: &str, to: &str) -> Option<&TcpFaultProxy> {
        match &self.links.get(&(from.to_owned(), to.to_owned()))?.proxy {
            Proxy::Tcp(p) => Some(p),
            #[cfg(feature = "udp")]
            Proxy::Udp(_) => None,
        }
    }

    /// Cuts every member of `side_a` from every member of `side_b`, both
    /// ways, in addition to the cuts made before.
    ///
    /// # Errors
    /// [`NetError::UnknownNode`] for the first name that is no member
    /// (nothing is changed then); [`NetError::Proxy`].
    pub fn partition(&mut self, side_a: &[&str], side_b: &[&str]) -> Result<(), NetError> {
        for name in side_a.iter().chain(side_b) {
            self.known(name)?;
        }
        for a in side_a {
            for b in side_b.iter().filter(|b| *b != a) {
                self.cuts.insert(((*a).to_owned(), (*b).to_owned()));
                self.cuts.insert(((*b).to_owned(), (*a).to_owned()));
            }
        }
        tracing::info!(?side_a, ?side_b, "net: partition");
        self.apply()
    }

    /// Cuts `node` from every other member, also those added later, until
    /// [`Net::heal`].
    ///
    /// # Errors
    /// [`NetError::UnknownNode`]; [`NetError::Proxy`].
    pub fn isolate(&mut self, node: &str) -> Result<(), NetError> {
        self.known(node)?;
        self.isolated.insert(node.to_owned());
        tracing::info!(node, "net: isolated");
        self.apply()
    }

    /// Lifts every cut and every fault set by [`Net::set_link_faults`] and
    /// [`Net::set_node_faults`]: each direction is back to the defaults.
    ///
    /// # Errors
    /// [`NetError::Proxy`].
    pub fn heal(&mut self) -> Result<(), NetError> {
        self.cuts.clear();
        self.isolated.clear();
        self.faults.clear();
        tracing::info!("net: healed");
        self.apply()
    }

    /// Whether traffic from `from` to `to` is cut.
    ///
    /// # Errors
    /// [`NetError::UnknownNode`].
    pub fn is_cut(&self, from: &str, to: &str) -> Result<bool, NetError> {
        self.known(from)?;
        self.known(to)?;
        Ok(self.cut(from, to))
    }

    fn cut(&self, from: &str, to: &str) -> bool {
        from != to
            && (self.isolated.contains(from)
                || self.isolated.contains(to)
                || self.cuts.contains(&(from.to_owned(), to.to_owned())))
    }

    /// The faults of every direction not set otherwise, now and after
    /// every heal.
    ///
    /// # Errors
    /// [`NetError::InvalidFaults`], [`NetError::Unsupported`] (nothing is
    /// changed then); [`NetError::Proxy`].
    pub fn set_default_faults(&mut self, faults: LinkFaults) -> Result<(), NetError> {
        self.check_faults("*", "*", &faults)?;
        self.defaults = faults;
        self.apply()
    }

    /// The faults of traffic from `from` to `to` until [`Net::heal`].
    ///
    /// # Errors
    /// [`NetError::UnknownNode`], [`NetError::InvalidFaults`],
    /// [`NetError::Unsupported`] (nothing is changed then);
    /// [`NetError::Proxy`].
    pub fn set_link_faults(
        &mut self,
        from: &str,
        to: &str,
        faults: LinkFaults,
    ) -> Result<(), NetError> {
        self.known(from)?;
        self.known(to)?;
        self.check_faults(from, to, &faults)?;
        self.faults.insert((from.to_owned(), to.to_owned()), faults);
        tracing::info!(from, to, ?faults, "net: link faults");
        self.apply()
    }

    /// The faults of all traffic to and from `node`, until [`Net::heal`].
    ///
    /// # Errors
    /// As [`Net::set_link_faults`].
    pub fn set_node_faults(&mut self, node: &str, faults: LinkFaults) -> Result<(), NetError> {
        self.known(node)?;
        self.check_faults(node, "*", &faults)?;
        for other in self.members() {
            if other != node {
                self.faults.insert((node.to_owned(), other.clone()), faults);
                self.faults.insert((other, node.to_owned()), faults);
            }
        }
        tracing::info!(node, ?faults, "net: node faults");
        self.apply()
    }

    fn check_faults(&self, from: &str, to: &str, faults: &LinkFaults) -> Result<(), NetError> {
        faults.validate().map_err(|what| NetError::InvalidFaults {
            from: from.to_owned(),
            to: to.to_owned(),
            what,
        })?;
        if self.kind == Kind::Tcp
            && (faults.loss > 0.0 || faults.duplicate > 0.0 || faults.reorder > 0.0)
        {
            return Err(NetError::Unsupported {
                from: from.to_owned(),
                to: to.to_owned(),
                what: "a TCP link cannot lose, duplicate or reorder (TCP repairs them); use a cut or a delay",
            });
        }
        Ok(())
    }

    fn way(&self, from: &str, to: &str) -> Way {
        Way {
            cut: self.cut(from, to),
            faults: self
                .faults
                .get(&(from.to_owned(), to.to_owned()))
                .copied()
                .unwrap_or(self.defaults),
        }
    }

    /// Brings every proxy in line with the cuts and faults.
    fn apply(&mut self) -> Result<(), NetError> {
        #[cfg(feature = "udp")]
        let seed = self.seed;
        let keys: Vec<(String, String)> = self.links.keys().cloned().collect();
        for (from, to) in keys {
            let want = (self.way(&from, &to), self.way(&to, &from));
            let Some(link) = self.links.get_mut(&(from.clone(), to.clone())) else {
                continue;
            };
            if link.applied == want {
                continue;
            }
            match &link.proxy {
                #[cfg(feature = "udp")]
                Proxy::Udp(p) => {
                    udp::apply(p, want, seed, (&from, &to)).map_err(|e| NetError::Proxy {
                        from: from.clone(),
                        to: to.clone(),
                        source: e,
                    })?
                }
                Proxy::Tcp(p) => apply_tcp(p, want),
            }
            link.applied = want;
        }
        Ok(())
    }
}

fn apply_tcp(proxy: &TcpFaultProxy, (forward, back): (Way, Way)) {
    proxy.blackhole(forward.cut || back.cut);
    proxy.set_delay(Direction::ClientToServer, forward.faults.delay_max);
    proxy.set_delay(Direction::ServerToClient, back.faults.delay_max);
}
