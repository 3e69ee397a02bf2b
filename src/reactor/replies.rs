//! The answers the reactor gives on its own, without asking a session or an
//! upstream: a path that names no server, a message for an unhealthy
//! upstream, a request that arrives while mcphop shuts down.

use serde_json::value::RawValue;

use crate::config::RETRY_AFTER_SECONDS;
use crate::jsonrpc::{self, Message};
use crate::mcp::endpoint::Reply;
use serde_json::value::RawValue as Raw;

/// The answer to a path that names no server.
pub(super) fn not_found() -> Reply {
    Reply::error(
        404,
        RawValue::NULL,
        jsonrpc::INVALID_REQUEST,
        "Not found: the MCP endpoint is elsewhere",
    )
}

/// The answer to a message while its upstream is unhealthy: 503 with a
/// JSON-RPC error, at once.
pub(super) fn unhealthy_reply(message: &Message, why: &str) -> Reply {
    Reply::error(
        503,
        message.reply_id(),
        jsonrpc::UPSTREAM_GONE,
        &format!("Service Unavailable: {why}"),
    )
    .with_header("Retry-After", RETRY_AFTER_SECONDS.to_string())
}

/// The answer to a request that arrives while mcphop shuts down.
pub(super) fn shutting_down_reply() -> Reply {
    Reply::error(
        503,
        RawValue::NULL,
        jsonrpc::SHUTTING_DOWN,
        "Service Unavailable: mcphop is shutting down",
    )
}

/// The answer to a message for a stdio child that stopped reading its
/// stdin: 503, rather than mcphop buffering without bound.
pub(super) fn upstream_not_reading(message: &Message) -> Reply {
    Reply::error(
        503,
        message.reply_id(),
        jsonrpc::UPSTREAM_GONE,
        "Service Unavailable: the upstream server is not reading its input",
    )
    .with_header("Retry-After", "1")
}

/// The answer to a stdio client's first message when it is not
/// `initialize`: there is no session to send it to.
pub(super) fn not_initialized(id: &Raw) -> Reply {
    Reply::error(
        400,
        id,
        jsonrpc::INVALID_REQUEST,
        "Invalid Request: the first message must be initialize",
    )
}
