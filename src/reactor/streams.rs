//! SSE streams on client connections, the reactor's side: starting one
//! (head on the connection, the session's stream map, the heartbeat timer)
//! and the heartbeat timer firing. Writing events, heartbeats and a stream's
//! end is `HttpFrontDoor`'s. Which stream a message belongs to is the
//! router's business; this part only puts bytes on the right connection.

use std::time::Instant;

use crate::client::ConnState;
use crate::http::response;
use crate::mcp::router::StreamId;

use super::{Proxy, Timer};
use crate::client::ConnKey;
use crate::session::SessionKey;

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
        conn_key: ConnKey,
        session_key: SessionKey,
        stream: StreamId,
        head: StreamHead<'_>,
    ) {
        let now = self.now;
        let heartbeat_at = now + self.config.sse_keepalive;
        let retry_millis = self.config.sse_retry.as_millis();
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        let Some(conn) = self.front.conns.get_mut(conn_key) else {
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
            self.timers
                .schedule(heartbeat_at, Timer::Heartbeat(conn_key));
        }
        if head.priming {
            self.front.write_priming(conn_key, stream, retry_millis);
        }
        self.front.mark_dirty(conn_key);
    }

    /// A connection's heartbeat timer fired: comment on its stream if the
    /// stream was silent for a whole interval, and re-arm for when the current
    /// silence would be long enough.
    pub(super) fn on_heartbeat(&mut self, conn_key: ConnKey, deadline: Instant) {
        let interval = self.config.sse_keepalive;
        let now = self.now;
        let Some(conn) = self.front.conns.get_mut(conn_key) else {
            return;
        };
        if conn.heartbeat_timer != Some(deadline) {
            return;
        }
        conn.heartbeat_timer = None;
        if !matches!(conn.state, ConnState::Streaming { .. }) {
            return;
        }
        let Some(due) = conn.heartbeat_at else {
            return;
        };
        let next = if due > deadline {
            due
        } else {
            self.front.write_heartbeat(conn_key);
            now + interval
        };
        let Some(conn) = self.front.conns.get_mut(conn_key) else {
            return;
        };
        conn.heartbeat_at = Some(next);
        conn.heartbeat_timer = Some(next);
        self.timers.schedule(next, Timer::Heartbeat(conn_key));
    }
}

/// Appends SSE bytes to a stream's body: as a chunk, or raw for HTTP/1.0.
pub(super) fn put_on_stream(out: &mut Vec<u8>, chunked: bool, bytes: &[u8]) {
    if chunked {
        response::write_chunk(out, bytes);
    } else {
        out.extend_from_slice(bytes);
    }
}
