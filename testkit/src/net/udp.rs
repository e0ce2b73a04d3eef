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

/// A stable seed per directed pair of names (FNV-1a, then splitmix64).
fn pair_seed(seed: u64, from: &str, to: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in from.bytes().chain([0xff]).chain(to.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Applies the forward (client to server) and back ways of the link
/// `from -> to` to its proxy; both cut blackholes it, which also drops what
/// it still holds.
pub(super) fn apply(
    proxy: &FaultProxy,
    (forward, back): (Way, Way),
    seed: u64,
    (from, to): (&str, &str),
) -> Result<(), BoxError> {
    let (forward_seed, back_seed) = (pair_seed(seed, from, to), pair_seed(seed, to, from));
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
