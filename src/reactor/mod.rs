//! The event loop: one `mio::Poll` on one thread over the listener, every
//! client socket, every child pipe and the signal pipes. It owns the slabs of
//! connections and sessions and the timer queue, and turns readiness into calls
//! on the sans-IO parts (HTTP codec, endpoint rules, router, line framer).
//!
//! Edge-triggered discipline: each source is registered once; readiness is
//! remembered in user space (`edge_io::Readiness`) and cleared when a call returns
//! `WouldBlock` or a read comes back short (`edge_io`); output queued anywhere
//! marks its connection dirty, and every dirty connection is flushed before
//! the loop sleeps again (a fresh stream's head alone may be held for its
//! first event, at most `front_door::HEAD_HOLD`, by a timer).

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::event::Event;
use mio::{Events, Interest, Poll};

use crate::arena::Arena;
use crate::client::{ConnKey, ConnState, READ_CHUNK_BYTES};
use crate::config::Config;
use crate::core::{Phase, SessionCore};
use crate::http::request::Limits;
use crate::mcp::endpoint::{AccessPolicy, Reply};
use crate::session::{Session, SessionKey};
use crate::timers::{self, TimerQueue};
use crate::token::Source;

mod admin;
mod auth;
mod children;
mod conns;
mod drive;
pub(crate) mod edge_io;
mod front_door;
mod health_workers;
pub(crate) mod http_upstream;
mod idle;
mod key_fetch;
mod origin;
mod reload;
mod replies;
mod schedule;
mod servers;
mod signals;
mod stdio_upstream;
mod upstreams;

use admin::AdminDoor;
use auth::Auth;
use conns::Next;
use front_door::{FrontCtx, FrontEvent, HttpFrontDoor};
use health_workers::HealthWorkers;
use origin::Origin;
use replies::shutting_down_reply;
use schedule::{RunState, Timer};
pub(crate) use servers::ServerId;
use servers::Servers;
use signals::{drain_signal_pipe, SignalPipes};
use stdio_upstream::Pipe;
use upstreams::UpstreamEvent;

/// Events taken from the kernel per `poll` call.
const EVENTS_CAPACITY: usize = 1024;
/// An idle keep-alive connection is closed after this long.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most client connections at once; more are answered 503 and closed.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8192;
/// After the shutdown grace, children get this long to be reaped before
/// mcphop exits anyway.
const FINAL_EXIT_MARGIN: Duration = Duration::from_secs(1);
/// How long queued responses may take to reach their clients once every
/// session ended, before mcphop exits anyway.
const EXIT_FLUSH_WAIT: Duration = Duration::from_millis(200);
/// Wait before retrying `accept` after the process ran out of descriptors.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);
/// A child's stdout is read in at most this many chunks per turn, so one
/// chatty child cannot starve the rest of the loop.
const MAX_STDOUT_READS_PER_TURN: usize = 16;

/// The proxy: every piece of state the loop thread owns.
pub struct Proxy {
    config: Config,
    poll: Poll,
    /// The Streamable HTTP front door: listener and client connections.
    front: HttpFrontDoor,
    sessions: Arena<Session>,
    /// Live sessions by id.
    session_ids: HashMap<String, SessionKey>,
    timers: TimerQueue<Timer>,
    run_state: RunState,
    /// SIGINT/SIGTERM, SIGCHLD and SIGHUP as readable pipes.
    signals: SignalPipes,
    /// Who may use the listener (`--auth-token-file`).
    auth: Auth,
    scratch: Vec<u8>,
    /// What the front door reported during a call, handled after it returns
    /// (kept to reuse its allocation).
    front_events: Vec<FrontEvent>,
    /// What the upstream side reported during a call, fed to the cores after
    /// it returns (kept to reuse its allocation).
    upstream_events: Vec<UpstreamEvent>,
    /// Emptied event queues, reused by calls made while events are fed (one
    /// per nesting level).
    spare_upstream_events: Vec<Vec<UpstreamEvent>>,
    local_addr: std::net::SocketAddr,
    /// The loop's clock, read once per turn.
    now: Instant,
    /// Every upstream server, each with its adapter.
    servers: Servers,
    /// When the armed `Timer::IdleRelease` fires.
    idle_release: Option<Instant>,
    /// Counters for `/metrics`.
    metrics: crate::metrics::Metrics,
    /// The admin endpoints, when `--admin-listen` is set.
    admin: Option<AdminDoor>,
    /// The threads that probe an HTTP upstream (none for stdio, or with
    /// probes off).
    health_workers: Option<HealthWorkers>,
}

impl Proxy {
    /// Binds the listener and sets up the loop; nothing is served until `run`.
    pub fn bind(config: Config) -> io::Result<Proxy> {
        let poll = Poll::new()?;
        // The stdio front door serves one client on stdin and stdout, and
        // listens on no port.
        let (listener, local_addr) = match config.stdio {
            Some(_) => (None, std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            None => {
                let mut listener = front_door::bind_listener(config.listen)?;
                let local_addr = listener.local_addr()?;
                poll.registry().register(
                    &mut listener,
                    Source::Listener.token(),
                    Interest::READABLE,
                )?;
                (Some(listener), local_addr)
            }
        };
        let signals = SignalPipes::register(poll.registry())?;
        let auth = Auth::from_config(&config)?;
        let servers = Servers::new(&config)?;
        let policy = AccessPolicy::new(
            local_addr.port(),
            &config.allowed_hosts,
            &config.allowed_origins,
        );
        let limits = Limits {
            max_head_bytes: config.max_head_bytes,
            max_body_bytes: config.max_body_bytes,
        };
        let admin = match config.admin_listen {
            Some(addr) => Some(AdminDoor::bind(addr, poll.registry())?),
            None => None,
        };
        let probed: Vec<ServerId> = servers
            .iter()
            .filter(|(_, server)| server.upstream.http().is_some())
            .map(|(id, _)| id)
            .filter(|_| !config.health_interval.is_zero())
            .collect();
        let mut timers = TimerQueue::default();
        let health_workers = if probed.is_empty() {
            None
        } else {
            let waker = std::sync::Arc::new(mio::Waker::new(
                poll.registry(),
                Source::HealthWaker.token(),
            )?);
            for server in probed {
                timers.schedule(Instant::now(), Timer::Probe(server));
            }
            Some(HealthWorkers::start(config.health_workers, waker)?)
        };
        Ok(Proxy {
            config,
            poll,
            front: HttpFrontDoor::new(listener, policy, limits),
            sessions: Arena::default(),
            session_ids: HashMap::new(),
            timers,
            run_state: RunState::Serving,
            signals,
            auth,
            scratch: vec![0; READ_CHUNK_BYTES],
            front_events: Vec::new(),
            upstream_events: Vec::new(),
            spare_upstream_events: Vec::new(),
            local_addr,
            now: Instant::now(),
            servers,
            idle_release: None,
            metrics: crate::metrics::Metrics::default(),
            admin,
            health_workers,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local_addr
    }

    /// Runs until shutdown; returns the process exit code.
    pub fn run(mut self) -> io::Result<i32> {
        if let Some(stdio) = self.config.stdio.clone() {
            self.open_stdio(stdio.server.as_deref())?;
        }
        match self.config.default() {
            Some(_) if self.config.stdio.is_some() => {}
            Some(server) => info!(
                "listening on http://{}{} (upstream: {})",
                self.local_addr,
                self.config.path,
                server.describe()
            ),
            None => info!("listening on http://{}", self.local_addr),
        }
        for server in self
            .config
            .servers
            .iter()
            .filter(|_| self.config.stdio.is_none())
        {
            info!(
                "server {} at {}: {}",
                server.name,
                server.mcp_path(),
                server.describe()
            );
        }
        if let Some(admin) = &self.admin {
            info!("admin endpoints on http://{}", admin.local_addr());
        }
        // The OAuth issuer's keys are fetched before the first token needs them.
        self.key_fetch_progress();
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            self.prune_stale_timers();
            let timeout = if !self.servers.has_pending_reads() {
                // The clock is read once per turn, after `poll`; a deadline
                // computed from it is at most one turn's work late. The
                // upstream side reports its own next deadline.
                let upstream = self.servers.next_deadline();
                let deadline = self
                    .timers
                    .next_deadline()
                    .into_iter()
                    .chain(upstream)
                    .min();
                deadline.map(|deadline| timers::wait_until(self.now, deadline))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(error) = self.poll.poll(&mut events, timeout) {
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
            self.now = Instant::now();
            for event in events.iter() {
                if let Some(code) = self.dispatch(event) {
                    return Ok(code);
                }
            }
            for session_key in self.servers.take_pending_reads() {
                self.pump_output(session_key);
            }
            self.run_timers(self.now);
            self.settle();
            if self.run_state == RunState::Draining
                && self.sessions.is_empty()
                && !self.servers.in_flight()
                && !self.front.requests_in_progress()
            {
                // Queued responses get a last, short chance to reach their
                // clients, served by the loop like any other output.
                let until = self.now + EXIT_FLUSH_WAIT;
                self.run_state = RunState::Exiting { until };
                self.timers.schedule(until, Timer::ExitFlush);
            }
            if let RunState::Exiting { until } = self.run_state {
                let flushed = self
                    .front
                    .conns
                    .iter()
                    .all(|(_, conn)| conn.unwritten() == 0);
                if flushed || self.now >= until {
                    self.servers.log_summary();
                    info!("shutdown complete");
                    return Ok(0);
                }
            }
        }
    }

    /// Handles one readiness event; `Some(code)` means exit now.
    fn dispatch(&mut self, event: &Event) -> Option<i32> {
        match Source::of(event.token())? {
            Source::Listener => {
                self.front.listener_readable = true;
                self.accept_all();
            }
            Source::ShutdownSignal => {
                if drain_signal_pipe(&mut self.signals.shutdown) > 0 {
                    return self.on_shutdown_signal();
                }
            }
            Source::ChildSignal => {
                drain_signal_pipe(&mut self.signals.child);
                self.reap_children();
            }
            Source::ReloadSignal => {
                if drain_signal_pipe(&mut self.signals.reload) > 0 {
                    self.on_reload_signal();
                }
            }
            Source::Client(index) => {
                let key = self.front.conns.key_at(index)?;
                if let Some(conn) = self.front.conns.get_mut(key) {
                    conn.ready.on_event(event);
                    if event.is_writable() || event.is_write_closed() || event.is_error() {
                        self.front.mark_dirty(key);
                    }
                    self.read_conn(key);
                }
            }
            Source::ChildStdin(index) => self.on_child_event(index, Pipe::Stdin, event),
            Source::ChildStdout(index) => self.on_child_event(index, Pipe::Stdout, event),
            Source::Upstream { server, conn } => {
                if let Some(server) = ServerId::at(server) {
                    self.with_upstream(server, |upstream, ctx| {
                        upstream.on_socket_event(ctx, conn, event)
                    });
                }
            }
            Source::ChildStderr(index) => self.on_child_event(index, Pipe::Stderr, event),
            Source::AdminListener => {
                if let Some(admin) = self.admin.as_mut() {
                    admin.accept_all(self.poll.registry(), self.now);
                    self.timers
                        .schedule(self.now + admin::ADMIN_REQUEST_TIMEOUT, Timer::AdminExpire);
                }
            }
            Source::Admin(index) => self.on_admin_event(index, event),
            Source::HealthWaker => self.on_probe_results(),
            Source::KeyFetch => {
                let (registry, now) = (self.poll.registry(), self.now);
                (self.auth).on_fetch_event(event, registry, now, &mut self.timers);
                self.key_fetch_progress();
            }
        }
        None
    }

    // ----- the operator's window --------------------------------------------

    /// An admin connection's request, answered from the proxy's state.
    fn on_admin_event(&mut self, index: usize, event: &Event) {
        let Some(admin) = self.admin.as_mut() else {
            return;
        };
        let registry = self.poll.registry();
        let Some((key, request)) = admin.on_event(index, event, registry, &mut self.scratch) else {
            return;
        };
        let figures = admin::Figures {
            sessions: self.session_ids.len(),
            serving: self.run_state == RunState::Serving,
            servers: &self.servers,
            metrics: &self.metrics,
            bytes: (self.front.bytes_in, self.front.bytes_out),
        };
        let (status, content_type, body) = admin::respond(&request, &figures);
        if let Some(admin) = self.admin.as_mut() {
            admin.answer(key, status, content_type, &body, self.poll.registry());
        }
    }

    /// Health workers sent results: the upstream's health is updated.
    fn on_probe_results(&mut self) {
        let results: Vec<_> = match &self.health_workers {
            Some(workers) => workers.results().collect(),
            None => return,
        };
        for result in results {
            self.with_upstream(result.server, |upstream, ctx| {
                upstream.probe_done(ctx, &result)
            });
        }
    }

    /// Runs the work queued by event handlers until nothing is left: decoding
    /// buffered requests, and flushing connections with queued output.
    fn settle(&mut self) {
        loop {
            if let Some(key) = self.front.process_list.pop() {
                self.process_conn(key);
                continue;
            }
            if let Some(key) = self.front.flush_list.pop() {
                self.flush_conn(key);
                continue;
            }
            break;
        }
    }

    // ----- accepting -------------------------------------------------------

    fn accept_all(&mut self) {
        let (front, mut ctx) = self.front_parts();
        front.accept_all(&mut ctx);
    }

    // ----- client connections ---------------------------------------------

    /// The front door and what its calls need of the rest of the proxy.
    fn front_parts(&mut self) -> (&mut HttpFrontDoor, FrontCtx<'_>) {
        let ctx = FrontCtx {
            now: self.now,
            config: &self.config,
            timers: &mut self.timers,
            registry: self.poll.registry(),
            serving: self.run_state == RunState::Serving,
            scratch: &mut self.scratch,
            events: &mut self.front_events,
        };
        (&mut self.front, ctx)
    }

    fn read_conn(&mut self, key: ConnKey) {
        let (front, mut ctx) = self.front_parts();
        let next = front.read_conn(&mut ctx, key);
        self.run_front_events();
        // A request decoded straight from the read buffer; what follows it
        // is decoded when the connection is processed.
        self.act_on(key, next);
    }

    /// Acts on what a connection's input held: a request, or a line of the
    /// stdio front door's; false when there is nothing to act on now.
    fn act_on(&mut self, key: ConnKey, next: Next) -> bool {
        match next {
            Next::Request(request) => self.handle_request(key, request),
            Next::Line {
                line,
                server,
                session,
            } => self.handle_stdio_line(key, line, server, session),
            Next::Wait | Next::Gone => return false,
        }
        true
    }

    /// The stdio front door: mcphop's stdin and stdout become the one
    /// client connection, of `server` (the default one if none is named).
    fn open_stdio(&mut self, server: Option<&str>) -> io::Result<()> {
        let (front, mut ctx) = self.front_parts();
        let key = front.open_stdio(&mut ctx, server)?;
        // Whatever the client wrote before the loop started is read now.
        self.read_conn(key);
        Ok(())
    }

    /// Stops taking new sessions and lets the open ones end (as SIGTERM
    /// does, once).
    pub(super) fn stop_serving(&mut self) {
        if self.run_state == RunState::Serving {
            self.on_shutdown_signal();
        }
    }

    /// Acts on buffered requests while the connection is free to take them.
    fn process_conn(&mut self, key: ConnKey) {
        loop {
            let (front, mut ctx) = self.front_parts();
            let next = front.next_request(&mut ctx, key);
            if let Next::Wait = next {
                front.after_processing(&mut ctx, key);
            }
            if !self.act_on(key, next) {
                break;
            }
        }
        self.run_front_events();
    }

    fn flush_conn(&mut self, key: ConnKey) {
        let (front, mut ctx) = self.front_parts();
        front.flush_conn(&mut ctx, key);
        self.run_front_events();
    }

    fn close_conn(&mut self, key: ConnKey) {
        let (front, mut ctx) = self.front_parts();
        front.close_conn(&mut ctx, key);
        self.run_front_events();
    }

    /// Queues an immediate response on a connection; it is the last one
    /// while mcphop shuts down.
    fn reply(&mut self, key: ConnKey, reply: &Reply, keep_alive: bool) {
        let keep_alive = keep_alive && self.run_state == RunState::Serving;
        self.front.reply(key, reply, keep_alive);
    }
}

impl Proxy {
    /// Removes an ended session once nothing upstream is left to wait for,
    /// logging its end.
    fn finalize_if_done(&mut self, session_key: SessionKey) {
        let Some(session) = self.sessions.get(session_key) else {
            return;
        };
        let Phase::Ending { reason } = session.core.phase() else {
            return;
        };
        let Some(server) = self.servers.get_mut(session.server) else {
            return;
        };
        if !server.upstream.session_done(session_key) {
            return;
        }
        info!(
            "session {} ended: {reason}; {}; lasted {:.1}s",
            session.core.short_id(),
            server.upstream.summary(session_key, session),
            self.now
                .duration_since(session.core.started())
                .as_secs_f64()
        );
        server.upstream.forget(session_key, self.poll.registry());
        if let Some(session) = self.sessions.remove(session_key) {
            self.servers.session_closed(&session.client);
        }
        if self.sessions.is_empty() {
            idle::last_session_gone(self);
        }
    }

    // ----- timers -----------------------------------------------------------

    /// Arms the session's timer for its core's next deadline.
    fn arm_session_timer(&mut self, session_key: SessionKey) {
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        let Some(deadline) = session.core.poll_timeout() else {
            return;
        };
        if session.timer.is_some_and(|armed| armed <= deadline) {
            return;
        }
        session.timer = Some(deadline);
        self.timers.schedule(deadline, Timer::Session(session_key));
    }

    /// A session's timer fired: its core handles whatever is due.
    pub(super) fn on_session_timer(&mut self, key: SessionKey, deadline: Instant) {
        let now = self.now;
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        if session.timer != Some(deadline) {
            return;
        }
        session.timer = None;
        self.drive(key, Origin::NONE, |core| core.handle_timeout(now));
    }

    fn run_timers(&mut self, now: Instant) {
        for server in self.servers.due(now) {
            self.with_upstream(server, |upstream, ctx| upstream.handle_timeout(ctx));
        }
        while let Some((deadline, timer)) = self.timers.pop_expired(now) {
            match timer {
                Timer::Conn(key) => self.on_conn_deadline(key, deadline),
                Timer::Heartbeat(key) => self.on_heartbeat(key, deadline),
                Timer::HeadHold(key) => self.front.on_hold_over(key, deadline),
                Timer::Session(key) => self.on_session_timer(key, deadline),
                Timer::ShutdownGrace => {
                    let live: Vec<SessionKey> = self.session_ids.values().copied().collect();
                    if !live.is_empty() {
                        info!(
                            "shutdown grace over: ending {} session(s) with requests in flight",
                            live.len()
                        );
                    }
                    for session_key in live {
                        self.end_session(session_key, "shutdown grace period over");
                    }
                    self.refuse_requests_in_progress();
                }
                Timer::FinalExit => {
                    self.servers.kill_all();
                    self.reap_children();
                    for key in self.sessions.keys() {
                        let Some(session) = self.sessions.remove(key) else {
                            continue;
                        };
                        if let Some(server) = self.servers.get_mut(session.server) {
                            warn!(
                                "exiting with session {} unfinished: {}",
                                session.core.short_id(),
                                server.upstream.summary(key, &session)
                            );
                            server.upstream.forget(key, self.poll.registry());
                        }
                    }
                    self.servers.abandon(self.poll.registry());
                }
                Timer::Pool(server) => {
                    self.with_upstream(server, |upstream, ctx| {
                        upstream.on_pool_timer(ctx, deadline)
                    });
                }
                Timer::Upstream(key) => {
                    self.with_session_upstream(key, |upstream, ctx| {
                        upstream.on_session_timer(ctx, key, deadline)
                    });
                }
                Timer::ExitFlush => {}
                Timer::IdleRelease => idle::release(self),
                Timer::KeyFetch => {
                    let registry = self.poll.registry();
                    (self.auth).on_fetch_deadline(deadline, registry, now, &mut self.timers);
                    self.key_fetch_progress();
                }
                Timer::Probe(server) => health_workers::on_probe_timer(self, server, now),
                Timer::AdminExpire => {
                    if let Some(admin) = self.admin.as_mut() {
                        admin.expire(now, self.poll.registry());
                    }
                }
                Timer::RetryAccept => {
                    self.front.listener_readable = true;
                    self.accept_all();
                }
            }
        }
    }

    /// Drops stale timers from the front of the queue, so the loop never
    /// wakes for a connection or session that is gone, or for a deadline its
    /// owner moved: idle means no wake-ups.
    fn prune_stale_timers(&mut self) {
        while let Some((deadline, timer)) = self.timers.peek() {
            if self.timer_is_live(deadline, *timer) {
                return;
            }
            self.timers.pop();
        }
    }

    fn timer_is_live(&self, deadline: Instant, timer: Timer) -> bool {
        match timer {
            Timer::Conn(key) => self
                .front
                .conns
                .get(key)
                .is_some_and(|conn| conn.deadline.map(|(at, _)| at) == Some(deadline)),
            Timer::Heartbeat(key) => self
                .front
                .conns
                .get(key)
                .is_some_and(|conn| conn.heartbeat_timer == Some(deadline)),
            Timer::HeadHold(key) => self
                .front
                .conns
                .get(key)
                .is_some_and(|conn| conn.held_until() == Some(deadline)),
            Timer::Session(key) => self
                .sessions
                .get(key)
                .is_some_and(|session| session.timer == Some(deadline)),
            Timer::Pool(server) => self
                .servers
                .get(server)
                .is_some_and(|entry| entry.upstream.pool_timer_is(deadline)),
            Timer::Upstream(key) => self
                .sessions
                .get(key)
                .and_then(Session::http)
                .is_some_and(|http| http.upstream_timer == Some(deadline)),
            Timer::AdminExpire => self.admin.as_ref().is_some_and(AdminDoor::has_conns),
            Timer::IdleRelease => self.idle_release == Some(deadline),
            Timer::KeyFetch => self.auth.fetch_due_at(deadline),
            Timer::ShutdownGrace
            | Timer::FinalExit
            | Timer::RetryAccept
            | Timer::ExitFlush
            | Timer::Probe(_) => true,
        }
    }

    fn on_conn_deadline(&mut self, key: ConnKey, deadline: Instant) {
        let (front, mut ctx) = self.front_parts();
        front.on_deadline(&mut ctx, key, deadline);
        self.run_front_events();
    }

    fn on_heartbeat(&mut self, key: ConnKey, deadline: Instant) {
        let (front, mut ctx) = self.front_parts();
        front.on_heartbeat(&mut ctx, key, deadline);
    }

    /// SIGHUP: what can change at run time is read again (the token file,
    /// the `--config` file); a broken one leaves the running one in place.
    fn on_reload_signal(&mut self) {
        self.auth.reload();
        reload::reload_config(self);
    }

    // ----- shutdown ---------------------------------------------------------

    fn on_shutdown_signal(&mut self) -> Option<i32> {
        if self.run_state != RunState::Serving {
            // SIGKILL cannot be ignored: the children die now, and whatever
            // mcphop does not reap before it exits, init reaps.
            warn!("second signal: killing every child and exiting now");
            self.servers.kill_all();
            self.reap_children();
            return Some(1);
        }
        info!(
            "shutting down: {} session(s), up to {:?} for requests in flight",
            self.session_ids.len(),
            self.config.shutdown_grace
        );
        self.run_state = RunState::Draining;
        self.auth.refuse_parked(&mut self.front);
        if let Some(mut listener) = self.front.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let now = self.now;
        self.timers
            .schedule(now + self.config.shutdown_grace, Timer::ShutdownGrace);
        let final_exit = now
            + self.config.shutdown_grace
            + self.config.child_grace
            + self.config.child_grace
            + FINAL_EXIT_MARGIN;
        self.timers.schedule(final_exit, Timer::FinalExit);
        // GET streams carry nothing in flight: they end now, cleanly; the
        // sessions end as they go quiet.
        let live: Vec<SessionKey> = self.session_ids.values().copied().collect();
        for session_key in live {
            self.drive(session_key, drive::Origin::NONE, SessionCore::drain);
        }
        let idle: Vec<ConnKey> = self
            .front
            .conns
            .iter()
            .filter(|(_, conn)| {
                conn.state == ConnState::Requests
                    && conn.unwritten() == 0
                    && !conn.request_in_progress()
            })
            .map(|(key, _)| key)
            .collect();
        for key in idle {
            self.close_conn(key);
        }
        None
    }
}

impl Proxy {
    /// The shutdown grace is over: a request still arriving is answered 503
    /// with `Connection: close` (the answer it would have had once
    /// complete), and its connection closes once that is flushed.
    fn refuse_requests_in_progress(&mut self) {
        let arriving: Vec<ConnKey> = self
            .front
            .conns
            .iter()
            .filter(|(_, conn)| conn.request_in_progress())
            .map(|(key, _)| key)
            .collect();
        if !arriving.is_empty() {
            info!(
                "shutdown grace over: {} request(s) still arriving answered 503",
                arriving.len()
            );
        }
        for key in arriving {
            self.reply(key, &shutting_down_reply(), false);
        }
    }
}

/// Runs mcphop with `config` until it shuts down; returns the exit code.
pub fn run(config: Config) -> io::Result<i32> {
    Proxy::bind(config)?.run()
}
