//! `lock-server`: the lock service (`mutex.v1.Locks`) of one process, on
//! UDP and, when asked, on TCP, TCP+TLS and gRPC too: one lock table
//! behind every door.
//!
//! ```text
//! lock-server --data-dir DIR [--listen ADDR] [--tcp ADDR] [--grpc ADDR]
//!             [--tls ADDR [--tls-cert PEM --tls-key PEM]]
//!             [--grace-ms MS] [--max-lease-ms MS] [--threads N]
//! ```
//!
//! Advances the epoch in DIR (one durable write per start: every token of
//! this run is higher than every token of the runs before), serves UDP on
//! ADDR (default `127.0.0.1:0`) and the TCP, TLS and gRPC doors asked for,
//! prints `lock-server tcp on <addr>`, `lock-server tls on <addr>` and
//! `lock-server grpc on <addr>` for those, then
//! `lock-server epoch <n> listening on <addr>` (the UDP door).
//!
//! The TLS door presents the certificate chain and key of `--tls-cert` and
//! `--tls-key` (PEM). Without them it makes its own at start, as the tour
//! does, for loopback use: a CA and a certificate for `localhost` signed by
//! it, and writes the CA to `DIR/tls-ca.pem` (before printing its line) for
//! clients to trust; the CA's key is never written. A data directory that cannot be read or written, or whose
//! epoch file is corrupt, stops it with a message naming the file. It runs
//! until killed.
#![forbid(unsafe_code)]
// A binary that reports on the terminal.
#![allow(clippy::print_stdout)]

mod common;

use anyhow::Context as _;
use clap::Parser;
use common::Door;
use rpc_core::tls::{LocalCa, TlsServerConfig};
use rpc_services::mutex::{epoch, serve, LockServer, LockServerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The lock service of one process.
#[derive(Debug, Parser)]
#[command(name = "lock-server", version)]
struct Args {
    /// UDP address to serve on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Also serve TCP on this address (same table, same reply history).
    #[arg(long)]
    tcp: Option<SocketAddr>,
    /// Also serve gRPC (HTTP/2) on this address.
    #[arg(long)]
    grpc: Option<SocketAddr>,
    /// Also serve TCP with TLS on this address.
    #[arg(long)]
    tls: Option<SocketAddr>,
    /// The TLS door's certificate chain (PEM); without it, a certificate
    /// for `localhost` is made at start (its CA in `DIR/tls-ca.pem`).
    #[arg(long, requires = "tls_key", requires = "tls")]
    tls_cert: Option<PathBuf>,
    /// The TLS door's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Where the epoch is kept (created if missing).
    #[arg(long)]
    data_dir: PathBuf,
    /// No grant until this long after the start (set it to the longest
    /// lease to keep holders of the previous run exclusive).
    #[arg(long, default_value_t = 0)]
    grace_ms: u64,
    /// Longest lease granted.
    #[arg(long, default_value_t = 300_000)]
    max_lease_ms: u64,
    /// Runtime threads. 1 (the default): every door, handler and the
    /// reaper on one thread, so that a release hands the lock to the
    /// parked acquire of the next waiter without waking another thread;
    /// more: a multi-thread runtime with that many workers.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(args.threads))
            .enable_all()
            .build()
    }
    .context("starting the runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    common::init_tracing("info");
    let epoch = epoch::advance(&args.data_dir).context("starting a new epoch")?;
    let mut config = LockServerConfig::new(epoch);
    config.grace = Duration::from_millis(args.grace_ms);
    config.limits.max_lease = Duration::from_millis(args.max_lease_ms);
    let server = serve(LockServer::new(config), &args.listen.to_string())
        .await
        .with_context(|| format!("serving on {}", args.listen))?;
    let who = "lock-server";
    let mut lines = Vec::new();
    if let Some(addr) = args.tcp {
        lines.push(common::open_door(&server, who, Door::Tcp, addr).await?);
    }
    if let Some(addr) = args.tls {
        let config = tls_config(&args).context("setting up TLS")?;
        lines.push(common::open_door(&server, who, Door::Tls(config), addr).await?);
    }
    if let Some(addr) = args.grpc {
        lines.push(common::open_door(&server, who, Door::Grpc, addr).await?);
    }
    lines.push(format!(
        "{who} epoch {epoch} listening on {}",
        server.local_addr()
    ));
    common::say_lines(lines)?;
    std::future::pending::<()>().await;
    drop(server);
    Ok(())
}

/// The TLS door's configuration: the given certificate and key, or a
/// certificate for `localhost` made now, signed by a CA made now whose
/// certificate goes to `DIR/tls-ca.pem`.
fn tls_config(args: &Args) -> anyhow::Result<TlsServerConfig> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let cert_pem =
            std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
        let key_pem = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
        return TlsServerConfig::from_pem(&cert_pem, &key_pem)
            .with_context(|| format!("{} and {}", cert.display(), key.display()));
    }
    let ca = LocalCa::new("lock-server CA")?;
    let ca_path = args.data_dir.join("tls-ca.pem");
    std::fs::write(&ca_path, ca.pem()).with_context(|| format!("writing {}", ca_path.display()))?;
    Ok(ca.server_config("localhost")?)
}
