//! An upstream response, event by event: its head decides what the exchange
//! carries (a client stream, a status, a relayed body), its body feeds the
//! SSE decoder and the session core, and its end releases the connection.
//! An answer stream that no request waits on any more and that went silent
//! is abandoned (`check_answer_streams`).

use super::*;

/// How long an answer stream may stay silent once no request of its is
/// pending (all answered, timed out or cancelled, or the session ended)
/// before it is abandoned and its connection closed, not reused. A server
/// ends its answer stream right after the last answer, so this only lets
/// that end arrive (the connection is then reused); nginx's
/// `proxy_read_timeout`, applied where nothing is awaited. A stream is
/// checked every `ANSWER_LINGER`: one that stalls is closed between one
/// and two of them after it fell silent with nothing pending.
pub(in crate::reactor) const ANSWER_LINGER: Duration = Duration::from_secs(2);

pub(in crate::reactor) fn on_response_event(
    side: &mut HttpSide,
    ctx: &mut HttpCtx<'_>,
    exchange: ExchangeKey,
    event: ResponseEvent,
    clean: bool,
) {
    match event {
        ResponseEvent::Head(head) => on_response_head(side, ctx, exchange, head),
        ResponseEvent::Body(bytes) => on_response_body(side, ctx, exchange, bytes),
        ResponseEvent::End => on_response_end(side, ctx, exchange, clean),
    }
}

pub(in crate::reactor) fn on_response_head(
    side: &mut HttpSide,
    ctx: &mut HttpCtx<'_>,
    exchange: ExchangeKey,
    head: ResponseHead,
) {
    let Some(entry) = side.exchanges.get_mut(exchange) else {
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
        Purpose::GetStream | Purpose::Continue | Purpose::LegacyStream => status == 200 && is_sse,
        Purpose::Passthrough => true,
        Purpose::Messages {
            has_requests: false,
        }
        | Purpose::Delete
        | Purpose::LegacyPost => false,
    };
    entry.life.on(ExchangeEvent::Head {
        head,
        stream: flows,
    });
    let answers = matches!(
        entry.purpose,
        Purpose::Initialize | Purpose::Messages { has_requests: true } | Purpose::Continue
    );
    if flows && answers && entry.stream.is_some() {
        side.answer_checks
            .schedule(ctx.now + ANSWER_LINGER, exchange);
    }
    let Some(entry) = side.exchanges.get_mut(exchange) else {
        return;
    };
    let session_key = entry.session.filter(|key| ctx.sessions.contains(*key));
    let purpose = entry.purpose;
    let client = entry.client;
    let stream = entry.stream;
    match purpose {
        Purpose::Initialize | Purpose::Messages { has_requests: true } if status == 200 => {
            let (Some(session_key), Some(stream)) = (session_key, stream) else {
                return;
            };
            if purpose == Purpose::Initialize {
                if let Some(http_session) = ctx
                    .sessions
                    .get_mut(session_key)
                    .and_then(Session::http_mut)
                {
                    http_session.upstream_id = upstream_id;
                }
            }
            let Some(wait) = client.filter(|wait| client_waits(ctx, *wait, exchange)) else {
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
            ctx.events.push(UpstreamEvent::StreamReady {
                session: session_key,
                stream,
                client,
            });
        }
        Purpose::Messages {
            has_requests: false,
        } if status == 200 || status == 202 => {
            if let Some(wait) = client {
                reply_to_waiting(ctx, wait, &Reply::empty(202));
            }
            if let Some(entry) = side.exchanges.get_mut(exchange) {
                entry.client = None;
            }
        }
        Purpose::Messages { .. } if status == 404 => {
            // The upstream forgot this session: the client starts over,
            // and no DELETE is sent for what is already gone.
            if let Some(http_session) = session_key
                .and_then(|key| ctx.sessions.get_mut(key))
                .and_then(Session::http_mut)
            {
                http_session.forgotten = true;
            }
            if let Some(session_key) = session_key {
                end_session(
                    ctx,
                    session_key,
                    "the upstream no longer knows the session (404)",
                );
            }
            if let Some(wait) = client {
                reply_to_waiting(ctx, wait, &Reply::session_not_found());
            }
            if let Some(entry) = side.exchanges.get_mut(exchange) {
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
                .and_then(|key| ctx.sessions.get_mut(key))
                .and_then(Session::http_mut)
                .and_then(|http_session| http_session.streams.get_head(flows));
            send_released(side, ctx, released);
        }
        Purpose::Continue => {
            if flows {
                // Its events continue the answer stream.
            } else if let (Some(session_key), Some(stream)) = (session_key, stream) {
                fail_stream(
                    ctx,
                    session_key,
                    stream,
                    &format!("the upstream refused to continue its answer stream ({status})"),
                );
            }
        }
        Purpose::Passthrough => {
            let Some(wait) = client.filter(|wait| client_waits(ctx, *wait, exchange)) else {
                return;
            };
            if response::forbids_body(status) {
                // A 204 or 304 has no body to relay (nor may it have a
                // chunked head), and a JSON-RPC POST needs an answer:
                // the upstream gave none, so 502 with a JSON-RPC error.
                reply_to_waiting(ctx, wait, &relayed_reply(status, b""));
                return;
            }
            let Some(head) = side
                .exchanges
                .get(exchange)
                .and_then(|entry| entry.life.head().cloned())
            else {
                return;
            };
            let Some(conn) = ctx.front.conns.get_mut(wait.key) else {
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
                server: side.server,
                exchange,
                chunked: wait.http11,
            };
            if !wait.keep_alive {
                conn.close_after_flush_when_idle();
            }
            ctx.front.mark_dirty(wait.key);
        }
        Purpose::LegacyStream => legacy::stream_head(ctx, session_key, flows, status),
        // Other statuses: the body is collected and relayed at its end.
        _ => {}
    }
}

pub(in crate::reactor) fn client_waits(
    ctx: &HttpCtx<'_>,
    wait: ClientWait,
    exchange: ExchangeKey,
) -> bool {
    ctx.front.waits_for(wait.key, exchange)
}

pub(in crate::reactor) fn on_response_body(
    side: &mut HttpSide,
    ctx: &mut HttpCtx<'_>,
    exchange: ExchangeKey,
    bytes: Vec<u8>,
) {
    let Some(entry) = side.exchanges.get_mut(exchange) else {
        return;
    };
    entry.heard = true;
    let is_sse = entry.life.head().is_some_and(|head| {
        head.header("content-type")
            .is_some_and(|value| value.to_ascii_lowercase().starts_with("text/event-stream"))
    });
    if entry.purpose == Purpose::Passthrough {
        if let Some(wait) = entry.client {
            if let Some(conn) = ctx.front.conns.get_mut(wait.key) {
                if let ConnState::Relaying { chunked, .. } = conn.state {
                    if chunked {
                        response::write_chunk(conn.output(), &bytes);
                    } else {
                        conn.output().extend_from_slice(&bytes);
                    }
                    ctx.front.mark_dirty(wait.key);
                }
            }
        }
        return;
    }
    if entry.life.streaming() && is_sse {
        let mut events = Vec::new();
        if entry.sse.feed(&bytes, &mut events).is_err() {
            warn!("the upstream sent an SSE event over the size limit; skipped");
            entry.sse.finish();
        }
        let session_key = entry.session;
        if entry.purpose == Purpose::LegacyStream {
            legacy::stream_events(side, ctx, session_key, events);
            return;
        }
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
                deliver_upstream_text(ctx, session_key, event.data.into_bytes());
            }
        }
        return;
    }
    if entry.body.len() + bytes.len() <= MAX_UPSTREAM_BODY_BYTES {
        if entry.body.is_empty() {
            // An answer's first (often only) piece is moved, not copied.
            entry.body = bytes;
        } else {
            entry.body.extend_from_slice(&bytes);
        }
    }
}

/// One message (or a JSON array of them) from the upstream, to route:
/// a lone message owns `text`, moved; a batch's elements are copied out.
pub(in crate::reactor) fn deliver_upstream_text(
    ctx: &mut HttpCtx<'_>,
    session_key: SessionKey,
    text: Vec<u8>,
) {
    let parsed = match jsonrpc::carried(&text) {
        Ok(jsonrpc::Carried::One(_)) => {
            // Forwarded as the bytes received, never re-serialised.
            let message = Message::parse(text.as_slice()).map(Message::unbind);
            deliver_parsed(ctx, session_key, message.map(|message| message.bind(text)));
            return;
        }
        Ok(jsonrpc::Carried::Batch(elements)) => elements
            .into_iter()
            .map(|bytes| Message::parse(bytes.to_vec()))
            .collect::<Vec<_>>(),
        Err(_) => {
            warn!("the upstream sent a message that is not JSON; skipped");
            return;
        }
    };
    for message in parsed {
        deliver_parsed(ctx, session_key, message);
    }
}

pub(in crate::reactor) fn on_response_end(
    side: &mut HttpSide,
    ctx: &mut HttpCtx<'_>,
    exchange: ExchangeKey,
    clean: bool,
) {
    let now = ctx.now;
    let Some(mut entry) = take_exchange(side, exchange) else {
        return;
    };
    // The connection first: it may serve the next waiter at once.
    if let Step::Finished { conn, reusable } = entry.life.on(ExchangeEvent::End { clean }) {
        match side.conns.get_mut(conn) {
            Some(up) if up.pooled => {
                up.state = UpState::Idle;
                // An upstream that closed right after its answer (no
                // `Connection: close`) hung up in the same edge as the
                // answer's last bytes: no later event would evict it.
                let reusable = reusable && !up.ready.hung_up();
                side.pool
                    .release(conn.index(), reusable, now, &mut side.actions);
            }
            Some(_) => drop_up_conn(side, ctx, conn),
            None => {}
        }
        run_pool_actions(side, ctx);
    }
    let session_key = entry.session.filter(|key| ctx.sessions.contains(*key));
    let status = entry.life.head().map_or(502, |head| head.status);
    match entry.purpose {
        Purpose::Delete => {}
        Purpose::LegacyStream => legacy::stream_closed(ctx, session_key),
        Purpose::LegacyPost => legacy::post_answered(ctx, session_key, entry.stream, status),
        Purpose::GetStream => {
            if let Some(session_key) = session_key {
                get_stream_closed(ctx, session_key, &entry);
            }
        }
        Purpose::Passthrough => {
            if let Some(wait) = entry.client {
                if let Some(conn) = ctx.front.conns.get_mut(wait.key) {
                    {
                        if let ConnState::Relaying { chunked, .. } = conn.state {
                            if chunked {
                                response::write_last_chunk(conn.output());
                            }
                            conn.state = ConnState::Requests;
                            if conn.wants_close_when_idle() {
                                conn.close_after_flush = true;
                            }
                            ctx.front.mark_dirty(wait.key);
                            ctx.front.process_list.push(wait.key);
                        } else {
                            reply_to_waiting(ctx, wait, &relayed_reply(status, &entry.body));
                        }
                    }
                }
            }
        }
        Purpose::Continue => {
            if let (true, Some(session_key)) = (entry.life.streaming(), session_key) {
                answer_ended(ctx, session_key, &entry, true);
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
                        let body = std::mem::take(&mut entry.body);
                        deliver_upstream_text(ctx, session_key, body);
                    }
                    answer_ended(ctx, session_key, &entry, is_sse);
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
                        message_lost(
                            ctx,
                            session_key,
                            &format!("the upstream did not accept it ({status})"),
                        );
                    }
                }
                if entry.purpose == Purpose::Initialize {
                    if let Some(session_key) = session_key {
                        discard_session(
                            ctx,
                            session_key,
                            &format!("the upstream refused initialize ({status})"),
                        );
                    }
                } else if let (Some(session_key), Some(stream)) = (session_key, entry.stream) {
                    if let Some(session) = ctx.sessions.get_mut(session_key) {
                        session.core.stream_refused(stream, &entry.request_ids);
                    }
                }
                reply_to_waiting(ctx, wait, &relayed_reply(status, &entry.body));
            }
        }
    }
}

/// Passes one parsed upstream message on to its session's core.
fn deliver_parsed(
    ctx: &mut HttpCtx<'_>,
    session: SessionKey,
    message: Result<Message<Vec<u8>>, jsonrpc::Rejected>,
) {
    match message {
        Ok(message) => {
            if ctx
                .sessions
                .get(session)
                .is_some_and(|session| session.core.is_live())
            {
                ctx.events.push(UpstreamEvent::Message { session, message });
            }
        }
        Err(jsonrpc::Rejected::NotJson(_)) => {
            warn!("the upstream sent a message that is not JSON; skipped");
        }
        Err(jsonrpc::Rejected::NotJsonRpc { .. }) => {
            warn!("the upstream sent something that is not JSON-RPC; skipped");
        }
    }
}

/// What is left of an answer stream that ended, to decide on its requests
/// once the messages before its end were fed (`answer_stream_closed`).
#[derive(Debug)]
pub(in crate::reactor) struct AnswerEnd {
    stream: StreamId,
    sse_end: StreamEnd,
    is_sse: bool,
    /// For a continuation: reconnects before it in a row that brought no event.
    empty_before: Option<u32>,
}

impl AnswerEnd {
    fn of(entry: &Exchange, is_sse: bool) -> Option<AnswerEnd> {
        Some(AnswerEnd {
            stream: entry.stream?,
            sse_end: entry.sse_end.clone(),
            is_sse,
            empty_before: (entry.purpose == Purpose::Continue).then_some(entry.empty_reconnects),
        })
    }
}

/// Defers `answer_stream_closed` until the events before it are fed.
fn answer_ended(ctx: &mut HttpCtx<'_>, session: SessionKey, entry: &Exchange, is_sse: bool) {
    if let Some(ended) = AnswerEnd::of(entry, is_sse) {
        ctx.events
            .push(UpstreamEvent::AnswerEnded { session, ended });
    }
}

/// An upstream answer stream ended (`is_sse`: as an SSE stream). Requests
/// it left unanswered are continued with `Last-Event-ID` after the
/// server's `retry:` hint when the server gave event ids (it closed the
/// stream on purpose: SSE polling); otherwise they get an error.
pub(in crate::reactor) fn answer_stream_closed(
    ctx: &mut HttpCtx<'_>,
    session_key: SessionKey,
    ended: AnswerEnd,
) {
    let AnswerEnd {
        stream,
        sse_end,
        is_sse,
        empty_before,
    } = ended;
    let now = ctx.now;
    let unanswered = ctx
        .sessions
        .get(session_key)
        .filter(|session| session.core.is_live())
        .map_or(0, |session| session.core.pending_on(stream));
    if unanswered == 0 {
        return;
    }
    let serving = ctx.serving;
    let Some(session) = ctx.sessions.get_mut(session_key) else {
        return;
    };
    let short_id = session.core.short_id().to_string();
    let Some(http) = session.http_mut() else {
        return;
    };
    let continued =
        http.streams
            .answer_closed(stream, &sse_end, is_sse, empty_before, serving, now);
    let Some(continuation) = continued else {
        fail_stream(
            ctx,
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
    arm_upstream_timer(ctx, session_key);
}

/// Answer stream checks that are due: a stream that a request of its still
/// waits on, or that delivered bytes since its last check, is checked
/// again in `ANSWER_LINGER`; one that did neither is abandoned, and its
/// connection closed (a stalled upstream would otherwise hold it, and a
/// shutdown would wait for it, forever).
pub(in crate::reactor) fn check_answer_streams(side: &mut HttpSide, ctx: &mut HttpCtx<'_>) {
    let now = ctx.now;
    while let Some((_, exchange)) = side.answer_checks.pop_expired(now) {
        let Some(entry) = side.exchanges.get_mut(exchange) else {
            continue;
        };
        if entry.life.conn().is_none() {
            continue;
        }
        let awaited = match (entry.session, entry.stream) {
            (Some(session), Some(stream)) => ctx
                .sessions
                .get(session)
                .filter(|session| session.core.is_live())
                .is_some_and(|session| session.core.pending_on(stream) > 0),
            _ => false,
        };
        let heard = std::mem::take(&mut entry.heard);
        if awaited || heard {
            side.answer_checks.schedule(now + ANSWER_LINGER, exchange);
            continue;
        }
        debug!("upstream exchange {exchange}: its answer stream is silent and no request waits on it; closing its connection");
        exchange_gave_up(
            side,
            ctx,
            exchange,
            504,
            "the upstream's answer stream went silent with no request left waiting on it",
        );
    }
}
