//! Upstream connections: readiness, connect completion, idle eviction, the
//! write and read loops, and what happens to an exchange when its connection
//! breaks (retry or give up).

use super::*;

impl Proxy {
    /// A readiness event on an upstream connection.
    pub(in crate::reactor) fn on_upstream_event(&mut self, key: UpConnKey, event: &Event) {
        let Some(http) = self.upstream.http_mut() else {
            return;
        };
        let Some(up) = http.conns.get_mut(key) else {
            return;
        };
        up.ready.on_event(event);
        match up.state {
            UpState::Connecting { exchange } => self.finish_connect(key, exchange),
            UpState::Idle => {
                if up.ready.readable() {
                    self.idle_conn_event(key);
                }
            }
            UpState::Busy(_) => {
                self.flush_up_conn(key);
                self.read_up_conn(key);
            }
        }
    }

    pub(in crate::reactor) fn finish_connect(
        &mut self,
        key: UpConnKey,
        exchange: Option<ExchangeKey>,
    ) {
        let now = self.now;
        let Some(http) = self.upstream.http_mut() else {
            return;
        };
        let Some(up) = http.conns.get_mut(key) else {
            return;
        };
        if !up.ready.writable() && !up.ready.readable() {
            return;
        }
        let outcome = match up.socket.take_error() {
            Ok(Some(error)) | Err(error) => Err(error),
            Ok(None) => match up.socket.peer_addr() {
                Ok(_) => Ok(true),
                Err(error) if error.kind() == io::ErrorKind::NotConnected => Ok(false),
                Err(error) => Err(error),
            },
        };
        match (outcome, exchange) {
            (Ok(false), _) => {}
            (Ok(true), None) => {
                up.state = UpState::Idle;
                http.pool.connected(key.index(), now, &mut http.actions);
                self.run_pool_actions();
            }
            (Ok(true), Some(exchange)) => {
                let Some(entry) = http.exchanges.get(exchange) else {
                    self.drop_up_conn(key);
                    return;
                };
                up.state = UpState::Busy(exchange);
                up.output.extend_from_slice(&entry.request);
                self.flush_up_conn(key);
                self.read_up_conn(key);
            }
            (Err(error), None) => {
                debug!("upstream connect failed: {error}");
                if let Some(mut conn) = http.conns.remove(key) {
                    let _ = self.poll.registry().deregister(&mut conn.socket);
                }
                http.pool.connect_failed(key.index(), &mut http.actions);
                self.run_pool_actions();
            }
            (Err(error), Some(exchange)) => {
                self.drop_up_conn(key);
                self.exchange_failed(
                    exchange,
                    &format!("cannot connect to the upstream: {error}"),
                );
            }
        }
    }

    /// Anything on an idle pooled connection (EOF, data, error) evicts it.
    pub(in crate::reactor) fn idle_conn_event(&mut self, key: UpConnKey) {
        let Some(http) = self.upstream.http_mut() else {
            return;
        };
        let Some(up) = http.conns.get_mut(key) else {
            return;
        };
        let mut byte = [0u8; 1];
        let cause = match up.socket.peek(&mut byte) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                up.ready.clear_readable();
                return;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => return,
            Ok(0) => EvictCause::PeerClosed,
            Ok(_) => EvictCause::UnexpectedData,
            Err(_) => EvictCause::Error,
        };
        debug!("idle upstream connection {key} evicted: {}", cause.name());
        http.pool.evict(key.index(), cause, &mut http.actions);
        self.run_pool_actions();
    }

    pub(in crate::reactor) fn flush_up_conn(&mut self, key: UpConnKey) {
        let Some(http) = self.upstream.http_mut() else {
            return;
        };
        let Some(up) = http.conns.get_mut(key) else {
            return;
        };
        let UpState::Busy(exchange) = up.state else {
            return;
        };
        let mut failed = None;
        if up.written < up.output.len() {
            let outcome = write_from(&mut up.socket, &mut up.ready, &up.output[up.written..]);
            up.written += outcome.written;
            if let Some(entry) = http.exchanges.get_mut(exchange) {
                entry.life.on(ExchangeEvent::Wrote {
                    written: outcome.written,
                    all_out: up.written == up.output.len(),
                });
            }
            failed = outcome.failed;
        }
        if up.written == up.output.len() {
            up.output.clear();
            up.written = 0;
        }
        if let Some(error) = failed {
            self.conn_broke(key, &format!("writing to the upstream failed: {error}"));
        }
    }

    /// True when the client stream an exchange feeds cannot take more now.
    pub(in crate::reactor) fn exchange_blocked(&self, exchange: &Exchange) -> bool {
        let (Some(session_key), Some(stream)) = (exchange.session, exchange.stream) else {
            return false;
        };
        self.sessions
            .get(session_key)
            .and_then(|session| session.stream_conns.get(&stream))
            .and_then(|conn_key| self.front.conns.get(*conn_key))
            .is_some_and(|conn| conn.unwritten() > self.config.max_client_buffer)
    }

    /// Reads and decodes what an upstream connection has, until it would
    /// block, the response ends, or the client stream it feeds is full.
    pub(in crate::reactor) fn read_up_conn(&mut self, key: UpConnKey) {
        let mut events = Vec::new();
        // Bytes came after the response: the connection cannot be reused.
        let mut leftover = false;
        loop {
            let Some(http) = self.upstream.http() else {
                return;
            };
            let Some(up) = http.conns.get(key) else {
                return;
            };
            let UpState::Busy(exchange) = up.state else {
                return;
            };
            if !up.ready.readable() {
                return;
            }
            let Some(entry) = http.exchanges.get(exchange) else {
                self.drop_up_conn(key);
                return;
            };
            if self.exchange_blocked(entry) {
                // Back-pressure: the upstream waits in its socket buffer.
                if let Some(http_session) = entry
                    .session
                    .and_then(|session_key| self.sessions.get_mut(session_key))
                    .and_then(Session::http_mut)
                {
                    if !http_session.paused.contains(&key) {
                        http_session.paused.push(key);
                    }
                }
                return;
            }
            let Some(http) = self.upstream.http_mut() else {
                return;
            };
            let Some(up) = http.conns.get_mut(key) else {
                return;
            };
            let Some(entry) = http.exchanges.get_mut(exchange) else {
                return;
            };
            events.clear();
            let outcome = match read_into(&mut up.socket, &mut up.ready, &mut self.scratch) {
                ReadOutcome::Eof => entry.decoder.eof(&mut events).map(|()| true),
                ReadOutcome::Data(count) => {
                    let bytes = &self.scratch[..count];
                    entry.decoder.decode(bytes, &mut events).map(|used| {
                        if used < count {
                            leftover = true;
                        }
                        false
                    })
                }
                ReadOutcome::Blocked => return,
                ReadOutcome::Failed(error) => {
                    self.conn_broke(key, &format!("reading from the upstream failed: {error}"));
                    return;
                }
            };
            match outcome {
                Ok(at_eof) => {
                    for event in events.drain(..) {
                        self.on_response_event(exchange, event, !leftover);
                    }
                    let still_busy = self.upstream.http().is_some_and(|http| {
                        http.conns
                            .get(key)
                            .is_some_and(|up| up.state == UpState::Busy(exchange))
                    });
                    if !still_busy {
                        return;
                    }
                    if at_eof {
                        // EOF with the response incomplete was an error above;
                        // here it ended a close-delimited body.
                        return;
                    }
                }
                Err(error) => {
                    let started = self
                        .upstream
                        .http()
                        .and_then(|http| http.exchanges.get(exchange))
                        .is_some_and(|entry| entry.life.head().is_some());
                    let why = if started {
                        format!("the upstream response broke off: {error}")
                    } else {
                        format!("the upstream closed the connection: {error}")
                    };
                    self.conn_broke(key, &why);
                    return;
                }
            }
        }
    }

    /// The client caught up: read the upstream connections that waited for it.
    pub(in crate::reactor) fn resume_http_output(&mut self, session_key: SessionKey) {
        let paused = self
            .sessions
            .get_mut(session_key)
            .and_then(Session::http_mut)
            .map(|http| std::mem::take(&mut http.paused))
            .unwrap_or_default();
        for key in paused {
            self.read_up_conn(key);
        }
    }

    /// An upstream connection failed mid-exchange: it is dropped, and the
    /// exchange is retried if the rules allow, or answered with an error.
    pub(in crate::reactor) fn conn_broke(&mut self, key: UpConnKey, why: &str) {
        let Some(http) = self.upstream.http_mut() else {
            return;
        };
        let Some(up) = http.conns.get(key) else {
            return;
        };
        let exchange = match up.state {
            UpState::Busy(exchange) => Some(exchange),
            _ => None,
        };
        if up.pooled {
            http.pool
                .evict(key.index(), EvictCause::Error, &mut http.actions);
            self.run_pool_actions();
        } else {
            self.drop_up_conn(key);
        }
        if let Some(exchange) = exchange {
            self.exchange_failed(exchange, why);
        }
    }

    /// Retries an exchange if allowed, or gives up on it.
    pub(in crate::reactor) fn exchange_failed(&mut self, exchange: ExchangeKey, why: &str) {
        let now = self.now;
        let Some(http) = self.upstream.http_mut() else {
            return;
        };
        let Some(entry) = http.exchanges.get_mut(exchange) else {
            return;
        };
        // Its connection is gone already (evicted or dropped by the caller).
        let step = entry.life.on(ExchangeEvent::Broke {
            response_started: entry.decoder.started(),
        });
        if step == Step::Retry {
            debug!("retrying an upstream request on a fresh connection: {why}");
            entry.decoder = ResponseDecoder::new(MAX_UPSTREAM_HEAD_BYTES, false);
            entry.body.clear();
            let host = http.host.clone();
            http.pool.note_retry();
            http.pool
                .checkout_fresh(&host, exchange, now, &mut http.actions);
            self.run_pool_actions();
            return;
        }
        self.exchange_gave_up(exchange, 502, &format!("Bad Gateway: {why}"));
    }

    /// Ends an exchange that cannot be completed: whoever waits for it gets
    /// `status` (before a response head) or a JSON-RPC error per request.
    pub(in crate::reactor) fn exchange_gave_up(
        &mut self,
        exchange: ExchangeKey,
        status: u16,
        why: &str,
    ) {
        let Some(mut entry) = self.take_exchange(exchange) else {
            return;
        };
        let conn = match entry.life.on(ExchangeEvent::Abandoned) {
            Step::GiveUp { conn } => conn,
            _ => None,
        };
        if let Some(conn) = conn {
            if let Some(http) = self.upstream.http_mut() {
                if http.conns.get(conn).is_some_and(|up| up.pooled) {
                    http.pool
                        .evict(conn.index(), EvictCause::Error, &mut http.actions);
                } else {
                    self.drop_up_conn(conn);
                }
            }
        }
        if let Some(http) = self.upstream.http_mut() {
            http.pool.cancel_waiter(exchange);
        }
        self.run_pool_actions();
        warn!("upstream exchange failed: {why}");
        let session_key = entry.session.filter(|key| self.sessions.contains(*key));
        match entry.purpose {
            Purpose::GetStream => {
                let released = session_key
                    .and_then(|key| self.sessions.get_mut(key))
                    .and_then(Session::http_mut)
                    .and_then(|http| http.streams.get_failed());
                self.send_released(released);
                return;
            }
            Purpose::Continue => {
                if let (Some(session_key), Some(stream)) = (session_key, entry.stream) {
                    self.fail_stream_requests(session_key, stream, why);
                }
                return;
            }
            Purpose::Messages {
                has_requests: false,
            } => {
                if let Some(session_key) = session_key {
                    self.message_lost(session_key, why);
                }
            }
            Purpose::Delete => return,
            _ => {}
        }
        if entry.life.streaming() {
            if let (Some(session_key), Some(stream)) = (session_key, entry.stream) {
                self.fail_stream_requests(session_key, stream, why);
            }
            if entry.purpose == Purpose::Passthrough {
                if let Some(wait) = entry.client {
                    self.close_conn(wait.key);
                }
            }
            return;
        }
        // Before any head: the waiting client gets the error as its answer.
        if let (Some(session_key), Some(stream)) = (session_key, entry.stream) {
            if let Some(session) = self.sessions.get_mut(session_key) {
                session.core.stream_refused(stream, &entry.request_ids);
            }
        }
        if entry.purpose == Purpose::Initialize {
            if let Some(session_key) = session_key {
                self.discard_session(session_key, why);
            }
        }
        if let Some(wait) = entry.client {
            let id = match entry.request_ids.as_slice() {
                [only] => only.to_raw(),
                _ => RawValue::NULL.to_owned(),
            };
            let reply = Reply::error(status, &id, jsonrpc::UPSTREAM_GONE, why);
            self.reply_to_waiting(wait, &reply);
        }
    }

    pub(in crate::reactor) fn take_exchange(&mut self, exchange: ExchangeKey) -> Option<Exchange> {
        self.upstream.http_mut()?.exchanges.remove(exchange)
    }

    /// Answers a client connection that waits for an exchange, if it still does.
    pub(in crate::reactor) fn reply_to_waiting(&mut self, wait: ClientWait, reply: &Reply) {
        let Some(conn) = self.front.conns.get_mut(wait.key) else {
            return;
        };
        if !matches!(conn.state, ConnState::AwaitingUpstream { .. }) {
            return;
        }
        conn.state = ConnState::Requests;
        self.reply(wait.key, reply, wait.keep_alive);
        self.front.process_list.push(wait.key);
    }
}
