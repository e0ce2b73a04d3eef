//! `dmutex-peer`: one peer of a distributed mutual exclusion group per
//! process, running one of the five algorithms of `rpc_services::dmutex`;
//! the child process of the cross-process dmutex tests.
//!
//! ```text
//! dmutex-peer --algorithm ALG --id I --peers ADDR0,ADDR1,... --listen ADDR
//!             --record FILE --go-file PATH --stop-file PATH
//!             [--entries K] [--shape contended|sequential] [--hold-us U]
//!             [--give-up-ms MS]
//! ```
//!
//! Serves the algorithm's service on ADDR (normally the I-th of `--peers`)
//! and prints `dmutex-peer <i> listening on <addr>`; waits until the go
//! file exists (polled every 10 ms), so that every peer serves before any
//! sends; then enters the critical section K times (default 10). Each
//! entry is appended to the shared record FILE
//! (`rpc_services::dmutex::record`): `enter` once inside, `exit` before
//! leaving, `left` once its exit returned, with U microseconds inside between them. `contended`: the peer
//! asks again as soon as it has left; `sequential`: its entry k waits
//! until the record holds the k*N+I entries before it (peers take turns
//! in id order, so nobody contends). Then it prints `done <i> entries <e>
//! messages <m>` (its counters), keeps serving the others until the stop
//! file exists, prints `final <i> entries <e> messages <m>` and exits.
//!
//! A failed entry (a peer the algorithm needs does not answer) prints
//! `failed <i> entry <k>: <error>` and ends the process with an error,
//! without writing to the record. With `--give-up-ms`, so does an entry
//! not made within MS (for the crash tests: the algorithms themselves wait
//! until their calls' deadlines, a minute for a deferred grant, or for
//! ever for a token lost with its holder); the process exits at once, so
//! its abandoned request does not matter.
#![forbid(unsafe_code)]
// A binary that reports on the terminal.
#![allow(clippy::print_stdout)]

mod common;

use anyhow::Context as _;
use clap::Parser;
use common::say;
use rpc_services::dmutex::record::{count_lines, SectionLog};
use rpc_services::dmutex::{Algorithm, DmutexError, Peer, PeerConfig, MAX_PEERS};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The algorithm, as named on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Alg {
    /// A coordinator (peer 0) grants in arrival order.
    Central,
    /// A token passed around the ring.
    Ring,
    /// Ricart-Agrawala: deferred permissions.
    RicartAgrawala,
    /// Lamport: queues ordered by timestamps.
    Lamport,
    /// Maekawa: voting sets.
    Maekawa,
}

impl From<Alg> for Algorithm {
    fn from(a: Alg) -> Algorithm {
        match a {
            Alg::Central => Algorithm::Central,
            Alg::Ring => Algorithm::TokenRing,
            Alg::RicartAgrawala => Algorithm::RicartAgrawala,
            Alg::Lamport => Algorithm::Lamport,
            Alg::Maekawa => Algorithm::Maekawa,
        }
    }
}

/// How the peer asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Shape {
    /// Again as soon as it has left.
    Contended,
    /// In turn with the others, by id.
    Sequential,
}

/// One peer of a distributed mutual exclusion group.
#[derive(Debug, Parser)]
#[command(name = "dmutex-peer", version)]
struct Args {
    /// The algorithm.
    #[arg(long, value_enum)]
    algorithm: Alg,
    /// This peer's id (its index in `--peers`).
    #[arg(long)]
    id: u32,
    /// Every peer's address, by id, comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    peers: Vec<SocketAddr>,
    /// Where to serve.
    #[arg(long)]
    listen: SocketAddr,
    /// The shared record of critical sections.
    #[arg(long)]
    record: PathBuf,
    /// Start once this file exists.
    #[arg(long)]
    go_file: PathBuf,
    /// Exit once this file exists (after the entries).
    #[arg(long)]
    stop_file: PathBuf,
    /// Entries to make.
    #[arg(long, default_value_t = 10)]
    entries: u64,
    /// How to ask.
    #[arg(long, value_enum, default_value_t = Shape::Contended)]
    shape: Shape,
    /// Microseconds inside the critical section.
    #[arg(long, default_value_t = 0)]
    hold_us: u64,
    /// Give up an entry not made within this many milliseconds.
    #[arg(long)]
    give_up_ms: Option<u64>,
}

async fn wait_for_file(path: &Path) {
    while !path.exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::init_tracing("info");
    let args = Args::parse();
    let n = args.peers.len();
    anyhow::ensure!(
        (1..=MAX_PEERS).contains(&n),
        "a group of {n} peers (1 to {MAX_PEERS})"
    );
    anyhow::ensure!(
        (args.id as usize) < n,
        "--id {} is not an index of the {n} peers",
        args.id
    );
    let peer = Peer::new(args.algorithm.into(), args.id, n, PeerConfig::default());
    let server = peer
        .serve(&args.listen.to_string())
        .await
        .with_context(|| format!("serving on {}", args.listen))?;
    say(&format!(
        "dmutex-peer {} listening on {}",
        args.id,
        server.local_addr()
    ))?;
    wait_for_file(&args.go_file).await;
    peer.connect(&args.peers)
        .await
        .context("connecting to the peers")?;
    let mut record = SectionLog::open(&args.record, args.id)
        .with_context(|| format!("opening {}", args.record.display()))?;
    let hold = Duration::from_micros(args.hold_us);
    for k in 0..args.entries {
        if args.shape == Shape::Sequential {
            // Entry k of peer i comes after k*N+i entries have been left
            // (three lines each: enter, exit, left).
            let before = 3 * (k * n as u64 + u64::from(args.id));
            while count_lines(&args.record).context("reading the record")? < before {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let asked = SystemTime::now();
        let entered = match args.give_up_ms {
            Some(ms) => tokio::time::timeout(Duration::from_millis(ms), peer.enter())
                .await
                .unwrap_or_else(|_| {
                    Err(DmutexError::Peer {
                        peer: args.id,
                        detail: format!("gave up after {ms} ms"),
                    })
                }),
            None => peer.enter().await,
        };
        if let Err(e) = entered {
            say(&format!("failed {} entry {k}: {e}", args.id))?;
            return Err(e).context("entering the critical section");
        }
        record.enter(k, asked).context("recording an entry")?;
        if !hold.is_zero() {
            tokio::time::sleep(hold).await;
        }
        record.exit(k).context("recording an exit")?;
        if let Err(e) = peer.exit().await {
            say(&format!("failed {} entry {k}: {e}", args.id))?;
            return Err(e).context("leaving the critical section");
        }
        record.left(k).context("recording a release")?;
    }
    let s = peer.stats();
    say(&format!(
        "done {} entries {} messages {}",
        args.id, s.entries, s.messages
    ))?;
    wait_for_file(&args.stop_file).await;
    peer.stop();
    let s = peer.stats();
    say(&format!(
        "final {} entries {} messages {}",
        args.id, s.entries, s.messages
    ))?;
    if let Err(e) = server.shutdown(Duration::from_millis(200)).await {
        tracing::debug!(error = %e, "stopped with calls running");
    }
    Ok(())
}
