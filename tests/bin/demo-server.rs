//! `demo-server`: the demo Counter service (`idl/demo.idl`) over UDP, as a
//! process of its own, for the crash tests (a real SIGKILL and restart).
//!
//! ```text
//! demo-server --listen 127.0.0.1:PORT [--exec-log FILE] [--exit-with-stdin]
//! ```
//!
//! Prints the bound address on the first line of stdout. With `--exec-log`
//! every execution appends `<session> <request id> <method> <payload hex>`
//! to FILE (flushed before the handler runs). With `--exit-with-stdin` it
//! exits when its stdin closes, so it never outlives a test that spawned it.
#![forbid(unsafe_code)]

use anyhow::Context as _;
use rpc_core::server::Server;
use rpc_core::Service;
use rpc_tests::{demo, CounterService, ExecLog};
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The demo Counter service over UDP, as a process of its own; prints the
/// bound address on the first line of stdout.
#[derive(Debug, clap::Parser)]
#[command(name = "demo-server", args_override_self = true)]
struct Args {
    /// The UDP address to serve on, e.g. 127.0.0.1:0 for any free port.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// Append `<session> <request id> <method> <payload hex>` to FILE for
    /// every execution, flushed before the handler runs.
    #[arg(long, value_name = "FILE")]
    exec_log: Option<PathBuf>,
    /// Exit when stdin closes, so as never to outlive the process that
    /// started this one.
    #[arg(long)]
    exit_with_stdin: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    let counter: Arc<dyn Service> = Arc::new(demo::CounterServer::new(CounterService::new()));
    let service: Arc<dyn Service> = match &args.exec_log {
        Some(path) => Arc::new(
            ExecLog::new(counter, path).with_context(|| format!("opening {}", path.display()))?,
        ),
        None => counter,
    };
    let server = Server::builder()
        .add_shared_service(service)
        .serve_udp(args.listen)
        .await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", server.local_addr())?;
        out.flush()?;
    }
    if args.exit_with_stdin {
        // A thread: reading stdin blocks. EOF (or an error) ends the process.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            let _ = tx.send(());
        });
        let _ = rx.await;
        server
            .shutdown(std::time::Duration::from_secs(1))
            .await
            .ok();
    } else {
        std::future::pending::<()>().await;
    }
    Ok(())
}
