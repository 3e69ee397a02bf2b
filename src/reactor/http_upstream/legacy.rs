//! The legacy HTTP+SSE upstream (2024-11-05) on the HTTP client machinery:
//! each session opens its own SSE stream (a dedicated connection, never
//! pooled), learns where to POST from the stream's `endpoint` event, and
//! POSTs its messages there over the keep-alive pool (202 expected). Answers
//! and server messages arrive on the stream and are routed by the session
//! core, exactly as a stdio child's lines are. A stream that ends while its
//! session lives ends the session: no half-alive state.
//!
//! Only the meaning of these exchanges is here (`Purpose::LegacyStream`,
//! `Purpose::LegacyPost`); connections, the pool, retries and response
//! decoding are the same code as for a Streamable HTTP upstream.

use super::*;
use crate::http::url::UpstreamUrl;
use crate::session::SseSession;
use crate::sse_decoder::SseEvent;

/// A message waiting for the stream's `endpoint` event.
#[derive(Debug)]
pub(crate) struct QueuedPost {
    body: Vec<u8>,
    request_ids: Vec<IdKey>,
    mcp_method: Option<String>,
    stream: Option<StreamId>,
}

fn sse_session<'c>(ctx: &'c mut HttpCtx<'_>, session: SessionKey) -> Option<&'c mut SseSession> {
    ctx.sessions.get_mut(session).and_then(Session::sse_mut)
}

/// Sends a core's messages to the legacy upstream: the answer stream (if
/// requests travel) starts at once, as for a pipe, since answers come on
/// the session's SSE stream; each message is POSTed once the endpoint is
/// known, queued until then.
pub(in crate::reactor) fn forward_legacy(
    side: &mut HttpSide,
    ctx: &mut HttpCtx<'_>,
    session: SessionKey,
    origin: Origin<'_>,
    forward: Forward,
) {
    if let Some(stream) = forward.stream {
        ctx.events.push(UpstreamEvent::StreamReady {
            session,
            stream,
            client: origin.client,
        });
    }
    if forward.client_waits && forward.stream.is_none() {
        if let Some(client) = origin.client {
            reply_now(ctx, client.key, &Reply::empty(202), client.keep_alive);
        }
    }
    if let Some(request) = origin.request {
        let forwarded = ClientHeaders::of(request, &ctx.config.forward_headers).forwarded;
        if let Some(sse) = sse_session(ctx, session) {
            sse.forwarded = forwarded;
        }
    }
    let (request_ids, mcp_method, body) = post_parts(forward.messages);
    let post = QueuedPost {
        body,
        request_ids,
        mcp_method,
        stream: forward.stream,
    };
    let Some(sse) = sse_session(ctx, session) else {
        return;
    };
    match sse.endpoint.clone() {
        Some(endpoint) => start_post(side, ctx, session, endpoint, post),
        None => {
            sse.queued.push(post);
            open_stream(side, ctx, session);
        }
    }
}

/// Opens the session's SSE stream, once.
fn open_stream(side: &mut HttpSide, ctx: &mut HttpCtx<'_>, session: SessionKey) {
    if sse_session(ctx, session).is_none_or(|sse| sse.opened) {
        return;
    }
    if let Some(sse) = sse_session(ctx, session) {
        sse.opened = true;
    }
    let exchange = start_exchange(
        side,
        ctx,
        ExchangeSpec {
            purpose: Purpose::LegacyStream,
            method: "GET",
            body: Vec::new(),
            mcp_method: None,
            request_ids: Vec::new(),
            session: Some(session),
            stream: None,
            client: None,
            last_event_id: None,
            target: None,
        },
    );
    // It may have failed already (a refused connect).
    let exchange = exchange.filter(|exchange| side.exchanges.contains(*exchange));
    if let (Some(exchange), Some(sse)) = (exchange, sse_session(ctx, session)) {
        sse.stream = Some(exchange);
    }
}

fn start_post(
    side: &mut HttpSide,
    ctx: &mut HttpCtx<'_>,
    session: SessionKey,
    endpoint: String,
    post: QueuedPost,
) {
    start_exchange(
        side,
        ctx,
        ExchangeSpec {
            purpose: Purpose::LegacyPost,
            method: "POST",
            body: post.body,
            mcp_method: post.mcp_method,
            request_ids: post.request_ids,
            session: Some(session),
            stream: post.stream,
            client: None,
            last_event_id: None,
            target: Some(endpoint),
        },
    );
}

/// The stream's response head: anything but an SSE stream ends the session.
pub(in crate::reactor) fn stream_head(
    ctx: &mut HttpCtx<'_>,
    session: Option<SessionKey>,
    flows: bool,
    status: u16,
) {
    let Some(session) = session else {
        return;
    };
    if flows {
        debug!("the upstream opened the session's SSE stream");
    } else {
        end_session(
            ctx,
            session,
            &format!("the upstream refused the SSE stream ({status})"),
        );
    }
}

/// Events on the session's stream: `endpoint` says where to POST (the
/// queued messages go now); `message` (or an unnamed event) is a message.
pub(in crate::reactor) fn stream_events(
    side: &mut HttpSide,
    ctx: &mut HttpCtx<'_>,
    session: Option<SessionKey>,
    events: Vec<SseEvent>,
) {
    let Some(session) = session else {
        return;
    };
    for event in events {
        match event.event.as_deref() {
            Some("endpoint") => {
                let resolved = resolve_endpoint(&side.url, event.data.trim());
                match resolved {
                    Ok(endpoint) => endpoint_known(side, ctx, session, endpoint),
                    Err(why) => end_session(ctx, session, &why),
                }
            }
            None | Some("message") if !event.data.is_empty() => {
                deliver_upstream_text(ctx, session, event.data.into_bytes());
            }
            None | Some("message") => {}
            Some(other) => debug!("the upstream sent an SSE event {other:?}; skipped"),
        }
    }
}

fn endpoint_known(side: &mut HttpSide, ctx: &mut HttpCtx<'_>, session: SessionKey, target: String) {
    let Some(sse) = sse_session(ctx, session) else {
        return;
    };
    if sse.endpoint.is_some() {
        debug!("the upstream named its endpoint again; keeping the first");
        return;
    }
    debug!("the upstream's endpoint for the session is {target}");
    sse.endpoint = Some(target.clone());
    for post in std::mem::take(&mut sse.queued) {
        start_post(side, ctx, session, target.clone(), post);
    }
}

/// The session's stream ended or broke: the session ends with it.
pub(in crate::reactor) fn stream_closed(ctx: &mut HttpCtx<'_>, session: Option<SessionKey>) {
    let Some(session) = session else {
        return;
    };
    if let Some(sse) = sse_session(ctx, session) {
        sse.stream = None;
    }
    end_session(ctx, session, "the upstream closed the session's SSE stream");
}

/// A POST's answer came: 202 (or another 2xx) is all it says. A 404 means
/// the upstream forgot the session; any other status loses the messages:
/// their requests get an error, and a lost notification or response ends
/// the session (the upstream would wait for it forever).
pub(in crate::reactor) fn post_answered(
    ctx: &mut HttpCtx<'_>,
    session: Option<SessionKey>,
    stream: Option<StreamId>,
    status: u16,
) {
    let Some(session) = session else {
        return;
    };
    match status {
        200..=299 => {}
        404 => end_session(
            ctx,
            session,
            "the upstream no longer knows the session (404)",
        ),
        _ => post_failed(
            ctx,
            Some(session),
            stream,
            &format!("the upstream did not accept it ({status})"),
        ),
    }
}

/// A POST failed before its answer.
pub(in crate::reactor) fn post_failed(
    ctx: &mut HttpCtx<'_>,
    session: Option<SessionKey>,
    stream: Option<StreamId>,
    why: &str,
) {
    let Some(session) = session else {
        return;
    };
    match stream {
        Some(stream) => fail_stream(ctx, session, stream, why),
        None => message_lost(ctx, session, why),
    }
}

/// The session ended: its stream closes, and what waited for the endpoint
/// is dropped (the core answered its requests already).
pub(in crate::reactor) fn end_legacy_session(
    side: &mut HttpSide,
    ctx: &mut HttpCtx<'_>,
    session: SessionKey,
) {
    let Some(sse) = sse_session(ctx, session) else {
        return;
    };
    sse.queued.clear();
    let Some(stream) = sse.stream.take() else {
        return;
    };
    if let Some(entry) = take_exchange(side, stream) {
        if let Some(conn) = entry.life.conn() {
            drop_up_conn(side, ctx, conn);
        }
    }
}

/// The target (path and query) to POST to, from an `endpoint` event's data:
/// relative to the SSE URL, or absolute on the same scheme, host and port.
pub(crate) fn resolve_endpoint(base: &UpstreamUrl, data: &str) -> Result<String, String> {
    let bad = |why: &str| format!("the upstream's endpoint {data:?} {why}");
    if data.is_empty()
        || data
            .bytes()
            .any(|byte| byte.is_ascii_control() || byte == b' ')
    {
        return Err(bad("is not a URI"));
    }
    if data.contains("://") {
        let url = UpstreamUrl::parse(data).map_err(|error| bad(&error))?;
        if url.scheme != base.scheme || url.host != base.host || url.port != base.port {
            return Err(bad("is on another server"));
        }
        return Ok(url.target);
    }
    if data.starts_with("//") {
        return Err(bad("is on another server"));
    }
    if data.starts_with('/') {
        return Ok(data.to_string());
    }
    let base_path = base.target.split(['?', '#']).next().unwrap_or("/");
    if data.starts_with('?') {
        return Ok(format!("{base_path}{data}"));
    }
    let directory = match base_path.rfind('/') {
        Some(slash) => &base_path[..=slash],
        None => "/",
    };
    Ok(format!("{directory}{data}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> UpstreamUrl {
        UpstreamUrl::parse("http://127.0.0.1:3001/api/sse?x=1").unwrap()
    }

    #[test]
    fn endpoints_resolve_against_the_sse_url() {
        let resolve = |data| resolve_endpoint(&base(), data);
        assert_eq!(
            resolve("/messages/?session_id=ab").unwrap(),
            "/messages/?session_id=ab"
        );
        assert_eq!(
            resolve("message?sessionId=1").unwrap(),
            "/api/message?sessionId=1"
        );
        assert_eq!(resolve("?s=2").unwrap(), "/api/sse?s=2");
        assert_eq!(resolve("http://127.0.0.1:3001/m?s=3").unwrap(), "/m?s=3");
    }

    #[test]
    fn endpoints_elsewhere_or_malformed_are_refused() {
        let resolve = |data| resolve_endpoint(&base(), data);
        assert!(resolve("http://other:3001/m").is_err());
        assert!(resolve("http://127.0.0.1:3002/m").is_err());
        assert!(resolve("//127.0.0.1:3001/m").is_err());
        assert!(resolve("").is_err());
        assert!(resolve("/m\r\nX: y").is_err());
        assert!(resolve("/a b").is_err());
    }
}
