//! Server-Sent Events encoding: turns one message into the bytes of one SSE event.
//!
//! Framing on the wire (chunked transfer encoding) is the HTTP codec's job; this
//! module only knows the `event:`/`id:`/`data:` text format.

/// Appends one SSE event to `out`. Each line of `data` becomes its own `data:`
/// field, so a payload that contains a newline still arrives whole.
pub fn write_event(out: &mut Vec<u8>, event: Option<&str>, id: Option<&str>, data: &[u8]) {
    if let Some(event) = event {
        push_field(out, b"event: ", event.as_bytes());
    }
    if let Some(id) = id {
        push_field(out, b"id: ", id.as_bytes());
    }
    for line in data.split(|&byte| byte == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        push_field(out, b"data: ", line);
    }
    out.push(b'\n');
}

/// The length `write_event` gives the same event, so a chunk's size can be
/// written before the event itself, straight into the output.
pub fn event_len(event: Option<&str>, id: Option<&str>, data: &[u8]) -> usize {
    let field = |name: &[u8], value_len: usize| name.len() + value_len + 1;
    let event = event.map_or(0, |event| field(b"event: ", event.len()));
    let id = id.map_or(0, |id| field(b"id: ", id.len()));
    let data: usize = data
        .split(|&byte| byte == b'\n')
        .map(|line| field(b"data: ", line.strip_suffix(b"\r").unwrap_or(line).len()))
        .sum();
    event + id + data + 1
}

/// Appends a stream's priming event: an id and an empty `data`, with the
/// reconnection delay. Clients record the id (so they can resume from it)
/// without dispatching an event.
pub fn write_priming(out: &mut Vec<u8>, id: &str, retry_millis: u128) {
    push_field(out, b"id: ", id.as_bytes());
    push_field(out, b"retry: ", retry_millis.to_string().as_bytes());
    out.extend_from_slice(b"data: \n\n");
}

/// Appends an SSE comment, which clients ignore; it keeps idle streams alive.
pub fn write_comment(out: &mut Vec<u8>, text: &str) {
    push_field(out, b": ", text.as_bytes());
    out.push(b'\n');
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    // A bare CR or LF inside a field would end it early; field values given
    // here never legitimately contain them.
    out.extend(value.iter().map(|&byte| match byte {
        b'\r' | b'\n' => b' ',
        other => other,
    }));
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_len_is_what_write_event_writes() {
        for data in [&b""[..], b"{}", b"a\nb", b"a\r\nb\r\n", b"\n\n", b"x\ry"] {
            for id in [None, Some("3-7")] {
                let mut out = Vec::new();
                write_event(&mut out, Some("message"), id, data);
                assert_eq!(event_len(Some("message"), id, data), out.len(), "{data:?}");
            }
        }
    }

    #[test]
    fn encodes_a_message_event() {
        let mut out = Vec::new();
        write_event(&mut out, Some("message"), Some("7"), br#"{"a":1}"#);
        assert_eq!(out, b"event: message\nid: 7\ndata: {\"a\":1}\n\n");
    }

    #[test]
    fn splits_multiline_data() {
        let mut out = Vec::new();
        write_event(&mut out, None, None, b"one\r\ntwo\nthree");
        assert_eq!(out, b"data: one\ndata: two\ndata: three\n\n");
    }

    #[test]
    fn encodes_a_priming_event() {
        let mut out = Vec::new();
        write_priming(&mut out, "3-0", 1000);
        assert_eq!(out, b"id: 3-0\nretry: 1000\ndata: \n\n");
    }

    #[test]
    fn encodes_a_comment() {
        let mut out = Vec::new();
        write_comment(&mut out, "keepalive");
        assert_eq!(out, b": keepalive\n\n");
    }
}
