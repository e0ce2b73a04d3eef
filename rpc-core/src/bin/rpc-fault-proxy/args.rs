//! The command line: options, fault arguments and their parsers.

#[allow(clippy::wildcard_imports)] // the binary's parts share its constants
use crate::*;
use clap::builder::RangedU64ValueParser;
use clap::Parser;
use rpc_core::fault::{Delay, FaultConfig, ProxyConfig, ProxyFaults, MAX_DELAY};
use std::net::SocketAddr;
use std::time::Duration;

/// Forwards UDP datagrams between clients and one server, dropping,
/// duplicating, reordering and delaying them per direction, seeded for
/// repeatability; its faults can be changed while it runs through commands
/// on standard input.
#[derive(Debug, Parser)]
#[command(name = "rpc-fault-proxy", version, after_help = COMMANDS, args_override_self = true)]
pub(crate) struct Cli {
    /// Address clients send to.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub(crate) listen: SocketAddr,
    /// The server's address.
    #[arg(long, value_name = "ADDR")]
    pub(crate) upstream: SocketAddr,
    #[command(flatten)]
    pub(crate) faults: FaultArgs,
    /// Clients mapped at once; a new client beyond it evicts the one idle
    /// longest.
    #[arg(long, value_name = "N", default_value_t = ProxyConfig::default().max_clients,
        value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub(crate) max_clients: usize,
    /// Datagrams queued per direction (delayed or held); more are dropped
    /// and counted as overflow.
    #[arg(long, value_name = "N", default_value_t = ProxyConfig::default().queue_limit,
        value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub(crate) queue_limit: usize,
    /// Forget a client silent (both ways) this long.
    #[arg(long, value_name = "S", default_value = "60", value_parser = positive_seconds)]
    pub(crate) idle_secs: Duration,
    /// Stop after S seconds (default: run until Ctrl-C, `quit` or, with
    /// --exit-with-stdin, the end of standard input).
    #[arg(long, value_name = "S", value_parser = seconds)]
    pub(crate) duration_secs: Option<Duration>,
    /// Print the counters every S seconds (0: only at exit).
    #[arg(long, value_name = "S", default_value = "1", value_parser = seconds)]
    pub(crate) interval_secs: Duration,
    /// Stop when standard input ends (by default the proxy goes on without
    /// commands).
    #[arg(long)]
    pub(crate) exit_with_stdin: bool,
}

// The fault options: the plain ones apply to both directions, the `-c2s`
// and `-s2c` ones to one direction and override the plain one whatever
// their order. (A plain comment: a doc comment here would become the
// about text of the whole command.)
#[derive(Debug, clap::Args)]
pub(crate) struct FaultArgs {
    /// Probability a datagram is lost (0..=1) [default: 0]
    #[arg(long, value_name = "P", value_parser = probability)]
    pub(crate) loss: Option<f64>,
    /// Probability a datagram is delivered twice [default: 0]
    #[arg(long, value_name = "P", value_parser = probability)]
    pub(crate) dup: Option<f64>,
    /// Probability a datagram is held back until a later one overtook it
    /// [default: 0]
    #[arg(long, value_name = "P", value_parser = probability)]
    pub(crate) reorder: Option<f64>,
    /// Longest hold of a reordered datagram, in milliseconds [default: 10]
    #[arg(long, value_name = "MS", value_parser = millis)]
    pub(crate) reorder_hold_ms: Option<Duration>,
    /// Delay per datagram in milliseconds (fractions allowed): MS, MIN..MAX
    /// or BASE+-JITTER [default: 0]
    #[arg(long, value_name = "D", value_parser = delay)]
    pub(crate) delay_ms: Option<Delay>,
    /// Seed of the client-to-server generator; server-to-client uses a seed
    /// derived from it
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        visible_alias = "seed-c2s"
    )]
    pub(crate) seed: u64,

    /// --loss for client-to-server datagrams only
    #[arg(long, value_name = "P", value_parser = probability, help_heading = DIRECTED, hide_short_help = true)]
    pub(crate) loss_c2s: Option<f64>,
    /// --loss for server-to-client datagrams only
    #[arg(long, value_name = "P", value_parser = probability, help_heading = DIRECTED, hide_short_help = true)]
    pub(crate) loss_s2c: Option<f64>,
    /// --dup for client-to-server datagrams only
    #[arg(long, value_name = "P", value_parser = probability, help_heading = DIRECTED, hide_short_help = true)]
    pub(crate) dup_c2s: Option<f64>,
    /// --dup for server-to-client datagrams only
    #[arg(long, value_name = "P", value_parser = probability, help_heading = DIRECTED, hide_short_help = true)]
    pub(crate) dup_s2c: Option<f64>,
    /// --reorder for client-to-server datagrams only
    #[arg(long, value_name = "P", value_parser = probability, help_heading = DIRECTED, hide_short_help = true)]
    pub(crate) reorder_c2s: Option<f64>,
    /// --reorder for server-to-client datagrams only
    #[arg(long, value_name = "P", value_parser = probability, help_heading = DIRECTED, hide_short_help = true)]
    pub(crate) reorder_s2c: Option<f64>,
    /// --reorder-hold-ms for client-to-server datagrams only
    #[arg(long, value_name = "MS", value_parser = millis, help_heading = DIRECTED, hide_short_help = true)]
    pub(crate) reorder_hold_ms_c2s: Option<Duration>,
    /// --reorder-hold-ms for server-to-client datagrams only
    #[arg(long, value_name = "MS", value_parser = millis, help_heading = DIRECTED, hide_short_help = true)]
    pub(crate) reorder_hold_ms_s2c: Option<Duration>,
    /// --delay-ms for client-to-server datagrams only
    #[arg(long, value_name = "D", value_parser = delay, help_heading = DIRECTED, hide_short_help = true)]
    pub(crate) delay_ms_c2s: Option<Delay>,
    /// --delay-ms for server-to-client datagrams only
    #[arg(long, value_name = "D", value_parser = delay, help_heading = DIRECTED, hide_short_help = true)]
    pub(crate) delay_ms_s2c: Option<Delay>,
    /// Seed of the server-to-client generator (instead of the derived one)
    #[arg(long, value_name = "N", help_heading = DIRECTED, hide_short_help = true)]
    pub(crate) seed_s2c: Option<u64>,
}

/// The heading of the per-direction options in `--help` (`-h` hides them).
pub(crate) const DIRECTED: &str = "Per-direction faults (override the plain option)";

impl FaultArgs {
    /// The faults the options describe.
    pub(crate) fn faults(&self) -> ProxyFaults {
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
    pub(crate) fn config(&self) -> ProxyConfig {
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

pub(crate) fn probability(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err("expected a probability between 0 and 1".to_owned()),
    }
}

pub(crate) fn millis(value: &str) -> Result<Duration, String> {
    let limit = MAX_DELAY.as_millis() as f64;
    match value.trim().parse::<f64>() {
        Ok(ms) if ms.is_finite() && (0.0..=limit).contains(&ms) => {
            Ok(Duration::from_secs_f64(ms / 1000.0))
        }
        _ => Err(format!("expected milliseconds from 0 to {limit}")),
    }
}

pub(crate) fn delay(value: &str) -> Result<Delay, String> {
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

pub(crate) fn seconds(value: &str) -> Result<Duration, String> {
    match value.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=1e9).contains(&s) => Ok(Duration::from_secs_f64(s)),
        _ => Err("expected seconds (0 to 1e9)".to_owned()),
    }
}

pub(crate) fn positive_seconds(value: &str) -> Result<Duration, String> {
    match seconds(value)? {
        d if d.is_zero() => Err("expected more than 0 seconds".to_owned()),
        d => Ok(d),
    }
}

pub(crate) fn seed(value: &str) -> Result<u64, String> {
    value
        .trim()
        .parse()
        .map_err(|_| "expected an unsigned integer".to_owned())
}

// Output.
