//! Drives a session core: feeds it one input, then carries out the actions it
//! decided on client connections (SSE streams, replies) and on the session's
//! upstream, and arms the session's one timer for `poll_timeout`. Nothing MCP
//! is decided here.

use std::time::Instant;

use log::debug;

use crate::client::ConnKey;
use crate::core::{Action, Forward, Payload, SessionCore};
use crate::http::request::Request;
use crate::jsonrpc::Message;
use crate::mcp::router::StreamId;
use crate::session::SessionKey;

use super::streams::StreamHead;
use super::{Proxy, RunState, Timer};

/// A client connection a core's actions may answer.
#[derive(Debug, Clone, Copy)]
pub(super) struct ClientRef {
    pub key: ConnKey,
    pub keep_alive: bool,
    pub http11: bool,
}

impl ClientRef {
    pub fn of(key: ConnKey, request: &Request) -> ClientRef {
        ClientRef {
            key,
            keep_alive: request.keep_alive,
            http11: request.minor_version >= 1,
        }
    }
}

/// Where a core input came from: what `Reply`, `StartStream` and
/// `Payload::Input` refer to.
#[derive(Clone, Copy)]
pub(super) struct Origin<'a> {
    /// The client whose request is being handled, or whose POST the stream
    /// that becomes ready answers.
    pub client: Option<ClientRef>,
    /// That client's request, for its body and forwarded headers.
    pub request: Option<&'a Request>,
    /// The raw message of an upstream input.
    pub input: &'a [u8],
}

impl<'a> Origin<'a> {
    /// No client and no input: a timer, or mcphop's own decision.
    pub const NONE: Origin<'static> = Origin {
        client: None,
        request: None,
        input: b"",
    };

    pub fn request(client: ClientRef, request: &'a Request) -> Origin<'a> {
        Origin {
            client: Some(client),
            request: Some(request),
            input: b"",
        }
    }

    pub fn client(client: Option<ClientRef>) -> Origin<'static> {
        Origin {
            client,
            request: None,
            input: b"",
        }
    }

    pub fn upstream(input: &'a [u8]) -> Origin<'a> {
        Origin {
            client: None,
            request: None,
            input,
        }
    }
}

impl Proxy {
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
                let session_id = self
                    .sessions
                    .get(session_key)
                    .filter(|_| session_header)
                    .map(|session| session.core.id().to_string());
                self.start_stream(
                    client.key,
                    session_key,
                    stream,
                    StreamHead {
                        session_id: session_id.as_deref(),
                        priming,
                        keep_alive: client.keep_alive,
                        http11: client.http11,
                    },
                );
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
                    let data = match &payload {
                        Payload::Input => origin.input,
                        Payload::Owned(bytes) => bytes,
                    };
                    let heartbeat_at = self.now + self.config.sse_keepalive;
                    self.front.write_event(
                        conn_key,
                        seq.map(|seq| (stream, seq)),
                        data,
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
            Action::OpenUpstreamGet => self.open_upstream_get(session_key),
            Action::Ended { reason } => self.session_ended(session_key, &reason),
        }
    }

    /// Sends messages to the session's upstream, whichever kind it is.
    fn forward(&mut self, session_key: SessionKey, origin: Origin<'_>, forward: Forward) {
        if !self.upstream.is_pipe() {
            self.forward_http(session_key, origin, forward);
            return;
        }
        // A pipe takes everything at once: the answer stream starts now, and
        // a client sending no request hears 202.
        if let Some(stream) = forward.stream {
            self.drive(session_key, origin, |core| core.stream_ready(stream));
        }
        for message in &forward.messages {
            self.send_to_child(session_key, message.bytes());
        }
        if forward.client_waits && forward.stream.is_none() {
            if let Some(client) = origin.client {
                self.reply(
                    client.key,
                    &crate::mcp::endpoint::Reply::empty(202),
                    client.keep_alive,
                );
            }
        }
    }

    /// The core ended the session: it is unreachable, and its upstream is
    /// told to stop.
    fn session_ended(&mut self, session_key: SessionKey, reason: &str) {
        let Some(session) = self.sessions.get(session_key) else {
            return;
        };
        debug!("session {} ending: {reason}", session.core.short_id());
        let id = session.core.id().to_string();
        self.session_ids.remove(&id);
        if self.upstream.is_pipe() {
            self.stop_child(session_key);
        } else {
            self.end_http_session(session_key);
        }
        self.finalize_if_done(session_key);
    }

    /// One message from a session's upstream, for the core to route.
    pub(super) fn deliver_from_upstream(
        &mut self,
        session_key: SessionKey,
        message: &Message<&[u8]>,
    ) {
        let now = self.now;
        self.drive(session_key, Origin::upstream(message.bytes()), |core| {
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

    /// Answers every request still waiting on `stream` with an error (its
    /// upstream answer stream ended or broke).
    pub(super) fn fail_stream_requests(
        &mut self,
        session_key: SessionKey,
        stream: StreamId,
        why: &str,
    ) {
        self.drive(session_key, Origin::NONE, |core| {
            core.fail_stream(stream, why)
        });
    }

    /// Arms the session's timer for its core's next deadline.
    fn arm_session_timer(&mut self, session_key: SessionKey) {
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        let Some(deadline) = session.core.poll_timeout() else {
            return;
        };
        if session.timer.is_some_and(|armed| armed <= deadline) {
            return;
        }
        session.timer = Some(deadline);
        self.timers.schedule(deadline, Timer::Session(session_key));
    }

    /// A session's timer fired: its core handles whatever is due.
    pub(super) fn on_session_timer(&mut self, key: SessionKey, deadline: Instant) {
        let now = self.now;
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        if session.timer != Some(deadline) {
            return;
        }
        session.timer = None;
        self.drive(key, Origin::NONE, |core| core.handle_timeout(now));
    }
}
