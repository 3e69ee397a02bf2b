//! A load generator for any Streamable HTTP MCP endpoint (handshake era):
//! mcphop, another proxy, or a server such as `bench_server --http`.
//!
//! ```text
//! loadgen --url http://127.0.0.1:PORT/mcp --sessions N [--duration 5s | --calls N]
//!         [--payload BYTES] [--warmup 1s] [--mode call|idle] [--hold 30s] [--json]
//!         [--threads N] [--setup-concurrency N] [--timeout 10s] [--no-delete]
//! ```
//!
//! **call mode** (the default): N sessions, each on its own keep-alive TCP
//! connection, are set up one window at a time (`initialize` with protocol
//! version 2025-06-18, then `notifications/initialized`); then each calls the
//! `echo` tool in a closed loop (one call in flight per session) with a
//! `message` of `--payload` bytes, unique per session and call
//! (`s<session>-c<call>-xxxx…`). After `--warmup` (not counted) it measures
//! for `--duration`, or until `--calls` calls were made. Every answer is
//! checked: its JSON-RPC id, and the echoed text. A mismatch, an HTTP error,
//! a transport error or a request unanswered after `--timeout` counts as an
//! error, and the session reconnects and initializes again (counted too).
//! Answers may be JSON or SSE (`data:` lines, the response last), with a
//! Content-Length, chunked, or delimited by the connection's close; a
//! call's latency ends at its response, even when its SSE stream ends later.
//! At the end every session is ended with `DELETE` (unless `--no-delete`).
//!
//! **idle mode**: opens N sessions, prints `ready N` (flushed), holds their
//! connections open until `--hold` passes or stdin reaches EOF, ends them
//! with `DELETE` and reports the set-up times.
//!
//! The report: calls/s, call latency p50/p90/p99/max, session set-up time
//! (initialize + initialized round trips) p50/p99, errors, calls. A table
//! by default; with `--json` one JSON object on the last line of stdout, with
//! the keys `sessions, duration_s, calls, calls_per_s, p50_us, p90_us,
//! p99_us, max_us, setup_p50_us, setup_p99_us, errors` (and a few more).
//! The first few error descriptions go to stderr.
//!
//! No async runtime: the sessions are shared among `--threads` threads
//! (default: as many as the machine has cores, at most one per session),
//! each driving its sessions' non-blocking sockets on one mio poll, with
//! buffers reused from call to call.

use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

const USAGE: &str = "\
usage: loadgen --url http://HOST:PORT/PATH --sessions N [OPTIONS]

OPTIONS:
    --url URL                  the Streamable HTTP MCP endpoint (http only)
    --sessions N               concurrent sessions, one connection each [default: 1]
    --duration DUR             measure this long [default: 5s]
    --calls N                  measure N calls instead of a duration
    --payload BYTES            size of each echo message [default: 64]
    --warmup DUR               call this long before measuring [default: 1s]
    --mode call|idle           closed-loop calls, or open sessions and hold them [default: call]
    --hold DUR                 idle mode: hold the sessions this long, or
                               until stdin reaches EOF [default: 30s]
    --json                     one JSON object on the last line of stdout
    --threads N                client threads [default: cores, at most sessions]
    --setup-concurrency N      sessions being set up at once [default: 4]
    --timeout DUR              a request unanswered this long is an error [default: 10s]
    --setup-timeout DUR        time the initial set-up of every session may take [default: 60s]
    --max-time DUR             with --calls: stop after this long anyway [default: 300s]
    --no-delete                do not end the sessions with DELETE
    -h, --help                 print this help

DUR is a number with a unit: 500ms, 2s, 1m (a bare number means seconds).";

/// Error descriptions kept (and printed to stderr).
const KEPT_NOTES: usize = 8;
/// Longest response accepted (head and body).
const MAX_RESPONSE: usize = 64 * 1024 * 1024;
/// Time the final DELETEs may take.
const DELETE_LIMIT: Duration = Duration::from_secs(3);
/// How often requests are checked against their deadline.
const SWEEP_EVERY: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Call,
    Idle,
}

#[derive(Debug, Clone)]
struct Config {
    url: String,
    addr: SocketAddr,
    /// The Host header.
    host: String,
    path: String,
    sessions: usize,
    duration: Duration,
    calls: Option<u64>,
    payload: usize,
    warmup: Duration,
    mode: Mode,
    hold: Duration,
    json: bool,
    threads: usize,
    setup_concurrency: usize,
    timeout: Duration,
    setup_timeout: Duration,
    max_time: Duration,
    delete: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?}"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("bad duration unit in {text:?}")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("bad duration {text:?}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Splits `http://host[:port]/path` into its address, Host header and path.
fn parse_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs are supported: {url:?}"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("no host in {url:?}"));
    }
    let with_port = if authority.starts_with('[') {
        if authority.contains("]:") {
            authority.to_string()
        } else {
            format!("{authority}:80")
        }
    } else if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .min_by_key(|addr| addr.is_ipv6())
        .ok_or_else(|| format!("{authority} resolves to nothing"))?;
    Ok((addr, authority.to_string(), path.to_string()))
}

fn parse_args(args: &[String]) -> Result<Config, String> {
    let mut url = None;
    let mut sessions = 1usize;
    let mut duration = None;
    let mut calls = None;
    let mut payload = 64usize;
    let mut warmup = Duration::from_secs(1);
    let mut mode = Mode::Call;
    let mut hold = Duration::from_secs(30);
    let mut json = false;
    let mut threads = None;
    let mut setup_concurrency = 4usize;
    let mut timeout = Duration::from_secs(10);
    let mut setup_timeout = Duration::from_secs(60);
    let mut max_time = Duration::from_secs(300);
    let mut delete = true;
    let mut at = 0;
    while at < args.len() {
        let arg = args[at].as_str();
        at += 1;
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value.to_string())),
            _ => (arg, None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            if let Some(value) = inline.clone() {
                return Ok(value);
            }
            let value = args
                .get(at)
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))?;
            at += 1;
            Ok(value)
        };
        let number = |name: &str, text: String| -> Result<u64, String> {
            text.trim()
                .parse::<u64>()
                .map_err(|_| format!("{name} takes a whole number, not {text:?}"))
        };
        match name {
            "--url" => url = Some(value(name)?),
            "--sessions" => sessions = number(name, value(name)?)? as usize,
            "--duration" => duration = Some(parse_duration(&value(name)?)?),
            "--calls" => calls = Some(number(name, value(name)?)?),
            "--payload" => payload = number(name, value(name)?)? as usize,
            "--warmup" => warmup = parse_duration(&value(name)?)?,
            "--mode" => {
                mode = match value(name)?.as_str() {
                    "call" => Mode::Call,
                    "idle" => Mode::Idle,
                    other => return Err(format!("--mode is call or idle, not {other:?}")),
                }
            }
            "--hold" => hold = parse_duration(&value(name)?)?,
            "--json" => json = true,
            "--threads" => threads = Some(number(name, value(name)?)? as usize),
            "--setup-concurrency" => setup_concurrency = number(name, value(name)?)? as usize,
            "--timeout" => timeout = parse_duration(&value(name)?)?,
            "--setup-timeout" => setup_timeout = parse_duration(&value(name)?)?,
            "--max-time" => max_time = parse_duration(&value(name)?)?,
            "--no-delete" => delete = false,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let url = url.ok_or("--url is required")?;
    let (addr, host, path) = parse_url(&url)?;
    if sessions == 0 {
        return Err("--sessions must be at least 1".into());
    }
    if duration.is_some() && calls.is_some() {
        return Err("give --duration or --calls, not both".into());
    }
    if calls == Some(0) {
        return Err("--calls must be at least 1".into());
    }
    if payload > MAX_RESPONSE / 2 {
        return Err("--payload is too large".into());
    }
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    // Idle mode holds every session on the main thread.
    let threads = match mode {
        Mode::Call => threads.unwrap_or(cores).clamp(1, sessions),
        Mode::Idle => 1,
    };
    Ok(Config {
        url,
        addr,
        host,
        path,
        sessions,
        duration: duration.unwrap_or(Duration::from_secs(5)),
        calls,
        payload,
        warmup,
        mode,
        hold,
        json,
        threads,
        setup_concurrency: setup_concurrency.max(1),
        timeout: timeout.max(Duration::from_millis(1)),
        setup_timeout,
        max_time,
        delete,
    })
}

// ---------------------------------------------------------------------------
// Checking answers
// ---------------------------------------------------------------------------

/// A JSON-RPC id: ours are unsigned numbers; anything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RpcId {
    Number(u64),
    Other,
}

impl<'de> Deserialize<'de> for RpcId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl<'de> Visitor<'de> for IdVisitor {
            type Value = RpcId;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON-RPC id")
            }
            fn visit_u64<E>(self, v: u64) -> Result<RpcId, E> {
                Ok(RpcId::Number(v))
            }
            fn visit_i64<E>(self, _: i64) -> Result<RpcId, E> {
                Ok(RpcId::Other)
            }
            fn visit_f64<E>(self, v: f64) -> Result<RpcId, E> {
                // 3.0 is the id 3 to a JSON-RPC peer.
                if v >= 0.0 && v.fract() == 0.0 && v < 9.0e15 {
                    Ok(RpcId::Number(v as u64))
                } else {
                    Ok(RpcId::Other)
                }
            }
            fn visit_str<E>(self, _: &str) -> Result<RpcId, E> {
                Ok(RpcId::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<RpcId, E> {
                Ok(RpcId::Other)
            }
        }
        deserializer.deserialize_any(IdVisitor)
    }
}

/// A JSON-RPC message from the server, borrowed from the body.
#[derive(Deserialize)]
struct Reply<'a> {
    #[serde(default)]
    id: Option<RpcId>,
    #[serde(default)]
    method: Option<IgnoredAny>,
    #[serde(borrow, default)]
    result: Option<ReplyResult<'a>>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ReplyResult<'a> {
    #[serde(borrow, default, rename = "protocolVersion")]
    protocol_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<FirstText<'a>>,
    #[serde(default, rename = "isError")]
    is_error: Option<bool>,
}

/// The `text` of the first item of a `content` array (the rest is skipped,
/// so reading it allocates nothing).
struct FirstText<'a>(Option<Cow<'a, str>>);

#[derive(Deserialize)]
struct ContentItem<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for FirstText<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SeqVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for SeqVisitor<'a> {
            type Value = FirstText<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a content array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FirstText<'a>, A::Error> {
                let first: Option<ContentItem<'a>> = seq.next_element()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(FirstText(first.and_then(|item| item.text)))
            }
        }
        deserializer.deserialize_seq(SeqVisitor(std::marker::PhantomData))
    }
}

/// What one message from the server means for the request in flight.
enum Verdict {
    /// Not the response (a notification, a server request, an empty event).
    NotOurs,
    /// The expected response; for `initialize`, the negotiated version.
    Good(Option<String>),
    /// A wrong response.
    Bad(String),
}

/// Judges one JSON-RPC message against the request in flight.
fn judge(message: &[u8], step: Step, id: u64, payload: &[u8]) -> Verdict {
    if message.iter().all(u8::is_ascii_whitespace) {
        return Verdict::NotOurs;
    }
    let reply: Reply = match serde_json::from_slice(message) {
        Ok(reply) => reply,
        Err(error) => {
            return Verdict::Bad(format!(
                "not a JSON-RPC message ({error}): {}",
                snippet(message)
            ))
        }
    };
    if reply.method.is_some() {
        return Verdict::NotOurs;
    }
    if reply.id != Some(RpcId::Number(id)) {
        return Verdict::Bad(format!("response id is not {id}: {}", snippet(message)));
    }
    if let Some(error) = reply.error {
        return Verdict::Bad(format!("JSON-RPC error {error}"));
    }
    let Some(result) = reply.result else {
        return Verdict::Bad(format!("response without a result: {}", snippet(message)));
    };
    match step {
        Step::Init => Verdict::Good(result.protocol_version.map(Cow::into_owned)),
        Step::Call => {
            if result.is_error == Some(true) {
                return Verdict::Bad(format!("tool error: {}", snippet(message)));
            }
            let text = result.content.and_then(|content| content.0);
            if text.as_deref().map(str::as_bytes) == Some(payload) {
                Verdict::Good(None)
            } else {
                Verdict::Bad(format!(
                    "echo mismatch: sent {:?}, got {}",
                    String::from_utf8_lossy(payload),
                    snippet(message)
                ))
            }
        }
        _ => Verdict::Good(None),
    }
}

fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]);
    if bytes.len() > 300 {
        format!("{text}…")
    } else {
        text.into_owned()
    }
}

// ---------------------------------------------------------------------------
// One session on one connection
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// No session: initialize at `retry_at`.
    Down,
    /// `initialize` in flight.
    Init,
    /// `notifications/initialized` in flight.
    Initialized,
    /// Set up, nothing in flight.
    Ready,
    /// A `tools/call` in flight.
    Call,
    /// The `DELETE` in flight.
    Delete,
    /// Ended (or given up).
    Done,
}

impl Step {
    fn in_flight(self) -> bool {
        matches!(
            self,
            Step::Init | Step::Initialized | Step::Call | Step::Delete
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// This many bytes of chunk data still to come.
    Data(usize),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// Expecting trailer lines up to an empty one.
    Trailer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// Reading the head.
    Head,
    /// No body.
    Empty,
    /// Content-Length: this many bytes still to come.
    Length(usize),
    Chunked(Chunk),
    /// Until the connection closes.
    UntilClose,
}

/// The response being read.
#[derive(Debug, Clone, Copy)]
struct Response {
    body: Body,
    status: u16,
    sse: bool,
    /// The connection closes after this response.
    close: bool,
    /// Bytes received for it.
    received: usize,
}

enum Advance {
    /// More bytes are needed.
    Wait,
    /// The whole response is in.
    Complete,
    Fail(String),
}

struct Session {
    /// Global index, part of every payload.
    index: usize,
    sock: Option<TcpStream>,
    step: Step,
    /// Empty when the server gave none.
    session_id: String,
    protocol: String,
    /// Whether this session was ever set up (a new set-up is a re-initialize).
    was_ready: bool,
    /// Requests completed on the current connection.
    conn_requests: u64,
    /// Whether the request in flight was already retried on a new connection.
    retried: bool,
    out: Vec<u8>,
    written: usize,
    /// A request body being built.
    scratch: Vec<u8>,
    inp: Vec<u8>,
    start: usize,
    end: usize,
    resp: Response,
    body: Vec<u8>,
    /// The data of the SSE event being read.
    data: Vec<u8>,
    has_data: bool,
    /// The verdict on the response, once seen, and when.
    reply: Option<Result<(), String>>,
    reply_at: Instant,
    next_id: u64,
    cur_id: u64,
    payload: Vec<u8>,
    sent_at: Instant,
    setup_at: Instant,
    deadline: Instant,
    retry_at: Instant,
    failures: u32,
    /// Whether the call in flight counts (its completion decides).
    ticket: bool,
}

impl Session {
    fn new(index: usize, now: Instant) -> Session {
        Session {
            index,
            sock: None,
            step: Step::Down,
            session_id: String::new(),
            protocol: String::new(),
            was_ready: false,
            conn_requests: 0,
            retried: false,
            out: Vec::with_capacity(512),
            written: 0,
            scratch: Vec::with_capacity(256),
            inp: vec![0; 8192],
            start: 0,
            end: 0,
            resp: Response {
                body: Body::Head,
                status: 0,
                sse: false,
                close: false,
                received: 0,
            },
            body: Vec::with_capacity(1024),
            data: Vec::with_capacity(1024),
            has_data: false,
            reply: None,
            reply_at: now,
            next_id: 1,
            cur_id: 0,
            payload: Vec::new(),
            sent_at: now,
            setup_at: now,
            deadline: now,
            retry_at: now,
            failures: 0,
            ticket: false,
        }
    }

    /// Writes what it can of the request.
    fn flush(&mut self) -> io::Result<()> {
        let Some(sock) = self.sock.as_mut() else {
            return Ok(());
        };
        while self.written < self.out.len() {
            match sock.write(&self.out[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(count) => self.written += count,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads what there is; true at EOF. A short read means the socket is
    /// drained (the next arrival is a new edge), unless the peer already
    /// closed (`closing`): then it reads on to the EOF.
    fn fill(&mut self, closing: bool) -> io::Result<bool> {
        let Some(sock) = self.sock.as_mut() else {
            return Ok(false);
        };
        loop {
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            }
            if self.end == self.inp.len() {
                if self.start > 0 {
                    self.inp.copy_within(self.start..self.end, 0);
                    self.end -= self.start;
                    self.start = 0;
                } else if self.inp.len() >= MAX_RESPONSE {
                    return Err(io::Error::other("response too large"));
                } else {
                    let len = self.inp.len() * 2;
                    self.inp.resize(len, 0);
                }
            }
            let room = self.inp.len() - self.end;
            match sock.read(&mut self.inp[self.end..]) {
                Ok(0) => return Ok(true),
                Ok(count) => {
                    self.end += count;
                    self.resp.received += count;
                    if count < room && !closing {
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts a POST of `self.scratch`.
    fn queue_post(&mut self, host: &str, path: &str) {
        self.out.clear();
        self.written = 0;
        let _ = write!(
            self.out,
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\n"
        );
        self.session_headers();
        let _ = write!(self.out, "Content-Length: {}\r\n\r\n", self.scratch.len());
        self.out.extend_from_slice(&self.scratch);
    }

    fn session_headers(&mut self) {
        if !self.session_id.is_empty() {
            let _ = write!(self.out, "Mcp-Session-Id: {}\r\n", self.session_id);
        }
        if !self.protocol.is_empty() {
            let _ = write!(self.out, "MCP-Protocol-Version: {}\r\n", self.protocol);
        }
    }

    fn begin_response(&mut self) {
        self.resp = Response {
            body: Body::Head,
            status: 0,
            sse: false,
            close: false,
            received: self.end - self.start,
        };
        self.reply = None;
        self.body.clear();
        self.data.clear();
        self.has_data = false;
    }

    /// Records the verdict on one message.
    fn take_verdict(&mut self, verdict: Verdict, now: Instant) {
        match verdict {
            Verdict::NotOurs => {}
            Verdict::Good(protocol) => {
                if self.reply.is_some() {
                    self.reply = Some(Err("a second response to one request".into()));
                    return;
                }
                if let Some(protocol) = protocol {
                    self.protocol = protocol;
                }
                self.reply = Some(Ok(()));
                self.reply_at = now;
            }
            Verdict::Bad(why) => {
                if !matches!(self.reply, Some(Err(_))) {
                    self.reply = Some(Err(why));
                    self.reply_at = now;
                }
            }
        }
    }

    /// Reads complete SSE lines from `body`; an event's end judges its data.
    fn scan_sse(&mut self, now: Instant, at_end: bool) {
        let mut at = 0;
        while let Some(offset) = self.body[at..].iter().position(|&b| b == b'\n') {
            let mut line = &self.body[at..at + offset];
            at += offset + 1;
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            if line.is_empty() {
                if self.has_data {
                    let verdict = judge(&self.data, self.step, self.cur_id, &self.payload);
                    self.take_verdict(verdict, now);
                    self.data.clear();
                    self.has_data = false;
                }
            } else if let Some(value) = line.strip_prefix(b"data") {
                let value = match value {
                    [] => value,
                    [b':', b' ', rest @ ..] | [b':', rest @ ..] => rest,
                    // Another field whose name starts with "data".
                    _ => continue,
                };
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
        }
        self.body.drain(..at);
        if at_end && self.has_data {
            // An event cut short by the end of the body: judge it anyway.
            let verdict = judge(&self.data, self.step, self.cur_id, &self.payload);
            self.take_verdict(verdict, now);
            self.data.clear();
            self.has_data = false;
        }
    }

    /// Parses the response as far as the input goes; `eof`: the peer closed.
    fn advance(&mut self, eof: bool, now: Instant) -> Advance {
        if self.resp.body == Body::Head {
            if let Err(why) = self.parse_head() {
                return Advance::Fail(why);
            }
            if self.resp.body == Body::Head {
                return if eof {
                    Advance::Fail(if self.start == self.end {
                        "connection closed before a response".into()
                    } else {
                        "connection closed mid-head".into()
                    })
                } else {
                    Advance::Wait
                };
            }
        }
        let before = self.body.len();
        let complete = match self.resp.body {
            Body::Head => unreachable!(),
            Body::Empty => true,
            Body::Length(rest) => {
                let take = rest.min(self.end - self.start);
                self.body
                    .extend_from_slice(&self.inp[self.start..self.start + take]);
                self.start += take;
                self.resp.body = Body::Length(rest - take);
                rest == take
            }
            Body::Chunked(_) => match self.dechunk() {
                Ok(done) => done,
                Err(why) => return Advance::Fail(why),
            },
            Body::UntilClose => {
                self.body.extend_from_slice(&self.inp[self.start..self.end]);
                self.start = self.end;
                eof
            }
        };
        if self.body.len() > MAX_RESPONSE {
            return Advance::Fail("response body too large".into());
        }
        if self.resp.sse && (self.body.len() > before || complete) {
            self.scan_sse(now, complete);
        }
        if !complete {
            return if eof {
                Advance::Fail("connection closed mid-body".into())
            } else {
                Advance::Wait
            };
        }
        if !self.resp.sse && !self.body.is_empty() && self.resp.status / 100 == 2 {
            let verdict = judge(&self.body, self.step, self.cur_id, &self.payload);
            self.take_verdict(verdict, now);
        }
        Advance::Complete
    }

    /// Parses the head if it is all in; `resp.body` leaves `Head` then.
    fn parse_head(&mut self) -> Result<(), String> {
        loop {
            let data = &self.inp[self.start..self.end];
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut headers);
            let head_len = match response.parse(data) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => {
                    if data.len() > 256 * 1024 {
                        return Err("response head too large".into());
                    }
                    return Ok(());
                }
                Err(error) => {
                    return Err(format!("bad response head ({error}): {}", snippet(data)))
                }
            };
            let status = response.code.unwrap_or(0);
            if (100..200).contains(&status) {
                // 100 Continue and the like: the real head follows.
                self.start += head_len;
                continue;
            }
            let mut length = None;
            let mut chunked = false;
            let mut sse = false;
            let mut close = response.version == Some(0);
            for header in response.headers.iter() {
                let name = header.name;
                let value = header.value;
                if name.eq_ignore_ascii_case("content-length") {
                    length = std::str::from_utf8(value)
                        .ok()
                        .and_then(|text| text.trim().parse::<usize>().ok());
                    if length.is_none() {
                        return Err(format!("bad Content-Length {:?}", snippet(value)));
                    }
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value
                        .rsplit(|&b| b == b',')
                        .next()
                        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                } else if name.eq_ignore_ascii_case("content-type") {
                    sse =
                        value.len() >= 17 && value[..17].eq_ignore_ascii_case(b"text/event-stream");
                } else if name.eq_ignore_ascii_case("connection") {
                    for token in value.split(|&b| b == b',') {
                        let token = token.trim_ascii();
                        if token.eq_ignore_ascii_case(b"close") {
                            close = true;
                        } else if token.eq_ignore_ascii_case(b"keep-alive") {
                            close = false;
                        }
                    }
                } else if name.eq_ignore_ascii_case("mcp-session-id") && self.step == Step::Init {
                    self.session_id.clear();
                    self.session_id
                        .push_str(std::str::from_utf8(value).unwrap_or("").trim());
                }
            }
            self.start += head_len;
            self.resp.status = status;
            self.resp.sse = sse;
            self.resp.body = if chunked {
                Body::Chunked(Chunk::Size)
            } else if let Some(length) = length {
                if length > MAX_RESPONSE {
                    return Err("response body too large".into());
                }
                if length == 0 {
                    Body::Empty
                } else {
                    Body::Length(length)
                }
            } else if status == 204 || status == 304 || status == 202 {
                // 202 without a length: taken as empty, as clients commonly do.
                Body::Empty
            } else {
                close = true;
                Body::UntilClose
            };
            self.resp.close = close;
            return Ok(());
        }
    }

    /// Moves chunked body bytes from the input to `body`; true at its end.
    fn dechunk(&mut self) -> Result<bool, String> {
        loop {
            let Body::Chunked(state) = self.resp.body else {
                unreachable!()
            };
            let data = &self.inp[self.start..self.end];
            match state {
                Chunk::Size => {
                    let Some(eol) = data.iter().position(|&b| b == b'\n') else {
                        if data.len() > 1024 {
                            return Err("chunk-size line too long".into());
                        }
                        return Ok(false);
                    };
                    let line = data[..eol].trim_ascii();
                    let hex = line
                        .split(|&b| b == b';')
                        .next()
                        .unwrap_or(b"")
                        .trim_ascii();
                    let size = std::str::from_utf8(hex)
                        .ok()
                        .and_then(|hex| usize::from_str_radix(hex, 16).ok())
                        .ok_or_else(|| format!("bad chunk size {:?}", snippet(line)))?;
                    if size > MAX_RESPONSE {
                        return Err("chunk too large".into());
                    }
                    self.start += eol + 1;
                    self.resp.body = Body::Chunked(if size == 0 {
                        Chunk::Trailer
                    } else {
                        Chunk::Data(size)
                    });
                }
                Chunk::Data(rest) => {
                    if data.is_empty() {
                        return Ok(false);
                    }
                    let take = rest.min(data.len());
                    self.body.extend_from_slice(&data[..take]);
                    self.start += take;
                    self.resp.body = Body::Chunked(if take == rest {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(rest - take)
                    });
                }
                Chunk::DataEnd => match data {
                    [b'\r', b'\n', ..] => {
                        self.start += 2;
                        self.resp.body = Body::Chunked(Chunk::Size);
                    }
                    [b'\n', ..] => {
                        self.start += 1;
                        self.resp.body = Body::Chunked(Chunk::Size);
                    }
                    [] | [b'\r'] => return Ok(false),
                    _ => return Err("chunk data not followed by CRLF".into()),
                },
                Chunk::Trailer => {
                    let Some(eol) = data.iter().position(|&b| b == b'\n') else {
                        return Ok(false);
                    };
                    self.start += eol + 1;
                    if data[..eol].trim_ascii().is_empty() {
                        return Ok(true);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// A thread's sessions on one poll
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Setting up sessions, a window at a time.
    Setup,
    /// Calling in a closed loop.
    Run,
    /// Holding idle sessions.
    Hold,
    /// Ending sessions with DELETE.
    Delete,
}

/// What every thread shares.
struct Plan {
    config: Config,
    /// Measuring starts here (after the warm-up).
    measure_start: Instant,
    /// Duration mode: measuring ends here.
    measure_end: Instant,
    /// No thread runs past this.
    hard_end: Instant,
    /// --calls: calls claimed so far.
    tickets: AtomicU64,
}

/// A thread's figures.
#[derive(Default)]
struct Tally {
    calls: u64,
    /// Nanoseconds.
    latencies: Vec<u64>,
    setups: Vec<u64>,
    errors: u64,
    notes: Vec<String>,
    reinits: u64,
    reconnects: u64,
    /// Idle connections the server closed.
    dropped: u64,
    /// When the last counted call was answered.
    last_count: Option<Instant>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.calls += other.calls;
        self.latencies.extend(other.latencies);
        self.setups.extend(other.setups);
        self.errors += other.errors;
        for note in other.notes {
            if self.notes.len() < KEPT_NOTES {
                self.notes.push(note);
            }
        }
        self.reinits += other.reinits;
        self.reconnects += other.reconnects;
        self.dropped += other.dropped;
        self.last_count = self.last_count.max(other.last_count);
    }
}

struct Driver {
    poll: Poll,
    sessions: Vec<Session>,
    phase: Phase,
    /// Sessions being set up at once, at most.
    window: usize,
    in_setup: usize,
    in_flight: usize,
    down: usize,
    tally: Tally,
    plan: Arc<Plan>,
    next_sweep: Instant,
}

impl Driver {
    fn new(sessions: Vec<Session>, plan: Arc<Plan>, phase: Phase) -> io::Result<Driver> {
        let poll = Poll::new()?;
        let mut driver = Driver {
            poll,
            sessions,
            phase,
            window: usize::MAX,
            in_setup: 0,
            in_flight: 0,
            down: 0,
            tally: Tally::default(),
            plan,
            next_sweep: Instant::now(),
        };
        for (at, session) in driver.sessions.iter_mut().enumerate() {
            match session.step {
                Step::Down => driver.down += 1,
                Step::Init | Step::Initialized => {
                    driver.in_flight += 1;
                    driver.in_setup += 1;
                }
                step if step.in_flight() => driver.in_flight += 1,
                _ => {}
            }
            if let Some(sock) = session.sock.as_mut() {
                driver.poll.registry().register(
                    sock,
                    Token(at),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
            }
        }
        Ok(driver)
    }

    /// Gives the sessions up, deregistered, for another driver.
    fn into_sessions(mut self) -> Vec<Session> {
        for session in &mut self.sessions {
            if let Some(sock) = session.sock.as_mut() {
                let _ = self.poll.registry().deregister(sock);
            }
        }
        self.sessions
    }

    fn note(&mut self, note: String) {
        if self.tally.notes.len() < KEPT_NOTES {
            self.tally.notes.push(note);
        }
    }

    fn close(&mut self, at: usize) {
        let session = &mut self.sessions[at];
        if let Some(mut sock) = session.sock.take() {
            let _ = self.poll.registry().deregister(&mut sock);
        }
        session.start = 0;
        session.end = 0;
        session.conn_requests = 0;
    }

    /// Opens a new connection for the session.
    fn connect(&mut self, at: usize) -> io::Result<()> {
        self.close(at);
        let limit = self.plan.config.timeout.min(Duration::from_secs(5));
        let stream = StdTcpStream::connect_timeout(&self.plan.config.addr, limit)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        let mut sock = TcpStream::from_std(stream);
        self.poll.registry().register(
            &mut sock,
            Token(at),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.sessions[at].sock = Some(sock);
        Ok(())
    }

    /// Sends the request in `out` (connecting first if needed), as `step`.
    fn send(&mut self, at: usize, step: Step, now: Instant) {
        let was_in_flight = self.sessions[at].step.in_flight();
        if self.sessions[at].sock.is_none() {
            if let Err(error) = self.connect(at) {
                self.sessions[at].step = step;
                if !was_in_flight {
                    self.in_flight += 1;
                }
                self.fail(at, format!("connect: {error}"), now);
                return;
            }
            self.tally.reconnects += 1;
        }
        let session = &mut self.sessions[at];
        session.step = step;
        session.retried = false;
        session.sent_at = now;
        session.deadline = now + self.plan.config.timeout;
        session.begin_response();
        if !was_in_flight {
            self.in_flight += 1;
        }
        if let Err(error) = session.flush() {
            self.transport_fail(at, format!("write: {error}"), now);
        }
    }

    /// Starts (or restarts) a session: connect, initialize.
    fn start_session(&mut self, at: usize, now: Instant) {
        self.down -= 1;
        self.in_setup += 1;
        let config = &self.plan.config;
        let session = &mut self.sessions[at];
        if session.was_ready {
            self.tally.reinits += 1;
        }
        session.session_id.clear();
        session.protocol.clear();
        session.setup_at = now;
        session.cur_id = 0;
        session.scratch.clear();
        session.scratch.extend_from_slice(
            br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"mcphop-loadgen","version":"0.1.0"}}}"#,
        );
        session.queue_post(&config.host, &config.path);
        // A fresh connection for every set-up.
        self.close(at);
        if let Err(error) = self.connect(at) {
            self.sessions[at].step = Step::Init;
            self.in_flight += 1;
            self.fail(at, format!("connect: {error}"), now);
            return;
        }
        self.send(at, Step::Init, now);
    }

    /// Starts sessions that are due, within the set-up window.
    fn start_due(&mut self, now: Instant) {
        if self.down == 0 || self.in_setup >= self.window {
            return;
        }
        if self.phase == Phase::Run && self.stopping(now) {
            return;
        }
        if matches!(self.phase, Phase::Hold | Phase::Delete) {
            return;
        }
        for at in 0..self.sessions.len() {
            if self.in_setup >= self.window {
                break;
            }
            let session = &self.sessions[at];
            if session.step == Step::Down && session.retry_at <= now {
                self.start_session(at, now);
            }
        }
    }

    /// A failed request: counted, the connection closed, the session set up
    /// again later.
    fn fail(&mut self, at: usize, why: String, now: Instant) {
        let step = self.sessions[at].step;
        if step.in_flight() {
            self.in_flight -= 1;
        }
        if matches!(step, Step::Init | Step::Initialized) {
            self.in_setup -= 1;
        }
        self.close(at);
        if step == Step::Delete || self.phase == Phase::Delete {
            // Ending sessions is best effort.
            self.sessions[at].step = Step::Done;
            return;
        }
        self.tally.errors += 1;
        let index = self.sessions[at].index;
        let what = match step {
            Step::Init => "initialize",
            Step::Initialized => "notifications/initialized",
            Step::Call => "tools/call",
            _ => "idle connection",
        };
        self.note(format!("session {index}: {what}: {why}"));
        let session = &mut self.sessions[at];
        session.failures += 1;
        let backoff =
            Duration::from_millis(10u64 << session.failures.min(7)).min(Duration::from_secs(1));
        session.retry_at = if session.failures <= 1 {
            now
        } else {
            now + backoff
        };
        session.step = Step::Down;
        session.session_id.clear();
        self.down += 1;
    }

    /// A transport failure: a request on a reused connection that got no
    /// byte of answer is sent once more on a new connection (the server may
    /// have closed it while idle); anything else fails.
    fn transport_fail(&mut self, at: usize, why: String, now: Instant) {
        let session = &self.sessions[at];
        let retry = session.step.in_flight()
            && !session.retried
            && session.conn_requests > 0
            && session.resp.received == 0;
        if retry && self.connect(at).is_ok() {
            self.tally.reconnects += 1;
            let session = &mut self.sessions[at];
            session.retried = true;
            session.written = 0;
            session.begin_response();
            if session.flush().is_ok() {
                return;
            }
        }
        self.fail(at, why, now);
    }

    fn stopping(&self, now: Instant) -> bool {
        let plan = &self.plan;
        if now >= plan.hard_end {
            return true;
        }
        match plan.config.calls {
            Some(limit) => plan.tickets.load(Ordering::Relaxed) >= limit,
            None => now >= plan.measure_end,
        }
    }

    /// A set-up session (or one whose call just ended) gets its next request.
    fn next_request(&mut self, at: usize, now: Instant) {
        match self.phase {
            Phase::Setup | Phase::Hold => {}
            Phase::Delete => self.send_delete(at, now),
            Phase::Run => self.send_call(at, now),
        }
    }

    fn send_call(&mut self, at: usize, now: Instant) {
        let plan = Arc::clone(&self.plan);
        let mut ticket = false;
        if now >= plan.measure_start {
            if self.stopping(now) {
                return;
            }
            if let Some(limit) = plan.config.calls {
                if plan.tickets.fetch_add(1, Ordering::Relaxed) >= limit {
                    return;
                }
                ticket = true;
            }
        }
        let session = &mut self.sessions[at];
        session.ticket = ticket;
        let id = session.next_id;
        session.next_id += 1;
        session.cur_id = id;
        session.payload.clear();
        let _ = write!(session.payload, "s{}-c{}-", session.index, id);
        if session.payload.len() < plan.config.payload {
            session.payload.resize(plan.config.payload, b'x');
        }
        session.scratch.clear();
        let _ = write!(
            session.scratch,
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":""#
        );
        session.scratch.extend_from_slice(&session.payload);
        session.scratch.extend_from_slice(br#""}}}"#);
        session.queue_post(&plan.config.host, &plan.config.path);
        self.send(at, Step::Call, now);
    }

    fn send_delete(&mut self, at: usize, now: Instant) {
        let plan = Arc::clone(&self.plan);
        let session = &mut self.sessions[at];
        if session.session_id.is_empty() {
            session.step = Step::Done;
            self.close(at);
            return;
        }
        session.out.clear();
        session.written = 0;
        let _ = write!(
            session.out,
            "DELETE {} HTTP/1.1\r\nHost: {}\r\n",
            plan.config.path, plan.config.host
        );
        session.session_headers();
        session.out.extend_from_slice(b"\r\n");
        session.cur_id = 0;
        self.send(at, Step::Delete, now);
    }

    /// A whole response arrived for the request in flight.
    fn complete(&mut self, at: usize, eof: bool, now: Instant) {
        let session = &mut self.sessions[at];
        let status = session.resp.status;
        let close = session.resp.close || eof;
        let step = session.step;
        session.conn_requests += 1;
        let verdict = session.reply.take();
        let problem = match step {
            Step::Init | Step::Call if status != 200 => {
                Some(format!("HTTP {status}: {}", snippet(&session.body)))
            }
            Step::Init | Step::Call => match verdict {
                Some(Ok(())) => None,
                Some(Err(why)) => Some(why),
                None => Some("no response in the answer".into()),
            },
            Step::Initialized if status / 100 != 2 => {
                Some(format!("HTTP {status}: {}", snippet(&session.body)))
            }
            _ => None,
        };
        if let Some(why) = problem {
            self.fail(at, why, now);
            return;
        }
        if close {
            self.close(at);
        }
        let plan = Arc::clone(&self.plan);
        let session = &mut self.sessions[at];
        match step {
            Step::Init => {
                session.scratch.clear();
                session.scratch.extend_from_slice(
                    br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                );
                session.queue_post(&plan.config.host, &plan.config.path);
                self.send(at, Step::Initialized, now);
            }
            Step::Initialized => {
                self.in_flight -= 1;
                self.in_setup -= 1;
                session.step = Step::Ready;
                session.was_ready = true;
                session.failures = 0;
                let took = now.saturating_duration_since(session.setup_at);
                self.tally.setups.push(took.as_nanos() as u64);
                self.next_request(at, now);
            }
            Step::Call => {
                self.in_flight -= 1;
                session.step = Step::Ready;
                session.failures = 0;
                let counted = match plan.config.calls {
                    Some(_) => session.ticket,
                    None => {
                        session.reply_at >= plan.measure_start
                            && session.reply_at <= plan.measure_end
                    }
                };
                if counted {
                    self.tally.calls += 1;
                    let took = session.reply_at.saturating_duration_since(session.sent_at);
                    self.tally.latencies.push(took.as_nanos() as u64);
                    self.tally.last_count = Some(session.reply_at);
                }
                self.next_request(at, now);
            }
            Step::Delete => {
                self.in_flight -= 1;
                session.step = Step::Done;
                self.close(at);
            }
            Step::Down | Step::Ready | Step::Done => {}
        }
    }

    /// Readiness on a session's socket; `closing`: the event says the peer
    /// closed (or the socket failed).
    fn on_ready(&mut self, at: usize, closing: bool) {
        if self.sessions[at].sock.is_none() {
            return;
        }
        let now = Instant::now();
        if let Err(error) = self.sessions[at].flush() {
            self.transport_fail(at, format!("write: {error}"), now);
            return;
        }
        let eof = match self.sessions[at].fill(closing) {
            Ok(eof) => eof,
            Err(error) => {
                self.transport_fail(at, format!("read: {error}"), now);
                return;
            }
        };
        let now = Instant::now();
        loop {
            let session = &mut self.sessions[at];
            if !session.step.in_flight() {
                if session.start < session.end {
                    let extra = snippet(&session.inp[session.start..session.end]);
                    self.fail(at, format!("unexpected bytes: {extra}"), now);
                } else if eof {
                    // The server closed an idle connection: reconnect when needed.
                    self.close(at);
                    self.tally.dropped += 1;
                }
                return;
            }
            match session.advance(eof, now) {
                Advance::Wait => return,
                Advance::Complete => {
                    self.complete(at, eof, now);
                    if eof {
                        return;
                    }
                }
                Advance::Fail(why) => {
                    if eof && session.resp.received == 0 {
                        self.transport_fail(at, why, now);
                    } else {
                        self.fail(at, why, now);
                    }
                    return;
                }
            }
        }
    }

    /// Fails requests past their deadline.
    fn sweep(&mut self, now: Instant) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + SWEEP_EVERY;
        if self.in_flight == 0 {
            return;
        }
        for at in 0..self.sessions.len() {
            let session = &self.sessions[at];
            if session.step.in_flight() && session.deadline <= now {
                let took = now.saturating_duration_since(session.sent_at);
                self.fail(at, format!("no answer after {took:.1?}"), now);
            }
        }
    }

    /// One round: due set-ups, readiness, deadlines.
    fn pump(&mut self, events: &mut Events, timeout: Duration) {
        let now = Instant::now();
        self.start_due(now);
        let wait = if self.down > 0 {
            timeout.min(Duration::from_millis(5))
        } else if self.in_flight > 0 {
            timeout.min(SWEEP_EVERY)
        } else {
            timeout
        };
        if let Err(error) = self.poll.poll(events, Some(wait)) {
            if error.kind() != io::ErrorKind::Interrupted {
                self.note(format!("poll: {error}"));
                thread::sleep(Duration::from_millis(1));
            }
            return;
        }
        for event in events.iter() {
            let closing = event.is_read_closed() || event.is_error();
            self.on_ready(event.token().0, closing);
        }
        self.sweep(Instant::now());
    }

    /// Sets up every session, `window` at a time, within `limit`.
    fn setup(&mut self, events: &mut Events, window: usize, limit: Instant) {
        self.phase = Phase::Setup;
        self.window = window;
        while Instant::now() < limit {
            if self.sessions.iter().all(|s| s.step == Step::Ready) {
                break;
            }
            self.pump(events, Duration::from_millis(10));
        }
        self.window = usize::MAX;
    }

    /// Calls in a closed loop until the plan says stop, then lets the
    /// requests in flight finish.
    fn run(&mut self, events: &mut Events) {
        self.phase = Phase::Run;
        let now = Instant::now();
        for at in 0..self.sessions.len() {
            if self.sessions[at].step == Step::Ready {
                self.send_call(at, now);
            }
        }
        loop {
            let now = Instant::now();
            if now >= self.plan.hard_end || (self.in_flight == 0 && self.stopping(now)) {
                break;
            }
            let until_end = self.plan.measure_end.saturating_duration_since(now);
            self.pump(events, until_end.max(Duration::from_millis(1)));
        }
        let now = Instant::now();
        for at in 0..self.sessions.len() {
            if self.sessions[at].step.in_flight() {
                self.fail(at, "still unanswered at the end".into(), now);
            }
        }
    }

    /// Holds the sessions until `until` or `stop` is set.
    fn hold(&mut self, events: &mut Events, until: Instant, stop: &AtomicBool) {
        self.phase = Phase::Hold;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            let left = until.saturating_duration_since(Instant::now());
            self.pump(events, left.min(Duration::from_millis(100)));
        }
    }

    /// Ends every session that has an id with DELETE, within `limit`.
    fn delete_all(&mut self, events: &mut Events, limit: Duration) {
        self.phase = Phase::Delete;
        let now = Instant::now();
        for at in 0..self.sessions.len() {
            match self.sessions[at].step {
                Step::Ready => self.send_delete(at, now),
                Step::Down => {
                    self.sessions[at].step = Step::Done;
                    self.down -= 1;
                }
                _ => {}
            }
        }
        let deadline = now + limit;
        while self.in_flight > 0 && Instant::now() < deadline {
            self.pump(events, Duration::from_millis(10));
        }
        for at in 0..self.sessions.len() {
            self.close(at);
        }
    }
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

/// Nearest-rank percentile of sorted nanoseconds, in microseconds.
fn percentile_us(sorted: &[u64], fraction: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    let at = rank.clamp(1, sorted.len()) - 1;
    (sorted[at] + 500) / 1000
}

fn process_cpu() -> Duration {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe {
        libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut time);
    }
    Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
}

struct Report {
    config: Config,
    tally: Tally,
    duration: Duration,
    ready: usize,
    cpu_share: f64,
}

impl Report {
    fn json(&mut self) -> serde_json::Value {
        self.tally.latencies.sort_unstable();
        self.tally.setups.sort_unstable();
        let t = &self.tally;
        let seconds = self.duration.as_secs_f64();
        let rate = if seconds > 0.0 {
            t.calls as f64 / seconds
        } else {
            0.0
        };
        serde_json::json!({
            "sessions": self.config.sessions,
            "duration_s": (seconds * 1000.0).round() / 1000.0,
            "calls": t.calls,
            "calls_per_s": rate.round() as u64,
            "p50_us": percentile_us(&t.latencies, 0.50),
            "p90_us": percentile_us(&t.latencies, 0.90),
            "p99_us": percentile_us(&t.latencies, 0.99),
            "max_us": t.latencies.last().map_or(0, |&ns| (ns + 500) / 1000),
            "setup_p50_us": percentile_us(&t.setups, 0.50),
            "setup_p99_us": percentile_us(&t.setups, 0.99),
            "errors": t.errors,
            "mode": match self.config.mode { Mode::Call => "call", Mode::Idle => "idle" },
            "ready": self.ready,
            "payload": self.config.payload,
            "threads": self.config.threads,
            "reinits": t.reinits,
            "reconnects": t.reconnects,
            "dropped": t.dropped,
            "client_cpu_pct": (self.cpu_share * 1000.0).round() / 10.0,
        })
    }

    fn print_table(&mut self) {
        let json = self.json();
        let c = &self.config;
        let what = match c.mode {
            Mode::Call => match c.calls {
                Some(calls) => format!("call mode, {calls} calls after {:.1?} warm-up", c.warmup),
                None => format!(
                    "call mode, {:.1?} after {:.1?} warm-up",
                    c.duration, c.warmup
                ),
            },
            Mode::Idle => format!("idle mode, held up to {:.1?}", c.hold),
        };
        println!(
            "loadgen {}: {what}, {} sessions, {}-byte payload, {} thread(s)",
            c.url, c.sessions, c.payload, c.threads
        );
        let columns = [
            ("sessions", "sessions"),
            ("duration_s", "secs"),
            ("calls", "calls"),
            ("calls_per_s", "calls/s"),
            ("p50_us", "p50 us"),
            ("p90_us", "p90 us"),
            ("p99_us", "p99 us"),
            ("max_us", "max us"),
            ("setup_p50_us", "setup p50"),
            ("setup_p99_us", "setup p99"),
            ("errors", "errors"),
        ];
        let mut head = String::new();
        let mut row = String::new();
        for (key, title) in columns {
            let width = title.len().max(8);
            head.push_str(&format!("{title:>width$}  "));
            row.push_str(&format!("{:>width$}  ", json[key].to_string()));
        }
        println!("{}", head.trim_end());
        println!("{}", row.trim_end());
        println!(
            "ready {} of {}; re-initialized {}, reconnects {}, idle connections closed by the server {}; loadgen CPU {:.0}% of one core",
            self.ready,
            c.sessions,
            self.tally.reinits,
            self.tally.reconnects,
            self.tally.dropped,
            self.cpu_share * 100.0
        );
    }
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

/// Raises the soft open-file limit to the hard limit.
fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn run(config: Config) -> io::Result<Report> {
    let started = Instant::now();
    let cpu_before = process_cpu();
    let far = started + Duration::from_secs(365 * 24 * 3600);
    let setup_plan = Arc::new(Plan {
        config: config.clone(),
        measure_start: far,
        measure_end: far,
        hard_end: far,
        tickets: AtomicU64::new(0),
    });
    let now = Instant::now();
    let sessions: Vec<Session> = (0..config.sessions).map(|i| Session::new(i, now)).collect();
    let mut events = Events::with_capacity(1024);
    let mut setup = Driver::new(sessions, setup_plan, Phase::Setup)?;
    setup.setup(
        &mut events,
        config.setup_concurrency,
        Instant::now() + config.setup_timeout,
    );
    let ready = setup
        .sessions
        .iter()
        .filter(|s| s.step == Step::Ready)
        .count();

    if config.mode == Mode::Idle {
        {
            let mut stdout = io::stdout().lock();
            writeln!(stdout, "ready {ready}")?;
            stdout.flush()?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        thread::Builder::new().name("stdin".into()).spawn(move || {
            let mut sink = [0u8; 1024];
            let mut stdin = io::stdin();
            loop {
                match stdin.read(&mut sink) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            flag.store(true, Ordering::Relaxed);
        })?;
        let hold_start = Instant::now();
        setup.hold(&mut events, hold_start + config.hold, &stop);
        let held = hold_start.elapsed();
        if config.delete {
            setup.delete_all(&mut events, DELETE_LIMIT);
        }
        let cpu = process_cpu().saturating_sub(cpu_before);
        return Ok(Report {
            config,
            tally: setup.tally,
            duration: held,
            ready,
            cpu_share: cpu.as_secs_f64() / started.elapsed().as_secs_f64().max(1e-9),
        });
    }

    // Call mode: the set-up tally carries over; the sessions go to the threads.
    let mut tally = std::mem::take(&mut setup.tally);
    let sessions = setup.into_sessions();
    let start = Instant::now();
    let measure_start = start + config.warmup;
    let measure_end = match config.calls {
        Some(_) => far,
        None => measure_start + config.duration,
    };
    let hard_end = match config.calls {
        Some(_) => start + config.max_time,
        None => measure_end + config.timeout + Duration::from_secs(1),
    };
    let plan = Arc::new(Plan {
        config: config.clone(),
        measure_start,
        measure_end,
        hard_end,
        tickets: AtomicU64::new(0),
    });
    let cpu_run = process_cpu();
    let threads = config.threads;
    let mut groups: Vec<Vec<Session>> = (0..threads).map(|_| Vec::new()).collect();
    let total = sessions.len();
    for (at, session) in sessions.into_iter().enumerate() {
        groups[at * threads / total].push(session);
    }
    let workers: Vec<_> = groups
        .into_iter()
        .enumerate()
        .map(|(n, group)| {
            let plan = Arc::clone(&plan);
            let delete = config.delete;
            thread::Builder::new().name(format!("loadgen-{n}")).spawn(
                move || -> io::Result<Tally> {
                    let mut events = Events::with_capacity(1024);
                    let mut driver = Driver::new(group, plan, Phase::Run)?;
                    driver.run(&mut events);
                    if delete {
                        driver.delete_all(&mut events, DELETE_LIMIT);
                    }
                    Ok(driver.tally)
                },
            )
        })
        .collect::<io::Result<_>>()?;
    for worker in workers {
        match worker.join() {
            Ok(Ok(part)) => tally.merge(part),
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err(io::Error::other("a client thread panicked")),
        }
    }
    let run_wall = start.elapsed().as_secs_f64().max(1e-9);
    let cpu = process_cpu().saturating_sub(cpu_run);
    let duration = match config.calls {
        Some(_) => tally.last_count.map_or(Duration::ZERO, |last| {
            last.saturating_duration_since(measure_start)
        }),
        None => config.duration,
    };
    Ok(Report {
        config,
        tally,
        duration,
        ready,
        cpu_share: cpu.as_secs_f64() / run_wall,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match parse_args(&args) {
        Ok(config) => config,
        Err(why) if why.is_empty() => {
            println!("{USAGE}");
            return;
        }
        Err(why) => {
            eprintln!("loadgen: {why}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    raise_file_limit();
    let json = config.json;
    let mut report = match run(config) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("loadgen: {error}");
            std::process::exit(1);
        }
    };
    for note in &report.tally.notes {
        eprintln!("loadgen: error: {note}");
    }
    if report.tally.errors as usize > report.tally.notes.len() {
        eprintln!("loadgen: ... {} errors in all", report.tally.errors);
    }
    if json {
        println!("{}", report.json());
    } else {
        report.print_table();
    }
}
