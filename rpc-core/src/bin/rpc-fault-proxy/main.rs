//! `rpc-fault-proxy`: a fault-injecting UDP proxy in front of one server,
//! controlled while it runs through commands on its standard input.
//!
//! ```text
//! rpc-fault-proxy --listen 127.0.0.1:9000 --upstream 127.0.0.1:9001 \
//!     --loss 0.2 --dup 0.1 --reorder 0.05 --delay-ms 0..5 --seed 42 [--duration-secs N]
//! ```
//!
//! The command line is parsed by clap (`--help` lists every option, with
//! the per-direction `-c2s`/`-s2c` variants). The proxy itself is
//! [`rpc_core::fault::FaultProxy`]; this binary adds the command line, the
//! periodic counters and the control commands below.
//!
//! # Commands on standard input
//!
//! One command a line; each is answered with one line on standard output,
//! `ok ...` or `error: ...` (a bad command changes nothing and the proxy
//! goes on):
//!
//! | command | effect |
//! | --- | --- |
//! | `loss P`, `dup P`, `reorder P` | probability (0..=1) of a loss, a duplicate, a reordering |
//! | `reorder-hold MS` | longest hold of a reordered datagram (also `reorder-hold-ms`) |
//! | `delay D` | delay in milliseconds: `MS`, `MIN..MAX` or `BASE+-JITTER` (also `delay-ms`) |
//! | `seed N` | client-to-server seed `N`, server-to-client derived from it |
//! | `blackhole on`, `blackhole off` | drop everything both ways (counted as dropped), or stop doing so |
//! | `heal` | back to the start-up faults, blackhole off |
//! | `faults` | the faults in force |
//! | `stats` | the counters on one line of `key=value` pairs |
//! | `help` | the list of commands, on one line |
//! | `quit` | stop (final counters, exit status 0) |
//!
//! Each fault command may end in `-c2s` or `-s2c` (`loss-s2c 0.5`) to
//! change one direction only; the others change both. A fault change is
//! answered with the faults now in force, and restarts both generators from
//! their seeds. Empty lines and lines starting with `#` are ignored. End of
//! input stops the proxy only with `--exit-with-stdin`; otherwise it goes on
//! until Ctrl-C or `--duration-secs`.
//!
//! The commands are read by a small hand-written dispatcher on the first
//! word rather than by clap: its answers must be one line each (clap's
//! errors are several lines with a usage), and the values go through the
//! same parsers as the options.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

use clap::Parser;
use rpc_core::fault::FaultProxy;
use std::io::BufRead;
use std::process::ExitCode;
use tokio::sync::mpsc;

/// The command set, shown by `--help` and by the `help` command.
const COMMANDS: &str = "\
Commands on standard input (one a line, each answered on stdout with
`ok ...` or `error: ...`; a bad command changes nothing):
  loss P              probability a datagram is lost (0..=1)
  dup P               probability a datagram is delivered twice
  reorder P           probability a datagram is held back until a later one
                      overtook it
  reorder-hold MS     longest hold of a reordered datagram (milliseconds)
  delay D             delay in milliseconds: MS, MIN..MAX or BASE+-JITTER
  seed N              client-to-server seed N, server-to-client derived from N
      Each of these may end in -c2s or -s2c (loss-s2c 0.5) to change one
      direction only. A change answers with the faults now in force.
  blackhole on|off    drop everything both ways (counted), or stop doing so
  heal                back to the start-up faults, blackhole off
  faults              show the faults in force
  stats               print the counters on one line (key=value)
  help                the list of commands, on one line
  quit                stop the proxy (final counters, exit status 0)
End of input stops the proxy only with --exit-with-stdin.";

/// The command set on one line, the answer to `help`.
const COMMANDS_LINE: &str = "commands: loss P, dup P, reorder P, reorder-hold MS, \
delay MS|MIN..MAX|BASE+-JITTER, seed N (each may end in -c2s or -s2c), \
blackhole on|off, heal, faults, stats, help, quit (details: --help)";

/// Reads standard input on a thread of its own (a blocking read cannot be
/// cancelled, so it must not hold up the runtime's shutdown) and hands the
/// lines over; the channel closes at the end of input or on a read error.
fn spawn_stdin_reader() -> std::io::Result<mpsc::Receiver<String>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::Builder::new()
        .name("stdin".to_owned())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let config = cli.config();
    let proxy = FaultProxy::start(cli.listen, cli.upstream, config).await?;
    let mut commands = Some(spawn_stdin_reader()?);
    println!(
        "rpc-fault-proxy listening on {}, forwarding to {}",
        proxy.local_addr(),
        proxy.upstream()
    );
    let faults = proxy.config();
    println!("  client->server: {}", describe(&faults.client_to_server));
    println!("  server->client: {}", describe(&faults.server_to_client));
    let started = tokio::time::Instant::now();
    let stop_at = cli.duration_secs.map(|d| started + d);
    let mut ticker =
        (!cli.interval_secs.is_zero()).then(|| tokio::time::interval(cli.interval_secs));
    if let Some(t) = ticker.as_mut() {
        t.tick().await; // the first tick is immediate
    }
    let reason = loop {
        tokio::select! {
            signal = tokio::signal::ctrl_c() => break match signal {
                Ok(()) => "interrupted".to_owned(),
                Err(e) => format!("cannot listen for Ctrl-C ({e}); stopping"),
            },
            _ = async { match stop_at { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                break "duration reached".to_owned();
            }
            _ = async { match ticker.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending().await } } => {
                print_stats(&format!("after {:.1} s:", started.elapsed().as_secs_f64()), &proxy.stats());
            }
            command = async { match commands.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                let Some(command) = command else {
                    if cli.exit_with_stdin {
                        break "end of standard input".to_owned();
                    }
                    commands = None;
                    println!("standard input closed: no more commands; running until Ctrl-C{}",
                        if stop_at.is_some() { " or the duration" } else { "" });
                    continue;
                };
                let command = command.trim();
                if command.is_empty() || command.starts_with('#') {
                    continue;
                }
                match execute(&proxy, command) {
                    Ok(Outcome::Ok(answer)) => println!("ok {answer}"),
                    Ok(Outcome::Quit) => {
                        println!("ok quit");
                        break "quit".to_owned();
                    }
                    Err(message) => println!("error: {message}"),
                }
            }
        }
    };
    let stats = proxy.shutdown().await;
    print_stats(
        &format!(
            "stopped ({reason}) after {:.1} s; final counters:",
            started.elapsed().as_secs_f64()
        ),
        &stats,
    );
    Ok(())
}

fn main() -> ExitCode {
    // Usage errors: clap prints them on stderr and exits with status 2;
    // --help and --version on stdout with status 0.
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut message = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                message.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

mod args;
mod commands;
#[cfg(test)]
mod tests;

use args::*;
use commands::*;
