//! Child processes: spawning one stdio upstream as its own process group with
//! non-blocking pipes, signalling the whole group, and reaping exits without
//! ever blocking the event loop.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use mio::unix::pipe::{Receiver, Sender};

/// A freshly spawned child and its three pipe ends, all non-blocking.
pub struct SpawnedChild {
    pub pid: u32,
    pub stdin: Sender,
    pub stdout: Receiver,
    pub stderr: Receiver,
}

/// Spawns `command` (program and arguments) as the leader of a new process
/// group, so ending the session can signal every process it started
/// (`npx` → `node`, shells → their children) and none is orphaned.
pub fn spawn(
    command: &[String],
    env: &[(String, String)],
    cwd: Option<&str>,
) -> io::Result<SpawnedChild> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut builder = Command::new(program);
    if let Some(cwd) = cwd {
        builder.current_dir(cwd);
    }
    let mut child = builder
        .args(args)
        .envs(env.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let pid = child.id();
    let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    // The std handle is dropped here on purpose: dropping does not wait or
    // kill, and mcphop reaps children itself with waitpid so a SIGCHLD can be
    // matched to its session by pid.
    drop(child);
    let (Some(stdin), Some(stdout), Some(stderr)) = pipes else {
        signal_group(pid, libc::SIGKILL);
        return Err(io::Error::other("child pipes were not created"));
    };
    let stdin = Sender::from(stdin);
    let stdout = Receiver::from(stdout);
    let stderr = Receiver::from(stderr);
    // mio's conversions keep the std blocking mode.
    stdin.set_nonblocking(true)?;
    stdout.set_nonblocking(true)?;
    stderr.set_nonblocking(true)?;
    Ok(SpawnedChild {
        pid,
        stdin,
        stdout,
        stderr,
    })
}

/// Sends `signal` to every process in the group led by `pid`. Errors (the
/// group is already gone) are ignored: there is nothing left to signal.
pub fn signal_group(pid: u32, signal: libc::c_int) {
    if let Ok(pgid) = libc::pid_t::try_from(pid) {
        if pgid > 1 {
            // SAFETY: kill(2) has no memory-safety preconditions; a negative
            // pid addresses the process group.
            unsafe {
                libc::kill(-pgid, signal);
            }
        }
    }
}

/// How a reaped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exited with status {code}"),
            ExitStatus::Signaled(signal) => write!(f, "killed by signal {signal}"),
        }
    }
}

/// Reaps one exited child of this process without blocking: `Some((pid,
/// status))`, or `None` when no child has exited (or there are no children).
pub fn reap_any() -> Option<(u32, ExitStatus)> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes only to `status`, a valid local.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid > 0 {
            let exit = if libc::WIFEXITED(status) {
                ExitStatus::Exited(libc::WEXITSTATUS(status))
            } else if libc::WIFSIGNALED(status) {
                ExitStatus::Signaled(libc::WTERMSIG(status))
            } else {
                // Stopped or continued: not an exit; look for the next one.
                continue;
            };
            return u32::try_from(pid).ok().map(|pid| (pid, exit));
        }
        if pid < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return None;
    }
}
