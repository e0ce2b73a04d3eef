//! The links of a [`Net`](super::Net) over UDP: `rpc_core::fault::FaultProxy`.

use super::{Kind, Net, Way};
use rpc_core::fault::{Delay, FaultConfig, FaultProxy, ProxyConfig, ProxyFaults};
use std::net::SocketAddr;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Net {
    /// An empty network whose links are UDP fault proxies, their
    /// generators seeded from `seed` and the names of each link's ends.
    pub fn udp(seed: u64) -> Net {
        Net::empty(Kind::Udp, seed)
    }
}

pub(super) async fn start(upstream: SocketAddr) -> Result<FaultProxy, BoxError> {
    Ok(FaultProxy::loopback(upstream, ProxyConfig::default()).await?)
}

fn config(way: Way, seed: u64) -> FaultConfig {
    let base = FaultConfig::seeded(seed);
    if way.cut {
        return base.loss(1.0);
    }
    let f = way.faults;
    base.loss(f.loss)
        .duplicate(f.duplicate)
        .reorder(f.reorder)
        .delay(Delay::uniform(f.delay_min, f.delay_max))
}

/// Applies the forward (client to server) and back ways to a proxy; both
/// cut blackholes it, which also drops what it still holds.
pub(super) fn apply(
    proxy: &FaultProxy,
    (forward, back): (Way, Way),
    (forward_seed, back_seed): (u64, u64),
) -> Result<(), BoxError> {
    let blackhole = forward.cut && back.cut;
    if blackhole {
        proxy.blackhole(true);
    }
    proxy.set_config(ProxyFaults {
        client_to_server: config(forward, forward_seed),
        server_to_client: config(back, back_seed),
    })?;
    if !blackhole {
        proxy.blackhole(false);
    }
    Ok(())
}
