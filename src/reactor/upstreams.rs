//! The upstream side of the proxy: one kind per run, chosen by
//! `Config::upstream`, each kind a type owning its own state (`StdioUpstream`:
//! every session's child and pipes; `HttpSide`: the pool, the upstream
//! connections and the exchanges). The reactor owns the sessions and drives
//! the kind through these methods only, each delegating to the kind with an
//! `UpstreamCtx`; what the kind reports for the session cores comes back as
//! `UpstreamEvent`s, fed to the cores after the call returns. A new kind
//! (legacy SSE) is a new variant, its arms here and a new adapter module,
//! with no change to the others.

use std::io;
use std::time::Instant;

use mio::event::Event;
use mio::Registry;

use crate::arena::Arena;
use crate::child::ExitStatus;
use crate::jsonrpc::Message;
use crate::session::{HttpSession, Session, SessionKey, SseSession, Upstream};

use crate::client::ConnKey;
use crate::mcp::router::StreamId;

use crate::config::Config;
use crate::core::Forward;
use crate::http::request::Request;
use crate::mcp::endpoint::Reply;
use crate::timers::TimerQueue;

use super::drive::{ClientRef, Origin};
use super::front_door::HttpFrontDoor;
use super::health_workers::{ProbeJob, ProbeResult};
use super::http_upstream::{self, AnswerEnd, ExchangeKey, HttpSide, UpConnKey};
use super::servers::ServerId;
use super::stdio_upstream::{Pipe, StdioUpstream};
use super::Timer;
use crate::health::Health;
use crate::metrics::Snapshot;

/// One upstream's health, as `/status` shows it.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamHealth {
    pub name: String,
    pub state: Health,
    pub last_error: Option<String>,
    pub last_check: Option<std::time::SystemTime>,
}

/// What an upstream adapter's call needs of the reactor: the clock, the
/// settings, the registry, a read buffer, the sessions (their per-upstream
/// state; a core is fed only through events), the front door (a relayed body,
/// a waiting client's answer), the timer queue, and the queue its
/// `UpstreamEvent`s go to, fed to the cores after the call returns.
pub(crate) struct UpstreamCtx<'a> {
    pub now: Instant,
    pub config: &'a Config,
    pub registry: &'a Registry,
    pub scratch: &'a mut [u8],
    /// mcphop is serving (not shutting down).
    pub serving: bool,
    pub sessions: &'a mut Arena<Session>,
    pub front: &'a mut HttpFrontDoor,
    pub timers: &'a mut TimerQueue<Timer>,
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
    ReadConn { server: ServerId, conn: UpConnKey },
    /// A session's upstream output is to be read again (its clients caught
    /// up), one step at a time.
    ReadOutput { session: SessionKey },
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
    /// A legacy HTTP+SSE server: a dedicated SSE stream per session, its
    /// POSTs through the keep-alive pool (`http_upstream/legacy.rs`).
    Sse(HttpSide),
}

impl Upstreams {
    pub(crate) fn stdio(&self) -> Option<&StdioUpstream> {
        match self {
            Upstreams::Stdio(stdio) => Some(stdio),
            Upstreams::Http(_) | Upstreams::Sse(_) => None,
        }
    }

    pub(crate) fn stdio_mut(&mut self) -> Option<&mut StdioUpstream> {
        match self {
            Upstreams::Stdio(stdio) => Some(stdio),
            Upstreams::Http(_) | Upstreams::Sse(_) => None,
        }
    }

    /// The HTTP client side (pool, connections, exchanges) of a kind
    /// reached over HTTP.
    pub(crate) fn http(&self) -> Option<&HttpSide> {
        match self {
            Upstreams::Http(http) | Upstreams::Sse(http) => Some(http),
            Upstreams::Stdio(_) => None,
        }
    }

    fn http_mut(&mut self) -> Option<&mut HttpSide> {
        match self {
            Upstreams::Http(http) | Upstreams::Sse(http) => Some(http),
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
        now: Instant,
    ) -> io::Result<(Upstream, String)> {
        match self {
            Upstreams::Http(http) => Ok((
                Upstream::Http(HttpSession::default()),
                format!("on {}://{}", http.url.scheme.as_str(), http.url.authority()),
            )),
            Upstreams::Sse(http) => Ok((
                Upstream::Sse(SseSession::default()),
                format!(
                    "on {}://{}{} (legacy SSE)",
                    http.url.scheme.as_str(),
                    http.url.authority(),
                    http.url.target
                ),
            )),
            Upstreams::Stdio(stdio) => {
                let pid = stdio.start(session, registry, now)?;
                Ok((Upstream::Stdio, format!("pid {pid}")))
            }
        }
    }

    /// Why a new session cannot start now (its upstream is unhealthy), if
    /// so: the client gets 503 at once.
    pub(crate) fn session_refusal(&mut self, now: Instant) -> Option<String> {
        match self {
            Upstreams::Stdio(stdio) => stdio.refusal(now),
            Upstreams::Http(http) | Upstreams::Sse(http) => http.refusal(),
        }
    }

    /// Why a live session's request fails fast now (its upstream host is
    /// unhealthy), if so. A stdio session's child is its own: it is asked.
    pub(crate) fn request_refusal(&self) -> Option<String> {
        self.http().and_then(HttpSide::refusal)
    }

    /// The health probe to run now, if this kind is probed and none is out.
    pub(crate) fn probe_job(&mut self, config: &Config) -> Option<ProbeJob> {
        let legacy = matches!(self, Upstreams::Sse(_));
        let http = self.http_mut()?;
        let path = match (&config.health_path, legacy) {
            (Some(path), _) => path.clone(),
            (None, true) => "/".to_string(),
            (None, false) => http.url.target.clone(),
        };
        http.probe_job(&path, config.health_timeout)
    }

    /// A probe came back; idle connections to a host found unhealthy close.
    pub(crate) fn probe_done(&mut self, ctx: &mut UpstreamCtx<'_>, result: &ProbeResult) {
        if let Some(http) = self.http_mut() {
            http.probe_done(result);
            http_upstream::run_pool_actions(http, ctx);
        }
    }

    /// Each upstream's name, health, last error and last check, for
    /// `/status` and `/metrics`.
    pub(crate) fn health_report(&self) -> Vec<UpstreamHealth> {
        match self {
            Upstreams::Stdio(stdio) => vec![UpstreamHealth {
                name: stdio.describe(),
                state: stdio.tally.health.state(),
                last_error: stdio.tally.health.last_error().map(str::to_string),
                last_check: None,
            }],
            Upstreams::Http(http) | Upstreams::Sse(http) => vec![UpstreamHealth {
                name: http.name(),
                state: http.health.state(),
                last_error: http.health.last_error().map(str::to_string),
                last_check: http.health.last_check(),
            }],
        }
    }

    /// The figures the upstream side adds to a `/metrics` scrape.
    pub(crate) fn fill_snapshot(&self, server: &str, snapshot: &mut Snapshot) {
        match self {
            Upstreams::Stdio(stdio) => {
                snapshot.children_live += stdio.live_children();
                snapshot.children_spawned += stdio.tally.spawned;
                snapshot.children_exited += stdio.tally.exited;
                snapshot.children_killed += stdio.tally.killed.get();
                snapshot
                    .commands
                    .push((server.to_string(), stdio.tally.health.state()));
            }
            Upstreams::Http(http) | Upstreams::Sse(http) => {
                let state = http.health.state();
                snapshot.hosts.extend(http.pool_gauges(state));
                snapshot
                    .pools
                    .push((server.to_string(), http.pool_metrics()));
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
            Upstreams::Http(_) | Upstreams::Sse(_) => false,
        }
    }

    /// One read of a session's upstream output, passed on as events; true
    /// when more may be waiting (a child's stdout).
    pub(crate) fn read_output(&mut self, ctx: &mut UpstreamCtx<'_>, key: SessionKey) -> bool {
        match self {
            Upstreams::Stdio(stdio) => stdio.read_output(ctx, key),
            Upstreams::Http(_) | Upstreams::Sse(_) => false,
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

    /// True when `pid` is one of this kind's children, not reaped yet.
    pub(crate) fn owns_child(&self, pid: u32) -> bool {
        self.stdio().is_some_and(|stdio| stdio.owns(pid))
    }

    /// A child of this kind was reaped (see `owns_child`).
    pub(crate) fn child_reaped(&mut self, ctx: &mut UpstreamCtx<'_>, pid: u32, status: ExitStatus) {
        if let Upstreams::Stdio(stdio) = self {
            stdio.reaped(ctx, pid, status);
        }
    }

    /// Sends a core's messages to a session's upstream. A pipe takes
    /// everything at once: the answer stream starts now, and a client
    /// sending no request hears 202. The HTTP upstream sends one POST, and
    /// a client that waits for it waits for the upstream's answer.
    pub(crate) fn forward(
        &mut self,
        ctx: &mut UpstreamCtx<'_>,
        session: SessionKey,
        origin: Origin<'_>,
        forward: Forward,
    ) {
        match self {
            Upstreams::Stdio(stdio) => {
                if let Some(stream) = forward.stream {
                    ctx.events.push(UpstreamEvent::StreamReady {
                        session,
                        stream,
                        client: origin.client,
                    });
                }
                for message in &forward.messages {
                    stdio.send(session, message.bytes(), ctx.registry);
                }
                if forward.client_waits && forward.stream.is_none() {
                    if let Some(client) = origin.client {
                        let keep_alive = client.keep_alive && ctx.serving;
                        ctx.front.reply(client.key, &Reply::empty(202), keep_alive);
                    }
                }
            }
            Upstreams::Http(http) => {
                http_upstream::forward_http(http, ctx, session, origin, forward)
            }
            Upstreams::Sse(http) => {
                http_upstream::forward_legacy(http, ctx, session, origin, forward)
            }
        }
    }

    /// A session ended: its child is told to exit (stdin closed; SIGTERM and
    /// SIGKILL follow if it lingers); an HTTP session is deleted upstream
    /// and its GET stream closed.
    pub(crate) fn session_ended(&mut self, ctx: &mut UpstreamCtx<'_>, session: SessionKey) {
        match self {
            Upstreams::Stdio(stdio) => stdio.stop(session, ctx.registry, ctx.now),
            Upstreams::Http(http) => http_upstream::end_http_session(http, ctx, session),
            Upstreams::Sse(http) => http_upstream::end_legacy_session(http, ctx, session),
        }
    }

    /// A client of the session caught up: its upstream output flows again.
    pub(crate) fn resume_output(&mut self, ctx: &mut UpstreamCtx<'_>, session: SessionKey) {
        match self {
            Upstreams::Stdio(_) => ctx.events.push(UpstreamEvent::ReadOutput { session }),
            Upstreams::Http(http) | Upstreams::Sse(http) => {
                http_upstream::resume_http_output(http, ctx, session)
            }
        }
    }

    /// The core asked for the session's upstream GET stream (Streamable
    /// HTTP only: a legacy SSE session's one stream carries everything).
    pub(crate) fn open_get(&mut self, ctx: &mut UpstreamCtx<'_>, session: SessionKey) {
        if let Upstreams::Http(http) = self {
            http_upstream::open_upstream_get(http, ctx, session);
        }
    }

    /// A stateless-era request goes upstream as it is; false when the kind
    /// has no such path (a pipe), for the caller to refuse it.
    pub(crate) fn passthrough(
        &mut self,
        ctx: &mut UpstreamCtx<'_>,
        conn: ConnKey,
        request: &Request,
    ) -> bool {
        match self {
            Upstreams::Stdio(_) | Upstreams::Sse(_) => false,
            Upstreams::Http(http) => http_upstream::passthrough(http, ctx, conn, request),
        }
    }

    /// A client connection waiting for (or relaying) an exchange went away.
    pub(crate) fn client_left(
        &mut self,
        ctx: &mut UpstreamCtx<'_>,
        exchange: ExchangeKey,
        relaying: bool,
    ) {
        if let Some(http) = self.http_mut() {
            http_upstream::client_left_exchange(http, ctx, exchange, relaying);
        }
    }

    /// One read step on an upstream connection; true when there may be more.
    pub(crate) fn read_conn_step(&mut self, ctx: &mut UpstreamCtx<'_>, conn: UpConnKey) -> bool {
        match self {
            Upstreams::Stdio(_) => false,
            Upstreams::Http(http) | Upstreams::Sse(http) => {
                http_upstream::read_step(http, ctx, conn)
            }
        }
    }

    /// An answer stream's end, decided once the messages before it were fed.
    pub(crate) fn answer_ended(
        &mut self,
        ctx: &mut UpstreamCtx<'_>,
        session: SessionKey,
        ended: AnswerEnd,
    ) {
        http_upstream::answer_stream_closed(ctx, session, ended);
    }

    /// A readiness event on an upstream socket (`index`: its slot).
    pub(crate) fn on_socket_event(
        &mut self,
        ctx: &mut UpstreamCtx<'_>,
        index: usize,
        event: &Event,
    ) {
        if let Some(http) = self.http_mut() {
            if let Some(key) = http.conns.key_at(index) {
                http_upstream::on_upstream_event(http, ctx, key, event);
            }
        }
    }

    /// The pool's timer fired.
    pub(crate) fn on_pool_timer(&mut self, ctx: &mut UpstreamCtx<'_>, deadline: Instant) {
        if let Some(http) = self.http_mut() {
            http_upstream::on_pool_timer(http, ctx, deadline);
        }
    }

    /// True when `deadline` is the armed pool timer's.
    pub(crate) fn pool_timer_is(&self, deadline: Instant) -> bool {
        self.http()
            .is_some_and(|http| http_upstream::pool_timer_is(http, deadline))
    }

    /// A session's upstream timer fired (its HTTP streams' schedule).
    pub(crate) fn on_session_timer(
        &mut self,
        ctx: &mut UpstreamCtx<'_>,
        session: SessionKey,
        deadline: Instant,
    ) {
        if let Upstreams::Http(http) = self {
            http_upstream::on_upstream_timer(http, ctx, session, deadline);
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

    /// True once nothing upstream is left to wait for before a session that
    /// ended is removed: its child was reaped (an HTTP session's DELETE goes
    /// out when it ends; nothing to wait for).
    pub(crate) fn session_done(&self, key: SessionKey) -> bool {
        match self {
            Upstreams::Stdio(stdio) => stdio.done(key),
            Upstreams::Http(_) | Upstreams::Sse(_) => true,
        }
    }

    /// True when upstream output waits only for the session's clients to
    /// read (back-pressure).
    pub(crate) fn has_backlog(&self, key: SessionKey, session: &Session) -> bool {
        match self {
            Upstreams::Stdio(stdio) => stdio.stdout_readable(key),
            Upstreams::Http(_) => session.http().is_some_and(|http| !http.paused.is_empty()),
            Upstreams::Sse(_) => {
                matches!(&session.upstream, Upstream::Sse(sse) if !sse.paused.is_empty())
            }
        }
    }

    /// The next moment the upstream side has something to do on its own
    /// (the stdio side: a signal to a lingering child; the HTTP side: an
    /// answer stream check). The HTTP side's pool and stream timers are
    /// still the reactor's (`Timer::Pool`, `Timer::Upstream`).
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        match self {
            Upstreams::Stdio(stdio) => stdio.next_deadline(),
            Upstreams::Http(http) | Upstreams::Sse(http) => http.next_answer_check(),
        }
    }

    /// Does what is due at `ctx.now` (see `next_deadline`).
    pub(crate) fn handle_timeout(&mut self, ctx: &mut UpstreamCtx<'_>) {
        match self {
            Upstreams::Stdio(stdio) => stdio.handle_timeout(ctx.now),
            Upstreams::Http(http) | Upstreams::Sse(http) => {
                http_upstream::check_answer_streams(http, ctx);
            }
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
            Upstreams::Http(http) | Upstreams::Sse(http) => http.abandon(registry),
        }
    }

    /// Gives back the capacity busy moments left in the upstream side's
    /// maps, slabs and queues (an idle proxy).
    pub(crate) fn release_idle_capacity(&mut self) {
        match self {
            Upstreams::Stdio(stdio) => stdio.release_idle_capacity(),
            Upstreams::Http(http) | Upstreams::Sse(http) => http.release_idle_capacity(),
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
            Upstreams::Sse(_) => "its SSE stream closed".to_string(),
        }
    }
}
