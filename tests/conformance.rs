//! Conformance: a peer written in another language from the protocol's own
//! files alone speaks the protocol with our server.
//!
//! `tests/conformance/peer.py` is a Python client built from the `.proto`
//! files our compiler emits for `idl/rpc/envelope.idl` and `idl/demo.idl`
//! (turned into Python by grpcio-tools' protoc here, at test time) and from
//! the specification, `idl/PROTOCOL.md`; it knows nothing of the Rust code.
//! It sends raw UDP datagrams to the `demo-server` binary, a child process,
//! and asserts what the specification says the server answers: PING and
//! PONG, retransmitted copies of an RR request, RRA with its ACK and a late
//! duplicate, ACCEPT and polling, a typed raise, a deadline that passed
//! before the request could run, malformed datagrams of every kind, and a
//! server killed and restarted (this test kills and restarts it on the same
//! port when the peer prints `RESTART`, and answers `RESTARTED`).
//!
//! The test fails when the peer exits non-zero, and prints its output. It
//! also reads the server's execution log (written before each handler runs,
//! across both incarnations): no non-idempotent request ran twice.
//!
//! Needs `RPC_TEST_PYTHON` (a Python with grpcio-tools and protobuf;
//! `tests/run.sh` sets it up); fails with a clear message without it.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // a failed unwrap is a failed test; the peer's transcript is the test's output

mod grpc_common;

use grpc_common::{python, well_known_protos};
use rpc_tests::{read_exec_log, scratch_file, ChildServer};
use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The whole peer run, restart included (a safety net: it takes about 15 s).
const PEER_LIMIT: Duration = Duration::from_secs(240);
/// Starting `demo-server` (it prints its address once it is bound).
const START_LIMIT: Duration = Duration::from_secs(20);

fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Emits `rpc/envelope.proto` and `demo.proto` into `dir/proto` (as
/// `rpcgen proto idl/rpc/envelope.idl idl/demo.idl` does) and has protoc
/// write their Python modules into `dir`.
fn generate_python(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    let proto_dir = dir.join("proto");
    std::fs::create_dir_all(&proto_dir).unwrap();
    let idls = [
        repo_dir().join("idl/rpc/envelope.idl"),
        repo_dir().join("idl/demo.idl"),
    ];
    let roots: Vec<&Path> = idls.iter().map(PathBuf::as_path).collect();
    let model = match rpc_codegen::load_many(&roots) {
        Ok(m) => m,
        Err(d) => panic!("{}", d.render()),
    };
    let mut names = Vec::new();
    for file in rpc_codegen::proto::generate(&model) {
        let path = proto_dir.join(&file.name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, file.contents).unwrap();
        names.push(file.name.to_string_lossy().into_owned());
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["demo.proto", "rpc/envelope.proto"],
        "the files `rpcgen proto idl/rpc/envelope.idl idl/demo.idl` emits"
    );
    let py = python();
    let well_known = well_known_protos(&py);
    let out = Command::new(&py)
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", proto_dir.display()))
        .arg(format!("-I{well_known}"))
        .arg(format!("--python_out={}", dir.display()))
        .args(&names)
        .current_dir(&proto_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "protoc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn python_peer_written_from_the_specification_speaks_the_protocol() {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let gen = tmp
        .join("conformance")
        .join(format!("gen-{}", std::process::id()));
    generate_python(&gen);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_demo-server"));
    let log = scratch_file(tmp, "conformance-exec");
    let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut server = Some(
        rt.block_on(ChildServer::start(bin, any_port, Some(&log), START_LIMIT))
            .unwrap(),
    );
    let addr = server.as_ref().unwrap().addr();

    let peer_script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("conformance")
        .join("peer.py");
    let mut cmd = Command::new(python());
    cmd.arg("-u")
        .arg(&peer_script)
        .arg("--server")
        .arg(addr.to_string())
        .arg("--gen")
        .arg(&gen)
        .arg("--proto")
        .arg(gen.join("proto"));
    let mut peer = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = peer.stdin.take();
    let stdout = peer.stdout.take().unwrap();
    let mut stderr = peer.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    // The peer's transcript; at its `RESTART` line, kill the server and
    // start it again on the same address.
    let mut transcript = String::new();
    let mut restarts = 0;
    let start = Instant::now();
    loop {
        let left = PEER_LIMIT.saturating_sub(start.elapsed());
        match lines.recv_timeout(left) {
            Ok(line) => {
                transcript.push_str(&line);
                transcript.push('\n');
                if line == "RESTART" {
                    restarts += 1;
                    assert_eq!(
                        restarts, 1,
                        "the peer asked for a second restart:\n{transcript}"
                    );
                    server.take().unwrap().kill().unwrap();
                    let again = rt
                        .block_on(ChildServer::start(bin, addr, Some(&log), START_LIMIT))
                        .unwrap();
                    assert_eq!(again.addr(), addr, "restarted on the same address");
                    server = Some(again);
                    transcript.push_str("(driver: server killed and restarted)\n");
                    let answered = stdin
                        .as_mut()
                        .map(|s| s.write_all(b"RESTARTED\n").and_then(|()| s.flush()));
                    assert!(
                        matches!(answered, Some(Ok(()))),
                        "cannot tell the peer: {answered:?}\n{transcript}"
                    );
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = peer.kill();
                let _ = peer.wait();
                panic!("the peer did not finish within {PEER_LIMIT:?}; its output:\n{transcript}");
            }
        }
    }
    drop(stdin);
    let status = peer.wait().unwrap();
    let errors = errors.join().unwrap();
    println!("{transcript}");
    assert!(
        status.success() && transcript.contains("\nALL OK\n"),
        "the conformance peer failed ({status}):\n{transcript}\n{errors}"
    );
    assert_eq!(
        restarts, 1,
        "the peer never asked for the restart:\n{transcript}"
    );
    drop(server);

    // Across both incarnations, no non-idempotent request ran twice.
    let executions = read_exec_log(&log).unwrap();
    let mut seen: HashMap<(u64, u64), usize> = HashMap::new();
    for e in &executions {
        if e.method != "Get" && e.method != "Echo" {
            *seen.entry((e.session, e.request_id)).or_default() += 1;
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(
        twice.is_empty(),
        "requests that ran more than once: {twice:?}"
    );
    assert!(
        seen.len() > 1024,
        "the execution log holds {} non-idempotent executions, fewer than the deadline check's fillers",
        seen.len()
    );
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_dir_all(&gen);
}
