//! The session core's tool filter: its server's hidden tools are left out of
//! `tools/list` answers and refused in `tools/call` requests (the rules and
//! the rewrite are `mcp::tools`; applying them to a session's messages is
//! here).

use log::debug;

use super::SessionCore;
use crate::jsonrpc::{self, Kind, Message};
use crate::mcp::endpoint::Reply;
use crate::mcp::tools;

impl SessionCore {
    /// The answer to a `tools/call` of a tool its server hides from
    /// clients: a JSON-RPC error, as for a tool that does not exist.
    pub(super) fn hidden_tool_call(&self, message: &Message) -> Option<Reply> {
        if self.config.tools.is_open() || message.method() != Some("tools/call") {
            return None;
        }
        let name = tools::called_tool(message.bytes())?;
        if self.config.tools.allows(&name) {
            return None;
        }
        debug!(
            "session {}: refused a call of hidden tool {name}",
            self.short_id()
        );
        Some(Reply::error(
            200,
            message.reply_id(),
            jsonrpc::INVALID_PARAMS,
            &format!("Unknown tool: {name}"),
        ))
    }

    /// An upstream answer to `tools/list` without the tools its server
    /// hides from clients (re-serialised only when it names one).
    pub(super) fn filter_tools(&self, message: Message) -> Message {
        if self.config.tools.is_open() || message.kind() != Kind::Response {
            return message;
        }
        let listed = message
            .id_key()
            .is_some_and(|id| self.router.pending_method(&id) == Some("tools/list"));
        if !listed {
            return message;
        }
        match self.config.tools.filter_list_response(message.bytes()) {
            Some(filtered) => Message::parse(filtered).unwrap_or(message),
            None => message,
        }
    }
}
