//! The fuzz properties of mcphop's sans-IO codecs, one public function per
//! fuzz target: each takes the fuzzer's bytes, drives a codec with them and
//! panics (through `assert!`) only when a property is broken. Owned here so
//! the libFuzzer binaries (`fuzz/fuzz_targets/`) and the seed-corpus test
//! (`tests/fuzz_seeds.rs`, which includes this file as a module) check the
//! very same properties.
//!
//! The properties, for every target:
//! - no input makes the codec panic (a panic is the fuzzer's crash);
//! - no growth past the configured limits: the small limits the first bytes
//!   pick are enforced (head, body, event and line sizes), and a decoder
//!   that asks for more bytes has consumed what it was given, so a caller
//!   never has to hold an unbounded backlog;
//! - split invariance: the same bytes fed whole, in fuzzer-chosen pieces
//!   and one byte at a time decode to the same values and the same error;
//! - round trips where mcphop both writes and reads a format: the request
//!   writer into the request decoder (and a chunked body the harness
//!   frames itself), the response writer into the response decoder, the
//!   SSE encoder into the SSE decoder, JSON-RPC error responses into the
//!   classifier.
//!
//! The first byte of an input picks the mode (raw bytes or a structured
//! round trip); the next few pick limits and the piece sizes. Everything
//! is deterministic in the input, so every crash replays.
//!
//! One module per target, plus `support` (the input reader and the ways
//! a decoder is fed) and `http_syntax` (what the HTTP round trips build
//! from). Child modules are named with `super::` paths, never `crate::`,
//! since `tests/fuzz_seeds.rs` includes this file as a module of its own
//! crate.

mod endpoint;
mod http_request;
mod http_response;
mod http_syntax;
mod jsonrpc;
mod lines;
mod sse;
mod support;

pub use endpoint::endpoint;
pub use http_request::http_request;
pub use http_response::http_response;
pub use jsonrpc::jsonrpc;
pub use lines::lines;
pub use sse::sse;
