//! The legacy HTTP+SSE front door's rules (2024-11-05 transport): `GET` on
//! the SSE path opens a session and its one stream; `POST` on the message
//! path with `?sessionId=…` carries one message (or a batch) to that
//! session. Given one decoded HTTP request, decide which of these it is or
//! which error status it earns, with the same Host and Origin checks as the
//! Streamable HTTP endpoint. It owns no sessions and touches no sockets.

use serde_json::value::RawValue;

use crate::http::request::Request;
use crate::jsonrpc::{self, Carried, Message, Rejected};
use crate::mcp::endpoint::{check_access, AccessPolicy, Reply};

/// Default path of the legacy SSE stream.
pub const DEFAULT_SSE_PATH: &str = "/sse";
/// Default path legacy clients POST their messages to.
pub const DEFAULT_MESSAGE_PATH: &str = "/message";

/// Where the legacy front door listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyPaths {
    pub sse: String,
    pub message: String,
}

impl Default for LegacyPaths {
    fn default() -> Self {
        LegacyPaths {
            sse: DEFAULT_SSE_PATH.to_string(),
            message: DEFAULT_MESSAGE_PATH.to_string(),
        }
    }
}

impl LegacyPaths {
    /// The `endpoint` event's data for a session.
    pub fn endpoint_for(&self, session: &str) -> String {
        format!("{}?sessionId={session}", self.message)
    }
}

/// What a legacy request asks for.
#[derive(Debug, PartialEq)]
pub enum LegacyIntent {
    /// Answer at once.
    Reply(Reply),
    /// `GET /sse`: a new session, and its stream on this connection.
    Open,
    /// One message for a session; the message owns the request's body.
    Post { session: String, message: Message },
    /// A JSON-RPC batch for a session.
    Batch {
        session: String,
        messages: Vec<Message>,
    },
}

fn error(status: u16, id: &RawValue, code: i64, text: &str) -> LegacyIntent {
    LegacyIntent::Reply(Reply::error(status, id, code, text))
}

/// What `request` means for the legacy front door, or `None` when its path
/// is not one of the legacy paths (the request is the Streamable HTTP
/// endpoint's).
pub fn interpret_legacy(
    request: &mut Request,
    paths: &LegacyPaths,
    policy: &AccessPolicy,
) -> Option<LegacyIntent> {
    let path = request.path();
    let is_stream = path == paths.sse;
    if !is_stream && path != paths.message {
        return None;
    }
    if let Err(reply) = check_access(request, policy) {
        return Some(LegacyIntent::Reply(reply));
    }
    let (allowed, intent) = if is_stream {
        (
            "GET",
            (request.method == "GET").then_some(LegacyIntent::Open),
        )
    } else {
        (
            "POST",
            (request.method == "POST").then(|| interpret_post(request)),
        )
    };
    Some(intent.unwrap_or_else(|| {
        LegacyIntent::Reply(
            Reply::error(
                405,
                RawValue::NULL,
                jsonrpc::INVALID_REQUEST,
                &format!("Method not allowed: use {allowed}"),
            )
            .with_header("Allow", allowed),
        )
    }))
}

/// The session id in a message URL's query (`sessionId`, or the Python
/// SDK's `session_id`).
fn session_in_query(request: &Request) -> Option<String> {
    let query = request.target.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (matches!(name, "sessionId" | "session_id") && !value.is_empty()).then(|| value.to_string())
    })
}

fn interpret_post(request: &mut Request) -> LegacyIntent {
    let Some(session) = session_in_query(request) else {
        return error(
            400,
            RawValue::NULL,
            jsonrpc::INVALID_REQUEST,
            "Bad Request: the sessionId query parameter is required",
        );
    };
    let content_type = request.header("content-type").unwrap_or("application/json");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return error(
            415,
            RawValue::NULL,
            jsonrpc::INVALID_REQUEST,
            "Unsupported Media Type: Content-Type must be application/json",
        );
    }
    let batch = request.body.trim_ascii_start().first() == Some(&b'[');
    match parse_messages(std::mem::take(&mut request.body)) {
        Ok(messages) if batch => LegacyIntent::Batch { session, messages },
        Ok(mut messages) => match messages.pop() {
            Some(message) => LegacyIntent::Post { session, message },
            None => error(
                400,
                RawValue::NULL,
                jsonrpc::INVALID_REQUEST,
                "Invalid Request: no message",
            ),
        },
        Err(reply) => LegacyIntent::Reply(reply),
    }
}

/// The JSON-RPC message (or batch of them) a body or a line carries, each
/// owning its bytes (a lone message owns the body, moved); a body that is
/// not JSON-RPC gets its 400 with the JSON-RPC error.
pub fn parse_messages(body: Vec<u8>) -> Result<Vec<Message>, Reply> {
    let parsed = match jsonrpc::carried(&body) {
        Ok(Carried::One(bytes)) => Message::parse(bytes).map(|message| vec![message.unbind()]),
        Ok(Carried::Batch(elements)) => {
            return elements
                .into_iter()
                .map(|bytes| Message::parse(bytes.to_vec()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|rejected| refused(&rejected));
        }
        Err(rejected) => Err(rejected),
    };
    match parsed {
        Ok(mut one) => Ok(one
            .pop()
            .map(|message| message.bind(body))
            .into_iter()
            .collect()),
        Err(rejected) => Err(refused(&rejected)),
    }
}

fn refused(rejected: &Rejected) -> Reply {
    let text = match rejected {
        Rejected::NotJson(error) => format!("Parse error: the body is not JSON ({error})"),
        Rejected::NotJsonRpc { why, .. } => format!("Invalid Request: {why}"),
    };
    Reply::error(400, rejected.id(), rejected.code(), &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> Request {
        let mut head = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        let mut decoder = crate::http::request::RequestDecoder::new(Default::default());
        let mut input = head.into_bytes();
        match decoder.decode(&mut input) {
            Ok(crate::http::request::Decoded::Request(request)) => request,
            other => panic!("not a request: {other:?}"),
        }
    }

    fn run(mut request: Request) -> Option<LegacyIntent> {
        let policy = AccessPolicy::new(8080, &[], &[]);
        interpret_legacy(&mut request, &LegacyPaths::default(), &policy)
    }

    fn status(intent: Option<LegacyIntent>) -> u16 {
        match intent {
            Some(LegacyIntent::Reply(reply)) => reply.status,
            other => panic!("not a reply: {other:?}"),
        }
    }

    #[test]
    fn other_paths_are_not_legacy() {
        assert!(run(request("POST", "/mcp", &[], "{}")).is_none());
        assert!(run(request("GET", "/sse2", &[], "")).is_none());
    }

    #[test]
    fn get_opens_and_post_carries_a_message() {
        assert_eq!(
            run(request("GET", "/sse", &[], "")),
            Some(LegacyIntent::Open)
        );
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        for query in ["sessionId=abc", "x=1&session_id=abc"] {
            let intent = run(request("POST", &format!("/message?{query}"), &[], body));
            let Some(LegacyIntent::Post { session, message }) = intent else {
                panic!("not a post: {intent:?}");
            };
            assert_eq!(session, "abc");
            assert_eq!(message.bytes(), body.as_bytes());
        }
        let batch = format!("[{body}]");
        let intent = run(request("POST", "/message?sessionId=abc", &[], &batch));
        assert!(
            matches!(intent, Some(LegacyIntent::Batch { messages, .. }) if messages.len() == 1)
        );
    }

    #[test]
    fn bad_requests_get_their_status() {
        assert_eq!(status(run(request("POST", "/sse", &[], ""))), 405);
        assert_eq!(
            status(run(request("GET", "/message?sessionId=a", &[], ""))),
            405
        );
        assert_eq!(status(run(request("POST", "/message", &[], "{}"))), 400);
        assert_eq!(
            status(run(request("POST", "/message?sessionId=", &[], "{}"))),
            400
        );
        assert_eq!(
            status(run(request("POST", "/message?sessionId=a", &[], "{nope"))),
            400
        );
        assert_eq!(
            status(run(request(
                "POST",
                "/message?sessionId=a",
                &[("Content-Type", "text/plain")],
                "{}"
            ))),
            415
        );
        assert_eq!(
            status(run(request(
                "GET",
                "/sse",
                &[("Origin", "http://evil.example")],
                ""
            ))),
            403
        );
    }
}
