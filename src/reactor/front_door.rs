//! The Streamable HTTP front door's own state: the listener, every client
//! connection (`Arena<Conn>`), the connections with output to flush or
//! buffered input to decode, and the scratch buffer priming events and
//! heartbeats are encoded in (a message's event is encoded straight into the
//! connection's output, inside its chunk); with the operations on them that
//! need nothing of the sessions or the upstream (queueing a reply or an SSE
//! event, starting and ending a stream, heartbeats). Connection lifecycle
//! (reading, decoding, deadlines, flushing, closing) is in `conns.rs`.
//! What a request means for a session is the reactor's (`drive.rs`), which
//! feeds the session cores; what the front door cannot finish alone (a
//! connection that closed mid-stream, a client that caught up) it reports as
//! `FrontEvent`s through `FrontCtx`, which the reactor handles after the
//! call returns.

use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::Registry;

use crate::arena::Arena;
use crate::client::{Conn, ConnKey, ConnState};
use crate::config::Config;
use crate::http::request::Limits;
use crate::http::response;
use crate::mcp::endpoint::{AccessPolicy, Reply};
use crate::mcp::router::StreamId;
use crate::session::SessionKey;
use crate::sse;
use crate::timers::TimerQueue;

use crate::mcp::router::event_id;

use super::http_upstream::ExchangeKey;
use super::servers::ServerId;
use super::Timer;

/// How long a freshly started stream's head (and priming event) is held
/// back waiting for its first event, so that both leave in one `send`, as
/// TCP_CORK would: a stdio child answers a call within a few hundred
/// microseconds, one loop turn after the head was queued. A call that runs
/// longer gets its head when the hold ends; any other output queued on the
/// connection (an event, a heartbeat, the stream's end) ends the hold at once.
/// The loop never sleeps for it: the hold is a timer, and `epoll_wait`'s
/// timeout carries it.
pub(super) const HEAD_HOLD: Duration = Duration::from_millis(2);
/// Connections the kernel may hold completed for `accept` (nginx's
/// default is 511; the kernel caps it at `net.core.somaxconn`). The
/// standard library's 128 overflows when hundreds of clients connect at
/// once while the loop is busy: a connection whose handshake the kernel
/// dropped is later reset.
pub(super) const LISTEN_BACKLOG: libc::c_int = 1024;

/// Binds the client listener, with a backlog of `LISTEN_BACKLOG`.
pub(super) fn bind_listener(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    use std::os::fd::AsRawFd;
    let listener = TcpListener::bind(addr)?;
    // Listening again on a listening socket only changes its backlog.
    // SAFETY: a plain syscall on a descriptor the listener owns.
    if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(listener)
}

/// What a front door call needs of the reactor: the clock, the settings, the
/// timer queue, the poll registry, a read buffer, and the queue its
/// `FrontEvent`s go to.
pub(super) struct FrontCtx<'a> {
    pub now: Instant,
    pub config: &'a Config,
    pub timers: &'a mut TimerQueue<Timer>,
    pub registry: &'a Registry,
    /// mcphop is serving (not shutting down): replies may keep the
    /// connection alive.
    pub serving: bool,
    pub scratch: &'a mut Vec<u8>,
    pub events: &'a mut Vec<FrontEvent>,
}

/// What happened at the front door that the session side must hear of.
#[derive(Debug)]
pub(super) enum FrontEvent {
    /// A connection closed; `state` is what it was doing (the stream it
    /// carried, the upstream exchange it waited on).
    Closed { state: ConnState },
    /// A client carrying one of `session`'s streams caught up: the session's
    /// upstream output may flow again.
    CaughtUp { session: SessionKey },
}

/// What the SSE response head says besides the usual.
pub(super) struct StreamHead<'a> {
    /// The `Mcp-Session-Id` header, on the answer to `initialize`.
    pub session_id: Option<&'a str>,
    /// Open with a priming event (a fresh stream; not a resumed one).
    pub priming: bool,
    /// The client's request allowed keep-alive.
    pub keep_alive: bool,
    /// The client speaks HTTP/1.1 (chunked bodies); HTTP/1.0 otherwise.
    pub http11: bool,
}

/// The front door through which clients reach mcphop.
pub(crate) struct HttpFrontDoor {
    /// `None` once mcphop stopped accepting (shutdown).
    pub(super) listener: Option<TcpListener>,
    pub(super) listener_readable: bool,
    pub(super) policy: AccessPolicy,
    pub(super) limits: Limits,
    pub(super) conns: Arena<Conn>,
    /// Connections with output queued, flushed before the loop sleeps.
    pub(super) flush_list: Vec<ConnKey>,
    /// Connections whose buffered input is to be decoded.
    pub(super) process_list: Vec<ConnKey>,
    event_scratch: Vec<u8>,
    /// Bytes read from and written to clients since start (`/metrics`).
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
}

impl HttpFrontDoor {
    pub(super) fn new(listener: Option<TcpListener>, policy: AccessPolicy, limits: Limits) -> Self {
        HttpFrontDoor {
            listener,
            listener_readable: true,
            policy,
            limits,
            conns: Arena::default(),
            flush_list: Vec::new(),
            process_list: Vec::new(),
            event_scratch: Vec::new(),
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    /// Gives back what busy moments left allocated: the connection slab past
    /// its last live entry, the work lists, and idle connections' buffers.
    pub(super) fn release_idle_capacity(&mut self) {
        self.conns.shrink_to_fit();
        self.flush_list.shrink_to_fit();
        self.process_list.shrink_to_fit();
        self.event_scratch = Vec::new();
        for key in self.conns.keys() {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.release_idle_buffers();
            }
        }
    }

    /// Notes that a connection has output to flush this turn.
    pub(super) fn mark_dirty(&mut self, key: ConnKey) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.dirty {
                conn.dirty = true;
                self.flush_list.push(key);
            }
        }
    }

    /// True while some connection has part of a request (shutdown waits).
    pub(super) fn requests_in_progress(&self) -> bool {
        self.conns
            .iter()
            .any(|(_, conn)| conn.request_in_progress())
    }

    /// Queues an immediate response on a connection.
    pub(super) fn reply(&mut self, key: ConnKey, reply: &Reply, keep_alive: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Some(carrier) = Carrier::of(&conn.state) {
            // A legacy client's POST was answered 202 already (a stdio
            // client sends no requests of HTTP's); what a session says to it
            // goes on its stream (an error's JSON-RPC body), and a bare
            // status has nothing to say there.
            if !reply.body.is_empty() {
                carrier.write(conn.output(), &reply.body);
                self.mark_dirty(key);
            }
            return;
        }
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

    /// Writes one message as an SSE event on the stream a connection
    /// carries, with the event id that names its place in its stream (none
    /// for the errors of a session that ends); its next heartbeat is due at
    /// `heartbeat_at` unless more is written.
    pub(super) fn write_event(
        &mut self,
        key: ConnKey,
        id: Option<(StreamId, u64)>,
        data: &[u8],
        heartbeat_at: Instant,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Some(carrier) = Carrier::of(&conn.state) {
            // One stream for everything, and no resumption: no ids.
            carrier.write(conn.output(), data);
        } else if let ConnState::Streaming { chunked, .. } = conn.state {
            let id = id.map(|(stream, seq)| event_id(stream, seq));
            write_message(conn.output(), chunked, id.as_deref(), data);
        } else {
            return;
        }
        conn.heartbeat_at = Some(heartbeat_at);
        self.mark_dirty(key);
    }

    /// Writes a stream's first bytes (its priming event) on a connection.
    pub(super) fn write_priming(&mut self, key: ConnKey, stream: StreamId, retry_millis: u128) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let ConnState::Streaming { chunked, .. } = conn.state else {
            return;
        };
        self.event_scratch.clear();
        sse::write_priming(&mut self.event_scratch, &event_id(stream, 0), retry_millis);
        put_on_stream(conn.output(), chunked, &self.event_scratch);
    }

    /// A keep-alive comment on a stream that was silent for a whole interval.
    pub(super) fn write_heartbeat(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let (ConnState::Streaming { chunked, .. } | ConnState::LegacyStream { chunked, .. }) =
            conn.state
        else {
            return;
        };
        self.event_scratch.clear();
        sse::write_comment(&mut self.event_scratch, "keepalive");
        put_on_stream(conn.output(), chunked, &self.event_scratch);
        self.mark_dirty(key);
    }

    /// Ends the stream a connection carries; the connection then takes its
    /// next request (or closes, for HTTP/1.0, `Connection: close`, or when
    /// mcphop no longer `serving`).
    pub(super) fn finish_stream(&mut self, key: ConnKey, serving: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        // A legacy stream outlives the streams it carries: it ends with its
        // session (`end_legacy_stream`).
        let ConnState::Streaming { chunked, .. } = conn.state else {
            return;
        };
        conn.release_hold();
        if chunked {
            response::write_last_chunk(conn.output());
        }
        conn.state = ConnState::Requests;
        conn.heartbeat_at = None;
        if conn.wants_close_when_idle() || !serving {
            conn.close_after_flush = true;
        }
        self.mark_dirty(key);
        self.process_list.push(key);
    }
    /// Starts an SSE response on a connection for `stream` of `session`;
    /// false when the connection is gone.
    pub(super) fn start_stream(
        &mut self,
        ctx: &mut FrontCtx<'_>,
        conn_key: ConnKey,
        session: SessionKey,
        stream: StreamId,
        head: StreamHead<'_>,
    ) -> bool {
        let heartbeat_at = ctx.now + ctx.config.sse_keepalive;
        let retry_millis = ctx.config.sse_retry.as_millis();
        let Some(conn) = self.conns.get_mut(conn_key) else {
            return false;
        };
        let carries = match conn.state {
            ConnState::LegacyStream { session: owner, .. } => owner == session,
            ConnState::StdioSession { session: owner, .. } => owner == Some(session),
            _ => false,
        };
        if carries {
            // The session's one connection carries this stream too.
            return true;
        }
        let chunked = head.http11;
        let mut headers = vec![
            ("Content-Type", "text/event-stream"),
            ("Cache-Control", "no-store"),
            ("X-Accel-Buffering", "no"),
        ];
        if let Some(session_id) = head.session_id {
            headers.push(("Mcp-Session-Id", session_id));
        }
        if chunked {
            response::write_chunked_head(conn.output(), 200, &headers, head.keep_alive);
        } else {
            // HTTP/1.0 has no chunking: the stream's end is the connection's end.
            response::write_stream_head(conn.output(), 200, &headers);
        }
        conn.state = ConnState::Streaming {
            session,
            stream,
            chunked,
        };
        if !head.keep_alive || !chunked {
            conn.close_after_flush_when_idle();
        }
        conn.deadline = None;
        conn.heartbeat_at = Some(heartbeat_at);
        // One heartbeat timer per connection: an armed one (from an earlier
        // stream) is due no later than this one and re-arms itself.
        let arm_heartbeat = conn.heartbeat_timer.is_none();
        if arm_heartbeat {
            conn.heartbeat_timer = Some(heartbeat_at);
            ctx.timers
                .schedule(heartbeat_at, Timer::Heartbeat(conn_key));
        }
        if head.priming {
            self.write_priming(conn_key, stream, retry_millis);
            // A fresh stream's first event usually follows within a loop
            // turn: hold the head for it (see `HEAD_HOLD`).
            if let Some(conn) = self.conns.get_mut(conn_key) {
                let until = ctx.now + HEAD_HOLD;
                conn.hold_output(until);
                ctx.timers.schedule(until, Timer::HeadHold(conn_key));
                return true;
            }
        }
        self.mark_dirty(conn_key);
        true
    }

    /// A connection's hold timer fired: its held output goes out now, if
    /// nothing released it earlier.
    pub(super) fn on_hold_over(&mut self, conn_key: ConnKey, deadline: Instant) {
        let Some(conn) = self.conns.get_mut(conn_key) else {
            return;
        };
        if conn.held_until() == Some(deadline) && conn.release_hold() {
            self.mark_dirty(conn_key);
        }
    }

    /// A connection's heartbeat timer fired: comment on its stream if the
    /// stream was silent for a whole interval, and re-arm for when the current
    /// silence would be long enough.
    pub(super) fn on_heartbeat(
        &mut self,
        ctx: &mut FrontCtx<'_>,
        conn_key: ConnKey,
        deadline: Instant,
    ) {
        let Some(conn) = self.conns.get_mut(conn_key) else {
            return;
        };
        if conn.heartbeat_timer != Some(deadline) {
            return;
        }
        conn.heartbeat_timer = None;
        if !matches!(
            conn.state,
            ConnState::Streaming { .. } | ConnState::LegacyStream { .. }
        ) {
            return;
        }
        let Some(due) = conn.heartbeat_at else {
            return;
        };
        let next = if due > deadline {
            due
        } else {
            self.write_heartbeat(conn_key);
            ctx.now + ctx.config.sse_keepalive
        };
        let Some(conn) = self.conns.get_mut(conn_key) else {
            return;
        };
        conn.heartbeat_at = Some(next);
        conn.heartbeat_timer = Some(next);
        ctx.timers.schedule(next, Timer::Heartbeat(conn_key));
    }
}

impl HttpFrontDoor {
    /// Opens a legacy HTTP+SSE stream for `session` on a connection (its
    /// `GET /sse`): the SSE head, then the `endpoint` event naming where
    /// the client POSTs its messages.
    pub(super) fn open_legacy_stream(
        &mut self,
        ctx: &mut FrontCtx<'_>,
        conn_key: ConnKey,
        session: SessionKey,
        endpoint: &str,
        http11: bool,
    ) -> bool {
        let heartbeat_at = ctx.now + ctx.config.sse_keepalive;
        let Some(conn) = self.conns.get_mut(conn_key) else {
            return false;
        };
        let headers = [
            ("Content-Type", "text/event-stream"),
            ("Cache-Control", "no-store"),
            ("X-Accel-Buffering", "no"),
        ];
        if http11 {
            response::write_chunked_head(conn.output(), 200, &headers, true);
        } else {
            response::write_stream_head(conn.output(), 200, &headers);
        }
        conn.state = ConnState::LegacyStream {
            session,
            chunked: http11,
        };
        conn.deadline = None;
        conn.heartbeat_at = Some(heartbeat_at);
        if conn.heartbeat_timer.is_none() {
            conn.heartbeat_timer = Some(heartbeat_at);
            ctx.timers
                .schedule(heartbeat_at, Timer::Heartbeat(conn_key));
        }
        self.event_scratch.clear();
        sse::write_event(
            &mut self.event_scratch,
            Some("endpoint"),
            None,
            endpoint.as_bytes(),
        );
        let Some(conn) = self.conns.get_mut(conn_key) else {
            return false;
        };
        put_on_stream(conn.output(), http11, &self.event_scratch);
        self.mark_dirty(conn_key);
        true
    }

    /// Ends a legacy stream (its session ended): the connection closes once
    /// what is queued is out.
    pub(super) fn end_legacy_stream(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let ConnState::StdioSession { .. } = conn.state {
            // mcphop's stdout closes once what is queued is out; the loop
            // then shuts down.
            conn.close_after_flush = true;
            self.mark_dirty(key);
            return;
        }
        let ConnState::LegacyStream { chunked, .. } = conn.state else {
            return;
        };
        if chunked {
            response::write_last_chunk(conn.output());
        }
        conn.state = ConnState::Requests;
        conn.heartbeat_at = None;
        conn.close_after_flush = true;
        self.mark_dirty(key);
    }

    /// Marks a connection as waiting for an upstream exchange's answer;
    /// false when it cannot wait (it is doing something else). A legacy
    /// stream "waits" as it is: the answer comes to it as events.
    pub(super) fn await_upstream(
        &mut self,
        key: ConnKey,
        server: ServerId,
        exchange: ExchangeKey,
    ) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        match conn.state {
            ConnState::LegacyStream { .. } | ConnState::StdioSession { .. } => true,
            ConnState::Requests => {
                conn.state = ConnState::AwaitingUpstream { server, exchange };
                conn.deadline = None;
                true
            }
            _ => false,
        }
    }

    /// The stdio front door's `initialize` started `session`: its later
    /// lines are the session's.
    pub(super) fn stdio_session_started(
        &mut self,
        key: ConnKey,
        server: ServerId,
        session: SessionKey,
    ) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.state = ConnState::StdioSession {
                server,
                session: Some(session),
            };
        }
    }

    /// Marks a connection as waiting for the OAuth issuer's keys; false
    /// when it is doing something else.
    pub(super) fn await_keys(&mut self, key: ConnKey) -> bool {
        match self.conns.get_mut(key) {
            Some(conn) if conn.state == ConnState::Requests => {
                conn.state = ConnState::AwaitingKeys;
                conn.deadline = None;
                true
            }
            _ => false,
        }
    }

    /// A connection that waited for keys takes requests again; false if
    /// it no longer waits (it closed). Its next buffered request is
    /// decoded after the one that waited.
    pub(super) fn end_await_keys(&mut self, key: ConnKey) -> bool {
        match self.conns.get_mut(key) {
            Some(conn) if conn.state == ConnState::AwaitingKeys => {
                conn.state = ConnState::Requests;
                self.process_list.push(key);
                true
            }
            _ => false,
        }
    }

    /// True while a connection waits for `exchange` (see `await_upstream`).
    pub(super) fn waits_for(&self, key: ConnKey, exchange: ExchangeKey) -> bool {
        self.conns.get(key).is_some_and(|conn| match conn.state {
            ConnState::AwaitingUpstream {
                exchange: awaited, ..
            } => awaited == exchange,
            ConnState::LegacyStream { .. } | ConnState::StdioSession { .. } => true,
            _ => false,
        })
    }

    /// Answers a connection that waits for an upstream exchange; false if
    /// it no longer waits. It then takes its next request (a legacy stream
    /// carries on).
    pub(super) fn answer_waiting(&mut self, key: ConnKey, reply: &Reply, keep_alive: bool) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        match conn.state {
            ConnState::AwaitingUpstream { .. } => {
                conn.state = ConnState::Requests;
                self.reply(key, reply, keep_alive);
                self.process_list.push(key);
                true
            }
            ConnState::LegacyStream { .. } | ConnState::StdioSession { .. } => {
                self.reply(key, reply, keep_alive);
                true
            }
            _ => false,
        }
    }
}

/// How a connection that carries every stream of its session frames them.
#[derive(Debug, Clone, Copy)]
enum Carrier {
    /// A legacy HTTP+SSE stream: `message` events without ids.
    Sse { chunked: bool },
    /// mcphop's stdout: one message per line.
    Lines,
}

impl Carrier {
    fn of(state: &ConnState) -> Option<Carrier> {
        match state {
            ConnState::LegacyStream { chunked, .. } => Some(Carrier::Sse { chunked: *chunked }),
            ConnState::StdioSession { .. } => Some(Carrier::Lines),
            _ => None,
        }
    }

    /// Writes one message. On a line, raw CR and LF (only whitespace
    /// between JSON tokens: inside strings they are escaped) become spaces,
    /// so a message is one line whoever wrote it.
    fn write(self, out: &mut Vec<u8>, data: &[u8]) {
        match self {
            Carrier::Sse { chunked } => write_message(out, chunked, None, data),
            Carrier::Lines => {
                let start = out.len();
                out.extend_from_slice(data);
                for byte in &mut out[start..] {
                    if matches!(*byte, b'\n' | b'\r') {
                        *byte = b' ';
                    }
                }
                out.push(b'\n');
            }
        }
    }
}

/// One message as an SSE `message` event, encoded straight into a stream's
/// output (inside its chunk): one copy.
fn write_message(out: &mut Vec<u8>, chunked: bool, id: Option<&str>, data: &[u8]) {
    let write = |out: &mut Vec<u8>| sse::write_event(out, Some("message"), id, data);
    if chunked {
        let length = sse::event_len(Some("message"), id, data);
        response::write_chunk_with(out, length, write);
    } else {
        write(out);
    }
}

/// Appends SSE bytes to a stream's body: as a chunk, or raw for HTTP/1.0.
fn put_on_stream(out: &mut Vec<u8>, chunked: bool, bytes: &[u8]) {
    if chunked {
        response::write_chunk(out, bytes);
    } else {
        out.extend_from_slice(bytes);
    }
}
