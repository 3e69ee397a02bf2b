//! A thread's sessions on one mio poll ([`Driver`]): set-up windows, the
//! closed call loop, deadlines, reconnects after errors, holding idle
//! sessions and the final DELETEs, counted in a [`Tally`].

use std::io::{self, Write};
use std::net::TcpStream as StdTcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::answer::snippet;
use crate::config::Config;
use crate::legacy::STREAM_BIT;
use crate::session::{Advance, Session, Step};
use crate::{KEPT_NOTES, SWEEP_EVERY};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
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
pub struct Plan {
    pub config: Config,
    /// Measuring starts here (after the warm-up).
    pub measure_start: Instant,
    /// Duration mode: measuring ends here.
    pub measure_end: Instant,
    /// No thread runs past this.
    pub hard_end: Instant,
    /// --calls: calls claimed so far.
    pub tickets: AtomicU64,
}

/// A thread's figures.
#[derive(Default)]
pub struct Tally {
    pub calls: u64,
    /// Nanoseconds.
    pub latencies: Vec<u64>,
    pub setups: Vec<u64>,
    pub errors: u64,
    pub notes: Vec<String>,
    pub reinits: u64,
    pub reconnects: u64,
    /// Idle connections the server closed.
    pub dropped: u64,
    /// When the last counted call was answered.
    pub last_count: Option<Instant>,
}

impl Tally {
    pub fn merge(&mut self, other: Tally) {
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

pub struct Driver {
    pub poll: Poll,
    pub sessions: Vec<Session>,
    pub phase: Phase,
    /// Sessions being set up at once, at most.
    pub window: usize,
    pub in_setup: usize,
    pub in_flight: usize,
    pub down: usize,
    pub tally: Tally,
    pub plan: Arc<Plan>,
    pub next_sweep: Instant,
}

impl Driver {
    pub fn new(sessions: Vec<Session>, plan: Arc<Plan>, phase: Phase) -> io::Result<Driver> {
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
                Step::Open | Step::Init | Step::Initialized => {
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
            if let Some(sock) = session.stream.as_mut().and_then(|s| s.sock.as_mut()) {
                driver.poll.registry().register(
                    sock,
                    Token(at | STREAM_BIT),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
            }
        }
        Ok(driver)
    }

    /// Gives the sessions up, deregistered, for another driver.
    pub fn into_sessions(mut self) -> Vec<Session> {
        for session in &mut self.sessions {
            if let Some(sock) = session.sock.as_mut() {
                let _ = self.poll.registry().deregister(sock);
            }
            if let Some(sock) = session.stream.as_mut().and_then(|s| s.sock.as_mut()) {
                let _ = self.poll.registry().deregister(sock);
            }
        }
        self.sessions
    }

    pub fn note(&mut self, note: String) {
        if self.tally.notes.len() < KEPT_NOTES {
            self.tally.notes.push(note);
        }
    }

    pub fn close(&mut self, at: usize) {
        let session = &mut self.sessions[at];
        if let Some(mut sock) = session.sock.take() {
            let _ = self.poll.registry().deregister(&mut sock);
        }
        session.start = 0;
        session.end = 0;
        session.conn_requests = 0;
    }

    /// Opens a new connection for the session.
    pub fn connect(&mut self, at: usize) -> io::Result<()> {
        self.close(at);
        let limit = self.plan.config.timeout.min(Duration::from_secs(5));
        let addr = self.sessions[at].post_addr.unwrap_or(self.plan.config.addr);
        let stream = StdTcpStream::connect_timeout(&addr, limit)?;
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
    pub fn send(&mut self, at: usize, step: Step, now: Instant) {
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
        session.posted = false;
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
    pub fn start_session(&mut self, at: usize, now: Instant) {
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
        if session.legacy {
            // The GET stream first; initialize once it names the endpoint.
            self.close(at);
            self.open_stream(at, now);
            return;
        }
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
    pub fn start_due(&mut self, now: Instant) {
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
    pub fn fail(&mut self, at: usize, why: String, now: Instant) {
        let step = self.sessions[at].step;
        if step.in_flight() {
            self.in_flight -= 1;
        }
        if matches!(step, Step::Open | Step::Init | Step::Initialized) {
            self.in_setup -= 1;
        }
        self.close(at);
        self.close_stream(at);
        if step == Step::Delete || self.phase == Phase::Delete {
            // Ending sessions is best effort.
            self.sessions[at].step = Step::Done;
            return;
        }
        self.tally.errors += 1;
        let index = self.sessions[at].index;
        let what = match step {
            Step::Open => "GET stream",
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
    pub fn transport_fail(&mut self, at: usize, why: String, now: Instant) {
        let session = &self.sessions[at];
        let retry = session.awaits_post()
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

    pub fn stopping(&self, now: Instant) -> bool {
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
    pub fn next_request(&mut self, at: usize, now: Instant) {
        match self.phase {
            Phase::Setup | Phase::Hold => {}
            Phase::Delete => self.send_delete(at, now),
            Phase::Run => self.send_call(at, now),
        }
    }

    pub fn send_call(&mut self, at: usize, now: Instant) {
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

    pub fn send_delete(&mut self, at: usize, now: Instant) {
        let plan = Arc::clone(&self.plan);
        let session = &mut self.sessions[at];
        if session.session_id.is_empty() || session.legacy {
            // Legacy: closing the stream ends the session.
            session.step = Step::Done;
            self.close(at);
            self.close_stream(at);
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
    pub fn complete(&mut self, at: usize, eof: bool, now: Instant) {
        let session = &mut self.sessions[at];
        let status = session.resp.status;
        let close = session.resp.close || eof;
        let step = session.step;
        session.conn_requests += 1;
        if session.legacy {
            self.posted(at, status, close, now);
            return;
        }
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
        self.proceed(at, step, now);
    }

    /// The request in flight (`step`) succeeded: the session's next step.
    pub fn proceed(&mut self, at: usize, step: Step, now: Instant) {
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
            Step::Down | Step::Open | Step::Ready | Step::Done => {}
        }
    }

    /// Readiness on a session's socket; `closing`: the event says the peer
    /// closed (or the socket failed).
    pub fn on_ready(&mut self, at: usize, closing: bool) {
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
            if !session.awaits_post() {
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
    pub fn sweep(&mut self, now: Instant) {
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
    pub fn pump(&mut self, events: &mut Events, timeout: Duration) {
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
            let token = event.token().0;
            if token & STREAM_BIT != 0 {
                self.on_stream_ready(token & !STREAM_BIT, closing);
            } else {
                self.on_ready(token, closing);
            }
        }
        self.sweep(Instant::now());
    }

    /// Sets up every session, `window` at a time, within `limit`.
    pub fn setup(&mut self, events: &mut Events, window: usize, limit: Instant) {
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
    pub fn run(&mut self, events: &mut Events) {
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
    pub fn hold(&mut self, events: &mut Events, until: Instant, stop: &AtomicBool) {
        self.phase = Phase::Hold;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            let left = until.saturating_duration_since(Instant::now());
            self.pump(events, left.min(Duration::from_millis(100)));
        }
    }

    /// Ends every session that has an id with DELETE, within `limit`.
    pub fn delete_all(&mut self, events: &mut Events, limit: Duration) {
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
            self.close_stream(at);
        }
    }
}
