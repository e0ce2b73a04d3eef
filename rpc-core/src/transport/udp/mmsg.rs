//! `recvmmsg(2)` without allocating: the one place in `rpc-core` that uses
//! `unsafe` (see the crate root).
//!
//! nix's safe wrapper needs its headers (`MultiHeaders`) made afresh for
//! every call: reusing them is unsound in practice, because the kernel
//! writes the used lengths back into `msg_controllen` and `msg_namelen`,
//! so a reused header offers no room for the `UDP_GRO` control message
//! after a call that carried none, and a coalesced run would arrive
//! without its segment size. Made afresh, they cost four allocations
//! (one zeroed) per receive: about 1,800 instructions a round trip, 7% of
//! a sequential UDP call (client and server both receive). Here the
//! headers live on the stack, are filled for each call, and are read back
//! only for the slots the kernel reports filled.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd};

/// Most slots one call offers (the caller offers the rest next time:
/// a full batch leaves the socket readable).
pub(super) const MAX_SLOTS: usize = 64;

/// Control-message room per slot, in 8-byte words: a `UDP_GRO` message (one
/// `int`) takes `CMSG_SPACE(4)` = 24 bytes on 64-bit Linux; 64 leave room
/// for anything else a socket option might add.
const CMSG_WORDS: usize = 8;

/// `UDP_GRO` from `linux/udp.h` (the `libc` crate defines it for Android
/// and uclibc only).
const UDP_GRO: libc::c_int = 104;

/// One filled slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Filled {
    /// Bytes received into the slot (at most the slot's length: longer
    /// datagrams are truncated, as `recv_from` truncates).
    pub(super) len: usize,
    /// The sender; `None` for an address family other than IP (which a UDP
    /// socket never reports).
    pub(super) from: Option<SocketAddr>,
    /// The segment size of a run coalesced by UDP GRO; `None` for a single
    /// datagram.
    pub(super) segment: Option<usize>,
}

/// One `recvmmsg` (`MSG_DONTWAIT`) into the first `offered` slots of
/// `slot_len` bytes of `buf` (at most [`MAX_SLOTS`]); calls `each` with the
/// index and [`Filled`] of every slot filled, in order, and returns how many
/// were filled.
///
/// # Errors
/// The system call's error (`WouldBlock` when nothing is queued).
pub(super) fn recvmmsg(
    socket: &impl AsFd,
    buf: &mut [u8],
    slot_len: usize,
    offered: usize,
    mut each: impl FnMut(usize, Filled),
) -> io::Result<usize> {
    let n = offered
        .min(MAX_SLOTS)
        .min(buf.len().checked_div(slot_len).unwrap_or(0));
    if n == 0 {
        return Ok(0);
    }
    let mut names = [const { MaybeUninit::<libc::sockaddr_storage>::uninit() }; MAX_SLOTS];
    let mut controls = [const { MaybeUninit::<[u64; CMSG_WORDS]>::uninit() }; MAX_SLOTS];
    let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_SLOTS];
    let mut headers = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_SLOTS];
    let slots = buf.chunks_exact_mut(slot_len);
    for (((slot, iov), (name, control)), header) in slots
        .zip(iovs.iter_mut())
        .zip(names.iter_mut().zip(controls.iter_mut()))
        .zip(headers.iter_mut())
        .take(n)
    {
        let iov = iov.write(libc::iovec {
            iov_base: slot.as_mut_ptr().cast(),
            iov_len: slot.len(),
        });
        // SAFETY: an all-zero `mmsghdr` is valid (null pointers, zero
        // lengths); every field the kernel reads is set below.
        let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
        h.msg_hdr.msg_name = name.as_mut_ptr().cast();
        h.msg_hdr.msg_namelen = socklen::<libc::sockaddr_storage>();
        h.msg_hdr.msg_iov = iov;
        h.msg_hdr.msg_iovlen = 1;
        h.msg_hdr.msg_control = control.as_mut_ptr().cast();
        h.msg_hdr.msg_controllen = size_of::<[u64; CMSG_WORDS]>() as _;
        header.write(h);
    }
    // SAFETY: the first `n` headers are initialised and point into `buf`,
    // `names` and `controls`, which outlive the call and are not otherwise
    // borrowed meanwhile; the kernel writes at most `iov_len`,
    // `msg_namelen` and `msg_controllen` bytes into them. No timeout.
    let got = unsafe {
        libc::recvmmsg(
            socket.as_fd().as_raw_fd(),
            headers.as_mut_ptr().cast::<libc::mmsghdr>(),
            // n <= MAX_SLOTS: fits.
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    let got = usize::try_from(got).map_err(|_| io::Error::last_os_error())?;
    for (i, (header, name)) in headers
        .iter()
        .zip(names.iter())
        .take(got.min(n))
        .enumerate()
    {
        // SAFETY: the header was initialised above (i < n) and the kernel
        // filled it in (i < got).
        let h = unsafe { header.assume_init_ref() };
        let len = (h.msg_len as usize).min(slot_len);
        // SAFETY: the kernel wrote `msg_namelen` bytes of the sender's
        // address into `name` for a filled slot.
        let from = unsafe { to_std(name, h.msg_hdr.msg_namelen) };
        // SAFETY: `msg_control`/`msg_controllen` describe the slot's
        // control buffer as the kernel left it.
        let segment = unsafe { gro_segment(&h.msg_hdr) };
        each(i, Filled { len, from, segment });
    }
    Ok(got.min(n))
}

fn socklen<T>() -> libc::socklen_t {
    // Socket address structures are a few hundred bytes at most.
    size_of::<T>() as libc::socklen_t
}

/// The sender's address, from `len` bytes the kernel wrote into `name`.
///
/// # Safety
/// `name` must hold `len` initialised bytes written by the kernel.
unsafe fn to_std(
    name: &MaybeUninit<libc::sockaddr_storage>,
    len: libc::socklen_t,
) -> Option<SocketAddr> {
    let p = name.as_ptr();
    if (len as usize) < size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: the family is within the bytes written (checked above).
    let family = libc::c_int::from(unsafe { (*p).ss_family });
    match family {
        libc::AF_INET if len >= socklen::<libc::sockaddr_in>() => {
            // SAFETY: an AF_INET address of full length is a `sockaddr_in`;
            // `sockaddr_storage` is aligned for every address type.
            let a = unsafe { &*p.cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= socklen::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for `sockaddr_in6`.
            let a = unsafe { &*p.cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The `UDP_GRO` segment size among the control messages of `msg`, if any.
///
/// # Safety
/// `msg` must be a header the kernel filled in, with `msg_control`
/// pointing to a live buffer of at least the original `msg_controllen`.
unsafe fn gro_segment(msg: &libc::msghdr) -> Option<usize> {
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        tracing::debug!("control messages truncated; a coalesced run may be taken whole");
    }
    // SAFETY: the CMSG_* walk stays within `msg_controllen` bytes of the
    // buffer (the caller's contract); each header it yields is complete.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while let Some(c) = unsafe { cmsg.as_ref() } {
        if c.cmsg_level == libc::SOL_UDP && c.cmsg_type == UDP_GRO {
            // SAFETY: a UDP_GRO message carries one `int` (unaligned read:
            // the data follows the header at the platform's alignment).
            let n = unsafe { libc::CMSG_DATA(c).cast::<libc::c_int>().read_unaligned() };
            return usize::try_from(n).ok().filter(|&n| n > 0);
        }
        cmsg = unsafe { libc::CMSG_NXTHDR(msg, c) };
    }
    None
}
