//! JSON-RPC 2.0 framing: one message parsed once into a light view of the
//! fields that route it (`message`), the keys derived from them (request id,
//! progress token), and the error responses mcphop itself sends.
//!
//! Messages travel as the bytes the peer sent; this module only reads them.
//! `classify` on a `serde_json::Value` stays for callers that hold one (the
//! noise tests use it as the reference the view is checked against).

use serde_json::value::RawValue;
use serde_json::Value;

mod message;

pub use message::{carried, Carried, Message, Rejected};

/// Invalid JSON was received.
pub const PARSE_ERROR: i64 = -32700;
/// The JSON sent is not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// Invalid method parameters (MCP: an unknown tool).
pub const INVALID_PARAMS: i64 = -32602;
/// Internal JSON-RPC error.
pub const INTERNAL_ERROR: i64 = -32603;
/// Implementation-defined server error: the upstream (child process) is gone.
pub const UPSTREAM_GONE: i64 = -32000;
/// Implementation-defined server error: the request timed out (the code the
/// TypeScript SDK uses for the same).
pub const REQUEST_TIMEOUT: i64 = -32001;
/// Implementation-defined server error: mcphop is shutting down.
pub const SHUTTING_DOWN: i64 = -32010;

/// What a JSON-RPC message is, which decides how it travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Has a method and an id: expects exactly one response.
    Request,
    /// Has a method and no id.
    Notification,
    /// Has an id and a result or an error.
    Response,
}

/// Why a JSON value is not a JSON-RPC 2.0 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotJsonRpc(pub &'static str);

/// Classifies a parsed value as one JSON-RPC 2.0 message.
pub fn classify(value: &Value) -> Result<Kind, NotJsonRpc> {
    let object = value
        .as_object()
        .ok_or(NotJsonRpc("a JSON-RPC message must be a JSON object"))?;
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(NotJsonRpc("\"jsonrpc\" must be \"2.0\""));
    }
    let id = object.get("id");
    if let Some(id) = id {
        if IdKey::of_id(id).is_none() && !(id.is_null() && object.contains_key("error")) {
            return Err(NotJsonRpc("\"id\" must be a string or an integer"));
        }
    }
    match object.get("method") {
        Some(Value::String(_)) => Ok(if id.is_some() {
            Kind::Request
        } else {
            Kind::Notification
        }),
        Some(_) => Err(NotJsonRpc("\"method\" must be a string")),
        None if id.is_some() && (object.contains_key("result") || object.contains_key("error")) => {
            Ok(Kind::Response)
        }
        None => Err(NotJsonRpc(
            "a message needs a \"method\", or an \"id\" with a \"result\" or an \"error\"",
        )),
    }
}

/// A request id as a map key. Strings and numbers never collide, because
/// `"1"` and `1` are different ids in JSON-RPC.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdKey {
    /// A numeric id, in its JSON spelling.
    Number(String),
    /// A string id.
    String(String),
}

impl IdKey {
    /// The key of an id or progress token value; `None` for anything that is
    /// neither a string nor a number (null, objects, arrays, booleans).
    pub fn of(value: &Value) -> Option<IdKey> {
        match value {
            Value::String(text) => Some(IdKey::String(text.clone())),
            Value::Number(number) => Some(IdKey::Number(number.to_string())),
            _ => None,
        }
    }

    /// The key of a request id: a string, or an integer that fits 64 bits.
    /// Any other number is no id (see `message::id_key_of` for why).
    pub fn of_id(value: &Value) -> Option<IdKey> {
        match value {
            Value::Number(number) if number.is_f64() => None,
            _ => IdKey::of(value),
        }
    }

    /// The key of an id or token given as JSON text (`1`, `"a"`).
    #[cfg(test)]
    pub(crate) fn parse(text: &str) -> Option<IdKey> {
        message::key_of(text)
    }

    /// The id as JSON text, for the messages mcphop writes (errors, cancels).
    pub(crate) fn to_raw(&self) -> Box<RawValue> {
        let text = match self {
            IdKey::Number(number) => Ok(number.clone()),
            IdKey::String(text) => serde_json::to_string(text),
        };
        text.ok()
            .and_then(|text| RawValue::from_string(text).ok())
            .unwrap_or_else(|| RawValue::NULL.to_owned())
    }
}

impl std::fmt::Display for IdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdKey::Number(number) => f.write_str(number),
            IdKey::String(text) => write!(f, "{text:?}"),
        }
    }
}

/// A complete JSON-RPC error response, serialized. `id` is the request's id
/// as JSON text, or `RawValue::NULL` when it could not be read.
pub fn error_response(id: &RawValue, code: i64, message: &str) -> Vec<u8> {
    // Written around the id's own text rather than through a `Value`: the id
    // goes back exactly as it came, and no id text can fail the build (a
    // `Value` cannot hold `1e400`, and respells integers past 64 bits). The
    // keys are in the order serde_json's sorted map gave before.
    let message = serde_json::to_string(message).unwrap_or_else(|_| "\"\"".to_string());
    let mut out = Vec::with_capacity(64 + id.get().len() + message.len());
    out.extend_from_slice(b"{\"error\":{\"code\":");
    out.extend_from_slice(code.to_string().as_bytes());
    out.extend_from_slice(b",\"message\":");
    out.extend_from_slice(message.as_bytes());
    out.extend_from_slice(b"},\"id\":");
    out.extend_from_slice(id.get().as_bytes());
    out.extend_from_slice(b",\"jsonrpc\":\"2.0\"}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn classifies_the_three_kinds() {
        let request = parse(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        let notification = parse(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        let response = parse(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#);
        let error = parse(r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700}}"#);
        assert_eq!(classify(&request), Ok(Kind::Request));
        assert_eq!(classify(&notification), Ok(Kind::Notification));
        assert_eq!(classify(&response), Ok(Kind::Response));
        assert_eq!(classify(&error), Ok(Kind::Response));
    }

    #[test]
    fn rejects_what_is_not_json_rpc() {
        for text in [
            "[]",
            "3",
            r#"{"id":1,"method":"x"}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":{},"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
        ] {
            assert!(classify(&parse(text)).is_err(), "{text}");
        }
    }

    #[test]
    fn string_and_number_ids_differ() {
        let one = IdKey::of(&parse("1")).unwrap();
        let quoted_one = IdKey::of(&parse("\"1\"")).unwrap();
        assert_ne!(one, quoted_one);
        assert_eq!(IdKey::of(&Value::Null), None);
    }

    #[test]
    fn finds_progress_tokens_and_meta_versions() {
        let request = Message::parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"progressToken":"p","io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#.as_slice(),
        )
        .unwrap();
        assert_eq!(
            request.request_progress_token(),
            Some(IdKey::String("p".into()))
        );
        assert_eq!(request.meta_protocol_version(), Some("2026-07-28"));
        let progress = Message::parse(
            br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":7,"progress":1}}"#.as_slice(),
        )
        .unwrap();
        assert_eq!(progress.progress_token(), Some(IdKey::Number("7".into())));
    }

    #[test]
    fn error_responses_echo_any_id_text_exactly() {
        // A number no Value holds exactly (or at all) goes back as sent,
        // rather than respelled or, for 1e400, a panic.
        for text in ["123456789012345678901234567890123", "1e400", "7", "null"] {
            let id = RawValue::from_string(text.into()).unwrap();
            let bytes = error_response(&id, INVALID_REQUEST, "bad \"x\"");
            assert_eq!(
                String::from_utf8(bytes).unwrap(),
                format!(
                    r#"{{"error":{{"code":-32600,"message":"bad \"x\""}},"id":{text},"jsonrpc":"2.0"}}"#
                )
            );
        }
    }

    #[test]
    fn error_responses_carry_the_id() {
        let id = RawValue::from_string("\"x\"".into()).unwrap();
        let bytes = error_response(&id, INVALID_REQUEST, "bad");
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["id"], "x");
        assert_eq!(value["error"]["code"], INVALID_REQUEST);
    }
}
