//! The legacy HTTP+SSE transport (2024-11-05): a session's GET stream on a
//! connection of its own (registered as its session's token with
//! [`STREAM_BIT`] set), its `endpoint` event, and its `message` events
//! routed to the request in flight. The POSTs themselves go through the
//! driver's usual request path (see `Session::queue_post`).

use std::io::Write;
use std::net::TcpStream as StdTcpStream;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Token};

use crate::answer::{judge, snippet};
use crate::config::{parse_url, Config};
use crate::driver::{Driver, Phase};
use crate::session::{Body, Session, Step};

/// Set in the token of a session's stream connection.
pub const STREAM_BIT: usize = 1 << (usize::BITS - 1);

/// Where an `endpoint` event's URI points: the address to connect to when
/// it is another authority than `--url`'s, the Host header and the path.
pub fn resolve_endpoint(
    config: &Config,
    uri: &str,
) -> Result<(Option<std::net::SocketAddr>, String, String), String> {
    let uri = uri.trim();
    if uri.is_empty() {
        return Err("empty endpoint event".into());
    }
    if uri.starts_with("http://") {
        let (addr, host, path) = parse_url(uri)?;
        let addr = (addr != config.addr).then_some(addr);
        return Ok((addr, host, path));
    }
    if uri.contains("://") {
        return Err(format!("endpoint {uri:?}: only http:// is supported"));
    }
    if let Some(rest) = uri.strip_prefix("//") {
        return resolve_endpoint(config, &format!("http://{rest}"));
    }
    let base = config.path.split(['?', '#']).next().unwrap_or("/");
    let path = if uri.starts_with('/') {
        uri.to_string()
    } else if uri.starts_with('?') {
        format!("{base}{uri}")
    } else {
        // Relative to the SSE path's directory.
        let dir = &base[..base.rfind('/').map_or(0, |at| at + 1)];
        format!("{}{uri}", if dir.is_empty() { "/" } else { dir })
    };
    Ok((None, config.host.clone(), path))
}

impl Session {
    /// Takes the next complete SSE event out of `body`: its name in
    /// `event`, its data in `data` (comments and other fields skipped).
    /// False when no event is complete yet; what was read stays for later.
    pub fn next_event(&mut self) -> bool {
        let mut at = 0;
        let mut found = false;
        while let Some(offset) = self.body[at..].iter().position(|&b| b == b'\n') {
            let mut line = &self.body[at..at + offset];
            at += offset + 1;
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            if line.is_empty() {
                if self.has_data || !self.event.is_empty() {
                    found = true;
                    break;
                }
                continue;
            }
            let (field, value) = match line.iter().position(|&b| b == b':') {
                Some(0) => continue, // a comment (heartbeats)
                Some(colon) => {
                    let value = &line[colon + 1..];
                    (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (line, &b""[..]),
            };
            match field {
                b"event" => {
                    self.event.clear();
                    self.event.extend_from_slice(value);
                }
                b"data" => {
                    if self.has_data {
                        self.data.push(b'\n');
                    }
                    self.data.extend_from_slice(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        self.body.drain(..at);
        found
    }

    fn clear_event(&mut self) {
        self.event.clear();
        self.data.clear();
        self.has_data = false;
    }
}

impl Driver {
    pub fn close_stream(&mut self, at: usize) {
        if let Some(stream) = self.sessions[at].stream.as_mut() {
            if let Some(mut sock) = stream.sock.take() {
                let _ = self.poll.registry().deregister(&mut sock);
            }
            stream.start = 0;
            stream.end = 0;
        }
    }

    /// Opens the session's GET stream (step `Open` until its endpoint event).
    pub fn open_stream(&mut self, at: usize, now: Instant) {
        self.close_stream(at);
        let plan = std::sync::Arc::clone(&self.plan);
        let config = &plan.config;
        let session = &mut self.sessions[at];
        session.step = Step::Open;
        session.posted = true;
        session.post_addr = None;
        session.sent_at = now;
        session.deadline = now + config.timeout;
        self.in_flight += 1;
        let limit = config.timeout.min(Duration::from_secs(5));
        let connected = StdTcpStream::connect_timeout(&config.addr, limit).and_then(|stream| {
            stream.set_nodelay(true)?;
            stream.set_nonblocking(true)?;
            let mut sock = TcpStream::from_std(stream);
            self.poll.registry().register(
                &mut sock,
                Token(at | STREAM_BIT),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(sock)
        });
        let sock = match connected {
            Ok(sock) => sock,
            Err(error) => return self.fail(at, format!("connect: {error}"), now),
        };
        let session = &mut self.sessions[at];
        let index = session.index;
        let stream = session
            .stream
            .get_or_insert_with(|| Box::new(Session::new(index, now, false)));
        stream.sock = Some(sock);
        stream.start = 0;
        stream.end = 0;
        stream.body.clear();
        stream.clear_event();
        stream.resp.received = 0;
        stream.begin_response();
        stream.out.clear();
        stream.written = 0;
        let _ = write!(
            stream.out,
            "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n{}\r\n",
            config.path,
            config.host,
            super::session::extra_headers()
        );
        if let Err(error) = stream.flush() {
            self.fail(at, format!("write: {error}"), now);
        }
    }

    /// The POST in flight was answered (legacy): its status, and whether
    /// the connection closes after it.
    pub fn posted(&mut self, at: usize, status: u16, close: bool, now: Instant) {
        let session = &mut self.sessions[at];
        if status / 100 != 2 {
            let why = format!("HTTP {status}: {}", snippet(&session.body));
            return self.fail(at, why, now);
        }
        session.posted = true;
        if close {
            self.close(at);
        }
        self.settle(at, now);
    }

    /// Once the POST was answered and, for a request, its answer came on the
    /// stream: the session's next step.
    fn settle(&mut self, at: usize, now: Instant) {
        let session = &mut self.sessions[at];
        let step = session.step;
        if !session.posted || !matches!(step, Step::Init | Step::Initialized | Step::Call) {
            return;
        }
        if step != Step::Initialized {
            match session.reply.take() {
                None => return, // still to come on the stream
                Some(Err(why)) => return self.fail(at, why, now),
                Some(Ok(())) => {}
            }
        }
        self.proceed(at, step, now);
    }

    /// Readiness on a session's stream connection.
    pub fn on_stream_ready(&mut self, at: usize, closing: bool) {
        let now = Instant::now();
        let Some(stream) = self.sessions[at].stream.as_mut() else {
            return;
        };
        if stream.sock.is_none() {
            return;
        }
        if let Err(error) = stream.flush() {
            return self.stream_ended(at, format!("stream write: {error}"), now);
        }
        let eof = match stream.fill(closing) {
            Ok(eof) => eof,
            Err(error) => return self.stream_ended(at, format!("stream read: {error}"), now),
        };
        let now = Instant::now();
        let stream = self.sessions[at].stream.as_mut().expect("stream");
        if stream.resp.body == Body::Head {
            if let Err(why) = stream.parse_head() {
                return self.stream_ended(at, why, now);
            }
            if stream.resp.body == Body::Head {
                if eof {
                    self.stream_ended(at, "stream closed before its head".into(), now);
                }
                return;
            }
            if stream.resp.status != 200 || !stream.resp.sse {
                let why = format!(
                    "GET stream: HTTP {}{}",
                    stream.resp.status,
                    if stream.resp.sse {
                        ""
                    } else {
                        ", not text/event-stream"
                    }
                );
                return self.stream_ended(at, why, now);
            }
        }
        let ended = match stream.take_body(eof) {
            Ok(complete) => complete || eof,
            Err(why) => return self.stream_ended(at, why, now),
        };
        while self.sessions[at]
            .stream
            .as_mut()
            .is_some_and(|stream| stream.sock.is_some() && stream.next_event())
        {
            self.on_event(at, now);
        }
        if ended
            && self.sessions[at]
                .stream
                .as_ref()
                .is_some_and(|s| s.sock.is_some())
        {
            self.stream_ended(at, "the SSE stream ended".into(), now);
        }
    }

    /// One event from the stream (in the stream's `event` and `data`).
    fn on_event(&mut self, at: usize, now: Instant) {
        let session = &mut self.sessions[at];
        let Some(stream) = session.stream.as_mut() else {
            return;
        };
        let kind = std::mem::take(&mut stream.event);
        match kind.as_slice() {
            b"endpoint" if session.step == Step::Open => {
                let uri = String::from_utf8_lossy(&stream.data).into_owned();
                stream.clear_event();
                match resolve_endpoint(&self.plan.config, &uri) {
                    Ok((addr, host, path)) => {
                        session.post_addr = addr;
                        session.post_host = host;
                        session.post_path = path;
                    }
                    Err(why) => return self.fail(at, why, now),
                }
                self.initialize(at, now);
            }
            b"" | b"message" if matches!(session.step, Step::Init | Step::Call) => {
                let verdict = judge(&stream.data, session.step, session.cur_id, &session.payload);
                stream.clear_event();
                session.take_verdict(verdict, now);
                if session.reply.is_some() {
                    self.settle(at, now);
                }
            }
            _ => stream.clear_event(),
        }
        if let Some(stream) = self.sessions[at].stream.as_mut() {
            stream.event = kind;
            stream.event.clear();
        }
    }

    /// POSTs `initialize` to the endpoint, on a fresh connection.
    fn initialize(&mut self, at: usize, now: Instant) {
        let session = &mut self.sessions[at];
        session.scratch.clear();
        session.scratch.extend_from_slice(
            br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"mcphop-loadgen","version":"0.1.0"}}}"#,
        );
        session.queue_post("", "");
        self.close(at);
        if let Err(error) = self.connect(at) {
            return self.fail(at, format!("connect: {error}"), now);
        }
        self.send(at, Step::Init, now);
    }

    /// The stream failed or ended: the session with it, unless it is over.
    fn stream_ended(&mut self, at: usize, why: String, now: Instant) {
        let step = self.sessions[at].step;
        if step == Step::Done || self.phase == Phase::Delete || step == Step::Down {
            self.close_stream(at);
            return;
        }
        self.fail(at, why, now);
    }
}
