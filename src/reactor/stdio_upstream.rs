//! The stdio upstream adapter: each session's own child process and its three
//! pipes (stdin write queue, stdout and stderr line framers), owned here by
//! session key, with the I/O on them (through `edge_io`), the record of how
//! each child ended, and the backlog of stdouts that had more to read when
//! their turn ended. It never sees a session core: the reactor asks it for
//! stdout lines and feeds them to the core, and tells it when a session's
//! upstream is to stop.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use log::{debug, info};
use mio::event::Event;
use mio::unix::pipe::{Receiver, Sender};
use mio::{Interest, Registry};

use std::cell::Cell;

use crate::child::{self, ExitStatus, SpawnedChild};
use crate::health::{Health, SpawnHealth, Transition, CRASH_WINDOW};
use crate::lines::{Line, LineFramer};
use crate::session::SessionKey;
use crate::timers::TimerQueue;
use crate::token::Source;

use super::edge_io::{read_into, write_from, write_pair_from, ReadOutcome, Readiness};

/// Which pipe of a child an event is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pipe {
    Stdin,
    Stdout,
    Stderr,
}

/// Logs an upstream's change of health.
pub(crate) fn log_transition(upstream: &str, change: Transition) {
    match change.to {
        Health::Unhealthy => log::warn!(
            "upstream {upstream} is unhealthy (was {})",
            change.from.name()
        ),
        _ => info!(
            "upstream {upstream} is {} (was {})",
            change.to.name(),
            change.from.name()
        ),
    }
}

/// Every session's child.
pub(crate) struct StdioUpstream {
    command: Vec<String>,
    /// Extra environment variables and the working directory of its children.
    env: Vec<(String, String)>,
    cwd: Option<String>,
    max_line_bytes: usize,
    children: HashMap<SessionKey, ChildIo>,
    /// Sessions by child pid, until the child is reaped.
    pids: HashMap<u32, SessionKey>,
    /// Sessions whose stdout had more to read when their turn ended.
    backlog: Vec<SessionKey>,
    /// How long a child may linger after its stdin closed before SIGTERM,
    /// and again before SIGKILL.
    child_grace: Duration,
    /// Signals due to children that linger; an entry for a child reaped
    /// since is stale and skipped.
    lingering: TimerQueue<(SessionKey, libc::c_int)>,
    /// Children spawned, reaped and killed, and whether the command stays up.
    pub(crate) tally: ChildTally,
}

/// What the stdio side counts of its children, and its command's health
/// (`SpawnHealth`, fed each child's life span).
#[derive(Debug, Default)]
pub(crate) struct ChildTally {
    pub health: SpawnHealth,
    /// When each child not reaped yet was spawned, by pid.
    spawned_at: HashMap<u32, Instant>,
    /// Children mcphop asked to stop (their session ended), by pid.
    stopping: std::collections::HashSet<u32>,
    pub spawned: u64,
    pub exited: u64,
    pub killed: Cell<u64>,
}

impl ChildTally {
    /// A child was reaped `now`: its life span feeds the command's health.
    /// A child mcphop asked to stop that exited cleanly did not crash,
    /// however short its session was.
    pub(crate) fn reaped(
        &mut self,
        pid: u32,
        status: ExitStatus,
        now: Instant,
    ) -> Option<Transition> {
        self.exited += 1;
        let asked_to_stop = self.stopping.remove(&pid);
        let spawned = self.spawned_at.remove(&pid)?;
        let lived = now.saturating_duration_since(spawned);
        let clean = matches!(
            status,
            ExitStatus::Exited(0) | ExitStatus::Signaled(libc::SIGTERM | libc::SIGKILL)
        );
        if asked_to_stop && lived < CRASH_WINDOW && clean {
            return None;
        }
        self.health.child_ended(lived, &status.to_string(), now)
    }

    /// While the command is unhealthy, a child that has lived past the
    /// crash window proves it works again.
    pub(crate) fn check_survivors(&mut self, now: Instant) -> Option<Transition> {
        if self.health.state() != Health::Unhealthy {
            return None;
        }
        let survived = self
            .spawned_at
            .values()
            .any(|spawned| now.saturating_duration_since(*spawned) >= CRASH_WINDOW);
        if survived {
            self.health.child_survived()
        } else {
            None
        }
    }
}

impl StdioUpstream {
    pub(crate) fn new(
        command: Vec<String>,
        env: Vec<(String, String)>,
        cwd: Option<String>,
        max_line_bytes: usize,
        child_grace: Duration,
    ) -> StdioUpstream {
        StdioUpstream {
            command,
            env,
            cwd,
            max_line_bytes,
            children: HashMap::new(),
            pids: HashMap::new(),
            backlog: Vec::new(),
            child_grace,
            lingering: TimerQueue::default(),
            tally: ChildTally::default(),
        }
    }

    /// Gives back the capacity of the per-child maps and queues, sized by
    /// the busiest moment, once the children are few (an idle proxy).
    pub(crate) fn release_idle_capacity(&mut self) {
        self.children.shrink_to_fit();
        self.pids.shrink_to_fit();
        self.backlog.shrink_to_fit();
        let children = &self.children;
        self.lingering.retain_and_shrink(|_, (session, _)| {
            children
                .get(session)
                .is_some_and(|child| child.exit.is_none())
        });
        self.tally.spawned_at.shrink_to_fit();
        self.tally.stopping.shrink_to_fit();
    }

    /// The command line, for the log.
    pub(crate) fn describe(&self) -> String {
        self.command.join(" ")
    }

    /// Spawns the child of a new session and registers its pipes, once.
    /// Returns its pid.
    pub(crate) fn start(
        &mut self,
        session: SessionKey,
        registry: &Registry,
        now: Instant,
    ) -> io::Result<u32> {
        if !self.tally.health.may_spawn(now) {
            return Err(io::Error::other(
                "its command keeps exiting at start-up; it is tried again after a backoff",
            ));
        }
        let spawned =
            child::spawn(&self.command, &self.env, self.cwd.as_deref()).inspect_err(|error| {
                log::error!("cannot start upstream `{}`: {error}", self.describe());
                let why = error.to_string();
                if let Some(change) = self.tally.health.child_ended(Duration::ZERO, &why, now) {
                    log_transition(&self.describe(), change);
                }
            })?;
        self.tally.spawned += 1;
        self.tally.spawned_at.insert(spawned.pid, now);
        let mut io = ChildIo::new(spawned, self.max_line_bytes);
        if let Err(error) = register_pipes(registry, session, &mut io) {
            log::error!("cannot watch the pipes of child {}: {error}", io.pid);
            child::signal_group(io.pid, libc::SIGKILL);
            return Err(error);
        }
        let pid = io.pid;
        self.pids.insert(pid, session);
        self.children.insert(session, io);
        Ok(pid)
    }

    /// Sends one message to the child's stdin as a single line: written
    /// straight from `body` while nothing waits before it, only what the
    /// pipe does not take queued. `body` is the message as its sender wrote
    /// it.
    pub(crate) fn send(&mut self, session: SessionKey, body: &[u8], registry: &Registry) {
        let Some(child) = self.children.get_mut(&session) else {
            return;
        };
        let body = body.trim_ascii();
        let sent = if body.contains(&b'\n') || body.contains(&b'\r') {
            // stdio framing allows no newline inside a message. In valid JSON
            // (every message was parsed) CR and LF occur only as whitespace
            // between tokens, never inside a string, so spaces mean the same.
            let one_line: Vec<u8> = body
                .iter()
                .map(|&byte| {
                    if matches!(byte, b'\n' | b'\r') {
                        b' '
                    } else {
                        byte
                    }
                })
                .collect();
            child.stdin.send_line(&one_line)
        } else {
            child.stdin.send_line(body)
        };
        if let Err(error) = sent {
            stdin_failed(child, registry, &error);
        }
    }

    /// Bytes queued for a session's child and not yet written.
    pub(crate) fn stdin_backlog(&self, session: SessionKey) -> usize {
        self.children
            .get(&session)
            .map_or(0, |child| child.stdin.unwritten())
    }

    fn flush_stdin(&mut self, session: SessionKey, registry: &Registry) {
        let Some(child) = self.children.get_mut(&session) else {
            return;
        };
        if let Err(error) = child.stdin.flush() {
            stdin_failed(child, registry, &error);
        }
    }

    /// A readiness event on one of a session's pipes: remembered, and the
    /// stdin queue written. Reading is `read_output` and `stderr`
    /// (children.rs), stepped by the reactor, as stdout depends on the
    /// session's clients keeping up.
    pub(crate) fn on_event(
        &mut self,
        session: SessionKey,
        pipe: Pipe,
        event: &Event,
        registry: &Registry,
    ) -> bool {
        let Some(child) = self.children.get_mut(&session) else {
            return false;
        };
        match pipe {
            Pipe::Stdin => {
                child.stdin.ready.on_event(event);
                self.flush_stdin(session, registry);
            }
            Pipe::Stdout => child.stdout.ready.on_event(event),
            Pipe::Stderr => child.stderr.ready.on_event(event),
        }
        true
    }

    /// True when the child's stdout may have more to read now.
    pub(crate) fn stdout_readable(&self, session: SessionKey) -> bool {
        self.children
            .get(&session)
            .is_some_and(|child| child.stdout.pipe.is_some() && child.stdout.ready.readable())
    }

    /// One read of the child's stdout into its framer; `None` when there is
    /// no child or no stdout left.
    pub(crate) fn read_stdout(
        &mut self,
        session: SessionKey,
        scratch: &mut [u8],
    ) -> Option<PipeRead> {
        let child = self.children.get_mut(&session)?;
        child.stdout.pipe.as_ref()?;
        Some(child.stdout.read_once(scratch))
    }

    /// The next complete line the child's stdout framer holds.
    pub(crate) fn next_stdout_line(&mut self, session: SessionKey) -> Option<Line> {
        self.children.get_mut(&session)?.stdout.framer.next_line()
    }

    /// The child closed its stdout (or it failed): it is not watched again.
    pub(crate) fn close_stdout(&mut self, session: SessionKey, registry: &Registry) {
        let Some(child) = self.children.get_mut(&session) else {
            return;
        };
        if let Some(mut pipe) = child.stdout.pipe.take() {
            let _ = registry.deregister(&mut pipe);
        }
        child.stdout.ready.clear_readable();
    }

    /// Logs what the child wrote to stderr, until the pipe is drained.
    /// True once stderr closed.
    pub(crate) fn pump_stderr(
        &mut self,
        session: SessionKey,
        short_id: &str,
        scratch: &mut [u8],
        registry: &Registry,
    ) -> bool {
        let Some(child) = self.children.get_mut(&session) else {
            return false;
        };
        while child.stderr.ready.readable() {
            let read = child.stderr.read_once(scratch);
            while let Some(line) = child.stderr.framer.next_line() {
                match line {
                    Line::Complete(line) => {
                        info!(
                            "session {short_id} stderr: {}",
                            String::from_utf8_lossy(&line)
                        )
                    }
                    Line::Overlong(length) => info!(
                        "session {short_id} stderr: ({length} bytes without a newline, not logged)"
                    ),
                }
            }
            match read {
                PipeRead::Data => {}
                PipeRead::WouldBlock => return false,
                PipeRead::Closed => {
                    if let Some(mut pipe) = child.stderr.pipe.take() {
                        let _ = registry.deregister(&mut pipe);
                    }
                    child.stderr.ready.clear_readable();
                    return true;
                }
            }
        }
        false
    }

    /// The session ended: the child's stdin is closed, which tells it to
    /// exit; if it lingers, SIGTERM goes to its group after the grace, and
    /// SIGKILL after another.
    pub(crate) fn stop(&mut self, session: SessionKey, registry: &Registry, now: Instant) {
        let Some(child) = self.children.get_mut(&session) else {
            return;
        };
        if let Some(mut pipe) = child.stdin.pipe.take() {
            let _ = registry.deregister(&mut pipe);
        }
        self.tally.stopping.insert(child.pid);
        if child.exit.is_none() {
            let grace = self.child_grace;
            self.lingering
                .schedule(now + grace, (session, libc::SIGTERM));
            self.lingering
                .schedule(now + grace + grace, (session, libc::SIGKILL));
        }
    }

    /// The next moment a signal is due to a lingering child. Entries for
    /// children reaped since are dropped first: an idle proxy never wakes
    /// for them.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some((_, (session, _))) = self.lingering.peek() {
            if self.running(*session) {
                break;
            }
            self.lingering.pop();
        }
        self.lingering.next_deadline()
    }

    /// Sends the signals due at `now` to children that still run.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        while let Some((_, (session, signal))) = self.lingering.pop_expired(now) {
            self.signal(session, signal);
        }
    }

    /// True while a session's child runs (not reaped).
    fn running(&self, session: SessionKey) -> bool {
        self.children
            .get(&session)
            .is_some_and(|child| child.exit.is_none())
    }

    /// Signals the group of a session's child that still runs.
    fn signal(&self, session: SessionKey, signal: libc::c_int) {
        let Some(child) = self.children.get(&session).filter(|c| c.exit.is_none()) else {
            return;
        };
        let name = if signal == libc::SIGKILL {
            "SIGKILL"
        } else {
            "SIGTERM"
        };
        debug!(
            "child pid {} still running after its stdin closed: {name} to its group",
            child.pid
        );
        if signal == libc::SIGKILL {
            self.tally.killed.set(self.tally.killed.get() + 1);
        }
        child::signal_group(child.pid, signal);
    }

    /// SIGKILL to every child's group that has not been reaped.
    pub(crate) fn kill_all(&self) {
        for child in self.children.values().filter(|child| child.exit.is_none()) {
            self.tally.killed.set(self.tally.killed.get() + 1);
            child::signal_group(child.pid, libc::SIGKILL);
        }
    }

    /// True when `pid` is a child of this server's, not reaped yet.
    pub(crate) fn owns(&self, pid: u32) -> bool {
        self.pids.contains_key(&pid)
    }

    /// Children spawned and not reaped yet.
    pub(crate) fn live_children(&self) -> usize {
        self.pids.len()
    }

    /// Why no new session may start now (the command keeps crashing and
    /// its backoff is not over), if so.
    pub(crate) fn refusal(&mut self, now: Instant) -> Option<String> {
        if let Some(change) = self.tally.check_survivors(now) {
            log_transition(&self.describe(), change);
        }
        self.tally.health.blocked(now).then(|| {
            format!(
                "the upstream command keeps exiting at start-up ({})",
                self.tally.health.last_error().unwrap_or("no reason known")
            )
        })
    }

    /// Records a reaped child's end: its session, if it had one. What it
    /// wrote before dying is read to EOF however short each read is (its
    /// end of the pipe is closed).
    pub(crate) fn exited(&mut self, pid: u32, status: ExitStatus) -> Option<SessionKey> {
        let session = self.pids.remove(&pid)?;
        let child = self.children.get_mut(&session).filter(|c| c.pid == pid)?;
        child.exit = Some(status);
        // The leader is gone; sweep whatever it left in its group.
        child::signal_group(pid, libc::SIGKILL);
        child.stdout.ready.drain_to_eof();
        Some(session)
    }

    /// True once nothing is left to wait for: the child was reaped.
    pub(crate) fn done(&self, session: SessionKey) -> bool {
        self.children
            .get(&session)
            .is_none_or(|child| child.exit.is_some())
    }

    /// Describes the child's end for the session's last log line.
    pub(crate) fn summary(&self, session: SessionKey) -> String {
        match self.children.get(&session) {
            Some(ChildIo {
                pid,
                exit: Some(exit),
                ..
            }) => format!("child pid {pid} {exit}"),
            Some(child) => format!("child pid {} not reaped", child.pid),
            None => "no child".to_string(),
        }
    }

    /// Forgets a finished session's child, deregistering every pipe left.
    pub(crate) fn remove(&mut self, session: SessionKey, registry: &Registry) {
        let Some(mut child) = self.children.remove(&session) else {
            return;
        };
        if child.exit.is_none() {
            self.pids.remove(&child.pid);
        }
        if let Some(mut pipe) = child.stdin.pipe.take() {
            let _ = registry.deregister(&mut pipe);
        }
        for pipe in [child.stdout.pipe.take(), child.stderr.pipe.take()]
            .into_iter()
            .flatten()
        {
            let mut pipe = pipe;
            let _ = registry.deregister(&mut pipe);
        }
    }

    /// Notes that a session's stdout had more when its turn ended.
    pub(crate) fn push_backlog(&mut self, session: SessionKey) {
        self.backlog.push(session);
    }

    /// True when some stdout is to be read again without waiting for an edge.
    pub(crate) fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    pub(crate) fn take_backlog(&mut self) -> Vec<SessionKey> {
        std::mem::take(&mut self.backlog)
    }
}

/// Writing to a child's stdin failed: the child stopped reading (it exited,
/// most likely; its exit is noticed through SIGCHLD and stdout EOF).
fn stdin_failed(child: &mut ChildIo, registry: &Registry, error: &io::Error) {
    debug!(
        "child pid {}: writing to its stdin failed: {error}",
        child.pid
    );
    if let Some(mut pipe) = child.stdin.pipe.take() {
        let _ = registry.deregister(&mut pipe);
    }
}

/// Registers a new child's three pipes with the loop, once.
fn register_pipes(registry: &Registry, session: SessionKey, child: &mut ChildIo) -> io::Result<()> {
    let index = session.index();
    if let Some(pipe) = child.stdin.pipe.as_mut() {
        registry.register(pipe, Source::ChildStdin(index).token(), Interest::WRITABLE)?;
    }
    if let Some(pipe) = child.stdout.pipe.as_mut() {
        registry.register(pipe, Source::ChildStdout(index).token(), Interest::READABLE)?;
    }
    if let Some(pipe) = child.stderr.pipe.as_mut() {
        registry.register(pipe, Source::ChildStderr(index).token(), Interest::READABLE)?;
    }
    Ok(())
}

/// Longest stderr line logged whole; longer ones are cut.
const MAX_STDERR_LINE_BYTES: usize = 64 * 1024;

/// A child's stdin: a queue of bytes and how much of it is written.
pub(crate) struct StdinQueue {
    pub(crate) pipe: Option<Sender>,
    buffer: Vec<u8>,
    written: usize,
    pub(crate) ready: Readiness,
}

impl StdinQueue {
    fn new(pipe: Sender) -> Self {
        StdinQueue {
            pipe: Some(pipe),
            buffer: Vec::new(),
            written: 0,
            ready: Readiness::ready(),
        }
    }

    /// Bytes queued and not yet written.
    pub(crate) fn unwritten(&self) -> usize {
        self.buffer.len() - self.written
    }

    /// Sends one message as a line; dropped when the child no longer reads
    /// its stdin (its session is about to end). While nothing is queued the
    /// message and its newline are written from where they are, in one
    /// vectored write, and only the part the pipe did not take is queued.
    /// An error means the child no longer reads its stdin.
    pub(crate) fn send_line(&mut self, message: &[u8]) -> io::Result<()> {
        if self.pipe.is_none() {
            return Ok(());
        }
        if self.unwritten() > 0 {
            self.buffer.extend_from_slice(message);
            self.buffer.push(b'\n');
            return self.flush();
        }
        let Some(pipe) = self.pipe.as_mut() else {
            return Ok(());
        };
        let outcome = write_pair_from(pipe, &mut self.ready, message, b"\n");
        if let Some(rest) = message.get(outcome.written..) {
            self.buffer.extend_from_slice(rest);
        }
        if outcome.written <= message.len() {
            self.buffer.push(b'\n');
        }
        match outcome.failed {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Writes until done or the pipe would block. An error means the child
    /// no longer reads its stdin.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        let Some(pipe) = self.pipe.as_mut() else {
            return Ok(());
        };
        if self.written < self.buffer.len() {
            let outcome = write_from(pipe, &mut self.ready, &self.buffer[self.written..]);
            self.written += outcome.written;
            if let Some(error) = outcome.failed {
                return Err(error);
            }
        }
        if self.written == self.buffer.len() {
            self.buffer.clear();
            self.written = 0;
        }
        Ok(())
    }
}

/// A readable pipe with its framer and remembered readiness.
pub(crate) struct LinePipe {
    pub(crate) pipe: Option<Receiver>,
    pub(crate) framer: LineFramer,
    pub(crate) ready: Readiness,
}

/// What one read from a pipe gave.
pub(crate) enum PipeRead {
    /// Bytes were fed to the framer.
    Data,
    /// Nothing to read now (drained until the next edge).
    WouldBlock,
    /// End of file, or the pipe failed.
    Closed,
}

impl LinePipe {
    fn new(pipe: Receiver, max_line: usize) -> Self {
        LinePipe {
            pipe: Some(pipe),
            framer: LineFramer::new(max_line),
            ready: Readiness::ready(),
        }
    }

    /// One `read` into the framer (none when the pipe is not readable, or
    /// was drained by a short read).
    pub(crate) fn read_once(&mut self, scratch: &mut [u8]) -> PipeRead {
        let Some(pipe) = self.pipe.as_mut() else {
            return PipeRead::Closed;
        };
        match read_into(pipe, &mut self.ready, scratch) {
            ReadOutcome::Data(count) => {
                self.framer.feed(&scratch[..count]);
                PipeRead::Data
            }
            ReadOutcome::Blocked => PipeRead::WouldBlock,
            ReadOutcome::Eof | ReadOutcome::Failed(_) => PipeRead::Closed,
        }
    }
}

/// A stdio upstream: the session's own child process and its three pipes.
pub(crate) struct ChildIo {
    pub(crate) pid: u32,
    pub(crate) stdin: StdinQueue,
    pub(crate) stdout: LinePipe,
    pub(crate) stderr: LinePipe,
    /// How it ended, once reaped.
    pub(crate) exit: Option<ExitStatus>,
}

impl ChildIo {
    pub(crate) fn new(child: SpawnedChild, max_line_bytes: usize) -> Self {
        ChildIo {
            pid: child.pid,
            stdin: StdinQueue::new(child.stdin),
            stdout: LinePipe::new(child.stdout, max_line_bytes),
            stderr: LinePipe::new(child.stderr, MAX_STDERR_LINE_BYTES),
            exit: None,
        }
    }
}
