//! Ours behind the gRPC face: called through our `GrpcChannel` (session
//! metadata, so at-most-once), and by a plain tonic client (what any gRPC
//! client gets), against tonic's own server.

use super::{echo, start_echo, Door, OurEcho};
use crate::report::{OURS_GRPC_RR, TONIC_TO_FACE};
use crate::target::{Role, Target};
use crate::EchoMsg;
use anyhow::ensure;
use bytes::Bytes;
use rpc_core::server::ServerHandle;
use tokio::runtime::Handle;

/// The framework's gRPC face: a server serving over gRPC, a `GrpcChannel`
/// (session metadata on, so at-most-once is on) to it.
#[derive(Debug)]
pub(crate) struct OursGrpc {
    /// First, so that it is dropped first: dropping it stops the server.
    _server: ServerHandle,
    client: rpc_core::Client,
    request: EchoMsg,
}

impl OursGrpc {
    pub(crate) async fn start(server_rt: &Handle) -> anyhow::Result<OursGrpc> {
        let server = start_echo(server_rt, OurEcho::default(), Door::Grpc).await?;
        let channel =
            rpc_core::grpc::GrpcChannel::connect(&format!("http://{}", server.local_addr()))
                .await?;
        let client = rpc_core::Client::new(channel);
        Ok(OursGrpc {
            _server: server,
            client,
            request: EchoMsg::payload(),
        })
    }
}

impl Target for OursGrpc {
    fn name(&self) -> String {
        OURS_GRPC_RR.to_owned()
    }

    fn role(&self) -> Role {
        Role::Measured
    }

    async fn call(&self) -> anyhow::Result<()> {
        use rpc_core::Never;
        let reply = self
            .client
            .call::<EchoMsg, EchoMsg, Never>(&echo::INFO, &echo::ECHO, &self.request)
            .await?;
        ensure!(reply.data == self.request.data, "ours gRPC: wrong echo");
        Ok(())
    }
}

/// A plain tonic client (no session metadata, so no at-most-once: what any
/// gRPC client in any language gets) calling the framework's gRPC face:
/// the face itself against tonic's own server.
#[derive(Debug)]
pub(crate) struct TonicToFace {
    /// First, so that it is dropped first: dropping it stops the server.
    _server: ServerHandle,
    grpc: tonic::client::Grpc<tonic::transport::Channel>,
    path: tonic::codegen::http::uri::PathAndQuery,
    request: Bytes,
}

impl TonicToFace {
    pub(crate) async fn start(server_rt: &Handle) -> anyhow::Result<TonicToFace> {
        let server = start_echo(server_rt, OurEcho::default(), Door::Grpc).await?;
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", server.local_addr()))?
                .tcp_nodelay(true)
                .connect()
                .await?;
        let path = format!("/{}/{}", echo::INFO.full_name, echo::ECHO.name);
        let request = prost::Message::encode_to_vec(&EchoMsg::payload());
        Ok(TonicToFace {
            _server: server,
            grpc: tonic::client::Grpc::new(channel),
            path: tonic::codegen::http::uri::PathAndQuery::try_from(path)?,
            request: Bytes::from(request),
        })
    }
}

impl Target for TonicToFace {
    fn name(&self) -> String {
        TONIC_TO_FACE.to_owned()
    }

    fn role(&self) -> Role {
        Role::Measured
    }

    async fn call(&self) -> anyhow::Result<()> {
        let mut grpc = self.grpc.clone();
        grpc.ready().await?;
        let reply = grpc
            .unary(
                tonic::Request::new(self.request.clone()),
                self.path.clone(),
                rpc_core::grpc::BytesCodec::default(),
            )
            .await?;
        ensure!(
            reply.get_ref() == &self.request,
            "tonic -> face: wrong echo"
        );
        Ok(())
    }
}
