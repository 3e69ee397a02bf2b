//! Client connections of the Streamable HTTP front door: reading and
//! decoding requests (one at a time, for the reactor to act on), their
//! deadlines (408 for a slow request, keep-alive expiry), flushing queued
//! output, and closing. A close or a client catching up is reported as a
//! `FrontEvent`.

use std::time::{Duration, Instant};

use std::io;
use std::net::SocketAddr;

use log::{debug, info, warn};
use mio::net::TcpStream;
use serde_json::value::RawValue;

use crate::client::{
    Conn, ConnKey, ConnState, DeadlineKind, ReadOutcome, Transport, READ_CHUNK_BYTES,
};
use crate::config::RETRY_AFTER_SECONDS;
use crate::http::request::{Decoded, Request};
use crate::http::response;
use crate::jsonrpc;
use crate::mcp::endpoint::Reply;
use crate::token::Source;

use super::edge_io::Readiness;
use super::front_door::{FrontCtx, FrontEvent, HttpFrontDoor};
use super::signals::stdio_transport;
use super::{
    ServerId, Timer, ACCEPT_RETRY_DELAY, DEFAULT_KEEPALIVE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
};
use crate::session::SessionKey;

/// What `next_request` found on a connection.
pub(super) enum Next {
    /// A complete request, for the reactor to act on.
    Request(Request),
    /// One line from the stdio front door's stdin (without its end), and
    /// the server and session of that front door.
    Line {
        line: Vec<u8>,
        server: ServerId,
        session: Option<SessionKey>,
    },
    /// Nothing to act on now: `after_processing` sets the deadline.
    Wait,
    /// The connection is gone, or closes once its error answer is flushed.
    Gone,
}

impl HttpFrontDoor {
    /// Accepts every waiting connection while the listener is readable.
    pub(super) fn accept_all(&mut self, ctx: &mut FrontCtx<'_>) {
        while self.listener_readable {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((socket, peer)) => self.add_conn(ctx, socket, peer),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.listener_readable = false
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    // Out of descriptors, most likely: try again shortly rather
                    // than spin on a listener that stays readable.
                    warn!("accept failed: {error}; retrying in {ACCEPT_RETRY_DELAY:?}");
                    ctx.timers
                        .schedule(ctx.now + ACCEPT_RETRY_DELAY, Timer::RetryAccept);
                    return;
                }
            }
        }
    }

    fn add_conn(&mut self, ctx: &mut FrontCtx<'_>, mut socket: TcpStream, peer: SocketAddr) {
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
        let key = self.conns.next_key();
        let mut transport = Transport::Tcp(socket);
        let token = Source::Client(key.index()).token();
        if let Err(error) = transport.register(ctx.registry, token) {
            warn!("cannot register connection from {peer}: {error}");
            return;
        }
        debug!("connection {key} from {peer}");
        let mut conn = Conn::new(transport, self.limits);
        conn.peer = Some(peer.ip());
        self.conns.insert(conn);
        let head_timeout = ctx.config.head_timeout;
        self.set_deadline(ctx, key, DeadlineKind::Request, head_timeout);
    }

    /// The stdio front door: mcphop's stdin and stdout become one client
    /// connection, of `server` (the default one if none is named).
    pub(super) fn open_stdio(
        &mut self,
        ctx: &mut FrontCtx<'_>,
        server: Option<&str>,
    ) -> io::Result<ConnKey> {
        let servers = &ctx.config.servers;
        let index = match server {
            Some(name) => servers.iter().position(|s| s.name == name),
            None => ctx.config.default_server,
        };
        let described = index.and_then(|i| servers.get(i)).map(|s| s.describe());
        let server = index
            .and_then(ServerId::at)
            .ok_or_else(|| io::Error::other("the stdio front door names no server"))?;
        let mut transport = stdio_transport()?;
        let key = self.conns.next_key();
        transport.register(ctx.registry, Source::Client(key.index()).token())?;
        let mut conn = Conn::new(transport, self.limits);
        // Fresh pipes: what came before they were watched is read now.
        conn.ready = Readiness::ready();
        conn.state = ConnState::StdioSession {
            server,
            session: None,
        };
        self.conns.insert(conn);
        let described = described.unwrap_or_default();
        info!("serving one session on stdin and stdout: {described}");
        Ok(key)
    }

    pub(super) fn set_deadline(
        &mut self,
        ctx: &mut FrontCtx<'_>,
        key: ConnKey,
        kind: DeadlineKind,
        after: Duration,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let at = ctx.now + after;
        conn.deadline = Some((at, kind));
        ctx.timers.schedule(at, Timer::Conn(key));
    }

    /// Reads what a connection's socket holds. Bytes that arrived with
    /// nothing buffered before them are decoded at once, straight from the
    /// read buffer (a request found there is returned, for the reactor to
    /// act on); the rest of the input is decoded in `next_request`.
    pub(super) fn read_conn(&mut self, ctx: &mut FrontCtx<'_>, key: ConnKey) -> Next {
        // Most bytes of unprocessed input kept per connection; reading
        // pauses beyond it until requests are taken out.
        let max_input = ctx
            .config
            .max_head_bytes
            .saturating_add(ctx.config.max_body_bytes)
            .saturating_add(READ_CHUNK_BYTES);
        let Some(conn) = self.conns.get_mut(key) else {
            return Next::Gone;
        };
        let before = conn.input.len();
        let (outcome, fresh) = conn.read_available(max_input, ctx.scratch);
        conn.received |= conn.input.len() > before || fresh > 0;
        self.bytes_in += (conn.input.len().saturating_sub(before) + fresh) as u64;
        let streaming = matches!(
            conn.state,
            ConnState::Streaming { .. }
                | ConnState::LegacyStream { .. }
                | ConnState::StdioSession { .. }
        );
        if outcome == ReadOutcome::Closed && streaming {
            // A client that hangs up mid-stream has gone away (as nginx treats
            // a client abort); its stream ends with it.
            debug!("connection {key} closed by the client during a stream");
            self.close_conn(ctx, key);
            return Next::Gone;
        }
        // The fresh bytes stay in `ctx.scratch` only until its next use:
        // decoded (or kept) now.
        let next = if fresh > 0 {
            self.decode_next(ctx, key, fresh)
        } else {
            Next::Wait
        };
        if !matches!(next, Next::Gone) {
            self.process_list.push(key);
        }
        next
    }

    /// Decodes the next buffered request while the connection is free to
    /// take it. A malformed request is answered here.
    pub(super) fn next_request(&mut self, ctx: &mut FrontCtx<'_>, key: ConnKey) -> Next {
        self.decode_next(ctx, key, 0)
    }

    /// `next_request`, with the first `fresh` bytes of `ctx.scratch` having
    /// arrived after the connection's input (then empty): decoded from there
    /// when the connection is free to take a request, and only what is left
    /// after the request kept in its input (one copy instead of two).
    fn decode_next(&mut self, ctx: &mut FrontCtx<'_>, key: ConnKey, fresh: usize) -> Next {
        let max_buffer = ctx.config.max_client_buffer;
        let Some(conn) = self.conns.get_mut(key) else {
            return Next::Gone;
        };
        let fresh = ctx.scratch.get(..fresh).unwrap_or_default();
        if let ConnState::StdioSession { server, session } = conn.state {
            conn.input.extend_from_slice(fresh);
            if conn.unwritten() > max_buffer {
                return Next::Wait;
            }
            return match take_line(&mut conn.input, ctx.config.max_body_bytes) {
                Ok(Some(line)) => Next::Line {
                    line,
                    server,
                    session,
                },
                Ok(None) => Next::Wait,
                Err(too_long) => {
                    debug!("stdin: a line over {too_long} bytes; skipped");
                    let body = jsonrpc::error_response(
                        RawValue::NULL,
                        jsonrpc::INVALID_REQUEST,
                        "Invalid Request: the message is over --max-body",
                    );
                    conn.output().extend_from_slice(&body);
                    conn.output().push(b'\n');
                    self.mark_dirty(key);
                    Next::Wait
                }
            };
        }
        let busy = conn.state != ConnState::Requests
            || conn.close_after_flush
            || conn.unwritten() > max_buffer;
        if busy || !conn.input.is_empty() {
            conn.input.extend_from_slice(fresh);
            if busy {
                return Next::Wait;
            }
        }
        let decoded = if conn.input.is_empty() {
            conn.decoder.decode_slice(fresh).map(|(decoded, used)| {
                let rest = fresh.get(used..).unwrap_or_default();
                conn.input.extend_from_slice(rest);
                decoded
            })
        } else {
            conn.decoder.decode(&mut conn.input)
        };
        match decoded {
            Ok(Decoded::Request(request)) => {
                conn.deadline = None;
                Next::Request(request)
            }
            Ok(Decoded::Incomplete) => {
                if conn.decoder.take_expect_continue() {
                    response::write_continue(conn.output());
                    self.mark_dirty(key);
                }
                Next::Wait
            }
            Err(error) => {
                let status = error.status();
                debug!("connection {key}: bad request: {}", error.reason());
                let body = jsonrpc::error_response(
                    RawValue::NULL,
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
                Next::Gone
            }
        }
    }

    /// Sets the deadline a connection is now under, and closes it if the
    /// client is gone and nothing is left to do.
    pub(super) fn after_processing(&mut self, ctx: &mut FrontCtx<'_>, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.state != ConnState::Requests {
            conn.deadline = None;
            return;
        }
        if conn.peer_closed {
            if conn.unwritten() == 0 {
                self.close_conn(ctx, key);
            } else {
                conn.close_after_flush = true;
            }
            return;
        }
        let received = std::mem::take(&mut conn.received);
        let wanted = if conn.decoder.body_in_progress() {
            DeadlineKind::Body
        } else if conn.decoder.head_in_progress() || !conn.input.is_empty() {
            DeadlineKind::Request
        } else {
            DeadlineKind::KeepAlive
        };
        // The head's deadline covers the whole head; the body's restarts
        // whenever body bytes arrive.
        let renew = wanted == DeadlineKind::Body && received;
        if renew || conn.deadline.map(|(_, kind)| kind) != Some(wanted) {
            let after = match wanted {
                DeadlineKind::Request => ctx.config.head_timeout,
                DeadlineKind::Body => ctx.config.body_timeout,
                DeadlineKind::KeepAlive => DEFAULT_KEEPALIVE_TIMEOUT,
            };
            self.set_deadline(ctx, key, wanted, after);
        }
    }

    pub(super) fn flush_conn(&mut self, ctx: &mut FrontCtx<'_>, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.dirty = false;
        let queued = conn.unwritten();
        let flushed = conn.flush();
        self.bytes_out += queued.saturating_sub(conn.unwritten()) as u64;
        if let Err(error) = flushed {
            debug!("connection {key}: write failed: {error}");
            self.close_conn(ctx, key);
            return;
        }
        let drained = conn.unwritten() == 0;
        if drained && conn.close_after_flush {
            self.close_conn(ctx, key);
            return;
        }
        let below_limit = conn.unwritten() <= ctx.config.max_client_buffer;
        match conn.state {
            // The client caught up: its session's upstream output may flow
            // again (if it waits).
            ConnState::Streaming { session, .. } | ConnState::LegacyStream { session, .. }
                if below_limit =>
            {
                ctx.events.push(FrontEvent::CaughtUp { session });
            }
            ConnState::StdioSession { session, .. } if below_limit => {
                if let Some(session) = session {
                    ctx.events.push(FrontEvent::CaughtUp { session });
                }
                // Lines held back while stdout was full are read now.
                if !conn.input.is_empty() {
                    self.process_list.push(key);
                }
            }
            ConnState::Requests if below_limit && !conn.input.is_empty() => {
                self.process_list.push(key);
            }
            _ => {}
        }
    }

    pub(super) fn close_conn(&mut self, ctx: &mut FrontCtx<'_>, key: ConnKey) {
        let Some(mut conn) = self.conns.remove(key) else {
            return;
        };
        conn.socket.deregister(ctx.registry);
        debug!("connection {key} closed");
        ctx.events.push(FrontEvent::Closed { state: conn.state });
    }

    /// Queues an immediate response on a connection; it is the last one
    /// while mcphop shuts down.
    pub(super) fn reply_now(
        &mut self,
        ctx: &FrontCtx<'_>,
        key: ConnKey,
        reply: &Reply,
        keep_alive: bool,
    ) {
        self.reply(key, reply, keep_alive && ctx.serving);
    }

    /// A connection's deadline passed: 408 for a request (or its body) not
    /// complete in time, a close for an idle keep-alive connection.
    pub(super) fn on_deadline(&mut self, ctx: &mut FrontCtx<'_>, key: ConnKey, deadline: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.deadline.map(|(at, _)| at) != Some(deadline) {
            return;
        }
        let kind = conn.deadline.map(|(_, kind)| kind);
        conn.deadline = None;
        if conn.state != ConnState::Requests {
            return;
        }
        let why = match kind {
            Some(DeadlineKind::Body) => "Request Timeout: the request body stopped arriving",
            Some(DeadlineKind::Request) => "Request Timeout: the request was not complete in time",
            _ => {
                self.close_conn(ctx, key);
                return;
            }
        };
        debug!(
            "connection {key}: {}: 408",
            if kind == Some(DeadlineKind::Body) {
                "request body stalled"
            } else {
                "request not complete in time"
            }
        );
        let reply = Reply::error(408, RawValue::NULL, jsonrpc::INVALID_REQUEST, why);
        self.reply_now(ctx, key, &reply, false);
    }
}

/// Takes the next non-empty line out of `input` (without its LF or CRLF);
/// none while no whole line is there. A line over `max` bytes is dropped
/// with everything buffered (its length is the error).
fn take_line(input: &mut Vec<u8>, max: usize) -> Result<Option<Vec<u8>>, usize> {
    loop {
        let Some(end) = input.iter().position(|&byte| byte == b'\n') else {
            if input.len() > max {
                let length = input.len();
                input.clear();
                return Err(length);
            }
            return Ok(None);
        };
        let mut line: Vec<u8> = input.drain(..=end).collect();
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.len() > max {
            return Err(line.len());
        }
        if !line.iter().all(u8::is_ascii_whitespace) {
            return Ok(Some(line));
        }
    }
}
