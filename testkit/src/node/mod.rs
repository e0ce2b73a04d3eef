//! Nodes: real child processes that a test starts, kills, pauses and
//! restarts.
//!
//! A [`NodeBuilder`] says what to run (any binary, its arguments and
//! environment, with `{addr}` and `{data}` placeholders); [`NodeBuilder::start`]
//! runs it with its output in files under `<dir>/<name>/` and reads its
//! address from its standard output. The [`Node`] it returns controls the
//! process: [`Node::kill`], [`Node::pause`], [`Node::resume`],
//! [`Node::restart`] on the same address and data directory.
//!
//! # Files
//!
//! ```text
//! <dir>/<name>/data/          the node's data directory, kept across restarts ({data})
//! <dir>/<name>/run-1.stdout   standard output of the first run
//! <dir>/<name>/run-1.stderr   standard error of the first run
//! <dir>/<name>/run-2.stdout   ... of the run after the first restart, and so on
//! ```
//!
//! Every error about a node names it and the log files of its current run.
//!
//! # The address
//!
//! The address is the first line of standard output that the rule accepts
//! (by default [`address_in_line`]: a line that is a socket address, or one
//! containing `listening on <addr>`; [`NodeBuilder::address_from`] gives
//! another), read within [`NodeBuilder::start_timeout`]. Only complete
//! lines are read. A process that exits first, or prints no such line in
//! time, is an error (the latter is killed).
//!
//! # Children never outlive the test
//!
//! Each child leads a process group of its own, and every signal goes to
//! the group, so helpers it starts are killed, stopped and continued with
//! it (a pause stops the child first, then the group: see
//! [`Node::pause`]). On Linux each child also gets SIGKILL as its parent-death signal, so
//! it dies when the test process dies, even by SIGKILL or an abort;
//! elsewhere only the drop of the [`Node`] kills it (which a panicking test
//! still runs). When the process exits by itself, its group is sent SIGKILL
//! as soon as the exit is observed, then the process is reaped.
//!
//! # Blocking
//!
//! The methods block the calling thread, each for at most its bound
//! ([`NodeBuilder::start_timeout`], [`NodeBuilder::stop_timeout`]); from
//! asynchronous code they are short enough to call directly (a start waits
//! for the child to print its address), or go through
//! `tokio::task::spawn_blocking`.

mod error;
mod output;
mod process;

pub use error::{Logs, NodeError};
pub use output::address_in_line;
pub use process::Exit;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use output::{AddressRule, Lines};
use process::{Change, Watch};
use std::ffi::OsString;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// How many lines of a log file an error message quotes.
const TAIL_LINES: usize = 10;

/// Which output of a node to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// What to run as a node, and how; [`NodeBuilder::start`] runs it.
///
/// Arguments and environment values are templates: `{addr}` is replaced by
/// the address to listen on (the [`listen`](NodeBuilder::listen) address on
/// the first start, the address the previous run bound on a restart) and
/// `{data}` by the node's data directory.
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(OsString, String)>,
    listen: SocketAddr,
    rule: AddressRule,
    start_timeout: Duration,
    stop_timeout: Duration,
}

setters! {
    NodeBuilder {
        /// The address `{addr}` stands for on the first start (default
        /// `127.0.0.1:0`: any free port, read back from the output).
        listen(addr: SocketAddr) => listen,
        /// How long a start or restart waits for the address (default 30 s).
        start_timeout(bound: Duration) => start_timeout,
        /// How long a kill, pause or resume waits for the process to change
        /// state (default 10 s).
        stop_timeout(bound: Duration) => stop_timeout,
    }
}

impl NodeBuilder {
    /// A node called `name` (also its directory's name) running `program`
    /// (a path, or a name looked up in `PATH`), listening on
    /// `127.0.0.1:0` by default.
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>) -> NodeBuilder {
        NodeBuilder {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            rule: AddressRule::default(),
            start_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(10),
        }
    }

    /// Adds an argument (a template).
    pub fn arg(mut self, arg: impl Into<String>) -> NodeBuilder {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments (templates).
    pub fn args<I, S>(mut self, args: I) -> NodeBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable (its value a template); the rest of
    /// the environment is inherited.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<String>) -> NodeBuilder {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Reads the address with `rule` instead of [`address_in_line`]: the
    /// first line of standard output for which it returns an address gives
    /// it.
    pub fn address_from(
        mut self,
        rule: impl Fn(&str) -> Option<SocketAddr> + Send + Sync + 'static,
    ) -> NodeBuilder {
        self.rule = AddressRule::new(rule);
        self
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts the node with its files under `dir/<name>/` and waits for its
    /// address. `dir` must outlive the node (a [`TestDir`](crate::TestDir)
    /// dropped first removes the logs that errors name).
    ///
    /// # Errors
    /// [`NodeError::InvalidName`], [`NodeError::Io`] when its files cannot
    /// be created, [`NodeError::Spawn`] when the binary cannot be started,
    /// [`NodeError::ExitedAtStart`], [`NodeError::NoAddress`].
    pub fn start(self, dir: impl AsRef<Path>) -> Result<Node, NodeError> {
        let name = &self.name;
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
            return Err(NodeError::InvalidName { node: name.clone() });
        }
        let dir = dir.as_ref().join(name);
        let data = dir.join("data");
        let logs = logs_of(&dir, 1);
        std::fs::create_dir_all(&data).map_err(|source| NodeError::Io {
            node: name.clone(),
            path: data.clone(),
            logs: logs.clone(),
            source,
        })?;
        let listen = self.listen;
        let mut node = Node {
            spec: self,
            dir,
            data,
            addr: listen,
            run: 1,
            logs,
            pid: Pid::from_raw(0),
            state: State::NotStarted,
        };
        node.launch()?;
        Ok(node)
    }
}

fn logs_of(dir: &Path, run: u32) -> Logs {
    Logs {
        stdout: dir.join(format!("run-{run}.stdout")),
        stderr: dir.join(format!("run-{run}.stderr")),
    }
}

/// Replaces `{addr}` and `{data}` in `template`.
fn expand(template: &str, addr: SocketAddr, data: &Path) -> OsString {
    let mut out = OsString::new();
    let mut rest = template;
    loop {
        let next = ["{addr}", "{data}"]
            .into_iter()
            .filter_map(|mark| rest.find(mark).map(|at| (at, mark)))
            .min();
        let Some((at, mark)) = next else {
            out.push(rest);
            return out;
        };
        out.push(&rest[..at]);
        if mark == "{addr}" {
            out.push(addr.to_string());
        } else {
            out.push(data.as_os_str());
        }
        rest = &rest[at + mark.len()..];
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between creation and the first launch (never seen outside).
    NotStarted,
    Running,
    Paused,
    Exited(Exit),
}

/// A child process started by [`NodeBuilder::start`]; killed (SIGKILL to
/// its group) and reaped when dropped.
#[derive(Debug)]
pub struct Node {
    spec: NodeBuilder,
    dir: PathBuf,
    data: PathBuf,
    addr: SocketAddr,
    run: u32,
    logs: Logs,
    pid: Pid,
    state: State,
}

impl Node {
    /// The node's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The pid of the current run's process (still given after it exited).
    pub fn pid(&self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }

    /// The address the node printed: of the current run, or of the last
    /// run that printed one.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node's directory, `<dir>/<name>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The node's data directory, `<dir>/<name>/data` (`{data}`), kept
    /// across restarts.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The log files of the current run.
    pub fn logs(&self) -> &Logs {
        &self.logs
    }

    /// The number of the current run: 1, then one more per restart.
    pub fn run(&self) -> u32 {
        self.run
    }

    /// Whether the process is alive (paused counts as alive). Observing
    /// an exit reaps the process and kills what is left of its group.
    pub fn is_running(&mut self) -> bool {
        if let Err(e) = self.observe() {
            tracing::warn!(node = %self.spec.name, error = %e, "cannot observe the node's process");
        }
        matches!(self.state, State::Running | State::Paused)
    }

    /// Whether the node is paused ([`Node::pause`] without
    /// [`Node::resume`] since).
    pub fn is_paused(&self) -> bool {
        self.state == State::Paused
    }

    /// How the current run's process ended, if it did (as last observed).
    pub fn exit(&self) -> Option<Exit> {
        match self.state {
            State::Exited(exit) => Some(exit),
            _ => None,
        }
    }

    /// Kills the process and its group with SIGKILL and waits for it.
    ///
    /// # Errors
    /// [`NodeError::NotRunning`] when it had already exited;
    /// [`NodeError::Os`], [`NodeError::Timeout`] (not dead within
    /// [`NodeBuilder::stop_timeout`]).
    pub fn kill(&mut self) -> Result<Exit, NodeError> {
        self.ensure_alive()?;
        self.signal(Signal::SIGKILL, "send SIGKILL")?;
        let exit = process::wait_for(self.spec.stop_timeout, || {
            Ok(match process::poll(self.pid, Watch::Exit)? {
                Change::Exited(exit) => Some(exit),
                _ => None,
            })
        })
        .map_err(|source| self.os_error("wait for the process", source))?;
        let Some(exit) = exit else {
            return Err(self.timeout("die after SIGKILL", self.spec.stop_timeout));
        };
        self.state = State::Exited(exit);
        tracing::debug!(node = %self.spec.name, pid = self.pid(), %exit, "node killed");
        Ok(exit)
    }

    /// Stops the process (SIGSTOP), waits until it is stopped, then stops
    /// the rest of its group; a paused node is left as it is.
    ///
    /// The process is stopped first and alone: a process waiting in
    /// `vfork` (as `posix_spawn` and shells do to start a child) stops only
    /// once its child has called `exec`, which a child stopped with it
    /// would never do.
    ///
    /// # Errors
    /// [`NodeError::NotRunning`] when it has exited; [`NodeError::Os`],
    /// [`NodeError::Timeout`].
    pub fn pause(&mut self) -> Result<(), NodeError> {
        self.ensure_alive()?;
        if self.state == State::Paused {
            return Ok(());
        }
        process::signal_leader(self.pid, Signal::SIGSTOP)
            .map_err(|source| self.os_error("send SIGSTOP", source))?;
        self.await_change(Watch::Stop, Change::Stopped, "stop after SIGSTOP")?;
        self.signal(Signal::SIGSTOP, "send SIGSTOP to its group")?;
        self.state = State::Paused;
        tracing::debug!(node = %self.spec.name, pid = self.pid(), "node paused");
        Ok(())
    }

    /// Continues a paused process and its group (SIGCONT) and waits until
    /// the process has continued; a node that is not paused is left as it
    /// is.
    ///
    /// # Errors
    /// [`NodeError::NotRunning`] when it has exited; [`NodeError::Os`],
    /// [`NodeError::Timeout`].
    pub fn resume(&mut self) -> Result<(), NodeError> {
        self.ensure_alive()?;
        if self.state != State::Paused {
            return Ok(());
        }
        self.signal(Signal::SIGCONT, "send SIGCONT")?;
        self.await_change(Watch::Continue, Change::Continued, "continue after SIGCONT")?;
        self.state = State::Running;
        tracing::debug!(node = %self.spec.name, pid = self.pid(), "node resumed");
        Ok(())
    }

    /// Starts the node again, after it was killed or exited, with `{addr}`
    /// the address of its previous run and the same data directory; its
    /// output goes to the next run's files.
    ///
    /// # Errors
    /// [`NodeError::Running`] when the process is alive; otherwise as
    /// [`NodeBuilder::start`]. After an error the node is not running and
    /// can be restarted again.
    pub fn restart(&mut self) -> Result<(), NodeError> {
        self.observe()?;
        if matches!(self.state, State::Running | State::Paused) {
            return Err(NodeError::Running {
                node: self.spec.name.clone(),
                pid: self.pid(),
                logs: self.logs.clone(),
            });
        }
        self.run += 1;
        self.logs = logs_of(&self.dir, self.run);
        self.launch()
    }

    /// Waits at most `bound` for the process to exit by itself.
    ///
    /// # Errors
    /// [`NodeError::Timeout`] when it is still alive; [`NodeError::Os`].
    pub fn wait_exit(&mut self, bound: Duration) -> Result<Exit, NodeError> {
        let exit = process::wait_for(bound, || {
            self.observe_io()?;
            Ok(self.exit())
        })
        .map_err(|source| self.os_error("wait for the process", source))?;
        exit.ok_or_else(|| self.timeout("exit", bound))
    }

    /// Waits at most `bound` for a line of the current run's `output` that
    /// `matches`, and returns it. Lines are read from the start of the run.
    ///
    /// # Errors
    /// [`NodeError::NotRunning`] when the process exits without writing
    /// such a line; [`NodeError::Timeout`]; [`NodeError::Os`] when the file
    /// cannot be read.
    pub fn wait_for_line(
        &mut self,
        output: Output,
        bound: Duration,
        mut matches: impl FnMut(&str) -> bool,
    ) -> Result<String, NodeError> {
        let path = match output {
            Output::Stdout => self.logs.stdout.clone(),
            Output::Stderr => self.logs.stderr.clone(),
        };
        let mut lines = Lines::new(&path);
        let found = process::wait_for(bound, || {
            let exited = {
                self.observe_io()?;
                self.exit()
            };
            // Lines written before an exit are read after observing it.
            if let Some(line) = lines.read_new()?.into_iter().find(|l| matches(l)) {
                return Ok(Some(Ok(line)));
            }
            Ok(exited.map(Err))
        })
        .map_err(|source| self.os_error("read its output", source))?;
        match found {
            Some(Ok(line)) => Ok(line),
            Some(Err(exit)) => Err(self.not_running(exit)),
            None => Err(self.timeout("print the awaited line", bound)),
        }
    }

    /// Runs the current run: creates its log files, spawns the process and
    /// waits for its address.
    fn launch(&mut self) -> Result<(), NodeError> {
        let spec = &self.spec;
        let create = |path: &Path| {
            File::create(path).map_err(|source| NodeError::Io {
                node: spec.name.clone(),
                path: path.to_path_buf(),
                logs: self.logs.clone(),
                source,
            })
        };
        let stdout = create(&self.logs.stdout)?;
        let stderr = create(&self.logs.stderr)?;
        let mut cmd = Command::new(&spec.program);
        cmd.args(spec.args.iter().map(|a| expand(a, self.addr, &self.data)))
            .envs(
                spec.env
                    .iter()
                    .map(|(k, v)| (k, expand(v, self.addr, &self.data))),
            )
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let pid = process::spawn(cmd, spec.stop_timeout).map_err(|source| NodeError::Spawn {
            node: spec.name.clone(),
            program: spec.program.clone(),
            logs: self.logs.clone(),
            source,
        })?;
        self.pid = pid;
        self.state = State::Running;
        tracing::debug!(node = %spec.name, pid = self.pid(), run = self.run, "node spawned");
        let (addr, exited) = self.await_address()?;
        self.addr = addr;
        if let Some(exit) = exited {
            self.state = State::Exited(exit);
        }
        tracing::info!(node = %self.spec.name, pid = self.pid(), %addr, run = self.run, "node started");
        Ok(())
    }

    /// Reads the address from the run's standard output; with it the
    /// exit, when the process printed it and exited at once.
    fn await_address(&mut self) -> Result<(SocketAddr, Option<Exit>), NodeError> {
        enum Start {
            Addr(SocketAddr, Option<Exit>),
            Exited(Exit),
        }
        let rule = self.spec.rule.clone();
        let mut lines = Lines::new(&self.logs.stdout);
        let mut find = move || -> std::io::Result<Option<SocketAddr>> {
            Ok(lines.read_new()?.iter().find_map(|line| rule.find(line)))
        };
        let pid = self.pid;
        let waited = process::wait_for(self.spec.start_timeout, || {
            if let Some(addr) = find()? {
                return Ok(Some(Start::Addr(addr, None)));
            }
            Ok(match process::poll(pid, Watch::Exit)? {
                // What it printed before exiting is all there now. (It is
                // reaped: no error may lead to the kill below.)
                Change::Exited(exit) => Some(match find().ok().flatten() {
                    Some(addr) => Start::Addr(addr, Some(exit)),
                    None => Start::Exited(exit),
                }),
                _ => None,
            })
        });
        match waited {
            Ok(Some(Start::Addr(addr, exit))) => Ok((addr, exit)),
            Ok(Some(Start::Exited(exit))) => {
                self.state = State::Exited(exit);
                Err(NodeError::ExitedAtStart {
                    node: self.spec.name.clone(),
                    exit,
                    logs: self.logs.clone(),
                    stderr_tail: output::tail(&self.logs.stderr, TAIL_LINES),
                })
            }
            Ok(None) => {
                self.stop_failed_start();
                Err(NodeError::NoAddress {
                    node: self.spec.name.clone(),
                    waited: self.spec.start_timeout,
                    logs: self.logs.clone(),
                    stdout_tail: output::tail(&self.logs.stdout, TAIL_LINES),
                })
            }
            Err(source) => {
                self.stop_failed_start();
                Err(self.os_error("read its output", source))
            }
        }
    }

    /// Kills a process that did not start as it should.
    fn stop_failed_start(&mut self) {
        match process::kill_and_reap(self.pid, self.spec.stop_timeout) {
            Ok(Some(exit)) => self.state = State::Exited(exit),
            // The drop tries again.
            Ok(None) => {
                tracing::warn!(node = %self.spec.name, pid = self.pid(), "node did not die after SIGKILL")
            }
            Err(e) => {
                tracing::warn!(node = %self.spec.name, pid = self.pid(), error = %e, "cannot kill the node")
            }
        }
    }

    /// Observes an exit, if any (see [`Node::is_running`]).
    fn observe(&mut self) -> Result<(), NodeError> {
        self.observe_io()
            .map_err(|source| self.os_error("observe the process", source))
    }

    fn observe_io(&mut self) -> std::io::Result<()> {
        if matches!(self.state, State::Running | State::Paused) {
            if let Change::Exited(exit) = process::poll(self.pid, Watch::Exit)? {
                tracing::debug!(node = %self.spec.name, pid = self.pid(), %exit, "node exited");
                self.state = State::Exited(exit);
            }
        }
        Ok(())
    }

    fn ensure_alive(&mut self) -> Result<(), NodeError> {
        self.observe()?;
        match self.state {
            State::Exited(exit) => Err(self.not_running(exit)),
            _ => Ok(()),
        }
    }

    fn signal(&self, signal: Signal, what: &'static str) -> Result<(), NodeError> {
        process::signal_group(self.pid, signal).map_err(|source| self.os_error(what, source))
    }

    /// Waits for the change `want` after a signal; an exit instead is
    /// [`NodeError::NotRunning`].
    fn await_change(
        &mut self,
        watch: Watch,
        want: Change,
        what: &'static str,
    ) -> Result<(), NodeError> {
        let pid = self.pid;
        let change = process::wait_for(self.spec.stop_timeout, || {
            Ok(match process::poll(pid, watch)? {
                Change::None => None,
                change => Some(change),
            })
        })
        .map_err(|source| self.os_error("wait for the process", source))?;
        match change {
            Some(Change::Exited(exit)) => {
                self.state = State::Exited(exit);
                Err(self.not_running(exit))
            }
            Some(change) if change == want => Ok(()),
            _ => Err(self.timeout(what, self.spec.stop_timeout)),
        }
    }

    fn not_running(&self, exit: Exit) -> NodeError {
        NodeError::NotRunning {
            node: self.spec.name.clone(),
            exit,
            logs: self.logs.clone(),
        }
    }

    fn os_error(&self, what: &'static str, source: std::io::Error) -> NodeError {
        NodeError::Os {
            node: self.spec.name.clone(),
            what,
            logs: self.logs.clone(),
            source,
        }
    }

    fn timeout(&self, what: &'static str, waited: Duration) -> NodeError {
        NodeError::Timeout {
            node: self.spec.name.clone(),
            what,
            waited,
            logs: self.logs.clone(),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if !matches!(self.state, State::Running | State::Paused) {
            return;
        }
        match process::kill_and_reap(self.pid, self.spec.stop_timeout) {
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::warn!(node = %self.spec.name, pid = self.pid(), "node did not die after SIGKILL")
            }
            Err(e) => {
                tracing::warn!(node = %self.spec.name, pid = self.pid(), error = %e, "cannot kill the node")
            }
        }
    }
}
