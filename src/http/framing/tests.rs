//! Tests of the shared framing core: the body decoder over every split of
//! its input, and the field rules both roles rely on.

use super::*;

/// Everything observable after feeding a body decoder.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    body: Vec<u8>,
    /// Whether the body completed, or the error that stopped it.
    result: Result<bool, FramingError>,
    /// Bytes consumed in total; only compared when decoding succeeded,
    /// since where an error stops depends on the split.
    consumed: usize,
}

/// Feeds `pieces` in order, as a caller that keeps unconsumed bytes would.
fn feed(kind: BodyKind, max_body: u64, pieces: &[&[u8]]) -> Outcome {
    let mut decoder = match BodyDecoder::new(kind, max_body, 64) {
        Ok(decoder) => decoder,
        Err(e) => {
            return Outcome {
                body: Vec::new(),
                result: Err(e),
                consumed: 0,
            }
        }
    };
    let mut body = Vec::new();
    let mut pending = Vec::new();
    let mut consumed = 0;
    let mut result = Ok(false);
    for piece in pieces {
        pending.extend_from_slice(piece);
        let mut cursor = Cursor {
            rest: &pending,
            used: 0,
        };
        let step = decoder.decode(&mut cursor, &mut |bytes: &[u8]| {
            assert!(!bytes.is_empty(), "empty body bytes passed on");
            body.extend_from_slice(bytes);
        });
        match step {
            Ok(done) => {
                if !done {
                    assert_eq!(cursor.used, pending.len(), "bytes left mid-body");
                }
                consumed += cursor.used;
                pending.drain(..cursor.used);
                result = Ok(done);
                if done {
                    break;
                }
            }
            Err(e) => {
                result = Err(e);
                consumed = 0;
                break;
            }
        }
    }
    Outcome {
        body,
        result,
        consumed,
    }
}

/// Decodes `bytes` whole, split in two at every offset, and one byte at a
/// time, asserting all agree; returns the whole-input outcome.
fn every_way(kind: BodyKind, max_body: u64, bytes: &[u8]) -> Outcome {
    let whole = feed(kind, max_body, &[bytes]);
    for i in 0..=bytes.len() {
        let split = feed(kind, max_body, &[&bytes[..i], &bytes[i..]]);
        assert_eq!(split, whole, "split at {i}");
    }
    let singles: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(feed(kind, max_body, &singles), whole, "one byte at a time");
    whole
}

fn chunked(bytes: &[u8]) -> Outcome {
    every_way(BodyKind::Chunked, u64::MAX, bytes)
}

#[test]
fn length_body_stops_at_its_length() {
    let outcome = every_way(BodyKind::Length(5), u64::MAX, b"helloGET /next");
    assert_eq!(outcome.body, b"hello");
    assert_eq!(outcome.result, Ok(true));
    assert_eq!(outcome.consumed, 5);

    let short = every_way(BodyKind::Length(5), u64::MAX, b"hel");
    assert_eq!(
        (short.body.as_slice(), short.result),
        (&b"hel"[..], Ok(false))
    );

    let empty = feed(BodyKind::Length(0), u64::MAX, &[b"next"]);
    assert_eq!((empty.result, empty.consumed), (Ok(true), 0));
}

#[test]
fn length_over_the_body_limit_fails_before_any_byte() {
    assert_eq!(
        BodyDecoder::new(BodyKind::Length(17), 16, 64).err(),
        Some(FramingError::BodyTooLarge)
    );
    assert!(BodyDecoder::new(BodyKind::Length(16), 16, 64).is_ok());
}

#[test]
fn until_close_takes_everything_and_never_ends_by_itself() {
    let outcome = every_way(BodyKind::UntilClose, u64::MAX, b"data: x\n\n\r\n0\r\n");
    assert_eq!(outcome.body, b"data: x\n\n\r\n0\r\n");
    assert_eq!(outcome.result, Ok(false));
    assert!(BodyDecoder::new(BodyKind::UntilClose, u64::MAX, 64)
        .is_ok_and(|decoder| decoder.ends_at_eof()));
    assert!(BodyDecoder::new(BodyKind::Chunked, u64::MAX, 64)
        .is_ok_and(|decoder| !decoder.ends_at_eof()));
}

#[test]
fn chunked_with_extensions_and_trailers() {
    let bytes = b"5;name=value\r\nhello\r\n\
        6 ; a=\"b;c\" ; d\r\n world\r\n\
        A\t;x\r\n0123456789\r\n\
        0;last\r\nX-Trailer: 1\r\nOther: two\r\n\r\nHTTP/1.1 200 OK";
    let outcome = chunked(bytes);
    assert_eq!(outcome.body, b"hello world0123456789");
    assert_eq!(outcome.result, Ok(true));
    assert_eq!(outcome.consumed, bytes.len() - b"HTTP/1.1 200 OK".len());
}

#[test]
fn chunked_without_trailers_and_empty() {
    let outcome = chunked(b"3\r\nabc\r\n0\r\n\r\n");
    assert_eq!(
        (outcome.body.as_slice(), outcome.result),
        (&b"abc"[..], Ok(true))
    );
    let empty = chunked(b"0\r\n\r\n");
    assert_eq!((empty.body.len(), empty.result), (0, Ok(true)));
}

#[test]
fn chunked_body_limit_counts_declared_sizes() {
    let ok = every_way(
        BodyKind::Chunked,
        16,
        b"8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n",
    );
    assert_eq!((ok.body.len(), ok.result), (16, Ok(true)));
    let over = every_way(
        BodyKind::Chunked,
        16,
        b"8\r\n12345678\r\n9\r\n123456789\r\n",
    );
    assert_eq!(over.result, Err(FramingError::BodyTooLarge));
}

#[test]
fn huge_chunk_is_streamed_when_there_is_no_limit() {
    let outcome = chunked(b"ffffffffffffffff\r\nabc");
    assert_eq!(
        (outcome.body.as_slice(), outcome.result),
        (&b"abc"[..], Ok(false))
    );
}

/// RFC 9112 section 7.1: every line of a chunked body ends in CRLF. A bare
/// LF is refused on chunk-size lines, after chunk data and on trailer
/// lines, as is a CR not followed by LF.
#[test]
fn chunk_framing_lines_need_crlf() {
    for body in [
        &b"5\nhello\r\n0\r\n\r\n"[..],
        b"5;ext\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhello\rX",
        b"5\r\nhelloX",
        b"5\r\nhello\r\n0\r\nX-Trailer: 1\n\r\n",
        b"5\r\nhello\r\n0\r\n\n",
        b"5;a\rb\r\nhello\r\n0\r\n\r\n",
    ] {
        let outcome = chunked(body);
        assert!(
            matches!(outcome.result, Err(FramingError::Malformed(_))),
            "{:?} gave {outcome:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn split_crlf_after_chunk_data_is_consumed_and_remembered() {
    let mut decoder = BodyDecoder::new(BodyKind::Chunked, u64::MAX, 64).unwrap();
    let mut body = Vec::new();
    for (piece, done) in [(&b"2\r\nab\r"[..], false), (b"\n0\r\n\r\n", true)] {
        let mut cursor = Cursor {
            rest: piece,
            used: 0,
        };
        let step = decoder.decode(&mut cursor, &mut |b: &[u8]| body.extend_from_slice(b));
        assert_eq!(step, Ok(done));
        assert_eq!(cursor.used, piece.len());
    }
    assert_eq!(body, b"ab");
}

#[test]
fn overlong_chunk_line_and_trailers_are_rejected() {
    let mut long = b"5;".to_vec();
    long.resize(MAX_CHUNK_LINE_BYTES, b'e');
    assert_eq!(
        feed(BodyKind::Chunked, u64::MAX, &[&long]).result,
        Err(FramingError::Malformed("chunk size line too long"))
    );
    let mut trailers = b"0\r\n".to_vec();
    trailers.extend_from_slice(&[b'x'; 100]);
    assert_eq!(chunked(&trailers).result, Err(FramingError::HeadTooLarge));
}

#[test]
fn chunk_size_lines() {
    for (line, size) in [
        (&b"0\r\n"[..], 0),
        (b"1A\r\n", 26),
        (b"a ; x=\"y;z\"\r\n", 10),
        (b"5 \r\n", 5),
        (b"5\t;e\r\n", 5),
        (b"ffffffffffffffff\r\n", u64::MAX),
        (b"0000000000000001\r\n", 1),
    ] {
        assert_eq!(parse_chunk_line(line), Ok(size), "{line:?}");
    }
    for line in [
        &b"\r\n"[..],
        b";ext\r\n",
        b" 2\r\n",
        b"zz\r\n",
        b"-5\r\n",
        b"5 5\r\n",
        b"0x10\r\n",
        b"5\n",
        b"5;e\n",
        b"5\r\r\n",
        b"5;e\rx\r\n",
        b"10000000000000000\r\n",
        b"00000000000000001\r\n",
    ] {
        assert!(
            matches!(parse_chunk_line(line), Err(FramingError::Malformed(_))),
            "{line:?}"
        );
    }
}

fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// One Content-Length rule for both roles: digits only, identical repeats
/// allowed, conflicts and overflow refused (never saturated or wrapped).
#[test]
fn content_length_rule() {
    let cl = |values: &[&str]| {
        let pairs: Vec<(&str, &str)> = values.iter().map(|v| ("content-length", *v)).collect();
        content_length(&fields(&pairs))
    };
    assert_eq!(cl(&["0"]), Ok(0));
    assert_eq!(cl(&[" 42\t"]), Ok(42));
    assert_eq!(cl(&["3", "3, 3"]), Ok(3));
    assert_eq!(cl(&["18446744073709551615"]), Ok(u64::MAX));
    for bad in ["abc", "-1", "+5", "5 5", "0x10", "", "5,", "1.0"] {
        assert_eq!(
            cl(&[bad]),
            Err(FramingError::Malformed("invalid Content-Length")),
            "{bad:?}"
        );
    }
    for conflict in [&["5", "6"][..], &["5, 6"]] {
        assert_eq!(
            cl(conflict),
            Err(FramingError::Malformed("conflicting Content-Length values"))
        );
    }
    assert_eq!(
        cl(&["18446744073709551616"]),
        Err(FramingError::LengthOutOfRange)
    );
    assert_eq!(
        cl(&["99999999999999999999999"]),
        Err(FramingError::LengthOutOfRange)
    );
}

#[test]
fn declared_body_rules() {
    let declared = |pairs: &[(&str, &str)], minor| declared_body(&fields(pairs), minor);
    assert_eq!(declared(&[], 1), Ok(None));
    assert_eq!(
        declared(&[("content-length", "7")], 0),
        Ok(Some(BodyKind::Length(7)))
    );
    assert_eq!(
        declared(&[("transfer-encoding", " Chunked ")], 1),
        Ok(Some(BodyKind::Chunked))
    );
    for te in ["gzip", "gzip, chunked", "chunked, gzip"] {
        assert_eq!(
            declared(&[("transfer-encoding", te)], 1),
            Err(FramingError::UnsupportedCoding),
            "{te}"
        );
    }
    assert_eq!(
        declared(
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked")
            ],
            1
        ),
        Err(FramingError::Malformed("chunked applied more than once"))
    );
    assert_eq!(
        declared(&[("transfer-encoding", ",")], 1),
        Err(FramingError::Malformed("empty Transfer-Encoding"))
    );
    assert_eq!(
        declared(&[("transfer-encoding", "chunked")], 0),
        Err(FramingError::Malformed("Transfer-Encoding in HTTP/1.0"))
    );
    assert_eq!(
        declared(
            &[("content-length", "1"), ("transfer-encoding", "chunked")],
            1
        ),
        Err(FramingError::Malformed(
            "both Content-Length and Transfer-Encoding"
        ))
    );
}

#[test]
fn keep_alive_rule() {
    let keep = |value: Option<&str>, minor| {
        let pairs: Vec<(&str, &str)> = value.map(|v| ("connection", v)).into_iter().collect();
        keep_alive(&fields(&pairs), minor)
    };
    assert!(keep(None, 1));
    assert!(!keep(None, 0));
    assert!(keep(Some("Keep-Alive"), 0));
    assert!(!keep(Some("keep-alive, close"), 0));
    assert!(!keep(Some("Upgrade , CLOSE"), 1));
    assert!(keep(Some("foo"), 1));
}

#[test]
fn field_lookup_and_lists() {
    let headers = fields(&[("x-a", "1"), ("x-a", "2"), ("connection", " a,, b\t, ")]);
    assert_eq!(header(&headers, "X-A"), Some("1"));
    assert_eq!(header(&headers, "missing"), None);
    let items: Vec<&str> = list_values(&headers, "connection").collect();
    assert_eq!(items, vec!["a", "b"]);
    assert_eq!(trim_ows(" \t v a\t "), "v a");
    assert_eq!(trim_ows(" \t"), "");
}

#[test]
fn head_reader_skips_leading_empty_lines_and_caps_bytes() {
    let mut reader = HeadReader::default();
    let mut input = Cursor {
        rest: b"\r\n\nGET / HTTP/1.1\r\nA: b\n\r\nrest",
        used: 0,
    };
    // The start line is judged once, alone, as soon as it is complete.
    let seen = std::cell::RefCell::new(Vec::new());
    let judge = |line: &mut [u8]| {
        seen.borrow_mut().push(line.to_vec());
        Ok::<(), FramingError>(())
    };
    let head = reader
        .read(&mut input, 64, judge)
        .map(|h| h.map(<[u8]>::to_vec));
    assert_eq!(head, Ok(Some(b"GET / HTTP/1.1\r\nA: b\n\r\n".to_vec())));
    assert_eq!(seen.into_inner(), vec![b"GET / HTTP/1.1\r\n".to_vec()]);
    assert_eq!(input.rest, b"rest");
    assert_eq!(reader.bytes(), 26);
    reader.clear();
    assert_eq!(reader.bytes(), 0);

    let mut endless = Cursor {
        rest: &[b'a'; 100],
        used: 0,
    };
    assert_eq!(
        reader
            .read(&mut endless, 50, |_| Ok::<(), FramingError>(()))
            .map(|h| h.is_some()),
        Err(FramingError::HeadTooLarge)
    );
    assert_eq!(endless.used, 50);

    // A refused start line ends the read there, whatever follows.
    let mut reader = HeadReader::default();
    let mut input = Cursor {
        rest: b"BAD\r\nA: b\r\n\r\n",
        used: 0,
    };
    assert_eq!(
        reader.read(&mut input, 64, |_| Err(FramingError::Malformed("no"))),
        Err(FramingError::Malformed("no"))
    );
    assert_eq!(input.used, 5);
}
