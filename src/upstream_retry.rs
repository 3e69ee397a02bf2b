//! The MCP rule deciding whether a failed upstream exchange may be sent
//! again. It lives beside the exchanges, which know each request's method,
//! and not in the connection pool, which knows only hosts and sockets.
//!
//! The rule turns on the method because replaying a request repeats its
//! effects: a replayed `tools/call` runs the tool twice, with whatever side
//! effects it has, so only methods that read or converge may go again once
//! any of their bytes reached the server.

/// MCP methods whose request may be sent twice without harm: reads, listings
/// and settings that converge. `tools/call` and `initialize` are absent on
/// purpose: a tool may act on the world and `initialize` creates state.
pub(crate) const REPLAYABLE_METHODS: &[&str] = &[
    "ping",
    "tools/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "server/discover",
];

/// The retry rule: retry once, on a fresh connection, only when the connection
/// was reused AND (nothing of the request was written, OR EOF came before any
/// response byte and the method is safe to repeat).
///
/// A reused connection may have been closed by the server just as we wrote,
/// which says nothing about the request; a fresh one failing does. Once bytes
/// are out the server may have acted on them, so only [`REPLAYABLE_METHODS`]
/// go again; `method: None` (a notification or a response, not a request) is
/// never repeated once written.
pub(crate) fn may_retry(
    reused: bool,
    already_retried: bool,
    written_any: bool,
    response_started: bool,
    method: Option<&str>,
) -> bool {
    if !reused || already_retried {
        return false;
    }
    if !written_any {
        return true;
    }
    !response_started && method.is_some_and(|m| REPLAYABLE_METHODS.contains(&m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_truth_table() {
        // (reused, already_retried, written_any, response_started, method, verdict)
        type Case = (bool, bool, bool, bool, Option<&'static str>, bool);
        let cases: &[Case] = &[
            // Nothing written on a reused connection: any message may go again.
            (true, false, false, false, Some("tools/call"), true),
            (true, false, false, false, Some("initialize"), true),
            (true, false, false, false, None, true),
            // Written, EOF before any response byte: only replayable methods.
            (true, false, true, false, Some("tools/list"), true),
            (true, false, true, false, Some("ping"), true),
            (true, false, true, false, Some("resources/read"), true),
            (true, false, true, false, Some("server/discover"), true),
            (true, false, true, false, Some("tools/call"), false),
            (true, false, true, false, Some("initialize"), false),
            (
                true,
                false,
                true,
                false,
                Some("sampling/createMessage"),
                false,
            ),
            (true, false, true, false, None, false),
            // The response had begun: never.
            (true, false, true, true, Some("tools/list"), false),
            (true, false, true, true, Some("tools/call"), false),
            // A fresh connection failing says something about the request: never.
            (false, false, false, false, Some("tools/list"), false),
            (false, false, false, false, Some("tools/call"), false),
            (false, false, true, false, Some("ping"), false),
            // Never twice.
            (true, true, false, false, Some("ping"), false),
            (true, true, true, false, Some("tools/list"), false),
        ];
        for &(reused, retried, written, started, method, want) in cases {
            assert_eq!(
                may_retry(reused, retried, written, started, method),
                want,
                "reused={reused} retried={retried} written={written} started={started} method={method:?}"
            );
        }
        for method in REPLAYABLE_METHODS {
            assert!(may_retry(true, false, true, false, Some(method)));
        }
    }
}
