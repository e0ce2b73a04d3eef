//! Ours behind the gRPC face: called through our `GrpcChannel` (session
//! metadata, so at-most-once), and by a plain tonic client (what any gRPC
//! client gets), against tonic's own server.

use super::{echo, OurEcho};
use crate::report::{OURS_GRPC_RR, TONIC_TO_FACE};
use crate::target::{Role, Target};
use crate::{EchoMsg, PAYLOAD};
use anyhow::ensure;
use bytes::Bytes;
use tokio::runtime::Handle;

/// The framework's gRPC face: a server serving over gRPC, a `GrpcChannel`
/// (session metadata on, so at-most-once is on) to it.
#[derive(Debug)]
pub(crate) struct OursGrpc {
    client: rpc_core::Client,
    request: EchoMsg,
    server: Option<rpc_core::server::ServerHandle>,
}

impl OursGrpc {
    pub(crate) async fn start(server_rt: &Handle) -> anyhow::Result<OursGrpc> {
        let server = echo_grpc_server(server_rt).await?;
        let channel =
            rpc_core::grpc::GrpcChannel::connect(&format!("http://{}", server.local_addr()))
                .await?;
        let client = rpc_core::Client::new(channel);
        let request = EchoMsg {
            data: Bytes::from(vec![7u8; PAYLOAD]),
        };
        Ok(OursGrpc {
            client,
            request,
            server: Some(server),
        })
    }
}

impl Drop for OursGrpc {
    fn drop(&mut self) {
        self.server.take();
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

/// The framework's echo service behind its gRPC face, on `server_rt`.
pub(crate) async fn echo_grpc_server(
    server_rt: &Handle,
) -> anyhow::Result<rpc_core::server::ServerHandle> {
    let server = server_rt
        .spawn(async move {
            rpc_core::server::Server::builder()
                .add_service(OurEcho::default())
                .serve_grpc("127.0.0.1:0")
                .await
        })
        .await??;
    Ok(server)
}

/// A plain tonic client (no session metadata, so no at-most-once: what any
/// gRPC client in any language gets) calling the framework's gRPC face:
/// the face itself against tonic's own server.
#[derive(Debug)]
pub(crate) struct TonicToFace {
    grpc: tonic::client::Grpc<tonic::transport::Channel>,
    path: tonic::codegen::http::uri::PathAndQuery,
    request: Bytes,
    server: Option<rpc_core::server::ServerHandle>,
}

impl TonicToFace {
    pub(crate) async fn start(server_rt: &Handle) -> anyhow::Result<TonicToFace> {
        let server = echo_grpc_server(server_rt).await?;
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", server.local_addr()))?
                .tcp_nodelay(true)
                .connect()
                .await?;
        let path = format!("/{}/{}", echo::INFO.full_name, echo::ECHO.name);
        let request = prost::Message::encode_to_vec(&EchoMsg {
            data: Bytes::from(vec![7u8; PAYLOAD]),
        });
        Ok(TonicToFace {
            grpc: tonic::client::Grpc::new(channel),
            path: tonic::codegen::http::uri::PathAndQuery::try_from(path)?,
            request: Bytes::from(request),
            server: Some(server),
        })
    }
}

impl Drop for TonicToFace {
    fn drop(&mut self) {
        self.server.take();
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
