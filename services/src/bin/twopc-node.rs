//! `twopc-node`: one party of two-phase commit (`twopc.v1`), on UDP.
//!
//! ```text
//! twopc-node participant --name NAME --data-dir DIR [--listen ADDR] [--ask-every-ms MS]
//! twopc-node coordinator --data-dir DIR [--listen ADDR] --participant NAME=ADDR ...
//!            [--crash-at POINT] [--hold-at POINT --go-file FILE] [--fault-tx TX]
//! ```
//!
//! Opens the party's log in DIR (recovering from it), serves on ADDR
//! (default `127.0.0.1:0`) and prints `twopc-node <role> <name> listening
//! on <addr>`, then `torn tail cut at byte N` when its log had one. A log
//! that is corrupt in the middle stops it with a message naming the file.
//! It runs until killed.
//!
//! Testing aid: `--crash-at POINT` aborts the coordinator process at a
//! point of a transaction (`after-begin`, `after-prepare-votes`,
//! `after-decision`, `after-first-decision`); `--hold-at POINT --go-file
//! FILE` waits there until FILE exists; `--fault-tx TX` limits both to the
//! transaction TX (so a restart with the same command line runs on).
#![forbid(unsafe_code)]
// A binary that reports on the terminal.
#![allow(clippy::print_stdout)]

mod common;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use rpc_services::twopc::{
    serve_coordinator, serve_participant, CoordinatorConfig, CoordinatorServer, FaultAction,
    FaultPoint, Faults, ParticipantServer, TornTail,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// One party of two-phase commit.
#[derive(Debug, Parser)]
#[command(name = "twopc-node", version)]
struct Args {
    #[command(subcommand)]
    role: Role,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// A participant: a small durable key-value state.
    Participant {
        /// Its name (as the coordinator knows it).
        #[arg(long)]
        name: String,
        /// UDP address to serve on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Where its log is kept (created if missing).
        #[arg(long)]
        data_dir: PathBuf,
        /// How often to ask the coordinator about a prepared transaction.
        #[arg(long, default_value_t = 200)]
        ask_every_ms: u64,
    },
    /// The coordinator.
    Coordinator {
        /// UDP address to serve on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Where its log is kept (created if missing).
        #[arg(long)]
        data_dir: PathBuf,
        /// A participant, `NAME=HOST:PORT` (repeat for each).
        #[arg(long = "participant", value_parser = parse_member)]
        participants: Vec<(String, SocketAddr)>,
        /// Testing aid: abort the process at this point of a transaction.
        #[arg(long)]
        crash_at: Option<FaultPoint>,
        /// Testing aid: wait at this point until `--go-file` exists.
        #[arg(long, requires = "go_file")]
        hold_at: Option<FaultPoint>,
        /// The file that releases `--hold-at`.
        #[arg(long)]
        go_file: Option<PathBuf>,
        /// Only this transaction triggers `--crash-at` and `--hold-at`.
        #[arg(long)]
        fault_tx: Option<String>,
    },
}

fn parse_member(s: &str) -> Result<(String, SocketAddr), String> {
    let (name, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=HOST:PORT"))?;
    let addr = addr
        .parse()
        .map_err(|e| format!("{addr:?} is not an address: {e}"))?;
    Ok((name.to_owned(), addr))
}

fn announce(
    role: &str,
    name: &str,
    addr: SocketAddr,
    torn: Option<&TornTail>,
) -> anyhow::Result<()> {
    let mut lines = vec![format!("twopc-node {role} {name} listening on {addr}")];
    if let Some(t) = torn {
        lines.push(format!(
            "torn tail cut at byte {} ({} bytes: {})",
            t.offset, t.bytes, t.why
        ));
    }
    common::say_lines(lines)?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::init_tracing("info");
    let _server = match Args::parse().role {
        Role::Participant {
            name,
            listen,
            data_dir,
            ask_every_ms,
        } => {
            let dir = data_dir.clone();
            let n = name.clone();
            let participant =
                tokio::task::spawn_blocking(move || ParticipantServer::open(&n, &dir))
                    .await?
                    .with_context(|| format!("participant {name} cannot start"))?;
            let server = serve_participant(
                participant.clone(),
                &listen.to_string(),
                Duration::from_millis(ask_every_ms),
            )
            .await
            .with_context(|| format!("serving on {listen}"))?;
            announce(
                "participant",
                &name,
                server.local_addr(),
                participant.torn_tail(),
            )?;
            server
        }
        Role::Coordinator {
            listen,
            data_dir,
            participants,
            crash_at,
            hold_at,
            go_file,
            fault_tx,
        } => {
            let mut members = BTreeMap::new();
            for (name, addr) in participants {
                if members.insert(name.clone(), addr).is_some() {
                    bail!("participant {name} given twice");
                }
            }
            let mut faults = Faults::default();
            if let Some(point) = crash_at {
                faults = faults.at(point, fault_tx.clone(), FaultAction::Crash);
            }
            if let (Some(point), Some(go)) = (hold_at, go_file) {
                faults = faults.at(point, fault_tx.clone(), FaultAction::Hold(go));
            }
            let mut config = CoordinatorConfig::new(data_dir, members);
            config.faults = faults;
            let coordinator = tokio::task::spawn_blocking(move || CoordinatorServer::open(config))
                .await?
                .context("coordinator cannot start")?;
            let server = serve_coordinator(coordinator.clone(), &listen.to_string())
                .await
                .with_context(|| format!("serving on {listen}"))?;
            announce(
                "coordinator",
                "coordinator",
                server.local_addr(),
                coordinator.torn_tail(),
            )?;
            server
        }
    };
    std::future::pending::<()>().await;
    Ok(())
}
