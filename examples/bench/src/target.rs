//! What is measured: a peer under test ([`Target`]), the part its row takes
//! in the ratios ([`Role`]), and the server task a baseline peer owns
//! ([`ServerTask`], started by [`spawn_server`]).

use anyhow::Context as _;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use tokio::net::{TcpListener, UdpSocket};
use tokio::runtime::Handle;
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
pub(crate) struct ServerTask(JoinHandle<()>);

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A socket a baseline's server listens on: bound on 127.0.0.1, on a port
/// the system picks.
pub(crate) trait Loopback: Sized + Send + 'static {
    /// Binds it.
    fn bind() -> impl Future<Output = io::Result<Self>> + Send;
    /// Where it is bound.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

impl Loopback for TcpListener {
    fn bind() -> impl Future<Output = io::Result<Self>> + Send {
        TcpListener::bind("127.0.0.1:0")
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpListener::local_addr(self)
    }
}

impl Loopback for UdpSocket {
    fn bind() -> impl Future<Output = io::Result<Self>> + Send {
        UdpSocket::bind("127.0.0.1:0")
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        UdpSocket::local_addr(self)
    }
}

/// Starts a baseline's server on `server_rt`: binds its socket in a task
/// there (so that the socket is that runtime's), then runs `serve` on it
/// in the same task. Returns once the socket is bound, with its address
/// and the task; `what` names the server in the error if it could not bind.
pub(crate) async fn spawn_server<S, F, Fut>(
    server_rt: &Handle,
    what: &str,
    serve: F,
) -> anyhow::Result<(SocketAddr, ServerTask)>
where
    S: Loopback,
    F: FnOnce(S) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = server_rt.spawn(async move {
        let socket = match S::bind().await {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let _ = tx.send(socket.local_addr());
        serve(socket).await;
    });
    let task = ServerTask(task);
    let addr = rx
        .await
        .with_context(|| format!("{what} did not start"))??;
    Ok((addr, task))
}
