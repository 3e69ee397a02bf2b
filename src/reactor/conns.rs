//! Client connections of the Streamable HTTP front door: reading and
//! decoding requests, their deadlines (408 for a slow request, keep-alive
//! expiry), flushing queued output, immediate replies, and closing.

use super::*;

impl Proxy {
    pub(super) fn set_conn_deadline(&mut self, key: ConnKey, kind: DeadlineKind, after: Duration) {
        let Some(conn) = self.front.conns.get_mut(key) else {
            return;
        };
        let at = self.now + after;
        conn.deadline = Some((at, kind));
        self.timers.schedule(at, Timer::Conn(key));
    }

    /// Most bytes of unprocessed input kept per connection; reading pauses
    /// beyond it until requests are taken out.
    pub(super) fn max_conn_input(&self) -> usize {
        self.config
            .max_head_bytes
            .saturating_add(self.config.max_body_bytes)
            .saturating_add(READ_CHUNK_BYTES)
    }

    pub(super) fn read_conn(&mut self, key: ConnKey) {
        let max_input = self.max_conn_input();
        let Some(conn) = self.front.conns.get_mut(key) else {
            return;
        };
        let before = conn.input.len();
        let outcome = conn.read_available(max_input, &mut self.scratch);
        conn.received |= conn.input.len() > before;
        let streaming = matches!(conn.state, ConnState::Streaming { .. });
        if outcome == ReadOutcome::Closed && streaming {
            // A client that hangs up mid-stream has gone away (as nginx treats
            // a client abort); its stream ends with it.
            debug!("connection {key} closed by the client during a stream");
            self.close_conn(key);
            return;
        }
        self.front.process_list.push(key);
    }

    /// Decodes and handles buffered requests while the connection is free to
    /// take them.
    pub(super) fn process_conn(&mut self, key: ConnKey) {
        loop {
            let max_buffer = self.config.max_client_buffer;
            let Some(conn) = self.front.conns.get_mut(key) else {
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
                        self.front.mark_dirty(key);
                    }
                    break;
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
                    self.front.mark_dirty(key);
                    return;
                }
            }
        }
        self.after_processing(key);
    }

    /// Sets the deadline a connection is now under, and closes it if the
    /// client is gone and nothing is left to do.
    pub(super) fn after_processing(&mut self, key: ConnKey) {
        let Some(conn) = self.front.conns.get_mut(key) else {
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
                DeadlineKind::Request => self.config.head_timeout,
                DeadlineKind::Body => self.config.body_timeout,
                DeadlineKind::KeepAlive => DEFAULT_KEEPALIVE_TIMEOUT,
            };
            self.set_conn_deadline(key, wanted, after);
        }
    }

    pub(super) fn flush_conn(&mut self, key: ConnKey) {
        let Some(conn) = self.front.conns.get_mut(key) else {
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
            ConnState::Streaming { session, .. }
                if below_limit
                    && self
                        .sessions
                        .get(session)
                        .is_some_and(|s| self.upstream.has_backlog(session, s)) =>
            {
                self.resume_upstream_output(session);
            }
            ConnState::Requests if below_limit && !conn.input.is_empty() => {
                self.front.process_list.push(key);
            }
            _ => {}
        }
    }

    pub(super) fn close_conn(&mut self, key: ConnKey) {
        let Some(mut conn) = self.front.conns.remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.socket);
        match conn.state {
            ConnState::Streaming {
                session, stream, ..
            } => self.stream_lost(session, stream),
            ConnState::AwaitingUpstream { exchange } => self.client_left_exchange(exchange, false),
            ConnState::Relaying { exchange, .. } => self.client_left_exchange(exchange, true),
            ConnState::Requests => {}
        }
        debug!("connection {key} closed");
    }

    /// Queues an immediate response on a connection; it is the last one
    /// while mcphop shuts down.
    pub(super) fn reply(&mut self, key: ConnKey, reply: &Reply, keep_alive: bool) {
        let keep_alive = keep_alive && self.run_state == RunState::Serving;
        self.front.reply(key, reply, keep_alive);
    }
}
