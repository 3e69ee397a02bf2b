//! The stdio upstream side of the loop: a session's child process and its
//! pipes. Writing queued input to stdin, reading stdout lines into messages
//! (paused while the session's clients do not keep up), logging stderr,
//! signalling the process group, and reaping exits on SIGCHLD.

use log::{debug, info, warn};
use mio::{Interest, Registry};

use crate::child;
use crate::jsonrpc::Message;
use crate::lines::Line;
use crate::session::{ChildIo, PipeRead, Session};
use crate::token::Source;

use super::{trim_ascii, Proxy, Timer, MAX_STDOUT_READS_PER_TURN};

impl Proxy {
    /// Queues one message for the child's stdin as a single line: `body` is
    /// the message as its sender wrote it.
    pub(super) fn send_to_child(&mut self, session_key: usize, body: &[u8]) {
        let Some(child) = self
            .sessions
            .get_mut(session_key)
            .and_then(Session::child_mut)
        else {
            return;
        };
        let body = trim_ascii(body);
        if body.contains(&b'\n') || body.contains(&b'\r') {
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
            child.stdin.push_line(&one_line);
        } else {
            child.stdin.push_line(body);
        }
        self.flush_stdin(session_key);
    }

    /// The session ended: the child is told to exit (stdin closed; SIGTERM
    /// and SIGKILL follow if it lingers).
    pub(super) fn stop_child(&mut self, session_key: usize) {
        let now = self.now;
        let grace = self.config.child_grace;
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        let serial = session.serial;
        let Some(child) = session.child_mut() else {
            return;
        };
        if let Some(mut pipe) = child.stdin.pipe.take() {
            let _ = self.poll.registry().deregister(&mut pipe);
        }
        if child.exit.is_none() {
            self.timers.schedule(
                now + grace,
                Timer::ChildTerm {
                    key: session_key,
                    serial,
                },
            );
            self.timers.schedule(
                now + grace + grace,
                Timer::ChildKill {
                    key: session_key,
                    serial,
                },
            );
        }
    }

    pub(super) fn flush_stdin(&mut self, session_key: usize) {
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        let short = session.core.short_id().to_string();
        let Some(child) = session.child_mut() else {
            return;
        };
        if let Err(error) = child.stdin.flush() {
            // The child stopped reading (it exited, most likely); its exit is
            // noticed through SIGCHLD and stdout EOF.
            debug!("session {short}: writing to the child's stdin failed: {error}");
            if let Some(mut pipe) = child.stdin.pipe.take() {
                let _ = self.poll.registry().deregister(&mut pipe);
            }
        }
    }

    /// True when every connection carrying this session's streams can take
    /// more output; otherwise the child's stdout waits (back-pressure).
    pub(super) fn session_can_emit(&self, session: &Session) -> bool {
        session.stream_conns.values().all(|conn_key| {
            self.conns
                .get(*conn_key)
                .is_none_or(|conn| conn.unwritten() <= self.config.max_client_buffer)
        })
    }

    /// A client caught up: let the session's upstream output flow again.
    pub(super) fn resume_upstream_output(&mut self, session_key: usize) {
        let is_http = self
            .sessions
            .get(session_key)
            .is_some_and(|session| session.http().is_some());
        if is_http {
            self.resume_http_output(session_key);
        } else {
            self.pump_stdout(session_key);
        }
    }

    pub(super) fn pump_stdout(&mut self, session_key: usize) {
        for _ in 0..MAX_STDOUT_READS_PER_TURN {
            let Some(session) = self.sessions.get(session_key) else {
                return;
            };
            let Some(child) = session.child() else {
                return;
            };
            if !child.stdout.ready.readable() || child.stdout.pipe.is_none() {
                return;
            }
            if session.core.is_live() && !self.session_can_emit(session) {
                return;
            }
            let Some(child) = self
                .sessions
                .get_mut(session_key)
                .and_then(Session::child_mut)
            else {
                return;
            };
            let read = child.stdout.read_once(&mut self.scratch);
            self.drain_stdout_lines(session_key);
            match read {
                PipeRead::Data => {}
                PipeRead::WouldBlock => return,
                PipeRead::Closed => {
                    self.on_stdout_closed(session_key);
                    return;
                }
            }
        }
        // More may be waiting: come back after the other sources had a turn.
        let more = self
            .sessions
            .get(session_key)
            .and_then(Session::child)
            .is_some_and(|child| child.stdout.ready.readable());
        if more {
            self.stdout_backlog.push(session_key);
        }
    }

    /// Routes every complete line the child's stdout framer holds.
    fn drain_stdout_lines(&mut self, session_key: usize) {
        loop {
            let Some(session) = self.sessions.get_mut(session_key) else {
                return;
            };
            let live = session.core.is_live();
            let short = session.core.short_id().to_string();
            let Some(child) = session.child_mut() else {
                return;
            };
            let Some(line) = child.stdout.framer.next_line() else {
                return;
            };
            let line = match line {
                Line::Complete(line) => line,
                Line::Overlong(length) => {
                    warn!(
                        "session {short}: skipped a {length}-byte line on the child's stdout (over --max-line)"
                    );
                    continue;
                }
            };
            if trim_ascii(&line).is_empty() {
                continue;
            }
            if !live {
                debug!("session {short}: discarding output of an ended session");
                continue;
            }
            match Message::parse(line.as_slice()) {
                Ok(message) => self.deliver_from_upstream(session_key, &message),
                Err(why) => warn!(
                    "session {short}: skipping a line on the child's stdout that is not JSON-RPC ({why}): {}",
                    String::from_utf8_lossy(line.get(..200).unwrap_or(&line))
                ),
            }
        }
    }

    fn on_stdout_closed(&mut self, session_key: usize) {
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        let live = session.core.is_live();
        let Some(child) = session.child_mut() else {
            return;
        };
        if let Some(mut pipe) = child.stdout.pipe.take() {
            let _ = self.poll.registry().deregister(&mut pipe);
        }
        child.stdout.ready.clear_readable();
        if live {
            self.end_session(session_key, "the child closed its stdout");
        }
        self.finalize_if_done(session_key);
    }

    pub(super) fn pump_stderr(&mut self, session_key: usize) {
        loop {
            let Some(session) = self.sessions.get_mut(session_key) else {
                return;
            };
            let short = session.core.short_id().to_string();
            let Some(child) = session.child_mut() else {
                return;
            };
            if !child.stderr.ready.readable() {
                return;
            }
            let read = child.stderr.read_once(&mut self.scratch);
            while let Some(line) = child.stderr.framer.next_line() {
                match line {
                    Line::Complete(line) => {
                        info!("session {short} stderr: {}", String::from_utf8_lossy(&line))
                    }
                    Line::Overlong(length) => info!(
                        "session {short} stderr: ({length} bytes without a newline, not logged)"
                    ),
                }
            }
            match read {
                PipeRead::Data => {}
                PipeRead::WouldBlock => return,
                PipeRead::Closed => {
                    if let Some(mut pipe) = child.stderr.pipe.take() {
                        let _ = self.poll.registry().deregister(&mut pipe);
                    }
                    child.stderr.ready.clear_readable();
                    self.finalize_if_done(session_key);
                    return;
                }
            }
        }
    }

    /// Reaps every child that exited and ends or finalizes its session.
    pub(super) fn reap_children(&mut self) {
        while let Some((pid, status)) = child::reap_any() {
            let Some(session_key) = self.session_pids.remove(&pid) else {
                debug!("reaped process {pid} ({status})");
                continue;
            };
            let Some(session) = self.sessions.get_mut(session_key) else {
                continue;
            };
            let live = session.core.is_live();
            let Some(child) = session.child_mut().filter(|child| child.pid == pid) else {
                continue;
            };
            child.exit = Some(status);
            // The leader is gone; sweep whatever it left in its group.
            child::signal_group(pid, libc::SIGKILL);
            if live {
                // Take what it wrote before dying, then fail the rest: its
                // end of the pipe is closed, so read to EOF however short
                // each read is.
                child.stdout.ready.drain_to_eof();
                while let Some(child) = self
                    .sessions
                    .get_mut(session_key)
                    .and_then(Session::child_mut)
                    .filter(|child| child.stdout.pipe.is_some() && child.stdout.ready.readable())
                {
                    let read = child.stdout.read_once(&mut self.scratch);
                    self.drain_stdout_lines(session_key);
                    if !matches!(read, PipeRead::Data) {
                        break;
                    }
                }
                self.end_session(session_key, &format!("the child {status}"));
            }
            self.finalize_if_done(session_key);
        }
    }

    /// A session's child lingers after its stdin was closed: signal its group.
    pub(super) fn signal_child(&mut self, key: usize, serial: u64, signal: libc::c_int) {
        let Some(session) = self.sessions.get(key) else {
            return;
        };
        if session.serial != serial {
            return;
        }
        let Some(child) = session.child().filter(|child| child.exit.is_none()) else {
            return;
        };
        let name = if signal == libc::SIGKILL {
            "SIGKILL"
        } else {
            "SIGTERM"
        };
        debug!(
            "session {}: child pid {} still running: {name} to its group",
            session.core.short_id(),
            child.pid
        );
        child::signal_group(child.pid, signal);
    }

    /// SIGKILL to every child's group that has not been reaped.
    pub(super) fn kill_all_children(&mut self) {
        for (_, session) in self.sessions.iter() {
            if let Some(child) = session.child().filter(|child| child.exit.is_none()) {
                child::signal_group(child.pid, libc::SIGKILL);
            }
        }
    }

    /// Deregisters and drops every pipe a child still has.
    pub(super) fn close_child_pipes(&self, child: &mut ChildIo) {
        if let Some(mut pipe) = child.stdin.pipe.take() {
            let _ = self.poll.registry().deregister(&mut pipe);
        }
        for pipe in [child.stdout.pipe.take(), child.stderr.pipe.take()]
            .into_iter()
            .flatten()
        {
            let mut pipe = pipe;
            let _ = self.poll.registry().deregister(&mut pipe);
        }
    }
}

/// Registers a new child's three pipes with the loop, once.
pub(super) fn register_child_pipes(
    registry: &Registry,
    session_key: usize,
    child: &mut ChildIo,
) -> std::io::Result<()> {
    if let Some(pipe) = child.stdin.pipe.as_mut() {
        registry.register(
            pipe,
            Source::ChildStdin(session_key).token(),
            Interest::WRITABLE,
        )?;
    }
    if let Some(pipe) = child.stdout.pipe.as_mut() {
        registry.register(
            pipe,
            Source::ChildStdout(session_key).token(),
            Interest::READABLE,
        )?;
    }
    if let Some(pipe) = child.stderr.pipe.as_mut() {
        registry.register(
            pipe,
            Source::ChildStderr(session_key).token(),
            Interest::READABLE,
        )?;
    }
    Ok(())
}
