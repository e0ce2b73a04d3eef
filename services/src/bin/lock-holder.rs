//! `lock-holder`: a client process that takes a lock and writes to a
//! `mutex.v1.Resource` with its token; the tests kill and pause it while
//! it holds the lock.
//!
//! ```text
//! lock-holder --server ADDR --resource ADDR --lock NAME --owner NAME
//!             [--lease-ms MS] [--go-file PATH]
//! ```
//!
//! Prints `holding token <t>` once granted, then waits until PATH exists
//! (polled every 10 ms; without `--go-file` it writes at once), writes the
//! token's low half to the resource and prints `write accepted` or `write
//! rejected highest <h>`, whether it still believed it held the lock
//! (`held <bool>`), releases and exits.
#![forbid(unsafe_code)]
// A binary that reports on the terminal.
#![allow(clippy::print_stdout)]

mod common;

use anyhow::Context as _;
use clap::Parser;
use common::say;
use rpc_core::client::UdpChannel;
use rpc_core::{CallError, Client};
use rpc_services::mutex::LockClient;
use rpc_services::proto::mutex::v1::{ResourceClient, WriteRequest};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A lock holder.
#[derive(Debug, Parser)]
#[command(name = "lock-holder", version)]
struct Args {
    /// The lock server.
    #[arg(long)]
    server: SocketAddr,
    /// The resource.
    #[arg(long)]
    resource: SocketAddr,
    /// The lock.
    #[arg(long)]
    lock: String,
    /// The owner name.
    #[arg(long)]
    owner: String,
    /// The lease.
    #[arg(long, default_value_t = 1_000)]
    lease_ms: u64,
    /// Write once this file exists.
    #[arg(long)]
    go_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::init_tracing("info");
    let args = Args::parse();
    let locks = LockClient::new(
        Client::new(UdpChannel::connect(args.server).await?),
        args.owner.clone(),
    )
    .lease(Duration::from_millis(args.lease_ms));
    let resource = ResourceClient::new(Client::new(UdpChannel::connect(args.resource).await?));
    let guard = locks.lock(&args.lock).await.context("acquiring")?;
    say(&format!("holding token {}", guard.token()))?;
    if let Some(go) = &args.go_file {
        while !go.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let held = guard.is_held();
    let write = WriteRequest {
        token: guard.token(),
        value: i64::from(guard.token() as u32),
    };
    match resource.write(write).await {
        Ok(_) => say("write accepted")?,
        Err(CallError::Raised(stale, _)) => {
            say(&format!("write rejected highest {}", stale.highest_token))?
        }
        Err(e) => return Err(e).context("writing"),
    }
    say(&format!("held {held}"))?;
    let _ = guard.release().await;
    say("done")?;
    Ok(())
}
