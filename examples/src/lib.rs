//! What the tour (`src/tour`) and the benchmark (the package `rpc-bench`
//! in `bench/`) both do: a clock node served on loopback. (Their log
//! subscriber is the services' binaries' own,
//! `rpc_services::init_tracing`.) The benchmark depends on this
//! package, not the other way round, so that building the tour does not
//! build the benchmark's peers.

use anyhow::Context as _;
use rpc_core::server::{Server, ServerHandle};
use rpc_services::clock::{ClockNode, ClockService, NodeConfig, TimeSource};
use rpc_services::proto::clock::v1 as pb;
use std::sync::Arc;

/// A clock node of `id` over `time`, with the election service and its
/// logical-clock interceptor, served on UDP on loopback.
///
/// # Errors
///
/// When the server cannot bind its socket.
pub async fn serve_clock_node(
    id: u32,
    time: TimeSource,
) -> anyhow::Result<(Arc<ClockNode>, ServerHandle)> {
    let node = ClockNode::new(NodeConfig::new(id), Arc::new(time));
    let server = Server::builder()
        .intercept(node.interceptor())
        .add_service(pb::ClockServer::new(ClockService(node.clone())))
        .add_service(pb::ElectionServer::new(node.election_service()))
        .serve_udp("127.0.0.1:0")
        .await
        .with_context(|| format!("starting clock node {id}"))?;
    Ok((node, server))
}

/// A clock client of the node served by `server`, over UDP.
///
/// # Errors
///
/// When the client's socket cannot be bound.
pub async fn clock_client(server: &ServerHandle) -> anyhow::Result<pb::ClockClient> {
    Ok(pb::ClockClient::new(
        rpc_core::client::UdpChannel::connect(server.local_addr()).await?,
    ))
}
