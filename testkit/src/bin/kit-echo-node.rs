//! `kit-echo-node`: a UDP echo server, the child process of the test kit's
//! own node tests.
//!
//! ```text
//! kit-echo-node --listen ADDR [--data DIR] [--bare]
//! ```
//!
//! Binds a UDP socket on ADDR, appends the bound address to `DIR/starts`
//! (one line per start) when `--data` is given, prints
//! `listening on <addr>` (only `<addr>` with `--bare`) on standard output,
//! and sends every datagram back to its sender.
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "kit-echo-node: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut listen: Option<SocketAddr> = None;
    let mut data: Option<PathBuf> = None;
    let mut bare = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let v = args.next().ok_or("--listen needs an address")?;
                listen = Some(v.parse().map_err(|e| format!("--listen {v}: {e}"))?);
            }
            "--data" => data = Some(args.next().ok_or("--data needs a directory")?.into()),
            "--bare" => bare = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let listen = listen.ok_or("--listen is required")?;
    let socket = UdpSocket::bind(listen).map_err(|e| format!("cannot bind {listen}: {e}"))?;
    let addr = socket.local_addr().map_err(|e| e.to_string())?;
    if let Some(dir) = data {
        let path = dir.join("starts");
        let mut starts = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        writeln!(starts, "{addr}").map_err(|e| e.to_string())?;
    }
    let mut out = std::io::stdout().lock();
    let printed = if bare {
        writeln!(out, "{addr}")
    } else {
        writeln!(out, "listening on {addr}")
    };
    printed
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())?;
    let _ = writeln!(std::io::stderr(), "kit-echo-node: echoing on {addr}");
    let mut buf = [0u8; 65536];
    loop {
        let (n, from) = socket.recv_from(&mut buf).map_err(|e| e.to_string())?;
        socket.send_to(&buf[..n], from).map_err(|e| e.to_string())?;
    }
}
