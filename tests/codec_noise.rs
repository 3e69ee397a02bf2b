//! No input makes the sans-IO parts panic: mutated and random byte streams fed
//! to the HTTP request decoder, the line framer and the JSON-RPC classifier,
//! in pieces of every size. A tiny deterministic generator keeps it repeatable.

use mcphop::http::request::{Decoded, Limits, RequestDecoder};
use mcphop::jsonrpc;
use mcphop::lines::LineFramer;

/// xorshift64*: deterministic, dependency-free noise.
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

const SEED_REQUESTS: [&[u8]; 3] = [
    b"POST /mcp HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /mcp HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n",
    b"GET /mcp HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
];

fn mutate(noise: &mut Noise, seed: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..1 + noise.below(4) {
        if bytes.is_empty() {
            break;
        }
        let at = noise.below(bytes.len());
        match noise.below(4) {
            0 => bytes[at] = noise.next() as u8,
            1 => {
                bytes.remove(at);
            }
            2 => bytes.insert(
                at,
                b"\r\n:; 0123456789abcdefABCDEF\x00\xff"[noise.below(27)],
            ),
            _ => bytes.truncate(at),
        }
    }
    bytes
}

fn decode_in_pieces(noise: &mut Noise, bytes: &[u8]) -> usize {
    let mut decoder = RequestDecoder::new(Limits {
        max_head_bytes: 256,
        max_body_bytes: 64,
    });
    let mut input = Vec::new();
    let mut decoded = 0;
    let mut offset = 0;
    while offset < bytes.len() {
        let piece = 1 + noise.below(16);
        let end = (offset + piece).min(bytes.len());
        input.extend_from_slice(&bytes[offset..end]);
        offset = end;
        loop {
            match decoder.decode(&mut input) {
                Ok(Decoded::Request(_)) => decoded += 1,
                Ok(Decoded::Incomplete) => break,
                Err(error) => {
                    assert!((400..=599).contains(&error.status()));
                    return decoded;
                }
            }
        }
    }
    decoded
}

#[test]
fn the_request_decoder_survives_mutated_and_random_input() {
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    for seed in SEED_REQUESTS {
        // Unmutated, in random pieces: always exactly one request.
        for _ in 0..200 {
            assert_eq!(decode_in_pieces(&mut noise, seed), 1);
        }
    }
    for round in 0..20_000 {
        let seed = SEED_REQUESTS[round % SEED_REQUESTS.len()];
        let bytes = mutate(&mut noise, seed);
        decode_in_pieces(&mut noise, &bytes);
    }
    for _ in 0..2_000 {
        let length = noise.below(600);
        let bytes: Vec<u8> = (0..length).map(|_| noise.next() as u8).collect();
        decode_in_pieces(&mut noise, &bytes);
    }
}

#[test]
fn the_line_framer_and_classifier_survive_noise() {
    let mut noise = Noise(42);
    let mut framer = LineFramer::new(128);
    for _ in 0..20_000 {
        let length = noise.below(64);
        let bytes: Vec<u8> = (0..length)
            .map(|_| match noise.below(8) {
                0 => b'\n',
                1 => b'{',
                2 => b'"',
                _ => noise.next() as u8,
            })
            .collect();
        framer.feed(&bytes);
        while let Some(line) = framer.next_line() {
            if let mcphop::lines::Line::Complete(line) = line {
                assert!(line.len() <= 128);
                if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&line) {
                    let _ = jsonrpc::classify(&value);
                }
            }
        }
        assert!(framer.buffered() <= 128 + 64);
    }
}
