//! Byte cursors shared by the HTTP decoders: the unconsumed part of the
//! caller's bytes and how much was used, and line-wise copying with a cap.
//!
//! Consumption is only counted here and applied by one drain (or one count
//! returned) per decode call, because draining a Vec's front per line or per
//! chunk would shift the rest of a large pipelined buffer each time
//! (quadratic for many small chunks).

/// The unconsumed part of the caller's bytes, and how much was used.
pub(crate) struct Cursor<'a> {
    pub rest: &'a [u8],
    pub used: usize,
}

impl<'a> Cursor<'a> {
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Consumes and returns up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        self.used += taken.len();
        taken
    }

    /// Like `take`, for lengths declared by the peer, which may not fit a
    /// usize on 32-bit targets.
    pub fn take_u64(&mut self, n: u64) -> &'a [u8] {
        self.take(usize::try_from(n).unwrap_or(usize::MAX))
    }
}

/// Copies bytes from `input` to `buf` through the first LF, or at most `cap`
/// bytes; returns whether an LF was copied.
pub(crate) fn take_line(input: &mut Cursor<'_>, buf: &mut Vec<u8>, cap: usize) -> bool {
    let (n, complete) = match input.rest.iter().take(cap).position(|&b| b == b'\n') {
        Some(lf) => (lf + 1, true),
        None => (cap, false),
    };
    buf.extend_from_slice(input.take(n));
    complete
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_lines_up_to_the_cap_and_counts_what_it_used() {
        let mut cursor = Cursor {
            rest: b"ab\ncdef",
            used: 0,
        };
        let mut line = Vec::new();
        assert!(take_line(&mut cursor, &mut line, 10));
        assert_eq!(line, b"ab\n");
        line.clear();
        assert!(!take_line(&mut cursor, &mut line, 2));
        assert_eq!(line, b"cd");
        assert_eq!(cursor.used, 5);
        assert_eq!(cursor.take_u64(u64::MAX), b"ef");
        assert!(cursor.is_empty());
    }
}
