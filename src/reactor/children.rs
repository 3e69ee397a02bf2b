//! The stdio upstream's glue in the loop. `StdioUpstream` owns the children
//! and does their pipe I/O; here what it reads is fed to the session cores
//! (stdout paused while a session's clients do not keep up), a session's end
//! stops its child (SIGTERM, then SIGKILL, after the grace), and SIGCHLD
//! reaps children and ends their sessions.

use log::{debug, warn};
use mio::event::Event;

use crate::child;
use crate::jsonrpc::Message;
use crate::lines::Line;
use crate::session::{Session, SessionKey};

use super::stdio_upstream::{Pipe, PipeRead};
use super::{trim_ascii, Proxy, MAX_STDOUT_READS_PER_TURN};

impl Proxy {
    /// Queues one message for the session's child (see `StdioUpstream::send`).
    pub(super) fn send_to_child(&mut self, session_key: SessionKey, body: &[u8]) {
        let registry = self.poll.registry();
        if let Some(stdio) = self.upstream.stdio_mut() {
            stdio.send(session_key, body, registry);
        }
    }

    /// The session ended: the child is told to exit (stdin closed; SIGTERM
    /// and SIGKILL follow if it lingers).
    pub(super) fn stop_child(&mut self, session_key: SessionKey) {
        let now = self.now;
        let registry = self.poll.registry();
        if let Some(stdio) = self.upstream.stdio_mut() {
            stdio.stop(session_key, registry, now);
        }
    }

    /// A readiness event on a child's pipe (`index`: its session's slot).
    pub(super) fn on_child_event(&mut self, index: usize, pipe: Pipe, event: &Event) {
        let Some(key) = self.sessions.key_at(index) else {
            return;
        };
        let registry = self.poll.registry();
        let known = self
            .upstream
            .stdio_mut()
            .is_some_and(|stdio| stdio.on_event(key, pipe, event, registry));
        match pipe {
            _ if !known => {}
            Pipe::Stdin => {}
            Pipe::Stdout => self.pump_stdout(key),
            Pipe::Stderr => self.pump_stderr(key),
        }
    }

    /// True when every connection carrying this session's streams can take
    /// more output; otherwise the child's stdout waits (back-pressure).
    pub(super) fn session_can_emit(&self, session: &Session) -> bool {
        session.stream_conns.values().all(|conn_key| {
            self.front
                .conns
                .get(*conn_key)
                .is_none_or(|conn| conn.unwritten() <= self.config.max_client_buffer)
        })
    }

    /// A client caught up: let the session's upstream output flow again.
    pub(super) fn resume_upstream_output(&mut self, session_key: SessionKey) {
        if self.upstream.is_pipe() {
            self.pump_stdout(session_key);
        } else {
            self.resume_http_output(session_key);
        }
    }

    pub(super) fn pump_stdout(&mut self, session_key: SessionKey) {
        for _ in 0..MAX_STDOUT_READS_PER_TURN {
            let Some(session) = self.sessions.get(session_key) else {
                return;
            };
            let Some(stdio) = self.upstream.stdio() else {
                return;
            };
            if !stdio.stdout_readable(session_key) {
                return;
            }
            if session.core.is_live() && !self.session_can_emit(session) {
                return;
            }
            let Some(read) = self
                .upstream
                .stdio_mut()
                .and_then(|stdio| stdio.read_stdout(session_key, &mut self.scratch))
            else {
                return;
            };
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
        if let Some(stdio) = self.upstream.stdio_mut() {
            if stdio.stdout_readable(session_key) {
                stdio.push_backlog(session_key);
            }
        }
    }

    /// Routes every complete line the child's stdout framer holds.
    fn drain_stdout_lines(&mut self, session_key: SessionKey) {
        loop {
            let Some(live) = self
                .sessions
                .get(session_key)
                .map(|session| session.core.is_live())
            else {
                return;
            };
            let Some(line) = self
                .upstream
                .stdio_mut()
                .and_then(|stdio| stdio.next_stdout_line(session_key))
            else {
                return;
            };
            let short = || {
                self.sessions
                    .get(session_key)
                    .map_or("?", |session| session.core.short_id())
            };
            let line = match line {
                Line::Complete(line) => line,
                Line::Overlong(length) => {
                    warn!(
                        "session {}: skipped a {length}-byte line on the child's stdout (over --max-line)",
                        short()
                    );
                    continue;
                }
            };
            if trim_ascii(&line).is_empty() {
                continue;
            }
            if !live {
                debug!("session {}: discarding output of an ended session", short());
                continue;
            }
            match Message::parse(line.as_slice()) {
                Ok(message) => self.deliver_from_upstream(session_key, &message),
                Err(why) => warn!(
                    "session {}: skipping a line on the child's stdout that is not JSON-RPC ({why}): {}",
                    short(),
                    String::from_utf8_lossy(line.get(..200).unwrap_or(&line))
                ),
            }
        }
    }

    fn on_stdout_closed(&mut self, session_key: SessionKey) {
        let Some(live) = self
            .sessions
            .get(session_key)
            .map(|session| session.core.is_live())
        else {
            return;
        };
        let registry = self.poll.registry();
        if let Some(stdio) = self.upstream.stdio_mut() {
            stdio.close_stdout(session_key, registry);
        }
        if live {
            self.end_session(session_key, "the child closed its stdout");
        }
        self.finalize_if_done(session_key);
    }

    pub(super) fn pump_stderr(&mut self, session_key: SessionKey) {
        let Some(session) = self.sessions.get(session_key) else {
            return;
        };
        let short = session.core.short_id().to_string();
        let registry = self.poll.registry();
        let closed = self.upstream.stdio_mut().is_some_and(|stdio| {
            stdio.pump_stderr(session_key, &short, &mut self.scratch, registry)
        });
        if closed {
            self.finalize_if_done(session_key);
        }
    }

    /// Reaps every child that exited and ends or finalizes its session.
    pub(super) fn reap_children(&mut self) {
        while let Some((pid, status)) = child::reap_any() {
            let Some(session_key) = self
                .upstream
                .stdio_mut()
                .and_then(|stdio| stdio.exited(pid, status))
            else {
                debug!("reaped process {pid} ({status})");
                continue;
            };
            let Some(live) = self
                .sessions
                .get(session_key)
                .map(|session| session.core.is_live())
            else {
                continue;
            };
            if live {
                // Take what it wrote before dying, then fail the rest.
                while let Some(read) = self
                    .upstream
                    .stdio_mut()
                    .filter(|stdio| stdio.stdout_readable(session_key))
                    .and_then(|stdio| stdio.read_stdout(session_key, &mut self.scratch))
                {
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

    /// SIGKILL to every child's group that has not been reaped.
    pub(super) fn kill_all_children(&mut self) {
        if let Some(stdio) = self.upstream.stdio() {
            stdio.kill_all();
        }
    }
}
