//! The `lines` target: stdio line framing.

use mcphop::lines::{Line, LineFramer};

use super::support::{ways, Input};

/// What a line framer should yield for `bytes`, lines cut at LF, one CR
/// before it dropped, lines over `max` reported by length.
fn reference_lines(bytes: &[u8], max: usize) -> Vec<Result<Vec<u8>, usize>> {
    let mut lines = Vec::new();
    let mut rest = bytes;
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let (line, after) = rest.split_at(end);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        lines.push(if line.len() > max {
            Err(line.len())
        } else {
            Ok(line.to_vec())
        });
        rest = after.get(1..).unwrap_or_default();
    }
    lines
}

fn run_lines(chunks: &[&[u8]], max: usize) -> Vec<Line> {
    let mut framer = LineFramer::new(max);
    let mut lines = Vec::new();
    for chunk in chunks {
        framer.feed(chunk);
        while let Some(line) = framer.next_line() {
            lines.push(line);
        }
        // Once every line is out, at most one line's worth is held, and
        // the CR that may begin its CRLF.
        assert!(
            framer.buffered() <= max + 1,
            "{} bytes buffered under a line limit of {max}",
            framer.buffered()
        );
    }
    lines
}

/// Fuzz target `lines`: the stdio line framer.
pub fn lines(data: &[u8]) {
    let mut input = Input::new(data);
    let max = usize::from(input.byte() % 64);
    let plan = input.bytes(8);
    let bytes = input.rest();
    let reference = reference_lines(bytes, max);
    for chunks in ways(bytes, plan) {
        let got = run_lines(&chunks, max);
        assert_eq!(got.len(), reference.len());
        for (line, want) in got.iter().zip(&reference) {
            match (line, want) {
                (Line::Complete(got), Ok(want)) => assert_eq!(got, want),
                // The exact length, without the CR of its CRLF, however
                // the reads split it.
                (Line::Overlong(got), Err(want)) => assert_eq!(got, want, "Overlong"),
                (got, want) => panic!("got {got:?}, expected {want:?}"),
            }
        }
    }
}
