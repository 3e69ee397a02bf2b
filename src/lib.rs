//! mcphop: a lightweight proxy for the Model Context Protocol.
//!
//! One thread runs one mio event loop (`reactor`) over every client socket
//! and child pipe. The protocol work is sans-IO and tested on byte vectors:
//! HTTP/1.1 (`http`), SSE (`sse`), JSON-RPC (`jsonrpc`), line framing
//! (`lines`), the endpoint rules and session routing (`mcp`), timers
//! (`timers`). The reactor and the glue (`client`, `session`, `child`) are
//! the only parts that touch descriptors, processes or the clock.

pub(crate) mod arena;
pub(crate) mod child;
pub(crate) mod client;
pub mod config;
pub mod config_file;
mod core;
pub(crate) mod health;
pub mod http;
pub mod jsonrpc;
pub mod lines;
pub mod mcp;
pub(crate) mod metrics;
pub(crate) mod pool;
pub mod reactor;
pub(crate) mod session;
pub(crate) mod session_id;
pub mod sse;
pub mod sse_decoder;
pub(crate) mod timers;
pub(crate) mod tls;
pub(crate) mod token;
mod upstream;
mod upstream_retry;
