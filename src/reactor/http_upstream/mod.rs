//! The Streamable HTTP upstream side of the loop. Each message a session sends
//! upstream is an *exchange*: one HTTP request and its response, carried by a
//! connection from the keep-alive pool (or, for a session's GET stream, by a
//! dedicated connection outside it). This part owns the upstream sockets and
//! exchanges, carries out the pool's actions, decodes responses with the
//! sans-IO HTTP and SSE decoders, and reports the messages they carry (and
//! what else the session cores must hear) as `UpstreamEvent`s, as a child's
//! stdout lines are. The glue is functions of `(&mut HttpSide, &mut
//! HttpCtx)` (here and in `conn.rs`, `answer.rs`, `session.rs`), called
//! through `Upstreams`; it feeds no core itself.
//!
//! A client's POST waits for the upstream's response head before it is
//! answered, so an upstream status (404 for a forgotten session, 4xx for a bad
//! request) reaches the client as such.

use std::io;
use std::time::{Duration, Instant};

use crate::arena::Key;
use crate::client::ConnKey;
use crate::session::SessionKey;
use log::{debug, warn};
use mio::event::Event;
use mio::Interest;
use serde_json::value::RawValue;

use crate::client::ConnState;
use crate::http::client::{
    self as http_client, ResponseDecoder, ResponseError, ResponseEvent, ResponseHead,
};
use crate::http::request::Request;
use crate::http::response;
use crate::jsonrpc::{self, IdKey, Kind, Message};
use crate::lines::DEFAULT_MAX_LINE_BYTES;
use crate::mcp::endpoint::{Reply, PROTOCOL_VERSION_HEADER, SESSION_HEADER};
use crate::mcp::router::StreamId;
use crate::pool::{EvictCause, HostKey, PoolAction};
use crate::session::Session;
use crate::sse_decoder::SseDecoder;
use crate::token::Source;
use crate::upstream::exchange::{ExchangeEvent, Lifecycle, Step};
use crate::upstream::streams::{Continuation, GetClosed, StreamEnd};

use super::edge_io::{read_into, write_pair_from, ReadOutcome, Readiness};

mod answer;
mod conn;
mod legacy;
mod session;
mod side;
mod stream;

pub(crate) use side::HttpSide;
pub(crate) use stream::TlsTarget;
pub(in crate::reactor) use stream::UpStream;

pub(in crate::reactor) use answer::*;
pub(in crate::reactor) use conn::*;
pub(crate) use legacy::QueuedPost;
pub(in crate::reactor) use legacy::{end_legacy_session, forward_legacy};
pub(in crate::reactor) use session::*;

use super::drive::{ClientRef, Origin};
use super::upstreams::{UpstreamCtx, UpstreamEvent};
use super::Timer;
use crate::core::Forward;

/// Largest upstream response head accepted.
const MAX_UPSTREAM_HEAD_BYTES: usize = http_client::DEFAULT_MAX_RESPONSE_HEAD_BYTES;
/// Largest non-SSE upstream response body kept (a JSON answer, or an error).
const MAX_UPSTREAM_BODY_BYTES: usize = DEFAULT_MAX_LINE_BYTES;

/// Names a connection to the upstream; stale once it closed. The pool
/// knows it by its index.
pub(crate) type UpConnKey = Key<UpConn>;

/// Names an exchange; stale once it ended.
pub(crate) type ExchangeKey = Key<Exchange>;

/// What an upstream connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UpState {
    /// The connect is in flight; a dedicated (stream) connection already
    /// knows its exchange.
    Connecting { exchange: Option<ExchangeKey> },
    /// In the pool, waiting for a request.
    Idle,
    /// Carrying an exchange.
    Busy(ExchangeKey),
}

/// One connection to the upstream.
pub(crate) struct UpConn {
    /// Its socket, plain or under TLS (`stream.rs`).
    socket: UpStream,
    state: UpState,
    /// False for a session's dedicated GET stream connection.
    pooled: bool,
    /// Bytes of its exchange's request written so far: the request is
    /// written from the exchange, which keeps it for a retry, never copied
    /// into a buffer of the connection.
    written: usize,
    ready: Readiness,
    /// Response events decoded and not yet handled (`read_step`).
    pending: Vec<ResponseEvent>,
    /// Bytes came after the response: the connection cannot be reused.
    leftover: bool,
    /// The last read met EOF.
    at_eof: bool,
}

impl UpConn {
    /// A connection whose connect is in flight (`exchange`: the stream a
    /// dedicated one is for).
    fn new(socket: UpStream, pooled: bool, exchange: Option<ExchangeKey>) -> UpConn {
        UpConn {
            socket,
            state: UpState::Connecting { exchange },
            pooled,
            written: 0,
            ready: Readiness::default(),
            pending: Vec::new(),
            leftover: false,
            at_eof: false,
        }
    }

    /// The connection starts carrying `exchange`: nothing read for another
    /// is left.
    fn start(&mut self, exchange: ExchangeKey) {
        self.state = UpState::Busy(exchange);
        self.written = 0;
        self.pending.clear();
        self.leftover = false;
        self.at_eof = false;
    }
}

/// What an exchange is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// The session's `initialize`: its answer names the upstream session.
    Initialize,
    /// Messages of a live session; with requests, an answer stream follows.
    Messages { has_requests: bool },
    /// The DELETE that ends the upstream session.
    Delete,
    /// The session's GET stream (reopened with `Last-Event-ID` when the
    /// upstream closes it).
    GetStream,
    /// A GET with `Last-Event-ID` that continues an answer stream the
    /// upstream closed before answering (SSE polling).
    Continue,
    /// A stateless-era request, relayed as it is.
    Passthrough,
    /// A legacy SSE upstream: the session's own SSE stream (`legacy.rs`).
    LegacyStream,
    /// A legacy SSE upstream: messages POSTed to the session's endpoint.
    LegacyPost,
}

/// The client connection waiting for an exchange's response head.
#[derive(Debug, Clone, Copy)]
pub(super) struct ClientWait {
    key: ConnKey,
    keep_alive: bool,
    http11: bool,
}

/// One upstream request and its response.
pub(crate) struct Exchange {
    purpose: Purpose,
    /// The encoded HTTP request head, kept for a retry.
    request_head: Vec<u8>,
    /// The request body (the client's bytes, moved here), kept for a retry;
    /// written after the head with one vectored write, never copied.
    request_body: Vec<u8>,
    /// The request ids it carries, for error answers.
    request_ids: Vec<IdKey>,
    /// Where it is (queued, writing, awaiting the head, streaming or
    /// collecting, done or failed), its connection and response head, and
    /// the retry rule's inputs.
    life: Lifecycle<UpConnKey>,
    decoder: ResponseDecoder,
    sse: SseDecoder,
    body: Vec<u8>,
    client: Option<ClientWait>,
    session: Option<SessionKey>,
    /// The router stream its requests are registered on.
    stream: Option<StreamId>,
    /// The last SSE event id and `retry:` hint the upstream gave, and
    /// whether an event with data came, to continue the stream if it closes
    /// early.
    sse_end: StreamEnd,
    /// For a continuation: reconnects before it in a row that brought no event.
    empty_reconnects: u32,
    /// Response body bytes came since its answer stream was last checked
    /// (`check_answer_streams`).
    heard: bool,
}

impl Exchange {
    /// The request's bytes from `offset` on: the rest of its head, then
    /// the rest of its body.
    fn request_from(&self, offset: usize) -> (&[u8], &[u8]) {
        match self.request_head.get(offset..) {
            Some(head) if !head.is_empty() => (head, &self.request_body),
            _ => {
                let into_body = offset.saturating_sub(self.request_head.len());
                (self.request_body.get(into_body..).unwrap_or_default(), &[])
            }
        }
    }

    fn request_len(&self) -> usize {
        self.request_head.len() + self.request_body.len()
    }
}

/// What a new exchange needs to know.
pub(super) struct ExchangeSpec {
    pub purpose: Purpose,
    pub method: &'static str,
    pub body: Vec<u8>,
    pub mcp_method: Option<String>,
    pub request_ids: Vec<IdKey>,
    pub session: Option<SessionKey>,
    pub stream: Option<StreamId>,
    /// The client request this answers (for its connection and forwarded headers).
    pub client: Option<(ConnKey, ClientHeaders)>,
    /// Sent as `Last-Event-ID`, to continue an upstream stream.
    pub last_event_id: Option<String>,
    /// The request target, when not the upstream URL's (a legacy endpoint).
    pub target: Option<String>,
}

/// What an exchange keeps of the client's request.
pub(super) struct ClientHeaders {
    pub keep_alive: bool,
    pub http11: bool,
    /// Headers passed on upstream, by name.
    pub forwarded: Vec<(String, String)>,
}

/// What the HTTP upstream's glue needs of the reactor (see `UpstreamCtx`).
pub(in crate::reactor) type HttpCtx<'a> = UpstreamCtx<'a>;

/// Answers every request still waiting on `stream` with an error.
fn fail_stream(ctx: &mut HttpCtx<'_>, session: SessionKey, stream: StreamId, why: &str) {
    ctx.events.push(UpstreamEvent::FailStream {
        session,
        stream,
        why: why.to_string(),
    });
}

fn end_session(ctx: &mut HttpCtx<'_>, session: SessionKey, reason: &str) {
    ctx.events.push(UpstreamEvent::EndSession {
        session,
        reason: reason.to_string(),
    });
}

fn discard_session(ctx: &mut HttpCtx<'_>, session: SessionKey, why: &str) {
    ctx.events.push(UpstreamEvent::DiscardSession {
        session,
        why: why.to_string(),
    });
}

fn stream_lost(ctx: &mut HttpCtx<'_>, session: SessionKey, stream: StreamId) {
    ctx.events
        .push(UpstreamEvent::StreamLost { session, stream });
}

fn close_conn(ctx: &mut HttpCtx<'_>, conn: ConnKey) {
    ctx.events.push(UpstreamEvent::CloseConn { conn });
}

/// An immediate answer to a client; the last one while mcphop shuts down.
fn reply_now(ctx: &mut HttpCtx<'_>, key: ConnKey, reply: &Reply, keep_alive: bool) {
    ctx.front.reply(key, reply, keep_alive && ctx.serving);
}

/// Reads an upstream connection (one step at a time, see `read_step`).
fn read_up_conn(side: &HttpSide, ctx: &mut HttpCtx<'_>, conn: UpConnKey) {
    ctx.events.push(UpstreamEvent::ReadConn {
        server: side.server,
        conn,
    });
}

impl ClientHeaders {
    /// A client that sent no HTTP request (the stdio front door's).
    pub fn none() -> ClientHeaders {
        ClientHeaders {
            keep_alive: true,
            http11: true,
            forwarded: Vec::new(),
        }
    }

    /// The parts of `request` an exchange needs; `names` lists the headers to
    /// pass on.
    pub fn of(request: &Request, names: &[String]) -> ClientHeaders {
        let forwarded = names
            .iter()
            .flat_map(|name| {
                request
                    .headers
                    .iter()
                    .filter(move |(header, _)| header == name)
                    .map(|(header, value)| (header.clone(), value.clone()))
            })
            .collect();
        ClientHeaders {
            keep_alive: request.keep_alive,
            http11: request.minor_version >= 1,
            forwarded,
        }
    }
}

/// Starts an exchange: encodes its request and asks the pool for a
/// connection (a dedicated one for a GET stream).
pub(super) fn start_exchange(
    side: &mut HttpSide,
    ctx: &mut HttpCtx<'_>,
    spec: ExchangeSpec,
) -> Option<ExchangeKey> {
    let session = spec
        .session
        .and_then(|key| ctx.sessions.get(key).map(|session| (key, session)));
    let mut headers: Vec<(String, String)> = Vec::new();
    if spec.method == "POST" {
        headers.push(("Content-Type".into(), "application/json".into()));
    }
    let dedicated = matches!(
        spec.purpose,
        Purpose::GetStream | Purpose::Continue | Purpose::LegacyStream
    );
    let accept = if dedicated {
        "text/event-stream"
    } else {
        "application/json, text/event-stream"
    };
    headers.push(("Accept".into(), accept.into()));
    if let Some(last_event_id) = &spec.last_event_id {
        headers.push(("Last-Event-ID".into(), last_event_id.clone()));
    }
    if let Some((_, session)) = &session {
        if let Some(id) = session.http().and_then(|http| http.upstream_id.clone()) {
            headers.push(("Mcp-Session-Id".into(), id));
        }
        if let Some(version) = session.core.protocol_version() {
            headers.push(("MCP-Protocol-Version".into(), version.to_string()));
        }
    }
    match (&spec.client, &session) {
        // The client's own request: the headers it sent now.
        (Some((_, client)), _) => headers.extend(client.forwarded.iter().cloned()),
        // mcphop's own request for a session (GET stream, cancel, DELETE):
        // the headers its client sent last.
        (None, Some((_, session))) => headers.extend(session.forwarded().iter().cloned()),
        (None, None) => {}
    }
    headers.extend(side.headers.iter().cloned());
    let session_ref = session.map(|(key, _)| key);
    if let (Some((_, client)), Some(key)) = (&spec.client, session_ref) {
        if let Some(http) = ctx.sessions.get_mut(key).and_then(Session::http_mut) {
            if http.forwarded != client.forwarded {
                http.forwarded.clone_from(&client.forwarded);
            }
        }
    }
    let header_refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let mut request_head = Vec::with_capacity(256);
    http_client::write_request_head(
        &mut request_head,
        spec.method,
        spec.target.as_deref().unwrap_or(&side.url.target),
        &side.authority,
        &header_refs,
        spec.body.len(),
    );
    let client = spec.client.as_ref().map(|(key, client)| ClientWait {
        key: *key,
        keep_alive: client.keep_alive,
        http11: client.http11,
    });
    let exchange = side.exchanges.insert(Exchange {
        purpose: spec.purpose,
        request_head,
        request_body: spec.body,
        request_ids: spec.request_ids,
        // A GET stream or a continuation is reopened on its own schedule,
        // never by the pool's retry rule.
        life: Lifecycle::new(spec.mcp_method, !dedicated),
        decoder: ResponseDecoder::new(MAX_UPSTREAM_HEAD_BYTES, spec.method == "HEAD"),
        sse: SseDecoder::new(MAX_UPSTREAM_BODY_BYTES),
        body: Vec::new(),
        client: None,
        session: session_ref,
        stream: spec.stream,
        sse_end: StreamEnd::default(),
        empty_reconnects: 0,
        heard: false,
    });
    if let Some(wait) = client {
        if ctx.front.await_upstream(wait.key, side.server, exchange) {
            if let Some(exchange) = side.exchanges.get_mut(exchange) {
                exchange.client = Some(wait);
            }
        }
    }
    let gated = match (spec.purpose, session_ref) {
        (Purpose::Messages { .. }, Some(session_key)) => ctx
            .sessions
            .get_mut(session_key)
            .and_then(Session::http_mut)
            .is_some_and(|http| http.streams.hold(exchange)),
        _ => false,
    };
    if gated {
        debug!(
            "upstream {} held until the session's upstream GET stream is open",
            spec.method
        );
    } else if dedicated {
        open_dedicated(side, ctx, exchange);
    } else {
        let now = ctx.now;
        let host = side.host.clone();
        side.pool.checkout(&host, exchange, now, &mut side.actions);
        run_pool_actions(side, ctx);
    }
    Some(exchange)
}

/// Opens a connection outside the pool for a long-lived stream.
fn open_dedicated(side: &mut HttpSide, ctx: &mut HttpCtx<'_>, exchange: ExchangeKey) {
    match UpStream::connect(side.addr, side.tls.as_ref()) {
        Ok(mut socket) => {
            let key = side.conns.next_key();
            if ctx
                .registry
                .register(
                    socket.socket_mut(),
                    Source::Upstream {
                        server: side.server.index(),
                        conn: key.index(),
                    }
                    .token(),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                exchange_failed(side, ctx, exchange, "cannot register an upstream socket");
                return;
            }
            side.conns
                .insert(UpConn::new(socket, false, Some(exchange)));
            let host = side.host.clone();
            side.pool.stream_opened(&host);
            if let Some(entry) = side.exchanges.get_mut(exchange) {
                // The request goes out once the connect completes.
                entry.life.on(ExchangeEvent::Assigned {
                    conn: key,
                    reused: false,
                });
            }
        }
        Err(error) => exchange_failed(
            side,
            ctx,
            exchange,
            &format!("cannot connect to the upstream: {error}"),
        ),
    }
}

/// Carries out what the pool asked for, until it asks for nothing more.
pub(super) fn run_pool_actions(side: &mut HttpSide, ctx: &mut HttpCtx<'_>) {
    // In the order the pool asked; actions taken may ask for more.
    while !side.actions.is_empty() {
        let batch = std::mem::take(&mut side.actions);
        for action in batch {
            run_pool_action(side, ctx, action);
        }
    }
    arm_pool_timer(side, ctx);
}

fn run_pool_action(side: &mut HttpSide, ctx: &mut HttpCtx<'_>, action: PoolAction<ExchangeKey>) {
    // The pool knows connections by index; the key of what lives there
    // now is the one it means (it forgets a connection when it closes).
    let key_at = |side: &HttpSide, index: usize| side.conns.key_at(index);
    {
        match action {
            PoolAction::Assign {
                waiter,
                conn,
                reused,
                peek,
            } => match key_at(side, conn) {
                Some(conn) => assign(side, ctx, waiter, conn, reused, peek),
                None => {
                    exchange_failed(side, ctx, waiter, "the pool lent a connection that is gone")
                }
            },
            PoolAction::Connect { host } => connect_pooled(side, ctx, &host),
            PoolAction::Close { conn, cause } => {
                debug!("upstream connection {conn} closed: {}", cause.name());
                if let Some(conn) = key_at(side, conn) {
                    drop_up_conn(side, ctx, conn);
                }
            }
            PoolAction::AbortConnect { conn } => {
                debug!("upstream connection {conn}: connect timed out");
                if let Some(conn) = key_at(side, conn) {
                    drop_up_conn(side, ctx, conn);
                }
            }
            PoolAction::WaiterTimedOut { waiter } => {
                exchange_gave_up(
                    side,
                    ctx,
                    waiter,
                    504,
                    "Gateway Timeout: no upstream connection became free in time",
                );
            }
            PoolAction::WaitersFailed { host, waiters } => {
                for waiter in waiters {
                    exchange_gave_up(
                        side,
                        ctx,
                        waiter,
                        502,
                        &format!("Bad Gateway: cannot connect to the upstream {host}"),
                    );
                }
            }
        }
    }
}

fn arm_pool_timer(side: &mut HttpSide, ctx: &mut HttpCtx<'_>) {
    let Some(next) = side.pool.next_deadline() else {
        return;
    };
    if side.timer.is_some_and(|armed| armed <= next) {
        return;
    }
    side.timer = Some(next);
    ctx.timers.schedule(next, Timer::Pool(side.server));
}

/// True when `deadline` is the armed pool timer's.
pub(in crate::reactor) fn pool_timer_is(side: &HttpSide, deadline: Instant) -> bool {
    side.timer == Some(deadline)
}

/// The pool's timer fired.
pub(super) fn on_pool_timer(side: &mut HttpSide, ctx: &mut HttpCtx<'_>, deadline: Instant) {
    let now = ctx.now;
    if side.timer != Some(deadline) {
        return;
    }
    side.timer = None;
    side.pool.expire(now, &mut side.actions);
    run_pool_actions(side, ctx);
}

fn connect_pooled(side: &mut HttpSide, ctx: &mut HttpCtx<'_>, host: &HostKey) {
    let now = ctx.now;
    let registry = ctx.registry;
    side.connect_pooled(host, registry, now);
}

fn drop_up_conn(side: &mut HttpSide, ctx: &mut HttpCtx<'_>, key: UpConnKey) {
    let registry = ctx.registry;
    side.drop_conn(key, registry);
}

/// The pool gave `conn` to `exchange`.
fn assign(
    side: &mut HttpSide,
    ctx: &mut HttpCtx<'_>,
    exchange: ExchangeKey,
    conn: UpConnKey,
    reused: bool,
    peek: bool,
) {
    let now = ctx.now;
    let alive = side.exchanges.contains(exchange);
    if !alive {
        // Its request is gone: the connection goes straight back.
        side.pool
            .release(conn.index(), true, now, &mut side.actions);
        return;
    }
    if peek {
        let verdict = side.conns.get_mut(conn).map(|up| up.socket.idle_check());
        if let Some(Some(cause)) = verdict {
            debug!(
                "upstream connection {conn} failed its peek: {}",
                cause.name()
            );
            let host = side.host.clone();
            side.pool.evict(conn.index(), cause, &mut side.actions);
            side.pool.checkout(&host, exchange, now, &mut side.actions);
            return;
        }
    }
    let Some(entry) = side.exchanges.get_mut(exchange) else {
        return;
    };
    let Some(up) = side.conns.get_mut(conn) else {
        return;
    };
    if entry.life.on(ExchangeEvent::Assigned { conn, reused }) != (Step::Send { conn }) {
        // Not waiting for a connection (a duplicate grant): it goes back.
        side.pool
            .release(conn.index(), true, now, &mut side.actions);
        return;
    }
    up.start(exchange);
    up.ready.set_writable();
    flush_up_conn(side, ctx, conn);
    // Whatever arrived meanwhile is read now: edges are not repeated.
    read_up_conn(side, ctx, conn);
}

/// The client's answer when an upstream answered with something else than a
/// stream: its status, and its body when it is JSON-RPC.
fn relayed_reply(status: u16, body: &[u8]) -> Reply {
    let json = serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok();
    match (status, json) {
        (200 | 202, _) => Reply::empty(202),
        (_, true) => Reply {
            status,
            body: body.to_vec(),
            headers: Vec::new(),
        },
        _ => Reply::error(
            if status >= 400 { status } else { 502 },
            RawValue::NULL,
            jsonrpc::UPSTREAM_GONE,
            &format!("The upstream answered {status}"),
        ),
    }
}

/// The headers a passthrough request carries upstream beyond the usual.
fn passthrough_headers(request: &Request) -> Vec<(String, String)> {
    [PROTOCOL_VERSION_HEADER, "mcp-method", "mcp-name"]
        .iter()
        .filter_map(|name| {
            request
                .header(name)
                .map(|value| (name.to_string(), value.to_string()))
        })
        .collect()
}

/// Several messages as one JSON array, each as its sender wrote it.
fn batch_body(messages: &[Message]) -> Vec<u8> {
    let length = messages
        .iter()
        .map(|message| message.bytes().len() + 1)
        .sum::<usize>();
    let mut body = Vec::with_capacity(length + 1);
    for message in messages {
        body.push(if body.is_empty() { b'[' } else { b',' });
        body.extend_from_slice(message.bytes());
    }
    if body.is_empty() {
        body.push(b'[');
    }
    body.push(b']');
    body
}

/// What a POST of `messages` carries: the ids of its requests (for error
/// answers), the method of a lone request (for the retry rule), and its
/// body: one message is its sender's bytes, moved; several (a batch's
/// requests) are joined into a JSON array.
pub(super) fn post_parts(messages: Vec<Message>) -> (Vec<IdKey>, Option<String>, Vec<u8>) {
    let request_ids = messages
        .iter()
        .filter(|message| message.kind() == Kind::Request)
        .filter_map(Message::id_key)
        .collect();
    let mcp_method = lone_request_method(&messages);
    let body = match <[Message; 1]>::try_from(messages) {
        Ok([message]) => message.into_bytes(),
        Err(many) => batch_body(&many),
    };
    (request_ids, mcp_method, body)
}

/// The MCP method of a lone request, for the retry rules.
fn lone_request_method(messages: &[Message]) -> Option<String> {
    match messages {
        [message] if message.kind() == Kind::Request => message.method().map(str::to_string),
        _ => None,
    }
}
