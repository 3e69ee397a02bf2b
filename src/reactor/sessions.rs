//! The Streamable HTTP front door's session side: what each endpoint intent
//! does to the session table (create, post, batch, open or resume a stream,
//! delete), turned into inputs of the session's sans-IO core. What the core
//! decides is carried out by `drive`.

use log::{error, info, warn};
use serde_json::value::RawValue;

use crate::client::ConnKey;
use crate::config::RETRY_AFTER_SECONDS;
use crate::core::{CoreConfig, SessionCore};
use crate::http::request::Request;
use crate::jsonrpc::{self, Message};
use crate::mcp::endpoint::{self, Intent, Reply, PROTOCOL_VERSION_HEADER};
use crate::mcp::router::RouterLimits;
use crate::session::{Session, SessionKey};
use crate::session_id;

use super::drive::{ClientRef, Origin};
use super::{Proxy, RunState};

impl Proxy {
    fn core_config(&self) -> CoreConfig {
        CoreConfig {
            router: RouterLimits {
                max_held_bytes: self.config.max_held_bytes,
                replay_max_events: self.config.replay_max_events,
                replay_max_bytes: self.config.replay_max_bytes,
                request_timeout: self.config.request_timeout,
                request_timeout_max: self.config.request_timeout_max,
                initialize_timeout: self.config.spawn_timeout,
            },
            idle_timeout: self.config.session_idle_timeout,
            resume_window: self.config.resume_window,
        }
    }

    /// Acts on one complete request from a client connection.
    pub(super) fn handle_request(&mut self, key: ConnKey, mut request: Request) {
        if self.run_state != RunState::Serving {
            let reply = Reply::error(
                503,
                RawValue::NULL,
                jsonrpc::SHUTTING_DOWN,
                "Service Unavailable: mcphop is shutting down",
            );
            self.reply(key, &reply, false);
            return;
        }
        let intent = endpoint::interpret(&mut request, &self.config.path, &self.front.policy);
        let session_id = match &intent {
            Intent::Reply(reply) => {
                self.reply(key, reply, request.keep_alive);
                return;
            }
            Intent::Stateless { refusal } => {
                if !self.passthrough(key, &request) {
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
        let now = self.now;
        let origin = Origin::request(ClientRef::of(key, &request), &request);
        match (intent, session_key) {
            (Intent::Initialize { message }, _) => self.initialize(key, &request, message),
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
        let full = self.upstream.input_backlog(session_key) > self.config.max_child_stdin_buffer;
        if full {
            return Err(Reply::error(
                503,
                message.reply_id(),
                jsonrpc::UPSTREAM_GONE,
                "Service Unavailable: the upstream server is not reading its input",
            )
            .with_header("Retry-After", "1"));
        }
        Ok(())
    }

    fn initialize(&mut self, key: ConnKey, request: &Request, message: Message) {
        let id = message.reply_id();
        if self.session_ids.len() >= self.config.max_sessions {
            warn!(
                "refusing a new session: {} sessions open (--max-sessions)",
                self.session_ids.len()
            );
            let reply = Reply::error(
                503,
                id,
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
                let reply = Reply::error(500, id, jsonrpc::INTERNAL_ERROR, "no session id");
                self.reply(key, &reply, request.keep_alive);
                return;
            }
        };
        let session_key = self.sessions.next_key();
        let (upstream, description) = match self.upstream.start(session_key, self.poll.registry()) {
            Ok(started) => started,
            Err(error) => {
                let reply = Reply::error(
                    502,
                    id,
                    jsonrpc::UPSTREAM_GONE,
                    &format!("Bad Gateway: the upstream server could not be started: {error}"),
                );
                self.reply(key, &reply, request.keep_alive);
                return;
            }
        };
        let core = SessionCore::new(session_id, self.core_config(), self.now);
        info!(
            "session {} started: {description}, {} live",
            core.short_id(),
            self.session_ids.len() + 1
        );
        self.session_ids.insert(core.id().to_string(), session_key);
        self.sessions.insert(Session::new(core, upstream));
        let now = self.now;
        let origin = Origin::request(ClientRef::of(key, request), request);
        self.drive(session_key, origin, |core| {
            core.client_initialize(message, now)
        });
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
        self.session_ids.remove(session.core.id());
        self.sessions.remove(session_key);
    }
}
