//! Client connections of the Streamable HTTP front door: reading and
//! decoding requests, their deadlines (408 for a slow request, keep-alive
//! expiry), flushing queued output, immediate replies, and closing.

use super::*;

impl Proxy {
    pub(super) fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.dirty {
                conn.dirty = true;
                self.flush_list.push(key);
            }
        }
    }

    pub(super) fn set_conn_deadline(&mut self, key: usize, kind: DeadlineKind, after: Duration) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let at = self.now + after;
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
    pub(super) fn max_conn_input(&self) -> usize {
        self.config
            .max_head_bytes
            .saturating_add(self.config.max_body_bytes)
            .saturating_add(READ_CHUNK_BYTES)
    }

    pub(super) fn read_conn(&mut self, key: usize) {
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
    pub(super) fn process_conn(&mut self, key: usize) {
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
                    return;
                }
            }
        }
        self.after_processing(key);
    }

    /// Sets the deadline a connection is now under, and closes it if the
    /// client is gone and nothing is left to do.
    pub(super) fn after_processing(&mut self, key: usize) {
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

    pub(super) fn flush_conn(&mut self, key: usize) {
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
                    .is_some_and(|s| s.serial == session_serial && s.upstream_has_backlog()) =>
            {
                self.resume_upstream_output(session);
            }
            ConnState::Requests if below_limit && !conn.input.is_empty() => {
                self.process_list.push(key);
            }
            _ => {}
        }
    }

    pub(super) fn close_conn(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        let mut conn = self.conns.remove(key);
        let _ = self.poll.registry().deregister(&mut conn.socket);
        match conn.state {
            ConnState::Streaming {
                session,
                session_serial,
                stream,
                ..
            } => self.stream_lost(session, session_serial, stream),
            ConnState::AwaitingUpstream {
                exchange,
                exchange_serial,
            } => self.client_left_exchange((exchange, exchange_serial), false),
            ConnState::Relaying {
                exchange,
                exchange_serial,
                ..
            } => self.client_left_exchange((exchange, exchange_serial), true),
            ConnState::Requests => {}
        }
        debug!("connection {key} closed");
    }

    /// Queues an immediate response on a connection.
    pub(super) fn reply(&mut self, key: usize, reply: &Reply, keep_alive: bool) {
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
}
