//! Doors: how the tour reaches the Counter. A door is a transport and a
//! path to the one server; every step runs through each of them.
//!
//! One module a transport: [`udp`] (straight to the server, or through the
//! fault proxy), [`tcp`] (TCP, and TCP with TLS), [`grpc`] (HTTP/2 through
//! tonic). [`Door::supports`] says which steps a door can run; [`timed`]
//! times a call through a door and counts its retransmissions.

pub(crate) mod grpc;
pub(crate) mod tcp;
pub(crate) mod udp;

pub(crate) use grpc::GrpcDoor;
pub(crate) use tcp::TcpDoor;
pub(crate) use udp::UdpDoor;

use rpc_services::proto::demo::v1::CounterClient;
use std::future::Future;
use std::time::{Duration, Instant};

/// What a step may need from a transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Feature {
    /// ACCEPT before the result (asynchronous and deferred styles).
    Accept,
    /// One-way requests (protocol R).
    OneWay,
    /// A size limit checked before sending.
    SizeLimit,
}

impl Feature {
    /// What the feature is, for the report.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Feature::Accept => "ACCEPT before the result",
            Feature::OneWay => "one-way requests",
            Feature::SizeLimit => "a request size limit checked before sending",
        }
    }
}

/// A transport and a path to the tour's Counter server.
///
/// The defaults describe a door over one reliable connection (TCP, gRPC):
/// nothing lost, no retransmission, every feature, a 16 MiB limit.
pub(crate) trait Door {
    /// The path as shown in the report, e.g. `udp direct`.
    fn name(&self) -> &str;
    /// The generated client stub through this door.
    fn client(&self) -> &CounterClient;
    /// Request copies sent so far that were not first copies, when the
    /// transport retransmits by itself (None: it does not, e.g. TCP).
    fn retransmissions(&self) -> Option<u64> {
        None
    }
    /// Whether datagrams may be lost on this path.
    fn lossy(&self) -> bool {
        false
    }
    /// Whether this door can run steps that need `feature`.
    fn supports(&self, _feature: Feature) -> bool {
        true
    }
    /// Why it cannot, for the report (when `supports` says no).
    fn why_not(&self, _feature: Feature) -> &'static str {
        "not on this transport"
    }
    /// The size of a request just over the door's limit (with
    /// [`Feature::SizeLimit`]).
    fn oversize(&self) -> usize {
        // The default frame (TCP) and message (gRPC) limit is 16 MiB.
        (16 << 20) + 1
    }
}

/// Runs `f` through `door` and times it; the retransmissions column is the
/// door's counter difference over the call.
pub(crate) async fn timed<T, F: Future<Output = T>>(
    door: &dyn Door,
    f: F,
) -> (T, Duration, Option<u64>) {
    let before = door.retransmissions();
    let start = Instant::now();
    let out = f.await;
    let latency = start.elapsed();
    let retx = before
        .zip(door.retransmissions())
        .map(|(a, b)| b.saturating_sub(a));
    (out, latency, retx)
}
