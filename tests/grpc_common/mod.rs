//! Helpers of the gRPC tests (`grpc_interop.rs`, `grpc_face.rs`): the
//! Python interpreter of the interop tests, Python code generated from our
//! emitted `.proto`, and Python child processes bounded in time.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The Python with grpcio and grpcio-tools: `$RPC_TEST_PYTHON`.
///
/// # Panics
/// When it is unset: the interop tests must not pass without running.
pub fn python() -> PathBuf {
    match std::env::var_os("RPC_TEST_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "RPC_TEST_PYTHON is not set: the gRPC interop tests need a Python with grpcio and grpcio-tools. \
             tests/run.sh sets it up; by hand: python3 -m venv /tmp/v && /tmp/v/bin/pip install grpcio grpcio-tools \
             && export RPC_TEST_PYTHON=/tmp/v/bin/python"
        ),
    }
}

/// The directory of the well-known `.proto` files that `grpc_tools`
/// ships (for protoc's `-I`).
///
/// # Panics
/// When `py` cannot run or has no `grpc_tools`.
pub fn well_known_protos(py: &Path) -> String {
    let out = Command::new(py)
        .args(["-c", "import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), '_proto'))"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {py:?} (RPC_TEST_PYTHON): {e}"));
    assert!(
        out.status.success(),
        "grpc_tools missing in {py:?} (RPC_TEST_PYTHON): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/interop/<name>`.
pub fn script(name: &str) -> PathBuf {
    manifest_dir().join("interop").join(name)
}

/// Generates Python for `tests/idl/<idl>` (`.proto` by our proto back end,
/// then grpcio-tools' protoc) into a fresh directory, with
/// `google.rpc.Status`; returns the directory.
pub fn generate_python(idl: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("grpc-interop")
        .join(format!(
            "{}-{}-{}",
            idl.replace('.', "_"),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
    let _ = std::fs::remove_dir_all(&dir);
    let proto_dir = dir.join("proto");
    std::fs::create_dir_all(&proto_dir).unwrap();
    let model = match rpc_codegen::load(&manifest_dir().join("idl").join(idl)) {
        Ok(m) => m,
        Err(d) => panic!("{d:?}"),
    };
    let mut names = Vec::new();
    for file in rpc_codegen::proto::generate(&model) {
        let path = proto_dir.join(&file.name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, file.contents).unwrap();
        names.push(file.name.to_string_lossy().into_owned());
    }
    let py = python();
    let well_known = well_known_protos(&py);
    let status = Command::new(&py)
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", proto_dir.display()))
        .arg(format!("-I{}", script("").display()))
        .arg(format!("-I{well_known}"))
        .arg(format!("--python_out={}", dir.display()))
        .arg(format!("--grpc_python_out={}", dir.display()))
        .args(&names)
        .arg("google/rpc/status.proto")
        .current_dir(&proto_dir)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "protoc failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    dir
}

/// A Python child process, killed when dropped.
pub struct PyChild {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Drop for PyChild {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tests/interop/server.py` for `version` on an ephemeral port;
/// returns it and its port once it printed `READY <port>` (at most 30 s).
pub fn python_server(gen: &Path, version: &str) -> (PyChild, u16) {
    let mut child = Command::new(python())
        .arg(script("server.py"))
        .arg("--gen")
        .arg(gen)
        .args(["--version", version])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stdin = child.stdin.take();
    let guard = PyChild { child, stdin };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        while let Some(Ok(line)) = lines.next() {
            if let Some(port) = line.strip_prefix("READY ") {
                let _ = tx.send(port.trim().parse::<u16>().ok());
                break;
            }
        }
        // Keep draining so the child never blocks on a full pipe.
        for _ in lines {}
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Some(port)) => (guard, port),
        other => panic!("python server did not get ready: {other:?}"),
    }
}

/// Runs `tests/interop/client.py` against `port` (at most 90 s); returns
/// its output, asserting it passed every check.
pub fn python_client(gen: &Path, port: u16, version: &str, peer: &str) -> String {
    python_client_with(gen, port, version, peer, &[])
}

/// As [`python_client`], with `extra` arguments (`--auth TOKEN`).
pub fn python_client_with(
    gen: &Path,
    port: u16,
    version: &str,
    peer: &str,
    extra: &[&str],
) -> String {
    let mut child = Command::new(python())
        .arg(script("client.py"))
        .args([
            "--port",
            &port.to_string(),
            "--version",
            version,
            "--peer",
            peer,
        ])
        .arg("--gen")
        .arg(gen)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("python client timed out; output so far is lost");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out.join().unwrap();
    let err = err.join().unwrap();
    assert!(
        status.success() && out.contains("ALL OK"),
        "python client failed ({status}):\n{out}\n{err}"
    );
    out
}
