//! Ours as a multicast group: `all`, `first` and majority `quorum` over 1, 4
//! and 16 UDP members against one unicast call.

use crate::measure::{latency, watchdog, Plan};
use crate::report::us;
use anyhow::ensure;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;

/// One line of the multicast table: sequential latency of a call.
#[derive(Debug, Clone)]
pub(crate) struct McRow {
    pub(crate) name: String,
    pub(crate) members: usize,
    pub(crate) calls: usize,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) retransmissions: u64,
}

/// Group calls (`all`, `first`, majority `quorum`) over 1, 4 and 16 UDP
/// members against one unicast call, Counter.Increment (not idempotent:
/// at-most-once on every member), on the given layout's server runtime.
pub(crate) async fn multicast_rows(server_rt: &Handle, plan: &Plan) -> anyhow::Result<Vec<McRow>> {
    use rpc_core::client::UdpChannel;
    use rpc_core::{Client, GroupClient};
    use rpc_services::proto::demo::v1::{Amount, CounterClient, CounterGroupClient, CounterServer};
    let mut servers = Vec::new();
    for _ in 0..16 {
        let server = server_rt
            .spawn(async move {
                let counter = Arc::new(rpc_services::CounterService::new());
                rpc_core::server::Server::builder()
                    .add_service(CounterServer::from_arc(counter))
                    .serve_udp("127.0.0.1:0")
                    .await
            })
            .await??;
        servers.push(server);
    }
    let bound = plan.seq_window * 2;
    let mut rows = Vec::new();
    let channel = UdpChannel::connect(servers[0].local_addr()).await?;
    let unicast = CounterClient::new(Client::new(channel.clone()));
    let (calls, p50, p99) = watchdog(
        "unicast",
        bound,
        latency(plan, || {
            let call = unicast.increment(Amount { delta: 1 });
            async move {
                call.await
                    .map(drop)
                    .map_err(|e| anyhow::anyhow!("unicast: {e}"))
            }
        }),
    )
    .await??;
    rows.push(McRow {
        name: "unicast".into(),
        members: 1,
        calls,
        p50,
        p99,
        retransmissions: channel.stats().retransmissions,
    });
    for n in [1usize, 4, 16] {
        let group = GroupClient::new();
        let mut channels = Vec::new();
        for (i, s) in servers.iter().take(n).enumerate() {
            let ch = UdpChannel::connect(s.local_addr()).await?;
            group.add(format!("m{i}"), Client::new(ch.clone()));
            channels.push(ch);
        }
        let stub = CounterGroupClient::new(group);
        let retx = || {
            channels
                .iter()
                .map(|c| c.stats().retransmissions)
                .sum::<u64>()
        };
        let quorum = n / 2 + 1;
        for policy in ["all", "first", "quorum"] {
            let before = retx();
            let name = if policy == "quorum" {
                format!("quorum({quorum}) x{n}")
            } else {
                format!("{policy} x{n}")
            };
            let (calls, p50, p99) = watchdog(
                &name,
                bound,
                latency(plan, || {
                    let call = stub
                        .increment(Amount { delta: 1 })
                        .timeout(Duration::from_secs(5));
                    let call = match policy {
                        "all" => call.all(),
                        "first" => call.first(),
                        _ => call.quorum(quorum),
                    };
                    let name = name.clone();
                    async move {
                        let out = call.await;
                        ensure!(
                            out.complete && out.successes() >= 1,
                            "{name}: incomplete ({} replies)",
                            out.successes()
                        );
                        Ok(())
                    }
                }),
            )
            .await??;
            rows.push(McRow {
                name,
                members: n,
                calls,
                p50,
                p99,
                retransmissions: retx() - before,
            });
        }
    }
    println!(
        "  measured multicast: unicast p50 {:.1} us, {} group rows",
        us(rows[0].p50),
        rows.len() - 1
    );
    drop(servers);
    Ok(rows)
}
