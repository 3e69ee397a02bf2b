//! Drives the session cores: each request through the auth gate
//! (`Auth::admit`, and the requests it held for keys coming back), what each
//! endpoint intent of the front door does to the session table (create, post, batch, open or resume a stream,
//! delete) as core inputs, the events the front door reports (a connection
//! closed, a client caught up) and the upstream reports (`UpstreamEvent`s)
//! fed to the cores, one input fed to a core and the actions it decided
//! carried out on client connections (SSE streams, replies) and on the
//! session's upstream (through `Upstreams`' one interface, `with_upstream`),
//! the output pumps that read an upstream one step at a time, and the
//! session's one timer for `poll_timeout`.
//! Nothing MCP is decided here.

use log::{debug, warn};

use crate::client::{ConnKey, ConnState};
use crate::core::{Action, Forward, SessionCore};
use crate::http::request::Request;
use crate::jsonrpc::{Kind, Message};
use crate::mcp::auth::Principal;
use crate::mcp::endpoint::{self, Intent, Reply, PROTOCOL_VERSION_HEADER};
use crate::mcp::legacy_endpoint::{interpret_legacy, parse_messages, LegacyIntent};
use crate::mcp::router::StreamId;
use crate::session::{Session, SessionKey};
use crate::session_id;
use serde_json::value::RawValue;

use mio::event::Event as MioEvent;

use super::auth::Held;
use super::front_door::{FrontEvent, StreamHead};
use super::http_upstream::UpConnKey;
pub(super) use super::origin::{ClientRef, Origin};
use super::replies::{
    not_found, not_initialized, shutting_down_reply, unhealthy_reply, upstream_not_reading,
};
use super::servers::{Door, Route, ServerId};
use super::stdio_upstream::Pipe;
use super::upstreams::{UpstreamCtx, UpstreamEvent, Upstreams};
use super::{Proxy, RunState, MAX_STDOUT_READS_PER_TURN};

impl Proxy {
    /// Starts the OAuth key fetch that is due, and checks again the
    /// requests that waited once none is in flight (`Auth::progress`).
    pub(super) fn key_fetch_progress(&mut self) {
        let (registry, timers) = (self.poll.registry(), &mut self.timers);
        let resumed = (self.auth).progress(registry, self.now, timers, &mut self.front);
        for (key, request) in resumed {
            self.handle_request(key, request);
        }
    }

    /// Acts on one complete request from a client connection.
    pub(super) fn handle_request(&mut self, key: ConnKey, request: Request) {
        if self.run_state != RunState::Serving {
            self.reply(key, &shutting_down_reply(), false);
            return;
        }
        let (front, metrics) = (&mut self.front, &mut self.metrics);
        let (mut request, principal) = match self.auth.admit(key, request, self.now, front, metrics)
        {
            Ok(passed) => passed,
            Err(Held::Answered) => return,
            Err(Held::Parked) => return self.key_fetch_progress(),
        };
        let Some(route) = self.servers.route(request.path(), &self.config) else {
            let reply = endpoint::check_access(&request, &self.front.policy)
                .err()
                .unwrap_or_else(not_found);
            self.reply(key, &reply, request.keep_alive);
            return;
        };
        let server = route.server;
        if route.door == Door::Legacy {
            let paths = self.servers.legacy_paths(&route, &self.config);
            let legacy = interpret_legacy(&mut request, paths, &self.front.policy);
            if let Some(intent) = legacy {
                self.handle_legacy(key, &request, intent, &route, principal);
            }
            return;
        }
        let path = self.servers.mcp_path(&route, &self.config);
        let intent = endpoint::interpret(&mut request, path, &self.front.policy);
        let session_id = match &intent {
            Intent::Reply(reply) => {
                self.reply(key, reply, request.keep_alive);
                return;
            }
            Intent::Stateless { refusal } => {
                let passed = self.with_upstream(server, |upstream, ctx| {
                    upstream.passthrough(ctx, key, &request)
                });
                if !passed {
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
            // A session is reached only on its own server's routes.
            Some(id) => match self.session_on(id, &route, principal.as_ref()) {
                Some(session_key) => Some(session_key),
                None => {
                    session_id::log_foreign_tag(id, self.config.instance_id.as_deref());
                    self.reply(key, &Reply::session_not_found(), request.keep_alive);
                    return;
                }
            },
        };
        if let Some(session_key) = session_key {
            let now = self.now;
            let Some(session) = self.sessions.get_mut(session_key) else {
                return;
            };
            if let Some(header) = request.header(PROTOCOL_VERSION_HEADER) {
                if let Err(reply) = session.core.check_version(header.trim()) {
                    self.reply(key, &reply, request.keep_alive);
                    return;
                }
            }
            session.core.touch(now);
        }
        if let (Some(message), Some(why)) = (intent.first_message(), self.request_refusal(server)) {
            self.reply(key, &unhealthy_reply(message, &why), request.keep_alive);
            return;
        }
        let now = self.now;
        let origin = Origin::request(ClientRef::of(key, &request), &request);
        match (intent, session_key) {
            (Intent::Initialize { .. }, _) if route.retired => {
                self.reply(key, &Reply::session_not_found(), request.keep_alive)
            }
            (Intent::Initialize { message }, _) => {
                self.initialize(key, &request, message, server, principal)
            }
            (Intent::Post { message, .. }, Some(session_key)) => {
                if let Err(reply) = self.check_upstream_room(session_key, &message) {
                    self.reply(key, &reply, request.keep_alive);
                    return;
                }
                self.drive(session_key, origin, |core| {
                    core.client_message(message, now)
                });
            }
            (Intent::Batch { messages, .. }, Some(session_key)) => {
                for message in &messages {
                    if let Err(reply) = self.check_upstream_room(session_key, message) {
                        self.reply(key, &reply, request.keep_alive);
                        return;
                    }
                }
                self.drive(session_key, origin, |core| core.client_batch(messages, now));
            }
            (Intent::OpenStream { last_event_id, .. }, Some(session_key)) => match last_event_id {
                Some(last_event_id) => self.drive(session_key, origin, |core| {
                    core.client_resume(&last_event_id)
                }),
                None => self.drive(session_key, origin, SessionCore::client_open_get),
            },
            (Intent::Delete { .. }, Some(session_key)) => {
                self.end_session(session_key, "client sent DELETE");
                self.reply(key, &Reply::empty(200), request.keep_alive);
            }
            _ => {}
        }
    }

    /// A stdio child that stopped reading its stdin takes no more: the
    /// client hears 503 rather than mcphop buffering without bound.
    fn check_upstream_room(&self, session_key: SessionKey, message: &Message) -> Result<(), Reply> {
        let session = self.sessions.get(session_key);
        let backlog = session.map_or(0, |s| self.servers.input_backlog(session_key, s));
        match backlog > self.config.max_child_stdin_buffer {
            true => Err(upstream_not_reading(message)),
            false => Ok(()),
        }
    }

    fn initialize(
        &mut self,
        key: ConnKey,
        request: &Request,
        message: Message,
        server: ServerId,
        owner: Option<Principal>,
    ) {
        let id = message.reply_id();
        let Some(session_key) = self.new_session(key, request.keep_alive, id, server, owner) else {
            return;
        };
        let now = self.now;
        let origin = Origin::request(ClientRef::of(key, request), request);
        self.drive(session_key, origin, |core| {
            core.client_initialize(message, now)
        });
    }

    /// A request through the legacy HTTP+SSE front door: `GET /sse` opens a
    /// session and its one stream on this connection; a POST to the message
    /// path is accepted (202) and its messages go to the session's core as
    /// if they came on the stream's connection, which carries the answers.
    fn handle_legacy(
        &mut self,
        key: ConnKey,
        request: &Request,
        intent: LegacyIntent,
        route: &Route,
        principal: Option<Principal>,
    ) {
        let (session, messages) = match intent {
            LegacyIntent::Reply(reply) => return self.reply(key, &reply, request.keep_alive),
            LegacyIntent::Open if route.retired => {
                return self.reply(key, &Reply::session_not_found(), request.keep_alive)
            }
            LegacyIntent::Open => return self.open_legacy_session(key, request, route, principal),
            LegacyIntent::Post { session, message } => (session, vec![message]),
            LegacyIntent::Batch { session, messages } => (session, messages),
        };
        let found = self
            .session_on(&session, route, principal.as_ref())
            .and_then(|session_key| {
                let session = self.sessions.get(session_key)?;
                Some((session_key, session.legacy_stream?))
            });
        let Some((session_key, stream_conn)) = found else {
            session_id::log_foreign_tag(&session, self.config.instance_id.as_deref());
            return self.reply(key, &Reply::session_not_found(), request.keep_alive);
        };
        for message in &messages {
            if let Err(reply) = self.check_upstream_room(session_key, message) {
                return self.reply(key, &reply, request.keep_alive);
            }
        }
        if let (Some(message), Some(why)) = (messages.first(), self.request_refusal(route.server)) {
            return self.reply(key, &unhealthy_reply(message, &why), request.keep_alive);
        }
        self.reply(key, &Reply::empty(202), request.keep_alive);
        let batch = messages.len() != 1 || request.body.first() == Some(&b'[');
        self.feed_carried(session_key, stream_conn, Some(request), messages, batch);
    }

    /// Messages from a client whose one connection `carrier` (a legacy SSE
    /// stream, mcphop's stdout) carries every stream of the session: an
    /// `initialize` starts the core, others are one message or a batch.
    fn feed_carried(
        &mut self,
        session_key: SessionKey,
        carrier: ConnKey,
        request: Option<&Request>,
        messages: Vec<Message>,
        batch: bool,
    ) {
        let now = self.now;
        if let Some(session) = self.sessions.get_mut(session_key) {
            session.core.touch(now);
        }
        let origin = Origin::carried(carrier, request);
        let initialize = matches!(messages.as_slice(),
            [message] if message.kind() == Kind::Request && message.method() == Some("initialize"));
        let mut messages = messages.into_iter();
        match (initialize, batch, messages.next()) {
            (true, _, Some(message)) => self.drive(session_key, origin, |core| {
                core.client_initialize(message, now)
            }),
            (false, false, Some(message)) => self.drive(session_key, origin, |core| {
                core.client_message(message, now)
            }),
            (_, _, first) => {
                let all = first.into_iter().chain(messages).collect();
                self.drive(session_key, origin, |core| core.client_batch(all, now))
            }
        }
    }

    /// One line on the stdio front door's stdin: the first message must be
    /// `initialize` (it starts the session on `server`); then each is the
    /// session's, answered on stdout.
    pub(super) fn handle_stdio_line(
        &mut self,
        key: ConnKey,
        line: Vec<u8>,
        server: ServerId,
        session: Option<SessionKey>,
    ) {
        let batch = line.first() == Some(&b'[');
        let messages = match parse_messages(line) {
            Ok(messages) => messages,
            Err(reply) => return self.reply(key, &reply, true),
        };
        let live = session.filter(|session| self.sessions.contains(*session));
        let session_key = match (live, messages.first()) {
            (Some(session), _) => session,
            (None, Some(first)) if first.method() == Some("initialize") => {
                let id = first.reply_id();
                let Some(session) = self.new_session(key, true, id, server, None) else {
                    return;
                };
                self.front.stdio_session_started(key, server, session);
                if let Some(entry) = self.sessions.get_mut(session) {
                    entry.legacy_stream = Some(key);
                }
                session
            }
            (None, first) => {
                let id = first.map_or(RawValue::NULL, Message::reply_id);
                return self.reply(key, &not_initialized(id), true);
            }
        };
        for message in &messages {
            if let Err(reply) = self.check_upstream_room(session_key, message) {
                return self.reply(key, &reply, true);
            }
        }
        if let (Some(message), Some(why)) = (messages.first(), self.request_refusal(server)) {
            return self.reply(key, &unhealthy_reply(message, &why), true);
        }
        self.feed_carried(session_key, key, None, messages, batch);
    }

    /// `GET /sse`: a new session whose one stream is this connection; the
    /// stream opens with the `endpoint` event naming where to POST.
    fn open_legacy_session(
        &mut self,
        key: ConnKey,
        request: &Request,
        route: &Route,
        owner: Option<Principal>,
    ) {
        let (keep_alive, server) = (request.keep_alive, route.server);
        let Some(session_key) = self.new_session(key, keep_alive, RawValue::NULL, server, owner)
        else {
            return;
        };
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        session.legacy_stream = Some(key);
        let paths = self.servers.legacy_paths(route, &self.config);
        let endpoint = paths.endpoint_for(session.core.id());
        let http11 = request.minor_version >= 1;
        let (front, mut ctx) = self.front_parts();
        front.open_legacy_stream(&mut ctx, key, session_key, &endpoint, http11);
        self.arm_session_timer(session_key);
    }

    /// Creates a session (its id, its upstream, its core) for a client on
    /// `key`; None, with the client answered, when mcphop is full or the
    /// upstream cannot start (`id`: the request's, for the error).
    fn new_session(
        &mut self,
        key: ConnKey,
        keep_alive: bool,
        id: &RawValue,
        server: ServerId,
        owner: Option<Principal>,
    ) -> Option<SessionKey> {
        let peer = self.front.conns.get(key).and_then(|conn| conn.peer);
        let opened = self.servers.open_session(
            server,
            &self.config,
            (&mut self.sessions, &mut self.session_ids),
            self.poll.registry(),
            self.now,
            (owner.as_ref(), peer),
        );
        match opened {
            Ok(session_key) => {
                if let Some(session) = self.sessions.get_mut(session_key) {
                    session.set_owner(owner);
                }
                self.metrics.session_created();
                Some(session_key)
            }
            Err(refusal) => {
                self.reply(key, &refusal.reply(id), keep_alive);
                None
            }
        }
    }

    /// Ends a live session (see `SessionCore::end`).
    pub(super) fn end_session(&mut self, session_key: SessionKey, reason: &str) {
        let shutting_down = self.run_state != RunState::Serving;
        self.drive(session_key, Origin::NONE, |core| {
            core.end(reason, shutting_down)
        });
    }

    /// Drops a session that never got going (its upstream refused
    /// initialize): no stream, no DELETE, one log line.
    pub(super) fn discard_session(&mut self, session_key: SessionKey, why: &str) {
        let Some(session) = self.sessions.get(session_key) else {
            return;
        };
        warn!("session {} not started: {why}", session.core.short_id());
        self.metrics.session_ended(why);
        if let Some(conn) = session.legacy_stream {
            self.front.end_legacy_stream(conn);
        }
        self.session_ids.remove(session.core.id());
        self.servers.session_closed(&session.client);
        self.sessions.remove(session_key);
        if self.sessions.is_empty() {
            super::idle::last_session_gone(self);
        }
    }

    /// Calls the upstream side with what it needs of the rest of the proxy,
    /// then feeds the events it reported to the cores.
    pub(super) fn with_upstream<R: Default>(
        &mut self,
        server: ServerId,
        call: impl FnOnce(&mut Upstreams, &mut UpstreamCtx<'_>) -> R,
    ) -> R {
        let Some(entry) = self.servers.get_mut(server) else {
            return R::default();
        };
        let mut ctx = UpstreamCtx {
            now: self.now,
            config: &self.config,
            registry: self.poll.registry(),
            scratch: &mut self.scratch,
            serving: self.run_state == RunState::Serving,
            sessions: &mut self.sessions,
            front: &mut self.front,
            timers: &mut self.timers,
            events: &mut self.upstream_events,
        };
        let result = call(&mut entry.upstream, &mut ctx);
        self.run_upstream_events();
        result
    }

    /// `with_upstream` on the server `session` belongs to.
    pub(super) fn with_session_upstream<R: Default>(
        &mut self,
        session: SessionKey,
        call: impl FnOnce(&mut Upstreams, &mut UpstreamCtx<'_>) -> R,
    ) -> R {
        match self.server_of(session) {
            Some(server) => self.with_upstream(server, call),
            None => R::default(),
        }
    }

    /// The server a session belongs to.
    pub(super) fn server_of(&self, session: SessionKey) -> Option<ServerId> {
        self.sessions.get(session).map(|session| session.server)
    }

    /// The live session with `id`, if it belongs to `route`'s server, by
    /// name (a session of a server a reload replaced is still its name's),
    /// and to `by` (its owner).
    fn session_on(&self, id: &str, route: &Route, by: Option<&Principal>) -> Option<SessionKey> {
        let key = self.session_ids.get(id).copied()?;
        let session = self.sessions.get(key)?;
        let name = |id: ServerId| self.servers.get(id).map(|server| server.name.as_str());
        (session.owned_by(by) && name(session.server) == name(route.server)).then_some(key)
    }

    /// Why requests to `server` fail fast now, if they do.
    fn request_refusal(&self, server: ServerId) -> Option<String> {
        self.servers.get(server)?.upstream.request_refusal()
    }

    /// A readiness event on a child's pipe (`index`: its session's slot).
    pub(super) fn on_child_event(&mut self, index: usize, pipe: Pipe, event: &MioEvent) {
        let Some(key) = self.sessions.key_at(index) else {
            return;
        };
        let read = self.with_session_upstream(key, |upstream, ctx| {
            upstream.on_pipe_event(ctx, key, pipe, event)
        });
        if read {
            self.pump_output(key);
        }
    }

    /// SIGCHLD: children that exited are reaped and their sessions ended.
    pub(super) fn reap_children(&mut self) {
        while let Some((pid, status)) = crate::child::reap_any() {
            match self.servers.child_owner(pid) {
                Some(server) => self.with_upstream(server, |upstream, ctx| {
                    upstream.child_reaped(ctx, pid, status)
                }),
                None => debug!("reaped process {pid} ({status})"),
            }
        }
    }

    /// Reads a session's upstream output one step at a time while its
    /// clients keep up (back-pressure), at most `MAX_STDOUT_READS_PER_TURN`
    /// steps per turn.
    pub(super) fn pump_output(&mut self, session_key: SessionKey) {
        for _ in 0..MAX_STDOUT_READS_PER_TURN {
            let Some(session) = self.sessions.get(session_key) else {
                return;
            };
            if session.core.is_live() && !self.session_can_emit(session) {
                return;
            }
            let more = self.with_session_upstream(session_key, |upstream, ctx| {
                upstream.read_output(ctx, session_key)
            });
            if !more {
                return;
            }
        }
        // More may be waiting: come back after the other sources had a turn.
        if let Some(server) = self.server_of(session_key) {
            if let Some(entry) = self.servers.get_mut(server) {
                entry.upstream.requeue_output(session_key);
            }
        }
    }

    /// True when every connection carrying this session's streams can take
    /// more output; otherwise its upstream output waits (back-pressure).
    fn session_can_emit(&self, session: &Session) -> bool {
        session.stream_conns.values().all(|conn_key| {
            self.front
                .conns
                .get(*conn_key)
                .is_none_or(|conn| conn.unwritten() <= self.config.max_client_buffer)
        })
    }

    /// Reads an upstream connection one step at a time, each step's events
    /// fed before the next.
    fn pump_up_conn(&mut self, server: ServerId, conn: UpConnKey) {
        while self.with_upstream(server, |upstream, ctx| upstream.read_conn_step(ctx, conn)) {}
    }

    /// Feeds what the upstream side reported during its last call to the
    /// session cores.
    pub(super) fn run_upstream_events(&mut self) {
        while !self.upstream_events.is_empty() {
            // Feeding an event may call the upstream again (an HTTP read
            // step, a forward): those calls report into a spare queue, kept
            // with its allocation for the next time.
            let spare = self.spare_upstream_events.pop().unwrap_or_default();
            let mut events = std::mem::replace(&mut self.upstream_events, spare);
            for event in events.drain(..) {
                self.feed_upstream_event(event);
            }
            self.spare_upstream_events.push(events);
        }
    }

    fn feed_upstream_event(&mut self, event: UpstreamEvent) {
        match event {
            UpstreamEvent::Message { session, message } => {
                let Some(core) = self.sessions.get(session).map(|s| &s.core) else {
                    return;
                };
                if !core.is_live() {
                    debug!(
                        "session {}: discarding output of an ended session",
                        core.short_id()
                    );
                    return;
                }
                self.deliver_from_upstream(session, message);
            }
            UpstreamEvent::EndSession { session, reason } => self.end_session(session, &reason),
            UpstreamEvent::Finalize { session } => self.finalize_if_done(session),
            UpstreamEvent::StreamReady {
                session,
                stream,
                client,
            } => self.drive(session, Origin::client(client), |core| {
                core.stream_ready(stream)
            }),
            UpstreamEvent::FailStream {
                session,
                stream,
                why,
            } => self.drive(session, Origin::NONE, |core| core.fail_stream(stream, &why)),
            UpstreamEvent::DiscardSession { session, why } => self.discard_session(session, &why),
            UpstreamEvent::StreamLost { session, stream } => self.stream_lost(session, stream),
            UpstreamEvent::CloseConn { conn } => self.close_conn(conn),
            UpstreamEvent::ReadConn { server, conn } => self.pump_up_conn(server, conn),
            UpstreamEvent::ReadOutput { session } => self.pump_output(session),
            UpstreamEvent::AnswerEnded { session, ended } => {
                self.with_session_upstream(session, |upstream, ctx| {
                    upstream.answer_ended(ctx, session, ended)
                });
            }
        }
    }

    /// Handles what the front door reported during its last call.
    pub(super) fn run_front_events(&mut self) {
        while !self.front_events.is_empty() {
            let mut events = std::mem::take(&mut self.front_events);
            for event in events.drain(..) {
                self.on_front_event(event);
            }
            if self.front_events.is_empty() {
                // Keep the allocation for the next call.
                self.front_events = events;
            }
        }
    }

    fn on_front_event(&mut self, event: FrontEvent) {
        match event {
            FrontEvent::Closed { state } => match state {
                ConnState::Streaming {
                    session, stream, ..
                } => self.stream_lost(session, stream),
                ConnState::AwaitingUpstream { server, exchange } => {
                    self.with_upstream(server, |upstream, ctx| {
                        upstream.client_left(ctx, exchange, false)
                    });
                }
                ConnState::Relaying {
                    server, exchange, ..
                } => {
                    self.with_upstream(server, |upstream, ctx| {
                        upstream.client_left(ctx, exchange, true)
                    });
                }
                ConnState::LegacyStream { session, .. } => {
                    self.end_session(session, "the client closed its legacy SSE stream");
                }
                ConnState::StdioSession { session, .. } => {
                    // mcphop's one client is gone: its session ends (DELETE
                    // upstream) and mcphop exits once that is done.
                    if let Some(session) = session {
                        self.end_session(session, "the client closed stdin");
                    }
                    self.stop_serving();
                }
                ConnState::Requests | ConnState::AwaitingKeys => {}
            },
            FrontEvent::CaughtUp { session } => {
                let sessions = &self.sessions;
                if sessions
                    .get(session)
                    .is_some_and(|s| self.servers.has_backlog(session, s))
                {
                    // The client caught up: its upstream output flows again.
                    self.with_session_upstream(session, |upstream, ctx| {
                        upstream.resume_output(ctx, session)
                    });
                }
            }
        }
    }

    /// Gives one input to a session's core and carries out what it decides.
    pub(super) fn drive(
        &mut self,
        session_key: SessionKey,
        origin: Origin<'_>,
        input: impl FnOnce(&mut SessionCore),
    ) {
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        input(&mut session.core);
        for completion in session.core.take_completions() {
            self.metrics.request_done(&completion, self.now);
        }
        let mut actions = session.core.take_actions();
        for action in actions.drain(..) {
            self.apply(session_key, origin, action);
        }
        if let Some(session) = self.sessions.get_mut(session_key) {
            session.core.recycle(actions);
        }
        self.arm_session_timer(session_key);
    }

    fn apply(&mut self, session_key: SessionKey, origin: Origin<'_>, action: Action) {
        match action {
            Action::StartStream {
                stream,
                session_header,
                priming,
            } => {
                let Some(client) = origin.client else {
                    return;
                };
                let Some(session) = self.sessions.get(session_key) else {
                    return;
                };
                let session_id = session_header.then(|| session.core.id().to_string());
                let head = StreamHead {
                    session_id: session_id.as_deref(),
                    priming,
                    keep_alive: client.keep_alive,
                    http11: client.http11,
                };
                let (front, mut ctx) = self.front_parts();
                if front.start_stream(&mut ctx, client.key, session_key, stream, head) {
                    if let Some(session) = self.sessions.get_mut(session_key) {
                        session.stream_conns.insert(stream, client.key);
                    }
                }
            }
            Action::Event {
                stream,
                seq,
                payload,
            } => {
                let conn_key = self
                    .sessions
                    .get(session_key)
                    .and_then(|session| session.stream_conns.get(&stream).copied());
                if let Some(conn_key) = conn_key {
                    let heartbeat_at = self.now + self.config.sse_keepalive;
                    self.front.write_event(
                        conn_key,
                        seq.map(|seq| (stream, seq)),
                        payload.bytes(),
                        heartbeat_at,
                    );
                }
            }
            Action::EndStream { stream } => {
                let conn_key = self
                    .sessions
                    .get_mut(session_key)
                    .and_then(|session| session.stream_conns.remove(&stream));
                if let Some(conn_key) = conn_key {
                    let serving = self.run_state == RunState::Serving;
                    self.front.finish_stream(conn_key, serving);
                }
            }
            Action::Reply(reply) => {
                if let Some(client) = origin.client {
                    self.reply(client.key, &reply, client.keep_alive);
                }
            }
            Action::Forward(forward) => self.forward(session_key, origin, forward),
            Action::OpenUpstreamGet => {
                self.with_session_upstream(session_key, |upstream, ctx| {
                    upstream.open_get(ctx, session_key)
                });
            }
            Action::Ended { reason } => self.session_ended(session_key, &reason),
        }
    }

    /// Sends messages to the session's upstream, whichever kind it is.
    fn forward(&mut self, session_key: SessionKey, origin: Origin<'_>, forward: Forward) {
        self.with_session_upstream(session_key, |upstream, ctx| {
            upstream.forward(ctx, session_key, origin, forward)
        });
    }

    /// The core ended the session: it is unreachable, and its upstream is
    /// told to stop.
    fn session_ended(&mut self, session_key: SessionKey, reason: &str) {
        let Some(session) = self.sessions.get(session_key) else {
            return;
        };
        debug!("session {} ending: {reason}", session.core.short_id());
        self.metrics.session_ended(reason);
        if let Some(conn) = session.legacy_stream {
            self.front.end_legacy_stream(conn);
        }
        let id = session.core.id().to_string();
        self.session_ids.remove(&id);
        self.with_session_upstream(session_key, |upstream, ctx| {
            upstream.session_ended(ctx, session_key)
        });
        self.finalize_if_done(session_key);
    }

    /// One message from a session's upstream, for the core to route.
    pub(super) fn deliver_from_upstream(&mut self, session_key: SessionKey, message: Message) {
        let now = self.now;
        self.drive(session_key, Origin::NONE, |core| {
            core.upstream_message(message, now)
        });
    }

    /// A connection carrying `stream` went away.
    pub(super) fn stream_lost(&mut self, session_key: SessionKey, stream: StreamId) {
        let now = self.now;
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        session.stream_conns.remove(&stream);
        self.drive(session_key, Origin::NONE, |core| {
            core.stream_lost(stream, now)
        });
    }
}
