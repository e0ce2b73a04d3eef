//! The framework itself: the echo service as generated code would describe
//! it, its handler, and one module a way of calling it: [`udp`] (RR, RRA,
//! asynchronous, one-way), [`tcp`] (RR), [`grpc`] (our gRPC channel, and a
//! plain tonic client, to the gRPC face), [`multicast`] (group calls over
//! 1, 4 and 16 members).

pub(crate) mod grpc;
pub(crate) mod multicast;
pub(crate) mod tcp;
pub(crate) mod udp;

use bytes::Bytes;
use rpc_core::server::{Server, ServerHandle};
use rpc_services::clock::logical::ClockKinds;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::runtime::Handle;

/// The echo service as generated code would describe it (`bench.v1.Echo`).
pub(crate) mod echo {
    use rpc_core::{MethodInfo, Protocol, ServiceInfo, Style};

    /// `Echo(EchoMsg) returns (EchoMsg)`: not idempotent, so RR and RRA go
    /// through duplicate filtering and the reply history (at-most-once).
    pub(crate) static ECHO: MethodInfo = MethodInfo {
        name: "Echo",
        id: 1,
        request_type: "bench.v1.EchoMsg",
        response_type: "bench.v1.EchoMsg",
        raises_type: "",
        oneway: false,
        idempotent: false,
        protocol: Protocol::RR,
        style: Style::Sync,
        timeout_ms: 0,
        retries: None,
    };

    /// `oneway Note(EchoMsg)`.
    pub(crate) static NOTE: MethodInfo = MethodInfo {
        name: "Note",
        id: 2,
        request_type: "bench.v1.EchoMsg",
        response_type: "",
        raises_type: "",
        oneway: true,
        idempotent: false,
        protocol: Protocol::R,
        style: Style::OneWay,
        timeout_ms: 0,
        retries: None,
    };

    static METHODS: [MethodInfo; 2] = [ECHO, NOTE];

    /// The service.
    pub(crate) static INFO: ServiceInfo = ServiceInfo {
        package: "bench.v1",
        name: "Echo",
        full_name: "bench.v1.Echo",
        methods: &METHODS,
    };
}

/// The framework's echo handler: returns the request; counts the one-way notes.
#[derive(Debug, Clone, Default)]
pub(crate) struct OurEcho {
    notes: Arc<AtomicU64>,
}

impl rpc_core::Service for OurEcho {
    fn info(&self) -> &'static rpc_core::ServiceInfo {
        &echo::INFO
    }

    fn call(
        &self,
        method_id: u32,
        _ctx: rpc_core::CallContext,
        request: Bytes,
    ) -> futures::future::BoxFuture<'static, Result<Bytes, rpc_core::Status>> {
        if method_id == echo::NOTE.id {
            self.notes.fetch_add(1, Ordering::Relaxed);
        }
        Box::pin(std::future::ready(Ok(request)))
    }
}

/// The door our echo server listens on (127.0.0.1, a port the system picks).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Door {
    Udp,
    Tcp,
    Grpc,
}

/// Starts `echo` behind `door` on `server_rt` (the server's tasks live on
/// that runtime; dropping the handle stops them, from any thread).
pub(crate) async fn start_echo(
    server_rt: &Handle,
    echo: OurEcho,
    door: Door,
) -> anyhow::Result<ServerHandle> {
    start_echo_with(server_rt, echo, door, Interceptors::None).await
}

/// The interceptors on both sides of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interceptors {
    /// None.
    None,
    /// The three shipped ones: bearer-token authentication, trace context,
    /// metrics.
    Shipped,
    /// The clock service's logical clocks (those named: Lamport, vector,
    /// HLC: `rpc_services::clock::logical::ClockInterceptor`), stamped on
    /// every request and answer and merged on the other side.
    Clock(ClockKinds),
}

/// A [`ClockInterceptor`](rpc_services::clock::logical::ClockInterceptor)
/// carrying `kinds` over fresh logical clocks of node `id` (an unskewed
/// clock; HLC offsets up to 1 s accepted).
pub(crate) fn clock_interceptor(
    id: u32,
    kinds: ClockKinds,
) -> rpc_services::clock::logical::ClockInterceptor {
    use rpc_services::clock::{logical::LogicalClocks, Skew, TimeSource};
    let time = Arc::new(TimeSource::system(Skew::default()));
    rpc_services::clock::logical::ClockInterceptor::new(Arc::new(LogicalClocks::new(
        id,
        time,
        1_000_000_000,
    )))
    .only(kinds)
}

/// The bearer token of the rows with interceptors.
pub(crate) const BENCH_TOKEN: &str = "bench-token";

/// As [`start_echo`], with `interceptors` on the server.
pub(crate) async fn start_echo_with(
    server_rt: &Handle,
    echo: OurEcho,
    door: Door,
    interceptors: Interceptors,
) -> anyhow::Result<ServerHandle> {
    let server = server_rt
        .spawn(async move {
            let mut builder = Server::builder();
            match interceptors {
                Interceptors::None => {}
                Interceptors::Shipped => {
                    use rpc_core::intercept::{
                        auth::BearerAuth, metrics::Metrics, trace::TracePropagation,
                    };
                    builder = builder
                        .intercept(Metrics::new())
                        .intercept(TracePropagation)
                        .intercept(BearerAuth::new().token(BENCH_TOKEN, "bench"));
                }
                Interceptors::Clock(kinds) => {
                    builder = builder.intercept(clock_interceptor(1, kinds));
                }
            }
            let builder = builder.add_service(echo);
            match door {
                Door::Udp => builder.serve_udp("127.0.0.1:0").await,
                Door::Tcp => builder.serve_tcp("127.0.0.1:0").await,
                Door::Grpc => builder.serve_grpc("127.0.0.1:0").await,
            }
        })
        .await??;
    Ok(server)
}
