//! Per-method metrics: [`Metrics`] is a server and a client interceptor
//! that counts calls, errors by status code and a latency histogram per
//! (side, service, method), readable as a [`MetricsSnapshot`] and exported
//! in the Prometheus (OpenMetrics) text format, by [`Metrics::encode`] or
//! on an HTTP endpoint ([`Metrics::serve`], `GET /metrics`).
//!
//! On the server the latency runs from the request's arrival (before any
//! queueing) to the end of the handler; on the client, from the call to
//! its answer. Refusals by an inner interceptor count as errors.
//!
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! use rpc_core::intercept::metrics::Metrics;
//! use rpc_core::server::Server;
//!
//! let metrics = Metrics::new();
//! let endpoint = metrics.serve("127.0.0.1:9464".parse().unwrap()).await?;
//! let builder = Server::builder().intercept(metrics.clone());
//! println!("metrics on http://{}/metrics", endpoint.local_addr());
//! # let _ = builder; Ok(()) }
//! ```

use super::{ClientInterceptor, ClientOutcome, Completed, Interceptor, InvocationInfo};
use crate::service::MethodInfo;
use crate::status::Code;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Labels of the per-method series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    side: &'static str,
    service: &'static str,
    method: &'static str,
}

/// One (side, method)'s series, shared with the families.
struct Series {
    labels: MethodLabels,
    calls: Counter,
    latency: Histogram,
    /// Sum of the latencies in nanoseconds (the histogram's own sum is not
    /// readable).
    latency_ns: AtomicU64,
}

/// Labels of the error series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    side: &'static str,
    service: &'static str,
    method: &'static str,
    code: &'static str,
}

struct Inner {
    registry: Registry,
    calls: Family<MethodLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    /// Every (side, method) seen, by the address of its static
    /// `MethodInfo` and the side: its series, taken from the families
    /// once (a call then costs one read lock and one lookup).
    seen: RwLock<crate::hash::FastMap<(usize, bool), Arc<Series>>>,
}

/// Calls, errors and latency per method (see the [module docs](self)).
/// Clones share the same series.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("methods", &self.seen().len())
            .finish()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn latency_histogram() -> Histogram {
    // 50 µs to about 13 s, doubling.
    Histogram::new(exponential_buckets(50e-6, 2.0, 19))
}

/// One method's figures in a [`MetricsSnapshot`].
#[derive(Debug, Clone, PartialEq)]
pub struct MethodMetrics {
    /// `"server"` or `"client"`.
    pub side: &'static str,
    /// The service's full name.
    pub service: &'static str,
    /// The method's name.
    pub method: &'static str,
    /// Calls that ended (with any outcome).
    pub calls: u64,
    /// Calls that ended with a status, by code.
    pub errors: BTreeMap<Code, u64>,
    /// Sum of the latencies.
    pub latency_sum: Duration,
}

impl MethodMetrics {
    /// The mean latency (zero before the first call).
    pub fn mean_latency(&self) -> Duration {
        u32::try_from(self.calls)
            .ok()
            .filter(|&n| n > 0)
            .map_or(Duration::ZERO, |n| self.latency_sum / n)
    }
}

/// The figures of every method seen so far, sorted by side, service and
/// method.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricsSnapshot {
    /// One entry per (side, service, method).
    pub methods: Vec<MethodMetrics>,
}

impl MetricsSnapshot {
    /// The entry of `method` of `service` on `side`.
    pub fn method(&self, side: &str, service: &str, method: &str) -> Option<&MethodMetrics> {
        self.methods
            .iter()
            .find(|m| m.side == side && m.service == service && m.method == method)
    }
}

const CODES: [Code; 16] = [
    Code::Cancelled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

impl Metrics {
    /// Empty series, registered as `rpc_calls`, `rpc_errors` and
    /// `rpc_latency_seconds`.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let calls = Family::<MethodLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let latency = Family::<MethodLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register("rpc_calls", "Calls that ended, by method", calls.clone());
        registry.register(
            "rpc_errors",
            "Calls that ended with a status, by method and code",
            errors.clone(),
        );
        registry.register(
            "rpc_latency_seconds",
            "Latency of calls, by method",
            latency.clone(),
        );
        Metrics(Arc::new(Inner {
            registry,
            calls,
            errors,
            latency,
            seen: RwLock::new(crate::hash::FastMap::default()),
        }))
    }

    fn seen(&self) -> Vec<Arc<Series>> {
        self.0
            .seen
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    fn series(
        &self,
        side: &'static str,
        service: &'static str,
        method: &'static MethodInfo,
    ) -> Arc<Series> {
        let key = (std::ptr::from_ref(method) as usize, side == "client");
        if let Some(series) = self
            .0
            .seen
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Arc::clone(series);
        }
        let labels = MethodLabels {
            side,
            service,
            method: method.name,
        };
        let series = Arc::new(Series {
            calls: self.0.calls.get_or_create(&labels).clone(),
            latency: self.0.latency.get_or_create(&labels).clone(),
            labels,
            latency_ns: AtomicU64::new(0),
        });
        Arc::clone(
            self.0
                .seen
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(key)
                .or_insert(series),
        )
    }

    fn record(
        &self,
        side: &'static str,
        service: &'static str,
        method: &'static MethodInfo,
        code: Option<Code>,
        elapsed: Duration,
    ) {
        let series = self.series(side, service, method);
        series.calls.inc();
        series.latency.observe(elapsed.as_secs_f64());
        series.latency_ns.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if let Some(code) = code {
            self.0
                .errors
                .get_or_create(&ErrorLabels {
                    side,
                    service,
                    method: method.name,
                    code: code.name(),
                })
                .inc();
        }
    }

    /// The figures so far.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let mut methods: Vec<MethodMetrics> = self
            .seen()
            .into_iter()
            .map(|series| {
                let labels = series.labels.clone();
                let nanos = series.latency_ns.load(Ordering::Relaxed);
                let calls = series.calls.get();
                let errors = CODES
                    .iter()
                    .filter_map(|&code| {
                        let n = self
                            .0
                            .errors
                            .get(&ErrorLabels {
                                side: labels.side,
                                service: labels.service,
                                method: labels.method,
                                code: code.name(),
                            })
                            .map_or(0, |c| c.get());
                        (n > 0).then_some((code, n))
                    })
                    .collect();
                MethodMetrics {
                    side: labels.side,
                    service: labels.service,
                    method: labels.method,
                    calls,
                    errors,
                    latency_sum: Duration::from_nanos(nanos),
                }
            })
            .collect();
        methods.sort_by(|a, b| (a.side, a.service, a.method).cmp(&(b.side, b.service, b.method)));
        MetricsSnapshot { methods }
    }

    /// Every series in the Prometheus (OpenMetrics) text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.0.registry) {
            tracing::warn!(%error, "encoding the metrics failed");
        }
        out
    }

    /// Serves [`Metrics::encode`] over HTTP/1.1 at `GET /metrics` on
    /// `addr`, until the returned endpoint is dropped.
    ///
    /// # Errors
    /// When `addr` cannot be bound.
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<MetricsEndpoint> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let metrics = self.clone();
        let task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(s) => s,
                    Err(error) => {
                        tracing::debug!(%error, "metrics endpoint: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    if let Err(error) = answer(stream, &metrics).await {
                        tracing::debug!(%error, %peer, "metrics endpoint: request failed");
                    }
                });
            }
        });
        Ok(MetricsEndpoint { addr: local, task })
    }
}

/// Answers one HTTP request on `stream` (then closes it).
async fn answer(mut stream: tokio::net::TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    const MAX_HEAD: usize = 8 << 10;
    let mut head = Vec::with_capacity(512);
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            if head.len() > MAX_HEAD {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "request head over 8 KiB",
                ));
            }
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok(())
    })
    .await;
    match read {
        Ok(r) => r?,
        Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next(), parts.next());
    let (status, content_type, body) = match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        (Some(b"GET"), _) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The HTTP endpoint of [`Metrics::serve`]; dropping it stops it.
#[derive(Debug)]
pub struct MetricsEndpoint {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsEndpoint {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Interceptor for Metrics {
    fn after(&self, call: &mut Completed<'_>) {
        self.record(
            "server",
            call.service.full_name,
            call.method,
            call.status.map(crate::Status::code),
            call.received_at.elapsed(),
        );
    }
}

impl ClientInterceptor for Metrics {
    fn after(&self, invocation: &InvocationInfo, outcome: &ClientOutcome<'_>) {
        let code = match outcome {
            ClientOutcome::Answer(Ok(_)) | ClientOutcome::Accepted | ClientOutcome::Sent => None,
            ClientOutcome::Answer(Err(status)) => Some(status.code()),
            ClientOutcome::Refused(status) => Some(status.code()),
            ClientOutcome::Failed(error) => Some(error.code()),
        };
        self.record(
            "client",
            invocation.service.full_name,
            invocation.method,
            code,
            invocation.started.elapsed(),
        );
    }
}
