//! Transports. A datagram transport is anything that implements
//! [`DatagramSocket`]: a real UDP socket ([`tokio::net::UdpSocket`]) or the
//! in-memory network of [`mem`] (with its own loss, duplication, reordering
//! and delay, for unit tests). The UDP server and client are generic over it.

pub mod mem;
pub mod tcp;

use std::future::Future;
use std::io;
use std::net::SocketAddr;

/// A datagram socket: UDP or the in-memory network.
///
/// Both methods take `&self`, so one socket can be shared by a receiving
/// task and any number of sending tasks.
pub trait DatagramSocket: Send + Sync + 'static {
    /// Sends one datagram to `target`.
    ///
    /// # Errors
    /// When the socket cannot send (the in-memory network never fails a
    /// send: lost datagrams are lost silently, as on a real network).
    fn send_to(&self, buf: &[u8], target: SocketAddr) -> impl Future<Output = io::Result<usize>> + Send;

    /// Receives one datagram; returns its length and sender. A datagram
    /// longer than `buf` is truncated (as UDP does).
    ///
    /// # Errors
    /// When the socket is closed or broken.
    ///
    /// # Cancel safety
    /// Cancel safe: no datagram is lost when the future is dropped.
    fn recv_from(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;

    /// The address this socket is bound to.
    ///
    /// # Errors
    /// When the OS cannot tell.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

impl DatagramSocket for tokio::net::UdpSocket {
    fn send_to(&self, buf: &[u8], target: SocketAddr) -> impl Future<Output = io::Result<usize>> + Send {
        tokio::net::UdpSocket::send_to(self, buf, target)
    }

    fn recv_from(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
        tokio::net::UdpSocket::recv_from(self, buf)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::UdpSocket::local_addr(self)
    }
}
