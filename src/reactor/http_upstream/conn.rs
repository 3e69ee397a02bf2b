//! Upstream connections: readiness, connect completion, idle eviction, the
//! write and read loops, and what happens to an exchange when its connection
//! breaks (retry or give up).

use super::*;

/// A readiness event on an upstream connection.
pub(in crate::reactor) fn on_upstream_event(
    side: &mut HttpSide,
    ctx: &mut HttpCtx<'_>,
    key: UpConnKey,
    event: &Event,
) {
    let Some(up) = side.conns.get_mut(key) else {
        return;
    };
    up.ready.on_event(event);
    match up.state {
        UpState::Connecting { exchange } => finish_connect(side, ctx, key, exchange),
        UpState::Idle => {
            if up.ready.readable() {
                idle_conn_event(side, ctx, key);
            }
        }
        UpState::Busy(_) => {
            flush_up_conn(side, ctx, key);
            read_up_conn(side, ctx, key);
        }
    }
}

pub(in crate::reactor) fn finish_connect(
    side: &mut HttpSide,
    ctx: &mut HttpCtx<'_>,
    key: UpConnKey,
    exchange: Option<ExchangeKey>,
) {
    let now = ctx.now;
    let Some(up) = side.conns.get_mut(key) else {
        return;
    };
    if !up.ready.writable() && !up.ready.readable() {
        return;
    }
    let outcome = match up.socket.socket().take_error() {
        Ok(Some(error)) | Err(error) => Err(error),
        Ok(None) => match up.socket.socket().peer_addr() {
            Ok(_) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(error) => Err(error),
        },
    };
    match (outcome, exchange) {
        (Ok(false), _) => {}
        (Ok(true), None) => {
            up.state = UpState::Idle;
            side.pool.connected(key.index(), now, &mut side.actions);
            run_pool_actions(side, ctx);
        }
        (Ok(true), Some(exchange)) => {
            if side.exchanges.get(exchange).is_none() {
                drop_up_conn(side, ctx, key);
                return;
            }
            up.start(exchange);
            flush_up_conn(side, ctx, key);
            read_up_conn(side, ctx, key);
        }
        (Err(error), None) => {
            debug!("upstream connect failed: {error}");
            side.passive_failure(&format!("connect: {error}"));
            if let Some(mut conn) = side.conns.remove(key) {
                let _ = ctx.registry.deregister(conn.socket.socket_mut());
            }
            side.pool.connect_failed(key.index(), &mut side.actions);
            run_pool_actions(side, ctx);
        }
        (Err(error), Some(exchange)) => {
            side.passive_failure(&format!("connect: {error}"));
            drop_up_conn(side, ctx, key);
            exchange_failed(
                side,
                ctx,
                exchange,
                &format!("cannot connect to the upstream: {error}"),
            );
        }
    }
}

/// Anything on an idle pooled connection (EOF, data, error) evicts it.
pub(in crate::reactor) fn idle_conn_event(
    side: &mut HttpSide,
    ctx: &mut HttpCtx<'_>,
    key: UpConnKey,
) {
    let Some(up) = side.conns.get_mut(key) else {
        return;
    };
    let Some(cause) = up.socket.idle_check() else {
        up.ready.clear_readable();
        return;
    };
    debug!("idle upstream connection {key} evicted: {}", cause.name());
    side.pool.evict(key.index(), cause, &mut side.actions);
    run_pool_actions(side, ctx);
}

pub(in crate::reactor) fn flush_up_conn(
    side: &mut HttpSide,
    ctx: &mut HttpCtx<'_>,
    key: UpConnKey,
) {
    let Some(up) = side.conns.get_mut(key) else {
        return;
    };
    let UpState::Busy(exchange) = up.state else {
        return;
    };
    // TLS records queued when the socket was full go first (the handshake's
    // own messages and request bytes rustls encrypted earlier).
    if let Err(error) = up.socket.flush_tls() {
        write_failed(side, ctx, key, &error);
        return;
    }
    let Some(entry) = side.exchanges.get_mut(exchange) else {
        return;
    };
    // Written from the exchange's own copy of the request (kept for a
    // retry): no copy into the connection.
    let (head, body) = entry.request_from(up.written);
    if head.is_empty() && body.is_empty() {
        return;
    }
    let outcome = write_pair_from(&mut up.socket, &mut up.ready, head, body);
    up.written += outcome.written;
    entry.life.on(ExchangeEvent::Wrote {
        written: outcome.written,
        all_out: up.written >= entry.request_len(),
    });
    if let Some(error) = outcome.failed {
        write_failed(side, ctx, key, &error);
    }
}

/// A write to an upstream connection failed: the host's health hears of
/// it, and the connection's exchange fails.
fn write_failed(side: &mut HttpSide, ctx: &mut HttpCtx<'_>, key: UpConnKey, error: &io::Error) {
    side.passive_failure(&format!("write: {error}"));
    let why = format!("writing to the upstream failed: {error}");
    conn_broke(side, ctx, key, &why);
}

/// True when the client stream an exchange feeds cannot take more now.
pub(in crate::reactor) fn exchange_blocked(ctx: &HttpCtx<'_>, exchange: &Exchange) -> bool {
    if exchange.purpose == Purpose::LegacyStream {
        // It feeds every stream of its session.
        return exchange.session.is_some_and(|session_key| {
            ctx.sessions.get(session_key).is_some_and(|session| {
                session.stream_conns.values().any(|conn_key| {
                    ctx.front
                        .conns
                        .get(*conn_key)
                        .is_some_and(|conn| conn.unwritten() > ctx.config.max_client_buffer)
                })
            })
        });
    }
    let (Some(session_key), Some(stream)) = (exchange.session, exchange.stream) else {
        return false;
    };
    ctx.sessions
        .get(session_key)
        .and_then(|session| session.stream_conns.get(&stream))
        .and_then(|conn_key| ctx.front.conns.get(*conn_key))
        .is_some_and(|conn| conn.unwritten() > ctx.config.max_client_buffer)
}

/// One step of reading an upstream connection: the next response event
/// decoded earlier, or else one read and its decoding (until it would
/// block, the response ends, or the client stream it feeds is full).
/// True when there may be more; the reactor feeds the step's events to
/// the cores before the next, as a core's state and the client's
/// back-pressure are to be current at each.
pub(in crate::reactor) fn read_step(
    side: &mut HttpSide,
    ctx: &mut HttpCtx<'_>,
    key: UpConnKey,
) -> bool {
    let Some(up) = side.conns.get_mut(key) else {
        return false;
    };
    let UpState::Busy(exchange) = up.state else {
        return false;
    };
    if !up.pending.is_empty() {
        let event = up.pending.remove(0);
        let clean = !up.leftover;
        on_response_event(side, ctx, exchange, event, clean);
        let Some(up) = side
            .conns
            .get(key)
            .filter(|up| up.state == UpState::Busy(exchange))
        else {
            return false;
        };
        // EOF ended a close-delimited body (EOF with the response
        // incomplete was an error when it was decoded).
        return !(up.pending.is_empty() && up.at_eof);
    }
    if up.at_eof || !up.ready.readable() {
        return false;
    }
    let Some(entry) = side.exchanges.get(exchange) else {
        drop_up_conn(side, ctx, key);
        return false;
    };
    if exchange_blocked(ctx, entry) {
        // Back-pressure: the upstream waits in its socket buffer.
        if let Some(paused) = entry
            .session
            .and_then(|session_key| ctx.sessions.get_mut(session_key))
            .and_then(Session::paused_mut)
        {
            if !paused.contains(&key) {
                paused.push(key);
            }
        }
        return false;
    }
    let (Some(up), Some(entry)) = (side.conns.get_mut(key), side.exchanges.get_mut(exchange))
    else {
        return false;
    };
    let outcome = match read_into(&mut up.socket, &mut up.ready, ctx.scratch) {
        ReadOutcome::Eof => entry.decoder.eof(&mut up.pending).map(|()| true),
        ReadOutcome::Data(count) => {
            let bytes = &ctx.scratch[..count];
            entry.decoder.decode(bytes, &mut up.pending).map(|used| {
                // Bytes came after the response: the connection cannot
                // be reused.
                if used < count {
                    up.leftover = true;
                }
                false
            })
        }
        ReadOutcome::Blocked => return false,
        ReadOutcome::Failed(error) => {
            side.passive_failure(&format!("read: {error}"));
            let why = format!("reading from the upstream failed: {error}");
            conn_broke(side, ctx, key, &why);
            return false;
        }
    };
    match outcome {
        Ok(at_eof) => {
            up.at_eof = at_eof;
            true
        }
        Err(error) => {
            // EOF is the upstream's doing; a malformed or oversized
            // response is said as such, whoever closed what.
            let why = match (error, entry.life.head().is_some()) {
                (ResponseError::Truncated, true) => {
                    format!("the upstream response broke off: {error}")
                }
                (ResponseError::Truncated, false) => {
                    format!("the upstream closed the connection: {error}")
                }
                (error, _) => error.to_string(),
            };
            conn_broke(side, ctx, key, &why);
            false
        }
    }
}

/// The client caught up: read the upstream connections that waited for it.
pub(in crate::reactor) fn resume_http_output(
    side: &HttpSide,
    ctx: &mut HttpCtx<'_>,
    session_key: SessionKey,
) {
    let paused = ctx
        .sessions
        .get_mut(session_key)
        .and_then(Session::paused_mut)
        .map(std::mem::take)
        .unwrap_or_default();
    for key in paused {
        read_up_conn(side, ctx, key);
    }
}

/// An upstream connection failed mid-exchange: it is dropped, and the
/// exchange is retried if the rules allow, or answered with an error.
pub(in crate::reactor) fn conn_broke(
    side: &mut HttpSide,
    ctx: &mut HttpCtx<'_>,
    key: UpConnKey,
    why: &str,
) {
    let Some(up) = side.conns.get(key) else {
        return;
    };
    let exchange = match up.state {
        UpState::Busy(exchange) => Some(exchange),
        _ => None,
    };
    if up.pooled {
        side.pool
            .evict(key.index(), EvictCause::Error, &mut side.actions);
        run_pool_actions(side, ctx);
    } else {
        drop_up_conn(side, ctx, key);
    }
    if let Some(exchange) = exchange {
        exchange_failed(side, ctx, exchange, why);
    }
}

/// Retries an exchange if allowed, or gives up on it.
pub(in crate::reactor) fn exchange_failed(
    side: &mut HttpSide,
    ctx: &mut HttpCtx<'_>,
    exchange: ExchangeKey,
    why: &str,
) {
    let now = ctx.now;
    let Some(entry) = side.exchanges.get_mut(exchange) else {
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
        let host = side.host.clone();
        side.pool.note_retry();
        side.pool
            .checkout_fresh(&host, exchange, now, &mut side.actions);
        run_pool_actions(side, ctx);
        return;
    }
    exchange_gave_up(side, ctx, exchange, 502, &format!("Bad Gateway: {why}"));
}

/// Ends an exchange that cannot be completed: whoever waits for it gets
/// `status` (before a response head) or a JSON-RPC error per request.
pub(in crate::reactor) fn exchange_gave_up(
    side: &mut HttpSide,
    ctx: &mut HttpCtx<'_>,
    exchange: ExchangeKey,
    status: u16,
    why: &str,
) {
    let Some(mut entry) = take_exchange(side, exchange) else {
        return;
    };
    let conn = match entry.life.on(ExchangeEvent::Abandoned) {
        Step::GiveUp { conn } => conn,
        _ => None,
    };
    if let Some(conn) = conn {
        if side.conns.get(conn).is_some_and(|up| up.pooled) {
            side.pool
                .evict(conn.index(), EvictCause::Error, &mut side.actions);
        } else {
            drop_up_conn(side, ctx, conn);
        }
    }
    side.pool.cancel_waiter(exchange);
    run_pool_actions(side, ctx);
    warn!("upstream exchange failed: {why}");
    let session_key = entry.session.filter(|key| ctx.sessions.contains(*key));
    match entry.purpose {
        Purpose::GetStream => {
            let released = session_key
                .and_then(|key| ctx.sessions.get_mut(key))
                .and_then(Session::http_mut)
                .and_then(|http| http.streams.get_failed());
            send_released(side, ctx, released);
            return;
        }
        Purpose::Continue => {
            if let (Some(session_key), Some(stream)) = (session_key, entry.stream) {
                fail_stream(ctx, session_key, stream, why);
            }
            return;
        }
        Purpose::Messages {
            has_requests: false,
        } => {
            if let Some(session_key) = session_key {
                message_lost(ctx, session_key, why);
            }
        }
        Purpose::Delete => return,
        Purpose::LegacyStream => {
            legacy::stream_closed(ctx, session_key);
            return;
        }
        Purpose::LegacyPost => {
            legacy::post_failed(ctx, session_key, entry.stream, why);
            return;
        }
        _ => {}
    }
    if entry.life.streaming() {
        if let (Some(session_key), Some(stream)) = (session_key, entry.stream) {
            fail_stream(ctx, session_key, stream, why);
        }
        if entry.purpose == Purpose::Passthrough {
            if let Some(wait) = entry.client {
                close_conn(ctx, wait.key);
            }
        }
        return;
    }
    // Before any head: the waiting client gets the error as its answer.
    if let (Some(session_key), Some(stream)) = (session_key, entry.stream) {
        if let Some(session) = ctx.sessions.get_mut(session_key) {
            session.core.stream_refused(stream, &entry.request_ids);
        }
    }
    if entry.purpose == Purpose::Initialize {
        if let Some(session_key) = session_key {
            discard_session(ctx, session_key, why);
        }
    }
    if let Some(wait) = entry.client {
        let id = match entry.request_ids.as_slice() {
            [only] => only.to_raw(),
            _ => RawValue::NULL.to_owned(),
        };
        let reply = Reply::error(status, &id, jsonrpc::UPSTREAM_GONE, why);
        reply_to_waiting(ctx, wait, &reply);
    }
}

pub(in crate::reactor) fn take_exchange(
    side: &mut HttpSide,
    exchange: ExchangeKey,
) -> Option<Exchange> {
    side.exchanges.remove(exchange)
}

/// Answers a client connection that waits for an exchange, if it still does.
pub(in crate::reactor) fn reply_to_waiting(ctx: &mut HttpCtx<'_>, wait: ClientWait, reply: &Reply) {
    let keep_alive = wait.keep_alive && ctx.serving;
    ctx.front.answer_waiting(wait.key, reply, keep_alive);
}
