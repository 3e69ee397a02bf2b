//! The session core: everything MCP about one client session, with no I/O.
//! It owns the router (streams, replay buffers, pending requests and their
//! deadlines), which streams a client carries, the negotiated protocol
//! version, the `initialize` exchange, the idle clock and the resume windows
//! of detached streams.
//!
//! Its surface is quinn-proto's: messages from the client and from the
//! upstream go in with `now`; `poll_timeout` says when it next needs
//! `handle_timeout`; what to do comes out as `Action`s, taken with
//! `take_actions`. It holds no socket, pid or clock: the reactor maps its
//! actions onto connections and upstreams, and the tests drive it on a
//! virtual clock (`tests/`).

use std::time::{Duration, Instant};

use log::{debug, warn};
use serde_json::json;
use serde_json::value::RawValue;

use std::rc::Rc;

use crate::jsonrpc::{self, IdKey, Kind, Message};
use crate::mcp::endpoint::Reply;
use crate::mcp::router::{
    Completion, Destination, Detached, Pending, RegisterError, ResumeError, Router, RouterLimits,
    StreamId,
};
use crate::mcp::tools::ToolFilter;

mod action;
mod filter;
#[cfg(test)]
mod tests;

pub(crate) use action::{Action, Forward, Payload};

/// The only protocol revision that allows JSON-RPC batches.
const BATCH_PROTOCOL_VERSION: &str = "2025-03-26";

/// What a session core needs to know of the configuration.
#[derive(Debug, Clone)]
pub(crate) struct CoreConfig {
    /// The tools its clients may not see or call (its server's `tools`).
    pub tools: Rc<ToolFilter>,
    pub router: RouterLimits,
    /// A session with no request in flight and no stream open ends after
    /// this long without a client request.
    pub idle_timeout: Duration,
    /// How long a stream whose client left is kept for a resume.
    pub resume_window: Duration,
}

/// Where a session is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reachable by its id.
    Live,
    /// Ended: no longer reachable; its upstream is being shut down.
    Ending { reason: String },
}

/// One session's MCP state.
pub(crate) struct SessionCore {
    id: String,
    phase: Phase,
    router: Router,
    config: CoreConfig,
    /// Streams a client connection carries now.
    attached: Vec<StreamId>,
    /// Streams whose client left, with since when: kept for a resume until
    /// `since + resume_window`.
    detached: Vec<(StreamId, Instant)>,
    /// The id of the `initialize` request, until its answer arrives.
    initialize_id: Option<IdKey>,
    /// The id `initialize` had, kept for the session's life: a cancel naming
    /// it is never forwarded.
    initialize_request: Option<IdKey>,
    /// The stream that answers `initialize` (its head names the session).
    initialize_stream: Option<StreamId>,
    protocol_version: Option<String>,
    /// The client declared it answers server requests (sampling,
    /// elicitation or roots), so the server will send it some.
    takes_server_requests: bool,
    /// mcphop is shutting down: the session ends once nothing is in flight.
    draining: bool,
    started: Instant,
    last_activity: Instant,
    /// When the idle rule is next checked.
    idle_check_at: Instant,
    actions: Vec<Action>,
}

impl SessionCore {
    pub(crate) fn new(id: String, config: CoreConfig, now: Instant) -> SessionCore {
        let idle_check_at = now + config.idle_timeout;
        SessionCore {
            id,
            phase: Phase::Live,
            router: Router::new(config.router),
            config,
            attached: Vec::new(),
            detached: Vec::new(),
            initialize_id: None,
            initialize_request: None,
            initialize_stream: None,
            protocol_version: None,
            takes_server_requests: false,
            draining: false,
            started: now,
            last_activity: now,
            idle_check_at,
            actions: Vec::new(),
        }
    }

    // ----- reading ----------------------------------------------------------

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The first characters of the id, enough to tell sessions apart in logs
    /// without writing the full bearer-like id into them.
    pub(crate) fn short_id(&self) -> &str {
        crate::session_id::short(&self.id)
    }

    pub(crate) fn is_live(&self) -> bool {
        self.phase == Phase::Live
    }

    pub(crate) fn phase(&self) -> &Phase {
        &self.phase
    }

    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// The protocol version the upstream agreed to.
    pub(crate) fn protocol_version(&self) -> Option<&str> {
        self.protocol_version.as_deref()
    }

    #[cfg(test)]
    pub(crate) fn pending_count(&self) -> usize {
        self.router.pending_count()
    }

    /// Requests on `stream` still waiting for an answer.
    pub(crate) fn pending_on(&self, stream: StreamId) -> usize {
        self.router.pending_on(stream)
    }

    /// Whether a client connection carries `stream`.
    #[cfg(test)]
    pub(crate) fn is_attached(&self, stream: StreamId) -> bool {
        self.attached.contains(&stream)
    }

    /// The actions decided since the last call, in order. Hand the vector
    /// back with `recycle` to keep its allocation.
    pub(crate) fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// Returns an emptied action vector for reuse.
    pub(crate) fn recycle(&mut self, mut actions: Vec<Action>) {
        if self.actions.is_empty() {
            actions.clear();
            self.actions = actions;
        }
    }

    // ----- timers -----------------------------------------------------------

    /// When `handle_timeout` is next due: the earliest request deadline,
    /// resume window or idle check. None once the session ended.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if !self.is_live() {
            return None;
        }
        let window = self.config.resume_window;
        self.detached
            .iter()
            .map(|(_, since)| *since + window)
            .chain(self.router.next_deadline())
            .chain(Some(self.idle_check_at))
            .min()
    }

    /// Acts on every deadline that passed by `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if !self.is_live() {
            return;
        }
        self.expire_requests(now);
        self.expire_detached(now);
        if self.is_live() && now >= self.idle_check_at {
            let timeout = self.config.idle_timeout;
            let busy = !self.attached.is_empty() || self.router.pending_count() > 0;
            let idle_until = self.last_activity + timeout;
            if !busy && now >= idle_until {
                self.end("idle timeout", false);
                return;
            }
            self.idle_check_at = if busy { now + timeout } else { idle_until };
        }
    }

    fn expire_requests(&mut self, now: Instant) {
        if self.router.next_deadline().is_none_or(|at| at > now) {
            return;
        }
        let mut initialize_expired = false;
        for (pending, destination, error) in self.router.take_expired(now) {
            warn!(
                "session {}: {} {} timed out",
                self.short_id(),
                pending.method,
                pending.id
            );
            self.deliver(destination, Payload::Shared(error));
            if pending.is_initialize() {
                initialize_expired = true;
            } else {
                self.cancel_upstream(&pending, "request timed out");
            }
        }
        if initialize_expired {
            self.end(
                "the child did not answer initialize in time (--spawn-timeout)",
                false,
            );
        }
    }

    fn expire_detached(&mut self, now: Instant) {
        let window = self.config.resume_window;
        let mut index = 0;
        while index < self.detached.len() {
            let (stream, since) = self.detached[index];
            if since + window > now {
                index += 1;
                continue;
            }
            self.detached.swap_remove(index);
            let abandoned = self.router.expire_detached(stream, since);
            for pending in abandoned {
                debug!(
                    "session {}: client left {} {} without resuming: cancelling it",
                    self.short_id(),
                    pending.method,
                    pending.id
                );
                self.cancel_upstream(&pending, "the client disconnected");
            }
        }
    }

    // ----- from the client --------------------------------------------------

    /// A client request reached the session: it is not idle.
    pub(crate) fn touch(&mut self, now: Instant) {
        self.last_activity = now;
    }

    /// A protocol version header is checked against what the session
    /// negotiated: a revision later than that one is refused. An earlier
    /// supported revision passes, because real clients (the conformance suite
    /// among them) send one, and every revision up to the negotiated one is
    /// understood by both ends. Unsupported values were refused already.
    pub(crate) fn check_version(&self, header: &str) -> Result<(), Reply> {
        match self.protocol_version.as_deref() {
            // Revisions are dates (YYYY-MM-DD), so they order as strings.
            Some(negotiated) if header > negotiated => Err(Reply::error(
                400,
                RawValue::NULL,
                jsonrpc::INVALID_REQUEST,
                &format!(
                    "Bad Request: MCP-Protocol-Version {header} is later than the version this session negotiated, {negotiated}"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The client's `initialize`, the session's first message.
    pub(crate) fn client_initialize(&mut self, message: Message, now: Instant) {
        self.initialize_id = message.id_key();
        self.initialize_request = self.initialize_id.clone();
        // sampling, elicitation or roots among the client's capabilities.
        self.takes_server_requests = message.takes_server_requests();
        self.forward_requests(vec![message], true, true, now);
    }

    /// One message POSTed by the client.
    pub(crate) fn client_message(&mut self, message: Message, now: Instant) {
        match message.kind() {
            Kind::Request => self.forward_requests(vec![message], true, false, now),
            Kind::Notification => {
                if message.method() == Some("notifications/cancelled")
                    && !self.cancel_locally(&message)
                {
                    self.actions.push(Action::Reply(Reply::empty(202)));
                    return;
                }
                self.forward_from_client(message);
            }
            Kind::Response => {
                self.router.client_answered(&message);
                self.forward_from_client(message);
            }
        }
    }

    fn forward_from_client(&mut self, message: Message) {
        self.actions.push(Action::Forward(Forward {
            messages: vec![message],
            stream: None,
            whole_body: true,
            client_waits: true,
            initialize: false,
        }));
    }

    /// A 2025-03-26 batch: every element that is not a request goes upstream
    /// on its own; the requests go together, answered on one stream.
    pub(crate) fn client_batch(&mut self, messages: Vec<Message>, now: Instant) {
        if self.protocol_version.as_deref() != Some(BATCH_PROTOCOL_VERSION) {
            let reply = Reply::error(
                400,
                RawValue::NULL,
                jsonrpc::INVALID_REQUEST,
                &format!(
                    "Invalid Request: JSON-RPC batches are allowed only in protocol {BATCH_PROTOCOL_VERSION}; this session uses {}",
                    self.protocol_version.as_deref().unwrap_or("an unknown version")
                ),
            );
            self.actions.push(Action::Reply(reply));
            return;
        }
        let (requests, others): (Vec<_>, Vec<_>) = messages
            .into_iter()
            .partition(|message| message.kind() == Kind::Request);
        for message in others {
            if message.kind() == Kind::Response {
                self.router.client_answered(&message);
            }
            if message.method() == Some("notifications/cancelled") && !self.cancel_locally(&message)
            {
                continue;
            }
            self.actions.push(Action::Forward(Forward::own(message)));
        }
        if requests.is_empty() {
            self.actions.push(Action::Reply(Reply::empty(202)));
        } else {
            self.forward_requests(requests, false, false, now);
        }
    }

    /// Registers requests on one new stream and sends them upstream; the
    /// stream starts when the driver calls `stream_ready`. The whole POST is
    /// refused before anything travels if an id is missing or in flight.
    fn forward_requests(
        &mut self,
        messages: Vec<Message>,
        whole_body: bool,
        initialize: bool,
        now: Instant,
    ) {
        let mut seen = Vec::with_capacity(messages.len());
        for message in &messages {
            let problem = match message.id_key() {
                None => Some(RegisterError::NoId),
                Some(id) if self.router.is_pending(&id) || seen.contains(&id) => {
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
                let reply = Reply::error(400, message.reply_id(), jsonrpc::INVALID_REQUEST, text);
                self.actions.push(Action::Reply(reply));
                return;
            }
            if let Some(reply) = self.hidden_tool_call(message) {
                self.actions.push(Action::Reply(reply));
                return;
            }
        }
        let stream = self.router.open_post_stream();
        if let [message] = messages.as_slice() {
            debug!(
                "session {}: {} {} on stream {stream}",
                self.short_id(),
                message.method().unwrap_or("?"),
                message.reply_id()
            );
        }
        for message in &messages {
            // Checked above: registration cannot fail now.
            let _ = self.router.register_request(stream, message, now);
        }
        if initialize {
            self.initialize_stream = Some(stream);
        }
        self.actions.push(Action::Forward(Forward {
            messages,
            stream: Some(stream),
            whole_body,
            client_waits: true,
            initialize,
        }));
    }

    /// The upstream took the requests of `stream` (a pipe at once; an HTTP
    /// upstream with its 200 head): the stream starts on the waiting client's
    /// connection, with what was recorded for it meanwhile (a server request
    /// that came on another upstream stream before this head).
    pub(crate) fn stream_ready(&mut self, stream: StreamId) {
        self.start_stream(stream, self.initialize_stream == Some(stream), true);
        if let Ok(recorded) = self.router.resume_after(stream, 0) {
            for (seq, message) in recorded.events {
                self.push_event(stream, Some(seq), Payload::Shared(message));
            }
            if recorded.finished {
                self.end_stream(stream);
            }
        }
    }

    /// The upstream refused the requests of `stream` before any answer (an
    /// HTTP error status, a failed exchange): they are forgotten, and the
    /// client hears of it in the reply to its POST.
    pub(crate) fn stream_refused(&mut self, stream: StreamId, request_ids: &[IdKey]) {
        for id in request_ids {
            self.router.refused(id);
        }
        self.router.stream_ended(stream);
    }

    /// The client requests that ended since the last call (for metrics).
    pub(crate) fn take_completions(&mut self) -> impl Iterator<Item = Completion> + '_ {
        self.router.take_completions()
    }

    /// The client opened its GET stream (no `Last-Event-ID`).
    pub(crate) fn client_open_get(&mut self) {
        debug!(
            "session {}: the client opened its GET stream",
            self.short_id()
        );
        let (stream, replaced) = self.router.open_get_stream();
        if let Some(old) = replaced.filter(|old| self.detach_quietly(*old)) {
            debug!(
                "session {}: a new GET stream replaces the old one (stream {old})",
                self.short_id()
            );
            self.actions.push(Action::EndStream { stream: old });
        }
        let held = self.router.release_held(stream);
        self.start_stream(stream, false, true);
        for (seq, message) in held {
            self.push_event(stream, Some(seq), Payload::Shared(message));
        }
        self.actions.push(Action::OpenUpstreamGet);
    }

    /// A GET with `Last-Event-ID`: re-attach the stream it names, replay
    /// what the client missed, then carry on live (or end, if it is done).
    pub(crate) fn client_resume(&mut self, last_event_id: &str) {
        let (stream, resumed) = match self.router.resume(last_event_id) {
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
                    self.short_id()
                );
                let reply = Reply::error(400, RawValue::NULL, jsonrpc::INVALID_REQUEST, text);
                self.actions.push(Action::Reply(reply));
                return;
            }
        };
        self.detached.retain(|(detached, _)| *detached != stream);
        // A client may reconnect before its old connection's close was
        // noticed: the new connection takes the stream over.
        if self.detach_quietly(stream) {
            self.actions.push(Action::EndStream { stream });
        }
        debug!(
            "session {}: stream {stream} resumed after {last_event_id}, {} event(s) replayed",
            self.short_id(),
            resumed.events.len()
        );
        self.start_stream(stream, false, false);
        for (seq, message) in resumed.events {
            self.push_event(stream, Some(seq), Payload::Shared(message));
        }
        if resumed.finished {
            self.end_stream(stream);
        }
    }

    /// The connection carrying `stream` went away: a stream with answers to
    /// come is kept for a resume, for the resume window.
    pub(crate) fn stream_lost(&mut self, stream: StreamId, now: Instant) {
        // Also for a stream not started yet: its client left before the
        // upstream's head, and may resume it.
        self.detach_quietly(stream);
        if let Detached::Kept { since } = self.router.detach(stream, now) {
            debug!(
                "session {}: stream {stream} lost its client; kept {:?} for a resume",
                self.short_id(),
                self.config.resume_window
            );
            self.detached.push((stream, since));
        }
    }

    /// Forgets a request the client cancelled and ends its stream; false when
    /// the cancel must not travel on (it names `initialize`).
    fn cancel_locally(&mut self, message: &Message) -> bool {
        let Some(id) = message.cancelled_request() else {
            return true;
        };
        if self.initialize_request.as_ref() == Some(&id) {
            debug!(
                "session {}: ignoring a cancel of initialize",
                self.short_id()
            );
            return false;
        }
        if let Some((pending, then_close)) = self.router.cancel(&id) {
            debug!(
                "session {}: client cancelled {} {}",
                self.short_id(),
                pending.method,
                pending.id
            );
            if then_close {
                self.end_stream(pending.stream);
            }
        }
        true
    }

    // ----- from the upstream ------------------------------------------------

    /// One message from the upstream, routed where it belongs. Its bytes
    /// move into the stream's replay history, which its `Event` shares.
    pub(crate) fn upstream_message(&mut self, message: Message, now: Instant) {
        if !self.is_live() {
            return;
        }
        let mut initialize_failed = false;
        let mut open_get = false;
        if message.kind() == Kind::Response
            && self.initialize_id.is_some()
            && message.id_key() == self.initialize_id
        {
            self.initialize_id = None;
            if message.has_result() {
                open_get = self.takes_server_requests;
                self.protocol_version = message.result_protocol_version().map(String::from);
                debug!(
                    "session {}: initialized at protocol {}",
                    self.short_id(),
                    self.protocol_version.as_deref().unwrap_or("?")
                );
            } else {
                initialize_failed = true;
            }
        }
        let message = self.filter_tools(message);
        let (destination, raw) = self.router.route(message, now);
        let dropped = self.router.take_dropped_count();
        if dropped > 0 {
            warn!(
                "session {}: dropped {dropped} held message(s): no stream open and the buffer is full",
                self.short_id()
            );
        }
        self.deliver(destination, Payload::Shared(raw));
        if open_get {
            // Its server requests may go on the GET stream, and a server
            // drops what it sends there while no GET stream is open: open it
            // now, before the client's first request reaches the server,
            // which a client may send before its own GET stream.
            self.actions.push(Action::OpenUpstreamGet);
        }
        if initialize_failed {
            self.end("the child refused initialize", false);
        } else if self.draining {
            self.end_if_quiet();
        }
    }

    /// Every request still waiting on `stream` gets an error: its upstream
    /// answer stream ended or broke.
    pub(crate) fn fail_stream(&mut self, stream: StreamId, why: &str) {
        for (_, destination, error) in self.router.fail_stream(stream, why) {
            self.deliver(destination, Payload::Shared(error));
        }
    }

    // ----- ending -----------------------------------------------------------

    /// mcphop is shutting down: the GET stream ends now (it carries nothing
    /// in flight), and the session ends once no request is in flight.
    pub(crate) fn drain(&mut self) {
        self.draining = true;
        if let Some(stream) = self.router.get_stream() {
            if self.detach_quietly(stream) {
                self.actions.push(Action::EndStream { stream });
            }
        }
        self.end_if_quiet();
    }

    /// Ends a draining session once no request of it is in flight.
    pub(crate) fn end_if_quiet(&mut self) {
        if self.is_live() && self.router.pending_count() == 0 {
            self.end("mcphop is shutting down", false);
        }
    }

    /// Ends a live session: every request still waiting gets a JSON-RPC error
    /// on its stream, every stream ends, and `Ended` tells the driver to shut
    /// the upstream down. `shutting_down` picks the error code.
    pub(crate) fn end(&mut self, reason: &str, shutting_down: bool) {
        if !self.is_live() {
            return;
        }
        self.phase = Phase::Ending {
            reason: reason.to_string(),
        };
        let code = if shutting_down || self.draining {
            jsonrpc::SHUTTING_DOWN
        } else {
            jsonrpc::UPSTREAM_GONE
        };
        let message = format!("The upstream session ended: {reason}");
        let pending = self.router.drain();
        for request in &pending {
            if self.attached.contains(&request.stream) {
                let error = jsonrpc::error_response(&request.id.to_raw(), code, &message);
                self.actions.push(Action::Event {
                    stream: request.stream,
                    seq: None,
                    payload: Payload::Owned(error),
                });
            }
        }
        for stream in std::mem::take(&mut self.attached) {
            self.actions.push(Action::EndStream { stream });
        }
        self.detached.clear();
        self.actions.push(Action::Ended {
            reason: reason.to_string(),
        });
    }

    // ----- inside -----------------------------------------------------------

    fn start_stream(&mut self, stream: StreamId, session_header: bool, priming: bool) {
        if !self.attached.contains(&stream) {
            self.attached.push(stream);
        }
        self.actions.push(Action::StartStream {
            stream,
            session_header,
            priming,
        });
    }

    /// Forgets that a client carries `stream`, telling the router nothing;
    /// false if none did.
    fn detach_quietly(&mut self, stream: StreamId) -> bool {
        let before = self.attached.len();
        self.attached.retain(|attached| *attached != stream);
        self.attached.len() != before
    }

    /// A stream carried its last answer: end it on its connection. While no
    /// connection carries it, the router keeps it for a resume.
    fn end_stream(&mut self, stream: StreamId) {
        if self.detach_quietly(stream) {
            self.router.stream_ended(stream);
            self.actions.push(Action::EndStream { stream });
        }
    }

    fn push_event(&mut self, stream: StreamId, seq: Option<u64>, payload: Payload) {
        self.actions.push(Action::Event {
            stream,
            seq,
            payload,
        });
    }

    /// Writes an event the router recorded if a client carries its stream,
    /// and ends the stream when it is done.
    fn deliver(&mut self, destination: Destination, payload: Payload) {
        match destination {
            Destination::Stream {
                stream,
                seq,
                then_close,
            } => {
                if self.attached.contains(&stream) {
                    self.push_event(stream, Some(seq), payload);
                }
                if then_close {
                    self.end_stream(stream);
                }
            }
            Destination::Held => {}
            Destination::Orphaned => debug!(
                "session {}: dropped an answer to a request that was cancelled or timed out",
                self.short_id()
            ),
        }
    }

    /// Tells the upstream a request is cancelled (it timed out, or its
    /// client left). `initialize` is never cancelled.
    fn cancel_upstream(&mut self, pending: &Pending, reason: &str) {
        if pending.is_initialize() {
            return;
        }
        let cancel = json!({
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": pending.id.to_raw(), "reason": reason},
        });
        // Written and read back through the one parser, so it travels like
        // any message; a failure (none is possible) only loses the cancel.
        let cancel = serde_json::to_vec(&cancel)
            .map_err(|error| error.to_string())
            .and_then(|bytes| Message::parse(bytes).map_err(|why| format!("{why:?}")));
        match cancel {
            Ok(cancel) => self.actions.push(Action::Forward(Forward::own(cancel))),
            Err(why) => warn!("session {}: cannot write a cancel: {why}", self.short_id()),
        }
    }
}
