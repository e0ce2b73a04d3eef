//! Crash and restart: a server crashes while a call's reply is lost and
//! restarts on the same port; the retransmission reaches the new
//! incarnation and is refused with "outcome unknown", never run twice.

use crate::report::{Report, Row};
use crate::{start_counter, SEED};
use anyhow::{anyhow, ensure, Context as _};
use rpc_core::client::{ChannelConfig, UdpChannel};
use rpc_core::fault::{FaultConfig, FaultProxy, ProxyConfig, ProxyFaults};
use rpc_core::{CallError, Client, Error};
use rpc_services::proto::demo::v1::{Amount, CounterClient};
use std::time::{Duration, Instant};

/// The path of this section's rows in the report.
const PATH: &str = "udp crash+restart";

/// The server crashes while a call's reply is lost, and restarts on the
/// same port: the retransmission reaches a new incarnation and is refused
/// with "outcome unknown", never run a second time.
pub(crate) async fn crash(report: &mut Report) -> anyhow::Result<()> {
    let (server, first) = start_counter("127.0.0.1:0").await?;
    let addr = server.local_addr();
    let proxy = FaultProxy::loopback(addr, ProxyConfig::new(ProxyFaults::none())).await?;
    let mut config = ChannelConfig::default();
    config.max_rto = Duration::from_millis(100);
    config.default_retries = 50;
    let channel = UdpChannel::connect_with(proxy.local_addr(), config).await?;
    let client = CounterClient::new(Client::new(channel.clone()));
    client
        .increment(Amount { delta: 1 })
        .await
        .map_err(|e| anyhow!("warm-up call: {e}"))?;

    // Every reply is lost from now on: the next call runs, the client retransmits.
    let mut lose_replies = ProxyFaults::none();
    lose_replies.server_to_client = FaultConfig::seeded(SEED).loss(1.0);
    proxy.set_config(lose_replies)?;
    let start = Instant::now();
    let before = channel.stats().retransmissions;
    let call = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .increment(Amount { delta: 1 })
                .timeout(Duration::from_secs(10))
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while first.executions() < 2 {
        ensure!(
            Instant::now() < deadline,
            "the call never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Crash (dropping the handle stops the server abruptly), restart on the same port.
    drop(server);
    let (restarted, second) = {
        let mut attempt = 0;
        loop {
            match start_counter(&addr.to_string()).await {
                Ok(s) => break s,
                Err(e) if attempt < 100 => {
                    attempt += 1;
                    tracing::debug!(error = %e, "port not free yet");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => return Err(e),
            }
        }
    };
    proxy.set_config(ProxyFaults::none())?;
    let outcome = call.await.context("the crash call's task")?;
    let latency = start.elapsed();
    let retx = channel.stats().retransmissions - before;
    let result = match &outcome {
        Err(CallError::Rpc(e @ Error::OutcomeUnknown)) if second.executions() == 0 => {
            Ok(format!("{e}; ran once, not again"))
        }
        other => Err(format!(
            "expected outcome unknown, got {other:?}; runs after restart {}",
            second.executions()
        )),
    };
    report.row(Row::made(
        PATH,
        "Increment(+1), reply lost, crash",
        "sync",
        "RR",
        result,
        latency,
        Some(retx),
    ));
    let start = Instant::now();
    let next = client.increment(Amount { delta: 1 }).await;
    let result = match &next {
        Ok(c) if c.executions == 1 && channel.stats().incarnation == restarted.incarnation() => {
            Ok(format!(
                "value {}, new incarnation {:016x}",
                c.value,
                restarted.incarnation()
            ))
        }
        other => Err(format!("{other:?}")),
    };
    report.sync_call(PATH, "Increment(+1) after restart", "RR", result, start);
    Ok(())
}
