//! Nodes as real child processes: start, address, kill, pause, resume,
//! restart on the same address and data, children that never outlive the
//! test, and the errors of bad input. Every wait is for an event (a line,
//! a process state, a datagram), bounded generously so that only a hung
//! test fails by time.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use rpc_testkit::{Cluster, Exit, Node, NodeBuilder, NodeError, Output, TestDir};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The bound of every wait: only a hung test reaches it.
const BOUND: Duration = Duration::from_secs(30);

fn echo(name: &str) -> NodeBuilder {
    NodeBuilder::new(name, env!("CARGO_BIN_EXE_kit-echo-node"))
        .args(["--listen", "{addr}", "--data", "{data}"])
}

fn sh(name: &str, script: &str) -> NodeBuilder {
    NodeBuilder::new(name, "sh").args(["-c", script])
}

/// Sends a datagram to `addr` and waits for it to come back.
fn ping(addr: SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(BOUND)).unwrap();
    socket.send_to(b"ping", addr).unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = socket.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"ping"[..], addr));
}

/// The state letter of a process (`R`, `S`, `T`, `Z`...), `None` when
/// there is no such process.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Whether a process is gone or dead (a zombie its new parent has not
/// reaped yet).
fn dead(pid: u32) -> bool {
    matches!(state(pid), None | Some('Z' | 'X'))
}

/// Waits (at most [`BOUND`]) until `f` holds.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + BOUND;
    while !f() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

fn read_pid(path: &Path) -> u32 {
    let mut text = String::new();
    assert!(
        eventually(|| {
            text = std::fs::read_to_string(path).unwrap_or_default();
            text.ends_with('\n')
        }),
        "no pid in {}",
        path.display()
    );
    text.trim().parse().unwrap()
}

/// Every error about a node names it and its log files.
fn assert_names(err: &NodeError, node: &str, logs: (&Path, &Path)) {
    let text = err.to_string();
    assert!(text.contains(&format!("node {node:?}")), "{text}");
    for log in [logs.0, logs.1] {
        assert!(text.contains(&log.display().to_string()), "{text}");
    }
}

fn run_logs(dir: &Path, node: &str, run: u32) -> (PathBuf, PathBuf) {
    (
        dir.join(node).join(format!("run-{run}.stdout")),
        dir.join(node).join(format!("run-{run}.stderr")),
    )
}

#[test]
fn a_node_starts_prints_its_address_and_serves() {
    let mut cluster = Cluster::new().unwrap();
    let node = cluster.start(echo("a")).unwrap();
    let addr = node.addr();
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0);
    assert_eq!(node.name(), "a");
    assert_eq!(node.run(), 1);
    assert!(node.is_running() && !node.is_paused());
    assert!(matches!(state(node.pid()), Some('R' | 'S')));
    assert!(node.logs().stdout.ends_with("a/run-1.stdout"));
    let line = node
        .wait_for_line(Output::Stderr, BOUND, |l| l.contains("echoing on"))
        .unwrap();
    assert!(line.ends_with(&addr.to_string()), "{line}");
    ping(addr);
    let starts = std::fs::read_to_string(node.data_dir().join("starts")).unwrap();
    assert_eq!(starts, format!("{addr}\n"));
    assert_eq!(cluster.addrs(), [addr]);
    cluster.passed();
}

#[test]
fn the_address_rule_takes_a_bare_address_or_a_closure() {
    let mut cluster = Cluster::new().unwrap();
    let bare = cluster.start(echo("bare").arg("--bare")).unwrap();
    ping(bare.addr());
    let custom = cluster
        .start(
            sh("custom", "echo starting; echo port=4321; exec sleep 600").address_from(|line| {
                let port: u16 = line.strip_prefix("port=")?.parse().ok()?;
                Some(SocketAddr::from(([127, 0, 0, 1], port)))
            }),
        )
        .unwrap();
    assert_eq!(custom.addr().port(), 4321);
    let taken = cluster.start(echo("bare")).unwrap_err();
    assert!(matches!(taken, NodeError::DuplicateName { .. }), "{taken}");
    cluster.passed();
}

#[test]
fn a_killed_node_restarts_on_its_address_with_its_data() {
    let mut cluster = Cluster::new().unwrap();
    let dir = cluster.dir().to_path_buf();
    let node = cluster.start(echo("a")).unwrap();
    let (addr, first) = (node.addr(), node.pid());
    assert_eq!(node.kill().unwrap(), Exit::Signal(9));
    assert!(!node.is_running());
    assert_eq!(node.exit(), Some(Exit::Signal(9)));
    assert!(state(first).is_none(), "reaped");

    node.restart().unwrap();
    assert_eq!(node.run(), 2);
    assert_eq!(node.addr(), addr);
    assert_ne!(node.pid(), first);
    assert_eq!(node.logs().stdout, run_logs(&dir, "a", 2).0);
    ping(addr);
    let starts = std::fs::read_to_string(node.data_dir().join("starts")).unwrap();
    assert_eq!(starts, format!("{addr}\n{addr}\n"));

    // Running: no restart; dead: no second kill.
    let err = node.restart().unwrap_err();
    assert!(matches!(err, NodeError::Running { .. }), "{err}");
    let logs = run_logs(&dir, "a", 2);
    assert_names(&err, "a", (&logs.0, &logs.1));
    node.kill().unwrap();
    let err = node.kill().unwrap_err();
    assert!(
        matches!(
            err,
            NodeError::NotRunning {
                exit: Exit::Signal(9),
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, "a", (&logs.0, &logs.1));
    cluster.passed();
}

#[test]
fn a_paused_node_is_stopped_until_resumed() {
    let mut cluster = Cluster::new().unwrap();
    let node = cluster.start(echo("a")).unwrap();
    node.pause().unwrap();
    assert!(node.is_paused() && node.is_running());
    assert_eq!(state(node.pid()), Some('T'));
    node.pause().unwrap(); // already paused: nothing to do

    // A datagram sent while it is stopped is answered once it continues.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(BOUND)).unwrap();
    socket.send_to(b"late", node.addr()).unwrap();
    node.resume().unwrap();
    assert!(!node.is_paused());
    assert_ne!(state(node.pid()), Some('T'));
    let mut buf = [0u8; 16];
    let (n, _) = socket.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"late");
    node.resume().unwrap(); // not paused: nothing to do

    // A paused node can be killed, and restarted.
    node.pause().unwrap();
    node.kill().unwrap();
    node.restart().unwrap();
    ping(node.addr());
    cluster.passed();
}

#[test]
fn a_node_that_keeps_starting_children_pauses_and_resumes() {
    // The shell waits in vfork for each child to exec: stopping both at
    // once would leave the shell's stop pending forever.
    let mut cluster = Cluster::new().unwrap();
    let script = "echo 127.0.0.1:9; while :; do /bin/true; done";
    let node = cluster.start(sh("busy", script)).unwrap();
    for _ in 0..200 {
        node.pause().unwrap();
        assert_eq!(state(node.pid()), Some('T'));
        node.resume().unwrap();
    }
    cluster.passed();
}

#[test]
fn a_missing_binary_is_a_clear_error() {
    let mut cluster = Cluster::new().unwrap();
    let dir = cluster.dir().to_path_buf();
    let err = cluster
        .start(NodeBuilder::new("ghost", dir.join("no-such-binary")))
        .unwrap_err();
    assert!(matches!(err, NodeError::Spawn { .. }), "{err}");
    let logs = run_logs(&dir, "ghost", 1);
    assert_names(&err, "ghost", (&logs.0, &logs.1));
    assert!(err.to_string().contains("no-such-binary"), "{err}");
    assert!(cluster.node("ghost").is_none());
    cluster.passed();
}

#[test]
fn a_binary_that_exits_at_start_is_a_clear_error() {
    let mut cluster = Cluster::new().unwrap();
    let dir = cluster.dir().to_path_buf();
    let err = cluster
        .start(sh("quitter", "echo 'cannot open the database' >&2; exit 3"))
        .unwrap_err();
    let NodeError::ExitedAtStart { exit, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(*exit, Exit::Code(3));
    let logs = run_logs(&dir, "quitter", 1);
    assert_names(&err, "quitter", (&logs.0, &logs.1));
    assert!(
        err.to_string().contains("cannot open the database"),
        "{err}"
    );
    cluster.passed();
}

#[test]
fn a_binary_that_prints_no_address_is_killed_and_named() {
    let mut cluster = Cluster::new().unwrap();
    let dir = cluster.dir().to_path_buf();
    // The bound is what is tested: it never prints an address, however
    // long it is given. Its command line names its data directory.
    let err = cluster
        .start(
            sh("mute", "echo hello; sleep 600; : {data}").start_timeout(Duration::from_millis(300)),
        )
        .unwrap_err();
    assert!(matches!(err, NodeError::NoAddress { .. }), "{err}");
    let logs = run_logs(&dir, "mute", 1);
    assert_names(&err, "mute", (&logs.0, &logs.1));
    let data = dir.join("mute/data").display().to_string();
    assert_eq!(mentioning(&data), Vec::<u32>::new(), "killed and reaped");
    cluster.passed();
}

/// The processes whose command line contains `text`.
fn mentioning(text: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(text))
        })
        .collect()
}

#[test]
fn a_dead_node_cannot_be_paused_resumed_or_killed_but_restarts() {
    let mut cluster = Cluster::new().unwrap();
    let dir = cluster.dir().to_path_buf();
    let node = cluster
        .start(sh("brief", "echo 127.0.0.1:9; exit 0"))
        .unwrap();
    assert_eq!(node.wait_exit(BOUND).unwrap(), Exit::Code(0));
    assert!(!node.is_running());
    let logs = run_logs(&dir, "brief", 1);
    for err in [
        node.pause().unwrap_err(),
        node.resume().unwrap_err(),
        node.kill().unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                NodeError::NotRunning {
                    exit: Exit::Code(0),
                    ..
                }
            ),
            "{err}"
        );
        assert_names(&err, "brief", (&logs.0, &logs.1));
    }
    let err = node
        .wait_for_line(Output::Stdout, BOUND, |l| l == "never")
        .unwrap_err();
    assert!(matches!(err, NodeError::NotRunning { .. }), "{err}");
    node.restart().unwrap();
    assert_eq!(node.run(), 2);
    assert_eq!(node.wait_exit(BOUND).unwrap(), Exit::Code(0));
    cluster.passed();
}

#[test]
fn helpers_die_with_their_node() {
    let mut cluster = Cluster::new().unwrap();
    let dir = cluster.dir().to_path_buf();
    // Killed: the whole group goes.
    let script = "sleep 600 & echo $! > {data}/helper; echo 127.0.0.1:9; wait";
    let node = cluster.start(sh("killed", script)).unwrap();
    let helper = read_pid(&dir.join("killed/data/helper"));
    assert!(!dead(helper));
    node.kill().unwrap();
    assert!(eventually(|| dead(helper)), "helper {helper} survived");

    // Exited by itself: what it left behind is killed once the exit is seen.
    let script = "sleep 600 & echo $! > {data}/helper; echo 127.0.0.1:9; exit 0";
    let node = cluster.start(sh("quit", script)).unwrap();
    let helper = read_pid(&dir.join("quit/data/helper"));
    node.wait_exit(BOUND).unwrap();
    assert!(eventually(|| dead(helper)), "helper {helper} survived");
    cluster.passed();
}

#[test]
fn dropping_the_cluster_kills_its_nodes_and_keeps_their_logs() {
    let mut cluster = Cluster::new().unwrap();
    let a = cluster.start(echo("a")).unwrap().pid();
    let node = cluster.start(echo("b")).unwrap();
    node.pause().unwrap();
    let b = node.pid();
    let dir = cluster.dir().to_path_buf();
    drop(cluster);
    assert!(
        state(a).is_none() && state(b).is_none(),
        "killed and reaped"
    );
    // Dropped without `passed()`, as by a failed test: the logs stay.
    assert!(dir.join("b/run-1.stderr").exists(), "{}", dir.display());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_cluster_that_passed_kills_its_nodes_and_removes_its_directory() {
    let mut cluster = Cluster::new().unwrap();
    let a = cluster.start(echo("a")).unwrap().pid();
    let dir = cluster.dir().to_path_buf();
    cluster.passed();
    assert!(state(a).is_none(), "killed and reaped");
    assert!(!dir.exists(), "a passing test's directory is removed");

    // Unless it is asked to stay.
    let mut cluster = Cluster::new().unwrap();
    cluster.start(echo("a")).unwrap();
    cluster.keep_dir();
    let dir = cluster.dir().to_path_buf();
    cluster.passed();
    assert!(dir.join("a/run-1.stderr").exists(), "{}", dir.display());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A test that fails by returning `Err` (`?`) or by a timeout dropping
/// its future never reaches `passed()`: its directory, with the logs its
/// errors name, is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_failing_by_an_error_or_a_timeout_keeps_its_directory() {
    async fn failing(dirs: &std::sync::Mutex<Vec<PathBuf>>) -> Result<(), NodeError> {
        let mut cluster = Cluster::new().unwrap();
        dirs.lock().unwrap().push(cluster.dir().to_path_buf());
        cluster.start(echo("a"))?;
        cluster.start(sh("quitter", "exit 3"))?; // fails: the test returns here
        cluster.passed();
        Ok(())
    }
    let dirs = std::sync::Mutex::new(Vec::new());
    let err = failing(&dirs).await.unwrap_err();
    assert!(matches!(err, NodeError::ExitedAtStart { .. }), "{err}");

    // A test whose future is dropped while it waits, as a timeout drops
    // it (here once the node is known to run, not after some time).
    let (running, dir) = tokio::sync::oneshot::channel();
    let test = tokio::spawn(async move {
        let mut cluster = Cluster::new().unwrap();
        tokio::task::block_in_place(|| cluster.start(echo("a")).map(drop)).unwrap();
        running.send(cluster.dir().to_path_buf()).unwrap();
        std::future::pending::<()>().await; // never finishes
        cluster.passed();
    });
    let dir = dir.await.unwrap();
    dirs.lock().unwrap().push(dir);
    test.abort();
    assert!(
        test.await.unwrap_err().is_cancelled(),
        "the future is dropped"
    );

    let dirs = dirs.into_inner().unwrap();
    assert_eq!(dirs.len(), 2);
    for dir in dirs {
        assert!(dir.join("a/run-1.stderr").exists(), "{}", dir.display());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// A test body that panics: unwinding drops its cluster, which kills the
/// nodes and what they started (their process groups), and keeps the
/// directory with their logs.
#[test]
fn a_panicking_test_leaves_no_child_running_and_keeps_the_logs() {
    let seen = std::sync::Mutex::new(None);
    let body = std::panic::catch_unwind(|| {
        let mut cluster = Cluster::new().unwrap();
        let echo_pid = cluster.start(echo("a")).unwrap().pid();
        let script = "sleep 600 & echo $! > {data}/helper; echo 127.0.0.1:9; wait";
        let node = cluster.start(sh("b", script)).unwrap();
        node.pause().unwrap(); // a stopped child dies too
        let b_pid = node.pid();
        let helper = read_pid(&cluster.dir().join("b/data/helper"));
        let pids = [echo_pid, b_pid, helper];
        assert!(
            pids.iter().all(|&p| !dead(p)),
            "all running before the panic"
        );
        *seen.lock().unwrap() = Some((pids, cluster.dir().to_path_buf()));
        panic!("the test body fails here");
    });
    assert!(body.is_err(), "the body panicked");
    let (pids, dir) = seen.into_inner().unwrap().unwrap();
    for pid in pids {
        assert!(
            eventually(|| dead(pid)),
            "process {pid} outlived the panicking test"
        );
    }
    assert!(dir.join("b/run-1.stdout").exists(), "{}", dir.display());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_node_outlives_the_thread_that_started_it() {
    let dir = TestDir::new().unwrap();
    let path = dir.path().to_path_buf();
    let (node, tid) = std::thread::spawn(move || {
        let node = echo("a").start(&path).unwrap();
        (node, nix::unistd::gettid())
    })
    .join()
    .unwrap();
    let mut node: Node = node;
    // The thread is gone for good: the kernel has finished its exit.
    assert!(eventually(
        || !Path::new(&format!("/proc/self/task/{tid}")).exists()
    ));
    ping(node.addr());
    assert!(node.is_running());
    drop(node);
    dir.passed();
}

/// Run by `children_die_with_the_test_process` as a process of its own:
/// starts a node, says its pid, and waits to be killed.
#[test]
#[ignore = "a helper process of children_die_with_the_test_process"]
fn helper_starts_a_node_and_waits() {
    let Ok(dir) = std::env::var("KIT_HELPER_DIR") else {
        return;
    };
    let dir = TestDir::at(dir).unwrap();
    let node = echo("orphan").start(dir.path()).unwrap();
    std::fs::write(dir.path().join("node.pid"), format!("{}\n", node.pid())).unwrap();
    std::thread::sleep(BOUND * 2);
}

#[test]
fn children_die_with_the_test_process() {
    /// Kills the helper if the test fails before it does.
    struct Helper(std::process::Child);
    impl Drop for Helper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let dir = TestDir::new().unwrap();
    let mut helper = Helper(
        Command::new(std::env::current_exe().unwrap())
            .args(["helper_starts_a_node_and_waits", "--exact", "--ignored"])
            .env("KIT_HELPER_DIR", dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = read_pid(&dir.path().join("node.pid"));
    assert!(!dead(pid));
    helper.0.kill().unwrap(); // SIGKILL: no destructor runs
    helper.0.wait().unwrap();
    assert!(
        eventually(|| dead(pid)),
        "node {pid} outlived its test process"
    );
    dir.passed();
}

#[test]
fn the_handles_move_between_threads() {
    fn send<T: Send>() {}
    fn sync<T: Send + Sync>() {}
    send::<Node>();
    send::<Cluster>();
    sync::<NodeBuilder>();
    sync::<TestDir>();
    sync::<rpc_testkit::Recorder<String, String>>();
    send::<rpc_testkit::Call<String, String>>();
}
