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

use clap::builder::RangedU64ValueParser;
use clap::Parser;
use rpc_core::fault::{
    Delay, FaultConfig, FaultProxy, FaultStats, ProxyConfig, ProxyFaults, ProxyStats, MAX_DELAY,
};
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
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

/// Forwards UDP datagrams between clients and one server, dropping,
/// duplicating, reordering and delaying them per direction, seeded for
/// repeatability; its faults can be changed while it runs through commands
/// on standard input.
#[derive(Debug, Parser)]
#[command(name = "rpc-fault-proxy", version, after_help = COMMANDS, args_override_self = true)]
struct Cli {
    /// Address clients send to.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The server's address.
    #[arg(long, value_name = "ADDR")]
    upstream: SocketAddr,
    #[command(flatten)]
    faults: FaultArgs,
    /// Clients mapped at once; a new client beyond it evicts the one idle
    /// longest.
    #[arg(long, value_name = "N", default_value_t = ProxyConfig::default().max_clients,
        value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    max_clients: usize,
    /// Datagrams queued per direction (delayed or held); more are dropped
    /// and counted as overflow.
    #[arg(long, value_name = "N", default_value_t = ProxyConfig::default().queue_limit,
        value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    queue_limit: usize,
    /// Forget a client silent (both ways) this long.
    #[arg(long, value_name = "S", default_value = "60", value_parser = positive_seconds)]
    idle_secs: Duration,
    /// Stop after S seconds (default: run until Ctrl-C, `quit` or, with
    /// --exit-with-stdin, the end of standard input).
    #[arg(long, value_name = "S", value_parser = seconds)]
    duration_secs: Option<Duration>,
    /// Print the counters every S seconds (0: only at exit).
    #[arg(long, value_name = "S", default_value = "1", value_parser = seconds)]
    interval_secs: Duration,
    /// Stop when standard input ends (by default the proxy goes on without
    /// commands).
    #[arg(long)]
    exit_with_stdin: bool,
}

// The fault options: the plain ones apply to both directions, the `-c2s`
// and `-s2c` ones to one direction and override the plain one whatever
// their order. (A plain comment: a doc comment here would become the
// about text of the whole command.)
#[derive(Debug, clap::Args)]
struct FaultArgs {
    /// Probability a datagram is lost (0..=1) [default: 0]
    #[arg(long, value_name = "P", value_parser = probability)]
    loss: Option<f64>,
    /// Probability a datagram is delivered twice [default: 0]
    #[arg(long, value_name = "P", value_parser = probability)]
    dup: Option<f64>,
    /// Probability a datagram is held back until a later one overtook it
    /// [default: 0]
    #[arg(long, value_name = "P", value_parser = probability)]
    reorder: Option<f64>,
    /// Longest hold of a reordered datagram, in milliseconds [default: 10]
    #[arg(long, value_name = "MS", value_parser = millis)]
    reorder_hold_ms: Option<Duration>,
    /// Delay per datagram in milliseconds (fractions allowed): MS, MIN..MAX
    /// or BASE+-JITTER [default: 0]
    #[arg(long, value_name = "D", value_parser = delay)]
    delay_ms: Option<Delay>,
    /// Seed of the client-to-server generator; server-to-client uses a seed
    /// derived from it
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        visible_alias = "seed-c2s"
    )]
    seed: u64,

    /// --loss for client-to-server datagrams only
    #[arg(long, value_name = "P", value_parser = probability, help_heading = DIRECTED, hide_short_help = true)]
    loss_c2s: Option<f64>,
    /// --loss for server-to-client datagrams only
    #[arg(long, value_name = "P", value_parser = probability, help_heading = DIRECTED, hide_short_help = true)]
    loss_s2c: Option<f64>,
    /// --dup for client-to-server datagrams only
    #[arg(long, value_name = "P", value_parser = probability, help_heading = DIRECTED, hide_short_help = true)]
    dup_c2s: Option<f64>,
    /// --dup for server-to-client datagrams only
    #[arg(long, value_name = "P", value_parser = probability, help_heading = DIRECTED, hide_short_help = true)]
    dup_s2c: Option<f64>,
    /// --reorder for client-to-server datagrams only
    #[arg(long, value_name = "P", value_parser = probability, help_heading = DIRECTED, hide_short_help = true)]
    reorder_c2s: Option<f64>,
    /// --reorder for server-to-client datagrams only
    #[arg(long, value_name = "P", value_parser = probability, help_heading = DIRECTED, hide_short_help = true)]
    reorder_s2c: Option<f64>,
    /// --reorder-hold-ms for client-to-server datagrams only
    #[arg(long, value_name = "MS", value_parser = millis, help_heading = DIRECTED, hide_short_help = true)]
    reorder_hold_ms_c2s: Option<Duration>,
    /// --reorder-hold-ms for server-to-client datagrams only
    #[arg(long, value_name = "MS", value_parser = millis, help_heading = DIRECTED, hide_short_help = true)]
    reorder_hold_ms_s2c: Option<Duration>,
    /// --delay-ms for client-to-server datagrams only
    #[arg(long, value_name = "D", value_parser = delay, help_heading = DIRECTED, hide_short_help = true)]
    delay_ms_c2s: Option<Delay>,
    /// --delay-ms for server-to-client datagrams only
    #[arg(long, value_name = "D", value_parser = delay, help_heading = DIRECTED, hide_short_help = true)]
    delay_ms_s2c: Option<Delay>,
    /// Seed of the server-to-client generator (instead of the derived one)
    #[arg(long, value_name = "N", help_heading = DIRECTED, hide_short_help = true)]
    seed_s2c: Option<u64>,
}

/// The heading of the per-direction options in `--help` (`-h` hides them).
const DIRECTED: &str = "Per-direction faults (override the plain option)";

impl FaultArgs {
    /// The faults the options describe.
    fn faults(&self) -> ProxyFaults {
        let mut faults = ProxyFaults::symmetric(FaultConfig::seeded(self.seed));
        if let Some(seed) = self.seed_s2c {
            faults.server_to_client.seed = seed;
        }
        let directions = [
            (
                &mut faults.client_to_server,
                self.loss_c2s,
                self.dup_c2s,
                self.reorder_c2s,
                self.reorder_hold_ms_c2s,
                self.delay_ms_c2s,
            ),
            (
                &mut faults.server_to_client,
                self.loss_s2c,
                self.dup_s2c,
                self.reorder_s2c,
                self.reorder_hold_ms_s2c,
                self.delay_ms_s2c,
            ),
        ];
        for (c, loss, dup, reorder, hold, delay) in directions {
            if let Some(p) = loss.or(self.loss) {
                c.loss = p;
            }
            if let Some(p) = dup.or(self.dup) {
                c.duplicate = p;
            }
            if let Some(p) = reorder.or(self.reorder) {
                c.reorder = p;
            }
            if let Some(hold) = hold.or(self.reorder_hold_ms) {
                c.reorder_hold = hold;
            }
            if let Some(delay) = delay.or(self.delay_ms) {
                c.delay = delay;
            }
        }
        faults
    }
}

impl Cli {
    fn config(&self) -> ProxyConfig {
        ProxyConfig {
            faults: self.faults.faults(),
            max_clients: self.max_clients,
            queue_limit: self.queue_limit,
            client_idle_timeout: self.idle_secs,
        }
    }
}

// Value parsers, shared by the options and the commands. Their messages
// follow clap's `invalid value 'X' for '--flag <P>': ` prefix.

fn probability(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err("expected a probability between 0 and 1".to_owned()),
    }
}

fn millis(value: &str) -> Result<Duration, String> {
    let limit = MAX_DELAY.as_millis() as f64;
    match value.trim().parse::<f64>() {
        Ok(ms) if ms.is_finite() && (0.0..=limit).contains(&ms) => {
            Ok(Duration::from_secs_f64(ms / 1000.0))
        }
        _ => Err(format!("expected milliseconds from 0 to {limit}")),
    }
}

fn delay(value: &str) -> Result<Delay, String> {
    if let Some((min, max)) = value.split_once("..") {
        let (min, max) = (millis(min)?, millis(max)?);
        if min > max {
            return Err("the minimum is above the maximum".to_owned());
        }
        Ok(Delay::uniform(min, max))
    } else if let Some((base, jitter)) = value.split_once("+-") {
        Ok(Delay::jitter(millis(base)?, millis(jitter)?))
    } else {
        Ok(Delay::fixed(millis(value)?))
    }
}

fn seconds(value: &str) -> Result<Duration, String> {
    match value.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=1e9).contains(&s) => Ok(Duration::from_secs_f64(s)),
        _ => Err("expected seconds (0 to 1e9)".to_owned()),
    }
}

fn positive_seconds(value: &str) -> Result<Duration, String> {
    match seconds(value)? {
        d if d.is_zero() => Err("expected more than 0 seconds".to_owned()),
        d => Ok(d),
    }
}

fn seed(value: &str) -> Result<u64, String> {
    value
        .trim()
        .parse()
        .map_err(|_| "expected an unsigned integer".to_owned())
}

// Output.

fn describe(c: &FaultConfig) -> String {
    format!(
        "loss {:.3}, dup {:.3}, reorder {:.3} (hold {:?}), delay {:?}..{:?}, seed {}",
        c.loss, c.duplicate, c.reorder, c.reorder_hold, c.delay.min, c.delay.max, c.seed
    )
}

fn describe_both(f: &ProxyFaults) -> String {
    format!(
        "c2s: {}; s2c: {}",
        describe(&f.client_to_server),
        describe(&f.server_to_client)
    )
}

fn line(name: &str, s: &FaultStats) -> String {
    format!(
        "{name:<16} received {:>9}  forwarded {:>9}  dropped {:>8}  duplicated {:>8}  reordered {:>8}  delayed {:>9}  overflow {:>6}  blackholed {:>8}",
        s.received, s.forwarded, s.dropped, s.duplicated, s.reordered, s.delayed, s.overflow, s.blackholed
    )
}

fn print_stats(title: &str, stats: &ProxyStats) {
    println!("{title}");
    println!("  {}", line("client->server", &stats.client_to_server));
    println!("  {}", line("server->client", &stats.server_to_client));
    println!(
        "  clients {} (evicted {}, expired {}), send errors {}, strays {}",
        stats.clients,
        stats.clients_evicted,
        stats.clients_expired,
        stats.send_errors,
        stats.strays
    );
}

/// The counters as one line of `key=value` pairs (the `stats` command).
fn stats_pairs(stats: &ProxyStats, blackhole: bool) -> String {
    let direction = |name: &str, s: &FaultStats| {
        [
            ("received", s.received),
            ("forwarded", s.forwarded),
            ("dropped", s.dropped),
            ("duplicated", s.duplicated),
            ("reordered", s.reordered),
            ("delayed", s.delayed),
            ("overflow", s.overflow),
            ("blackholed", s.blackholed),
        ]
        .iter()
        .map(|(key, value)| format!("{name}.{key}={value}"))
        .collect::<Vec<_>>()
        .join(" ")
    };
    format!(
        "{} {} clients={} evicted={} expired={} send_errors={} strays={} blackhole={}",
        direction("c2s", &stats.client_to_server),
        direction("s2c", &stats.server_to_client),
        stats.clients,
        stats.clients_evicted,
        stats.clients_expired,
        stats.send_errors,
        stats.strays,
        if blackhole { "on" } else { "off" }
    )
}

// Commands.

/// What a command line asks for.
#[derive(Debug)]
enum Outcome {
    /// Answer `ok ...` and go on.
    Ok(String),
    /// Stop the proxy.
    Quit,
}

/// Which directions a fault command changes (its name's suffix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Directions {
    Both,
    ClientToServer,
    ServerToClient,
}

/// Runs one command line against the proxy.
///
/// # Errors
/// The text of the `error: ...` answer; nothing has changed then.
fn execute(proxy: &FaultProxy, command: &str) -> Result<Outcome, String> {
    let mut words = command.split_whitespace();
    let Some(name) = words.next() else {
        return Err("empty command".to_owned());
    };
    let arg = words.next();
    if let Some(extra) = words.next() {
        return Err(format!("`{name}`: unexpected `{extra}`"));
    }
    let value = || arg.ok_or_else(|| format!("`{name}` needs a value (see `help`)"));
    let invalid = |e: String| format!("`{name}`: invalid value `{}`: {e}", arg.unwrap_or(""));
    let no_value = || match arg {
        Some(extra) => Err(format!("`{name}` takes no value, got `{extra}`")),
        None => Ok(()),
    };
    let (base, directions) = match (name.strip_suffix("-c2s"), name.strip_suffix("-s2c")) {
        (Some(base), _) => (base, Directions::ClientToServer),
        (_, Some(base)) => (base, Directions::ServerToClient),
        _ => (name, Directions::Both),
    };
    let both = directions == Directions::Both;
    let change = |apply: &dyn Fn(&mut FaultConfig)| -> Result<Outcome, String> {
        let faults = proxy
            .update_config(|f| {
                if directions != Directions::ServerToClient {
                    apply(&mut f.client_to_server);
                }
                if directions != Directions::ClientToServer {
                    apply(&mut f.server_to_client);
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Outcome::Ok(describe_both(&faults)))
    };
    match base {
        "loss" => {
            let p = probability(value()?).map_err(invalid)?;
            change(&|c| c.loss = p)
        }
        "dup" => {
            let p = probability(value()?).map_err(invalid)?;
            change(&|c| c.duplicate = p)
        }
        "reorder" => {
            let p = probability(value()?).map_err(invalid)?;
            change(&|c| c.reorder = p)
        }
        "reorder-hold" | "reorder-hold-ms" => {
            let hold = millis(value()?).map_err(invalid)?;
            change(&|c| c.reorder_hold = hold)
        }
        "delay" | "delay-ms" => {
            let d = delay(value()?).map_err(invalid)?;
            change(&|c| c.delay = d)
        }
        "seed" => {
            let n = seed(value()?).map_err(invalid)?;
            if both {
                // As --seed: the server-to-client seed derived from it.
                let derived = ProxyFaults::symmetric(FaultConfig::seeded(n));
                let faults = proxy
                    .update_config(|f| {
                        f.client_to_server.seed = derived.client_to_server.seed;
                        f.server_to_client.seed = derived.server_to_client.seed;
                    })
                    .map_err(|e| e.to_string())?;
                Ok(Outcome::Ok(describe_both(&faults)))
            } else {
                change(&|c| c.seed = n)
            }
        }
        _ if !both => Err(format!(
            "unknown command `{name}` (only fault commands take -c2s or -s2c; see `help`)"
        )),
        "blackhole" => match value()? {
            "on" => {
                proxy.blackhole(true);
                Ok(Outcome::Ok("blackhole on".to_owned()))
            }
            "off" => {
                proxy.blackhole(false);
                Ok(Outcome::Ok("blackhole off".to_owned()))
            }
            other => Err(format!(
                "`blackhole`: expected `on` or `off`, got `{other}`"
            )),
        },
        "heal" => {
            no_value()?;
            let faults = proxy.heal().map_err(|e| e.to_string())?;
            Ok(Outcome::Ok(format!(
                "healed, blackhole off; {}",
                describe_both(&faults)
            )))
        }
        "faults" => {
            no_value()?;
            let on = if proxy.is_blackholed() { "on" } else { "off" };
            Ok(Outcome::Ok(format!(
                "{}; blackhole {on}",
                describe_both(&proxy.config())
            )))
        }
        "stats" => {
            no_value()?;
            Ok(Outcome::Ok(format!(
                "stats {}",
                stats_pairs(&proxy.stats(), proxy.is_blackholed())
            )))
        }
        "help" => {
            no_value()?;
            Ok(Outcome::Ok(COMMANDS_LINE.to_owned()))
        }
        "quit" | "exit" => {
            no_value()?;
            Ok(Outcome::Quit)
        }
        _ => Err(format!("unknown command `{name}` (see `help`)")),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    fn parse(s: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("rpc-fault-proxy").chain(s.split_whitespace()))
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_are_the_library_defaults() -> Result<(), clap::Error> {
        let cli = parse("--upstream 127.0.0.1:1")?;
        let config = cli.config();
        let defaults = ProxyConfig::default();
        assert_eq!(config.max_clients, defaults.max_clients);
        assert_eq!(config.queue_limit, defaults.queue_limit);
        assert_eq!(config.client_idle_timeout, defaults.client_idle_timeout);
        assert_eq!(
            config.faults,
            ProxyFaults::symmetric(FaultConfig::seeded(0))
        );
        assert_eq!(cli.listen, SocketAddr::from(([127, 0, 0, 1], 0)));
        assert_eq!(cli.interval_secs, Duration::from_secs(1));
        assert!(!cli.exit_with_stdin);
        Ok(())
    }

    #[test]
    fn parses_the_documented_example() -> Result<(), clap::Error> {
        let cli = parse(
            "--listen 127.0.0.1:9000 --upstream 127.0.0.1:9001 --loss 0.2 --dup 0.1 --reorder 0.05 --delay-ms 0..5 --seed 42 --duration-secs 3",
        )?;
        let faults = cli.config().faults;
        let c = &faults.client_to_server;
        assert_eq!(
            (c.loss, c.duplicate, c.reorder, c.seed),
            (0.2, 0.1, 0.05, 42)
        );
        assert_eq!(
            c.delay,
            Delay::uniform(Duration::ZERO, Duration::from_millis(5))
        );
        assert_eq!(faults.server_to_client.loss, 0.2);
        assert_ne!(faults.server_to_client.seed, 42);
        assert_eq!(cli.duration_secs, Some(Duration::from_secs(3)));
        Ok(())
    }

    #[test]
    fn direction_suffixes_override_and_delay_forms() -> Result<(), clap::Error> {
        let cli = parse(
            "--upstream=127.0.0.1:1 --loss-s2c 0.5 --loss 0.1 --delay-ms-c2s 10+-2 --seed-s2c 9 --reorder-hold-ms 3",
        )?;
        let f = cli.config().faults;
        assert_eq!(
            (f.client_to_server.loss, f.server_to_client.loss),
            (0.1, 0.5),
            "the directed option wins whatever the order"
        );
        assert_eq!(
            f.client_to_server.delay,
            Delay::jitter(Duration::from_millis(10), Duration::from_millis(2))
        );
        assert_eq!(f.server_to_client.delay, Delay::NONE);
        assert_eq!(f.server_to_client.seed, 9);
        assert_eq!(f.server_to_client.reorder_hold, Duration::from_millis(3));
        assert_eq!(parse("--upstream 127.0.0.1:1 --seed-c2s 5")?.faults.seed, 5);
        assert_eq!(
            parse("--upstream 127.0.0.1:1 --loss 0.1 --loss 0.3")?
                .faults
                .loss,
            Some(0.3),
            "a repeated option: the last one counts"
        );
        Ok(())
    }

    #[test]
    fn errors_are_usage_errors() {
        let kind = |s: &str| parse(s).err().map(|e| e.kind());
        let message = |s: &str| parse(s).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(kind("--loss 0.2"), Some(ErrorKind::MissingRequiredArgument));
        assert!(message("--upstream 127.0.0.1:1 --loss 2")
            .contains("expected a probability between 0 and 1"));
        assert_eq!(kind("--upstream nowhere"), Some(ErrorKind::ValueValidation));
        assert!(message("--upstream 127.0.0.1:1 --delay-ms 5..1").contains("above the maximum"));
        assert_eq!(
            kind("--upstream 127.0.0.1:1 --bogus 1"),
            Some(ErrorKind::UnknownArgument)
        );
        assert_eq!(kind("--upstream"), Some(ErrorKind::InvalidValue));
        assert_eq!(
            kind("--listen-c2s 127.0.0.1:1 --upstream 127.0.0.1:2"),
            Some(ErrorKind::UnknownArgument)
        );
        assert_eq!(
            kind("--upstream 127.0.0.1:1 --max-clients 0"),
            Some(ErrorKind::ValueValidation)
        );
        assert_eq!(
            kind("--upstream 127.0.0.1:1 --idle-secs 0"),
            Some(ErrorKind::ValueValidation)
        );
        assert_eq!(kind("--help"), Some(ErrorKind::DisplayHelp));
        assert_eq!(kind("--version"), Some(ErrorKind::DisplayVersion));
        for e in [
            parse("--bogus").err(),
            parse("--upstream 127.0.0.1:1 --loss x").err(),
        ] {
            assert_eq!(e.map(|e| e.exit_code()), Some(2));
        }
    }

    #[test]
    fn help_lists_the_options_and_the_commands() {
        let long = Cli::command().render_long_help().to_string();
        for needle in [
            "--listen",
            "--upstream",
            "--loss-c2s",
            "--delay-ms-s2c",
            "--exit-with-stdin",
            "blackhole on|off",
            "heal",
            "stats",
            "quit",
        ] {
            assert!(long.contains(needle), "`{needle}` missing from --help");
        }
        let short = Cli::command().render_help().to_string();
        assert!(
            !short.contains("--loss-c2s"),
            "-h keeps to the plain options"
        );
        assert!(short.contains("blackhole on|off"));
    }

    #[test]
    fn command_values_use_the_option_parsers() {
        assert_eq!(probability(" 0.25"), Ok(0.25));
        assert!(probability("1.5").is_err());
        assert!(probability("NaN").is_err());
        assert_eq!(
            delay("5..20"),
            Ok(Delay::uniform(
                Duration::from_millis(5),
                Duration::from_millis(20)
            ))
        );
        assert_eq!(delay("7"), Ok(Delay::fixed(Duration::from_millis(7))));
        assert!(delay("20..5").is_err());
        assert!(millis("3600001").is_err());
    }
}
