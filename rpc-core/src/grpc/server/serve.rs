//! The serving verbs of the gRPC door on the server's builder and handle
//! (`serve_grpc`, `serve_grpc_with`), as `server/tcp` has them for TCP.

use super::{bind, GrpcDoor, GrpcServerConfig, GrpcStats};
use crate::server::{ServerBuilder, ServerError, ServerHandle};
use std::net::SocketAddr;
use std::sync::Arc;

impl ServerBuilder {
    /// Starts the server with a gRPC (HTTP/2) door bound to `addr`, with
    /// the default [`GrpcServerConfig`]. See [`crate::grpc`].
    ///
    /// # Errors
    /// As [`ServerBuilder::serve_grpc_with`].
    pub async fn serve_grpc(
        self,
        addr: impl tokio::net::ToSocketAddrs,
    ) -> Result<ServerHandle, ServerError> {
        self.serve_grpc_with(addr, GrpcServerConfig::default())
            .await
    }

    /// Starts the server with a gRPC (HTTP/2) door bound to `addr`, with
    /// the limits of `config`.
    ///
    /// # Errors
    /// [`ServerError::Bind`], [`ServerError::LocalAddr`],
    /// [`ServerError::InvalidConfig`] for a limit out of range (or a
    /// `buffer_budget` under the gRPC message limit),
    /// [`ServerError::DoorRefused`] when the door (TLS or not, client
    /// certificates or not) cannot meet the server's
    /// [`AuthPolicy`](crate::server::AuthPolicy), and the other
    /// configuration errors of [`ServerBuilder::serve_socket`].
    pub async fn serve_grpc_with(
        self,
        addr: impl tokio::net::ToSocketAddrs,
        config: GrpcServerConfig,
    ) -> Result<ServerHandle, ServerError> {
        let handle = self.start(config.door_kind())?;
        handle.serve_grpc_with(addr, config).await?;
        Ok(handle)
    }
}

impl ServerHandle {
    /// Serves the same services, with the same engine and history, over
    /// gRPC (HTTP/2) on `addr` as well, with the default
    /// [`GrpcServerConfig`]. Returns the bound address.
    ///
    /// # Errors
    /// As [`ServerHandle::serve_grpc_with`].
    pub async fn serve_grpc(
        &self,
        addr: impl tokio::net::ToSocketAddrs,
    ) -> Result<SocketAddr, ServerError> {
        self.serve_grpc_with(addr, GrpcServerConfig::default())
            .await
    }

    /// Serves the same services, with the same engine, history and buffer
    /// budget, over gRPC (HTTP/2) on `addr` as well, with the limits of
    /// `config`. Returns the bound address.
    ///
    /// # Errors
    /// [`ServerError::Bind`], [`ServerError::LocalAddr`],
    /// [`ServerError::InvalidConfig`], [`ServerError::DoorRefused`].
    pub async fn serve_grpc_with(
        &self,
        addr: impl tokio::net::ToSocketAddrs,
        config: GrpcServerConfig,
    ) -> Result<SocketAddr, ServerError> {
        self.auth_policy().admit(config.door_kind())?;
        let (local_addr, door, task) =
            bind(Arc::clone(self.engine()), self.budget(), addr, config).await?;
        self.add_door(local_addr, task);
        self.grpc_doors.push(door);
        Ok(local_addr)
    }

    /// The counters of the server's gRPC doors, summed (all zero without
    /// one).
    pub fn grpc_stats(&self) -> GrpcStats {
        self.grpc_doors.sum(GrpcDoor::add_to)
    }
}
