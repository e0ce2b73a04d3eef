//! The caller's side of IP multicast: one UDP socket, one client session,
//! REQUEST datagrams sent to a group address, answers gathered by unicast
//! from every member.
//!
//! It is the group call's one-to-many transport
//! ([`GroupTransport`]); a call ([`IpCall`]) is driven by whoever polls it (the group call, or a
//! background task that lets stragglers finish): it sends the first copy
//! to the group when it is created, re-sends to the group on a backoff
//! schedule while an expected member (or, with open membership, anybody)
//! is still missing, and turns every first answer of a member into one
//! event. The receive task routes datagrams by request id and acknowledges
//! RRA replies at once, from whichever member they come.
//!
//! The session's bookkeeping (request ids, the acknowledgement low-water
//! mark, the RRA ids to acknowledge again, a server's incarnation and
//! cookie) is the unicast client's sans-IO core (`client/session/calls.rs`
//! and `peer.rs`); what is kept here is what a group adds: many answers to
//! one call, one incarnation and cookie per member, re-sends to the group or
//! to the missing members.
//!
//! Files: this one (configuration, counters, the client and its state),
//! `call.rs` (one call: copies, answers, events), `receive.rs` (the
//! receiving task).

use crate::call::{GroupClient, GroupTransport, GroupTransportCall, Invocation};
use crate::client::session::{Calls, Peer};
use crate::counter::bump;
use crate::envelope::{Envelope, ExchangeProtocol, MessageType};
use crate::error::Error;
use crate::service::{Protocol, Style};
use std::any::Any;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Where the re-sends of a multicast call go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Resend {
    /// To the group again: one datagram however many members are missing;
    /// members that already answered answer again from their history. The
    /// copies carry no incarnation (see the module docs). The default.
    #[default]
    Group,
    /// By unicast to each expected member still missing, carrying the
    /// incarnation that member last showed, so that a member restarted
    /// since does not run a non-idempotent request blindly ("outcome
    /// unknown: server restarted"); also reaches a member that has left
    /// the group but still serves its unicast address. With open
    /// membership there is nobody to name: re-sends go to the group.
    Missing,
}

/// Configuration of a [`MulticastClient`]. Start from
/// [`MulticastConfig::default`] and change fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MulticastConfig {
    /// IP TTL of the group datagrams: 0 keeps them on this host, 1 (the
    /// default) on the local link.
    pub ttl: u32,
    /// Deliver the group datagrams to sockets of this host too
    /// (`IP_MULTICAST_LOOP`); default on, so that servers in the same
    /// network namespace receive them.
    pub loopback: bool,
    /// Interface (by its IPv4 address) the group datagrams leave by;
    /// `0.0.0.0` (the default) lets the routing table choose.
    pub interface: Ipv4Addr,
    /// Interval before the first re-send to the group. Default 20 ms.
    pub initial_rto: Duration,
    /// Largest re-send interval (the backoff doubles up to it). Default 1 s.
    pub max_rto: Duration,
    /// Copies sent to the group before the members still silent are
    /// reported unreachable (a member that said IN_PROGRESS is polled on
    /// until the deadline). Default 8.
    pub attempts: u32,
    /// Where re-sends go. Default [`Resend::Group`].
    pub resend: Resend,
    /// Largest datagram sent; a bigger request fails with
    /// [`Error::MessageTooLarge`] before anything is sent. Default 65,000.
    pub max_datagram: usize,
    /// How long a call without deadline gathers answers (and how long a
    /// member running a request is polled). Default 30 s.
    pub max_wait: Duration,
}

impl Default for MulticastConfig {
    fn default() -> Self {
        MulticastConfig {
            ttl: 1,
            loopback: true,
            interface: Ipv4Addr::UNSPECIFIED,
            initial_rto: Duration::from_millis(20),
            max_rto: Duration::from_secs(1),
            attempts: 8,
            resend: Resend::Group,
            max_datagram: 65_000,
            max_wait: Duration::from_secs(30),
        }
    }
}

/// Counters of a [`MulticastClient`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MulticastStats {
    /// Calls started.
    pub calls: u64,
    /// REQUEST datagrams sent to the group (first copies and re-sends).
    pub group_datagrams: u64,
    /// Re-sends (to the group, or one round of unicast copies).
    pub resends: u64,
    /// Unicast copies sent to missing members ([`Resend::Missing`]).
    pub unicast_copies: u64,
    /// First answers (REPLY or ERROR) of a member.
    pub replies: u64,
    /// Answers from a member that had already answered (re-sends answered
    /// from its history).
    pub duplicates: u64,
    /// Answers for a call that had ended.
    pub late: u64,
    /// ACKs sent for RRA replies.
    pub acks: u64,
    /// Datagrams dropped: undecodable, another version or session, a type a
    /// client does not take.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    group_datagrams: AtomicU64,
    resends: AtomicU64,
    unicast_copies: AtomicU64,
    replies: AtomicU64,
    duplicates: AtomicU64,
    late: AtomicU64,
    acks: AtomicU64,
    dropped: AtomicU64,
}

/// What the receive task hands a call.
#[derive(Debug)]
struct Incoming {
    from: SocketAddr,
    kind: MessageType,
    env: Envelope,
}

/// The session: the calls (the same bookkeeping as a unicast session's;
/// a call is pending until its [`IpCall`] is dropped, however many members
/// answered) and what each member showed.
#[derive(Debug)]
struct State {
    /// Ids, the low-water mark, recent RRA ids; for each pending call, where
    /// its answers go.
    calls: Calls<mpsc::UnboundedSender<Incoming>>,
    /// The last incarnation each member showed, and the address-validation
    /// cookie it gave (in a PONG).
    members: HashMap<SocketAddr, Peer>,
}

impl State {
    /// What `member` showed (nothing known: incarnation and cookie 0).
    fn member(&self, member: &SocketAddr) -> Peer {
        self.members.get(member).copied().unwrap_or_default()
    }
}

struct Shared {
    socket: UdpSocket,
    group: SocketAddr,
    session_id: u64,
    config: MulticastConfig,
    state: Mutex<State>,
    counters: Counters,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Lifeline {
    receiver: tokio::task::AbortHandle,
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        self.receiver.abort();
    }
}

/// A client session that sends each request once to an IPv4 multicast
/// group and gathers the members' unicast answers. Use it through
/// [`GroupClient::with_multicast`](crate::GroupClient::with_multicast).
///
/// Cheap to clone; clones share the session. Dropping the last clone stops
/// the receive task.
#[derive(Clone)]
pub struct MulticastClient {
    shared: Arc<Shared>,
    _life: Arc<Lifeline>,
}

impl fmt::Debug for MulticastClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MulticastClient")
            .field("group", &self.shared.group)
            .field("local", &self.shared.socket.local_addr().ok())
            .field(
                "session_id",
                &format_args!("{:016x}", self.shared.session_id),
            )
            .finish()
    }
}

impl MulticastClient {
    /// A client of `group` (an address in 224.0.0.0/4 and the port the
    /// servers joined on) with a socket bound to `local` (for example
    /// `127.0.0.1:0`): TTL, loopback and interface from `config`.
    ///
    /// # Errors
    /// [`Error::InvalidCall`] when `group` is not a multicast address;
    /// [`Error::Io`] when the socket cannot be bound or configured.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub async fn connect(
        group: SocketAddrV4,
        local: SocketAddr,
        config: MulticastConfig,
    ) -> Result<Self, Error> {
        if !group.ip().is_multicast() {
            return Err(Error::InvalidCall(format!(
                "{} is not an IPv4 multicast address",
                group.ip()
            )));
        }
        let socket = UdpSocket::bind(local).await.map_err(Error::Io)?;
        socket.set_multicast_ttl_v4(config.ttl).map_err(Error::Io)?;
        socket
            .set_multicast_loop_v4(config.loopback)
            .map_err(Error::Io)?;
        if !config.interface.is_unspecified() {
            socket2::SockRef::from(&socket)
                .set_multicast_if_v4(&config.interface)
                .map_err(Error::Io)?;
        }
        let session_id = loop {
            let id: u64 = rand::random();
            if id != 0 {
                break id;
            }
        };
        let shared = Arc::new(Shared {
            socket,
            group: SocketAddr::V4(group),
            session_id,
            config,
            state: Mutex::new(State {
                calls: Calls::new(),
                members: HashMap::new(),
            }),
            counters: Counters::default(),
        });
        let receiver = tokio::spawn(receive_loop(Arc::clone(&shared))).abort_handle();
        tracing::debug!(session_id = format_args!("{session_id:016x}"), %group, "multicast session started");
        Ok(MulticastClient {
            shared,
            _life: Arc::new(Lifeline { receiver }),
        })
    }

    /// The group address.
    pub fn group(&self) -> SocketAddr {
        self.shared.group
    }

    /// The session id on every request.
    pub fn session_id(&self) -> u64 {
        self.shared.session_id
    }

    /// The local address of the socket (where the members answer).
    ///
    /// # Errors
    /// When the socket cannot tell.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.shared.socket.local_addr()
    }

    /// The configuration.
    pub fn config(&self) -> &MulticastConfig {
        &self.shared.config
    }

    /// The last incarnation `member` showed, if it ever answered.
    pub fn incarnation_of(&self, member: SocketAddr) -> Option<u64> {
        let incarnation = self.shared.lock().member(&member).incarnation();
        (incarnation != 0).then_some(incarnation)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MulticastStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MulticastStats {
            calls: get(&c.calls),
            group_datagrams: get(&c.group_datagrams),
            resends: get(&c.resends),
            unicast_copies: get(&c.unicast_copies),
            replies: get(&c.replies),
            duplicates: get(&c.duplicates),
            late: get(&c.late),
            acks: get(&c.acks),
            dropped: get(&c.dropped),
        }
    }

    /// Starts a call: sends its first copy to the group now. `expected`:
    /// the members that must answer (empty: whoever answers). One-way
    /// calls (protocol R) are sent once and need no polling.
    fn start_call(
        &self,
        invocation: Invocation,
        expected: Vec<SocketAddr>,
    ) -> Result<IpCall, Error> {
        let Invocation {
            service,
            method,
            instance,
            payload,
            metadata,
            options,
        } = invocation;
        let shared = &self.shared;
        let now = Instant::now();
        let deadline = options.deadline.map(Instant::from_std);
        if deadline.is_some_and(|d| d <= now) {
            return Err(Error::DeadlineExceeded {
                may_have_run: false,
                attempts: 0,
            });
        }
        let one_way = options.style == Style::OneWay;
        match (one_way, options.protocol) {
            (true, Protocol::R) | (false, Protocol::RR | Protocol::RRA) => {}
            (true, p) => {
                return Err(Error::InvalidCall(format!(
                    "a one-way call uses protocol R, not {p:?}"
                )))
            }
            (false, _) => {
                return Err(Error::InvalidCall(
                    "protocol R has no reply: use RR or RRA".into(),
                ))
            }
        }
        bump(&shared.counters.calls);
        let (tx, rx) = mpsc::unbounded_channel();
        let (id, ack_up_to) = {
            let mut st = shared.lock();
            let id = if one_way {
                st.calls.start_one_way()
            } else {
                st.calls.start(options.protocol == Protocol::RRA, tx)
            };
            // A one-way request never acknowledges itself (the servers keep
            // their tombstone against network duplicates).
            (id, st.calls.ack_up_to().min(id - 1))
        };
        // No incarnation and no cookie: members have their own, and a group
        // copy cannot carry one right for all of them (see the module docs).
        let env = Envelope {
            instance,
            // Set per copy.
            attempt: 0,
            metadata,
            protocol: ExchangeProtocol::from(options.protocol) as i32,
            ack_up_to,
            want_accept: options.style == Style::Async,
            idempotent: options.idempotent,
            ..Envelope::request(shared.session_id, id, service.full_name, method.id, payload)
        };
        let give_up_at = deadline.unwrap_or(now + shared.config.max_wait);
        let mut call = IpCall {
            shared: Arc::clone(shared),
            id,
            env,
            buf: Vec::new(),
            deadline,
            give_up_at,
            rx,
            expected: expected.iter().copied().collect(),
            answered: HashSet::new(),
            in_progress: HashSet::new(),
            cookied: HashSet::new(),
            copies: 0,
            interval: shared.config.initial_rto,
            timer: Box::pin(tokio::time::sleep_until(give_up_at)),
            resending: !one_way,
            gave_up: false,
            out: VecDeque::new(),
            ended: one_way,
        };
        let size = call.max_size(now);
        if size > shared.config.max_datagram {
            return Err(Error::MessageTooLarge {
                size,
                limit: shared.config.max_datagram,
            });
        }
        call.send().map_err(Error::Io)?;
        call.arm();
        Ok(call)
    }
}

impl GroupTransport for MulticastClient {
    fn group_addr(&self) -> SocketAddr {
        self.shared.group
    }

    fn start(
        &self,
        invocation: Invocation,
        expected: Vec<SocketAddr>,
    ) -> Result<Box<dyn GroupTransportCall>, Error> {
        let call = self.start_call(invocation, expected)?;
        Ok(Box::new(call))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// IP multicast plugged into a group: the constructor lives here, so that
/// `call/` does not depend on this module.
impl GroupClient {
    /// A group reached by IP multicast through `client` (plus any fan-out
    /// members added later). Without members named by
    /// [`GroupClient::add_multicast_member`], whoever answers by the
    /// deadline is a member, named by its address.
    pub fn with_multicast(client: MulticastClient) -> GroupClient {
        GroupClient::with_transport(Arc::new(client))
    }

    /// The multicast client, if the group has one.
    pub fn multicast(&self) -> Option<&MulticastClient> {
        self.transport()
            .and_then(|t| t.as_any().downcast_ref::<MulticastClient>())
    }
}

mod call;
mod receive;

use call::IpCall;
use receive::receive_loop;
