//! The view's unit tests: the same verdicts as `classify` on a full `Value`
//! (case by case, and on generated noise), the fields it finds, and inputs
//! that must neither panic nor recurse: malformed JSON, wrong types, repeated
//! keys, huge numbers and deep nesting.

use serde_json::Value;

use super::super::classify;
use super::*;

fn parse(text: &str) -> Result<Message<&[u8]>, Rejected> {
    Message::parse(text.as_bytes())
}

#[test]
fn classifies_the_three_kinds() {
    for (text, kind) in [
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            Kind::Request,
        ),
        (
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            Kind::Notification,
        ),
        (r#"{"jsonrpc":"2.0","id":"a","result":{}}"#, Kind::Response),
        (
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700}}"#,
            Kind::Response,
        ),
    ] {
        assert_eq!(
            parse(text).map(|message| message.kind()),
            Ok(kind),
            "{text}"
        );
    }
}

#[test]
fn rejects_what_classify_rejects() {
    for text in [
        "[]",
        "3",
        r#"{"id":1,"method":"x"}"#,
        r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":1}"#,
        r#"{"jsonrpc":"2.0","id":null,"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":{},"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
        r#"{"jsonrpc":2.0,"id":1,"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":true,"result":{}}"#,
    ] {
        let rejected = parse(text).expect_err(text);
        assert_eq!(rejected.code(), crate::jsonrpc::INVALID_REQUEST, "{text}");
    }
}

#[test]
fn malformed_json_is_a_parse_error() {
    for text in [
        "",
        "{",
        "{nope",
        r#"{"jsonrpc":"2.0","id":1,"method":"x"} trailing"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":[1,}}"#,
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\u{1}\"}",
    ] {
        assert!(matches!(parse(text), Err(Rejected::NotJson(_))), "{text:?}");
    }
    let invalid_utf8 = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\"}";
    assert!(matches!(
        Message::parse(invalid_utf8.as_slice()),
        Err(Rejected::NotJson(_))
    ));
}

#[test]
fn an_invalid_message_keeps_its_id_for_the_answer() {
    let rejected = parse(r#"{"jsonrpc":"1.0","id":"q","method":"x"}"#).unwrap_err();
    assert_eq!(rejected.id().get(), r#""q""#);
    let rejected = parse("17").unwrap_err();
    assert_eq!(rejected.id().get(), "null");
}

#[test]
fn a_repeated_routed_key_is_refused() {
    for text in [
        r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x","method":"y"}"#,
        r#"{"jsonrpc":"2.0","jsonrpc":"2.0","id":1,"method":"x"}"#,
    ] {
        assert_eq!(
            parse(text).map(|message| message.kind()),
            Err(Rejected::NotJsonRpc {
                why: "a JSON-RPC message must not repeat a key",
                id: None
            }),
            "{text}"
        );
    }
    // Keys mcphop does not route on may repeat, as JSON allows.
    let message = parse(r#"{"jsonrpc":"2.0","id":1,"method":"x","x":1,"x":2}"#).unwrap();
    assert_eq!(message.method(), Some("x"));
    // A repeated key inside params names nothing, rather than one of the two.
    let message =
        parse(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1,"requestId":2}}"#)
            .unwrap();
    assert_eq!(message.cancelled_request(), None);
}

#[test]
fn finds_every_routed_field() {
    let request = parse(
        r#" { "params" : { "_meta" : { "progressToken" : 5 , "io.modelcontextprotocol/protocolVersion":"2026-07-28"} , "arguments":{"x":[1,2,{"y":null}]}} , "method" : "tools/call" , "id" : "a\"b" , "jsonrpc" : "2.0" } "#,
    )
    .unwrap();
    assert_eq!(request.kind(), Kind::Request);
    assert_eq!(request.method(), Some("tools/call"));
    assert_eq!(request.id_key(), Some(IdKey::String("a\"b".into())));
    assert_eq!(request.reply_id().get(), r#""a\"b""#);
    assert_eq!(
        request.request_progress_token(),
        Some(IdKey::Number("5".into()))
    );
    assert_eq!(request.meta_protocol_version(), Some("2026-07-28"));
    assert!(!request.takes_server_requests());
    assert!(!request.has_result());

    let cancel = parse(
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"r1","reason":"x"}}"#,
    )
    .unwrap();
    assert_eq!(cancel.kind(), Kind::Notification);
    assert_eq!(cancel.cancelled_request(), Some(IdKey::String("r1".into())));
    assert_eq!(cancel.id_key(), None);
    assert_eq!(cancel.reply_id().get(), "null");

    let escaped = parse(r#"{"jsonrpc":"2.0","method":"tools\/list","id":1}"#).unwrap();
    assert_eq!(escaped.method(), Some("tools/list"));
}

#[test]
fn initialize_capabilities_and_answer_version() {
    for (capabilities, takes) in [
        (r#"{}"#, false),
        (r#"{"sampling":{}}"#, true),
        (r#"{"elicitation":null}"#, true),
        (r#"{"roots":{"listChanged":true}}"#, true),
        (r#"{"experimental":{"sampling":{}}}"#, false),
        (r#"[]"#, false),
        (r#""sampling""#, false),
    ] {
        let text = format!(
            r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"capabilities":{capabilities}}}}}"#
        );
        assert_eq!(
            parse(&text).unwrap().takes_server_requests(),
            takes,
            "{capabilities}"
        );
    }
    let answer = parse(
        r#"{"jsonrpc":"2.0","id":0,"result":{"capabilities":{},"protocolVersion":"2025-06-18"}}"#,
    )
    .unwrap();
    assert!(answer.has_result());
    assert_eq!(
        answer.result_protocol_version().as_deref(),
        Some("2025-06-18")
    );
    let refused = parse(r#"{"jsonrpc":"2.0","id":0,"error":{"code":-1,"message":"no"}}"#).unwrap();
    assert!(!refused.has_result());
    assert_eq!(refused.result_protocol_version(), None);
    let odd = parse(r#"{"jsonrpc":"2.0","id":0,"result":[{"protocolVersion":"x"}]}"#).unwrap();
    assert_eq!(odd.result_protocol_version(), None);
}

#[test]
fn wrong_types_in_params_name_nothing() {
    for params in [
        r#"[]"#,
        r#"7"#,
        r#"null"#,
        r#"{"_meta":[1]}"#,
        r#"{"_meta":{"progressToken":{}}}"#,
        r#"{"_meta":{"progressToken":true,"io.modelcontextprotocol/protocolVersion":7}}"#,
    ] {
        let text = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"m","params":{params}}}"#);
        let message = parse(&text).unwrap();
        assert_eq!(message.request_progress_token(), None, "{params}");
        assert_eq!(message.meta_protocol_version(), None, "{params}");
    }
}

#[test]
fn numeric_ids_keep_value_s_spelling() {
    // The same keys `IdKey::of` gives for a parsed `Value`.
    for text in [
        "1",
        "-3",
        "1.5",
        "1e2",
        "18446744073709551615",
        "123456789012345678901234567890",
    ] {
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(IdKey::parse(text), IdKey::of(&value), "{text}");
    }
    // Out of range for serde_json's numbers (which a `Value` parse refused
    // as a whole): not an id, so an invalid request, and no panic.
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":1{},"method":"x"}}"#,
        "0".repeat(400)
    );
    let out_of_range = r#"{"jsonrpc":"2.0","id":1e400,"method":"x"}"#;
    for text in [huge.as_str(), out_of_range] {
        assert_eq!(
            parse(text).unwrap_err().code(),
            crate::jsonrpc::INVALID_REQUEST
        );
    }
    // In the payload, such a number is only scanned: the message is read.
    let in_payload = r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"n":1e400}}"#;
    assert_eq!(
        parse(in_payload).map(|message| message.kind()),
        Ok(Kind::Request)
    );
}

#[test]
fn an_id_that_is_no_64_bit_integer_is_an_invalid_request_answered_with_null() {
    for id in [
        "123456789012345678901234567890123",
        "18446744073709551616",
        "-9223372036854775809",
        "1.5",
        "1e2",
        "1.0",
    ] {
        for text in [
            format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list"}}"#),
            format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#),
        ] {
            assert_eq!(
                parse(&text).map(|message| message.kind()),
                Err(Rejected::NotJsonRpc {
                    why: "\"id\" must be a string or an integer",
                    id: None
                }),
                "{text}"
            );
            let value: Value = serde_json::from_str(&text).unwrap();
            assert!(classify(&value).is_err(), "{text}");
        }
    }
    // The extremes of 64 bits are ids, kept in their exact spelling.
    for id in ["18446744073709551615", "-9223372036854775808", "0"] {
        let text = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list"}}"#);
        let message = parse(&text).unwrap();
        assert_eq!(message.id_key(), Some(IdKey::Number(id.to_string())));
        assert_eq!(message.reply_id().get(), id);
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(classify(&value), Ok(Kind::Request));
    }
}

#[test]
fn an_id_of_a_wrong_type_is_not_echoed() {
    for id in ["true", r#"{"a":1}"#, "[1]", "1.5"] {
        let text = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list"}}"#);
        let rejected = parse(&text).unwrap_err();
        assert_eq!(rejected.id().get(), "null", "{text}");
        assert_eq!(rejected.code(), crate::jsonrpc::INVALID_REQUEST, "{text}");
    }
}

#[test]
fn deep_nesting_neither_panics_nor_recurses() {
    // Far deeper than serde_json's recursion limit (128) for a `Value`: the
    // raw pass skips it with a loop, so it is read, and it travels as it is.
    let depth = 200_000;
    let text = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{"a":{}{}}}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    assert_eq!(
        parse(&text).map(|message| message.kind()),
        Ok(Kind::Request)
    );
    let unbalanced = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{}"#,
        "[".repeat(depth)
    );
    assert!(matches!(parse(&unbalanced), Err(Rejected::NotJson(_))));
    let deep_result = format!(
        r#"{{"jsonrpc":"2.0","id":1,"result":{}1{}}}"#,
        "{\"a\":".repeat(depth),
        "}".repeat(depth)
    );
    assert_eq!(parse(&deep_result).unwrap().result_protocol_version(), None);
}

#[test]
fn batches_split_into_element_slices() {
    let text = br#" [ {"jsonrpc":"2.0","id":1,"method":"a"} , {"jsonrpc":"2.0","method":"n"} ] "#;
    let Ok(Carried::Batch(elements)) = carried(text) else {
        panic!("a batch")
    };
    assert_eq!(
        elements,
        [
            &br#"{"jsonrpc":"2.0","id":1,"method":"a"}"#[..],
            br#"{"jsonrpc":"2.0","method":"n"}"#
        ]
    );
    assert_eq!(carried(b"{}"), Ok(Carried::One(b"{}")));
    assert_eq!(carried(b"[]"), Ok(Carried::Batch(Vec::new())));
    assert!(matches!(carried(b"[1,"), Err(Rejected::NotJson(_))));
}

/// xorshift64*: deterministic noise.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

/// Mutated messages: wherever a full `Value` parse and `classify` accept one,
/// the view agrees on its kind and its id; wherever they refuse it, so does
/// the view (with a repeated key as the one difference, which the view
/// refuses and `Value` reads as its last occurrence).
#[test]
fn agrees_with_classify_on_noise() {
    let seeds: [&[u8]; 5] = [
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e","_meta":{"progressToken":"t"}}}"#,
        br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1}}"#,
        br#"{"jsonrpc":"2.0","id":"x","result":{"protocolVersion":"2025-06-18"}}"#,
        br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"m"}}"#,
        br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3}}"#,
    ];
    let alphabet = b"{}[]\":,0123456789-.eE \\nul";
    let mut noise = Noise(7);
    let mut agreed = 0;
    for _ in 0..50_000 {
        let mut bytes = seeds[noise.below(seeds.len())].to_vec();
        for _ in 0..1 + noise.below(3) {
            let at = noise.below(bytes.len());
            match noise.below(3) {
                0 => bytes[at] = alphabet[noise.below(alphabet.len())],
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, alphabet[noise.below(alphabet.len())]),
            }
            if bytes.is_empty() {
                bytes.push(b'{');
            }
        }
        let view = Message::parse(bytes.as_slice());
        let reference = serde_json::from_slice::<Value>(&bytes);
        match (&reference, &view) {
            (Ok(value), Ok(message)) => {
                assert_eq!(
                    classify(value),
                    Ok(message.kind()),
                    "{}",
                    String::from_utf8_lossy(&bytes)
                );
                let id = value.get("id").and_then(IdKey::of_id);
                assert_eq!(message.id_key(), id);
                agreed += 1;
            }
            (Ok(value), Err(Rejected::NotJsonRpc { why, .. })) => {
                assert!(
                    classify(value).is_err() || why.contains("repeat"),
                    "{}",
                    String::from_utf8_lossy(&bytes)
                );
            }
            (Err(_), Err(Rejected::NotJson(_))) => {}
            // Payload numbers beyond f64 are only scanned by the view, not
            // converted: the message is JSON, and it travels as it is.
            (Err(error), Ok(_) | Err(Rejected::NotJsonRpc { .. }))
                if error.to_string().contains("number out of range") => {}
            (Ok(_), Err(Rejected::NotJson(_))) | (Err(_), _) => {
                panic!(
                    "{} {:?} / {:?}",
                    String::from_utf8_lossy(&bytes),
                    reference.as_ref().err(),
                    view
                )
            }
        }
    }
    assert!(
        agreed > 1_000,
        "the noise kept enough messages valid: {agreed}"
    );
}
