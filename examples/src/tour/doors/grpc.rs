//! The gRPC door: HTTP/2 through tonic to the same server's gRPC face
//! (one engine, one history with the other doors).

use super::Door;
use anyhow::Context as _;
use rpc_core::grpc::GrpcChannel;
use rpc_core::Client;
use rpc_services::proto::demo::v1::CounterClient;
use std::net::SocketAddr;

/// gRPC (HTTP/2 through tonic) to the same server's gRPC face.
pub(crate) struct GrpcDoor {
    client: CounterClient,
}

impl GrpcDoor {
    /// A gRPC channel to `addr`.
    pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<GrpcDoor> {
        let channel = GrpcChannel::connect(&format!("http://{addr}"))
            .await
            .with_context(|| format!("connecting gRPC to {addr}"))?;
        Ok(GrpcDoor {
            client: CounterClient::new(Client::new(channel)),
        })
    }
}

impl Door for GrpcDoor {
    fn name(&self) -> &str {
        "grpc"
    }
    fn client(&self) -> &CounterClient {
        &self.client
    }
}
