//! SSE streams on client connections: starting one (head, priming event),
//! writing events and heartbeats to it, and ending it so the connection takes
//! its next request. Which stream a message belongs to is the router's
//! business; this part only puts bytes on the right connection.

use std::time::Instant;

use crate::client::ConnState;
use crate::http::response;
use crate::mcp::router::{event_id, StreamId};
use crate::sse;

use super::{Proxy, RunState, Timer};

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

impl Proxy {
    /// Starts an SSE response on a connection and attaches it to `stream`.
    pub(super) fn start_stream(
        &mut self,
        conn_key: usize,
        session_key: usize,
        stream: StreamId,
        head: StreamHead<'_>,
    ) {
        let now = self.now;
        let heartbeat_at = now + self.config.sse_keepalive;
        let retry_millis = self.config.sse_retry.as_millis();
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(conn_key) else {
            return;
        };
        session.stream_conns.insert(stream, conn_key);
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
            session: session_key,
            session_serial: session.serial,
            stream,
            chunked,
        };
        if !head.keep_alive || !chunked {
            conn.close_after_flush_when_idle();
        }
        conn.deadline = None;
        conn.heartbeat_at = Some(heartbeat_at);
        if head.priming {
            self.event_scratch.clear();
            sse::write_priming(&mut self.event_scratch, &event_id(stream, 0), retry_millis);
            put_on_stream(conn.output(), chunked, &self.event_scratch);
        }
        // One heartbeat timer per connection: an armed one (from an earlier
        // stream) is due no later than this one and re-arms itself.
        if conn.heartbeat_timer.is_none() {
            conn.heartbeat_timer = Some(heartbeat_at);
            let serial = conn.serial;
            self.timers.schedule(
                heartbeat_at,
                Timer::Heartbeat {
                    key: conn_key,
                    serial,
                },
            );
        }
        self.mark_dirty(conn_key);
    }

    /// Writes one message as an SSE event, with the event id that names its
    /// place in its stream (none for the errors of a session that ends).
    pub(super) fn write_event(
        &mut self,
        conn_key: usize,
        id: Option<(StreamId, u64)>,
        data: &[u8],
    ) {
        let Some(conn) = self.conns.get_mut(conn_key) else {
            return;
        };
        let ConnState::Streaming { chunked, .. } = conn.state else {
            return;
        };
        let id = id.map(|(stream, seq)| event_id(stream, seq));
        let id = id.as_deref();
        // Encoded straight into the output, inside its chunk: one copy.
        let write = |out: &mut Vec<u8>| sse::write_event(out, Some("message"), id, data);
        if chunked {
            let length = sse::event_len(Some("message"), id, data);
            response::write_chunk_with(conn.output(), length, write);
        } else {
            write(conn.output());
        }
        conn.heartbeat_at = Some(self.now + self.config.sse_keepalive);
        self.mark_dirty(conn_key);
    }

    /// Ends the stream a connection carries; the connection then takes its
    /// next request (or closes, for HTTP/1.0 and `Connection: close`).
    pub(super) fn finish_stream(&mut self, conn_key: usize) {
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
        conn.heartbeat_at = None;
        if conn.wants_close_when_idle() || self.run_state != RunState::Serving {
            conn.close_after_flush = true;
        }
        self.mark_dirty(conn_key);
        self.process_list.push(conn_key);
    }

    /// A connection's heartbeat timer fired: comment on its stream if the
    /// stream was silent for a whole interval, and re-arm for when the current
    /// silence would be long enough.
    pub(super) fn on_heartbeat(&mut self, conn_key: usize, serial: u64, deadline: Instant) {
        let interval = self.config.sse_keepalive;
        let now = self.now;
        let Some(conn) = self.conns.get_mut(conn_key) else {
            return;
        };
        if conn.serial != serial || conn.heartbeat_timer != Some(deadline) {
            return;
        }
        conn.heartbeat_timer = None;
        let ConnState::Streaming { chunked, .. } = conn.state else {
            return;
        };
        let Some(due) = conn.heartbeat_at else {
            return;
        };
        let next = if due > deadline {
            due
        } else {
            self.event_scratch.clear();
            sse::write_comment(&mut self.event_scratch, "keepalive");
            put_on_stream(conn.output(), chunked, &self.event_scratch);
            self.mark_dirty(conn_key);
            now + interval
        };
        let Some(conn) = self.conns.get_mut(conn_key) else {
            return;
        };
        conn.heartbeat_at = Some(next);
        conn.heartbeat_timer = Some(next);
        self.timers.schedule(
            next,
            Timer::Heartbeat {
                key: conn_key,
                serial,
            },
        );
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
