//! One client session's state in the reactor: its sans-IO core, which client
//! connection carries each of its streams, and its per-session upstream state
//! (for a Streamable HTTP upstream; a stdio child is held by the stdio
//! upstream adapter, by session key).

use std::collections::HashMap;
use std::time::Instant;

use crate::arena::Key;
use crate::client::ConnKey;
use crate::core::SessionCore;
use crate::mcp::auth::Principal;
use crate::mcp::router::StreamId;
use crate::reactor::http_upstream::{ExchangeKey, QueuedPost, UpConnKey};
use crate::reactor::ServerId;
use crate::upstream::streams::StreamSchedule;

/// A Streamable HTTP upstream: the session's counterpart on the server.
#[derive(Debug, Default)]
pub struct HttpSession {
    /// The upstream's own `Mcp-Session-Id`, once its initialize answer named
    /// one. The client never sees it.
    pub upstream_id: Option<String>,
    /// Upstream connections not read from because a client stream is full.
    pub paused: Vec<UpConnKey>,
    /// The headers (`--forward-header`) the client sent last: mcphop's own
    /// requests for the session (GET stream, cancels, DELETE) carry them too.
    pub forwarded: Vec<(String, String)>,
    /// The upstream answered 404: the session is gone there already.
    pub forgotten: bool,
    /// Its GET stream, the gate on its messages, and the answer streams to
    /// continue (sans-IO).
    pub streams: StreamSchedule<ExchangeKey, StreamId>,
    /// The deadline of the armed upstream timer (gate, reopen, continue).
    pub upstream_timer: Option<Instant>,
}

/// A legacy HTTP+SSE upstream: the session's own SSE stream there, and the
/// endpoint its messages are POSTed to.
#[derive(Debug, Default)]
pub struct SseSession {
    /// The stream was opened (it opens with the session's first message).
    pub opened: bool,
    /// The exchange carrying the session's SSE stream, while it is open.
    pub stream: Option<ExchangeKey>,
    /// The target (path and query) the upstream named in its `endpoint`
    /// event.
    pub endpoint: Option<String>,
    /// Messages waiting for the endpoint.
    pub queued: Vec<QueuedPost>,
    /// The stream's connection, when it is not read because a client
    /// stream is full.
    pub paused: Vec<UpConnKey>,
    /// The headers (`--forward-header`) the client sent last.
    pub forwarded: Vec<(String, String)>,
}

/// What a session talks to upstream.
// The stdio variant is empty (its child lives in the stdio adapter); a
// session slot a few hundred bytes larger costs less than an allocation per
// HTTP session.
#[allow(clippy::large_enum_variant)]
pub enum Upstream {
    /// Its own stdio child, held by `reactor::stdio_upstream::StdioUpstream`.
    Stdio,
    /// A session on a Streamable HTTP server, reached through the pool.
    Http(HttpSession),
    /// A session on a legacy HTTP+SSE server: its own stream, POSTs through
    /// the pool.
    Sse(SseSession),
}

/// Names a session; stale once it was removed.
pub(crate) type SessionKey = Key<Session>;

/// One client session: its sans-IO core, the client connections carrying
/// its streams, and its upstream.
pub struct Session {
    pub core: SessionCore,
    /// Which client connection carries each open stream.
    pub stream_conns: HashMap<StreamId, ConnKey>,
    pub upstream: Upstream,
    /// The server it belongs to, for its whole life.
    pub server: ServerId,
    /// The connection carrying the session's one stream, for a session
    /// opened through the legacy HTTP+SSE front door.
    pub legacy_stream: Option<ConnKey>,
    /// The deadline of the armed session timer (the core's `poll_timeout`).
    pub timer: Option<Instant>,
    /// The principal whose token created it (none without authentication):
    /// only it reaches the session.
    pub owner: Option<Principal>,
    /// Who it counts against for the limits per client (a token's name,
    /// or an IP address).
    pub client: String,
}

impl Session {
    pub fn new(core: SessionCore, upstream: Upstream, server: ServerId) -> Self {
        Session {
            core,
            stream_conns: HashMap::new(),
            upstream,
            server,
            legacy_stream: None,
            timer: None,
            owner: None,
            client: String::new(),
        }
    }

    /// Binds the session to the principal that created it (logged by name,
    /// never by token).
    pub fn set_owner(&mut self, owner: Option<Principal>) {
        if let Some(owner) = &owner {
            log::info!("session {} belongs to {owner}", self.core.short_id());
        }
        self.owner = owner;
    }

    /// True when a request proving `principal` may reach the session.
    pub fn owned_by(&self, principal: Option<&Principal>) -> bool {
        self.owner.as_ref() == principal
    }

    /// The HTTP upstream session, for a session with one.
    pub fn http_mut(&mut self) -> Option<&mut HttpSession> {
        match &mut self.upstream {
            Upstream::Http(http) => Some(http),
            Upstream::Stdio | Upstream::Sse(_) => None,
        }
    }

    /// The HTTP upstream session, for a session with one.
    pub fn http(&self) -> Option<&HttpSession> {
        match &self.upstream {
            Upstream::Http(http) => Some(http),
            Upstream::Stdio | Upstream::Sse(_) => None,
        }
    }

    /// The legacy SSE upstream session, for a session with one.
    pub fn sse_mut(&mut self) -> Option<&mut SseSession> {
        match &mut self.upstream {
            Upstream::Sse(sse) => Some(sse),
            Upstream::Stdio | Upstream::Http(_) => None,
        }
    }

    /// The upstream connections not read because a client stream is full
    /// (an upstream reached over HTTP).
    pub fn paused_mut(&mut self) -> Option<&mut Vec<UpConnKey>> {
        match &mut self.upstream {
            Upstream::Http(http) => Some(&mut http.paused),
            Upstream::Sse(sse) => Some(&mut sse.paused),
            Upstream::Stdio => None,
        }
    }

    /// The headers (`--forward-header`) the client sent last, which
    /// mcphop's own requests for the session carry too.
    pub fn forwarded(&self) -> &[(String, String)] {
        match &self.upstream {
            Upstream::Http(http) => &http.forwarded,
            Upstream::Sse(sse) => &sse.forwarded,
            Upstream::Stdio => &[],
        }
    }
}

impl HttpSession {
    /// Describes the upstream session's end for the session's last log line.
    pub fn summary(&self) -> String {
        match (&self.upstream_id, self.forgotten) {
            (_, true) => "the upstream had forgotten its session".to_string(),
            (Some(_), false) => "upstream session deleted".to_string(),
            (None, false) => "the upstream kept no session".to_string(),
        }
    }
}
