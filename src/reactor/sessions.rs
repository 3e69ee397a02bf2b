//! The MCP session side of the loop: what each endpoint intent does to the
//! session table (create, forward, resume, cancel, delete), how messages from a
//! child reach their streams, and how sessions end. Routing decisions come from
//! the sans-IO router; this part applies them to connections and pipes.

use std::time::Instant;

use log::{debug, error, info, warn};
use serde_json::{json, Value};

use crate::child;
use crate::config::RETRY_AFTER_SECONDS;
use crate::http::request::Request;
use crate::jsonrpc::{self, IdKey, Kind};
use crate::mcp::endpoint::{self, Intent, Reply, PROTOCOL_VERSION_HEADER};
use crate::mcp::router::{
    Destination, Detached, Pending, RegisterError, ResumeError, RouterLimits, StreamId,
};
use crate::session::{ChildIo, HttpSession, Phase, Session, Upstream};
use crate::session_id;

use super::children::register_child_pipes;
use super::http_upstream::{
    lone_request_method, passthrough_headers, ClientHeaders, ExchangeSpec, Purpose,
};
use super::streams::StreamHead;
use super::{trim_ascii, Proxy, RunState, Timer};

/// The only protocol revision that allows JSON-RPC batches.
const BATCH_PROTOCOL_VERSION: &str = "2025-03-26";

impl Proxy {
    fn router_limits(&self) -> RouterLimits {
        RouterLimits {
            max_held_bytes: self.config.max_held_bytes,
            replay_max_events: self.config.replay_max_events,
            replay_max_bytes: self.config.replay_max_bytes,
            request_timeout: self.config.request_timeout,
            request_timeout_max: self.config.request_timeout_max,
            initialize_timeout: self.config.spawn_timeout,
        }
    }

    /// Acts on one complete request from a client connection.
    pub(super) fn handle_request(&mut self, key: usize, request: Request) {
        if self.run_state == RunState::Draining {
            let reply = Reply::error(
                503,
                &Value::Null,
                jsonrpc::SHUTTING_DOWN,
                "Service Unavailable: mcphop is shutting down",
            );
            self.reply(key, &reply, false);
            return;
        }
        let intent = endpoint::interpret(&request, &self.config.path, &self.policy);
        let session_id = match &intent {
            Intent::Reply(reply) => {
                self.reply(key, reply, request.keep_alive);
                return;
            }
            Intent::Stateless { refusal } => {
                if self.http.is_some() {
                    self.passthrough(key, &request);
                } else {
                    self.reply(key, refusal, request.keep_alive);
                }
                return;
            }
            Intent::Initialize { .. } => None,
            Intent::Post { session, .. }
            | Intent::Batch { session, .. }
            | Intent::OpenStream { session, .. }
            | Intent::Delete { session } => Some(session.as_str()),
        };
        let session_key = match session_id {
            None => None,
            Some(id) => match self.session_ids.get(id).copied() {
                Some(session_key) => Some(session_key),
                None => {
                    self.reply(key, &Reply::session_not_found(), request.keep_alive);
                    return;
                }
            },
        };
        if let Some(session_key) = session_key {
            if let Err(reply) = self.check_negotiated_version(&request, session_key) {
                self.reply(key, &reply, request.keep_alive);
                return;
            }
            if let Some(session) = self.sessions.get_mut(session_key) {
                session.last_activity = self.now;
            }
        }
        match (intent, session_key) {
            (Intent::Initialize { message }, _) => self.initialize(key, &request, message),
            (Intent::Post { message, kind, .. }, Some(session_key)) => {
                self.post(key, &request, session_key, message, kind)
            }
            (Intent::Batch { messages, .. }, Some(session_key)) => {
                self.post_batch(key, &request, session_key, messages)
            }
            (Intent::OpenStream { last_event_id, .. }, Some(session_key)) => match last_event_id {
                Some(last_event_id) => {
                    self.resume_stream(key, &request, session_key, &last_event_id)
                }
                None => self.open_get_stream(key, &request, session_key),
            },
            (Intent::Delete { .. }, Some(session_key)) => {
                self.end_session(session_key, "client sent DELETE");
                self.reply(key, &Reply::empty(200), request.keep_alive);
            }
            _ => {}
        }
    }

    /// A protocol version header is checked against what the session
    /// negotiated: a revision later than that one is refused. An earlier
    /// supported revision passes, because real clients (the conformance suite
    /// among them) send one, and every revision up to the negotiated one is
    /// understood by both ends. Unsupported values were refused already.
    fn check_negotiated_version(&self, request: &Request, session_key: usize) -> Result<(), Reply> {
        let Some(header) = request.header(PROTOCOL_VERSION_HEADER).map(str::trim) else {
            return Ok(());
        };
        match self
            .sessions
            .get(session_key)
            .and_then(|session| session.protocol_version.as_deref())
        {
            // Revisions are dates (YYYY-MM-DD), so they order as strings.
            Some(negotiated) if header > negotiated => Err(Reply::error(
                400,
                &Value::Null,
                jsonrpc::INVALID_REQUEST,
                &format!(
                    "Bad Request: MCP-Protocol-Version {header} is later than the version this session negotiated, {negotiated}"
                ),
            )),
            _ => Ok(()),
        }
    }

    fn initialize(&mut self, key: usize, request: &Request, message: Value) {
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        if self.session_ids.len() >= self.config.max_sessions {
            warn!(
                "refusing a new session: {} sessions open (--max-sessions)",
                self.session_ids.len()
            );
            let reply = Reply::error(
                503,
                &id,
                jsonrpc::UPSTREAM_GONE,
                "Service Unavailable: too many sessions; retry later",
            )
            .with_header("Retry-After", RETRY_AFTER_SECONDS.to_string());
            self.reply(key, &reply, request.keep_alive);
            return;
        }
        let session_id = match session_id::new_session_id() {
            Ok(session_id) => session_id,
            Err(error) => {
                error!("no randomness for a session id: {error}");
                let reply = Reply::error(500, &id, jsonrpc::INTERNAL_ERROR, "no session id");
                self.reply(key, &reply, request.keep_alive);
                return;
            }
        };
        if self.http.is_some() {
            self.initialize_http(key, request, message, session_id);
            return;
        }
        let spawned = match child::spawn(&self.config.command) {
            Ok(spawned) => spawned,
            Err(error) => {
                error!(
                    "cannot start upstream `{}`: {error}",
                    self.config.command.join(" ")
                );
                let reply = Reply::error(
                    502,
                    &id,
                    jsonrpc::UPSTREAM_GONE,
                    &format!("Bad Gateway: the upstream server could not be started: {error}"),
                );
                self.reply(key, &reply, request.keep_alive);
                return;
            }
        };
        let now = self.now;
        let serial = self.serial();
        let pid = spawned.pid;
        let mut child = ChildIo::new(spawned, self.config.max_line_bytes);
        let session_key = self.sessions.vacant_entry().key();
        if let Err(error) = register_child_pipes(self.poll.registry(), session_key, &mut child) {
            error!("cannot watch the pipes of child {pid}: {error}");
            child::signal_group(pid, libc::SIGKILL);
            let reply = Reply::error(502, &id, jsonrpc::UPSTREAM_GONE, "Bad Gateway");
            self.reply(key, &reply, request.keep_alive);
            return;
        }
        self.session_pids.insert(pid, session_key);
        let upstream = format!("pid {pid}");
        self.start_session(
            key,
            request,
            message,
            Session::new(
                serial,
                session_id,
                Upstream::Child(child),
                self.router_limits(),
                now,
            ),
            &upstream,
        );
    }

    /// Registers a new session (its id, its idle timer) and forwards its
    /// `initialize`, whose answer becomes the client's.
    fn start_session(
        &mut self,
        key: usize,
        request: &Request,
        message: Value,
        mut session: Session,
        upstream: &str,
    ) {
        let session_id = session.id.clone();
        let serial = session.serial;
        info!(
            "session {} started: {upstream}, {} live",
            session.short_id(),
            self.session_ids.len() + 1
        );
        session.initialize_id = IdKey::of_message(&message);
        session.initialize_request = session.initialize_id.clone();
        session.takes_server_requests = message
            .pointer("/params/capabilities")
            .and_then(Value::as_object)
            .is_some_and(|capabilities| {
                ["sampling", "elicitation", "roots"]
                    .iter()
                    .any(|name| capabilities.contains_key(*name))
            });
        let session_key = self.sessions.insert(session);
        self.session_ids.insert(session_id.clone(), session_key);
        self.timers.schedule(
            self.now + self.config.session_idle_timeout,
            Timer::SessionIdle {
                key: session_key,
                serial,
            },
        );
        self.forward_requests(
            key,
            request,
            session_key,
            &[(message, Kind::Request)],
            Some(&session_id),
        );
    }

    fn post(
        &mut self,
        key: usize,
        request: &Request,
        session_key: usize,
        message: Value,
        kind: Kind,
    ) {
        if let Err(reply) = self.check_stdin_room(session_key, &message) {
            self.reply(key, &reply, request.keep_alive);
            return;
        }
        if self.http.is_some() && kind != Kind::Request {
            // The client hears the upstream's own status for it.
            if kind == Kind::Response {
                if let Some(session) = self.sessions.get_mut(session_key) {
                    session.router.client_answered(&message);
                }
            } else if jsonrpc::method(&message) == Some("notifications/cancelled") {
                self.cancel_locally(session_key, &message);
            }
            self.forward_http(
                key,
                request,
                session_key,
                &[(message, kind)],
                None,
                Purpose::Messages {
                    has_requests: false,
                },
            );
            return;
        }
        match kind {
            Kind::Request => {
                self.forward_requests(key, request, session_key, &[(message, kind)], None)
            }
            Kind::Notification => {
                if jsonrpc::method(&message) == Some("notifications/cancelled") {
                    self.cancel_from_client(session_key, &request.body, &message);
                } else {
                    self.send_upstream(session_key, &request.body, &message);
                }
                self.reply(key, &Reply::empty(202), request.keep_alive);
            }
            Kind::Response => {
                if let Some(session) = self.sessions.get_mut(session_key) {
                    session.router.client_answered(&message);
                }
                self.send_upstream(session_key, &request.body, &message);
                self.reply(key, &Reply::empty(202), request.keep_alive);
            }
        }
    }

    /// A 2025-03-26 batch: every element goes to the child as its own line;
    /// the answers to its requests come back one event each on one stream.
    fn post_batch(
        &mut self,
        key: usize,
        request: &Request,
        session_key: usize,
        messages: Vec<(Value, Kind)>,
    ) {
        let version = self
            .sessions
            .get(session_key)
            .and_then(|session| session.protocol_version.clone());
        if version.as_deref() != Some(BATCH_PROTOCOL_VERSION) {
            let reply = Reply::error(
                400,
                &Value::Null,
                jsonrpc::INVALID_REQUEST,
                &format!(
                    "Invalid Request: JSON-RPC batches are allowed only in protocol {BATCH_PROTOCOL_VERSION}; this session uses {}",
                    version.as_deref().unwrap_or("an unknown version")
                ),
            );
            self.reply(key, &reply, request.keep_alive);
            return;
        }
        for (message, _) in &messages {
            if let Err(reply) = self.check_stdin_room(session_key, message) {
                self.reply(key, &reply, request.keep_alive);
                return;
            }
        }
        let (requests, others): (Vec<_>, Vec<_>) = messages
            .into_iter()
            .partition(|(_, kind)| *kind == Kind::Request);
        for (message, kind) in &others {
            if *kind == Kind::Response {
                if let Some(session) = self.sessions.get_mut(session_key) {
                    session.router.client_answered(message);
                }
            }
            if jsonrpc::method(message) == Some("notifications/cancelled") {
                self.cancel_from_client(session_key, b"", message);
            } else {
                self.send_upstream(session_key, b"", message);
            }
        }
        if requests.is_empty() {
            self.reply(key, &Reply::empty(202), request.keep_alive);
        } else {
            self.forward_requests(key, request, session_key, &requests, None);
        }
    }

    fn check_stdin_room(&self, session_key: usize, message: &Value) -> Result<(), Reply> {
        let full = self
            .sessions
            .get(session_key)
            .and_then(Session::child)
            .is_some_and(|child| child.stdin.unwritten() > self.config.max_child_stdin_buffer);
        if full {
            let id = message.get("id").cloned().unwrap_or(Value::Null);
            return Err(Reply::error(
                503,
                &id,
                jsonrpc::UPSTREAM_GONE,
                "Service Unavailable: the upstream server is not reading its input",
            )
            .with_header("Retry-After", "1"));
        }
        Ok(())
    }

    /// Registers requests on one new stream, opens it as the answer to this
    /// POST, and sends them to the child.
    fn forward_requests(
        &mut self,
        key: usize,
        request: &Request,
        session_key: usize,
        messages: &[(Value, Kind)],
        session_header: Option<&str>,
    ) {
        let now = self.now;
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        // Refuse the whole POST before anything reaches the child.
        let mut seen = Vec::with_capacity(messages.len());
        for (message, _) in messages {
            let problem = match IdKey::of_message(message) {
                None => Some(RegisterError::NoId),
                Some(id) if session.router.is_pending(&id) || seen.contains(&id) => {
                    Some(RegisterError::DuplicateId)
                }
                Some(id) => {
                    seen.push(id);
                    None
                }
            };
            if let Some(problem) = problem {
                let text = match problem {
                    RegisterError::DuplicateId => {
                        "Invalid Request: a request with this id is already in flight"
                    }
                    RegisterError::NoId => "Invalid Request: the id must be a string or an integer",
                };
                let id = message.get("id").cloned().unwrap_or(Value::Null);
                let reply = Reply::error(400, &id, jsonrpc::INVALID_REQUEST, text);
                self.reply(key, &reply, request.keep_alive);
                return;
            }
        }
        let stream = session.router.open_post_stream();
        if let [(message, _)] = messages {
            debug!(
                "session {}: {} {} on stream {stream}",
                session.short_id(),
                jsonrpc::method(message).unwrap_or("?"),
                message.get("id").unwrap_or(&Value::Null)
            );
        }
        for (message, _) in messages {
            // Checked above: registration cannot fail now.
            let _ = session.router.register_request(stream, message, now);
        }
        self.arm_request_timer(session_key);
        if self.http.is_some() {
            let purpose = if session_header.is_some() {
                Purpose::Initialize
            } else {
                Purpose::Messages { has_requests: true }
            };
            self.forward_http(key, request, session_key, messages, Some(stream), purpose);
            return;
        }
        self.start_stream(
            key,
            session_key,
            stream,
            StreamHead {
                session_id: session_header,
                ..StreamHead::answering(request, true)
            },
        );
        let body: &[u8] = if messages.len() == 1 {
            &request.body
        } else {
            b""
        };
        for (message, _) in messages {
            self.send_upstream(session_key, body, message);
        }
    }

    fn open_get_stream(&mut self, key: usize, request: &Request, session_key: usize) {
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        debug!(
            "session {}: the client opened its GET stream",
            session.short_id()
        );
        let (stream, replaced) = session.router.open_get_stream();
        let replaced_conn = replaced.and_then(|old| session.stream_conns.remove(&old));
        let held = session.router.release_held(stream);
        if let Some(old_conn) = replaced_conn {
            debug!(
                "session {}: a new GET stream replaces the old one",
                session.short_id()
            );
            self.finish_stream(old_conn);
        }
        self.start_stream(
            key,
            session_key,
            stream,
            StreamHead {
                session_id: None,
                ..StreamHead::answering(request, true)
            },
        );
        for (seq, message) in held {
            self.write_event(key, Some((stream, seq)), &message);
        }
        self.open_upstream_get(session_key);
    }

    /// A GET with `Last-Event-ID`: re-attach the stream it names, replay
    /// what the client missed, then carry on live (or end, if it is done).
    fn resume_stream(
        &mut self,
        key: usize,
        request: &Request,
        session_key: usize,
        last_event_id: &str,
    ) {
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        let (stream, resumed) = match session.router.resume(last_event_id) {
            Ok(resumed) => resumed,
            Err(error) => {
                let text = match error {
                    ResumeError::Malformed => "Bad Request: Last-Event-ID is not an event id of this session",
                    ResumeError::UnknownStream => {
                        "Bad Request: the stream of this Last-Event-ID has ended and cannot be resumed"
                    }
                    ResumeError::Evicted => {
                        "Bad Request: the events after this Last-Event-ID are no longer kept; they cannot be replayed"
                    }
                };
                debug!(
                    "session {}: resume {last_event_id:?} refused",
                    session.short_id()
                );
                let reply = Reply::error(400, &Value::Null, jsonrpc::INVALID_REQUEST, text);
                self.reply(key, &reply, request.keep_alive);
                return;
            }
        };
        // A client may reconnect before its old connection's close was
        // noticed: the new connection takes the stream over.
        if let Some(old_conn) = session.stream_conns.remove(&stream) {
            self.finish_stream(old_conn);
        }
        debug!(
            "session {}: stream {stream} resumed after {last_event_id}, {} event(s) replayed",
            self.sessions
                .get(session_key)
                .map(Session::short_id)
                .unwrap_or("?"),
            resumed.events.len()
        );
        self.start_stream(
            key,
            session_key,
            stream,
            StreamHead {
                session_id: None,
                ..StreamHead::answering(request, false)
            },
        );
        for (seq, message) in resumed.events {
            self.write_event(key, Some((stream, seq)), &message);
        }
        if resumed.finished {
            self.end_stream(session_key, stream);
        }
    }

    /// The client's `notifications/cancelled`: the upstream hears of it, and
    /// mcphop ends the request's stream itself, since servers send nothing
    /// after a cancel. `initialize` is never cancelled.
    fn cancel_from_client(&mut self, session_key: usize, body: &[u8], message: &Value) {
        if self.cancel_locally(session_key, message) {
            self.send_upstream(session_key, body, message);
        }
    }

    /// Forgets a request the client cancelled and ends its stream; false when
    /// the cancel must not travel on (it names `initialize`).
    fn cancel_locally(&mut self, session_key: usize, message: &Value) -> bool {
        let Some(session) = self.sessions.get_mut(session_key) else {
            return false;
        };
        let Some(id) = message
            .get("params")
            .and_then(|params| params.get("requestId"))
            .and_then(IdKey::of)
        else {
            return true;
        };
        if session.initialize_request.as_ref() == Some(&id) {
            debug!(
                "session {}: ignoring a cancel of initialize",
                session.short_id()
            );
            return false;
        }
        if let Some((pending, then_close)) = session.router.cancel(&id) {
            debug!(
                "session {}: client cancelled {} {}",
                session.short_id(),
                pending.method,
                pending.id
            );
            if then_close {
                self.end_stream(session_key, pending.stream);
            }
        }
        true
    }

    /// Tells the child a request is cancelled (it timed out, or its client left).
    fn cancel_upstream(&mut self, session_key: usize, pending: &Pending, reason: &str) {
        if pending.is_initialize() {
            return;
        }
        let cancel = json!({
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": pending.id, "reason": reason},
        });
        self.send_upstream(session_key, b"", &cancel);
    }

    /// Queues one message for the child's stdin as a single line. `body` is
    /// the message as the client sent it, reused when it is already one line;
    /// empty means "serialize `message`".
    pub(super) fn send_upstream(&mut self, session_key: usize, body: &[u8], message: &Value) {
        if self.http.is_some() {
            let body = match trim_ascii(body) {
                [] => serde_json::to_vec(message).unwrap_or_default(),
                body => body.to_vec(),
            };
            self.start_exchange(ExchangeSpec {
                purpose: Purpose::Messages {
                    has_requests: false,
                },
                method: "POST",
                body,
                mcp_method: None,
                request_ids: Vec::new(),
                session: Some(session_key),
                stream: None,
                client: None,
                last_event_id: None,
            });
            return;
        }
        let Some(child) = self
            .sessions
            .get_mut(session_key)
            .and_then(Session::child_mut)
        else {
            return;
        };
        let body = trim_ascii(body);
        if body.is_empty() || body.contains(&b'\n') || body.contains(&b'\r') {
            // stdio framing allows no newline inside a message.
            match serde_json::to_vec(message) {
                Ok(compact) => child.stdin.push_line(&compact),
                Err(error) => warn!("cannot re-encode a message for a child: {error}"),
            }
        } else {
            child.stdin.push_line(body);
        }
        self.flush_stdin(session_key);
    }

    /// Sends one message from the child where the router says it goes.
    pub(super) fn deliver_from_upstream(
        &mut self,
        session_key: usize,
        message: &Value,
        kind: Kind,
        raw: &[u8],
    ) {
        let now = self.now;
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        let mut initialize_failed = false;
        let mut initialized = false;
        if kind == Kind::Response
            && session.initialize_id.is_some()
            && IdKey::of_message(message) == session.initialize_id
        {
            session.initialize_id = None;
            match message.get("result") {
                Some(result) => {
                    initialized = session.takes_server_requests;
                    session.protocol_version = result
                        .get("protocolVersion")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    debug!(
                        "session {}: initialized at protocol {}",
                        session.short_id(),
                        session.protocol_version.as_deref().unwrap_or("?")
                    );
                }
                None => initialize_failed = true,
            }
        }
        let destination = session.router.route(message, kind, raw, now);
        let dropped = session.router.take_dropped_count();
        if dropped > 0 {
            warn!(
                "session {}: dropped {dropped} held message(s): no stream open and the buffer is full",
                session.short_id()
            );
        }
        self.apply_destination(session_key, destination, raw);
        if initialized {
            // Its server requests may go on the GET stream, and a server
            // drops what it sends there while no GET stream is open: open it
            // now, before the client's first request reaches the server,
            // which a client may send before its own GET stream.
            self.open_upstream_get(session_key);
        }
        if initialize_failed {
            self.end_session(session_key, "the child refused initialize");
        } else if self.run_state == RunState::Draining {
            self.end_session_if_quiet(session_key);
        }
    }

    /// Writes an event the router recorded to the connection carrying its
    /// stream, if one does, and ends the stream when it is done.
    fn apply_destination(&mut self, session_key: usize, destination: Destination, raw: &[u8]) {
        match destination {
            Destination::Stream {
                stream,
                seq,
                then_close,
            } => {
                let conn_key = self
                    .sessions
                    .get(session_key)
                    .and_then(|session| session.stream_conns.get(&stream).copied());
                if let Some(conn_key) = conn_key {
                    self.write_event(conn_key, Some((stream, seq)), raw);
                }
                if then_close {
                    self.end_stream(session_key, stream);
                }
            }
            Destination::Held => {}
            Destination::Orphaned => {
                if let Some(session) = self.sessions.get(session_key) {
                    debug!(
                        "session {}: dropped an answer to a request that was cancelled or timed out",
                        session.short_id()
                    );
                }
            }
        }
    }

    /// A stream carried its last answer: end it on its connection. While no
    /// connection carries it, the router keeps it for a resume.
    pub(super) fn end_stream(&mut self, session_key: usize, stream: StreamId) {
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        if let Some(conn_key) = session.stream_conns.remove(&stream) {
            session.router.stream_ended(stream);
            self.finish_stream(conn_key);
        }
    }

    /// A connection carrying `stream` went away.
    pub(super) fn stream_lost(
        &mut self,
        session_key: usize,
        session_serial: u64,
        stream: StreamId,
    ) {
        let now = self.now;
        let window = self.config.resume_window;
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        if session.serial != session_serial {
            return;
        }
        session.stream_conns.remove(&stream);
        if let Detached::Kept { since } = session.router.detach(stream, now) {
            debug!(
                "session {}: stream {stream} lost its client; kept {window:?} for a resume",
                session.short_id()
            );
            self.timers.schedule(
                since + window,
                Timer::Detached {
                    key: session_key,
                    serial: session_serial,
                    stream,
                    since,
                },
            );
        }
    }

    /// A detached stream's resume window passed: if no client came back, its
    /// requests are cancelled upstream.
    pub(super) fn on_detached_expiry(
        &mut self,
        key: usize,
        serial: u64,
        stream: StreamId,
        since: Instant,
    ) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        if session.serial != serial {
            return;
        }
        let abandoned = session.router.expire_detached(stream, since);
        for pending in &abandoned {
            debug!(
                "session {}: client left {} {} without resuming: cancelling it",
                session.short_id(),
                pending.method,
                pending.id
            );
        }
        for pending in abandoned {
            self.cancel_upstream(key, &pending, "the client disconnected");
        }
    }

    /// Arms the session's request-timeout timer for its earliest deadline.
    pub(super) fn arm_request_timer(&mut self, session_key: usize) {
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        let Some(deadline) = session.router.next_deadline() else {
            return;
        };
        if session.request_timer.is_some_and(|armed| armed <= deadline) {
            return;
        }
        session.request_timer = Some(deadline);
        let serial = session.serial;
        self.timers.schedule(
            deadline,
            Timer::Requests {
                key: session_key,
                serial,
            },
        );
    }

    /// Ends every request of the session whose time is up.
    pub(super) fn on_request_timer(&mut self, key: usize, serial: u64, deadline: Instant) {
        let now = self.now;
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        if session.serial != serial || session.request_timer != Some(deadline) {
            return;
        }
        session.request_timer = None;
        let expired = session.router.take_expired(now);
        let mut initialize_expired = false;
        for (pending, destination, error) in expired {
            if let Some(session) = self.sessions.get(key) {
                warn!(
                    "session {}: {} {} timed out",
                    session.short_id(),
                    pending.method,
                    pending.id
                );
            }
            self.apply_destination(key, destination, &error);
            if pending.is_initialize() {
                initialize_expired = true;
            } else {
                self.cancel_upstream(key, &pending, "request timed out");
            }
        }
        if initialize_expired {
            self.end_session(
                key,
                "the child did not answer initialize in time (--spawn-timeout)",
            );
        } else {
            self.arm_request_timer(key);
        }
    }

    // ----- session lifecycle ------------------------------------------------

    /// Ends a live session: it becomes unreachable, every request still
    /// waiting gets a JSON-RPC error, every stream ends, and the child is told
    /// to exit (stdin closed; SIGTERM and SIGKILL follow if it lingers).
    pub(super) fn end_session(&mut self, session_key: usize, reason: &str) {
        let now = self.now;
        let grace = self.config.child_grace;
        let code = if self.run_state == RunState::Draining {
            jsonrpc::SHUTTING_DOWN
        } else {
            jsonrpc::UPSTREAM_GONE
        };
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        if !session.is_live() {
            return;
        }
        session.phase = Phase::Ending {
            reason: reason.to_string(),
        };
        self.session_ids.remove(&session.id);
        let pending = session.router.drain();
        let message = format!("The upstream session ended: {reason}");
        let conns: Vec<(StreamId, usize)> = session.stream_conns.drain().collect();
        let serial = session.serial;
        let child_running = match session.child_mut() {
            Some(child) => {
                if let Some(mut pipe) = child.stdin.pipe.take() {
                    let _ = self.poll.registry().deregister(&mut pipe);
                }
                child.exit.is_none()
            }
            None => false,
        };
        if child_running {
            self.timers.schedule(
                now + grace,
                Timer::ChildTerm {
                    key: session_key,
                    serial,
                },
            );
            self.timers.schedule(
                now + grace + grace,
                Timer::ChildKill {
                    key: session_key,
                    serial,
                },
            );
        }
        for request in &pending {
            let conn_key = conns
                .iter()
                .find(|(stream, _)| *stream == request.stream)
                .map(|(_, conn_key)| *conn_key);
            if let Some(conn_key) = conn_key {
                let error = jsonrpc::error_response(&request.id, code, &message);
                self.write_event(conn_key, None, &error);
            }
        }
        for (_, conn_key) in conns {
            self.finish_stream(conn_key);
        }
        self.end_http_session(session_key);
        self.finalize_if_done(session_key);
    }

    /// Drops a session that never got going (its upstream refused
    /// initialize): no stream, no DELETE, one log line.
    pub(super) fn discard_session(&mut self, session_key: usize, why: &str) {
        let Some(session) = self.sessions.get(session_key) else {
            return;
        };
        warn!("session {} not started: {why}", session.short_id());
        self.session_ids.remove(&session.id);
        self.sessions.remove(session_key);
    }

    /// Answers every request still waiting on `stream` with an error (its
    /// upstream answer stream ended or broke) and ends the stream.
    pub(super) fn fail_stream_requests(&mut self, session_key: usize, stream: StreamId, why: &str) {
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        let failed = session.router.fail_stream(stream, why);
        for (_, destination, error) in failed {
            self.apply_destination(session_key, destination, &error);
        }
    }

    /// A new session whose upstream is the HTTP server: its `initialize`
    /// travels there, and the session lives if the server agrees.
    fn initialize_http(
        &mut self,
        key: usize,
        request: &Request,
        message: Value,
        session_id: String,
    ) {
        let serial = self.serial();
        let session = Session::new(
            serial,
            session_id,
            Upstream::Http(HttpSession::default()),
            self.router_limits(),
            self.now,
        );
        let upstream = self
            .http
            .as_ref()
            .map(|http| format!("on {}", http.host))
            .unwrap_or_default();
        self.start_session(key, request, message, session, &upstream);
    }

    /// Sends a client's POST to the HTTP upstream; the client waits for the
    /// upstream's answer.
    fn forward_http(
        &mut self,
        key: usize,
        request: &Request,
        session_key: usize,
        messages: &[(Value, Kind)],
        stream: Option<StreamId>,
        purpose: Purpose,
    ) {
        let body = match messages {
            [_] if !trim_ascii(&request.body).starts_with(b"[") => request.body.clone(),
            [(message, _)] => serde_json::to_vec(message).unwrap_or_default(),
            many => serde_json::to_vec(&many.iter().map(|(m, _)| m).collect::<Vec<_>>())
                .unwrap_or_default(),
        };
        let request_ids = messages
            .iter()
            .filter(|(_, kind)| *kind == Kind::Request)
            .filter_map(|(message, _)| message.get("id").cloned())
            .collect();
        let client = ClientHeaders::of(request, &self.config.forward_headers);
        self.start_exchange(ExchangeSpec {
            purpose,
            method: "POST",
            body,
            mcp_method: lone_request_method(messages),
            request_ids,
            session: Some(session_key),
            stream,
            client: Some((key, client)),
            last_event_id: None,
        });
    }

    /// A stateless-era request goes to the HTTP upstream as it is, with no
    /// session; its answer comes back as it is.
    fn passthrough(&mut self, key: usize, request: &Request) {
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
    }

    /// Ends a draining session once no request of it is in flight.
    pub(super) fn end_session_if_quiet(&mut self, session_key: usize) {
        if self
            .sessions
            .get(session_key)
            .is_some_and(|session| session.is_live() && session.router.pending_count() == 0)
        {
            self.end_session(session_key, "mcphop is shutting down");
        }
    }
}
