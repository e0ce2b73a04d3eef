//! The operating-system side of a node: spawning a child in a process
//! group of its own with a parent-death signal, signalling that group, and
//! observing the child's state changes (exit, stop, continue).
//!
//! The one `unsafe` block of the crate is here: the `pre_exec` hook that
//! sets the parent-death signal between `fork` and `exec`.
//!
//! # Who the parent is
//!
//! Linux sends the parent-death signal when the *thread* that forked the
//! child ends, not when the process does. A child spawned from a test's
//! thread or from a runtime's blocking pool would be killed when that thread
//! exits, long before the test ends. So every child is forked by one
//! spawner thread that lives as long as the process: the signal comes
//! exactly when the test process dies, whatever killed it.
//!
//! # Reaping
//!
//! An exit is first observed without reaping (`waitid` with `WNOWAIT`), so
//! that the leader's pid still names its process group; the group is then
//! sent SIGKILL (helpers the child started die with it) and only then the
//! leader is reaped. A group is never signalled after its leader was
//! reaped: its id could by then name an unrelated process group.

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::fmt;
use std::io;
use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::sync::{mpsc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How a node's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Exit {
    /// It exited with this status code.
    Code(i32),
    /// It was killed by this signal (its number).
    Signal(i32),
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Exit::Code(code) => write!(f, "exited with code {code}"),
            Exit::Signal(n) => match Signal::try_from(n) {
                Ok(signal) => write!(f, "killed by {signal}"),
                Err(_) => write!(f, "killed by signal {n}"),
            },
        }
    }
}

/// A state change of a child, as far as it was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Nothing of what was asked for happened (yet).
    None,
    /// It exited; it is reaped and its group was sent SIGKILL.
    Exited(Exit),
    /// It stopped (SIGSTOP); the report is consumed.
    Stopped,
    /// It continued (SIGCONT); the report is consumed.
    Continued,
}

/// Which state changes [`poll`] reports besides an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Watch {
    /// Only an exit.
    Exit,
    /// An exit or a stop.
    Stop,
    /// An exit or a continuation.
    Continue,
}

/// A request to the spawner thread.
struct Job {
    cmd: Command,
    reply: mpsc::Sender<io::Result<u32>>,
}

/// The spawner thread's queue, started on first use.
static SPAWNER: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);

/// Spawns `cmd` in a process group of its own (its pid is the group's id),
/// with SIGKILL as its parent-death signal on Linux, from the spawner
/// thread. Waits at most `bound` for the spawner's answer.
pub(crate) fn spawn(mut cmd: Command, bound: Duration) -> io::Result<Pid> {
    cmd.process_group(0);
    set_parent_death_signal(&mut cmd);
    let (reply, answer) = mpsc::channel();
    send_to_spawner(Job { cmd, reply })?;
    match answer.recv_timeout(bound) {
        Ok(result) => {
            let id = result?;
            let raw = i32::try_from(id)
                .map_err(|_| io::Error::other(format!("pid {id} out of range")))?;
            Ok(Pid::from_raw(raw))
        }
        Err(mpsc::RecvTimeoutError::Timeout) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the spawner thread did not answer",
        )),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Err(io::Error::other("the spawner thread is gone"))
        }
    }
}

fn send_to_spawner(job: Job) -> io::Result<()> {
    let mut slot = SPAWNER.lock().unwrap_or_else(PoisonError::into_inner);
    let job = match slot.as_ref() {
        Some(queue) => match queue.send(job) {
            Ok(()) => return Ok(()),
            // Only a panic ends the thread; start another one.
            Err(mpsc::SendError(job)) => job,
        },
        None => job,
    };
    let queue = start_spawner()?;
    let sent = queue.send(job);
    *slot = Some(queue);
    sent.map_err(|_| io::Error::other("the spawner thread is gone"))
}

fn start_spawner() -> io::Result<mpsc::Sender<Job>> {
    let (queue, jobs) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("rpc-testkit-spawner".into())
        .spawn(move || {
            // The static keeps a sender: this loop ends only with the process.
            for mut job in jobs {
                let spawned = job.cmd.spawn().map(|child| child.id());
                // The caller may have given up waiting; nothing to tell then.
                let _ = job.reply.send(spawned);
            }
        })?;
    Ok(queue)
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // the crate's one exception: a hook between fork and exec
fn set_parent_death_signal(cmd: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec. It makes two
    // system calls (prctl, getppid), both async-signal-safe; it allocates
    // nothing (errors are raw OS errors) and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            // The parent died between fork and prctl: no signal will come.
            if nix::unistd::getppid() != parent {
                return Err(io::Error::from_raw_os_error(
                    nix::errno::Errno::ESRCH as i32,
                ));
            }
            Ok(())
        });
    }
}

/// Elsewhere there is no parent-death signal: a child outlives a test
/// process that is killed (a panicking test still kills it on drop).
#[cfg(not(target_os = "linux"))]
fn set_parent_death_signal(_cmd: &mut Command) {}

/// Sends `signal` to the process group led by `pid`.
pub(crate) fn signal_group(pid: Pid, signal: Signal) -> io::Result<()> {
    killpg(pid, signal).map_err(io::Error::from)
}

/// Sends `signal` to the process `pid` alone.
pub(crate) fn signal_leader(pid: Pid, signal: Signal) -> io::Result<()> {
    nix::sys::signal::kill(pid, signal).map_err(io::Error::from)
}

/// Reports, without waiting, whether the child `pid` exited (or stopped or
/// continued, as `watch` asks). An exit is handled as the module docs say.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
pub(crate) fn poll(pid: Pid, watch: Watch) -> io::Result<Change> {
    use nix::sys::wait::{waitid, Id};
    let other = match watch {
        Watch::Exit => WaitPidFlag::empty(),
        Watch::Stop => WaitPidFlag::WSTOPPED,
        Watch::Continue => WaitPidFlag::WCONTINUED,
    };
    let peek = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT | other;
    let status = waitid(Id::Pid(pid), peek)?;
    let change = match exit_of(status) {
        Some(exit) => {
            // The zombie leader still holds the group's id.
            let _ = killpg(pid, Signal::SIGKILL);
            waitpid(pid, None)?;
            return Ok(Change::Exited(exit));
        }
        None => match status {
            WaitStatus::Stopped(..) => Change::Stopped,
            WaitStatus::Continued(_) => Change::Continued,
            _ => return Ok(Change::None),
        },
    };
    // Consume the report that was peeked at.
    waitid(Id::Pid(pid), WaitPidFlag::WNOHANG | other)?;
    Ok(change)
}

/// Reports, without waiting, whether the child `pid` exited (or stopped or
/// continued, as `watch` asks). Without `waitid` the exit is reaped at
/// once, so the group of a leader that exited by itself is not killed.
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
pub(crate) fn poll(pid: Pid, watch: Watch) -> io::Result<Change> {
    let other = match watch {
        Watch::Exit => WaitPidFlag::empty(),
        Watch::Stop => WaitPidFlag::WUNTRACED,
        Watch::Continue => WaitPidFlag::WCONTINUED,
    };
    let status = waitpid(pid, Some(WaitPidFlag::WNOHANG | other))?;
    Ok(match (exit_of(status), status) {
        (Some(exit), _) => Change::Exited(exit),
        (None, WaitStatus::Stopped(..)) => Change::Stopped,
        (None, WaitStatus::Continued(_)) => Change::Continued,
        (None, _) => Change::None,
    })
}

fn exit_of(status: WaitStatus) -> Option<Exit> {
    match status {
        WaitStatus::Exited(_, code) => Some(Exit::Code(code)),
        WaitStatus::Signaled(_, signal, _) => Some(Exit::Signal(signal as i32)),
        _ => None,
    }
}

/// Sends SIGKILL to the group of `pid` and waits at most `bound` for the
/// leader to exit; `None` when it did not.
pub(crate) fn kill_and_reap(pid: Pid, bound: Duration) -> io::Result<Option<Exit>> {
    match killpg(pid, Signal::SIGKILL) {
        // A group of one zombie, or already empty: the wait below tells.
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => return Err(e.into()),
    }
    wait_for(bound, || {
        Ok(match poll(pid, Watch::Exit)? {
            Change::Exited(exit) => Some(exit),
            _ => None,
        })
    })
}

/// Calls `f` until it gives a value or `bound` has passed, with short
/// pauses in between (1 ms, doubling up to 50 ms): a wait for an event
/// outside the process (a line in a file, a process state), never a verdict
/// by itself.
pub(crate) fn wait_for<T>(
    bound: Duration,
    mut f: impl FnMut() -> io::Result<Option<T>>,
) -> io::Result<Option<T>> {
    let deadline = Instant::now() + bound;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(value) = f()? {
            return Ok(Some(value));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
