//! The streams of one upstream session: its GET stream (opened, reopened
//! with `Last-Event-ID`, gating the session's messages until its head), the
//! continuation of answer streams the server closed (SSE polling), the POSTs
//! a session core forwards, and the session's end (DELETE).

use super::*;

impl Proxy {
    /// The upstream ended the session's GET stream: it is reopened after the
    /// server's `retry:` hint, from its last event id, while the session lives.
    pub(in crate::reactor) fn get_stream_closed(&mut self, session_key: usize, entry: &Exchange) {
        let now = self.now;
        let draining = self.run_state != RunState::Serving;
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        let live = session.core.is_live();
        let short_id = session.core.short_id().to_string();
        let Some(http) = session.http_mut() else {
            return;
        };
        if !live || draining || http.get_refused || entry.life.head().is_none() {
            return;
        }
        if entry.last_event_id.is_some() {
            http.get_last_event_id.clone_from(&entry.last_event_id);
        }
        http.get_empty_reopens = if entry.saw_data {
            0
        } else {
            http.get_empty_reopens + 1
        };
        if http.get_empty_reopens > MAX_EMPTY_RECONNECTS {
            warn!("session {short_id}: the upstream keeps closing its GET stream at once; not reopening it");
            return;
        }
        http.get_reopen_at = Some(now + retry_delay(entry.retry));
        debug!("session {short_id}: the upstream closed its GET stream; reopening it");
        self.arm_upstream_timer(session_key);
    }

    /// The session's upstream GET stream answered (or failed, or took too
    /// long): the messages held for it go.
    pub(in crate::reactor) fn release_gate(&mut self, session_key: usize) {
        let now = self.now;
        let Some(http_session) = self
            .sessions
            .get_mut(session_key)
            .and_then(Session::http_mut)
        else {
            return;
        };
        if http_session.gate_until.take().is_none() {
            return;
        }
        let gated = std::mem::take(&mut http_session.gated);
        let Some(http) = self.http.as_mut() else {
            return;
        };
        let host = http.host.clone();
        for exchange in gated {
            let alive = http
                .exchanges
                .get(exchange.0)
                .is_some_and(|entry| entry.serial == exchange.1);
            if alive {
                http.pool.checkout(&host, exchange, now, &mut http.actions);
            }
        }
        self.run_pool_actions();
    }

    /// A message for the upstream (a response to a server request, or a
    /// notification) could not be delivered: the upstream would wait for it
    /// forever, so the session fails, and every request still pending gets
    /// an error.
    pub(in crate::reactor) fn message_lost(&mut self, session_key: usize, why: &str) {
        if let Some(session) = self.sessions.get(session_key).filter(|s| s.core.is_live()) {
            warn!(
                "session {}: a message for the upstream was lost: {why}",
                session.core.short_id()
            );
        }
        self.end_session(
            session_key,
            &format!("a message for the upstream was lost: {why}"),
        );
    }

    /// Arms the session's upstream timer for its earliest due moment.
    pub(in crate::reactor) fn arm_upstream_timer(&mut self, session_key: usize) {
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        let serial = session.serial;
        let Some(http) = session.http_mut() else {
            return;
        };
        let Some(deadline) = http.next_upstream_deadline() else {
            return;
        };
        if http.upstream_timer.is_some_and(|armed| armed <= deadline) {
            return;
        }
        http.upstream_timer = Some(deadline);
        self.timers.schedule(
            deadline,
            Timer::Upstream {
                key: session_key,
                serial,
            },
        );
    }

    /// The session's upstream timer fired: the gate opens if its wait is
    /// over, and streams due to be continued or reopened are.
    pub(in crate::reactor) fn on_upstream_timer(
        &mut self,
        key: usize,
        serial: u64,
        deadline: Instant,
    ) {
        let now = self.now;
        let Some(session) = self.sessions.get_mut(key).filter(|s| s.serial == serial) else {
            return;
        };
        let short_id = session.core.short_id().to_string();
        let Some(http) = session.http_mut() else {
            return;
        };
        if http.upstream_timer != Some(deadline) {
            return;
        }
        http.upstream_timer = None;
        let gate_over = http.gate_until.is_some_and(|until| until <= now);
        let reopen = http.get_reopen_at.is_some_and(|at| at <= now);
        if reopen {
            http.get_reopen_at = None;
        }
        let (due, later): (Vec<Continuation>, Vec<Continuation>) = http
            .continuations
            .drain(..)
            .partition(|continuation| continuation.at <= now);
        http.continuations = later;
        if gate_over {
            debug!("session {short_id}: the upstream GET stream did not open in time; sending on");
            self.release_gate(key);
        }
        if reopen {
            self.open_upstream_get(key);
        }
        for continuation in due {
            self.start_continuation(key, continuation);
        }
        self.arm_upstream_timer(key);
    }

    /// Reconnects to an answer stream with `Last-Event-ID`.
    pub(in crate::reactor) fn start_continuation(
        &mut self,
        session_key: usize,
        continuation: Continuation,
    ) {
        let alive = self.sessions.get(session_key).is_some_and(|session| {
            session.core.is_live() && session.core.pending_on(continuation.stream) > 0
        });
        if !alive {
            return;
        }
        let exchange = self.start_exchange(ExchangeSpec {
            purpose: Purpose::Continue,
            method: "GET",
            body: Vec::new(),
            mcp_method: None,
            request_ids: Vec::new(),
            session: Some(session_key),
            stream: Some(continuation.stream),
            client: None,
            last_event_id: Some(continuation.last_event_id),
        });
        if let Some(entry) = exchange.and_then(|exchange| {
            self.http
                .as_mut()
                .and_then(|http| http.exchanges.get_mut(exchange.0))
                .filter(|entry| entry.serial == exchange.1)
        }) {
            entry.empty_reconnects = continuation.empty_reconnects;
        }
    }

    /// Starts the session's upstream GET stream, unless one is open or the
    /// upstream refused it before. A stream opened afresh (not continued
    /// from an event id) holds the session's next messages until it is open
    /// upstream: a server drops what it sends to a standalone stream that is
    /// not open yet, and the client was told its stream is open.
    pub(in crate::reactor) fn open_upstream_get(&mut self, session_key: usize) {
        let wanted = self
            .sessions
            .get(session_key)
            .and_then(Session::http)
            .is_some_and(|http| {
                http.get_exchange.is_none() && !http.get_refused && http.upstream_id.is_some()
            });
        if !wanted {
            return;
        }
        let last_event_id = self
            .sessions
            .get_mut(session_key)
            .and_then(Session::http_mut)
            .and_then(|http| {
                http.get_reopen_at = None;
                http.get_last_event_id.clone()
            });
        let resumed = last_event_id.is_some();
        let exchange = self.start_exchange(ExchangeSpec {
            purpose: Purpose::GetStream,
            method: "GET",
            body: Vec::new(),
            mcp_method: None,
            request_ids: Vec::new(),
            session: Some(session_key),
            stream: None,
            client: None,
            last_event_id,
        });
        let until = self.now + GET_OPEN_WAIT;
        // It may have failed already (a refused connect).
        let exchange = exchange.filter(|exchange| {
            self.http.as_ref().is_some_and(|http| {
                http.exchanges
                    .get(exchange.0)
                    .is_some_and(|entry| entry.serial == exchange.1)
            })
        });
        if let Some(http) = self
            .sessions
            .get_mut(session_key)
            .and_then(Session::http_mut)
        {
            http.get_exchange = exchange;
            if exchange.is_some() && !resumed {
                http.gate_until = Some(until);
            }
        }
        self.arm_upstream_timer(session_key);
    }

    /// A session on the HTTP upstream ended: DELETE it upstream and close its
    /// GET stream.
    pub(in crate::reactor) fn end_http_session(&mut self, session_key: usize) {
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        let Some(http_session) = session.http_mut() else {
            return;
        };
        let get = http_session.get_exchange.take();
        let has_id = http_session.upstream_id.is_some() && !http_session.forgotten;
        // Nothing more is started for it: held messages fail, and closed
        // streams are not continued.
        http_session.gate_until = None;
        http_session.get_reopen_at = None;
        http_session.continuations.clear();
        let gated = std::mem::take(&mut http_session.gated);
        for exchange in gated {
            self.exchange_gave_up(exchange, 404, "Not Found: the session ended");
        }
        if let Some(get) = get {
            if let Some(entry) = self.take_exchange(get) {
                if let Some(conn) = entry.life.conn() {
                    self.drop_up_conn(conn);
                }
            }
        }
        if has_id {
            self.start_exchange(ExchangeSpec {
                purpose: Purpose::Delete,
                method: "DELETE",
                body: Vec::new(),
                mcp_method: None,
                request_ids: Vec::new(),
                session: Some(session_key),
                stream: None,
                client: None,
                last_event_id: None,
            });
        }
    }

    /// A client connection waiting for (or relaying) an exchange went away.
    pub(in crate::reactor) fn client_left_exchange(
        &mut self,
        exchange: ExchangeRef,
        relaying: bool,
    ) {
        if relaying {
            // A relayed body has no use without its client.
            if let Some(entry) = self.take_exchange(exchange) {
                if let Some(conn) = entry.life.conn() {
                    if let Some(http) = self.http.as_mut() {
                        http.pool
                            .evict(conn, EvictCause::NotReusable, &mut http.actions);
                    }
                    self.run_pool_actions();
                }
            }
            return;
        }
        let Some(entry) = self
            .http
            .as_mut()
            .and_then(|http| http.exchanges.get_mut(exchange.0))
            .filter(|entry| entry.serial == exchange.1)
        else {
            return;
        };
        entry.client = None;
        if let (Some((session_key, serial)), Some(stream)) = (entry.session, entry.stream) {
            self.stream_lost(session_key, serial, stream);
        }
    }

    /// Sends a core's messages to the HTTP upstream as one POST. A client
    /// that waits for them waits for the upstream's answer (its stream for
    /// requests, its status otherwise).
    pub(in crate::reactor) fn forward_http(
        &mut self,
        session_key: usize,
        origin: Origin<'_>,
        forward: Forward,
    ) {
        let request_ids = forward
            .messages
            .iter()
            .filter(|message| message.kind() == Kind::Request)
            .filter_map(Message::id_key)
            .collect();
        let mcp_method = lone_request_method(&forward.messages);
        // The messages' own bytes: one message is the client's body, moved;
        // several (a batch's requests) are joined into a JSON array.
        let body = match <[Message; 1]>::try_from(forward.messages) {
            Ok([message]) => message.into_bytes(),
            Err(many) => batch_body(&many),
        };
        let purpose = match (forward.initialize, forward.stream) {
            (true, _) => Purpose::Initialize,
            (false, Some(_)) => Purpose::Messages { has_requests: true },
            (false, None) => Purpose::Messages {
                has_requests: false,
            },
        };
        let client = match (forward.client_waits, origin.client, origin.request) {
            (true, Some(client), Some(request)) => Some((
                client.key,
                ClientHeaders::of(request, &self.config.forward_headers),
            )),
            _ => None,
        };
        self.start_exchange(ExchangeSpec {
            purpose,
            method: "POST",
            body,
            mcp_method,
            request_ids,
            session: Some(session_key),
            stream: forward.stream,
            client,
            last_event_id: None,
        });
    }

    /// A stateless-era request goes to the HTTP upstream as it is, with no
    /// session; its answer comes back as it is. False without an HTTP
    /// upstream.
    pub(in crate::reactor) fn passthrough(&mut self, key: usize, request: &Request) -> bool {
        if self.http.is_none() {
            return false;
        }
        let mut client = ClientHeaders::of(request, &self.config.forward_headers);
        client.forwarded.extend(passthrough_headers(request));
        let mcp_method = Message::parse(request.body.as_slice())
            .ok()
            .and_then(|message| message.method().map(str::to_string));
        self.start_exchange(ExchangeSpec {
            purpose: Purpose::Passthrough,
            method: "POST",
            body: request.body.clone(),
            mcp_method,
            request_ids: Vec::new(),
            session: None,
            stream: None,
            client: Some((key, client)),
            last_event_id: None,
        });
        true
    }

    /// Logs the pool's figures (at shutdown).
    pub(in crate::reactor) fn log_pool_summary(&self) {
        if let Some(http) = self.http.as_ref() {
            info!("upstream pool: {}", http.pool.summary());
        }
    }

    /// Gives up on every exchange still in flight (the shutdown's last step).
    pub(in crate::reactor) fn abandon_exchanges(&mut self) {
        let Some(http) = self.http.as_mut() else {
            return;
        };
        if !http.exchanges.is_empty() {
            warn!(
                "exiting with {} upstream request(s) unfinished",
                http.exchanges.len()
            );
        }
        http.exchanges.clear();
        let keys: Vec<usize> = http.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.drop_up_conn(key);
        }
    }

    /// True while exchanges are in flight (a shutdown waits for DELETEs).
    pub(in crate::reactor) fn exchanges_in_flight(&self) -> bool {
        self.http
            .as_ref()
            .is_some_and(|http| !http.exchanges.is_empty())
    }
}
