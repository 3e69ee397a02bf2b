//! The streams of one upstream session: its GET stream (opened, reopened
//! with `Last-Event-ID`, gating the session's messages until its head), the
//! continuation of answer streams the server closed (SSE polling), the POSTs
//! a session core forwards, and the session's end (DELETE).

use super::*;

/// The upstream ended the session's GET stream: it is reopened after the
/// server's `retry:` hint, from its last event id, while the session lives.
pub(in crate::reactor) fn get_stream_closed(
    ctx: &mut HttpCtx<'_>,
    session_key: SessionKey,
    entry: &Exchange,
) {
    let now = ctx.now;
    let serving = ctx.serving;
    let Some(session) = ctx.sessions.get_mut(session_key) else {
        return;
    };
    let live = session.core.is_live();
    let short_id = session.core.short_id().to_string();
    let Some(http) = session.http_mut() else {
        return;
    };
    let opened = entry.life.head().is_some();
    match http
            .streams
            .get_closed(&entry.sse_end, opened, live && serving, now)
        {
            GetClosed::Nothing => {}
            GetClosed::GiveUp => warn!(
                "session {short_id}: the upstream keeps closing its GET stream at once; not reopening it"
            ),
            GetClosed::ReopenAt(_) => {
                debug!("session {short_id}: the upstream closed its GET stream; reopening it");
                arm_upstream_timer(ctx, session_key);
            }
        }
}

/// The session's gate opened (its upstream GET stream answered, failed,
/// or took too long): the messages it held go, in order.
pub(in crate::reactor) fn send_released(
    side: &mut HttpSide,
    ctx: &mut HttpCtx<'_>,
    released: Option<Vec<ExchangeKey>>,
) {
    let now = ctx.now;
    let Some(released) = released else {
        return;
    };
    let host = side.host.clone();
    for exchange in released {
        let alive = side.exchanges.contains(exchange);
        if alive {
            side.pool.checkout(&host, exchange, now, &mut side.actions);
        }
    }
    run_pool_actions(side, ctx);
}

/// A message for the upstream (a response to a server request, or a
/// notification) could not be delivered: the upstream would wait for it
/// forever, so the session fails, and every request still pending gets
/// an error.
pub(in crate::reactor) fn message_lost(ctx: &mut HttpCtx<'_>, session_key: SessionKey, why: &str) {
    if let Some(session) = ctx.sessions.get(session_key).filter(|s| s.core.is_live()) {
        warn!(
            "session {}: a message for the upstream was lost: {why}",
            session.core.short_id()
        );
    }
    end_session(
        ctx,
        session_key,
        &format!("a message for the upstream was lost: {why}"),
    );
}

/// Arms the session's upstream timer for its earliest due moment.
pub(in crate::reactor) fn arm_upstream_timer(ctx: &mut HttpCtx<'_>, session_key: SessionKey) {
    let Some(session) = ctx.sessions.get_mut(session_key) else {
        return;
    };
    let Some(http) = session.http_mut() else {
        return;
    };
    let Some(deadline) = http.streams.next_deadline() else {
        return;
    };
    if http.upstream_timer.is_some_and(|armed| armed <= deadline) {
        return;
    }
    http.upstream_timer = Some(deadline);
    ctx.timers.schedule(deadline, Timer::Upstream(session_key));
}

/// The session's upstream timer fired: the gate opens if its wait is
/// over, and streams due to be continued or reopened are.
pub(in crate::reactor) fn on_upstream_timer(
    side: &mut HttpSide,
    ctx: &mut HttpCtx<'_>,
    key: SessionKey,
    deadline: Instant,
) {
    let now = ctx.now;
    let Some(session) = ctx.sessions.get_mut(key) else {
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
    let due = http.streams.due(now);
    if due.released.is_some() {
        debug!("session {short_id}: the upstream GET stream did not open in time; sending on");
        send_released(side, ctx, due.released);
    }
    if due.reopen_get {
        open_upstream_get(side, ctx, key);
    }
    for continuation in due.continuations {
        start_continuation(side, ctx, key, continuation);
    }
    arm_upstream_timer(ctx, key);
}

/// Reconnects to an answer stream with `Last-Event-ID`.
pub(in crate::reactor) fn start_continuation(
    side: &mut HttpSide,
    ctx: &mut HttpCtx<'_>,
    session_key: SessionKey,
    continuation: Continuation<StreamId>,
) {
    let alive = ctx.sessions.get(session_key).is_some_and(|session| {
        session.core.is_live() && session.core.pending_on(continuation.stream) > 0
    });
    if !alive {
        return;
    }
    let exchange = start_exchange(
        side,
        ctx,
        ExchangeSpec {
            purpose: Purpose::Continue,
            method: "GET",
            body: Vec::new(),
            mcp_method: None,
            request_ids: Vec::new(),
            session: Some(session_key),
            stream: Some(continuation.stream),
            client: None,
            last_event_id: Some(continuation.last_event_id),
            target: None,
        },
    );
    if let Some(entry) = exchange.and_then(|exchange| side.exchanges.get_mut(exchange)) {
        entry.empty_reconnects = continuation.empty_reconnects;
    }
}

/// Starts the session's upstream GET stream, unless one is open or the
/// upstream refused it before. A stream opened afresh (not continued
/// from an event id) holds the session's next messages until it is open
/// upstream: a server drops what it sends to a standalone stream that is
/// not open yet, and the client was told its stream is open.
pub(in crate::reactor) fn open_upstream_get(
    side: &mut HttpSide,
    ctx: &mut HttpCtx<'_>,
    session_key: SessionKey,
) {
    let opening = ctx
        .sessions
        .get_mut(session_key)
        .and_then(Session::http_mut)
        .filter(|http| http.streams.wants_get(http.upstream_id.is_some()))
        .map(|http| http.streams.get_opening());
    let Some(last_event_id) = opening else {
        return;
    };
    let resumed = last_event_id.is_some();
    let exchange = start_exchange(
        side,
        ctx,
        ExchangeSpec {
            purpose: Purpose::GetStream,
            method: "GET",
            body: Vec::new(),
            mcp_method: None,
            request_ids: Vec::new(),
            session: Some(session_key),
            stream: None,
            client: None,
            last_event_id,
            target: None,
        },
    );
    let now = ctx.now;
    // It may have failed already (a refused connect).
    let exchange = exchange.filter(|exchange| side.exchanges.contains(*exchange));
    if let Some(http) = ctx
        .sessions
        .get_mut(session_key)
        .and_then(Session::http_mut)
    {
        if let Some(exchange) = exchange {
            http.streams.get_started(exchange, resumed, now);
        }
    }
    arm_upstream_timer(ctx, session_key);
}

/// A session on the HTTP upstream ended: DELETE it upstream and close its
/// GET stream.
pub(in crate::reactor) fn end_http_session(
    side: &mut HttpSide,
    ctx: &mut HttpCtx<'_>,
    session_key: SessionKey,
) {
    let Some(session) = ctx.sessions.get_mut(session_key) else {
        return;
    };
    let Some(http_session) = session.http_mut() else {
        return;
    };
    let has_id = http_session.upstream_id.is_some() && !http_session.forgotten;
    // Nothing more is started for it: held messages fail, and closed
    // streams are not continued.
    let (get, gated) = http_session.streams.end();
    for exchange in gated {
        exchange_gave_up(side, ctx, exchange, 404, "Not Found: the session ended");
    }
    if let Some(get) = get {
        if let Some(entry) = take_exchange(side, get) {
            if let Some(conn) = entry.life.conn() {
                drop_up_conn(side, ctx, conn);
            }
        }
    }
    if has_id {
        start_exchange(
            side,
            ctx,
            ExchangeSpec {
                purpose: Purpose::Delete,
                method: "DELETE",
                body: Vec::new(),
                mcp_method: None,
                request_ids: Vec::new(),
                session: Some(session_key),
                stream: None,
                client: None,
                last_event_id: None,
                target: None,
            },
        );
    }
}

/// A client connection waiting for (or relaying) an exchange went away.
pub(in crate::reactor) fn client_left_exchange(
    side: &mut HttpSide,
    ctx: &mut HttpCtx<'_>,
    exchange: ExchangeKey,
    relaying: bool,
) {
    if relaying {
        // A relayed body has no use without its client.
        if let Some(entry) = take_exchange(side, exchange) {
            if let Some(conn) = entry.life.conn() {
                side.pool
                    .evict(conn.index(), EvictCause::NotReusable, &mut side.actions);
                run_pool_actions(side, ctx);
            }
        }
        return;
    }
    let Some(entry) = side.exchanges.get_mut(exchange) else {
        return;
    };
    entry.client = None;
    if let (Some(session_key), Some(stream)) = (entry.session, entry.stream) {
        stream_lost(ctx, session_key, stream);
    }
}

/// Sends a core's messages to the HTTP upstream as one POST. A client
/// that waits for them waits for the upstream's answer (its stream for
/// requests, its status otherwise).
pub(in crate::reactor) fn forward_http(
    side: &mut HttpSide,
    ctx: &mut HttpCtx<'_>,
    session_key: SessionKey,
    origin: Origin<'_>,
    forward: Forward,
) {
    let (request_ids, mcp_method, body) = post_parts(forward.messages);
    let purpose = match (forward.initialize, forward.stream) {
        (true, _) => Purpose::Initialize,
        (false, Some(_)) => Purpose::Messages { has_requests: true },
        (false, None) => Purpose::Messages {
            has_requests: false,
        },
    };
    // A client with no HTTP request of its own (mcphop's stdin) forwards
    // no headers.
    let client = match (forward.client_waits, origin.client, origin.request) {
        (true, Some(client), Some(request)) => Some((
            client.key,
            ClientHeaders::of(request, &ctx.config.forward_headers),
        )),
        (true, Some(client), None) => Some((client.key, ClientHeaders::none())),
        _ => None,
    };
    start_exchange(
        side,
        ctx,
        ExchangeSpec {
            purpose,
            method: "POST",
            body,
            mcp_method,
            request_ids,
            session: Some(session_key),
            stream: forward.stream,
            client,
            last_event_id: None,
            target: None,
        },
    );
}

/// A stateless-era request goes to the HTTP upstream as it is, with no
/// session; its answer comes back as it is.
pub(in crate::reactor) fn passthrough(
    side: &mut HttpSide,
    ctx: &mut HttpCtx<'_>,
    key: ConnKey,
    request: &Request,
) -> bool {
    let mut client = ClientHeaders::of(request, &ctx.config.forward_headers);
    client.forwarded.extend(passthrough_headers(request));
    let mcp_method = Message::parse(request.body.as_slice())
        .ok()
        .and_then(|message| message.method().map(str::to_string));
    start_exchange(
        side,
        ctx,
        ExchangeSpec {
            purpose: Purpose::Passthrough,
            method: "POST",
            body: request.body.clone(),
            mcp_method,
            request_ids: Vec::new(),
            session: None,
            stream: None,
            client: Some((key, client)),
            last_event_id: None,
            target: None,
        },
    );
    true
}
