//! The `http_request` target: the HTTP request decoder (server role).

use mcphop::http::client::write_request;
use mcphop::http::request::{DecodeError, Decoded, Limits, Request, RequestDecoder, MAX_HEADERS};

use super::http_syntax::{
    header_name, is_target_byte, is_token, is_value_byte, strip_forbidden, trim_ows, METHODS,
};
use super::support::{pieces, ways, Input};

/// How a run of the request decoder ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RequestEnd {
    Error(DecodeError),
    /// Waiting for more; whether a head was in progress.
    Incomplete {
        head_in_progress: bool,
    },
}

/// Feeds `chunks` to one decoder as a reactor would (append, decode until
/// it wants more); returns the requests and how it ended, checking the
/// per-call properties on the way.
fn run_request_decoder(chunks: &[&[u8]], limits: Limits) -> (Vec<Request>, RequestEnd) {
    let mut decoder = RequestDecoder::new(limits);
    let mut buffer = Vec::new();
    let mut requests = Vec::new();
    // Bytes consumed since the last request ended (or the start).
    let mut since_boundary = 0usize;
    for chunk in chunks {
        buffer.extend_from_slice(chunk);
        loop {
            let before = buffer.len();
            match decoder.decode(&mut buffer) {
                Ok(Decoded::Request(request)) => {
                    since_boundary = 0;
                    assert!(
                        request.body.len() <= limits.max_body_bytes,
                        "a body of {} bytes passed a limit of {}",
                        request.body.len(),
                        limits.max_body_bytes
                    );
                    assert!(request.headers.len() <= MAX_HEADERS);
                    // Only a chunked body or an explicit 100-continue may
                    // ask for 100; a finished request never leaves one due.
                    assert!(!decoder.take_expect_continue());
                    requests.push(request);
                }
                Ok(Decoded::Incomplete) => {
                    since_boundary += before;
                    // Nothing left for the caller to hold.
                    assert!(
                        buffer.is_empty(),
                        "Incomplete left {} bytes unconsumed",
                        buffer.len()
                    );
                    if decoder.head_in_progress() {
                        assert!(
                            since_boundary <= limits.max_head_bytes,
                            "a head of {since_boundary} bytes is still being read under a limit of {}",
                            limits.max_head_bytes
                        );
                    }
                    break;
                }
                Err(err) => {
                    // Poisoned: the same error, whatever comes next.
                    let mut more = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
                    assert_eq!(decoder.decode(&mut more), Err(err));
                    assert!(!decoder.head_in_progress());
                    assert!(matches!(err.status(), 400 | 413 | 431 | 501 | 505));
                    return (requests, RequestEnd::Error(err));
                }
            }
        }
    }
    let end = RequestEnd::Incomplete {
        head_in_progress: decoder.head_in_progress(),
    };
    (requests, end)
}

/// `decode_slice` on one buffer (the reactor's pipelined path) must agree
/// with `decode`.
fn run_request_slices(bytes: &[u8], limits: Limits) -> (Vec<Request>, RequestEnd) {
    let mut decoder = RequestDecoder::new(limits);
    let mut requests = Vec::new();
    let mut at = 0usize;
    loop {
        let rest = bytes.get(at..).unwrap_or_default();
        match decoder.decode_slice(rest) {
            Ok((Decoded::Request(request), used)) => {
                assert!(used <= rest.len());
                at += used;
                requests.push(request);
            }
            Ok((Decoded::Incomplete, used)) => {
                assert_eq!(used, rest.len());
                let end = RequestEnd::Incomplete {
                    head_in_progress: decoder.head_in_progress(),
                };
                return (requests, end);
            }
            Err(err) => return (requests, RequestEnd::Error(err)),
        }
    }
}

/// Raw bytes into the request decoder under small limits, three ways.
fn request_raw(input: &mut Input<'_>) {
    let limits = Limits {
        max_head_bytes: 16 + usize::from(input.byte()) * 8,
        max_body_bytes: usize::from(input.byte()) * 4,
    };
    let plan = input.bytes(8);
    let bytes = input.rest();
    let [whole, planned, singles] = ways(bytes, plan);
    let expected = run_request_decoder(&whole, limits);
    assert_eq!(
        run_request_decoder(&planned, limits),
        expected,
        "planned pieces"
    );
    assert_eq!(
        run_request_decoder(&singles, limits),
        expected,
        "byte by byte"
    );
    assert_eq!(run_request_slices(bytes, limits), expected, "decode_slice");
}

/// The request writer into the request decoder: what was written is what
/// is read, whenever the writer was given parts that fit a request line.
fn request_round_trip(input: &mut Input<'_>) {
    let pick = usize::from(input.byte());
    let method = match METHODS.get(pick % 8) {
        Some(method) => (*method).to_string(),
        None => input.string(8),
    };
    let target = input.string(24);
    let host = input.string(16);
    let count = usize::from(input.byte() % 6);
    let mut headers = Vec::new();
    for _ in 0..count {
        let name = header_name(input);
        let value = input.string(24);
        headers.push((name, value));
    }
    let plan = input.bytes(4).to_vec();
    let body = input.rest();

    let fields: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let mut out = Vec::new();
    write_request(&mut out, &method, &target, &host, &fields, body);

    // What the writer should have made of its parts.
    let sent_method: String = method
        .chars()
        .filter(|c| !matches!(c, '\r' | '\n' | '\0' | ' ' | '\t'))
        .collect();
    let mut sent_target: String = target
        .chars()
        .filter(|c| !matches!(c, '\r' | '\n' | '\0' | ' ' | '\t'))
        .collect();
    if sent_target.is_empty() {
        sent_target.push('/');
    }
    let owned = ["host", "content-length", "transfer-encoding", "connection"];
    let mut expected_headers = vec![(
        "host".to_string(),
        trim_ows(&strip_forbidden(&host)).to_string(),
    )];
    let mut values_ok = strip_forbidden(&host).bytes().all(is_value_byte);
    for (name, value) in &headers {
        if owned.iter().any(|o| name.eq_ignore_ascii_case(o)) || !is_token(name) {
            continue;
        }
        let value = strip_forbidden(value);
        values_ok &= value.bytes().all(is_value_byte);
        expected_headers.push((name.to_ascii_lowercase(), trim_ows(&value).to_string()));
    }
    let bodiless = matches!(sent_method.as_str(), "GET" | "DELETE" | "HEAD") && body.is_empty();
    if !bodiless {
        expected_headers.push(("content-length".to_string(), body.len().to_string()));
    }
    let well_formed = is_token(&sent_method)
        && sent_target.bytes().all(is_target_byte)
        && values_ok
        && expected_headers.len() <= MAX_HEADERS;

    let limits = Limits {
        max_head_bytes: out.len() + 1,
        max_body_bytes: body.len(),
    };
    let chunks = pieces(&out, &plan);
    let (requests, end) = run_request_decoder(&chunks, limits);
    if !well_formed {
        // Parts no request line can carry: refusing them is right; what
        // matters is that nothing panicked and no request was invented.
        assert!(requests.len() <= 1);
        return;
    }
    assert_eq!(
        end,
        RequestEnd::Incomplete {
            head_in_progress: false
        },
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, sent_method);
    assert_eq!(request.target, sent_target);
    assert_eq!(request.minor_version, 1);
    assert_eq!(request.headers, expected_headers);
    assert_eq!(request.body, body);
    assert!(request.keep_alive);
}

/// A chunked body framed here (sizes, upper- and lower-case hex, leading
/// zeros, extensions, whitespace before them, trailers) must decode to the
/// same bytes, and the request pipelined after it must follow intact.
fn request_chunked(input: &mut Input<'_>) {
    let plan = input.bytes(6).to_vec();
    let sizes = input.bytes(8).to_vec();
    let style = input.byte();
    let trailers = input.byte() % 3;
    let body = input.rest();

    let mut out = b"POST /mcp HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let mut rest = body;
    let mut cycle = sizes.iter().cycle();
    let mut n = 0usize;
    while !rest.is_empty() {
        let size = usize::from(*cycle.next().unwrap_or(&255)).max(1);
        let (chunk, after) = rest.split_at(size.min(rest.len()));
        let hex = if (style >> (n % 8)) & 1 == 1 {
            format!("{:X}", chunk.len())
        } else {
            format!("{:04x}", chunk.len())
        };
        out.extend_from_slice(hex.as_bytes());
        match (usize::from(style) + n) % 4 {
            0 => out.extend_from_slice(b";ext=\"v;x\""),
            1 => out.extend_from_slice(b" \t;a;b=c"),
            _ => {}
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
        rest = after;
        n += 1;
    }
    out.extend_from_slice(b"0\r\n");
    for i in 0..trailers {
        out.extend_from_slice(format!("X-Trailer-{i}: v\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n");

    let limits = Limits {
        max_head_bytes: 256,
        max_body_bytes: body.len(),
    };
    for chunks in ways(&out, &plan) {
        let (requests, end) = run_request_decoder(&chunks, limits);
        assert_eq!(
            end,
            RequestEnd::Incomplete {
                head_in_progress: false
            }
        );
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].body, body);
        assert_eq!(requests[1].target, "/next");
        assert!(requests[1].body.is_empty());
    }
    // One byte under the declared total is 413, never a truncated body.
    if let Some(smaller) = body.len().checked_sub(1) {
        let limits = Limits {
            max_head_bytes: 256,
            max_body_bytes: smaller,
        };
        let (requests, end) = run_request_decoder(&[&out], limits);
        assert!(requests.is_empty());
        assert_eq!(end, RequestEnd::Error(DecodeError::BodyTooLarge));
    }
}

/// Fuzz target `http_request`: the server-role request decoder.
pub fn http_request(data: &[u8]) {
    let mut input = Input::new(data);
    match input.byte() % 3 {
        0 => request_raw(&mut input),
        1 => request_round_trip(&mut input),
        _ => request_chunked(&mut input),
    }
}
