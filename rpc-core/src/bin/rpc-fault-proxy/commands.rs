//! The commands read on standard input, and the statistics printed.

#[allow(clippy::wildcard_imports)] // the binary's parts share its constants
use crate::*;
use rpc_core::fault::{FaultConfig, FaultProxy, FaultStats, ProxyFaults, ProxyStats};

pub(crate) fn describe(c: &FaultConfig) -> String {
    format!(
        "loss {:.3}, dup {:.3}, reorder {:.3} (hold {:?}), delay {:?}..{:?}, seed {}",
        c.loss, c.duplicate, c.reorder, c.reorder_hold, c.delay.min, c.delay.max, c.seed
    )
}

pub(crate) fn describe_both(f: &ProxyFaults) -> String {
    format!(
        "c2s: {}; s2c: {}",
        describe(&f.client_to_server),
        describe(&f.server_to_client)
    )
}

pub(crate) fn line(name: &str, s: &FaultStats) -> String {
    format!(
        "{name:<16} received {:>9}  forwarded {:>9}  dropped {:>8}  duplicated {:>8}  reordered {:>8}  delayed {:>9}  overflow {:>6}  blackholed {:>8}",
        s.received, s.forwarded, s.dropped, s.duplicated, s.reordered, s.delayed, s.overflow, s.blackholed
    )
}

pub(crate) fn print_stats(title: &str, stats: &ProxyStats) {
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
pub(crate) fn stats_pairs(stats: &ProxyStats, blackhole: bool) -> String {
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
pub(crate) enum Outcome {
    /// Answer `ok ...` and go on.
    Ok(String),
    /// Stop the proxy.
    Quit,
}

/// Which directions a fault command changes (its name's suffix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Directions {
    Both,
    ClientToServer,
    ServerToClient,
}

/// Runs one command line against the proxy.
///
/// # Errors
/// The text of the `error: ...` answer; nothing has changed then.
pub(crate) fn execute(proxy: &FaultProxy, command: &str) -> Result<Outcome, String> {
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
