//! Checking answers: an answer's JSON-RPC id and the echoed text, read with
//! borrowing serde types, judged into a [`Verdict`].

use std::borrow::Cow;

use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::session::Step;

/// A JSON-RPC id: ours are unsigned numbers; anything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcId {
    Number(u64),
    Other,
}

impl<'de> Deserialize<'de> for RpcId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl<'de> Visitor<'de> for IdVisitor {
            type Value = RpcId;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON-RPC id")
            }
            fn visit_u64<E>(self, v: u64) -> Result<RpcId, E> {
                Ok(RpcId::Number(v))
            }
            fn visit_i64<E>(self, _: i64) -> Result<RpcId, E> {
                Ok(RpcId::Other)
            }
            fn visit_f64<E>(self, v: f64) -> Result<RpcId, E> {
                // 3.0 is the id 3 to a JSON-RPC peer.
                if v >= 0.0 && v.fract() == 0.0 && v < 9.0e15 {
                    Ok(RpcId::Number(v as u64))
                } else {
                    Ok(RpcId::Other)
                }
            }
            fn visit_str<E>(self, _: &str) -> Result<RpcId, E> {
                Ok(RpcId::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<RpcId, E> {
                Ok(RpcId::Other)
            }
        }
        deserializer.deserialize_any(IdVisitor)
    }
}

/// A JSON-RPC message from the server, borrowed from the body.
#[derive(Deserialize)]
pub struct Reply<'a> {
    #[serde(default)]
    pub id: Option<RpcId>,
    #[serde(default)]
    pub method: Option<IgnoredAny>,
    #[serde(borrow, default)]
    pub result: Option<ReplyResult<'a>>,
    #[serde(default)]
    pub error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
pub struct ReplyResult<'a> {
    #[serde(borrow, default, rename = "protocolVersion")]
    pub protocol_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub content: Option<FirstText<'a>>,
    #[serde(default, rename = "isError")]
    pub is_error: Option<bool>,
}

/// The `text` of the first item of a `content` array (the rest is skipped,
/// so reading it allocates nothing).
pub struct FirstText<'a>(Option<Cow<'a, str>>);

#[derive(Deserialize)]
pub struct ContentItem<'a> {
    #[serde(borrow, default)]
    pub text: Option<Cow<'a, str>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for FirstText<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SeqVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for SeqVisitor<'a> {
            type Value = FirstText<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a content array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FirstText<'a>, A::Error> {
                let first: Option<ContentItem<'a>> = seq.next_element()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(FirstText(first.and_then(|item| item.text)))
            }
        }
        deserializer.deserialize_seq(SeqVisitor(std::marker::PhantomData))
    }
}

/// What one message from the server means for the request in flight.
pub enum Verdict {
    /// Not the response (a notification, a server request, an empty event).
    NotOurs,
    /// The expected response; for `initialize`, the negotiated version.
    Good(Option<String>),
    /// A wrong response.
    Bad(String),
}

/// Judges one JSON-RPC message against the request in flight.
pub fn judge(message: &[u8], step: Step, id: u64, payload: &[u8]) -> Verdict {
    if message.iter().all(u8::is_ascii_whitespace) {
        return Verdict::NotOurs;
    }
    let reply: Reply = match serde_json::from_slice(message) {
        Ok(reply) => reply,
        Err(error) => {
            return Verdict::Bad(format!(
                "not a JSON-RPC message ({error}): {}",
                snippet(message)
            ))
        }
    };
    if reply.method.is_some() {
        return Verdict::NotOurs;
    }
    if reply.id != Some(RpcId::Number(id)) {
        return Verdict::Bad(format!("response id is not {id}: {}", snippet(message)));
    }
    if let Some(error) = reply.error {
        return Verdict::Bad(format!("JSON-RPC error {error}"));
    }
    let Some(result) = reply.result else {
        return Verdict::Bad(format!("response without a result: {}", snippet(message)));
    };
    match step {
        Step::Init => Verdict::Good(result.protocol_version.map(Cow::into_owned)),
        Step::Call => {
            if result.is_error == Some(true) {
                return Verdict::Bad(format!("tool error: {}", snippet(message)));
            }
            let text = result.content.and_then(|content| content.0);
            if text.as_deref().map(str::as_bytes) == Some(payload) {
                Verdict::Good(None)
            } else {
                Verdict::Bad(format!(
                    "echo mismatch: sent {:?}, got {}",
                    String::from_utf8_lossy(payload),
                    snippet(message)
                ))
            }
        }
        _ => Verdict::Good(None),
    }
}

pub fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]);
    if bytes.len() > 300 {
        format!("{text}…")
    } else {
        text.into_owned()
    }
}
