//! The Streamable HTTP front door's own state: the listener, every client
//! connection (`Arena<Conn>`), the connections with output to flush or
//! buffered input to decode, and the scratch buffer priming events and
//! heartbeats are encoded in (a message's event is encoded straight into the
//! connection's output, inside its chunk); with the operations on them that
//! need nothing of the sessions or the upstream (queueing a reply or an SSE
//! event, ending a stream). What a request means for a session is the
//! reactor's (`sessions.rs`), which feeds the session cores.

use std::time::Instant;

use mio::net::TcpListener;

use crate::arena::Arena;
use crate::client::{Conn, ConnKey, ConnState};
use crate::http::request::Limits;
use crate::http::response;
use crate::mcp::endpoint::{AccessPolicy, Reply};
use crate::mcp::router::StreamId;
use crate::sse;

use crate::mcp::router::event_id;

use super::streams::put_on_stream;

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
}

impl HttpFrontDoor {
    pub(super) fn new(listener: TcpListener, policy: AccessPolicy, limits: Limits) -> Self {
        HttpFrontDoor {
            listener: Some(listener),
            listener_readable: true,
            policy,
            limits,
            conns: Arena::default(),
            flush_list: Vec::new(),
            process_list: Vec::new(),
            event_scratch: Vec::new(),
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

    /// Queues an immediate response on a connection.
    pub(super) fn reply(&mut self, key: ConnKey, reply: &Reply, keep_alive: bool) {
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
        let ConnState::Streaming { chunked, .. } = conn.state else {
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
        let ConnState::Streaming { chunked, .. } = conn.state else {
            return;
        };
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
}
