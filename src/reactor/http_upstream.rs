//! The Streamable HTTP upstream side of the loop. Each message a session sends
//! upstream is an *exchange*: one HTTP request and its response, carried by a
//! connection from the keep-alive pool (or, for a session's GET stream, by a
//! dedicated connection outside it). This part owns the upstream sockets and
//! exchanges, carries out the pool's actions, decodes responses with the
//! sans-IO HTTP and SSE decoders, and hands the messages they carry to the
//! session's router, as a child's stdout lines would be.
//!
//! A client's POST waits for the upstream's response head before it is
//! answered, so an upstream status (404 for a forgotten session, 4xx for a bad
//! request) reaches the client as such.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::event::Event;
use mio::net::TcpStream;
use mio::Interest;
use serde_json::Value;
use slab::Slab;

use crate::client::ConnState;
use crate::http::client::{self as http_client, ResponseDecoder, ResponseEvent, ResponseHead};
use crate::http::request::Request;
use crate::http::response;
use crate::http::url::UpstreamUrl;
use crate::jsonrpc::{self, Kind};
use crate::lines::DEFAULT_MAX_LINE_BYTES;
use crate::mcp::endpoint::{Reply, PROTOCOL_VERSION_HEADER, SESSION_HEADER};
use crate::mcp::router::StreamId;
use crate::pool::{EvictCause, HostKey, Pool, PoolAction, PoolConfig};
use crate::session::{Continuation, Session};
use crate::sse_decoder::SseDecoder;
use crate::token::Source;
use crate::upstream_retry;

use super::drive::{ClientRef, Origin};
use super::{Proxy, RunState, Timer};
use crate::core::Forward;

/// Largest upstream response head accepted.
const MAX_UPSTREAM_HEAD_BYTES: usize = http_client::DEFAULT_MAX_RESPONSE_HEAD_BYTES;
/// Largest non-SSE upstream response body kept (a JSON answer, or an error).
const MAX_UPSTREAM_BODY_BYTES: usize = DEFAULT_MAX_LINE_BYTES;

/// How long a session's messages wait for the upstream GET stream its
/// client just opened to be open upstream too, before they go anyway.
/// Servers drop what they send to a standalone stream that is not open yet,
/// so a request sent after the client's GET waits for it; a server that sends
/// no response head before its first event must not stall a session for
/// longer than this.
const GET_OPEN_WAIT: Duration = Duration::from_secs(2);
/// The wait before reconnecting an SSE stream the upstream closed without a
/// `retry:` hint.
const DEFAULT_UPSTREAM_RETRY: Duration = Duration::from_secs(1);
/// The longest `retry:` hint honoured: a larger one would hold a client's
/// answer for longer than it is likely to wait.
const MAX_UPSTREAM_RETRY: Duration = Duration::from_secs(30);
/// Reconnects of one stream in a row that bring no event before mcphop gives
/// the stream up: a server that closes at once forever is not polling.
const MAX_EMPTY_RECONNECTS: u32 = 3;

/// Names an exchange across slab reuse: key and serial.
pub(super) type ExchangeRef = (usize, u64);

/// The HTTP upstream, its pool, its connections and the exchanges in flight.
pub(super) struct HttpSide {
    pub url: UpstreamUrl,
    pub host: HostKey,
    pub authority: String,
    pub addr: SocketAddr,
    pub pool: Pool<ExchangeRef>,
    pub conns: Slab<UpConn>,
    pub exchanges: Slab<Exchange>,
    actions: Vec<PoolAction<ExchangeRef>>,
    /// The deadline of the armed pool timer.
    timer: Option<Instant>,
}

impl HttpSide {
    /// Resolves the upstream's address once, at start-up.
    pub fn new(url: UpstreamUrl, config: PoolConfig) -> io::Result<HttpSide> {
        use std::net::ToSocketAddrs;
        let addr = (url.host.as_str(), url.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::other(format!("{} has no address", url.host)))?;
        Ok(HttpSide {
            host: HostKey::new(url.scheme, url.host.clone(), url.port),
            authority: url.authority(),
            addr,
            url,
            pool: Pool::new(config),
            conns: Slab::new(),
            exchanges: Slab::new(),
            actions: Vec::new(),
            timer: None,
        })
    }
}

/// What an upstream connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UpState {
    /// The connect is in flight; a dedicated (stream) connection already
    /// knows its exchange.
    Connecting { exchange: Option<ExchangeRef> },
    /// In the pool, waiting for a request.
    Idle,
    /// Carrying an exchange.
    Busy(ExchangeRef),
}

/// One connection to the upstream.
pub(super) struct UpConn {
    socket: TcpStream,
    state: UpState,
    /// False for a session's dedicated GET stream connection.
    pooled: bool,
    output: Vec<u8>,
    written: usize,
    readable: bool,
    writable: bool,
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
}

/// The client connection waiting for an exchange's response head.
#[derive(Debug, Clone, Copy)]
pub(super) struct ClientWait {
    key: usize,
    serial: u64,
    keep_alive: bool,
    http11: bool,
}

/// One upstream request and its response.
pub(super) struct Exchange {
    serial: u64,
    purpose: Purpose,
    /// The encoded HTTP request, kept for a retry.
    request: Vec<u8>,
    /// The MCP method, for the retry rules (None: not a lone request).
    mcp_method: Option<String>,
    /// The request ids it carries, for error answers.
    request_ids: Vec<Value>,
    conn: Option<usize>,
    reused: bool,
    retried: bool,
    written_any: bool,
    decoder: ResponseDecoder,
    sse: SseDecoder,
    head: Option<ResponseHead>,
    body: Vec<u8>,
    /// Bytes left after the response: the connection cannot be reused.
    leftover: bool,
    client: Option<ClientWait>,
    session: Option<(usize, u64)>,
    /// The router stream its requests are registered on.
    stream: Option<StreamId>,
    /// The response head was 200 and its messages flow into the router.
    streaming: bool,
    /// The last SSE event id and `retry:` hint the upstream gave, to continue
    /// the stream if it closes early.
    last_event_id: Option<String>,
    retry: Option<Duration>,
    /// An event with data arrived (a reconnect that brings none is empty).
    saw_data: bool,
    /// For a continuation: reconnects before it in a row that brought no event.
    empty_reconnects: u32,
}

/// What a new exchange needs to know.
pub(super) struct ExchangeSpec {
    pub purpose: Purpose,
    pub method: &'static str,
    pub body: Vec<u8>,
    pub mcp_method: Option<String>,
    pub request_ids: Vec<Value>,
    pub session: Option<usize>,
    pub stream: Option<StreamId>,
    /// The client request this answers (for its connection and forwarded headers).
    pub client: Option<(usize, ClientHeaders)>,
    /// Sent as `Last-Event-ID`, to continue an upstream stream.
    pub last_event_id: Option<String>,
}

/// What an exchange keeps of the client's request.
pub(super) struct ClientHeaders {
    pub keep_alive: bool,
    pub http11: bool,
    /// Headers passed on upstream, by name.
    pub forwarded: Vec<(String, String)>,
}

impl ClientHeaders {
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

impl Proxy {
    fn http(&mut self) -> Option<&mut HttpSide> {
        self.http.as_mut()
    }

    /// Starts an exchange: encodes its request and asks the pool for a
    /// connection (a dedicated one for a GET stream).
    pub(super) fn start_exchange(&mut self, spec: ExchangeSpec) -> Option<ExchangeRef> {
        let serial = self.serial();
        let session = spec
            .session
            .and_then(|key| self.sessions.get(key).map(|session| (key, session)));
        let mut headers: Vec<(String, String)> = Vec::new();
        if spec.method == "POST" {
            headers.push(("Content-Type".into(), "application/json".into()));
        }
        let dedicated = matches!(spec.purpose, Purpose::GetStream | Purpose::Continue);
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
            (None, Some((_, session))) => {
                if let Some(http) = session.http() {
                    headers.extend(http.forwarded.iter().cloned());
                }
            }
            (None, None) => {}
        }
        headers.extend(self.config.upstream_headers.iter().cloned());
        let session_ref = session.map(|(key, session)| (key, session.serial));
        if let (Some((_, client)), Some((key, _))) = (&spec.client, session_ref) {
            if let Some(http) = self.sessions.get_mut(key).and_then(Session::http_mut) {
                if http.forwarded != client.forwarded {
                    http.forwarded.clone_from(&client.forwarded);
                }
            }
        }
        let http = self.http.as_mut()?;
        let header_refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let mut request = Vec::with_capacity(spec.body.len() + 256);
        http_client::write_request(
            &mut request,
            spec.method,
            &http.url.target,
            &http.authority,
            &header_refs,
            &spec.body,
        );
        let client = spec.client.as_ref().map(|(key, client)| ClientWait {
            key: *key,
            serial: 0,
            keep_alive: client.keep_alive,
            http11: client.http11,
        });
        let entry = http.exchanges.vacant_entry();
        let key = entry.key();
        entry.insert(Exchange {
            serial,
            purpose: spec.purpose,
            request,
            mcp_method: spec.mcp_method,
            request_ids: spec.request_ids,
            conn: None,
            reused: false,
            retried: false,
            written_any: false,
            decoder: ResponseDecoder::new(MAX_UPSTREAM_HEAD_BYTES, spec.method == "HEAD"),
            sse: SseDecoder::new(MAX_UPSTREAM_BODY_BYTES),
            head: None,
            body: Vec::new(),
            leftover: false,
            client: None,
            session: session_ref,
            stream: spec.stream,
            streaming: false,
            last_event_id: None,
            retry: None,
            saw_data: false,
            empty_reconnects: 0,
        });
        let exchange = (key, serial);
        if let Some(mut wait) = client {
            if let Some(conn) = self.conns.get_mut(wait.key) {
                wait.serial = conn.serial;
                conn.state = ConnState::AwaitingUpstream {
                    exchange: key,
                    exchange_serial: serial,
                };
                conn.deadline = None;
                if let Some(exchange) = self.http().and_then(|h| h.exchanges.get_mut(key)) {
                    exchange.client = Some(wait);
                }
            }
        }
        let gated = match (spec.purpose, session_ref) {
            (Purpose::Messages { .. }, Some((session_key, _))) => self
                .sessions
                .get_mut(session_key)
                .and_then(Session::http_mut)
                .filter(|http| http.gate_until.is_some())
                .map(|http| http.gated.push(exchange))
                .is_some(),
            _ => false,
        };
        if gated {
            debug!(
                "upstream {} held until the session's upstream GET stream is open",
                spec.method
            );
        } else if dedicated {
            self.open_dedicated(exchange);
        } else {
            let now = self.now;
            let http = self.http.as_mut()?;
            let host = http.host.clone();
            http.pool.checkout(&host, exchange, now, &mut http.actions);
            self.run_pool_actions();
        }
        Some(exchange)
    }

    /// Opens a connection outside the pool for a long-lived stream.
    fn open_dedicated(&mut self, exchange: ExchangeRef) {
        let Some(http) = self.http.as_mut() else {
            return;
        };
        match TcpStream::connect(http.addr) {
            Ok(mut socket) => {
                let entry = http.conns.vacant_entry();
                let key = entry.key();
                if self
                    .poll
                    .registry()
                    .register(
                        &mut socket,
                        Source::Upstream(key).token(),
                        Interest::READABLE | Interest::WRITABLE,
                    )
                    .is_err()
                {
                    self.exchange_failed(exchange, "cannot register an upstream socket");
                    return;
                }
                let _ = socket.set_nodelay(true);
                entry.insert(UpConn {
                    socket,
                    state: UpState::Connecting {
                        exchange: Some(exchange),
                    },
                    pooled: false,
                    output: Vec::new(),
                    written: 0,
                    readable: false,
                    writable: false,
                });
                let host = http.host.clone();
                http.pool.stream_opened(&host);
                if let Some(entry) = http.exchanges.get_mut(exchange.0) {
                    entry.conn = Some(key);
                }
            }
            Err(error) => self.exchange_failed(
                exchange,
                &format!("cannot connect to the upstream: {error}"),
            ),
        }
    }

    /// Carries out what the pool asked for, until it asks for nothing more.
    pub(super) fn run_pool_actions(&mut self) {
        // In the order the pool asked; actions taken may ask for more.
        while let Some(batch) = self
            .http
            .as_mut()
            .filter(|http| !http.actions.is_empty())
            .map(|http| std::mem::take(&mut http.actions))
        {
            for action in batch {
                self.run_pool_action(action);
            }
        }
        self.arm_pool_timer();
    }

    fn run_pool_action(&mut self, action: PoolAction<ExchangeRef>) {
        {
            match action {
                PoolAction::Assign {
                    waiter,
                    conn,
                    reused,
                    peek,
                } => self.assign(waiter, conn, reused, peek),
                PoolAction::Connect { host } => self.connect_pooled(&host),
                PoolAction::Close { conn, cause } => {
                    debug!("upstream connection {conn} closed: {}", cause.name());
                    self.drop_up_conn(conn);
                }
                PoolAction::AbortConnect { conn } => {
                    debug!("upstream connection {conn}: connect timed out");
                    self.drop_up_conn(conn);
                }
                PoolAction::WaiterTimedOut { waiter } => {
                    self.exchange_gave_up(
                        waiter,
                        504,
                        "Gateway Timeout: no upstream connection became free in time",
                    );
                }
                PoolAction::WaitersFailed { host, waiters } => {
                    for waiter in waiters {
                        self.exchange_gave_up(
                            waiter,
                            502,
                            &format!("Bad Gateway: cannot connect to the upstream {host}"),
                        );
                    }
                }
            }
        }
    }

    fn arm_pool_timer(&mut self) {
        let Some(http) = self.http.as_mut() else {
            return;
        };
        let Some(next) = http.pool.next_deadline() else {
            return;
        };
        if http.timer.is_some_and(|armed| armed <= next) {
            return;
        }
        http.timer = Some(next);
        self.timers.schedule(next, Timer::Pool);
    }

    /// True when `deadline` is the armed pool timer's.
    pub(super) fn pool_timer_is(&self, deadline: Instant) -> bool {
        self.http
            .as_ref()
            .is_some_and(|http| http.timer == Some(deadline))
    }

    /// The pool's timer fired.
    pub(super) fn on_pool_timer(&mut self, deadline: Instant) {
        let now = self.now;
        let Some(http) = self.http.as_mut() else {
            return;
        };
        if http.timer != Some(deadline) {
            return;
        }
        http.timer = None;
        http.pool.expire(now, &mut http.actions);
        self.run_pool_actions();
    }

    fn connect_pooled(&mut self, host: &HostKey) {
        let now = self.now;
        let Some(http) = self.http.as_mut() else {
            return;
        };
        let socket = TcpStream::connect(http.addr).and_then(|mut socket| {
            let key = http.conns.vacant_entry().key();
            self.poll.registry().register(
                &mut socket,
                Source::Upstream(key).token(),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(socket)
        });
        match socket {
            Ok(socket) => {
                let _ = socket.set_nodelay(true);
                let key = http.conns.insert(UpConn {
                    socket,
                    state: UpState::Connecting { exchange: None },
                    pooled: true,
                    output: Vec::new(),
                    written: 0,
                    readable: false,
                    writable: false,
                });
                http.pool.connecting(host, key, now);
            }
            Err(error) => {
                warn!("cannot open a connection to the upstream {host}: {error}");
                http.pool.open_failed(host, &mut http.actions);
            }
        }
    }

    fn drop_up_conn(&mut self, key: usize) {
        let Some(http) = self.http.as_mut() else {
            return;
        };
        if !http.conns.contains(key) {
            return;
        }
        let mut conn = http.conns.remove(key);
        let _ = self.poll.registry().deregister(&mut conn.socket);
        if !conn.pooled {
            let host = http.host.clone();
            http.pool.stream_closed(&host);
        }
    }

    /// The pool gave `conn` to `exchange`.
    fn assign(&mut self, exchange: ExchangeRef, conn: usize, reused: bool, peek: bool) {
        let now = self.now;
        let Some(http) = self.http.as_mut() else {
            return;
        };
        let alive = http
            .exchanges
            .get(exchange.0)
            .is_some_and(|entry| entry.serial == exchange.1);
        if !alive {
            // Its request is gone: the connection goes straight back.
            http.pool.release(conn, true, now, &mut http.actions);
            return;
        }
        if peek {
            let verdict = http.conns.get(conn).map(|up| {
                let mut byte = [0u8; 1];
                match up.socket.peek(&mut byte) {
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => None,
                    Ok(0) => Some(EvictCause::PeerClosed),
                    Ok(_) => Some(EvictCause::UnexpectedData),
                    Err(_) => Some(EvictCause::Error),
                }
            });
            if let Some(Some(cause)) = verdict {
                debug!(
                    "upstream connection {conn} failed its peek: {}",
                    cause.name()
                );
                let host = http.host.clone();
                http.pool.evict(conn, cause, &mut http.actions);
                http.pool.checkout(&host, exchange, now, &mut http.actions);
                return;
            }
        }
        let Some(entry) = http.exchanges.get_mut(exchange.0) else {
            return;
        };
        let Some(up) = http.conns.get_mut(conn) else {
            return;
        };
        entry.conn = Some(conn);
        entry.reused = reused;
        up.state = UpState::Busy(exchange);
        up.output.clear();
        up.written = 0;
        up.output.extend_from_slice(&entry.request);
        up.writable = true;
        self.flush_up_conn(conn);
        // Whatever arrived meanwhile is read now: edges are not repeated.
        self.read_up_conn(conn);
    }

    /// A readiness event on an upstream connection.
    pub(super) fn on_upstream_event(&mut self, key: usize, event: &Event) {
        let Some(http) = self.http.as_mut() else {
            return;
        };
        let Some(up) = http.conns.get_mut(key) else {
            return;
        };
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            up.readable = true;
        }
        if event.is_writable() || event.is_write_closed() || event.is_error() {
            up.writable = true;
        }
        match up.state {
            UpState::Connecting { exchange } => self.finish_connect(key, exchange),
            UpState::Idle => {
                if up.readable {
                    self.idle_conn_event(key);
                }
            }
            UpState::Busy(_) => {
                self.flush_up_conn(key);
                self.read_up_conn(key);
            }
        }
    }

    fn finish_connect(&mut self, key: usize, exchange: Option<ExchangeRef>) {
        let now = self.now;
        let Some(http) = self.http.as_mut() else {
            return;
        };
        let Some(up) = http.conns.get_mut(key) else {
            return;
        };
        if !up.writable && !up.readable {
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
                http.pool.connected(key, now, &mut http.actions);
                self.run_pool_actions();
            }
            (Ok(true), Some(exchange)) => {
                let Some(entry) = http
                    .exchanges
                    .get(exchange.0)
                    .filter(|entry| entry.serial == exchange.1)
                else {
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
                let mut conn = http.conns.remove(key);
                let _ = self.poll.registry().deregister(&mut conn.socket);
                http.pool.connect_failed(key, &mut http.actions);
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
    fn idle_conn_event(&mut self, key: usize) {
        let Some(http) = self.http.as_mut() else {
            return;
        };
        let Some(up) = http.conns.get_mut(key) else {
            return;
        };
        let mut byte = [0u8; 1];
        let cause = match up.socket.peek(&mut byte) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                up.readable = false;
                return;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => return,
            Ok(0) => EvictCause::PeerClosed,
            Ok(_) => EvictCause::UnexpectedData,
            Err(_) => EvictCause::Error,
        };
        debug!("idle upstream connection {key} evicted: {}", cause.name());
        http.pool.evict(key, cause, &mut http.actions);
        self.run_pool_actions();
    }

    fn flush_up_conn(&mut self, key: usize) {
        let Some(http) = self.http.as_mut() else {
            return;
        };
        let Some(up) = http.conns.get_mut(key) else {
            return;
        };
        let UpState::Busy(exchange) = up.state else {
            return;
        };
        let mut failed = None;
        while up.written < up.output.len() && up.writable {
            match up.socket.write(&up.output[up.written..]) {
                Ok(0) => {
                    failed = Some(io::Error::from(io::ErrorKind::WriteZero));
                    break;
                }
                Ok(count) => {
                    up.written += count;
                    if let Some(entry) = http.exchanges.get_mut(exchange.0) {
                        entry.written_any = true;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => up.writable = false,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
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
    fn exchange_blocked(&self, exchange: &Exchange) -> bool {
        let (Some((session_key, _)), Some(stream)) = (exchange.session, exchange.stream) else {
            return false;
        };
        self.sessions
            .get(session_key)
            .and_then(|session| session.stream_conns.get(&stream))
            .and_then(|conn_key| self.conns.get(*conn_key))
            .is_some_and(|conn| conn.unwritten() > self.config.max_client_buffer)
    }

    /// Reads and decodes what an upstream connection has, until it would
    /// block, the response ends, or the client stream it feeds is full.
    fn read_up_conn(&mut self, key: usize) {
        let mut events = Vec::new();
        loop {
            let Some(http) = self.http.as_ref() else {
                return;
            };
            let Some(up) = http.conns.get(key) else {
                return;
            };
            let UpState::Busy(exchange) = up.state else {
                return;
            };
            if !up.readable {
                return;
            }
            let Some(entry) = http
                .exchanges
                .get(exchange.0)
                .filter(|entry| entry.serial == exchange.1)
            else {
                self.drop_up_conn(key);
                return;
            };
            if self.exchange_blocked(entry) {
                // Back-pressure: the upstream waits in its socket buffer.
                if let Some(http_session) = entry
                    .session
                    .and_then(|(session_key, _)| self.sessions.get_mut(session_key))
                    .and_then(Session::http_mut)
                {
                    if !http_session.paused.contains(&key) {
                        http_session.paused.push(key);
                    }
                }
                return;
            }
            let Some(http) = self.http.as_mut() else {
                return;
            };
            let Some(up) = http.conns.get_mut(key) else {
                return;
            };
            let Some(entry) = http.exchanges.get_mut(exchange.0) else {
                return;
            };
            events.clear();
            let outcome = match up.socket.read(&mut self.scratch) {
                Ok(0) => {
                    up.readable = false;
                    entry.decoder.eof(&mut events).map(|()| true)
                }
                Ok(count) => {
                    let bytes = &self.scratch[..count];
                    entry.decoder.decode(bytes, &mut events).map(|used| {
                        if used < count {
                            entry.leftover = true;
                        }
                        false
                    })
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    up.readable = false;
                    return;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    self.conn_broke(key, &format!("reading from the upstream failed: {error}"));
                    return;
                }
            };
            match outcome {
                Ok(at_eof) => {
                    for event in events.drain(..) {
                        self.on_response_event(exchange, event);
                    }
                    let still_busy = self.http.as_ref().is_some_and(|http| {
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
                        .http
                        .as_ref()
                        .and_then(|http| http.exchanges.get(exchange.0))
                        .is_some_and(|entry| entry.head.is_some());
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
    pub(super) fn resume_http_output(&mut self, session_key: usize) {
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
    fn conn_broke(&mut self, key: usize, why: &str) {
        let Some(http) = self.http.as_mut() else {
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
            http.pool.evict(key, EvictCause::Error, &mut http.actions);
            self.run_pool_actions();
        } else {
            self.drop_up_conn(key);
        }
        if let Some(exchange) = exchange {
            self.exchange_failed(exchange, why);
        }
    }

    /// Retries an exchange if allowed, or gives up on it.
    fn exchange_failed(&mut self, exchange: ExchangeRef, why: &str) {
        let now = self.now;
        let Some(http) = self.http.as_mut() else {
            return;
        };
        let Some(entry) = http
            .exchanges
            .get_mut(exchange.0)
            .filter(|entry| entry.serial == exchange.1)
        else {
            return;
        };
        entry.conn = None;
        let retry = !matches!(entry.purpose, Purpose::GetStream | Purpose::Continue)
            && upstream_retry::may_retry(
                entry.reused,
                entry.retried,
                entry.written_any,
                entry.decoder.started(),
                entry.mcp_method.as_deref(),
            );
        if retry {
            debug!("retrying an upstream request on a fresh connection: {why}");
            entry.retried = true;
            entry.reused = false;
            entry.written_any = false;
            entry.decoder = ResponseDecoder::new(MAX_UPSTREAM_HEAD_BYTES, false);
            entry.head = None;
            entry.body.clear();
            entry.leftover = false;
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
    fn exchange_gave_up(&mut self, exchange: ExchangeRef, status: u16, why: &str) {
        let Some(entry) = self.take_exchange(exchange) else {
            return;
        };
        if let Some(conn) = entry.conn {
            if let Some(http) = self.http.as_mut() {
                if http.conns.get(conn).is_some_and(|up| up.pooled) {
                    http.pool.evict(conn, EvictCause::Error, &mut http.actions);
                } else {
                    self.drop_up_conn(conn);
                }
            }
        }
        if let Some(http) = self.http.as_mut() {
            http.pool.cancel_waiter(exchange);
        }
        self.run_pool_actions();
        warn!("upstream exchange failed: {why}");
        let session_key = entry
            .session
            .filter(|(key, serial)| self.sessions.get(*key).is_some_and(|s| s.serial == *serial))
            .map(|(key, _)| key);
        match entry.purpose {
            Purpose::GetStream => {
                if let Some(http) = session_key
                    .and_then(|key| self.sessions.get_mut(key))
                    .and_then(Session::http_mut)
                {
                    http.get_exchange = None;
                }
                if let Some(session_key) = session_key {
                    self.release_gate(session_key);
                }
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
        if entry.streaming {
            if let (Some(session_key), Some(stream)) = (session_key, entry.stream) {
                self.fail_stream_requests(session_key, stream, why);
            }
            if entry.purpose == Purpose::Passthrough {
                if let Some(wait) = entry.client {
                    self.close_conn_if(wait.key, wait.serial);
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
                [only] => only.clone(),
                _ => Value::Null,
            };
            let reply = Reply::error(status, &id, jsonrpc::UPSTREAM_GONE, why);
            self.reply_to_waiting(wait, &reply);
        }
    }

    fn take_exchange(&mut self, exchange: ExchangeRef) -> Option<Exchange> {
        let http = self.http.as_mut()?;
        if http
            .exchanges
            .get(exchange.0)
            .is_none_or(|entry| entry.serial != exchange.1)
        {
            return None;
        }
        Some(http.exchanges.remove(exchange.0))
    }

    /// Answers a client connection that waits for an exchange, if it still does.
    fn reply_to_waiting(&mut self, wait: ClientWait, reply: &Reply) {
        let Some(conn) = self.conns.get_mut(wait.key) else {
            return;
        };
        if conn.serial != wait.serial || !matches!(conn.state, ConnState::AwaitingUpstream { .. }) {
            return;
        }
        conn.state = ConnState::Requests;
        self.reply(wait.key, reply, wait.keep_alive);
        self.process_list.push(wait.key);
    }

    fn close_conn_if(&mut self, key: usize, serial: u64) {
        if self
            .conns
            .get(key)
            .is_some_and(|conn| conn.serial == serial)
        {
            self.close_conn(key);
        }
    }

    fn on_response_event(&mut self, exchange: ExchangeRef, event: ResponseEvent) {
        match event {
            ResponseEvent::Head(head) => self.on_response_head(exchange, head),
            ResponseEvent::Body(bytes) => self.on_response_body(exchange, &bytes),
            ResponseEvent::End => self.on_response_end(exchange),
        }
    }

    fn on_response_head(&mut self, exchange: ExchangeRef, head: ResponseHead) {
        let Some(http) = self.http.as_mut() else {
            return;
        };
        let Some(entry) = http.exchanges.get_mut(exchange.0) else {
            return;
        };
        let status = head.status;
        let is_sse = head
            .header("content-type")
            .is_some_and(|value| value.to_ascii_lowercase().starts_with("text/event-stream"));
        let upstream_id = head.header(SESSION_HEADER).map(str::to_string);
        entry.head = Some(head);
        let session_key = entry
            .session
            .filter(|(key, serial)| self.sessions.get(*key).is_some_and(|s| s.serial == *serial))
            .map(|(key, _)| key);
        let purpose = entry.purpose;
        let client = entry.client;
        let stream = entry.stream;
        match purpose {
            Purpose::Initialize | Purpose::Messages { has_requests: true } if status == 200 => {
                entry.streaming = true;
                let _ = is_sse;
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
                if let Some(entry) = self.http().and_then(|h| h.exchanges.get_mut(exchange.0)) {
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
                if let Some(entry) = self.http().and_then(|h| h.exchanges.get_mut(exchange.0)) {
                    entry.client = None;
                }
            }
            Purpose::GetStream => {
                if status == 200 && is_sse {
                    debug!("the upstream opened a GET stream");
                    entry.streaming = true;
                } else {
                    debug!("the upstream refused a GET stream ({status})");
                    if let Some(http_session) = session_key
                        .and_then(|key| self.sessions.get_mut(key))
                        .and_then(Session::http_mut)
                    {
                        http_session.get_refused = true;
                    }
                }
                if let Some(session_key) = session_key {
                    self.release_gate(session_key);
                }
            }
            Purpose::Continue => {
                if status == 200 && is_sse {
                    entry.streaming = true;
                } else if let (Some(session_key), Some(stream)) = (session_key, stream) {
                    self.fail_stream_requests(
                        session_key,
                        stream,
                        &format!("the upstream refused to continue its answer stream ({status})"),
                    );
                }
            }
            Purpose::Passthrough => {
                entry.streaming = true;
                let Some(wait) = client.filter(|wait| self.client_waits(*wait, exchange)) else {
                    return;
                };
                let Some(head) = self
                    .http
                    .as_ref()
                    .and_then(|h| h.exchanges.get(exchange.0))
                    .and_then(|entry| entry.head.clone())
                else {
                    return;
                };
                let Some(conn) = self.conns.get_mut(wait.key) else {
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
                    exchange: exchange.0,
                    exchange_serial: exchange.1,
                    chunked: wait.http11,
                };
                if !wait.keep_alive {
                    conn.close_after_flush_when_idle();
                }
                self.mark_dirty(wait.key);
            }
            // Other statuses: the body is collected and relayed at its end.
            _ => {}
        }
    }

    fn client_waits(&self, wait: ClientWait, exchange: ExchangeRef) -> bool {
        self.conns.get(wait.key).is_some_and(|conn| {
            conn.serial == wait.serial
                && conn.state
                    == ConnState::AwaitingUpstream {
                        exchange: exchange.0,
                        exchange_serial: exchange.1,
                    }
        })
    }

    fn on_response_body(&mut self, exchange: ExchangeRef, bytes: &[u8]) {
        let Some(http) = self.http.as_mut() else {
            return;
        };
        let Some(entry) = http.exchanges.get_mut(exchange.0) else {
            return;
        };
        let is_sse = entry.head.as_ref().is_some_and(|head| {
            head.header("content-type")
                .is_some_and(|value| value.to_ascii_lowercase().starts_with("text/event-stream"))
        });
        if entry.purpose == Purpose::Passthrough {
            if let Some(wait) = entry.client {
                if let Some(conn) = self.conns.get_mut(wait.key) {
                    if let ConnState::Relaying { chunked, .. } = conn.state {
                        if chunked {
                            response::write_chunk(conn.output(), bytes);
                        } else {
                            conn.output().extend_from_slice(bytes);
                        }
                        self.mark_dirty(wait.key);
                    }
                }
            }
            return;
        }
        if entry.streaming && is_sse {
            let mut events = Vec::new();
            if entry.sse.feed(bytes, &mut events).is_err() {
                warn!("the upstream sent an SSE event over the size limit; skipped");
                entry.sse.finish();
            }
            let session_key = entry.session.map(|(key, _)| key);
            for event in &events {
                if let Some(id) = &event.id {
                    entry.last_event_id = Some(id.clone());
                }
                if let Some(retry) = event.retry {
                    entry.retry = Some(Duration::from_millis(retry));
                }
                entry.saw_data |= !event.data.is_empty();
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
    fn deliver_upstream_text(&mut self, session_key: usize, text: &[u8]) {
        let Ok(value) = serde_json::from_slice::<Value>(text) else {
            warn!("the upstream sent a message that is not JSON; skipped");
            return;
        };
        let messages = match value {
            Value::Array(items) => items,
            single => vec![single],
        };
        for message in messages {
            let Ok(kind) = jsonrpc::classify(&message) else {
                warn!("the upstream sent something that is not JSON-RPC; skipped");
                continue;
            };
            let raw = serde_json::to_vec(&message).unwrap_or_default();
            if self
                .sessions
                .get(session_key)
                .is_some_and(|session| session.core.is_live())
            {
                self.deliver_from_upstream(session_key, &message, kind, &raw);
            }
        }
    }

    fn on_response_end(&mut self, exchange: ExchangeRef) {
        let now = self.now;
        let Some(entry) = self.take_exchange(exchange) else {
            return;
        };
        // The connection first: it may serve the next waiter at once.
        if let Some(conn) = entry.conn {
            let reusable =
                entry.head.as_ref().is_some_and(|head| head.keep_alive) && !entry.leftover;
            if let Some(http) = self.http.as_mut() {
                match http.conns.get_mut(conn) {
                    Some(up) if up.pooled => {
                        up.state = UpState::Idle;
                        http.pool.release(conn, reusable, now, &mut http.actions);
                    }
                    Some(_) => self.drop_up_conn(conn),
                    None => {}
                }
            }
            self.run_pool_actions();
        }
        let session_key = entry
            .session
            .filter(|(key, serial)| self.sessions.get(*key).is_some_and(|s| s.serial == *serial))
            .map(|(key, _)| key);
        let status = entry.head.as_ref().map_or(502, |head| head.status);
        match entry.purpose {
            Purpose::Delete => {}
            Purpose::GetStream => {
                if let Some(http) = session_key
                    .and_then(|key| self.sessions.get_mut(key))
                    .and_then(Session::http_mut)
                {
                    http.get_exchange = None;
                }
                if let Some(session_key) = session_key {
                    self.get_stream_closed(session_key, &entry);
                }
            }
            Purpose::Passthrough => {
                if let Some(wait) = entry.client {
                    if let Some(conn) = self.conns.get_mut(wait.key) {
                        if conn.serial == wait.serial {
                            if let ConnState::Relaying { chunked, .. } = conn.state {
                                if chunked {
                                    response::write_last_chunk(conn.output());
                                }
                                conn.state = ConnState::Requests;
                                if conn.wants_close_when_idle() {
                                    conn.close_after_flush = true;
                                }
                                self.mark_dirty(wait.key);
                                self.process_list.push(wait.key);
                            } else {
                                self.reply_to_waiting(wait, &relayed_reply(status, &entry.body));
                            }
                        }
                    }
                }
            }
            Purpose::Continue => {
                if let (true, Some(session_key)) = (entry.streaming, session_key) {
                    self.answer_stream_closed(session_key, &entry, true);
                }
            }
            Purpose::Initialize | Purpose::Messages { .. } => {
                if entry.streaming {
                    let is_sse = entry.head.as_ref().is_some_and(|head| {
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
    fn answer_stream_closed(&mut self, session_key: usize, entry: &Exchange, is_sse: bool) {
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
        let empty_reconnects = match (entry.purpose, entry.saw_data) {
            (Purpose::Continue, false) => entry.empty_reconnects + 1,
            _ => 0,
        };
        let continuation = match &entry.last_event_id {
            Some(last_event_id)
                if is_sse
                    && empty_reconnects <= MAX_EMPTY_RECONNECTS
                    && self.run_state == RunState::Serving =>
            {
                Some(Continuation {
                    stream,
                    last_event_id: last_event_id.clone(),
                    at: now + retry_delay(entry.retry),
                    empty_reconnects,
                })
            }
            _ => None,
        };
        let Some(continuation) = continuation else {
            self.fail_stream_requests(
                session_key,
                stream,
                "the upstream ended its answer without answering this request",
            );
            return;
        };
        if let Some(session) = self.sessions.get_mut(session_key) {
            debug!(
                "session {}: the upstream closed answer stream {stream} with {unanswered} request(s) unanswered; continuing after {}",
                session.core.short_id(),
                continuation.last_event_id
            );
            if let Some(http) = session.http_mut() {
                http.continuations.push(continuation);
            }
        }
        self.arm_upstream_timer(session_key);
    }

    /// The upstream ended the session's GET stream: it is reopened after the
    /// server's `retry:` hint, from its last event id, while the session lives.
    fn get_stream_closed(&mut self, session_key: usize, entry: &Exchange) {
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
        if !live || draining || http.get_refused || entry.head.is_none() {
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
    pub(super) fn release_gate(&mut self, session_key: usize) {
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
    fn message_lost(&mut self, session_key: usize, why: &str) {
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
    fn arm_upstream_timer(&mut self, session_key: usize) {
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
    pub(super) fn on_upstream_timer(&mut self, key: usize, serial: u64, deadline: Instant) {
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
    fn start_continuation(&mut self, session_key: usize, continuation: Continuation) {
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
    pub(super) fn open_upstream_get(&mut self, session_key: usize) {
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
    pub(super) fn end_http_session(&mut self, session_key: usize) {
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
                if let Some(conn) = entry.conn {
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
    pub(super) fn client_left_exchange(&mut self, exchange: ExchangeRef, relaying: bool) {
        if relaying {
            // A relayed body has no use without its client.
            if let Some(entry) = self.take_exchange(exchange) {
                if let Some(conn) = entry.conn {
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
    pub(super) fn forward_http(
        &mut self,
        session_key: usize,
        origin: Origin<'_>,
        forward: Forward,
    ) {
        let body = match (forward.whole_body, origin.request, &forward.messages[..]) {
            (true, Some(request), [_]) => request.body.clone(),
            (_, _, [(message, _)]) => serde_json::to_vec(message).unwrap_or_default(),
            (_, _, many) => serde_json::to_vec(&many.iter().map(|(m, _)| m).collect::<Vec<_>>())
                .unwrap_or_default(),
        };
        let purpose = match (forward.initialize, forward.stream) {
            (true, _) => Purpose::Initialize,
            (false, Some(_)) => Purpose::Messages { has_requests: true },
            (false, None) => Purpose::Messages {
                has_requests: false,
            },
        };
        let request_ids = forward
            .messages
            .iter()
            .filter(|(_, kind)| *kind == Kind::Request)
            .filter_map(|(message, _)| message.get("id").cloned())
            .collect();
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
            mcp_method: lone_request_method(&forward.messages),
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
    pub(super) fn passthrough(&mut self, key: usize, request: &Request) -> bool {
        if self.http.is_none() {
            return false;
        }
        let mut client = ClientHeaders::of(request, &self.config.forward_headers);
        client.forwarded.extend(passthrough_headers(request));
        let mcp_method = serde_json::from_slice::<Value>(&request.body)
            .ok()
            .and_then(|message| jsonrpc::method(&message).map(str::to_string));
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
    pub(super) fn log_pool_summary(&self) {
        if let Some(http) = self.http.as_ref() {
            info!("upstream pool: {}", http.pool.summary());
        }
    }

    /// Gives up on every exchange still in flight (the shutdown's last step).
    pub(super) fn abandon_exchanges(&mut self) {
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
    pub(super) fn exchanges_in_flight(&self) -> bool {
        self.http
            .as_ref()
            .is_some_and(|http| !http.exchanges.is_empty())
    }
}

/// How long to wait before reconnecting a stream the upstream closed.
fn retry_delay(hint: Option<Duration>) -> Duration {
    hint.map_or(DEFAULT_UPSTREAM_RETRY, |hint| hint.min(MAX_UPSTREAM_RETRY))
}

/// The client's answer when an upstream answered with something else than a
/// stream: its status, and its body when it is JSON-RPC.
fn relayed_reply(status: u16, body: &[u8]) -> Reply {
    let json = serde_json::from_slice::<Value>(body).is_ok();
    match (status, json) {
        (200 | 202, _) => Reply::empty(202),
        (_, true) => Reply {
            status,
            body: body.to_vec(),
            headers: Vec::new(),
        },
        _ => Reply::error(
            if status >= 400 { status } else { 502 },
            &Value::Null,
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

/// The MCP method of a lone request, for the retry rules.
fn lone_request_method(messages: &[(Value, Kind)]) -> Option<String> {
    match messages {
        [(message, Kind::Request)] => jsonrpc::method(message).map(str::to_string),
        _ => None,
    }
}
