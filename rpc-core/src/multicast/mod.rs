//! IP multicast as a transport of its own: a request is sent once, to a
//! group address in 224.0.0.0/4; every server that joined the group runs
//! it and answers by unicast; the caller gathers the answers.
//!
//! How the pieces fit:
//! - caller: [`MulticastClient`] (one UDP socket, one client session) is
//!   plugged into a [`GroupClient`](crate::GroupClient) with
//!   [`GroupClient::with_multicast`](crate::GroupClient::with_multicast);
//!   the group's completion policies, deadline and outcome apply unchanged.
//!   The caller either names the members it expects
//!   ([`GroupClient::add_multicast_member`](crate::GroupClient::add_multicast_member))
//!   or takes whoever answers by the deadline.
//! - server: a [`GroupSocket`] receives on the group (a socket bound to the
//!   group's port with `SO_REUSEADDR`/`SO_REUSEPORT`, joined to the group)
//!   and sends its answers through the server's own unicast socket (a
//!   [`SharedSocket`]), so that every member answers from an address of
//!   its own and acknowledgements (RRA) reach it there. Serve it with
//!   [`ServerHandle::serve_socket`](crate::server::ServerHandle::serve_socket);
//!   [`GroupSocket::leave`] stops the delivery.
//!
//! Per member the semantics are those of a unicast call: each server keeps
//! its own reply history keyed by the caller's session and request id, so
//! a re-send to the group (while expected members are missing) runs nothing
//! twice: members that already answered answer again from their history.
//!
//! Limits: a group copy carries incarnation 0, because the members have
//! different incarnations; so with [`Resend::Group`] (the default) a member
//! restarted between two copies of a non-idempotent request runs it as new
//! (the unicast protocol would answer "outcome unknown"). With
//! [`Resend::Missing`] the re-sends go by unicast to the expected members
//! still missing, each with its own last known incarnation, which closes
//! that gap (the first copy still goes to the group without one: a
//! restart before any answer cannot be seen). There is no PING before the
//! first non-idempotent request (it would have to reach every member).
//! Members are told apart by the address they answer from.
//!
//! ```no_run
//! # async fn demo(svc: impl rpc_core::Service) -> Result<(), Box<dyn std::error::Error>> {
//! use rpc_core::multicast::{GroupSocket, SharedSocket};
//! use rpc_core::server::Server;
//! use std::net::{Ipv4Addr, SocketAddrV4};
//!
//! let group = SocketAddrV4::new(Ipv4Addr::new(239, 1, 2, 3), 7400);
//! let unicast = SharedSocket::bind("127.0.0.1:0".parse()?).await?;
//! let server = Server::builder().add_service(svc).serve_socket(unicast.clone()).await?;
//! let membership = GroupSocket::join(group, Ipv4Addr::LOCALHOST, unicast)?;
//! server.serve_socket(membership.clone()).await?;
//! // ... later
//! membership.leave()?;
//! # Ok(()) }
//! ```

mod client;

pub use client::{MulticastClient, MulticastConfig, MulticastStats, Resend};

use crate::transport::DatagramSocket;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::UdpSocket;

/// A UDP socket shared by several users (a server's unicast door and its
/// [`GroupSocket`]s): cloning shares the socket.
#[derive(Debug, Clone)]
pub struct SharedSocket(Arc<UdpSocket>);

impl SharedSocket {
    /// Binds a UDP socket on `addr`.
    ///
    /// # Errors
    /// When the address cannot be bound.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub async fn bind(addr: SocketAddr) -> io::Result<SharedSocket> {
        Ok(SharedSocket(Arc::new(UdpSocket::bind(addr).await?)))
    }

    /// Shares an existing socket.
    pub fn new(socket: Arc<UdpSocket>) -> SharedSocket {
        SharedSocket(socket)
    }

    /// The socket underneath.
    pub fn socket(&self) -> &Arc<UdpSocket> {
        &self.0
    }
}

impl DatagramSocket for SharedSocket {
    fn send_to(
        &self,
        buf: &[u8],
        target: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        self.0.send_to(buf, target)
    }

    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
        self.0.recv_from(buf)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A server's membership of an IPv4 multicast group: receives what is sent
/// to the group, answers through the server's unicast socket.
///
/// As a [`DatagramSocket`]: `recv_from` reads the group socket, `send_to`
/// and `local_addr` use the unicast socket. Clones share the membership.
#[derive(Clone)]
pub struct GroupSocket {
    inner: Arc<GroupInner>,
}

struct GroupInner {
    group_socket: UdpSocket,
    reply: SharedSocket,
    group: SocketAddrV4,
    interface: Ipv4Addr,
    joined: AtomicBool,
    received: AtomicU64,
}

impl fmt::Debug for GroupSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupSocket")
            .field("group", &self.inner.group)
            .field("interface", &self.inner.interface)
            .field("reply", &self.inner.reply.local_addr().ok())
            .field("joined", &self.is_joined())
            .finish()
    }
}

impl GroupSocket {
    /// Joins `group` (address and port) on the interface with address
    /// `interface` (`127.0.0.1` for the loopback interface), with a socket
    /// bound to the group's address and port that other members on this
    /// host may bind too (`SO_REUSEADDR`, `SO_REUSEPORT`). Answers leave by
    /// `reply`.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] when `group` is not a multicast
    /// address; what the OS says when the socket cannot be created, bound
    /// or joined (for example no route for 224.0.0.0/4, or multicast off on
    /// the interface).
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn join(
        group: SocketAddrV4,
        interface: Ipv4Addr,
        reply: SharedSocket,
    ) -> io::Result<GroupSocket> {
        if !group.ip().is_multicast() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a multicast address", group.ip()),
            ));
        }
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        // Linux delivers a group's datagrams to every socket bound to its
        // port once any socket of the host joined it, unless told to
        // deliver only the groups this socket joined: without this, leaving
        // would not stop the delivery while another member is joined.
        #[cfg(target_os = "linux")]
        socket.set_multicast_all_v4(false)?;
        // Bound to the group address: only this group's datagrams arrive.
        socket.bind(&SocketAddr::V4(group).into())?;
        socket.join_multicast_v4(group.ip(), &interface)?;
        let group_socket = UdpSocket::from_std(socket.into())?;
        tracing::debug!(%group, %interface, "joined multicast group");
        Ok(GroupSocket {
            inner: Arc::new(GroupInner {
                group_socket,
                reply,
                group,
                interface,
                joined: AtomicBool::new(true),
                received: AtomicU64::new(0),
            }),
        })
    }

    /// Leaves the group: datagrams sent to it are no longer delivered here.
    ///
    /// # Errors
    /// What the OS says.
    pub fn leave(&self) -> io::Result<()> {
        if self.inner.joined.swap(false, Ordering::AcqRel) {
            self.inner
                .group_socket
                .leave_multicast_v4(*self.inner.group.ip(), self.inner.interface)?;
            tracing::debug!(group = %self.inner.group, "left multicast group");
        }
        Ok(())
    }

    /// Joins again after [`GroupSocket::leave`].
    ///
    /// # Errors
    /// What the OS says.
    pub fn rejoin(&self) -> io::Result<()> {
        if !self.inner.joined.swap(true, Ordering::AcqRel) {
            self.inner
                .group_socket
                .join_multicast_v4(*self.inner.group.ip(), self.inner.interface)?;
        }
        Ok(())
    }

    /// Whether the socket is a member of the group now.
    pub fn is_joined(&self) -> bool {
        self.inner.joined.load(Ordering::Acquire)
    }

    /// How many datagrams arrived through the group.
    pub fn received(&self) -> u64 {
        self.inner.received.load(Ordering::Relaxed)
    }

    /// The group.
    pub fn group(&self) -> SocketAddrV4 {
        self.inner.group
    }
}

impl DatagramSocket for GroupSocket {
    fn send_to(
        &self,
        buf: &[u8],
        target: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        self.inner.reply.0.send_to(buf, target)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let got = self.inner.group_socket.recv_from(buf).await;
        if got.is_ok() {
            self.inner.received.fetch_add(1, Ordering::Relaxed);
        }
        got
    }

    /// The unicast address the member answers from (its identity in the
    /// group).
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.reply.local_addr()
    }
}
