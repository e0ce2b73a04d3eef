//! What the package's binaries (`clock-node`, `lock-server`, `raft-node`,
//! ...) share, kept out of the library so that the library never prints:
//! their logging set-up (the library's, which the tour and the bench
//! use too), their line-by-line output to a test harness, and
//! the extra doors (`--tcp`, `--tls`, `--grpc`) a server binary opens
//! beside its UDP one.
//!
//! Each binary declares `mod common;` (a folder, so that cargo does not
//! take it for a binary of its own) and uses the part it needs.

// Each binary compiles its own copy and uses a part of it.
#![allow(dead_code)]

use anyhow::Context as _;
use rpc_core::server::{ServerHandle, TcpServerConfig};
use rpc_core::tls::TlsServerConfig;
use std::fmt::Display;
use std::io::Write as _;
use std::net::SocketAddr;

pub(crate) use rpc_services::init_tracing;

/// Writes `line` to stdout and flushes it at once (a harness reading the
/// process's output waits for it).
///
/// # Errors
/// When stdout cannot be written.
pub(crate) fn say(line: &str) -> std::io::Result<()> {
    say_lines([line])
}

/// Writes `lines` to stdout, one a line, and flushes once after the last.
///
/// # Errors
/// When stdout cannot be written.
pub(crate) fn say_lines<I>(lines: I) -> std::io::Result<()>
where
    I: IntoIterator,
    I::Item: Display,
{
    let mut out = std::io::stdout().lock();
    for line in lines {
        writeln!(out, "{line}")?;
    }
    out.flush()
}

/// A door a server binary can open beside its UDP one.
#[derive(Debug)]
pub(crate) enum Door {
    /// TCP (`--tcp`).
    Tcp,
    /// TCP with TLS (`--tls`), with this configuration.
    Tls(TlsServerConfig),
    /// gRPC over HTTP/2 (`--grpc`).
    Grpc,
}

impl Door {
    /// The door's name in the binaries' lines (`<binary> tcp on <addr>`)
    /// and in their errors (`serving TCP on <addr>`).
    fn names(&self) -> (&'static str, &'static str) {
        match self {
            Door::Tcp => ("tcp", "TCP"),
            Door::Tls(_) => ("tls", "TLS"),
            Door::Grpc => ("grpc", "gRPC"),
        }
    }
}

/// Opens `door` on `server` at `addr` (the same services behind it) and
/// returns the line that announces it, `<who> <door> on <bound address>`.
///
/// # Errors
/// When the door cannot be opened; the error names the door and `addr`.
pub(crate) async fn open_door(
    server: &ServerHandle,
    who: &str,
    door: Door,
    addr: SocketAddr,
) -> anyhow::Result<String> {
    let (name, label) = door.names();
    let bound = match door {
        Door::Tcp => server.serve_tcp(addr).await,
        Door::Tls(config) => {
            server
                .serve_tcp_with(addr, TcpServerConfig::default().with_tls(config))
                .await
        }
        Door::Grpc => server.serve_grpc(addr).await,
    }
    .with_context(|| format!("serving {label} on {addr}"))?;
    Ok(format!("{who} {name} on {bound}"))
}
