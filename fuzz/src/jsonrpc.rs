//! The `jsonrpc` target: JSON-RPC classification.

use mcphop::jsonrpc::{self, Carried, IdKey, Kind, Message, Rejected};
use serde_json::Value;

use super::support::Input;

/// Checks that `kind` is consistent with the message's fields.
fn check_kind(message: &Value, kind: Kind) {
    let object = message.as_object();
    assert!(object.is_some());
    assert_eq!(message.get("jsonrpc").and_then(Value::as_str), Some("2.0"));
    let method = message.get("method").and_then(Value::as_str);
    let id = message.get("id").and_then(IdKey::of_id);
    match kind {
        Kind::Request => {
            assert!(method.is_some());
            assert!(id.is_some());
        }
        Kind::Notification => {
            assert!(method.is_some());
            assert!(message.get("id").is_none());
        }
        Kind::Response => {
            assert!(message.get("method").is_none());
            assert!(message.get("result").is_some() || message.get("error").is_some());
            assert!(id.is_some() || message["id"].is_null());
        }
    }
}

/// `params._meta.progressToken` and the like, read from a full `Value`.
fn pointer_key(value: &Value, pointer: &str) -> Option<IdKey> {
    value.pointer(pointer).and_then(IdKey::of)
}

/// One message's bytes through the light view (`Message`, what mcphop
/// routes on), checked against `classify` on the full `Value` parsed from
/// the same bytes: the same kind, id and method; a refusal only where
/// `classify` refuses too, or for a routed key given twice (which the view
/// refuses and a `Value` reads as its last occurrence); and a refusal never
/// echoes an id that is not one.
fn check_message(bytes: &[u8], value: &Value) {
    let reference = jsonrpc::classify(value);
    if let Ok(kind) = reference {
        check_kind(value, kind);
    }
    let message = match Message::parse(bytes) {
        Ok(message) => message,
        Err(Rejected::NotJson(why)) => panic!("a JSON value refused as not JSON: {why}"),
        Err(rejected @ Rejected::NotJsonRpc { why, .. }) => {
            assert!(
                reference.is_err() || why == "a JSON-RPC message must not repeat a key",
                "refused ({why}) what classify took as {reference:?}"
            );
            assert_eq!(rejected.code(), jsonrpc::INVALID_REQUEST);
            // The refusal's answer is a response mcphop itself can route:
            // its id is the message's own only when that is an id, else null.
            let answer = jsonrpc::error_response(rejected.id(), rejected.code(), "x");
            let answer = Message::parse(answer.as_slice()).expect("a refusal is a message");
            assert_eq!(answer.kind(), Kind::Response);
            assert_eq!(answer.reply_id().get(), rejected.id().get());
            return;
        }
    };
    let kind = message.kind();
    assert_eq!(reference, Ok(kind));
    assert_eq!(message.id_key(), value.get("id").and_then(IdKey::of_id));
    // mcphop writes its own answers (timeouts, cancels) under the key's
    // spelling of a numeric id, so that spelling is the id as sent.
    if let Some(IdKey::Number(spelled)) = message.id_key() {
        assert_eq!(spelled, message.reply_id().get());
    }
    assert_eq!(
        message.method(),
        value.get("method").and_then(Value::as_str)
    );
    // The other fields are total functions of the bytes; where the view
    // names one, the full value names the same (the view names nothing for
    // a params object that repeats a key, so only this direction holds).
    if let Some(token) = message.request_progress_token() {
        assert_eq!(
            Some(token),
            pointer_key(value, "/params/_meta/progressToken")
        );
    }
    if let Some(token) = message.progress_token() {
        assert_eq!(Some(token), pointer_key(value, "/params/progressToken"));
    }
    if let Some(id) = message.cancelled_request() {
        assert_eq!(
            Some(id),
            value.pointer("/params/requestId").and_then(IdKey::of_id)
        );
    }
    if let Some(version) = message.meta_protocol_version() {
        let pointer = "/params/_meta/io.modelcontextprotocol~1protocolVersion";
        assert_eq!(
            Some(version),
            value.pointer(pointer).and_then(Value::as_str)
        );
    }
    let _ = message.takes_server_requests();
    if let Some(version) = message.result_protocol_version() {
        assert_eq!(
            Some(version.as_ref()),
            value
                .pointer("/result/protocolVersion")
                .and_then(Value::as_str)
        );
    }
    assert_eq!(message.has_result(), value.get("result").is_some());
    // The answer mcphop writes under a message's id reaches the same id: it
    // echoes the id's text as received.
    if kind == Kind::Request {
        let answer = jsonrpc::error_response(message.reply_id(), jsonrpc::INVALID_REQUEST, "x");
        let answer = Message::parse(answer.as_slice()).expect("an error answer is a message");
        assert_eq!(answer.kind(), Kind::Response);
        assert_eq!(answer.id_key(), message.id_key());
        assert_eq!(answer.reply_id().get(), message.reply_id().get());
    }
}

/// An error response for `id` must classify as a response to that id when
/// `id` is one (a string or a 64-bit integer) or null, and be refused
/// otherwise, by both `classify` and the view.
fn check_error_response(id: &Value, code: i64, text: &str) {
    let Ok(raw) = serde_json::value::to_raw_value(id) else {
        return;
    };
    let bytes = jsonrpc::error_response(&raw, code, text);
    let parsed: Value = serde_json::from_slice(&bytes).expect("error_response writes JSON");
    let routable = IdKey::of_id(id).is_some() || id.is_null();
    match jsonrpc::classify(&parsed) {
        Ok(kind) => {
            assert!(routable, "an error response to {id} classified");
            assert_eq!(kind, Kind::Response);
            assert_eq!(parsed.get("id").and_then(IdKey::of_id), IdKey::of_id(id));
            assert_eq!(parsed["error"]["code"], code);
            assert_eq!(parsed["error"]["message"], text);
        }
        Err(why) => assert!(!routable, "error response to {id} refused: {}", why.0),
    }
    match Message::parse(bytes.as_slice()) {
        Ok(message) => {
            assert!(routable, "the view took an error response to {id}");
            assert_eq!(message.kind(), Kind::Response);
            assert_eq!(message.id_key(), IdKey::of_id(id));
        }
        Err(rejected) => {
            assert!(
                !routable,
                "the view refused an error response to {id}: {rejected}"
            );
            assert_eq!(rejected.id().get(), "null");
        }
    }
}

/// Fuzz target `jsonrpc`: classification, the light view, and error
/// responses.
pub fn jsonrpc(data: &[u8]) {
    let mut input = Input::new(data);
    let code = i64::from(input.byte() as i8) * 1000;
    let text = input.string(16);
    let bytes = input.rest();
    // Whatever the bytes, the view and the batch splitter return a value.
    let _ = Message::parse(bytes);
    let carried = jsonrpc::carried(bytes);
    let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
        return;
    };
    match (carried, &value) {
        (Ok(Carried::One(one)), _) => {
            assert_eq!(one, bytes);
            check_message(bytes, &value);
        }
        (Ok(Carried::Batch(elements)), Value::Array(values)) => {
            assert_eq!(elements.len(), values.len());
            for (element, value) in elements.iter().zip(values) {
                // Each element slice is that element's own JSON text.
                let reparsed: Value =
                    serde_json::from_slice(element).expect("a batch element is JSON");
                assert_eq!(&reparsed, value);
                check_message(element, value);
            }
        }
        (carried, _) => panic!("{carried:?} for the JSON {value}"),
    }
    if let Some(id) = value.get("id") {
        check_error_response(id, jsonrpc::INVALID_REQUEST, "x");
    }
    check_error_response(&value, code, &text);
}
