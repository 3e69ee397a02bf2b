//! Reading structure out of fuzz bytes, and the ways every decoder is fed.

/// Reads structure out of fuzz bytes; yields zeros once they run out.
pub(super) struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub(super) fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub(super) fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    pub(super) fn take(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }

    /// A length-prefixed piece of at most `max` bytes.
    pub(super) fn bytes(&mut self, max: usize) -> &'a [u8] {
        let n = usize::from(self.byte()) % (max + 1);
        self.take(n)
    }

    pub(super) fn string(&mut self, max: usize) -> String {
        String::from_utf8_lossy(self.bytes(max)).into_owned()
    }

    pub(super) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// Cuts `bytes` into pieces whose sizes cycle through `plan` (a 0 in the
/// plan is an empty piece, which a reactor never passes but a codec must
/// take); a plan of no non-zero size means one piece.
pub(super) fn pieces<'a>(bytes: &'a [u8], plan: &[u8]) -> Vec<&'a [u8]> {
    if plan.iter().all(|&size| size == 0) {
        return vec![bytes];
    }
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut sizes = plan.iter().cycle();
    while !rest.is_empty() {
        let size = usize::from(*sizes.next().unwrap_or(&1));
        let (piece, after) = rest.split_at(size.min(rest.len()));
        out.push(piece);
        rest = after;
    }
    out
}

/// The three ways every decoder is fed: whole, in planned pieces, and one
/// byte at a time.
pub(super) fn ways<'a>(bytes: &'a [u8], plan: &[u8]) -> [Vec<&'a [u8]>; 3] {
    [vec![bytes], pieces(bytes, plan), bytes.chunks(1).collect()]
}
