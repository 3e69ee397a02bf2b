//! Line framing for a child's stdout: bytes in, complete lines out, with a cap
//! on line length so a child that never writes a newline cannot exhaust memory.

/// Longest line accepted from a child's stdout (one JSON-RPC message).
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Capacity a framer keeps once it starts skipping an overlong line (the
/// rest is given back to the allocator).
const RETAINED_BYTES: usize = 64 * 1024;

/// One framing result.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line, without its `\n` (and without a `\r` before it).
    Complete(Vec<u8>),
    /// A line longer than the limit was dropped; this many bytes of it were seen.
    Overlong(usize),
}

/// Accumulates bytes and yields lines.
#[derive(Debug)]
pub struct LineFramer {
    buffer: Vec<u8>,
    /// Bytes before this index hold no newline.
    scanned: usize,
    max_line: usize,
    /// Set while skipping the rest of an overlong line: how much was dropped.
    discarding: Option<usize>,
}

impl LineFramer {
    /// A framer that accepts lines up to `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        LineFramer {
            buffer: Vec::new(),
            scanned: 0,
            max_line,
            discarding: None,
        }
    }

    /// Adds bytes read from the stream.
    pub fn feed(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// Bytes held that do not yet form a line.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The next complete line, if any.
    pub fn next_line(&mut self) -> Option<Line> {
        loop {
            let found = self.buffer[self.scanned..]
                .iter()
                .position(|&byte| byte == b'\n')
                .map(|offset| self.scanned + offset);
            match found {
                Some(end) => {
                    // A read usually ends with its last line: the buffer then
                    // becomes the line, moved rather than copied.
                    let mut line: Vec<u8> = if end + 1 == self.buffer.len() {
                        std::mem::take(&mut self.buffer)
                    } else {
                        self.buffer.drain(..=end).collect()
                    };
                    self.scanned = 0;
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    if let Some(dropped) = self.discarding.take() {
                        return Some(Line::Overlong(dropped + line.len()));
                    }
                    if line.len() > self.max_line {
                        return Some(Line::Overlong(line.len()));
                    }
                    return Some(Line::Complete(line));
                }
                None => {
                    // A last CR may be the first half of the line's CRLF,
                    // which is no part of the line: a line of exactly the
                    // limit must pass whether its CR and LF come in one read
                    // or two. So the CR is not counted, and is kept.
                    // While an overlong line is skipped, each read's bytes
                    // are dropped at once rather than gathered up to the
                    // limit again, and the buffer's capacity is given back.
                    let cr = usize::from(self.buffer.last() == Some(&b'\r'));
                    let content = self.buffer.len() - cr;
                    if content == 0 || (self.discarding.is_none() && content <= self.max_line) {
                        self.scanned = self.buffer.len();
                        return None;
                    }
                    self.buffer.drain(..content);
                    self.buffer.shrink_to(RETAINED_BYTES);
                    self.scanned = 0;
                    *self.discarding.get_or_insert(0) += content;
                    // Keep looping: at most that CR is left, so this returns None.
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_all(input: &[u8], split: usize, max: usize) -> Vec<Line> {
        let mut framer = LineFramer::new(max);
        let mut lines = Vec::new();
        for piece in [&input[..split], &input[split..]] {
            framer.feed(piece);
            while let Some(line) = framer.next_line() {
                lines.push(line);
            }
        }
        lines
    }

    #[test]
    fn frames_lines_split_at_every_offset() {
        let input = b"{\"a\":1}\r\n\nsecond line\nthird";
        for split in 0..=input.len() {
            assert_eq!(
                frame_all(input, split, 1024),
                vec![
                    Line::Complete(b"{\"a\":1}".to_vec()),
                    Line::Complete(Vec::new()),
                    Line::Complete(b"second line".to_vec()),
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn drops_overlong_lines_and_recovers() {
        let input = b"0123456789abcdef\nok\n";
        for split in 0..=input.len() {
            let lines = frame_all(input, split, 8);
            assert_eq!(lines.len(), 2, "split at {split}");
            assert!(matches!(lines[0], Line::Overlong(_)));
            assert_eq!(lines[1], Line::Complete(b"ok".to_vec()));
        }
    }

    #[test]
    fn a_line_that_ends_the_buffer_is_moved_out_whole() {
        let mut framer = LineFramer::new(1024);
        framer.feed(b"one\ntwo\r\n");
        assert_eq!(framer.next_line(), Some(Line::Complete(b"one".to_vec())));
        assert_eq!(framer.next_line(), Some(Line::Complete(b"two".to_vec())));
        assert_eq!(framer.buffered(), 0);
        framer.feed(b"thr");
        assert_eq!(framer.next_line(), None);
        framer.feed(b"ee\n");
        assert_eq!(framer.next_line(), Some(Line::Complete(b"three".to_vec())));
        assert_eq!(framer.next_line(), None);
    }

    #[test]
    fn a_line_of_exactly_the_limit_passes_however_its_crlf_is_split() {
        let input = b"abcd\r\nef\n";
        for split in 0..=input.len() {
            assert_eq!(
                frame_all(input, split, 4),
                vec![
                    Line::Complete(b"abcd".to_vec()),
                    Line::Complete(b"ef".to_vec())
                ],
                "split at {split}"
            );
        }
        // One byte more is overlong, by its exact length, however split.
        let input = b"abcde\r\nef\n";
        for split in 0..=input.len() {
            assert_eq!(
                frame_all(input, split, 4),
                vec![Line::Overlong(5), Line::Complete(b"ef".to_vec())],
                "split at {split}"
            );
        }
        // A CR inside an overlong line is part of it.
        assert_eq!(frame_all(b"abc\rde\r\n", 4, 4), vec![Line::Overlong(6)]);
    }

    #[test]
    fn an_overlong_line_is_dropped_read_by_read_and_its_memory_given_back() {
        let mut framer = LineFramer::new(1000);
        framer.feed(&[b'x'; 1500]);
        assert_eq!(framer.next_line(), None);
        assert_eq!(framer.buffered(), 0);
        assert!(framer.buffer.capacity() <= RETAINED_BYTES);
        for _ in 0..100 {
            framer.feed(&[b'y'; 100]);
            assert_eq!(framer.next_line(), None);
            assert_eq!(framer.buffered(), 0, "nothing gathered while skipping");
        }
        framer.feed(b"yy\r\nok\n");
        assert_eq!(
            framer.next_line(),
            Some(Line::Overlong(1500 + 100 * 100 + 2))
        );
        assert_eq!(framer.next_line(), Some(Line::Complete(b"ok".to_vec())));
    }

    #[test]
    fn buffer_stays_bounded_without_newlines() {
        let mut framer = LineFramer::new(8);
        for _ in 0..100 {
            framer.feed(b"xxxxxx");
            assert_eq!(framer.next_line(), None);
            assert!(framer.buffered() <= 8 + 6);
        }
    }
}
