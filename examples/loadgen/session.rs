//! One session on one keep-alive connection: its buffers, the request it
//! has in flight, and the HTTP/1.1 response parsing (Content-Length, chunked,
//! close-delimited; JSON or SSE). A legacy HTTP+SSE session also holds its
//! GET stream, itself a [`Session`] used for its connection and parsing only
//! (see `legacy`).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;

use crate::answer::{judge, snippet, Verdict};
use crate::MAX_RESPONSE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// No session: initialize at `retry_at`.
    Down,
    /// Legacy SSE: the GET stream is opening, its `endpoint` event awaited.
    Open,
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
    pub fn in_flight(self) -> bool {
        matches!(
            self,
            Step::Open | Step::Init | Step::Initialized | Step::Call | Step::Delete
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
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
pub enum Body {
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

/// `--header` lines (each ending in CRLF), sent with every request.
pub static EXTRA_HEADERS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

pub fn extra_headers() -> &'static str {
    EXTRA_HEADERS.get().map_or("", String::as_str)
}

/// The response being read.
#[derive(Debug, Clone, Copy)]
pub struct Response {
    pub body: Body,
    pub status: u16,
    pub sse: bool,
    /// The connection closes after this response.
    pub close: bool,
    /// Bytes received for it.
    pub received: usize,
}

pub enum Advance {
    /// More bytes are needed.
    Wait,
    /// The whole response is in.
    Complete,
    Fail(String),
}

pub struct Session {
    /// Global index, part of every payload.
    pub index: usize,
    pub sock: Option<TcpStream>,
    pub step: Step,
    /// Empty when the server gave none.
    pub session_id: String,
    pub protocol: String,
    /// Whether this session was ever set up (a new set-up is a re-initialize).
    pub was_ready: bool,
    /// Requests completed on the current connection.
    pub conn_requests: u64,
    /// Whether the request in flight was already retried on a new connection.
    pub retried: bool,
    pub out: Vec<u8>,
    pub written: usize,
    /// A request body being built.
    pub scratch: Vec<u8>,
    pub inp: Vec<u8>,
    pub start: usize,
    pub end: usize,
    pub resp: Response,
    pub body: Vec<u8>,
    /// The data of the SSE event being read.
    pub data: Vec<u8>,
    pub has_data: bool,
    /// The verdict on the response, once seen, and when.
    pub reply: Option<Result<(), String>>,
    pub reply_at: Instant,
    pub next_id: u64,
    pub cur_id: u64,
    pub payload: Vec<u8>,
    pub sent_at: Instant,
    pub setup_at: Instant,
    pub deadline: Instant,
    pub retry_at: Instant,
    pub failures: u32,
    /// Whether the call in flight counts (its completion decides).
    pub ticket: bool,
    /// Legacy HTTP+SSE: POSTs go to the endpoint, answers come on `stream`.
    pub legacy: bool,
    /// Legacy: the GET stream (its connection, buffers and parser).
    pub stream: Option<Box<Session>>,
    /// Legacy: the POST in flight was answered (202); the request may still
    /// await its answer on the stream.
    pub posted: bool,
    /// Legacy: where to POST (from the `endpoint` event); `post_addr` is
    /// set when the endpoint names another authority than `--url`.
    pub post_path: String,
    pub post_host: String,
    pub post_addr: Option<SocketAddr>,
    /// The stream: the name of the SSE event being read.
    pub event: Vec<u8>,
}

impl Session {
    pub fn new(index: usize, now: Instant, legacy: bool) -> Session {
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
            legacy,
            stream: None,
            posted: true,
            post_path: String::new(),
            post_host: String::new(),
            post_addr: None,
            event: Vec::new(),
        }
    }

    /// Whether the POST connection has a response to read: a request in
    /// flight, not already answered with 202 (legacy).
    pub fn awaits_post(&self) -> bool {
        self.step.in_flight() && !(self.legacy && self.posted)
    }

    /// Writes what it can of the request.
    pub fn flush(&mut self) -> io::Result<()> {
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
    pub fn fill(&mut self, closing: bool) -> io::Result<bool> {
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

    /// Starts a POST of `self.scratch` (legacy: to the endpoint, without
    /// the Streamable HTTP session headers).
    pub fn queue_post(&mut self, host: &str, path: &str) {
        self.out.clear();
        self.written = 0;
        let (host, path) = if self.legacy {
            (self.post_host.as_str(), self.post_path.as_str())
        } else {
            (host, path)
        };
        let _ = write!(
            self.out,
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\n"
        );
        if self.legacy {
            self.out.extend_from_slice(extra_headers().as_bytes());
        } else {
            self.session_headers();
        }
        let _ = write!(self.out, "Content-Length: {}\r\n\r\n", self.scratch.len());
        self.out.extend_from_slice(&self.scratch);
    }

    pub fn session_headers(&mut self) {
        self.out.extend_from_slice(extra_headers().as_bytes());
        if !self.session_id.is_empty() {
            let _ = write!(self.out, "Mcp-Session-Id: {}\r\n", self.session_id);
        }
        if !self.protocol.is_empty() {
            let _ = write!(self.out, "MCP-Protocol-Version: {}\r\n", self.protocol);
        }
    }

    pub fn begin_response(&mut self) {
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
    pub fn take_verdict(&mut self, verdict: Verdict, now: Instant) {
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
    pub fn scan_sse(&mut self, now: Instant, at_end: bool) {
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
    pub fn advance(&mut self, eof: bool, now: Instant) -> Advance {
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
        let complete = match self.take_body(eof) {
            Ok(complete) => complete,
            Err(why) => return Advance::Fail(why),
        };
        // Legacy: the POST's answer is a bare 202; the reply comes on the stream.
        if self.resp.sse && !self.legacy && (self.body.len() > before || complete) {
            self.scan_sse(now, complete);
        }
        if !complete {
            return if eof {
                Advance::Fail("connection closed mid-body".into())
            } else {
                Advance::Wait
            };
        }
        if !self.legacy && !self.resp.sse && !self.body.is_empty() && self.resp.status / 100 == 2 {
            let verdict = judge(&self.body, self.step, self.cur_id, &self.payload);
            self.take_verdict(verdict, now);
        }
        Advance::Complete
    }

    /// Moves the body bytes that are in from the input to `body`; true at
    /// the body's end.
    pub fn take_body(&mut self, eof: bool) -> Result<bool, String> {
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
            Body::Chunked(_) => self.dechunk()?,
            Body::UntilClose => {
                self.body.extend_from_slice(&self.inp[self.start..self.end]);
                self.start = self.end;
                eof
            }
        };
        if self.body.len() > MAX_RESPONSE {
            return Err("response body too large".into());
        }
        Ok(complete)
    }

    /// Parses the head if it is all in; `resp.body` leaves `Head` then.
    pub fn parse_head(&mut self) -> Result<(), String> {
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
    pub fn dechunk(&mut self) -> Result<bool, String> {
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
