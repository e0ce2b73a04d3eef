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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
