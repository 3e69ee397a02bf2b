//! The Streamable HTTP endpoint's front-door rules: given one decoded HTTP
//! request, decide what it asks for or which error status it earns. It checks
//! Host and Origin, path, method, `Accept`, `Content-Type`, protocol version
//! headers and JSON-RPC shape; it owns no sessions and touches no sockets.

use serde_json::value::RawValue;

use crate::http::request::Request;
use crate::jsonrpc::{self, Carried, Kind, Message, Rejected};
use crate::mcp::{STATELESS_PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS};

/// Header that carries the session id.
pub const SESSION_HEADER: &str = "mcp-session-id";
/// Header that carries the negotiated protocol version.
pub const PROTOCOL_VERSION_HEADER: &str = "mcp-protocol-version";

/// Which `Host` and `Origin` values are accepted: a guard against DNS rebinding.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    hosts: Vec<String>,
    origins: Vec<String>,
}

impl AccessPolicy {
    /// The loopback names for `port`, plus the operator's extra hosts and origins.
    pub fn new(port: u16, extra_hosts: &[String], extra_origins: &[String]) -> Self {
        let names = ["localhost", "127.0.0.1", "[::1]"];
        let mut hosts: Vec<String> = names
            .iter()
            .flat_map(|name| [name.to_string(), format!("{name}:{port}")])
            .collect();
        hosts.extend(extra_hosts.iter().map(|host| host.to_ascii_lowercase()));
        let mut origins: Vec<String> = ["http", "https"]
            .iter()
            .flat_map(|scheme| {
                names.iter().flat_map(move |name| {
                    [
                        format!("{scheme}://{name}"),
                        format!("{scheme}://{name}:{port}"),
                    ]
                })
            })
            .collect();
        origins.extend(
            extra_origins
                .iter()
                .map(|origin| origin.to_ascii_lowercase()),
        );
        AccessPolicy { hosts, origins }
    }

    fn allows_host(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        self.hosts.contains(&host)
    }

    fn allows_origin(&self, origin: &str) -> bool {
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        self.origins.contains(&origin)
    }
}

/// An HTTP response decided without a session: an error, or a bare status.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    /// A JSON body (usually a JSON-RPC error), or empty.
    pub body: Vec<u8>,
    /// Headers beyond Content-Type and Content-Length.
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    /// A reply whose body is a JSON-RPC error.
    pub fn error(status: u16, id: &RawValue, code: i64, message: &str) -> Self {
        Reply {
            status,
            body: jsonrpc::error_response(id, code, message),
            headers: Vec::new(),
        }
    }

    /// A reply with no body.
    pub fn empty(status: u16) -> Self {
        Reply {
            status,
            body: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The 404 for a session id that is unknown, expired or ended.
    pub fn session_not_found() -> Self {
        Reply::error(
            404,
            RawValue::NULL,
            jsonrpc::UPSTREAM_GONE,
            "Session not found: it is unknown, expired or ended; start a new one with initialize",
        )
    }
}

/// What a request asks of the proxy, once it passed the front-door checks.
#[derive(Debug, Clone, PartialEq)]
pub enum Intent {
    /// Answer at once.
    Reply(Reply),
    /// POST `initialize` without a session: create a session.
    Initialize { message: Message },
    /// POST of one message to an existing session; the message owns the
    /// request's body.
    Post { session: String, message: Message },
    /// POST of a JSON-RPC batch (allowed in protocol 2025-03-26 only).
    Batch {
        session: String,
        messages: Vec<Message>,
    },
    /// GET: open the session's stream for messages tied to no request, or,
    /// with `Last-Event-ID`, resume a stream the client lost.
    OpenStream {
        session: String,
        last_event_id: Option<String>,
    },
    /// DELETE: end the session.
    Delete { session: String },
    /// A stateless-era (2026-07-28) request: it passes straight through to an
    /// HTTP upstream; with a stdio upstream it gets `refusal`.
    Stateless { refusal: Reply },
}

impl Intent {
    /// The first message a session-bound POST carries (none for other
    /// intents).
    pub fn first_message(&self) -> Option<&Message> {
        match self {
            Intent::Post { message, .. } => Some(message),
            Intent::Batch { messages, .. } => messages.first(),
            _ => None,
        }
    }
}

/// Decides what `request` means for an endpoint served at `path`. A POST
/// whose message goes to a session gives its body to the `Intent` (taken, not
/// copied); any other request keeps it.
pub fn interpret(request: &mut Request, path: &str, policy: &AccessPolicy) -> Intent {
    match check_access(request, policy) {
        Ok(()) => {}
        Err(reply) => return Intent::Reply(reply),
    }
    if request.path() != path {
        return Intent::Reply(Reply::error(
            404,
            RawValue::NULL,
            jsonrpc::INVALID_REQUEST,
            "Not found: the MCP endpoint is elsewhere",
        ));
    }
    match request.method.as_str() {
        "POST" => interpret_post(request),
        "GET" => interpret_get(request),
        "DELETE" => match session_of(request) {
            Ok(session) => Intent::Delete { session },
            Err(reply) => Intent::Reply(reply),
        },
        _ => Intent::Reply(
            Reply::error(
                405,
                RawValue::NULL,
                jsonrpc::INVALID_REQUEST,
                "Method not allowed: use POST, GET or DELETE",
            )
            .with_header("Allow", "GET, POST, DELETE"),
        ),
    }
}

pub(crate) fn check_access(request: &Request, policy: &AccessPolicy) -> Result<(), Reply> {
    // RFC 9112 section 3.2: a request with more than one Host is invalid, and
    // checking only the first would let a second one slip past the guard.
    if request
        .headers
        .iter()
        .filter(|(name, _)| name == "host")
        .nth(1)
        .is_some()
    {
        return Err(Reply::error(
            400,
            RawValue::NULL,
            jsonrpc::INVALID_REQUEST,
            "Bad Request: more than one Host header",
        ));
    }
    // Mcp-Session-Id is a singleton too: with two different values, the
    // session a request reaches would depend on which field is read (here,
    // the first; an upstream or another proxy may read the last).
    let mut sessions = request
        .headers
        .iter()
        .filter(|(name, _)| name == SESSION_HEADER)
        .map(|(_, value)| value);
    if let Some(first) = sessions.next() {
        if sessions.any(|value| value != first) {
            return Err(Reply::error(
                400,
                RawValue::NULL,
                jsonrpc::INVALID_REQUEST,
                "Bad Request: more than one Mcp-Session-Id",
            ));
        }
    }
    match request.header("host") {
        Some(host) if policy.allows_host(host) => {}
        Some(_) => {
            return Err(Reply::error(
                403,
                RawValue::NULL,
                jsonrpc::INVALID_REQUEST,
                "Forbidden: Host header not allowed",
            ))
        }
        None if request.minor_version == 0 => {}
        None => {
            return Err(Reply::error(
                400,
                RawValue::NULL,
                jsonrpc::INVALID_REQUEST,
                "Bad Request: missing Host header",
            ))
        }
    }
    match request.header("origin") {
        Some(origin) if !policy.allows_origin(origin) => Err(Reply::error(
            403,
            RawValue::NULL,
            jsonrpc::INVALID_REQUEST,
            "Forbidden: Origin not allowed",
        )),
        _ => Ok(()),
    }
}

/// True when an `Accept` header admits `media_type`.
fn accepts(accept: &str, media_type: &str) -> bool {
    let (family, _) = media_type.split_once('/').unwrap_or((media_type, ""));
    accept.split(',').any(|item| {
        let range = item
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        range == media_type || range == "*/*" || range == format!("{family}/*")
    })
}

fn session_of(request: &Request) -> Result<String, Reply> {
    match request.header(SESSION_HEADER) {
        Some(session) if !session.is_empty() => Ok(session.to_string()),
        _ => Err(Reply::error(
            400,
            RawValue::NULL,
            jsonrpc::INVALID_REQUEST,
            "Bad Request: Mcp-Session-Id header is required",
        )),
    }
}

fn check_protocol_header(request: &Request) -> Result<(), Reply> {
    match request.header(PROTOCOL_VERSION_HEADER) {
        Some(version) if !SUPPORTED_PROTOCOL_VERSIONS.contains(&version.trim()) => {
            Err(Reply::error(
                400,
                RawValue::NULL,
                jsonrpc::INVALID_REQUEST,
                &format!(
                    "Bad Request: unsupported MCP-Protocol-Version {:?}; supported: {}",
                    version,
                    SUPPORTED_PROTOCOL_VERSIONS.join(", ")
                ),
            ))
        }
        _ => Ok(()),
    }
}

fn interpret_get(request: &Request) -> Intent {
    if !request
        .header("accept")
        .is_some_and(|accept| accepts(accept, "text/event-stream"))
    {
        return Intent::Reply(Reply::error(
            406,
            RawValue::NULL,
            jsonrpc::INVALID_REQUEST,
            "Not Acceptable: a GET must accept text/event-stream",
        ));
    }
    if let Err(reply) = check_protocol_header(request) {
        return Intent::Reply(reply);
    }
    match session_of(request) {
        Ok(session) => Intent::OpenStream {
            session,
            last_event_id: request
                .header("last-event-id")
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(str::to_string),
        },
        Err(reply) => Intent::Reply(reply),
    }
}

fn interpret_batch(request: &Request, elements: Vec<&[u8]>) -> Intent {
    if elements.is_empty() {
        return Intent::Reply(Reply::error(
            400,
            RawValue::NULL,
            jsonrpc::INVALID_REQUEST,
            "Invalid Request: an empty batch",
        ));
    }
    let mut messages = Vec::with_capacity(elements.len());
    for element in elements {
        // Each element gets its own bytes: a batch is rare (one protocol
        // revision), and its messages then travel like single ones.
        let message = match Message::parse(element) {
            Ok(message) => message,
            Err(rejected) => {
                let why = match &rejected {
                    Rejected::NotJsonRpc { why, .. } => why,
                    Rejected::NotJson(_) => "not JSON",
                };
                return Intent::Reply(Reply::error(
                    400,
                    rejected.id(),
                    jsonrpc::INVALID_REQUEST,
                    &format!("Invalid Request in batch: {why}"),
                ));
            }
        };
        if message.method() == Some("initialize") {
            return Intent::Reply(Reply::error(
                400,
                message.reply_id(),
                jsonrpc::INVALID_REQUEST,
                "Invalid Request: initialize must not be part of a batch",
            ));
        }
        messages.push(message.unbind().bind(element.to_vec()));
    }
    let session = match session_of(request) {
        Ok(session) => session,
        Err(reply) => return Intent::Reply(reply),
    };
    if let Err(reply) = check_protocol_header(request) {
        return Intent::Reply(reply);
    }
    Intent::Batch { session, messages }
}

/// True when a request belongs to the stateless era (2026-07-28), which this
/// endpoint does not speak yet.
fn is_stateless_era(request: &Request, message: &Message<&[u8]>) -> bool {
    message.method() == Some("server/discover")
        || message.meta_protocol_version() == Some(STATELESS_PROTOCOL_VERSION)
        || (request.header(SESSION_HEADER).is_none()
            && request
                .header(PROTOCOL_VERSION_HEADER)
                .is_some_and(|version| version.trim() == STATELESS_PROTOCOL_VERSION)
            && message.method() != Some("initialize"))
}

fn interpret_post(request: &mut Request) -> Intent {
    let accept = request.header("accept").unwrap_or("");
    if !(accepts(accept, "application/json") && accepts(accept, "text/event-stream")) {
        return Intent::Reply(Reply::error(
            406,
            RawValue::NULL,
            jsonrpc::INVALID_REQUEST,
            "Not Acceptable: a POST must accept both application/json and text/event-stream",
        ));
    }
    let content_type = request.header("content-type").unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Intent::Reply(Reply::error(
            415,
            RawValue::NULL,
            jsonrpc::INVALID_REQUEST,
            "Unsupported Media Type: Content-Type must be application/json",
        ));
    }
    let message = match jsonrpc::carried(&request.body) {
        Ok(Carried::One(bytes)) => Message::parse(bytes),
        Ok(Carried::Batch(elements)) => return interpret_batch(request, elements),
        Err(rejected) => Err(rejected),
    };
    let message = match message {
        Ok(message) => message,
        Err(rejected) => {
            let text = match &rejected {
                Rejected::NotJson(error) => format!("Parse error: the body is not JSON ({error})"),
                Rejected::NotJsonRpc { why, .. } => format!("Invalid Request: {why}"),
            };
            return Intent::Reply(Reply::error(400, rejected.id(), rejected.code(), &text));
        }
    };
    let id = message.reply_id();
    if is_stateless_era(request, &message) {
        // Deliberately not -32022 (unsupported version): dual-era clients read a
        // plain 400 as "this server predates 2026-07-28" and fall back to
        // initialize, which is what this endpoint serves.
        return Intent::Stateless {
            refusal: Reply::error(
                400,
                id,
                jsonrpc::INVALID_REQUEST,
                "Bad Request: this endpoint serves the handshake era (2024-11-05 to 2025-11-25); \
                 start a session with initialize",
            ),
        };
    }
    if message.kind() == Kind::Request && message.method() == Some("initialize") {
        if request.header(SESSION_HEADER).is_some() {
            return Intent::Reply(Reply::error(
                400,
                id,
                jsonrpc::INVALID_REQUEST,
                "Bad Request: initialize must not carry an Mcp-Session-Id; the session is already initialized",
            ));
        }
        let message = message.unbind();
        return Intent::Initialize {
            message: message.bind(std::mem::take(&mut request.body)),
        };
    }
    let session = match session_of(request) {
        Ok(session) => session,
        Err(mut reply) => {
            reply.body = jsonrpc::error_response(
                id,
                jsonrpc::INVALID_REQUEST,
                "Bad Request: Mcp-Session-Id header is required",
            );
            return Intent::Reply(reply);
        }
    };
    if let Err(reply) = check_protocol_header(request) {
        return Intent::Reply(reply);
    }
    let message = message.unbind();
    Intent::Post {
        session,
        message: message.bind(std::mem::take(&mut request.body)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const ACCEPT_BOTH: &str = "application/json, text/event-stream";

    fn request(method: &str, headers: &[(&str, &str)], body: &str) -> Request {
        let mut all = Vec::new();
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("host"))
        {
            all.push(("host".to_string(), "127.0.0.1:8080".to_string()));
        }
        all.extend(
            headers
                .iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value.to_string())),
        );
        Request {
            method: method.to_string(),
            target: "/mcp".to_string(),
            minor_version: 1,
            headers: all,
            body: body.as_bytes().to_vec(),
            keep_alive: true,
        }
    }

    fn post(headers: &[(&str, &str)], body: &str) -> Request {
        let mut all = vec![
            ("accept", ACCEPT_BOTH),
            ("content-type", "application/json"),
        ];
        all.extend_from_slice(headers);
        request("POST", &all, body)
    }

    fn status(intent: Intent) -> u16 {
        match intent {
            Intent::Reply(reply) => reply.status,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn policy() -> AccessPolicy {
        AccessPolicy::new(8080, &[], &[])
    }

    const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#;
    const CALL: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;

    #[test]
    fn initialize_without_session_creates_one() {
        let intent = interpret(&mut post(&[], INIT), "/mcp", &policy());
        assert!(matches!(intent, Intent::Initialize { .. }));
    }

    #[test]
    fn status_codes_of_the_front_door() {
        let p = policy();
        let cases: Vec<(Request, u16)> = vec![
            (post(&[], CALL), 400),
            (post(&[("origin", "http://evil.example")], INIT), 403),
            (
                request(
                    "POST",
                    &[("host", "evil.example:8080"), ("accept", ACCEPT_BOTH)],
                    INIT,
                ),
                403,
            ),
            (request("PUT", &[], ""), 405),
            (
                Request {
                    headers: vec![
                        ("host".into(), "127.0.0.1:8080".into()),
                        ("host".into(), "evil.example".into()),
                    ],
                    ..post(&[], INIT)
                },
                400,
            ),
            (
                request(
                    "POST",
                    &[
                        ("accept", "application/json"),
                        ("content-type", "application/json"),
                    ],
                    INIT,
                ),
                406,
            ),
            (
                request(
                    "POST",
                    &[("accept", ACCEPT_BOTH), ("content-type", "text/plain")],
                    INIT,
                ),
                415,
            ),
            (post(&[], "{not json"), 400),
            (post(&[], r#"{"id":1}"#), 400),
            (post(&[], "[]"), 400),
            (
                post(
                    &[
                        ("mcp-session-id", "abc"),
                        ("mcp-protocol-version", "1999-01-01"),
                    ],
                    CALL,
                ),
                400,
            ),
            (post(&[("mcp-session-id", "abc")], INIT), 400),
            (
                request(
                    "GET",
                    &[("accept", "application/json"), ("mcp-session-id", "a")],
                    "",
                ),
                406,
            ),
            (request("GET", &[("accept", "text/event-stream")], ""), 400),
            (request("DELETE", &[], ""), 400),
        ];
        for (mut request, expected) in cases {
            let described = format!("{} {:?}", request.method, request.headers);
            assert_eq!(
                status(interpret(&mut request, "/mcp", &p)),
                expected,
                "{described}"
            );
        }
    }

    #[test]
    fn two_different_session_ids_are_400() {
        let two = [("mcp-session-id", "s1"), ("mcp-session-id", "s2")];
        let get = [("accept", "text/event-stream"), two[0], two[1]];
        for mut request in [
            post(&two, CALL),
            request("GET", &get, ""),
            request("DELETE", &two, ""),
        ] {
            match interpret(&mut request, "/mcp", &policy()) {
                Intent::Reply(reply) => {
                    assert_eq!(reply.status, 400);
                    let value: Value = serde_json::from_slice(&reply.body).unwrap();
                    assert_eq!(value["error"]["code"], -32600);
                    assert_eq!(value["id"], Value::Null);
                }
                other => panic!("{other:?}"),
            }
        }
        // The same id twice names one session.
        let same = [("mcp-session-id", "s1"), ("mcp-session-id", "s1")];
        assert!(matches!(
            interpret(&mut post(&same, CALL), "/mcp", &policy()),
            Intent::Post { ref session, .. } if session == "s1"
        ));
    }

    #[test]
    fn parse_and_shape_errors_carry_json_rpc_codes() {
        for (body, code) in [("{nope", -32700), (r#"{"jsonrpc":"2.0"}"#, -32600)] {
            match interpret(&mut post(&[], body), "/mcp", &policy()) {
                Intent::Reply(reply) => {
                    let value: Value = serde_json::from_slice(&reply.body).unwrap();
                    assert_eq!(value["error"]["code"], code);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn stateless_era_gets_a_plain_400() {
        let discover = r#"{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{}}"#;
        let intent = interpret(
            &mut post(&[("mcp-protocol-version", "2026-07-28")], discover),
            "/mcp",
            &policy(),
        );
        match intent {
            Intent::Stateless { refusal: reply } => {
                assert_eq!(reply.status, 400);
                let value: Value = serde_json::from_slice(&reply.body).unwrap();
                assert_ne!(value["error"]["code"], -32022);
                assert_eq!(value["id"], 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn batches_are_checked_element_by_element() {
        let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"n"}]"#;
        match interpret(
            &mut post(&[("mcp-session-id", "s")], batch),
            "/mcp",
            &policy(),
        ) {
            Intent::Batch { messages, .. } => {
                assert_eq!(messages.len(), 2);
                assert_eq!(messages[0].kind(), Kind::Request);
                assert_eq!(messages[1].kind(), Kind::Notification);
            }
            other => panic!("{other:?}"),
        }
        let with_init = r#"[{"jsonrpc":"2.0","id":1,"method":"initialize"}]"#;
        let bad_element = r#"[{"jsonrpc":"2.0","id":1,"method":"a"},{"nope":1}]"#;
        for body in [with_init, bad_element, "[]"] {
            assert_eq!(
                status(interpret(
                    &mut post(&[("mcp-session-id", "s")], body),
                    "/mcp",
                    &policy()
                )),
                400,
                "{body}"
            );
        }
        assert_eq!(
            status(interpret(&mut post(&[], batch), "/mcp", &policy())),
            400
        );
    }

    #[test]
    fn accept_ranges() {
        assert!(accepts("*/*", "text/event-stream"));
        assert!(accepts("text/*;q=0.5", "text/event-stream"));
        assert!(accepts(
            "application/json; q=1, text/event-stream",
            "text/event-stream"
        ));
        assert!(!accepts("application/json", "text/event-stream"));
    }

    #[test]
    fn forwards_messages_to_a_session() {
        let intent = interpret(
            &mut post(
                &[
                    ("mcp-session-id", "s1"),
                    ("mcp-protocol-version", "2025-06-18"),
                ],
                CALL,
            ),
            "/mcp",
            &policy(),
        );
        assert!(matches!(
            intent,
            Intent::Post { ref message, .. } if message.kind() == Kind::Request
        ));
        let get = request(
            "GET",
            &[("accept", "text/event-stream"), ("mcp-session-id", "s1")],
            "",
        );
        assert!(matches!(
            interpret(&mut get.clone(), "/mcp", &policy()),
            Intent::OpenStream {
                last_event_id: None,
                ..
            }
        ));
        let mut resume = get.clone();
        resume.headers.push(("last-event-id".into(), "3-7".into()));
        assert!(matches!(
            interpret(&mut resume.clone(), "/mcp", &policy()),
            Intent::OpenStream { last_event_id: Some(id), .. } if id == "3-7"
        ));
        let wrong_path = Request {
            target: "/other".into(),
            ..get
        };
        assert_eq!(
            status(interpret(&mut wrong_path.clone(), "/mcp", &policy())),
            404
        );
    }
}
