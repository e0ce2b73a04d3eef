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
#![allow(clippy::print_stdout, clippy::print_stderr)]

use anyhow::{bail, Context as _};
use rpc_core::server::Server;
use rpc_core::Service;
use rpc_tests::{demo, CounterService, ExecLog};
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

struct Args {
    listen: SocketAddr,
    exec_log: Option<PathBuf>,
    exit_with_stdin: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut listen = None;
    let mut exec_log = None;
    let mut exit_with_stdin = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let v = args.next().context("--listen needs an address")?;
                listen = Some(
                    v.parse()
                        .with_context(|| format!("--listen {v}: not an address"))?,
                );
            }
            "--exec-log" => {
                exec_log = Some(PathBuf::from(
                    args.next().context("--exec-log needs a file")?,
                ))
            }
            "--exit-with-stdin" => exit_with_stdin = true,
            "-h" | "--help" => {
                println!("usage: demo-server --listen 127.0.0.1:PORT [--exec-log FILE] [--exit-with-stdin]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(Args {
        listen: listen.context("--listen is required")?,
        exec_log,
        exit_with_stdin,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
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
