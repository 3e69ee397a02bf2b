//! The `sse` target: the SSE decoder.

use mcphop::sse;
use mcphop::sse_decoder::{SseDecoder, SseError, SseEvent};

use super::support::{ways, Input};

fn run_sse(chunks: &[&[u8]], max: usize) -> (Vec<SseEvent>, Result<(), SseError>) {
    let mut decoder = SseDecoder::new(max);
    let mut events = Vec::new();
    for chunk in chunks {
        if let Err(err) = decoder.feed(chunk, &mut events) {
            let mut more = Vec::new();
            assert_eq!(decoder.feed(b"data: x\n\n", &mut more), Err(err));
            assert!(more.is_empty());
            return (events, Err(err));
        }
    }
    // finish() leaves a fresh decoder behind.
    decoder.finish();
    let mut fresh = Vec::new();
    assert_eq!(decoder.feed(b"data: x\n\n", &mut fresh), Ok(()));
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0].data, "x");
    (events, Ok(()))
}

fn sse_raw(input: &mut Input<'_>) {
    let max = 1 + usize::from(input.byte()) * 4;
    let plan = input.bytes(8);
    let bytes = input.rest();
    let [whole, planned, singles] = ways(bytes, plan);
    let expected = run_sse(&whole, max);
    for event in &expected.0 {
        assert!(
            event.data.len() <= max,
            "an event of {} bytes under a limit of {max}",
            event.data.len()
        );
        // Lines end at CR or LF, so no field can hold one except data's joins.
        assert!(!event
            .id
            .as_deref()
            .unwrap_or("")
            .contains(['\r', '\n', '\0']));
        assert!(!event.event.as_deref().unwrap_or("").contains(['\r', '\n']));
        assert!(!event.data.contains('\r'));
        assert_ne!(event.event.as_deref(), Some(""));
    }
    assert_eq!(run_sse(&planned, max), expected, "planned pieces");
    assert_eq!(run_sse(&singles, max), expected, "byte by byte");
}

/// What `sse::push_field` makes of a value.
fn field_value(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
        .collect()
}

/// The SSE encoder into the SSE decoder, over a stream of events, priming
/// events and comments.
fn sse_round_trip(input: &mut Input<'_>) {
    let plan = input.bytes(6).to_vec();
    let count = 1 + usize::from(input.byte() % 6);
    let mut out = Vec::new();
    let mut expected = Vec::new();
    for _ in 0..count {
        match input.byte() % 4 {
            0 => {
                let text = input.string(16);
                sse::write_comment(&mut out, &text);
            }
            1 => {
                let id = input.string(12);
                let retry = u64::from(input.byte()) << 24 | u64::from(input.byte());
                sse::write_priming(&mut out, &id, u128::from(retry));
                let id_bytes = field_value(id.as_bytes());
                expected.push(SseEvent {
                    event: None,
                    id: (!id_bytes.contains(&0))
                        .then(|| String::from_utf8_lossy(&id_bytes).into_owned()),
                    data: String::new(),
                    retry: Some(retry),
                });
            }
            _ => {
                let event = input.bool().then(|| input.string(12));
                let id = input.bool().then(|| input.string(12));
                let data = input.bytes(64);
                sse::write_event(&mut out, event.as_deref(), id.as_deref(), data);
                let event = event
                    .map(|e| String::from_utf8_lossy(&field_value(e.as_bytes())).into_owned())
                    .filter(|e| !e.is_empty());
                let id = id
                    .map(|i| field_value(i.as_bytes()))
                    .filter(|i| !i.contains(&0))
                    .map(|i| String::from_utf8_lossy(&i).into_owned());
                let lines: Vec<Vec<u8>> = data
                    .split(|&b| b == b'\n')
                    .map(|line| field_value(line.strip_suffix(b"\r").unwrap_or(line)))
                    .collect();
                let joined = lines.join(&b'\n');
                expected.push(SseEvent {
                    event,
                    id,
                    data: String::from_utf8_lossy(&joined).into_owned(),
                    retry: None,
                });
            }
        }
    }
    for chunks in ways(&out, &plan) {
        let (events, result) = run_sse(&chunks, ROUND_TRIP_MAX_EVENT_BYTES);
        assert_eq!(result, Ok(()));
        assert_eq!(events, expected, "{:?}", String::from_utf8_lossy(&out));
    }
}

/// The round trip's limit: far above its largest event (a few fields and 64
/// bytes of data), so the limit never decides its outcome.
const ROUND_TRIP_MAX_EVENT_BYTES: usize = 1 << 20;

/// Fuzz target `sse`: the SSE decoder, and the encoder into it.
pub fn sse(data: &[u8]) {
    let mut input = Input::new(data);
    match input.byte() % 2 {
        0 => sse_raw(&mut input),
        _ => sse_round_trip(&mut input),
    }
}
