//! mcphop: a lightweight proxy for the Model Context Protocol.
//!
//! One thread runs one mio event loop (`reactor`) over every client socket
//! and child pipe. The protocol work is sans-IO and tested on byte vectors:
//! HTTP/1.1 (`http`), SSE (`sse`), JSON-RPC (`jsonrpc`), line framing
//! (`lines`), the endpoint rules and session routing (`mcp`), timers
//! (`timers`). The reactor and the glue (`client`, `session`, `child`) are
//! the only parts that touch descriptors, processes or the clock.

pub mod child;
pub mod client;
pub mod config;
pub mod http;
pub mod jsonrpc;
pub mod lines;
pub mod mcp;
pub mod pool;
pub mod reactor;
pub mod session;
pub mod session_id;
pub mod sse;
pub mod sse_decoder;
pub mod timers;
pub mod token;
mod upstream_retry;
