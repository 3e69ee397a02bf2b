//! One JSON-RPC message, parsed once: its bytes exactly as received, and the
//! few fields mcphop routes on, found by one borrowed serde pass.
//!
//! The pass reads the top-level object into `&RawValue`s, so the payload
//! (`params.arguments`, `result.content`) is only scanned, never built into a
//! tree or copied; `params`, `params._meta` and `params.capabilities` are read
//! the same way, one level at a time. Fields are kept as byte ranges of the
//! message (a string with escapes is decoded into its own small `Box<str>`),
//! so a `Message` is its bytes plus a few integers, and what travels on is
//! always the original text: never a re-serialisation.
//!
//! Nesting is no danger: serde_json skips a `RawValue` with a loop and a heap
//! stack of one byte per level, and the typed parts are three levels deep.

use std::borrow::Cow;
use std::ops::Range;

use serde::de::{Deserializer, IgnoredAny};
use serde::Deserialize;
use serde_json::error::Category;
use serde_json::value::RawValue;

use super::{IdKey, Kind};

#[cfg(test)]
mod tests;

/// A string field: a range of the message when it holds no escape, else the
/// decoded text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Text {
    Span(Range<usize>),
    Owned(Box<str>),
}

/// The fields mcphop routes on, as ranges of the message's text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Fields {
    /// The id's JSON text (`null` included).
    id: Option<Range<usize>>,
    method: Option<Text>,
    /// `params._meta.progressToken` (requests).
    request_progress_token: Option<Range<usize>>,
    /// `params.progressToken` (`notifications/progress`).
    progress_token: Option<Range<usize>>,
    /// `params.requestId` (`notifications/cancelled`).
    cancelled_request: Option<Range<usize>>,
    /// `params._meta["io.modelcontextprotocol/protocolVersion"]`.
    meta_protocol_version: Option<Text>,
    /// `params.capabilities` names sampling, elicitation or roots.
    takes_server_requests: bool,
    /// The whole `result`, read further only when asked (`initialize`'s answer).
    result: Option<Range<usize>>,
}

/// One JSON-RPC message: `bytes` as received (owned, or borrowed where the
/// caller keeps them) and its routing fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<B = Vec<u8>> {
    bytes: B,
    kind: Kind,
    fields: Fields,
}

/// Why bytes are not one JSON-RPC message.
#[derive(Debug, Clone)]
pub enum Rejected {
    /// Not JSON at all (JSON-RPC's parse error, -32700).
    NotJson(String),
    /// JSON, but not a JSON-RPC 2.0 message (invalid request, -32600); `id`
    /// is its id when one could be read, for the error answer.
    NotJsonRpc {
        why: &'static str,
        id: Option<Box<RawValue>>,
    },
}

impl PartialEq for Rejected {
    fn eq(&self, other: &Rejected) -> bool {
        match (self, other) {
            (Rejected::NotJson(a), Rejected::NotJson(b)) => a == b,
            (
                Rejected::NotJsonRpc { why, id },
                Rejected::NotJsonRpc {
                    why: other_why,
                    id: other_id,
                },
            ) => {
                why == other_why
                    && id.as_deref().map(RawValue::get) == other_id.as_deref().map(RawValue::get)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::NotJson(error) => write!(f, "not JSON: {error}"),
            Rejected::NotJsonRpc { why, .. } => f.write_str(why),
        }
    }
}

impl Rejected {
    /// The JSON-RPC error code it earns.
    pub fn code(&self) -> i64 {
        match self {
            Rejected::NotJson(_) => super::PARSE_ERROR,
            Rejected::NotJsonRpc { .. } => super::INVALID_REQUEST,
        }
    }

    /// The id to answer with: the message's own, or null.
    pub fn id(&self) -> &RawValue {
        match self {
            Rejected::NotJsonRpc { id: Some(id), .. } => id,
            _ => RawValue::NULL,
        }
    }
}

/// A JSON text that carries messages: one, or a 2025-03-26 batch.
#[derive(Debug, PartialEq)]
pub enum Carried<'a> {
    One(&'a [u8]),
    /// The elements of a top-level array, each a slice of the text.
    Batch(Vec<&'a [u8]>),
}

/// Splits a JSON text into the messages it carries, with one light pass over
/// an array (its elements are only delimited, not parsed).
pub fn carried(bytes: &[u8]) -> Result<Carried<'_>, Rejected> {
    if first_byte(bytes) != Some(b'[') {
        return Ok(Carried::One(bytes));
    }
    let text = std::str::from_utf8(bytes).map_err(|error| Rejected::NotJson(error.to_string()))?;
    let elements: Vec<&RawValue> =
        serde_json::from_str(text).map_err(|error| Rejected::NotJson(error.to_string()))?;
    Ok(Carried::Batch(
        elements
            .into_iter()
            .map(|element| element.get().as_bytes())
            .collect(),
    ))
}

/// The first byte that is not JSON whitespace.
fn first_byte(bytes: &[u8]) -> Option<u8> {
    bytes
        .iter()
        .copied()
        .find(|byte| !matches!(byte, b' ' | b'\t' | b'\n' | b'\r'))
}

impl<B: AsRef<[u8]>> Message<B> {
    /// Reads one message. Validation is `classify`'s: `jsonrpc` is `"2.0"`, an
    /// id is a string or a number (null only beside an `error`), a method is a
    /// string, and a message without one is a response. Stricter in one way: a
    /// routed key given twice (`id`, `method`, …) is refused, so mcphop never
    /// routes on one value while the upstream reads the other.
    pub fn parse(bytes: B) -> Result<Message<B>, Rejected> {
        let (kind, fields) = read(bytes.as_ref())?;
        Ok(Message {
            bytes,
            kind,
            fields,
        })
    }

    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_ref()
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The message's id as a key; None without one, or for a null id.
    pub fn id_key(&self) -> Option<IdKey> {
        self.span_text(self.fields.id.as_ref()).and_then(id_key_of)
    }

    /// The id's JSON text, for an error answer: null when it has none.
    pub fn reply_id(&self) -> &RawValue {
        self.span_text(self.fields.id.as_ref())
            .and_then(|text| serde_json::from_str::<&RawValue>(text).ok())
            .unwrap_or(RawValue::NULL)
    }

    pub fn method(&self) -> Option<&str> {
        self.text(self.fields.method.as_ref())
    }

    /// A request's `params._meta.progressToken`, as a key.
    pub fn request_progress_token(&self) -> Option<IdKey> {
        self.span_text(self.fields.request_progress_token.as_ref())
            .and_then(key_of)
    }

    /// A `notifications/progress` message's `params.progressToken`, as a key.
    pub fn progress_token(&self) -> Option<IdKey> {
        self.span_text(self.fields.progress_token.as_ref())
            .and_then(key_of)
    }

    /// A `notifications/cancelled` message's `params.requestId`, as a key.
    pub fn cancelled_request(&self) -> Option<IdKey> {
        self.span_text(self.fields.cancelled_request.as_ref())
            .and_then(id_key_of)
    }

    /// The protocol version a stateless-era request names in its `_meta`.
    pub fn meta_protocol_version(&self) -> Option<&str> {
        self.text(self.fields.meta_protocol_version.as_ref())
    }

    /// An `initialize` whose client declared it answers server requests
    /// (sampling, elicitation or roots).
    pub fn takes_server_requests(&self) -> bool {
        self.fields.takes_server_requests
    }

    /// A response carrying a `result` (not an `error`).
    pub fn has_result(&self) -> bool {
        self.fields.result.is_some()
    }

    /// `result.protocolVersion` (the answer to `initialize`). Read on demand:
    /// other results are never looked into.
    pub fn result_protocol_version(&self) -> Option<Cow<'_, str>> {
        let text = self.span_text(self.fields.result.as_ref())?;
        if first_byte(text.as_bytes()) != Some(b'{') {
            return None;
        }
        let result: ResultFields<'_> = serde_json::from_str(text).ok()?;
        result.protocol_version.and_then(string_of)
    }

    fn span_text(&self, span: Option<&Range<usize>>) -> Option<&str> {
        let bytes = self.bytes.as_ref().get(span?.clone())?;
        std::str::from_utf8(bytes).ok()
    }

    fn text<'s>(&'s self, text: Option<&'s Text>) -> Option<&'s str> {
        match text? {
            Text::Span(span) => self.span_text(Some(span)),
            Text::Owned(owned) => Some(owned),
        }
    }
}

impl<B> Message<B> {
    /// The fields alone, to be put over the same bytes in another container
    /// with `bind` (the buffer a borrowed message was read from, taken).
    pub(crate) fn unbind(self) -> Message<()> {
        Message {
            bytes: (),
            kind: self.kind,
            fields: self.fields,
        }
    }
}

impl Message<()> {
    /// The message over `bytes`, which must be the bytes it was read from
    /// (moved or copied). Other bytes give wrong fields, never a panic: every
    /// field is looked up with a checked range.
    pub(crate) fn bind<C: AsRef<[u8]>>(self, bytes: C) -> Message<C> {
        Message {
            bytes,
            kind: self.kind,
            fields: self.fields,
        }
    }
}

impl Message<Vec<u8>> {
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

// ----- the pass ---------------------------------------------------------------

/// The top level. Every field is taken as raw text, whatever its type, so a
/// wrong type is an invalid request (as in `classify`), not a parse error.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    jsonrpc: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    method: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    params: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(rename = "_meta", borrow, default, deserialize_with = "present")]
    meta: Option<&'a RawValue>,
    #[serde(
        rename = "progressToken",
        borrow,
        default,
        deserialize_with = "present"
    )]
    progress_token: Option<&'a RawValue>,
    #[serde(rename = "requestId", borrow, default, deserialize_with = "present")]
    request_id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    capabilities: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(
        rename = "progressToken",
        borrow,
        default,
        deserialize_with = "present"
    )]
    progress_token: Option<&'a RawValue>,
    #[serde(
        rename = "io.modelcontextprotocol/protocolVersion",
        borrow,
        default,
        deserialize_with = "present"
    )]
    protocol_version: Option<&'a RawValue>,
}

/// Only whether each key is there, as `contains_key` asked.
#[derive(Deserialize)]
struct Capabilities {
    #[serde(default, deserialize_with = "present_any")]
    sampling: Option<IgnoredAny>,
    #[serde(default, deserialize_with = "present_any")]
    elicitation: Option<IgnoredAny>,
    #[serde(default, deserialize_with = "present_any")]
    roots: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct ResultFields<'a> {
    #[serde(
        rename = "protocolVersion",
        borrow,
        default,
        deserialize_with = "present"
    )]
    protocol_version: Option<&'a RawValue>,
}

/// A key that is there is `Some`, even when its value is `null` (which
/// `Option`'s own rule would make `None`).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

fn present_any<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<IgnoredAny>, D::Error> {
    IgnoredAny::deserialize(deserializer).map(Some)
}

/// Parses `bytes` as one message.
fn read(bytes: &[u8]) -> Result<(Kind, Fields), Rejected> {
    let text = std::str::from_utf8(bytes).map_err(|error| Rejected::NotJson(error.to_string()))?;
    if first_byte(bytes) != Some(b'{') {
        return Err(match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => not_json_rpc("a JSON-RPC message must be a JSON object", None),
            Err(error) => Rejected::NotJson(error.to_string()),
        });
    }
    let envelope: Envelope<'_> =
        serde_json::from_str(text).map_err(|error| match error.classify() {
            // Every field is raw text, so a data error is a key given twice.
            Category::Data => not_json_rpc("a JSON-RPC message must not repeat a key", None),
            _ => Rejected::NotJson(error.to_string()),
        })?;
    let kind = classify(&envelope)?;
    let mut fields = Fields {
        id: envelope.id.and_then(|id| span(text, id.get())),
        method: envelope.method.and_then(|method| text_of(text, method)),
        result: envelope.result.and_then(|result| span(text, result.get())),
        ..Fields::default()
    };
    if kind != Kind::Response {
        if let Some(params) = envelope.params {
            read_params(text, params, &mut fields);
        }
    }
    Ok((kind, fields))
}

/// `classify`'s rules, on raw fields.
fn classify(envelope: &Envelope<'_>) -> Result<Kind, Rejected> {
    // Only an id that is one is echoed: a wrong-type id (`true`, `{}`) is
    // no request's id, so the answer says null, as JSON-RPC asks when the id
    // could not be read.
    let echoed = envelope.id.filter(|id| id_key_of(id.get()).is_some());
    let reject = |why| not_json_rpc(why, echoed);
    if envelope.jsonrpc.and_then(string_of).as_deref() != Some("2.0") {
        return Err(reject("\"jsonrpc\" must be \"2.0\""));
    }
    if let Some(id) = envelope.id {
        let null_beside_error = id.get() == "null" && envelope.error.is_some();
        if id_key_of(id.get()).is_none() && !null_beside_error {
            return Err(reject("\"id\" must be a string or an integer"));
        }
    }
    match envelope.method {
        Some(method) if string_of(method).is_some() => Ok(if envelope.id.is_some() {
            Kind::Request
        } else {
            Kind::Notification
        }),
        Some(_) => Err(reject("\"method\" must be a string")),
        None if envelope.id.is_some()
            && (envelope.result.is_some() || envelope.error.is_some()) =>
        {
            Ok(Kind::Response)
        }
        None => Err(reject(
            "a message needs a \"method\", or an \"id\" with a \"result\" or an \"error\"",
        )),
    }
}

/// Reads what mcphop needs of `params`. They are not validated beyond JSON
/// (as before): a `params` that is not an object, or repeats a key, simply
/// names nothing.
fn read_params(text: &str, params: &RawValue, fields: &mut Fields) {
    let Some(params) = object::<Params<'_>>(params) else {
        return;
    };
    fields.progress_token = params
        .progress_token
        .and_then(|token| span(text, token.get()));
    fields.cancelled_request = params.request_id.and_then(|id| span(text, id.get()));
    if let Some(meta) = params.meta.and_then(object::<Meta<'_>>) {
        fields.request_progress_token = meta
            .progress_token
            .and_then(|token| span(text, token.get()));
        fields.meta_protocol_version = meta
            .protocol_version
            .and_then(|version| text_of(text, version));
    }
    fields.takes_server_requests = params
        .capabilities
        .and_then(object::<Capabilities>)
        .is_some_and(|capabilities| {
            capabilities.sampling.is_some()
                || capabilities.elicitation.is_some()
                || capabilities.roots.is_some()
        });
}

/// A JSON object read as `T`; None for any other JSON value (a derived struct
/// would also take an array) or a repeated key.
fn object<'a, T: Deserialize<'a>>(raw: &'a RawValue) -> Option<T> {
    let text = raw.get();
    if first_byte(text.as_bytes()) != Some(b'{') {
        return None;
    }
    serde_json::from_str(text).ok()
}

fn not_json_rpc(why: &'static str, id: Option<&RawValue>) -> Rejected {
    Rejected::NotJsonRpc {
        why,
        id: id.map(RawValue::to_owned),
    }
}

/// The range `part` takes in `whole`; `part` is a slice of it (serde borrowed
/// it from there).
fn span(whole: &str, part: &str) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= whole.len()).then_some(start..end)
}

/// A JSON string field: a range of the message without escapes, else decoded.
fn text_of(whole: &str, raw: &RawValue) -> Option<Text> {
    let quoted = raw.get();
    if !quoted.starts_with('"') {
        return None;
    }
    if quoted.contains('\\') {
        let decoded: String = serde_json::from_str(quoted).ok()?;
        return Some(Text::Owned(decoded.into_boxed_str()));
    }
    let inner = span(whole, quoted)?;
    Some(Text::Span(inner.start + 1..inner.end - 1))
}

/// The value of a JSON string, borrowed when it holds no escape.
fn string_of(raw: &RawValue) -> Option<Cow<'_, str>> {
    let quoted = raw.get();
    if !quoted.starts_with('"') {
        return None;
    }
    if quoted.contains('\\') {
        return serde_json::from_str::<String>(quoted).ok().map(Cow::Owned);
    }
    quoted.get(1..quoted.len() - 1).map(Cow::Borrowed)
}

/// The key of an id or token given as JSON text: a string, or a number in the
/// spelling `serde_json::Number` gives it (as `IdKey::of` does).
pub(crate) fn key_of(text: &str) -> Option<IdKey> {
    match text.as_bytes().first()? {
        b'"' => serde_json::from_str::<String>(text).ok().map(IdKey::String),
        b'-' | b'0'..=b'9' => serde_json::from_str::<serde_json::Number>(text)
            .ok()
            .map(|number| IdKey::Number(number.to_string())),
        _ => None,
    }
}

/// The key of a request id given as JSON text: a string, or an integer that
/// fits 64 bits (JSON-RPC: an id "must be a string or an integer"). Any other
/// number serde holds as an f64 whose spelling differs from the one sent
/// (`1e2` becomes `100.0`, a 33-digit integer loses digits), so an answer
/// under it would reach the client under another id, or match no request.
pub(crate) fn id_key_of(text: &str) -> Option<IdKey> {
    match text.as_bytes().first()? {
        b'"' => serde_json::from_str::<String>(text).ok().map(IdKey::String),
        b'-' | b'0'..=b'9' => serde_json::from_str::<serde_json::Number>(text)
            .ok()
            .filter(|number| !number.is_f64())
            .map(|number| IdKey::Number(number.to_string())),
        _ => None,
    }
}
