//! The upstream side of the proxy: one kind per run, chosen by
//! `Config::upstream`, each kind a type owning its own state (`StdioUpstream`:
//! every session's child and pipes; `HttpSide`: the pool, the upstream
//! connections and the exchanges). The reactor owns the sessions and asks the
//! kind through these methods; a new kind (legacy SSE) is a new variant and
//! a new adapter module, with no change to the others.

use std::io;
use std::time::Instant;

use log::debug;
use mio::event::Event;
use mio::Registry;

use crate::arena::Arena;
use crate::child;
use crate::jsonrpc::Message;
use crate::session::{HttpSession, Session, SessionKey, Upstream};

use crate::client::ConnKey;
use crate::mcp::router::StreamId;

use super::drive::ClientRef;
use super::http_upstream::{AnswerEnd, HttpSide, UpConnKey};
use super::stdio_upstream::{Pipe, StdioUpstream};

/// What an upstream adapter's call needs of the reactor: the poll
/// registry, a read buffer, a read-only view of the sessions, and the queue
/// its `UpstreamEvent`s go to (fed to the session cores after the call).
pub(crate) struct UpstreamCtx<'a> {
    pub registry: &'a Registry,
    pub scratch: &'a mut [u8],
    pub sessions: &'a Arena<Session>,
    pub events: &'a mut Vec<UpstreamEvent>,
}

/// What an upstream adapter reports for the session cores.
#[derive(Debug)]
pub(crate) enum UpstreamEvent {
    /// One message from a session's upstream, its bytes as received (moved,
    /// not copied), for its core to route.
    Message {
        session: SessionKey,
        message: Message<Vec<u8>>,
    },
    /// The session's upstream is gone: the session ends.
    EndSession { session: SessionKey, reason: String },
    /// Something the removal of an ended session waits for is over.
    Finalize { session: SessionKey },
    /// A session's answer `stream` is open upstream; it starts on `client`
    /// (the connection waiting for it) if any.
    StreamReady {
        session: SessionKey,
        stream: StreamId,
        client: Option<ClientRef>,
    },
    /// Every request still waiting on `stream` gets an error.
    FailStream {
        session: SessionKey,
        stream: StreamId,
        why: String,
    },
    /// A session that never got going is dropped.
    DiscardSession { session: SessionKey, why: String },
    /// The client carrying `stream` went away.
    StreamLost {
        session: SessionKey,
        stream: StreamId,
    },
    /// A client connection is to close now.
    CloseConn { conn: ConnKey },
    /// An upstream connection is to be read, one step at a time, the events
    /// of each step fed before the next.
    ReadConn { conn: UpConnKey },
    /// An upstream answer stream ended with the messages before it fed: what
    /// its requests still wait for is decided now.
    AnswerEnded {
        session: SessionKey,
        ended: AnswerEnd,
    },
}

/// The upstream of every session.
// One value per proxy: its size does not matter, and boxing would add a
// pointer chase to every upstream event.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Upstreams {
    /// A child process per session, over stdio.
    Stdio(StdioUpstream),
    /// A Streamable HTTP server, through the keep-alive pool.
    Http(HttpSide),
}

impl Upstreams {
    pub(crate) fn stdio(&self) -> Option<&StdioUpstream> {
        match self {
            Upstreams::Stdio(stdio) => Some(stdio),
            Upstreams::Http(_) => None,
        }
    }

    pub(crate) fn stdio_mut(&mut self) -> Option<&mut StdioUpstream> {
        match self {
            Upstreams::Stdio(stdio) => Some(stdio),
            Upstreams::Http(_) => None,
        }
    }

    pub(crate) fn http(&self) -> Option<&HttpSide> {
        match self {
            Upstreams::Http(http) => Some(http),
            Upstreams::Stdio(_) => None,
        }
    }

    pub(crate) fn http_mut(&mut self) -> Option<&mut HttpSide> {
        match self {
            Upstreams::Http(http) => Some(http),
            Upstreams::Stdio(_) => None,
        }
    }

    /// Starts a new session's upstream: its child for a command (its pipes
    /// registered under `session`'s index), nothing yet for an HTTP server
    /// (its session starts with the `initialize` exchange). Returns the
    /// session's per-upstream state and words for the log.
    pub(crate) fn start(
        &mut self,
        session: SessionKey,
        registry: &Registry,
    ) -> io::Result<(Upstream, String)> {
        match self {
            Upstreams::Http(http) => Ok((
                Upstream::Http(HttpSession::default()),
                format!("on {}://{}", http.url.scheme.as_str(), http.url.authority()),
            )),
            Upstreams::Stdio(stdio) => {
                let pid = stdio.start(session, registry)?;
                Ok((Upstream::Stdio, format!("pid {pid}")))
            }
        }
    }

    /// Bytes queued for a session's upstream and not yet taken (a child's
    /// stdin; a socket's output is the pool's business).
    pub(crate) fn input_backlog(&self, session: SessionKey) -> usize {
        self.stdio().map_or(0, |stdio| stdio.stdin_backlog(session))
    }

    /// True when some upstream output is to be read again this turn without
    /// waiting for an edge (a child's stdout cut short by the per-turn cap).
    pub(crate) fn has_pending_reads(&self) -> bool {
        self.stdio().is_some_and(StdioUpstream::has_backlog)
    }

    /// The sessions whose upstream output is to be read again now.
    pub(crate) fn take_pending_reads(&mut self) -> Vec<SessionKey> {
        self.stdio_mut()
            .map(StdioUpstream::take_backlog)
            .unwrap_or_default()
    }

    /// A readiness event on a child's pipe; true when the session's
    /// upstream output is to be read (`read_output`).
    pub(crate) fn on_pipe_event(
        &mut self,
        ctx: &mut UpstreamCtx<'_>,
        key: SessionKey,
        pipe: Pipe,
        event: &Event,
    ) -> bool {
        match self {
            Upstreams::Stdio(stdio) => stdio.on_pipe_event(ctx, key, pipe, event),
            Upstreams::Http(_) => false,
        }
    }

    /// One read of a session's upstream output, passed on as events; true
    /// when more may be waiting (a child's stdout).
    pub(crate) fn read_output(&mut self, ctx: &mut UpstreamCtx<'_>, key: SessionKey) -> bool {
        match self {
            Upstreams::Stdio(stdio) => stdio.read_output(ctx, key),
            Upstreams::Http(_) => false,
        }
    }

    /// The per-turn read cap cut a session's output short: it is read again
    /// this turn, after the other sources, if it still has more.
    pub(crate) fn requeue_output(&mut self, key: SessionKey) {
        if let Upstreams::Stdio(stdio) = self {
            if stdio.stdout_readable(key) {
                stdio.push_backlog(key);
            }
        }
    }

    /// SIGCHLD: reaps every child that exited.
    pub(crate) fn reap(&mut self, ctx: &mut UpstreamCtx<'_>) {
        match self {
            Upstreams::Stdio(stdio) => stdio.reap(ctx),
            Upstreams::Http(_) => {
                while let Some((pid, status)) = child::reap_any() {
                    debug!("reaped process {pid} ({status})");
                }
            }
        }
    }

    /// Queues messages for a session's child (see `StdioUpstream::send`).
    pub(crate) fn send_to_child(&mut self, session: SessionKey, body: &[u8], registry: &Registry) {
        if let Some(stdio) = self.stdio_mut() {
            stdio.send(session, body, registry);
        }
    }

    /// The session ended: its child is told to exit (stdin closed; SIGTERM
    /// and SIGKILL follow if it lingers).
    pub(crate) fn stop_child(&mut self, session: SessionKey, registry: &Registry, now: Instant) {
        if let Some(stdio) = self.stdio_mut() {
            stdio.stop(session, registry, now);
        }
    }

    /// SIGKILL to every child's group that has not been reaped.
    pub(crate) fn kill_all(&self) {
        if let Some(stdio) = self.stdio() {
            stdio.kill_all();
        }
    }

    /// Forgets a removed session's upstream state (a child's pipes).
    pub(crate) fn forget(&mut self, session: SessionKey, registry: &Registry) {
        if let Some(stdio) = self.stdio_mut() {
            stdio.remove(session, registry);
        }
    }

    /// True when a session's upstream takes everything at once (a pipe):
    /// its answer streams start when the messages go, with no response head
    /// to wait for.
    pub(crate) fn is_pipe(&self) -> bool {
        matches!(self, Upstreams::Stdio(_))
    }

    /// True once nothing upstream is left to wait for before a session that
    /// ended is removed: its child was reaped (an HTTP session's DELETE goes
    /// out when it ends; nothing to wait for).
    pub(crate) fn session_done(&self, key: SessionKey) -> bool {
        match self {
            Upstreams::Stdio(stdio) => stdio.done(key),
            Upstreams::Http(_) => true,
        }
    }

    /// True when upstream output waits only for the session's clients to
    /// read (back-pressure).
    pub(crate) fn has_backlog(&self, key: SessionKey, session: &Session) -> bool {
        match self {
            Upstreams::Stdio(stdio) => stdio.stdout_readable(key),
            Upstreams::Http(_) => session.http().is_some_and(|http| !http.paused.is_empty()),
        }
    }

    /// The next moment the upstream side has something to do on its own
    /// (the stdio side: a signal to a lingering child). The HTTP side's pool
    /// and stream timers are still the reactor's (`Timer::Pool`,
    /// `Timer::Upstream`).
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        match self {
            Upstreams::Stdio(stdio) => stdio.next_deadline(),
            Upstreams::Http(_) => None,
        }
    }

    /// Does what is due at `now` (see `next_deadline`).
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        match self {
            Upstreams::Stdio(stdio) => stdio.handle_timeout(now),
            Upstreams::Http(_) => {}
        }
    }

    /// True while upstream requests are in flight (a shutdown waits for
    /// an HTTP session's DELETE).
    pub(crate) fn in_flight(&self) -> bool {
        self.http().is_some_and(HttpSide::in_flight)
    }

    /// The shutdown's last step: every child's group is killed, every
    /// exchange given up and every upstream connection closed.
    pub(crate) fn abandon(&mut self, registry: &Registry) {
        match self {
            Upstreams::Stdio(stdio) => stdio.kill_all(),
            Upstreams::Http(http) => http.abandon(registry),
        }
    }

    /// Logs what the upstream side has to say at shutdown (the pool's figures).
    pub(crate) fn log_summary(&self) {
        if let Some(http) = self.http() {
            http.log_summary();
        }
    }

    /// Describes a session's upstream end for its last log line.
    pub(crate) fn summary(&self, key: SessionKey, session: &Session) -> String {
        match self {
            Upstreams::Stdio(stdio) => stdio.summary(key),
            Upstreams::Http(_) => session
                .http()
                .map_or_else(String::new, |http| http.summary()),
        }
    }
}
