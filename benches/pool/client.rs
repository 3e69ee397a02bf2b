//! The benchmark's clients: each thread drives its share of the sessions
//! over non-blocking sockets on one mio poll, each session on its own
//! keep-alive connection with one request in flight at a time, every answer
//! checked; and the CPU clocks the table reports.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use crate::common::POST_HEADERS;
use crate::upstream::find;
use crate::{DRAIN_LIMIT, KEPT_ERRORS, SETUP_LIMIT, SETUP_WINDOW};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the initialize answer.
    Initialize,
    /// Waiting for the 202 to notifications/initialized.
    Initialized,
    /// Set up, waiting for the start.
    Ready,
    /// A tools/call is in flight.
    Calling,
    /// Done calling.
    Finished,
    /// Its connection or set-up failed.
    Dead,
}

pub struct ClientSession {
    /// Global index, part of every payload.
    pub index: usize,
    pub socket: mio::net::TcpStream,
    pub phase: Phase,
    pub session_id: String,
    pub output: Vec<u8>,
    pub written: usize,
    pub input: Vec<u8>,
    pub next_id: u64,
}

/// One HTTP response as the client reads it.
pub struct Answer {
    pub status: u16,
    pub session_id: Option<String>,
    pub json_body: bool,
    pub body: Vec<u8>,
}

#[derive(Default)]
pub struct DriverOutcome {
    pub calls: u64,
    pub errors: u64,
    pub error_notes: Vec<String>,
    /// When the last call was answered.
    pub last_answer: Option<Instant>,
    /// This thread's CPU time from the start to the end of the calls.
    pub cpu: Duration,
}

impl DriverOutcome {
    pub fn error(&mut self, note: String) {
        self.errors += 1;
        if self.error_notes.len() < KEPT_ERRORS {
            self.error_notes.push(note);
        }
    }
}

pub fn payload(session: usize, id: u64) -> String {
    // 64 bytes or so, distinct per session and call, so a crossed answer shows.
    let mut text = format!("s{session}-c{id}-");
    while text.len() < 64 {
        text.push('x');
    }
    text
}

impl ClientSession {
    pub fn open(index: usize, port: u16) -> io::Result<ClientSession> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        Ok(ClientSession {
            index,
            socket: mio::net::TcpStream::from_std(stream),
            phase: Phase::Initialize,
            session_id: String::new(),
            output: Vec::with_capacity(512),
            written: 0,
            input: Vec::with_capacity(4096),
            next_id: 1,
        })
    }

    pub fn queue_post(&mut self, port: u16, body: &str) {
        self.output.clear();
        self.written = 0;
        let _ = write!(
            self.output,
            "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{POST_HEADERS}"
        );
        if !self.session_id.is_empty() {
            let _ = write!(self.output, "Mcp-Session-Id: {}\r\n", self.session_id);
        }
        let _ = write!(self.output, "Content-Length: {}\r\n\r\n{body}", body.len());
    }

    pub fn queue_initialize(&mut self, port: u16) {
        self.queue_post(
            port,
            r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"pool-bench","version":"0"}}}"#,
        );
    }

    pub fn queue_call(&mut self, port: u16) {
        let id = self.next_id;
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"{}"}}}}}}"#,
            payload(self.index, id)
        );
        self.queue_post(port, &body);
    }

    /// Writes what it can; Err when the connection failed.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.written < self.output.len() {
            match self.socket.write(&self.output[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(count) => self.written += count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Reads what there is; Err on EOF or failure.
    pub fn fill(&mut self, scratch: &mut [u8]) -> io::Result<()> {
        loop {
            match self.socket.read(scratch) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(count) => self.input.extend_from_slice(&scratch[..count]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// Takes one whole response from the input, if there is one.
    pub fn take_answer(&mut self) -> Result<Option<Answer>, String> {
        let Some((answer, used)) = parse_answer(&self.input)? else {
            return Ok(None);
        };
        self.input.drain(..used);
        Ok(Some(answer))
    }
}

/// Parses one response (Content-Length, chunked, or bodiless 202/204).
pub fn parse_answer(data: &[u8]) -> Result<Option<(Answer, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(data) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(format!("bad response head: {error}")),
    };
    let status = response.code.unwrap_or(0);
    let mut length = None;
    let mut chunked = false;
    let mut session_id = None;
    let mut json_body = false;
    for header in response.headers.iter() {
        let value = String::from_utf8_lossy(header.value);
        let value = value.trim();
        if header.name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad content-length {value:?}"))?,
            );
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if header.name.eq_ignore_ascii_case("mcp-session-id") {
            session_id = Some(value.to_string());
        } else if header.name.eq_ignore_ascii_case("content-type") {
            json_body = value.starts_with("application/json");
        }
    }
    let rest = &data[head_len..];
    let (body, used) = if chunked {
        match decode_chunked(rest)? {
            Some(found) => found,
            None => return Ok(None),
        }
    } else if let Some(length) = length {
        if rest.len() < length {
            return Ok(None);
        }
        (rest[..length].to_vec(), length)
    } else if status == 202 || status == 204 {
        (Vec::new(), 0)
    } else {
        return Err(format!("status {status} with a close-delimited body"));
    };
    Ok(Some((
        Answer {
            status,
            session_id,
            json_body,
            body,
        },
        head_len + used,
    )))
}

/// A whole chunked body and the bytes it took, or None while incomplete.
pub fn decode_chunked(data: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut at = 0;
    let mut body = Vec::new();
    loop {
        let Some(line_len) = find(&data[at..], b"\r\n") else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&data[at..at + line_len]);
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size line {line:?}"))?;
        at += line_len + 2;
        if size == 0 {
            // Trailer lines, then an empty line.
            loop {
                let Some(line_len) = find(&data[at..], b"\r\n") else {
                    return Ok(None);
                };
                at += line_len + 2;
                if line_len == 0 {
                    return Ok(Some((body, at)));
                }
            }
        }
        if data.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&data[at..at + size]);
        if &data[at + size..at + size + 2] != b"\r\n" {
            return Err("chunk not followed by CRLF".into());
        }
        at += size + 2;
    }
}

/// The last JSON-RPC message of an answer: a JSON body, or the last
/// non-empty `data:` of an SSE body.
pub fn last_message(answer: &Answer) -> Result<serde_json::Value, String> {
    let text = std::str::from_utf8(&answer.body).map_err(|_| "body is not UTF-8".to_string())?;
    let data = if answer.json_body {
        text
    } else {
        text.lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .map(|data| data.strip_prefix(' ').unwrap_or(data))
            .rfind(|data| !data.is_empty())
            .ok_or_else(|| format!("no message in the answer: {text:?}"))?
    };
    serde_json::from_str(data).map_err(|error| format!("answer is not JSON ({error}): {data:?}"))
}

/// Checks the answer to a session's initialize; its session id.
pub fn check_initialize(answer: &Answer) -> Result<String, String> {
    if answer.status != 200 {
        return Err(format!(
            "initialize answered {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        ));
    }
    let session = answer
        .session_id
        .clone()
        .ok_or("initialize answer without Mcp-Session-Id")?;
    let message = last_message(answer)?;
    if message["id"] != 0 || message.get("result").is_none() {
        return Err(format!("unexpected initialize answer {message}"));
    }
    Ok(session)
}

/// Checks a tools/call answer: the right id and the echoed payload.
pub fn check_call(answer: &Answer, session: usize, id: u64) -> Result<(), String> {
    if answer.status != 200 {
        return Err(format!(
            "tools/call answered {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        ));
    }
    let message = last_message(answer)?;
    if message["id"] != id || message["result"]["content"][0]["text"] != payload(session, id) {
        return Err(format!(
            "session {session} call {id}: unexpected answer {message}"
        ));
    }
    Ok(())
}

pub fn thread_cpu() -> Duration {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

pub fn process_cpu() -> Duration {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

pub fn clock(id: libc::clockid_t) -> Duration {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe {
        libc::clock_gettime(id, &mut time);
    }
    Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
}

/// CPU time (user + system) of another process, from /proc.
pub fn other_process_cpu(pid: u32) -> Duration {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after = stat[stat.rfind(')')? + 1..].to_string();
            let fields: Vec<&str> = after.split_whitespace().collect();
            // Fields 14 and 15 of stat; the state (field 3) is the first here.
            let user: u64 = fields.get(11)?.parse().ok()?;
            let system: u64 = fields.get(12)?.parse().ok()?;
            Some(user + system)
        })
        .unwrap_or(0);
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64(ticks as f64 / per_second)
}

/// CPU time the whole machine spent busy (every core), from /proc/stat.
pub fn machine_busy() -> Duration {
    let ticks: u64 = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| {
            let line = stat.lines().find(|line| line.starts_with("cpu "))?;
            let fields: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .map(|field| field.parse().unwrap_or(0))
                .collect();
            // user nice system idle iowait irq softirq steal (guest is in user).
            Some(
                fields.iter().take(8).sum::<u64>()
                    - fields.get(3).copied().unwrap_or(0)
                    - fields.get(4).copied().unwrap_or(0),
            )
        })
        .unwrap_or(0);
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64(ticks as f64 / per_second)
}

/// What a client thread needs to know.
pub struct DriverPlan {
    pub port: u16,
    /// The global indexes of its sessions.
    pub sessions: std::ops::Range<usize>,
    pub duration: Duration,
    /// Every driver and the main thread meet here once set up.
    pub barrier: Arc<Barrier>,
    pub start: Arc<OnceLock<Instant>>,
}

/// Sets up a thread's sessions, waits for the others, then calls in a closed
/// loop until the duration is over.
pub fn drive(plan: DriverPlan) -> DriverOutcome {
    let port = plan.port;
    let mut outcome = DriverOutcome::default();
    let mut poll = mio::Poll::new().expect("poll");
    let mut events = mio::Events::with_capacity(1024);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut sessions: Vec<ClientSession> = Vec::with_capacity(plan.sessions.len());
    let first = plan.sessions.start;
    let total = plan.sessions.len();

    // Set-up: initialize + initialized, a window of sessions at a time.
    let setup_deadline = Instant::now() + SETUP_LIMIT;
    let mut in_setup = 0usize;
    let mut settled = 0usize;
    let mut opened = 0usize;
    while settled < total && Instant::now() < setup_deadline {
        while in_setup < SETUP_WINDOW && opened < total {
            let index = first + opened;
            opened += 1;
            match ClientSession::open(index, port) {
                Ok(mut session) => {
                    poll.registry()
                        .register(
                            &mut session.socket,
                            mio::Token(sessions.len()),
                            mio::Interest::READABLE | mio::Interest::WRITABLE,
                        )
                        .expect("register a client socket");
                    session.queue_initialize(port);
                    sessions.push(session);
                    in_setup += 1;
                }
                Err(error) => {
                    outcome.error(format!("session {index}: connect failed: {error}"));
                    settled += 1;
                    continue;
                }
            }
            let last = sessions.len() - 1;
            if let Err(error) = sessions[last].flush() {
                outcome.error(format!("session {index}: write failed: {error}"));
                sessions[last].phase = Phase::Dead;
                in_setup -= 1;
                settled += 1;
            }
        }
        if poll
            .poll(&mut events, Some(Duration::from_millis(50)))
            .is_err()
        {
            continue;
        }
        for event in events.iter() {
            let key = event.token().0;
            let session = &mut sessions[key];
            if matches!(session.phase, Phase::Dead | Phase::Ready) {
                continue;
            }
            let mut failure = session.flush().err().map(|e| format!("write failed: {e}"));
            if failure.is_none() {
                failure = session
                    .fill(&mut scratch)
                    .err()
                    .map(|e| match session.input.len() {
                        0 => format!("connection closed: {e}"),
                        _ => format!("connection closed mid-answer: {e}"),
                    });
            }
            // A whole answer in the input counts even if the peer then closed.
            match session.take_answer() {
                Ok(Some(answer)) => {
                    failure = None;
                    match session.phase {
                        Phase::Initialize => match check_initialize(&answer) {
                            Ok(id) => {
                                session.session_id = id;
                                session.phase = Phase::Initialized;
                                session.queue_post(
                                    port,
                                    r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                                );
                                if let Err(error) = session.flush() {
                                    failure = Some(format!("write failed: {error}"));
                                }
                            }
                            Err(error) => failure = Some(error),
                        },
                        Phase::Initialized if answer.status == 202 => {
                            session.phase = Phase::Ready;
                            in_setup -= 1;
                            settled += 1;
                        }
                        _ => {
                            failure = Some(format!(
                                "notifications/initialized answered {}",
                                answer.status
                            ))
                        }
                    }
                }
                Ok(None) => {}
                Err(error) => failure = Some(error),
            }
            if let Some(failure) = failure {
                outcome.error(format!("session {} set-up: {failure}", session.index));
                session.phase = Phase::Dead;
                let _ = poll.registry().deregister(&mut session.socket);
                in_setup -= 1;
                settled += 1;
            }
        }
    }
    for session in &mut sessions {
        if !matches!(session.phase, Phase::Ready | Phase::Dead) {
            outcome.error(format!("session {}: set-up timed out", session.index));
            session.phase = Phase::Dead;
        }
    }
    for index in first + opened..first + total {
        outcome.error(format!("session {index}: never opened"));
    }

    // The calls, from a start shared by every thread.
    plan.barrier.wait();
    let start = *plan.start.get_or_init(Instant::now);
    let deadline = start + plan.duration;
    let cpu_before = thread_cpu();
    let mut calling = 0usize;
    for session in &mut sessions {
        if session.phase == Phase::Ready {
            session.phase = Phase::Calling;
            session.queue_call(port);
            calling += 1;
            if let Err(error) = session.flush() {
                outcome.error(format!("session {}: write failed: {error}", session.index));
                session.phase = Phase::Dead;
                calling -= 1;
            }
        }
    }
    let drain_deadline = deadline + DRAIN_LIMIT;
    while calling > 0 && Instant::now() < drain_deadline {
        if poll
            .poll(&mut events, Some(Duration::from_millis(50)))
            .is_err()
        {
            continue;
        }
        for event in events.iter() {
            let key = event.token().0;
            let session = &mut sessions[key];
            if session.phase != Phase::Calling {
                continue;
            }
            let mut failure = session.flush().err().map(|e| format!("write failed: {e}"));
            if failure.is_none() {
                failure = session
                    .fill(&mut scratch)
                    .err()
                    .map(|e| match session.input.len() {
                        0 => format!("connection closed: {e}"),
                        _ => format!("connection closed mid-answer: {e}"),
                    });
            }
            match session.take_answer() {
                Ok(Some(answer)) => {
                    failure = None;
                    let now = Instant::now();
                    let id = session.next_id;
                    session.next_id += 1;
                    match check_call(&answer, session.index, id) {
                        Ok(()) => {
                            outcome.calls += 1;
                            outcome.last_answer = Some(now);
                        }
                        Err(error) => outcome.error(error),
                    }
                    if !session.input.is_empty() {
                        failure = Some(format!(
                            "unexpected bytes after an answer: {:?}",
                            String::from_utf8_lossy(&session.input)
                        ));
                    } else if now < deadline {
                        session.queue_call(port);
                        if let Err(error) = session.flush() {
                            failure = Some(format!("write failed: {error}"));
                        }
                    } else {
                        session.phase = Phase::Finished;
                        calling -= 1;
                    }
                }
                Ok(None) => {}
                Err(error) => failure = Some(error),
            }
            if let Some(failure) = failure {
                outcome.error(format!("session {}: {failure}", session.index));
                session.phase = Phase::Dead;
                let _ = poll.registry().deregister(&mut session.socket);
                calling -= 1;
            }
        }
    }
    if calling > 0 {
        outcome.error(format!(
            "{calling} call(s) unanswered {DRAIN_LIMIT:?} after the end"
        ));
    }
    outcome.cpu = thread_cpu().saturating_sub(cpu_before);
    outcome
}
