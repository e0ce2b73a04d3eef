//! What is measured: a peer under test ([`Target`]), the part its row takes
//! in the ratios ([`Role`]), and the server task a peer owns ([`ServerTask`]).

use std::future::Future;
use tokio::task::JoinHandle;

/// One peer under test: a client already connected to its running server.
///
/// `call` makes one request/reply exchange with the 64-byte payload (or, for
/// a one-way target, one send) and checks the answer. Up to 64 calls run at
/// once, from as many tasks sharing the target (`Arc<Self>`); implement it
/// as `async fn call(&self) -> anyhow::Result<()>`.
pub(crate) trait Target: Send + Sync + 'static {
    /// The row label, e.g. `"raw tokio UDP echo"`.
    fn name(&self) -> String;
    /// What the row is for the ratios.
    fn role(&self) -> Role;
    /// Anything worth printing under the table after the run (counters).
    fn note(&self) -> String {
        String::new()
    }
    /// One call.
    fn call(&self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// How a row takes part in the ratios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The raw UDP echo: the latency reference.
    RawUdp,
    /// Plain tonic unary: the throughput reference.
    Tonic,
    /// Anything else (the framework's targets).
    Measured,
    /// The raw TCP echo (frames batched per write): TCP's floor.
    RawTcp,
    /// tarpc over TCP: the TCP throughput reference.
    Tarpc,
}

/// Aborts a server task when the target is dropped.
#[derive(Debug)]
pub(crate) struct ServerTask(pub(crate) JoinHandle<()>);

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}
