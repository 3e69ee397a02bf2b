//! The stdio upstream's side of the loop, as `StdioUpstream` methods taking
//! an `UpstreamCtx`: readiness on a child's pipes, one read of its stdout
//! framed into messages (one step at a time, so the reactor can pause it
//! while the session's clients do not keep up), stderr logged, and SIGCHLD
//! reaping children. What the session cores must hear (a message, a session
//! to end or to finalize) goes out as `UpstreamEvent`s.

use log::{debug, warn};
use mio::event::Event;

use crate::child::ExitStatus;
use crate::jsonrpc::Message;
use crate::lines::Line;
use crate::session::SessionKey;

use super::stdio_upstream::{log_transition, Pipe, PipeRead, StdioUpstream};
use super::upstreams::{UpstreamCtx, UpstreamEvent};

impl StdioUpstream {
    /// A readiness event on a child's pipe; true when its stdout is to be
    /// read (`read_output`).
    pub(super) fn on_pipe_event(
        &mut self,
        ctx: &mut UpstreamCtx<'_>,
        key: SessionKey,
        pipe: Pipe,
        event: &Event,
    ) -> bool {
        let known = self.on_event(key, pipe, event, ctx.registry);
        match pipe {
            _ if !known => false,
            Pipe::Stdin => false,
            Pipe::Stdout => true,
            Pipe::Stderr => {
                self.stderr(ctx, key);
                false
            }
        }
    }

    /// One read of a child's stdout, its complete lines passed on as
    /// messages; true when more may be waiting.
    pub(super) fn read_output(&mut self, ctx: &mut UpstreamCtx<'_>, key: SessionKey) -> bool {
        if !self.stdout_readable(key) {
            return false;
        }
        let Some(read) = self.read_stdout(key, ctx.scratch) else {
            return false;
        };
        self.drain_stdout_lines(ctx, key);
        match read {
            PipeRead::Data => true,
            PipeRead::WouldBlock => false,
            PipeRead::Closed => {
                self.on_stdout_closed(ctx, key);
                false
            }
        }
    }

    /// Passes on every complete line the child's stdout framer holds.
    fn drain_stdout_lines(&mut self, ctx: &mut UpstreamCtx<'_>, key: SessionKey) {
        let Some(session) = ctx.sessions.get(key) else {
            return;
        };
        let live = session.core.is_live();
        let short = session.core.short_id();
        while let Some(line) = self.next_stdout_line(key) {
            let line = match line {
                Line::Complete(line) => line,
                Line::Overlong(length) => {
                    warn!(
                        "session {short}: skipped a {length}-byte line on the child's stdout (over --max-line)"
                    );
                    continue;
                }
            };
            if line.trim_ascii().is_empty() {
                continue;
            }
            if !live {
                debug!("session {short}: discarding output of an ended session");
                continue;
            }
            match Message::parse(line.as_slice()) {
                // The line itself moves into the message: no copy.
                Ok(message) => {
                    let message = message.unbind().bind(line);
                    ctx.events.push(UpstreamEvent::Message {
                        session: key,
                        message,
                    });
                }
                Err(why) => warn!(
                    "session {short}: skipping a line on the child's stdout that is not JSON-RPC ({why}): {}",
                    String::from_utf8_lossy(line.get(..200).unwrap_or(&line))
                ),
            }
        }
    }

    fn on_stdout_closed(&mut self, ctx: &mut UpstreamCtx<'_>, key: SessionKey) {
        let Some(live) = ctx.sessions.get(key).map(|session| session.core.is_live()) else {
            return;
        };
        self.close_stdout(key, ctx.registry);
        if live {
            ctx.events.push(UpstreamEvent::EndSession {
                session: key,
                reason: "the child closed its stdout".into(),
            });
        }
        ctx.events.push(UpstreamEvent::Finalize { session: key });
    }

    fn stderr(&mut self, ctx: &mut UpstreamCtx<'_>, key: SessionKey) {
        let Some(session) = ctx.sessions.get(key) else {
            return;
        };
        let short = session.core.short_id();
        if self.pump_stderr(key, short, ctx.scratch, ctx.registry) {
            ctx.events.push(UpstreamEvent::Finalize { session: key });
        }
    }

    /// Reaps every child that exited; a live session takes what its child
    /// wrote before dying, then ends; each is finalized.
    pub(super) fn reaped(&mut self, ctx: &mut UpstreamCtx<'_>, pid: u32, status: ExitStatus) {
        {
            if let Some(change) = self.tally.reaped(pid, status, ctx.now) {
                log_transition(&self.describe(), change);
            }
            let Some(key) = self.exited(pid, status) else {
                debug!("reaped process {pid} ({status})");
                return;
            };
            let Some(live) = ctx.sessions.get(key).map(|session| session.core.is_live()) else {
                return;
            };
            if live {
                while self.stdout_readable(key) {
                    let Some(read) = self.read_stdout(key, ctx.scratch) else {
                        break;
                    };
                    self.drain_stdout_lines(ctx, key);
                    if !matches!(read, PipeRead::Data) {
                        break;
                    }
                }
                ctx.events.push(UpstreamEvent::EndSession {
                    session: key,
                    reason: format!("the child {status}"),
                });
            }
            ctx.events.push(UpstreamEvent::Finalize { session: key });
        }
    }
}
