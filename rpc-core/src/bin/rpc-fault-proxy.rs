//! `rpc-fault-proxy`: a fault-injecting UDP proxy in front of one server.
//!
//! ```text
//! rpc-fault-proxy --listen 127.0.0.1:9000 --upstream 127.0.0.1:9001 \
//!     --loss 0.2 --dup 0.1 --reorder 0.05 --delay-ms 0..5 --seed 42 [--duration-secs N]
//! ```
//!
//! Prints its counters periodically and when it stops (Ctrl-C or the
//! duration). See `--help` for every option.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

use rpc_core::fault::{
    Delay, FaultConfig, FaultProxy, FaultStats, ProxyConfig, ProxyFaults, ProxyStats,
};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "\
usage: rpc-fault-proxy --upstream ADDR [options]

Forwards UDP datagrams between clients and ADDR, dropping, duplicating,
reordering and delaying them per direction, seeded for repeatability.

options:
  --listen ADDR          address clients send to (default 127.0.0.1:0)
  --upstream ADDR        the server's address (required)
  --loss P               probability a datagram is lost (0..=1, default 0)
  --dup P                probability a datagram is delivered twice (default 0)
  --reorder P            probability a datagram is held back until a later
                         one overtook it (default 0)
  --reorder-hold-ms MS   longest hold of a reordered datagram (default 10)
  --delay-ms D           delay per datagram: MS, MIN..MAX or BASE+-JITTER
                         (milliseconds, fractions allowed; default 0)
  --seed N               seed of the client-to-server generator (default 0;
                         server-to-client uses a seed derived from it)
      Each fault option may end in -c2s or -s2c (e.g. --loss-s2c 0.3) to
      apply to one direction only; plain options apply to both.
  --max-clients N        clients mapped at once (default 1024)
  --queue-limit N        datagrams queued per direction (default 4096)
  --idle-secs S          forget a client silent this long (default 60)
  --duration-secs S      stop after S seconds (default: run until Ctrl-C)
  --interval-secs S      print counters every S seconds (default 1, 0: only at exit)
  -h, --help             this text
";

/// What the command line asked for.
#[derive(Debug)]
struct Args {
    listen: SocketAddr,
    upstream: SocketAddr,
    config: ProxyConfig,
    duration: Option<Duration>,
    interval: Option<Duration>,
}

/// A usage error, printed with the usage hint.
#[derive(Debug)]
struct UsageError(String);

fn parse_probability(flag: &str, value: &str) -> Result<f64, UsageError> {
    match value.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(UsageError(format!(
            "{flag} expects a probability between 0 and 1, got `{value}`"
        ))),
    }
}

fn parse_ms(flag: &str, value: &str) -> Result<Duration, UsageError> {
    match value.trim().parse::<f64>() {
        Ok(ms) if ms.is_finite() && (0.0..=3_600_000.0).contains(&ms) => {
            Ok(Duration::from_secs_f64(ms / 1000.0))
        }
        _ => Err(UsageError(format!(
            "{flag} expects milliseconds (0 to 3600000), got `{value}`"
        ))),
    }
}

fn parse_delay(flag: &str, value: &str) -> Result<Delay, UsageError> {
    if let Some((min, max)) = value.split_once("..") {
        let (min, max) = (parse_ms(flag, min)?, parse_ms(flag, max)?);
        if min > max {
            return Err(UsageError(format!(
                "{flag}: minimum {value} is above the maximum"
            )));
        }
        Ok(Delay::uniform(min, max))
    } else if let Some((base, jitter)) = value.split_once("+-") {
        Ok(Delay::jitter(
            parse_ms(flag, base)?,
            parse_ms(flag, jitter)?,
        ))
    } else {
        Ok(Delay::fixed(parse_ms(flag, value)?))
    }
}

fn parse_number<T: std::str::FromStr>(
    flag: &str,
    value: &str,
    what: &str,
) -> Result<T, UsageError> {
    value
        .parse()
        .map_err(|_| UsageError(format!("{flag} expects {what}, got `{value}`")))
}

fn parse_addr(flag: &str, value: &str) -> Result<SocketAddr, UsageError> {
    value.parse().map_err(|_| {
        UsageError(format!(
            "{flag} expects an address like 127.0.0.1:9000, got `{value}`"
        ))
    })
}

fn parse_secs(flag: &str, value: &str) -> Result<Duration, UsageError> {
    match value.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=1e9).contains(&s) => Ok(Duration::from_secs_f64(s)),
        _ => Err(UsageError(format!("{flag} expects seconds, got `{value}`"))),
    }
}

/// Applies `apply` to the configurations the flag's suffix names.
fn for_directions(
    faults: &mut ProxyFaults,
    suffix: &str,
    apply: impl Fn(&mut FaultConfig),
) -> Result<(), UsageError> {
    match suffix {
        "" => {
            apply(&mut faults.client_to_server);
            apply(&mut faults.server_to_client);
        }
        "-c2s" => apply(&mut faults.client_to_server),
        "-s2c" => apply(&mut faults.server_to_client),
        _ => {
            return Err(UsageError(format!(
                "unknown direction suffix `{suffix}` (use -c2s or -s2c)"
            )))
        }
    }
    Ok(())
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Args>, UsageError> {
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut upstream = None;
    let mut faults = ProxyFaults::none();
    let mut seed = None;
    let mut seed_s2c = None;
    let mut config = ProxyConfig::default();
    let mut duration = None;
    let mut interval = Some(Duration::from_secs(1));
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        // `--flag=value` or `--flag value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        if !flag.starts_with("--") {
            return Err(UsageError(format!("unexpected argument `{arg}`")));
        }
        let value = match inline {
            Some(v) => v,
            None => args
                .next()
                .ok_or_else(|| UsageError(format!("{flag} needs a value")))?,
        };
        let (base, suffix) = match flag
            .strip_suffix("-c2s")
            .or_else(|| flag.strip_suffix("-s2c"))
        {
            Some(base) => (base, &flag[base.len()..]),
            None => (flag.as_str(), ""),
        };
        match base {
            "--listen" if suffix.is_empty() => listen = parse_addr(&flag, &value)?,
            "--upstream" if suffix.is_empty() => upstream = Some(parse_addr(&flag, &value)?),
            "--loss" => {
                let p = parse_probability(&flag, &value)?;
                for_directions(&mut faults, suffix, |c| c.loss = p)?;
            }
            "--dup" => {
                let p = parse_probability(&flag, &value)?;
                for_directions(&mut faults, suffix, |c| c.duplicate = p)?;
            }
            "--reorder" => {
                let p = parse_probability(&flag, &value)?;
                for_directions(&mut faults, suffix, |c| c.reorder = p)?;
            }
            "--reorder-hold-ms" => {
                let hold = parse_ms(&flag, &value)?;
                for_directions(&mut faults, suffix, |c| c.reorder_hold = hold)?;
            }
            "--delay-ms" => {
                let delay = parse_delay(&flag, &value)?;
                for_directions(&mut faults, suffix, |c| c.delay = delay)?;
            }
            "--seed" => {
                let n: u64 = parse_number(&flag, &value, "an unsigned integer")?;
                match suffix {
                    "-s2c" => seed_s2c = Some(n),
                    _ => seed = Some(n),
                }
            }
            "--max-clients" if suffix.is_empty() => {
                config.max_clients = parse_number(&flag, &value, "a positive integer")?;
            }
            "--queue-limit" if suffix.is_empty() => {
                config.queue_limit = parse_number(&flag, &value, "a positive integer")?;
            }
            "--idle-secs" if suffix.is_empty() => {
                config.client_idle_timeout = parse_secs(&flag, &value)?
            }
            "--duration-secs" if suffix.is_empty() => duration = Some(parse_secs(&flag, &value)?),
            "--interval-secs" if suffix.is_empty() => {
                let every = parse_secs(&flag, &value)?;
                interval = (!every.is_zero()).then_some(every);
            }
            _ => return Err(UsageError(format!("unknown option `{flag}`"))),
        }
    }
    let upstream = upstream.ok_or_else(|| UsageError("--upstream is required".to_owned()))?;
    let seed = seed.unwrap_or(0);
    // The same derivation as ProxyFaults::symmetric unless given explicitly.
    let derived = ProxyFaults::symmetric(FaultConfig::seeded(seed))
        .server_to_client
        .seed;
    faults.client_to_server.seed = seed;
    faults.server_to_client.seed = seed_s2c.unwrap_or(derived);
    config.faults = faults;
    Ok(Some(Args {
        listen,
        upstream,
        config,
        duration,
        interval,
    }))
}

fn describe(c: &FaultConfig) -> String {
    format!(
        "loss {:.3}, dup {:.3}, reorder {:.3} (hold {:?}), delay {:?}..{:?}, seed {}",
        c.loss, c.duplicate, c.reorder, c.reorder_hold, c.delay.min, c.delay.max, c.seed
    )
}

fn line(name: &str, s: &FaultStats) -> String {
    format!(
        "{name:<16} received {:>9}  forwarded {:>9}  dropped {:>8}  duplicated {:>8}  reordered {:>8}  delayed {:>9}  overflow {:>6}",
        s.received, s.forwarded, s.dropped, s.duplicated, s.reordered, s.delayed, s.overflow
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

async fn run(args: Args) -> Result<(), rpc_core::fault::FaultError> {
    let faults = args.config.faults.clone();
    let proxy = FaultProxy::start(args.listen, args.upstream, args.config).await?;
    println!(
        "rpc-fault-proxy listening on {}, forwarding to {}",
        proxy.local_addr(),
        proxy.upstream()
    );
    println!("  client->server: {}", describe(&faults.client_to_server));
    println!("  server->client: {}", describe(&faults.server_to_client));
    let started = tokio::time::Instant::now();
    let stop_at = args.duration.map(|d| started + d);
    let mut ticker = args.interval.map(tokio::time::interval);
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
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(UsageError(message)) => {
            eprintln!("error: {message}\n(run with --help for usage)");
            return ExitCode::from(2);
        }
    };
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
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
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

    fn parse(s: &str) -> Result<Option<Args>, UsageError> {
        parse_args(s.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn parses_the_documented_example() {
        let args = parse(
            "--listen 127.0.0.1:9000 --upstream 127.0.0.1:9001 --loss 0.2 --dup 0.1 --reorder 0.05 --delay-ms 0..5 --seed 42 --duration-secs 3",
        );
        let Ok(Some(args)) = args else {
            panic!("did not parse: {args:?}")
        };
        let c = &args.config.faults.client_to_server;
        assert_eq!(
            (c.loss, c.duplicate, c.reorder, c.seed),
            (0.2, 0.1, 0.05, 42)
        );
        assert_eq!(
            c.delay,
            Delay::uniform(Duration::ZERO, Duration::from_millis(5))
        );
        assert_eq!(args.config.faults.server_to_client.loss, 0.2);
        assert_ne!(args.config.faults.server_to_client.seed, 42);
        assert_eq!(args.duration, Some(Duration::from_secs(3)));
    }

    #[test]
    fn direction_suffixes_and_delay_forms() {
        let Ok(Some(args)) =
            parse("--upstream 127.0.0.1:1 --loss-s2c 0.5 --delay-ms-c2s 10+-2 --seed-s2c 9")
        else {
            panic!("did not parse")
        };
        let f = &args.config.faults;
        assert_eq!(
            (f.client_to_server.loss, f.server_to_client.loss),
            (0.0, 0.5)
        );
        assert_eq!(
            f.client_to_server.delay,
            Delay::jitter(Duration::from_millis(10), Duration::from_millis(2))
        );
        assert_eq!(f.server_to_client.seed, 9);
    }

    #[test]
    fn errors_are_clear() {
        let message = |s: &str| match parse(s) {
            Err(UsageError(m)) => m,
            other => format!("no error: {other:?}"),
        };
        assert_eq!(message("--loss 0.2"), "--upstream is required");
        assert!(message("--upstream 127.0.0.1:1 --loss 2").contains("probability between 0 and 1"));
        assert!(message("--upstream nowhere").contains("expects an address"));
        assert!(message("--upstream 127.0.0.1:1 --delay-ms 5..1").contains("above the maximum"));
        assert!(message("--upstream 127.0.0.1:1 --bogus 1").contains("unknown option `--bogus`"));
        assert!(message("--upstream").contains("needs a value"));
        assert!(
            message("--listen-c2s 127.0.0.1:1 --upstream 127.0.0.1:2").contains("unknown option")
        );
        assert!(matches!(parse("--help"), Ok(None)));
    }
}
