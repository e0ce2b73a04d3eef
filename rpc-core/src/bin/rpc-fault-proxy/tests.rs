//! The command parsers and commands.

#[allow(clippy::wildcard_imports)] // the binary's parts, under test
use super::*;
use clap::error::ErrorKind;
use clap::CommandFactory;
use rpc_core::fault::{Delay, FaultConfig, ProxyConfig, ProxyFaults};
use std::net::SocketAddr;
use std::time::Duration;

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
