//! The event loop: one `mio::Poll` on one thread over the listener, every
//! client socket, every child pipe and the signal pipes. It owns the slabs of
//! connections and sessions and the timer queue, and turns readiness into calls
//! on the sans-IO parts (HTTP codec, endpoint rules, router, line framer).
//!
//! Edge-triggered discipline: each source is registered once; readiness is
//! remembered in user space (`readable`/`writable` flags) and cleared only when
//! a call returns `WouldBlock`; output queued anywhere marks its connection
//! dirty, and every dirty connection is flushed before the loop sleeps again.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::event::Event;
use mio::net::{TcpListener, TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Registry, Waker};
use serde_json::Value;
use slab::Slab;

use crate::child;
use crate::client::{Conn, ConnState, DeadlineKind, ReadOutcome, READ_CHUNK_BYTES};
use crate::config::{Config, RETRY_AFTER_SECONDS};
use crate::http::request::{Decoded, Limits, Request};
use crate::http::response;
use crate::jsonrpc::{self, IdKey, Kind};
use crate::lines::Line;
use crate::mcp::endpoint::{self, AccessPolicy, Intent, Reply};
use crate::mcp::router::{Destination, RegisterError, StreamId};
use crate::session::{Phase, PipeRead, Session};
use crate::session_id;
use crate::sse;
use crate::timers::TimerQueue;
use crate::token::Source;

/// Events taken from the kernel per `poll` call.
const EVENTS_CAPACITY: usize = 1024;
/// An idle keep-alive connection is closed after this long.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most client connections at once; more are answered 503 and closed.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8192;
/// After the shutdown grace, children get this long to be reaped before
/// mcphop exits anyway.
const FINAL_EXIT_MARGIN: Duration = Duration::from_secs(1);
/// Wait before retrying `accept` after the process ran out of descriptors.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);
/// A child's stdout is read in at most this many chunks per turn, so one
/// chatty child cannot starve the rest of the loop.
const MAX_STDOUT_READS_PER_TURN: usize = 16;

/// What a timer is for. Stale entries are recognised by the owner's serial
/// and current deadline, and skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Conn { key: usize, serial: u64 },
    SessionIdle { key: usize, serial: u64 },
    ChildTerm { key: usize, serial: u64 },
    ChildKill { key: usize, serial: u64 },
    ShutdownGrace,
    FinalExit,
    RetryAccept,
}

/// Whether the proxy is serving or shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunState {
    Serving,
    /// Not accepting; in-flight requests finish; sessions end as they go quiet.
    Draining,
}

/// The proxy: every piece of state the loop thread owns.
pub struct Proxy {
    config: Config,
    poll: Poll,
    listener: Option<TcpListener>,
    listener_readable: bool,
    policy: AccessPolicy,
    limits: Limits,
    conns: Slab<Conn>,
    sessions: Slab<Session>,
    /// Live sessions by id.
    session_ids: HashMap<String, usize>,
    /// Sessions by child pid, until the child is reaped.
    session_pids: HashMap<u32, usize>,
    timers: TimerQueue<Timer>,
    next_serial: u64,
    run_state: RunState,
    shutdown_signal: UnixStream,
    child_signal: UnixStream,
    /// Held for the health-check workers of a later version, which wake the
    /// loop through it.
    _waker: Arc<Waker>,
    flush_list: Vec<usize>,
    /// Sessions whose stdout had more to read when their turn ended.
    stdout_backlog: Vec<usize>,
    process_list: Vec<usize>,
    scratch: Vec<u8>,
    event_scratch: Vec<u8>,
    local_addr: std::net::SocketAddr,
}

/// A pipe that turns the given signals into readable bytes.
fn signal_pipe(signals: &[libc::c_int]) -> io::Result<UnixStream> {
    let (read_end, write_end) = StdUnixStream::pair()?;
    read_end.set_nonblocking(true)?;
    write_end.set_nonblocking(true)?;
    for &signal in signals {
        signal_hook::low_level::pipe::register(signal, write_end.try_clone()?)?;
    }
    Ok(UnixStream::from_std(read_end))
}

/// Reads everything a signal pipe holds: the bytes only say "a signal came".
fn drain_signal_pipe(pipe: &mut UnixStream) -> usize {
    let mut buffer = [0u8; 64];
    let mut total = 0;
    loop {
        match pipe.read(&mut buffer) {
            Ok(0) => return total,
            Ok(count) => total += count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return total,
        }
    }
}

impl Proxy {
    /// Binds the listener and sets up the loop; nothing is served until `run`.
    pub fn bind(config: Config) -> io::Result<Proxy> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(config.listen)?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, Source::Listener.token(), Interest::READABLE)?;
        let mut shutdown_signal = signal_pipe(&[libc::SIGINT, libc::SIGTERM])?;
        poll.registry().register(
            &mut shutdown_signal,
            Source::ShutdownSignal.token(),
            Interest::READABLE,
        )?;
        let mut child_signal = signal_pipe(&[libc::SIGCHLD])?;
        poll.registry().register(
            &mut child_signal,
            Source::ChildSignal.token(),
            Interest::READABLE,
        )?;
        let waker = Arc::new(Waker::new(poll.registry(), Source::Waker.token())?);
        let policy = AccessPolicy::new(
            local_addr.port(),
            &config.allowed_hosts,
            &config.allowed_origins,
        );
        let limits = Limits {
            max_head_bytes: config.max_head_bytes,
            max_body_bytes: config.max_body_bytes,
        };
        Ok(Proxy {
            config,
            poll,
            listener: Some(listener),
            listener_readable: true,
            policy,
            limits,
            conns: Slab::new(),
            sessions: Slab::new(),
            session_ids: HashMap::new(),
            session_pids: HashMap::new(),
            timers: TimerQueue::default(),
            next_serial: 1,
            run_state: RunState::Serving,
            shutdown_signal,
            child_signal,
            _waker: waker,
            flush_list: Vec::new(),
            stdout_backlog: Vec::new(),
            process_list: Vec::new(),
            scratch: vec![0; READ_CHUNK_BYTES],
            event_scratch: Vec::new(),
            local_addr,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local_addr
    }

    fn serial(&mut self) -> u64 {
        self.next_serial += 1;
        self.next_serial
    }

    /// Runs until shutdown; returns the process exit code.
    pub fn run(mut self) -> io::Result<i32> {
        info!(
            "listening on http://{}{} (upstream: {})",
            self.local_addr,
            self.config.path,
            self.config.command.join(" ")
        );
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            let timeout = if self.stdout_backlog.is_empty() {
                self.timers.poll_timeout(Instant::now())
            } else {
                Some(Duration::ZERO)
            };
            if let Err(error) = self.poll.poll(&mut events, timeout) {
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
            for event in events.iter() {
                if let Some(code) = self.dispatch(event) {
                    return Ok(code);
                }
            }
            for session_key in std::mem::take(&mut self.stdout_backlog) {
                self.pump_stdout(session_key);
            }
            self.run_timers(Instant::now());
            self.settle();
            if self.run_state == RunState::Draining && self.sessions.is_empty() {
                self.flush_before_exit();
                info!("shutdown complete");
                return Ok(0);
            }
        }
    }

    /// Handles one readiness event; `Some(code)` means exit now.
    fn dispatch(&mut self, event: &Event) -> Option<i32> {
        match Source::of(event.token())? {
            Source::Listener => {
                self.listener_readable = true;
                self.accept_all();
            }
            Source::Waker => {}
            Source::ShutdownSignal => {
                if drain_signal_pipe(&mut self.shutdown_signal) > 0 {
                    return self.on_shutdown_signal();
                }
            }
            Source::ChildSignal => {
                drain_signal_pipe(&mut self.child_signal);
                self.reap_children();
            }
            Source::Client(key) => {
                if let Some(conn) = self.conns.get_mut(key) {
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        conn.readable = true;
                    }
                    if event.is_writable() || event.is_write_closed() || event.is_error() {
                        conn.writable = true;
                        self.mark_dirty(key);
                    }
                    self.read_conn(key);
                }
            }
            Source::ChildStdin(key) => {
                if let Some(session) = self.sessions.get_mut(key) {
                    session.stdin.writable = true;
                    self.flush_stdin(key);
                }
            }
            Source::ChildStdout(key) => {
                if let Some(session) = self.sessions.get_mut(key) {
                    session.stdout.readable = true;
                    self.pump_stdout(key);
                }
            }
            Source::ChildStderr(key) => {
                if let Some(session) = self.sessions.get_mut(key) {
                    session.stderr.readable = true;
                    self.pump_stderr(key);
                }
            }
        }
        None
    }

    /// Runs the work queued by event handlers until nothing is left: decoding
    /// buffered requests, and flushing connections with queued output.
    fn settle(&mut self) {
        loop {
            if let Some(key) = self.process_list.pop() {
                self.process_conn(key);
                continue;
            }
            if let Some(key) = self.flush_list.pop() {
                self.flush_conn(key);
                continue;
            }
            break;
        }
    }

    // ----- accepting -------------------------------------------------------

    fn accept_all(&mut self) {
        while self.listener_readable {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((socket, peer)) => self.add_conn(socket, peer),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.listener_readable = false
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    // Out of descriptors, most likely: try again shortly rather
                    // than spin on a listener that stays readable.
                    warn!("accept failed: {error}; retrying in {ACCEPT_RETRY_DELAY:?}");
                    self.timers
                        .schedule(Instant::now() + ACCEPT_RETRY_DELAY, Timer::RetryAccept);
                    return;
                }
            }
        }
    }

    fn add_conn(&mut self, mut socket: TcpStream, peer: std::net::SocketAddr) {
        if self.conns.len() >= DEFAULT_MAX_CONNECTIONS {
            warn!("refusing connection from {peer}: {DEFAULT_MAX_CONNECTIONS} connections open");
            let mut out = Vec::new();
            response::write_full(
                &mut out,
                503,
                &[("Retry-After", &RETRY_AFTER_SECONDS.to_string())],
                b"",
                false,
            );
            // Best effort on a fresh socket whose buffer is empty.
            let _ = io::Write::write(&mut socket, &out);
            return;
        }
        let _ = socket.set_nodelay(true);
        let serial = self.serial();
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(error) = self.poll.registry().register(
            &mut socket,
            Source::Client(key).token(),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("cannot register connection from {peer}: {error}");
            return;
        }
        debug!("connection {key} from {peer}");
        entry.insert(Conn::new(socket, serial, self.limits));
        self.set_conn_deadline(key, DeadlineKind::Request, self.config.head_timeout);
    }

    // ----- client connections ---------------------------------------------

    fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.dirty {
                conn.dirty = true;
                self.flush_list.push(key);
            }
        }
    }

    fn set_conn_deadline(&mut self, key: usize, kind: DeadlineKind, after: Duration) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let at = Instant::now() + after;
        conn.deadline = Some((at, kind));
        self.timers.schedule(
            at,
            Timer::Conn {
                key,
                serial: conn.serial,
            },
        );
    }

    /// Most bytes of unprocessed input kept per connection; reading pauses
    /// beyond it until requests are taken out.
    fn max_conn_input(&self) -> usize {
        self.config
            .max_head_bytes
            .saturating_add(self.config.max_body_bytes)
            .saturating_add(READ_CHUNK_BYTES)
    }

    fn read_conn(&mut self, key: usize) {
        let max_input = self.max_conn_input();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let outcome = conn.read_available(max_input, &mut self.scratch);
        let streaming = matches!(conn.state, ConnState::Streaming { .. });
        if outcome == ReadOutcome::Closed && streaming {
            // A client that hangs up mid-stream has gone away (as nginx treats
            // a client abort); its stream ends with it.
            debug!("connection {key} closed by the client during a stream");
            self.close_conn(key);
            return;
        }
        self.process_list.push(key);
    }

    /// Decodes and handles buffered requests while the connection is free to
    /// take them.
    fn process_conn(&mut self, key: usize) {
        loop {
            let max_buffer = self.config.max_client_buffer;
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.state != ConnState::Requests
                || conn.close_after_flush
                || conn.unwritten() > max_buffer
            {
                break;
            }
            match conn.decoder.decode(&mut conn.input) {
                Ok(Decoded::Request(request)) => {
                    conn.deadline = None;
                    self.handle_request(key, request);
                }
                Ok(Decoded::Incomplete) => {
                    if conn.decoder.take_expect_continue() {
                        response::write_continue(conn.output());
                        self.mark_dirty(key);
                    }
                    break;
                }
                Err(error) => {
                    let status = error.status();
                    debug!("connection {key}: bad request: {}", error.reason());
                    let body = jsonrpc::error_response(
                        &Value::Null,
                        jsonrpc::INVALID_REQUEST,
                        error.reason(),
                    );
                    response::write_full(
                        conn.output(),
                        status,
                        &[("Content-Type", "application/json")],
                        &body,
                        false,
                    );
                    conn.close_after_flush = true;
                    conn.deadline = None;
                    self.mark_dirty(key);
                    return;
                }
            }
        }
        self.after_processing(key);
    }

    /// Sets the deadline a connection is now under, and closes it if the
    /// client is gone and nothing is left to do.
    fn after_processing(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.state != ConnState::Requests {
            conn.deadline = None;
            return;
        }
        if conn.peer_closed {
            if conn.unwritten() == 0 {
                self.close_conn(key);
            } else {
                conn.close_after_flush = true;
            }
            return;
        }
        let mid_request = conn.decoder.head_in_progress() || !conn.input.is_empty();
        let wanted = if mid_request {
            DeadlineKind::Request
        } else {
            DeadlineKind::KeepAlive
        };
        if conn.deadline.map(|(_, kind)| kind) != Some(wanted) {
            let after = match wanted {
                DeadlineKind::Request => self.config.head_timeout,
                DeadlineKind::KeepAlive => DEFAULT_KEEPALIVE_TIMEOUT,
            };
            self.set_conn_deadline(key, wanted, after);
        }
    }

    fn flush_conn(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.dirty = false;
        if let Err(error) = conn.flush() {
            debug!("connection {key}: write failed: {error}");
            self.close_conn(key);
            return;
        }
        let drained = conn.unwritten() == 0;
        if drained && conn.close_after_flush {
            self.close_conn(key);
            return;
        }
        let below_limit = conn.unwritten() <= self.config.max_client_buffer;
        match conn.state {
            // The client caught up: its child's stdout may flow again.
            ConnState::Streaming {
                session,
                session_serial,
                ..
            } if below_limit
                && self
                    .sessions
                    .get(session)
                    .is_some_and(|s| s.serial == session_serial && s.stdout.readable) =>
            {
                self.pump_stdout(session);
            }
            ConnState::Requests if below_limit && !conn.input.is_empty() => {
                self.process_list.push(key);
            }
            _ => {}
        }
    }

    fn close_conn(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        let mut conn = self.conns.remove(key);
        let _ = self.poll.registry().deregister(&mut conn.socket);
        if let ConnState::Streaming {
            session,
            session_serial,
            stream,
            ..
        } = conn.state
        {
            if let Some(session) = self.sessions.get_mut(session) {
                if session.serial == session_serial {
                    session.stream_conns.remove(&stream);
                    let orphaned = session.router.stream_closed(stream);
                    if !orphaned.is_empty() {
                        debug!(
                            "session {}: client left stream {stream} with {} request(s) unanswered",
                            session.short_id(),
                            orphaned.len()
                        );
                    }
                    session.last_activity = Instant::now();
                }
            }
        }
        debug!("connection {key} closed");
    }

    /// Queues an immediate response on a connection.
    fn reply(&mut self, key: usize, reply: &Reply, keep_alive: bool) {
        let keep_alive = keep_alive && self.run_state == RunState::Serving;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut headers: Vec<(&str, &str)> = reply
            .headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        if !reply.body.is_empty() {
            headers.push(("Content-Type", "application/json"));
        }
        response::write_full(
            conn.output(),
            reply.status,
            &headers,
            &reply.body,
            keep_alive,
        );
        if !keep_alive {
            conn.close_after_flush = true;
        }
        self.mark_dirty(key);
    }

    /// Starts an SSE response on a connection and attaches it to a stream.
    fn start_stream(
        &mut self,
        conn_key: usize,
        session_key: usize,
        stream: StreamId,
        request: &Request,
        session_header: bool,
    ) {
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(conn_key) else {
            return;
        };
        session.stream_conns.insert(stream, conn_key);
        let chunked = request.minor_version >= 1;
        let mut headers = vec![
            ("Content-Type", "text/event-stream"),
            ("Cache-Control", "no-store"),
            ("X-Accel-Buffering", "no"),
        ];
        if session_header {
            headers.push(("Mcp-Session-Id", session.id.as_str()));
        }
        if chunked {
            response::write_chunked_head(conn.output(), 200, &headers, request.keep_alive);
        } else {
            // HTTP/1.0 has no chunking: the stream's end is the connection's end.
            response::write_stream_head(conn.output(), 200, &headers);
        }
        conn.state = ConnState::Streaming {
            session: session_key,
            session_serial: session.serial,
            stream,
            chunked,
        };
        if !request.keep_alive || !chunked {
            conn.close_after_flush_when_idle();
        }
        conn.deadline = None;
        self.mark_dirty(conn_key);
    }

    /// Writes one message to the connection carrying `stream` as an SSE event.
    fn write_event(&mut self, conn_key: usize, data: &[u8]) {
        let Some(conn) = self.conns.get_mut(conn_key) else {
            return;
        };
        let ConnState::Streaming { chunked, .. } = conn.state else {
            return;
        };
        self.event_scratch.clear();
        sse::write_event(&mut self.event_scratch, Some("message"), None, data);
        if chunked {
            response::write_chunk(conn.output(), &self.event_scratch);
        } else {
            conn.output().extend_from_slice(&self.event_scratch);
        }
        self.mark_dirty(conn_key);
    }

    /// Ends the stream a connection carries; the connection then takes its
    /// next request (or closes, for HTTP/1.0 and `Connection: close`).
    fn finish_stream(&mut self, conn_key: usize) {
        let Some(conn) = self.conns.get_mut(conn_key) else {
            return;
        };
        let ConnState::Streaming { chunked, .. } = conn.state else {
            return;
        };
        if chunked {
            response::write_last_chunk(conn.output());
        }
        conn.state = ConnState::Requests;
        if conn.wants_close_when_idle() || self.run_state == RunState::Draining {
            conn.close_after_flush = true;
        }
        self.mark_dirty(conn_key);
        self.process_list.push(conn_key);
    }

    // ----- requests --------------------------------------------------------

    fn handle_request(&mut self, key: usize, request: Request) {
        if self.run_state == RunState::Draining {
            let reply = Reply::error(
                503,
                &Value::Null,
                jsonrpc::SHUTTING_DOWN,
                "Service Unavailable: mcphop is shutting down",
            );
            self.reply(key, &reply, false);
            return;
        }
        match endpoint::interpret(&request, &self.config.path, &self.policy) {
            Intent::Reply(reply) => self.reply(key, &reply, request.keep_alive),
            Intent::Initialize { message } => self.initialize(key, &request, message),
            Intent::Post {
                session,
                message,
                kind,
            } => match self.session_ids.get(&session).copied() {
                Some(session_key) => self.post(key, &request, session_key, message, kind),
                None => self.reply(key, &Reply::session_not_found(), request.keep_alive),
            },
            Intent::OpenStream { session } => match self.session_ids.get(&session).copied() {
                Some(session_key) => self.open_get_stream(key, &request, session_key),
                None => self.reply(key, &Reply::session_not_found(), request.keep_alive),
            },
            Intent::Delete { session } => match self.session_ids.get(&session).copied() {
                Some(session_key) => {
                    self.end_session(session_key, "client sent DELETE");
                    self.reply(key, &Reply::empty(200), request.keep_alive);
                }
                None => self.reply(key, &Reply::session_not_found(), request.keep_alive),
            },
        }
    }

    fn initialize(&mut self, key: usize, request: &Request, message: Value) {
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        if self.session_ids.len() >= self.config.max_sessions {
            warn!(
                "refusing a new session: {} sessions open (--max-sessions)",
                self.session_ids.len()
            );
            let reply = Reply::error(
                503,
                &id,
                jsonrpc::UPSTREAM_GONE,
                "Service Unavailable: too many sessions; retry later",
            )
            .with_header("Retry-After", RETRY_AFTER_SECONDS.to_string());
            self.reply(key, &reply, request.keep_alive);
            return;
        }
        let session_id = match session_id::new_session_id() {
            Ok(session_id) => session_id,
            Err(error) => {
                error!("no randomness for a session id: {error}");
                let reply = Reply::error(500, &id, jsonrpc::INTERNAL_ERROR, "no session id");
                self.reply(key, &reply, request.keep_alive);
                return;
            }
        };
        let spawned = match child::spawn(&self.config.command) {
            Ok(spawned) => spawned,
            Err(error) => {
                error!(
                    "cannot start upstream `{}`: {error}",
                    self.config.command.join(" ")
                );
                let reply = Reply::error(
                    502,
                    &id,
                    jsonrpc::UPSTREAM_GONE,
                    &format!("Bad Gateway: the upstream server could not be started: {error}"),
                );
                self.reply(key, &reply, request.keep_alive);
                return;
            }
        };
        let now = Instant::now();
        let serial = self.serial();
        let pid = spawned.pid;
        let mut session = Session::new(
            serial,
            session_id.clone(),
            spawned,
            self.config.max_held_bytes,
            self.config.max_line_bytes,
            now,
        );
        let session_key = self.sessions.vacant_entry().key();
        if let Err(error) = register_child_pipes(self.poll.registry(), session_key, &mut session) {
            error!("cannot watch the pipes of child {pid}: {error}");
            child::signal_group(pid, libc::SIGKILL);
            self.session_pids.insert(pid, usize::MAX);
            let reply = Reply::error(502, &id, jsonrpc::UPSTREAM_GONE, "Bad Gateway");
            self.reply(key, &reply, request.keep_alive);
            return;
        }
        info!(
            "session {} started: pid {pid}, {} live",
            session.short_id(),
            self.session_ids.len() + 1
        );
        session.initialize_id = IdKey::of_message(&message);
        self.sessions.insert(session);
        self.session_ids.insert(session_id, session_key);
        self.session_pids.insert(pid, session_key);
        self.timers.schedule(
            now + self.config.session_idle_timeout,
            Timer::SessionIdle {
                key: session_key,
                serial,
            },
        );
        self.forward_request(key, request, session_key, &message, true);
    }

    fn post(
        &mut self,
        key: usize,
        request: &Request,
        session_key: usize,
        message: Value,
        kind: Kind,
    ) {
        let max_stdin = self.config.max_child_stdin_buffer;
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        session.last_activity = Instant::now();
        if session.stdin.unwritten() > max_stdin {
            let id = message.get("id").cloned().unwrap_or(Value::Null);
            let reply = Reply::error(
                503,
                &id,
                jsonrpc::UPSTREAM_GONE,
                "Service Unavailable: the upstream server is not reading its input",
            )
            .with_header("Retry-After", "1");
            self.reply(key, &reply, request.keep_alive);
            return;
        }
        match kind {
            Kind::Request => self.forward_request(key, request, session_key, &message, false),
            Kind::Notification | Kind::Response => {
                self.send_to_child(session_key, &request.body, &message);
                self.reply(key, &Reply::empty(202), request.keep_alive);
            }
        }
    }

    /// Registers a request, opens its SSE stream and sends it to the child.
    fn forward_request(
        &mut self,
        key: usize,
        request: &Request,
        session_key: usize,
        message: &Value,
        session_header: bool,
    ) {
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        let stream = session.router.open_post_stream();
        if let Err(error) = session.router.register_request(stream, message) {
            session.router.stream_closed(stream);
            let text = match error {
                RegisterError::DuplicateId => {
                    "Invalid Request: a request with this id is already in flight"
                }
                RegisterError::NoId => "Invalid Request: the id must be a string or an integer",
            };
            let id = message.get("id").cloned().unwrap_or(Value::Null);
            let reply = Reply::error(400, &id, jsonrpc::INVALID_REQUEST, text);
            self.reply(key, &reply, request.keep_alive);
            return;
        }
        self.start_stream(key, session_key, stream, request, session_header);
        self.send_to_child(session_key, &request.body, message);
    }

    fn open_get_stream(&mut self, key: usize, request: &Request, session_key: usize) {
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        session.last_activity = Instant::now();
        let (stream, replaced) = session.router.open_get_stream();
        let replaced_conn = replaced.and_then(|old| session.stream_conns.remove(&old));
        let held = session.router.take_held();
        if let Some(old_conn) = replaced_conn {
            debug!(
                "session {}: a new GET stream replaces the old one",
                session.short_id()
            );
            self.finish_stream(old_conn);
        }
        self.start_stream(key, session_key, stream, request, false);
        for message in held {
            self.write_event(key, &message);
        }
    }

    /// Queues one client message for the child's stdin as a single line.
    fn send_to_child(&mut self, session_key: usize, body: &[u8], message: &Value) {
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        let body = trim_ascii(body);
        if body.contains(&b'\n') || body.contains(&b'\r') {
            // A pretty-printed body: re-serialize it compactly, since stdio
            // framing allows no newline inside a message.
            match serde_json::to_vec(message) {
                Ok(compact) => session.stdin.push_line(&compact),
                Err(error) => warn!("session {}: cannot re-encode: {error}", session.short_id()),
            }
        } else {
            session.stdin.push_line(body);
        }
        self.flush_stdin(session_key);
    }

    // ----- the child's pipes ---------------------------------------------

    fn flush_stdin(&mut self, session_key: usize) {
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        if let Err(error) = session.stdin.flush() {
            // The child stopped reading (it exited, most likely); its exit is
            // noticed through SIGCHLD and stdout EOF.
            debug!(
                "session {}: writing to the child's stdin failed: {error}",
                session.short_id()
            );
            if let Some(mut pipe) = session.stdin.pipe.take() {
                let _ = self.poll.registry().deregister(&mut pipe);
            }
        }
    }

    /// True when every connection carrying this session's streams can take
    /// more output; otherwise the child's stdout waits (back-pressure).
    fn session_can_emit(&self, session: &Session) -> bool {
        session.stream_conns.values().all(|conn_key| {
            self.conns
                .get(*conn_key)
                .is_none_or(|conn| conn.unwritten() <= self.config.max_client_buffer)
        })
    }

    fn pump_stdout(&mut self, session_key: usize) {
        for _ in 0..MAX_STDOUT_READS_PER_TURN {
            let Some(session) = self.sessions.get(session_key) else {
                return;
            };
            if !session.stdout.readable || session.stdout.pipe.is_none() {
                return;
            }
            if session.is_live() && !self.session_can_emit(session) {
                return;
            }
            let Some(session) = self.sessions.get_mut(session_key) else {
                return;
            };
            let read = session.stdout.read_once(&mut self.scratch);
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
        self.stdout_backlog.push(session_key);
    }
}

impl Proxy {
    /// Routes every complete line the child's stdout framer holds.
    fn drain_stdout_lines(&mut self, session_key: usize) {
        loop {
            let Some(session) = self.sessions.get_mut(session_key) else {
                return;
            };
            let Some(line) = session.stdout.framer.next_line() else {
                return;
            };
            let line = match line {
                Line::Complete(line) => line,
                Line::Overlong(length) => {
                    warn!(
                        "session {}: skipped a {length}-byte line on the child's stdout (over --max-line)",
                        session.short_id()
                    );
                    continue;
                }
            };
            if trim_ascii(&line).is_empty() {
                continue;
            }
            if !session.is_live() {
                debug!(
                    "session {}: discarding output of an ended session",
                    session.short_id()
                );
                continue;
            }
            let parsed = serde_json::from_slice::<Value>(&line)
                .map_err(|error| error.to_string())
                .and_then(|value| {
                    jsonrpc::classify(&value)
                        .map(|kind| (value, kind))
                        .map_err(|why| why.0.to_string())
                });
            match parsed {
                Ok((message, kind)) => self.deliver_from_child(session_key, &message, kind, &line),
                Err(why) => warn!(
                    "session {}: skipping a line on the child's stdout that is not JSON-RPC ({why}): {}",
                    session.short_id(),
                    String::from_utf8_lossy(line.get(..200).unwrap_or(&line))
                ),
            }
        }
    }

    /// Sends one message from the child where the router says it goes.
    fn deliver_from_child(&mut self, session_key: usize, message: &Value, kind: Kind, raw: &[u8]) {
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        let mut initialize_failed = false;
        if kind == Kind::Response
            && session.initialize_id.is_some()
            && IdKey::of_message(message) == session.initialize_id
        {
            session.initialize_id = None;
            match message.get("result") {
                Some(result) => {
                    session.protocol_version = result
                        .get("protocolVersion")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    debug!(
                        "session {}: initialized at protocol {}",
                        session.short_id(),
                        session.protocol_version.as_deref().unwrap_or("?")
                    );
                }
                None => initialize_failed = true,
            }
        }
        let destination = session.router.route(message, kind, raw);
        let dropped = session.router.take_dropped_count();
        if dropped > 0 {
            warn!(
                "session {}: dropped {dropped} held message(s): no stream open and the buffer is full",
                session.short_id()
            );
        }
        match destination {
            Destination::Stream { stream, then_close } => {
                let conn_key = if then_close {
                    session.stream_conns.remove(&stream)
                } else {
                    session.stream_conns.get(&stream).copied()
                };
                if let Some(conn_key) = conn_key {
                    self.write_event(conn_key, raw);
                    if then_close {
                        self.finish_stream(conn_key);
                    }
                }
            }
            Destination::Held => {}
            Destination::Orphaned => debug!(
                "session {}: an answer arrived for a client that left",
                session.short_id()
            ),
        }
        if initialize_failed {
            self.end_session(session_key, "the child refused initialize");
        } else if self.run_state == RunState::Draining {
            self.end_session_if_quiet(session_key);
        }
    }

    fn on_stdout_closed(&mut self, session_key: usize) {
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        if let Some(mut pipe) = session.stdout.pipe.take() {
            let _ = self.poll.registry().deregister(&mut pipe);
        }
        session.stdout.readable = false;
        if session.is_live() {
            self.end_session(session_key, "the child closed its stdout");
        }
        self.finalize_if_done(session_key);
    }

    fn pump_stderr(&mut self, session_key: usize) {
        loop {
            let Some(session) = self.sessions.get_mut(session_key) else {
                return;
            };
            if !session.stderr.readable {
                return;
            }
            let read = session.stderr.read_once(&mut self.scratch);
            while let Some(line) = session.stderr.framer.next_line() {
                match line {
                    Line::Complete(line) => info!(
                        "session {} stderr: {}",
                        session.short_id(),
                        String::from_utf8_lossy(&line)
                    ),
                    Line::Overlong(length) => info!(
                        "session {} stderr: ({length} bytes without a newline, not logged)",
                        session.short_id()
                    ),
                }
            }
            match read {
                PipeRead::Data => {}
                PipeRead::WouldBlock => return,
                PipeRead::Closed => {
                    if let Some(mut pipe) = session.stderr.pipe.take() {
                        let _ = self.poll.registry().deregister(&mut pipe);
                    }
                    session.stderr.readable = false;
                    self.finalize_if_done(session_key);
                    return;
                }
            }
        }
    }

    // ----- session lifecycle ------------------------------------------------

    /// Ends a live session: it becomes unreachable, every request still
    /// waiting gets a JSON-RPC error, every stream ends, and the child is told
    /// to exit (stdin closed; SIGTERM and SIGKILL follow if it lingers).
    fn end_session(&mut self, session_key: usize, reason: &str) {
        let now = Instant::now();
        let grace = self.config.child_grace;
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        if !session.is_live() {
            return;
        }
        session.phase = Phase::Ending {
            reason: reason.to_string(),
        };
        self.session_ids.remove(&session.id);
        let (pending, _streams) = session.router.drain();
        let message = format!("The upstream session ended: {reason}");
        let conns: Vec<(StreamId, usize)> = session.stream_conns.drain().collect();
        let code = if self.run_state == RunState::Draining {
            jsonrpc::SHUTTING_DOWN
        } else {
            jsonrpc::UPSTREAM_GONE
        };
        if let Some(mut pipe) = session.stdin.pipe.take() {
            let _ = self.poll.registry().deregister(&mut pipe);
        }
        let serial = session.serial;
        if session.exit.is_none() {
            session.term_at = Some(now + grace);
            session.kill_at = Some(now + grace + grace);
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
        for request in &pending {
            let Some(conn_key) = request
                .stream
                .and_then(|stream| conns.iter().find(|(s, _)| *s == stream))
                .map(|(_, conn_key)| *conn_key)
            else {
                continue;
            };
            let error = jsonrpc::error_response(&request.id, code, &message);
            self.write_event(conn_key, &error);
        }
        for (_, conn_key) in conns {
            self.finish_stream(conn_key);
        }
        self.finalize_if_done(session_key);
    }

    /// Ends a draining session once no request of it is in flight.
    fn end_session_if_quiet(&mut self, session_key: usize) {
        if self
            .sessions
            .get(session_key)
            .is_some_and(|session| session.is_live() && session.router.pending_count() == 0)
        {
            self.end_session(session_key, "mcphop is shutting down");
        }
    }

    /// Reaps every child that exited and ends or finalizes its session.
    fn reap_children(&mut self) {
        while let Some((pid, status)) = child::reap_any() {
            let Some(session_key) = self.session_pids.remove(&pid) else {
                debug!("reaped process {pid} ({status})");
                continue;
            };
            let Some(session) = self.sessions.get_mut(session_key) else {
                continue;
            };
            if session.pid != pid {
                continue;
            }
            session.exit = Some(status);
            // The leader is gone; sweep whatever it left in its group.
            child::signal_group(pid, libc::SIGKILL);
            if session.is_live() {
                // Take what it wrote before dying, then fail the rest.
                session.stdout.readable = true;
                while self
                    .sessions
                    .get(session_key)
                    .is_some_and(|s| s.stdout.pipe.is_some() && s.stdout.readable)
                {
                    let Some(session) = self.sessions.get_mut(session_key) else {
                        break;
                    };
                    let read = session.stdout.read_once(&mut self.scratch);
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

    /// Removes an ended session whose child has been reaped, logging its end.
    fn finalize_if_done(&mut self, session_key: usize) {
        let Some(session) = self.sessions.get(session_key) else {
            return;
        };
        let (Phase::Ending { reason }, Some(exit)) = (&session.phase, session.exit) else {
            return;
        };
        info!(
            "session {} ended: {reason}; child pid {} {exit}; lasted {:.1}s",
            session.short_id(),
            session.pid,
            session.started.elapsed().as_secs_f64()
        );
        let mut session = self.sessions.remove(session_key);
        for pipe in [session.stdout.pipe.take(), session.stderr.pipe.take()]
            .into_iter()
            .flatten()
        {
            let mut pipe = pipe;
            let _ = self.poll.registry().deregister(&mut pipe);
        }
        if let Some(mut pipe) = session.stdin.pipe.take() {
            let _ = self.poll.registry().deregister(&mut pipe);
        }
    }

    // ----- timers -----------------------------------------------------------

    fn run_timers(&mut self, now: Instant) {
        while let Some((deadline, timer)) = self.timers.pop_expired(now) {
            match timer {
                Timer::Conn { key, serial } => self.on_conn_deadline(key, serial, deadline),
                Timer::SessionIdle { key, serial } => self.on_session_idle(key, serial, now),
                Timer::ChildTerm { key, serial } => self.signal_child(key, serial, libc::SIGTERM),
                Timer::ChildKill { key, serial } => self.signal_child(key, serial, libc::SIGKILL),
                Timer::ShutdownGrace => {
                    let live: Vec<usize> = self.session_ids.values().copied().collect();
                    if !live.is_empty() {
                        info!(
                            "shutdown grace over: ending {} session(s) with requests in flight",
                            live.len()
                        );
                    }
                    for session_key in live {
                        self.end_session(session_key, "shutdown grace period over");
                    }
                }
                Timer::FinalExit => {
                    for (_, session) in self.sessions.iter() {
                        if session.exit.is_none() {
                            child::signal_group(session.pid, libc::SIGKILL);
                        }
                    }
                    self.reap_children();
                    let left: Vec<usize> = self.sessions.iter().map(|(key, _)| key).collect();
                    for key in left {
                        if let Some(session) = self.sessions.get(key) {
                            warn!(
                                "exiting with child pid {} of session {} not yet reaped",
                                session.pid,
                                session.short_id()
                            );
                        }
                        self.sessions.remove(key);
                    }
                }
                Timer::RetryAccept => {
                    self.listener_readable = true;
                    self.accept_all();
                }
            }
        }
    }

    fn on_conn_deadline(&mut self, key: usize, serial: u64, deadline: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.serial != serial || conn.deadline.map(|(at, _)| at) != Some(deadline) {
            return;
        }
        let kind = conn.deadline.map(|(_, kind)| kind);
        conn.deadline = None;
        if conn.state != ConnState::Requests {
            return;
        }
        match kind {
            Some(DeadlineKind::Request) => {
                debug!("connection {key}: request not complete in time: 408");
                let reply = Reply::error(
                    408,
                    &Value::Null,
                    jsonrpc::INVALID_REQUEST,
                    "Request Timeout: the request was not complete in time",
                );
                self.reply(key, &reply, false);
            }
            _ => self.close_conn(key),
        }
    }

    fn on_session_idle(&mut self, key: usize, serial: u64, now: Instant) {
        let timeout = self.config.session_idle_timeout;
        let Some(session) = self.sessions.get(key) else {
            return;
        };
        if session.serial != serial || !session.is_live() {
            return;
        }
        let busy = session.router.open_streams() > 0 || session.router.pending_count() > 0;
        let idle_until = session.last_activity + timeout;
        if !busy && now >= idle_until {
            self.end_session(key, "idle timeout");
            return;
        }
        let next = if busy { now + timeout } else { idle_until };
        self.timers
            .schedule(next, Timer::SessionIdle { key, serial });
    }

    fn signal_child(&mut self, key: usize, serial: u64, signal: libc::c_int) {
        let Some(session) = self.sessions.get(key) else {
            return;
        };
        if session.serial != serial || session.exit.is_some() {
            return;
        }
        let name = if signal == libc::SIGKILL {
            "SIGKILL"
        } else {
            "SIGTERM"
        };
        debug!(
            "session {}: child pid {} still running: {name} to its group",
            session.short_id(),
            session.pid
        );
        child::signal_group(session.pid, signal);
    }

    // ----- shutdown ---------------------------------------------------------

    fn on_shutdown_signal(&mut self) -> Option<i32> {
        if self.run_state == RunState::Draining {
            warn!("second signal: killing every child and exiting now");
            for (_, session) in self.sessions.iter() {
                if session.exit.is_none() {
                    child::signal_group(session.pid, libc::SIGKILL);
                }
            }
            // The children were just killed; reaping them takes moments.
            let deadline = Instant::now() + Duration::from_millis(500);
            while self.sessions.iter().any(|(_, s)| s.exit.is_none()) && Instant::now() < deadline {
                self.reap_children();
                std::thread::sleep(Duration::from_millis(5));
            }
            return Some(1);
        }
        info!(
            "shutting down: {} session(s), up to {:?} for requests in flight",
            self.session_ids.len(),
            self.config.shutdown_grace
        );
        self.run_state = RunState::Draining;
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let now = Instant::now();
        self.timers
            .schedule(now + self.config.shutdown_grace, Timer::ShutdownGrace);
        let final_exit = now
            + self.config.shutdown_grace
            + self.config.child_grace
            + self.config.child_grace
            + FINAL_EXIT_MARGIN;
        self.timers.schedule(final_exit, Timer::FinalExit);
        // GET streams carry nothing in flight: end them now, cleanly.
        let mut get_streams = Vec::new();
        for (_, session) in self.sessions.iter_mut() {
            if let Some(stream) = session.router.get_stream() {
                session.router.stream_closed(stream);
                if let Some(conn_key) = session.stream_conns.remove(&stream) {
                    get_streams.push(conn_key);
                }
            }
        }
        for conn_key in get_streams {
            self.finish_stream(conn_key);
        }
        let live: Vec<usize> = self.session_ids.values().copied().collect();
        for session_key in live {
            self.end_session_if_quiet(session_key);
        }
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, conn)| {
                conn.state == ConnState::Requests && conn.unwritten() == 0 && conn.input.is_empty()
            })
            .map(|(key, _)| key)
            .collect();
        for key in idle {
            self.close_conn(key);
        }
        None
    }

    /// Gives queued responses a last, short chance to reach their clients.
    fn flush_before_exit(&mut self) {
        let deadline = Instant::now() + Duration::from_millis(200);
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            while Instant::now() < deadline {
                let Some(conn) = self.conns.get_mut(key) else {
                    break;
                };
                conn.writable = true;
                if conn.flush().is_err() || conn.unwritten() == 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

fn register_child_pipes(
    registry: &Registry,
    session_key: usize,
    session: &mut Session,
) -> io::Result<()> {
    if let Some(pipe) = session.stdin.pipe.as_mut() {
        registry.register(
            pipe,
            Source::ChildStdin(session_key).token(),
            Interest::WRITABLE,
        )?;
    }
    if let Some(pipe) = session.stdout.pipe.as_mut() {
        registry.register(
            pipe,
            Source::ChildStdout(session_key).token(),
            Interest::READABLE,
        )?;
    }
    if let Some(pipe) = session.stderr.pipe.as_mut() {
        registry.register(
            pipe,
            Source::ChildStderr(session_key).token(),
            Interest::READABLE,
        )?;
    }
    Ok(())
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// Runs mcphop with `config` until it shuts down; returns the exit code.
pub fn run(config: Config) -> io::Result<i32> {
    Proxy::bind(config)?.run()
}
