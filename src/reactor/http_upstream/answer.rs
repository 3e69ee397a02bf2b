//! An upstream response, event by event: its head decides what the exchange
//! carries (a client stream, a status, a relayed body), its body feeds the
//! SSE decoder and the session core, and its end releases the connection.

use super::*;

impl Proxy {
    pub(in crate::reactor) fn on_response_event(
        &mut self,
        exchange: ExchangeKey,
        event: ResponseEvent,
        clean: bool,
    ) {
        match event {
            ResponseEvent::Head(head) => self.on_response_head(exchange, head),
            ResponseEvent::Body(bytes) => self.on_response_body(exchange, &bytes),
            ResponseEvent::End => self.on_response_end(exchange, clean),
        }
    }

    pub(in crate::reactor) fn on_response_head(
        &mut self,
        exchange: ExchangeKey,
        head: ResponseHead,
    ) {
        let Some(http) = self.upstream.http_mut() else {
            return;
        };
        let Some(entry) = http.exchanges.get_mut(exchange) else {
            return;
        };
        let status = head.status;
        let is_sse = head
            .header("content-type")
            .is_some_and(|value| value.to_ascii_lowercase().starts_with("text/event-stream"));
        let upstream_id = head.header(SESSION_HEADER).map(str::to_string);
        // Whether the body flows as it arrives, or is collected for its end.
        let flows = match entry.purpose {
            Purpose::Initialize | Purpose::Messages { has_requests: true } => status == 200,
            Purpose::GetStream | Purpose::Continue => status == 200 && is_sse,
            Purpose::Passthrough => true,
            Purpose::Messages {
                has_requests: false,
            }
            | Purpose::Delete => false,
        };
        entry.life.on(ExchangeEvent::Head {
            head,
            stream: flows,
        });
        let session_key = entry.session.filter(|key| self.sessions.contains(*key));
        let purpose = entry.purpose;
        let client = entry.client;
        let stream = entry.stream;
        match purpose {
            Purpose::Initialize | Purpose::Messages { has_requests: true } if status == 200 => {
                let (Some(session_key), Some(stream)) = (session_key, stream) else {
                    return;
                };
                if purpose == Purpose::Initialize {
                    if let Some(http_session) = self
                        .sessions
                        .get_mut(session_key)
                        .and_then(Session::http_mut)
                    {
                        http_session.upstream_id = upstream_id;
                    }
                }
                let Some(wait) = client.filter(|wait| self.client_waits(*wait, exchange)) else {
                    // The client left before the head: the stream waits,
                    // detached, for a resume.
                    return;
                };
                // The stream starts on the waiting client's connection, with
                // what the upstream sent for it on its other streams (a server
                // request on its GET stream) before this head came.
                let client = Some(ClientRef {
                    key: wait.key,
                    keep_alive: wait.keep_alive,
                    http11: wait.http11,
                });
                self.drive(session_key, Origin::client(client), |core| {
                    core.stream_ready(stream)
                });
            }
            Purpose::Messages {
                has_requests: false,
            } if status == 200 || status == 202 => {
                if let Some(wait) = client {
                    self.reply_to_waiting(wait, &Reply::empty(202));
                }
                if let Some(entry) = self.http().and_then(|h| h.exchanges.get_mut(exchange)) {
                    entry.client = None;
                }
            }
            Purpose::Messages { .. } if status == 404 => {
                // The upstream forgot this session: the client starts over,
                // and no DELETE is sent for what is already gone.
                if let Some(http_session) = session_key
                    .and_then(|key| self.sessions.get_mut(key))
                    .and_then(Session::http_mut)
                {
                    http_session.forgotten = true;
                }
                if let Some(session_key) = session_key {
                    self.end_session(
                        session_key,
                        "the upstream no longer knows the session (404)",
                    );
                }
                if let Some(wait) = client {
                    self.reply_to_waiting(wait, &Reply::session_not_found());
                }
                if let Some(entry) = self.http().and_then(|h| h.exchanges.get_mut(exchange)) {
                    entry.client = None;
                }
            }
            Purpose::GetStream => {
                if flows {
                    debug!("the upstream opened a GET stream");
                } else {
                    debug!("the upstream refused a GET stream ({status})");
                }
                let released = session_key
                    .and_then(|key| self.sessions.get_mut(key))
                    .and_then(Session::http_mut)
                    .and_then(|http_session| http_session.streams.get_head(flows));
                self.send_released(released);
            }
            Purpose::Continue => {
                if flows {
                    // Its events continue the answer stream.
                } else if let (Some(session_key), Some(stream)) = (session_key, stream) {
                    self.fail_stream_requests(
                        session_key,
                        stream,
                        &format!("the upstream refused to continue its answer stream ({status})"),
                    );
                }
            }
            Purpose::Passthrough => {
                let Some(wait) = client.filter(|wait| self.client_waits(*wait, exchange)) else {
                    return;
                };
                if response::forbids_body(status) {
                    // A 204 or 304 has no body to relay (nor may it have a
                    // chunked head), and a JSON-RPC POST needs an answer:
                    // the upstream gave none, so 502 with a JSON-RPC error.
                    self.reply_to_waiting(wait, &relayed_reply(status, b""));
                    return;
                }
                let Some(head) = self
                    .upstream
                    .http()
                    .and_then(|h| h.exchanges.get(exchange))
                    .and_then(|entry| entry.life.head().cloned())
                else {
                    return;
                };
                let Some(conn) = self.front.conns.get_mut(wait.key) else {
                    return;
                };
                let mut headers: Vec<(&str, &str)> = Vec::new();
                for name in ["content-type", "cache-control", "mcp-session-id"] {
                    if let Some(value) = head.header(name) {
                        headers.push((name, value));
                    }
                }
                if wait.http11 {
                    response::write_chunked_head(conn.output(), status, &headers, wait.keep_alive);
                } else {
                    response::write_stream_head(conn.output(), status, &headers);
                    conn.close_after_flush_when_idle();
                }
                conn.state = ConnState::Relaying {
                    exchange,
                    chunked: wait.http11,
                };
                if !wait.keep_alive {
                    conn.close_after_flush_when_idle();
                }
                self.front.mark_dirty(wait.key);
            }
            // Other statuses: the body is collected and relayed at its end.
            _ => {}
        }
    }

    pub(in crate::reactor) fn client_waits(&self, wait: ClientWait, exchange: ExchangeKey) -> bool {
        self.front
            .conns
            .get(wait.key)
            .is_some_and(|conn| conn.state == ConnState::AwaitingUpstream { exchange })
    }

    pub(in crate::reactor) fn on_response_body(&mut self, exchange: ExchangeKey, bytes: &[u8]) {
        let Some(http) = self.upstream.http_mut() else {
            return;
        };
        let Some(entry) = http.exchanges.get_mut(exchange) else {
            return;
        };
        let is_sse = entry.life.head().is_some_and(|head| {
            head.header("content-type")
                .is_some_and(|value| value.to_ascii_lowercase().starts_with("text/event-stream"))
        });
        if entry.purpose == Purpose::Passthrough {
            if let Some(wait) = entry.client {
                if let Some(conn) = self.front.conns.get_mut(wait.key) {
                    if let ConnState::Relaying { chunked, .. } = conn.state {
                        if chunked {
                            response::write_chunk(conn.output(), bytes);
                        } else {
                            conn.output().extend_from_slice(bytes);
                        }
                        self.front.mark_dirty(wait.key);
                    }
                }
            }
            return;
        }
        if entry.life.streaming() && is_sse {
            let mut events = Vec::new();
            if entry.sse.feed(bytes, &mut events).is_err() {
                warn!("the upstream sent an SSE event over the size limit; skipped");
                entry.sse.finish();
            }
            let session_key = entry.session;
            for event in &events {
                if let Some(id) = &event.id {
                    entry.sse_end.last_event_id = Some(id.clone());
                }
                if let Some(retry) = event.retry {
                    entry.sse_end.retry = Some(Duration::from_millis(retry));
                }
                entry.sse_end.saw_data |= !event.data.is_empty();
            }
            for event in events {
                if event.data.is_empty() {
                    continue;
                }
                if let Some(session_key) = session_key {
                    self.deliver_upstream_text(session_key, event.data.as_bytes());
                }
            }
            return;
        }
        if entry.body.len() + bytes.len() <= MAX_UPSTREAM_BODY_BYTES {
            entry.body.extend_from_slice(bytes);
        }
    }

    /// One message (or a JSON array of them) from the upstream, to route.
    pub(in crate::reactor) fn deliver_upstream_text(
        &mut self,
        session_key: SessionKey,
        text: &[u8],
    ) {
        let one;
        let carried = jsonrpc::carried(text);
        let messages = match carried {
            Ok(jsonrpc::Carried::One(bytes)) => {
                one = [bytes];
                &one[..]
            }
            Ok(jsonrpc::Carried::Batch(ref elements)) => elements.as_slice(),
            Err(_) => {
                warn!("the upstream sent a message that is not JSON; skipped");
                return;
            }
        };
        for &bytes in messages {
            // Each message is forwarded as the bytes received, never
            // re-serialised.
            let message = match Message::parse(bytes) {
                Ok(message) => message,
                Err(jsonrpc::Rejected::NotJson(_)) => {
                    warn!("the upstream sent a message that is not JSON; skipped");
                    continue;
                }
                Err(jsonrpc::Rejected::NotJsonRpc { .. }) => {
                    warn!("the upstream sent something that is not JSON-RPC; skipped");
                    continue;
                }
            };
            if self
                .sessions
                .get(session_key)
                .is_some_and(|session| session.core.is_live())
            {
                self.deliver_from_upstream(session_key, &message);
            }
        }
    }

    pub(in crate::reactor) fn on_response_end(&mut self, exchange: ExchangeKey, clean: bool) {
        let now = self.now;
        let Some(mut entry) = self.take_exchange(exchange) else {
            return;
        };
        // The connection first: it may serve the next waiter at once.
        if let Step::Finished { conn, reusable } = entry.life.on(ExchangeEvent::End { clean }) {
            if let Some(http) = self.upstream.http_mut() {
                match http.conns.get_mut(conn) {
                    Some(up) if up.pooled => {
                        up.state = UpState::Idle;
                        http.pool
                            .release(conn.index(), reusable, now, &mut http.actions);
                    }
                    Some(_) => self.drop_up_conn(conn),
                    None => {}
                }
            }
            self.run_pool_actions();
        }
        let session_key = entry.session.filter(|key| self.sessions.contains(*key));
        let status = entry.life.head().map_or(502, |head| head.status);
        match entry.purpose {
            Purpose::Delete => {}
            Purpose::GetStream => {
                if let Some(session_key) = session_key {
                    self.get_stream_closed(session_key, &entry);
                }
            }
            Purpose::Passthrough => {
                if let Some(wait) = entry.client {
                    if let Some(conn) = self.front.conns.get_mut(wait.key) {
                        {
                            if let ConnState::Relaying { chunked, .. } = conn.state {
                                if chunked {
                                    response::write_last_chunk(conn.output());
                                }
                                conn.state = ConnState::Requests;
                                if conn.wants_close_when_idle() {
                                    conn.close_after_flush = true;
                                }
                                self.front.mark_dirty(wait.key);
                                self.front.process_list.push(wait.key);
                            } else {
                                self.reply_to_waiting(wait, &relayed_reply(status, &entry.body));
                            }
                        }
                    }
                }
            }
            Purpose::Continue => {
                if let (true, Some(session_key)) = (entry.life.streaming(), session_key) {
                    self.answer_stream_closed(session_key, &entry, true);
                }
            }
            Purpose::Initialize | Purpose::Messages { .. } => {
                if entry.life.streaming() {
                    let is_sse = entry.life.head().is_some_and(|head| {
                        head.header("content-type").is_some_and(|value| {
                            value.to_ascii_lowercase().starts_with("text/event-stream")
                        })
                    });
                    if let Some(session_key) = session_key {
                        if !is_sse && !entry.body.is_empty() {
                            self.deliver_upstream_text(session_key, &entry.body);
                        }
                        self.answer_stream_closed(session_key, &entry, is_sse);
                    }
                } else if let Some(wait) = entry.client {
                    if let (
                        Purpose::Messages {
                            has_requests: false,
                        },
                        Some(session_key),
                    ) = (entry.purpose, session_key)
                    {
                        if !matches!(status, 200 | 202 | 404) {
                            self.message_lost(
                                session_key,
                                &format!("the upstream did not accept it ({status})"),
                            );
                        }
                    }
                    if entry.purpose == Purpose::Initialize {
                        if let Some(session_key) = session_key {
                            self.discard_session(
                                session_key,
                                &format!("the upstream refused initialize ({status})"),
                            );
                        }
                    } else if let (Some(session_key), Some(stream)) = (session_key, entry.stream) {
                        if let Some(session) = self.sessions.get_mut(session_key) {
                            session.core.stream_refused(stream, &entry.request_ids);
                        }
                    }
                    self.reply_to_waiting(wait, &relayed_reply(status, &entry.body));
                }
            }
        }
    }

    /// An upstream answer stream ended (`is_sse`: as an SSE stream). Requests
    /// it left unanswered are continued with `Last-Event-ID` after the
    /// server's `retry:` hint when the server gave event ids (it closed the
    /// stream on purpose: SSE polling); otherwise they get an error.
    pub(in crate::reactor) fn answer_stream_closed(
        &mut self,
        session_key: SessionKey,
        entry: &Exchange,
        is_sse: bool,
    ) {
        let Some(stream) = entry.stream else {
            return;
        };
        let now = self.now;
        let unanswered = self
            .sessions
            .get(session_key)
            .filter(|session| session.core.is_live())
            .map_or(0, |session| session.core.pending_on(stream));
        if unanswered == 0 {
            return;
        }
        let empty_before = (entry.purpose == Purpose::Continue).then_some(entry.empty_reconnects);
        let serving = self.run_state == RunState::Serving;
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        let short_id = session.core.short_id().to_string();
        let Some(http) = session.http_mut() else {
            return;
        };
        let continued =
            http.streams
                .answer_closed(stream, &entry.sse_end, is_sse, empty_before, serving, now);
        let Some(continuation) = continued else {
            self.fail_stream_requests(
                session_key,
                stream,
                "the upstream ended its answer without answering this request",
            );
            return;
        };
        debug!(
            "session {short_id}: the upstream closed answer stream {stream} with {unanswered} request(s) unanswered; continuing after {}",
            continuation.last_event_id
        );
        self.arm_upstream_timer(session_key);
    }
}
