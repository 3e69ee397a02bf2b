//! The `http_response` target: the HTTP response decoder (client role,
//! upstreams).

use mcphop::http::client::{ResponseDecoder, ResponseError, ResponseEvent};
use mcphop::http::response;

use super::http_syntax::{header_name, is_token, trim_ows};
use super::support::{pieces, ways, Input};

/// Response events with adjacent body bytes merged, since the decoder may
/// split them differently for different input splits.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Head(u16, Vec<(String, String)>, bool),
    Body(Vec<u8>),
    End,
}

fn merge(events: Vec<ResponseEvent>, into: &mut Vec<Ev>) {
    for event in events {
        match event {
            ResponseEvent::Head(head) => {
                into.push(Ev::Head(head.status, head.headers, head.keep_alive))
            }
            ResponseEvent::Body(bytes) => {
                assert!(!bytes.is_empty(), "an empty Body event");
                if let Some(Ev::Body(last)) = into.last_mut() {
                    last.extend_from_slice(&bytes);
                } else {
                    into.push(Ev::Body(bytes));
                }
            }
            ResponseEvent::End => into.push(Ev::End),
        }
    }
}

/// How a response run ended: bytes used (unknown after an error, as
/// `decode` then returns no count), the error if any, and what `eof` said
/// after the last piece.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ResponseRun {
    events: Vec<Ev>,
    used: Option<usize>,
    error: Option<ResponseError>,
    eof: Option<Result<(), ResponseError>>,
}

fn run_response_decoder(chunks: &[&[u8]], max_head: usize, head_request: bool) -> ResponseRun {
    let mut decoder = ResponseDecoder::new(max_head, head_request);
    let mut events = Vec::new();
    let mut used = 0usize;
    for chunk in chunks {
        let mut out = Vec::new();
        let result = decoder.decode(chunk, &mut out);
        merge(out, &mut events);
        match result {
            Ok(n) => {
                assert!(n <= chunk.len());
                used += n;
                if n < chunk.len() {
                    // Only a finished response leaves bytes behind.
                    assert!(
                        decoder.is_complete(),
                        "{n} of {} used mid-response",
                        chunk.len()
                    );
                }
                if decoder.is_complete() {
                    assert_eq!(events.last(), Some(&Ev::End));
                    let eof = decoder.eof(&mut Vec::new());
                    assert_eq!(eof, Ok(()));
                    return ResponseRun {
                        events,
                        used: Some(used),
                        error: None,
                        eof: None,
                    };
                }
            }
            Err(err) => {
                assert_eq!(
                    decoder.decode(b"HTTP/1.1 200 OK\r\n\r\n", &mut Vec::new()),
                    Err(err)
                );
                assert!(!decoder.is_complete());
                return ResponseRun {
                    events,
                    used: None,
                    error: Some(err),
                    eof: None,
                };
            }
        }
        assert_eq!(decoder.started(), used > 0);
    }
    let mut out = Vec::new();
    let eof = decoder.eof(&mut out);
    merge(out, &mut events);
    if eof.is_ok() {
        assert_eq!(events.last(), Some(&Ev::End));
    }
    ResponseRun {
        events,
        used: Some(used),
        error: None,
        eof: Some(eof),
    }
}

fn response_raw(input: &mut Input<'_>) {
    let max_head = 16 + usize::from(input.byte()) * 8;
    let head_request = input.bool();
    let plan = input.bytes(8);
    let bytes = input.rest();
    let [whole, planned, singles] = ways(bytes, plan);
    let expected = run_response_decoder(&whole, max_head, head_request);
    for event in &expected.events {
        if let Ev::Head(status, headers, _) = event {
            // 1xx are skipped, 101 and statuses under 100 refused.
            assert!(
                (200..=999).contains(status),
                "status {status} passed as a final response"
            );
            assert!(headers.len() <= mcphop::http::client::MAX_RESPONSE_HEADERS);
        }
    }
    assert_eq!(
        run_response_decoder(&planned, max_head, head_request),
        expected
    );
    assert_eq!(
        run_response_decoder(&singles, max_head, head_request),
        expected
    );
}

/// The response writer into the response decoder.
fn response_round_trip(input: &mut Input<'_>) {
    let framing = input.byte() % 3;
    let status = 100 + ((u16::from(input.byte()) << 8) | u16::from(input.byte())) % 900;
    let keep_alive = input.bool();
    let count = usize::from(input.byte() % 6);
    let mut headers = Vec::new();
    for _ in 0..count {
        let mut name = header_name(input);
        if !is_token(&name) {
            // The writer's contract: callers pass token names.
            name = "X-Made".to_string();
        }
        // ... and values without CR, LF or NUL; only bytes a parser takes.
        let value: String = input
            .string(24)
            .chars()
            .filter(|c| !c.is_control() || *c == '\t')
            .collect();
        headers.push((name, value));
    }
    let plan = input.bytes(6).to_vec();
    let chunk_plan = input.bytes(6).to_vec();
    let body = input.rest();
    let fields: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();

    let no_body = (100..200).contains(&status) || status == 204 || status == 304;
    let mut out = Vec::new();
    let ends_at_eof = match framing {
        0 => {
            response::write_full(
                &mut out,
                status,
                &fields,
                if no_body { b"" } else { body },
                keep_alive,
            );
            false
        }
        1 if !no_body => {
            response::write_chunked_head(&mut out, status, &fields, keep_alive);
            for chunk in pieces(body, &chunk_plan) {
                response::write_chunk(&mut out, chunk);
            }
            response::write_last_chunk(&mut out);
            false
        }
        _ if !no_body => {
            response::write_stream_head(&mut out, status, &fields);
            out.extend_from_slice(body);
            true
        }
        _ => return,
    };
    let head_len = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(out.len(), |at| at + 4);
    // An interim response is skipped; the final one after it is read.
    let interim = (100..200).contains(&status);
    if interim {
        response::write_full(&mut out, 200, &[], b"after", true);
    }

    let written_keep_alive = keep_alive && !ends_at_eof;
    let mut expected_headers: Vec<(String, String)> = Vec::new();
    for (name, value) in &headers {
        let framing_field = name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding");
        if framing_field || (!written_keep_alive && name.eq_ignore_ascii_case("connection")) {
            continue;
        }
        expected_headers.push((name.to_ascii_lowercase(), trim_ows(value).to_string()));
    }
    if !written_keep_alive {
        expected_headers.push(("connection".to_string(), "close".to_string()));
    }
    let asks_close = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("connection")
            && v.split(',')
                .any(|o| trim_ows(o).eq_ignore_ascii_case("close"))
    });
    if !no_body {
        match framing {
            1 => expected_headers.push(("transfer-encoding".to_string(), "chunked".to_string())),
            0 => expected_headers.push(("content-length".to_string(), body.len().to_string())),
            _ => {}
        }
    }

    for chunks in ways(&out, &plan) {
        let run = run_response_decoder(&chunks, out.len() + 1, false);
        if status == 101 {
            assert_eq!(
                run.error,
                Some(ResponseError::Malformed(
                    "unexpected 101 Switching Protocols"
                ))
            );
            continue;
        }
        assert_eq!(run.error, None, "{:?}", String::from_utf8_lossy(&out));
        if interim {
            let after_headers = vec![("content-length".to_string(), "5".to_string())];
            assert_eq!(
                run.events,
                vec![
                    Ev::Head(200, after_headers, true),
                    Ev::Body(b"after".to_vec()),
                    Ev::End
                ]
            );
            assert_eq!(run.used, Some(out.len()));
            continue;
        }
        let mut expected = vec![Ev::Head(
            status,
            expected_headers.clone(),
            written_keep_alive && !asks_close,
        )];
        if !no_body && !body.is_empty() {
            expected.push(Ev::Body(body.to_vec()));
        }
        expected.push(Ev::End);
        assert_eq!(run.events, expected);
        assert_eq!(run.used, Some(out.len()));
        assert_eq!(run.eof.is_some(), ends_at_eof);
    }

    // The same bytes for a HEAD request: the head only, the body left over.
    if !interim && status != 101 {
        let run = run_response_decoder(&[&out], out.len() + 1, true);
        assert_eq!(run.error, None);
        assert_eq!(run.used, Some(head_len));
        assert!(matches!(run.events.as_slice(), [Ev::Head(..), Ev::End]));
    }
}

/// Fuzz target `http_response`: the client-role response decoder.
pub fn http_response(data: &[u8]) {
    let mut input = Input::new(data);
    match input.byte() % 2 {
        0 => response_raw(&mut input),
        _ => response_round_trip(&mut input),
    }
}
