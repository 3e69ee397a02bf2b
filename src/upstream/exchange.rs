//! The lifecycle of one upstream exchange (an HTTP request and its response)
//! as an explicit state machine, with no I/O: the reactor reports what
//! happened on the connection (`ExchangeEvent`) and carries out what the
//! machine answers (`Step`). Every transition is in `Lifecycle::on`, and the
//! retry decision (`upstream_retry::may_retry`) is taken here, where the
//! request's method and what reached the wire are both known.
//!
//! ```text
//! Queued --Assigned--> Writing --Wrote(all out)--> AwaitingHead
//!                         |                            |
//!                         +-----------Head-------------+--> Streaming | Collecting --End--> Done
//! Writing | AwaitingHead --Broke--> Queued (retry once) | Failed
//! Queued | Streaming | Collecting --Broke--> Failed;   any --Abandoned--> Failed
//! ```

use crate::http::client::ResponseHead;
use crate::upstream_retry;

/// Whether this is the exchange's first try or its one retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    First,
    Retry,
}

/// Where an exchange is. `C` names an upstream connection.
#[derive(Debug)]
pub(crate) enum ExchangeState<C> {
    /// Waiting for a connection: in the pool's queue, or held by the
    /// session's gate.
    Queued { attempt: Attempt },
    /// The request is going out on `conn`.
    Writing {
        conn: C,
        /// The pool lent a connection that carried earlier exchanges.
        reused: bool,
        attempt: Attempt,
        /// Some bytes of the request reached the socket.
        written_any: bool,
    },
    /// The whole request is out; no response head yet.
    AwaitingHead {
        conn: C,
        reused: bool,
        attempt: Attempt,
    },
    /// A 200 answer whose messages flow to the session (or, for a
    /// passthrough, whose body flows to the client) as they arrive.
    Streaming { conn: C, head: ResponseHead },
    /// Any other answer: its body is collected and acted on at its end.
    Collecting { conn: C, head: ResponseHead },
    /// The response ended (`streamed`: it was flowing as it arrived).
    Done { head: ResponseHead, streamed: bool },
    /// The exchange broke and will not be retried, or was abandoned
    /// (`streamed`: after its response had begun to flow).
    Failed { streamed: bool },
}

/// What happened to an exchange.
#[derive(Debug)]
pub(crate) enum ExchangeEvent<C> {
    /// A connection was given to it (`reused`: one that carried others).
    Assigned { conn: C, reused: bool },
    /// `written` more bytes of the request went out; `all_out`: nothing is
    /// left to write.
    Wrote { written: usize, all_out: bool },
    /// The response head came; `stream`: its body is to flow as it arrives.
    Head { head: ResponseHead, stream: bool },
    /// The response is complete; `clean`: no bytes came after it (else the
    /// connection cannot be reused).
    End { clean: bool },
    /// The connection failed (or closed early); `response_started`: some
    /// bytes of a response had arrived.
    Broke { response_started: bool },
    /// Given up from outside (a timeout, the session ended).
    Abandoned,
}

/// What the reactor is to do after a transition.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step<C> {
    /// Nothing more than the state change.
    Nothing,
    /// Put the request on `conn` and write it.
    Send { conn: C },
    /// Ask the pool for a fresh connection and send the request again (the
    /// response decoder starts over).
    Retry,
    /// The response is complete: `conn` goes back to the pool if `reusable`.
    Finished { conn: C, reusable: bool },
    /// The exchange failed: `conn`, if any, is dropped, and whoever waits
    /// hears of it.
    GiveUp { conn: Option<C> },
    /// The event made no sense in this state (a stale or duplicate report);
    /// nothing changed.
    Ignored,
}

/// One exchange's state and what its retry rule needs to know.
#[derive(Debug)]
pub(crate) struct Lifecycle<C> {
    state: ExchangeState<C>,
    /// The MCP method of a lone request (`None`: a notification, a
    /// response, a batch), for the retry rule.
    mcp_method: Option<String>,
    /// False for streams that must not be sent twice by the pool's rule (a
    /// GET stream or a continuation is reopened by its own schedule).
    retryable: bool,
}

impl<C: Copy + PartialEq> Lifecycle<C> {
    pub(crate) fn new(mcp_method: Option<String>, retryable: bool) -> Lifecycle<C> {
        Lifecycle {
            state: ExchangeState::Queued {
                attempt: Attempt::First,
            },
            mcp_method,
            retryable,
        }
    }

    #[cfg(test)]
    pub(crate) fn state(&self) -> &ExchangeState<C> {
        &self.state
    }

    /// The connection carrying the exchange, if one does.
    pub(crate) fn conn(&self) -> Option<C> {
        match &self.state {
            ExchangeState::Writing { conn, .. }
            | ExchangeState::AwaitingHead { conn, .. }
            | ExchangeState::Streaming { conn, .. }
            | ExchangeState::Collecting { conn, .. } => Some(*conn),
            ExchangeState::Queued { .. }
            | ExchangeState::Done { .. }
            | ExchangeState::Failed { .. } => None,
        }
    }

    /// The response head, once it came.
    pub(crate) fn head(&self) -> Option<&ResponseHead> {
        match &self.state {
            ExchangeState::Streaming { head, .. }
            | ExchangeState::Collecting { head, .. }
            | ExchangeState::Done { head, .. } => Some(head),
            _ => None,
        }
    }

    /// True while (or once) the response flows as it arrives, even after
    /// the exchange ended or failed.
    pub(crate) fn streaming(&self) -> bool {
        matches!(
            self.state,
            ExchangeState::Streaming { .. }
                | ExchangeState::Done { streamed: true, .. }
                | ExchangeState::Failed { streamed: true }
        )
    }

    /// Every transition of an exchange.
    pub(crate) fn on(&mut self, event: ExchangeEvent<C>) -> Step<C> {
        use ExchangeEvent as E;
        use ExchangeState as S;
        let state = std::mem::replace(&mut self.state, S::Failed { streamed: false });
        let (next, step) = match (state, event) {
            (S::Queued { attempt }, E::Assigned { conn, reused }) => (
                S::Writing {
                    conn,
                    reused,
                    attempt,
                    written_any: false,
                },
                Step::Send { conn },
            ),
            (
                S::Writing {
                    conn,
                    reused,
                    attempt,
                    written_any,
                },
                E::Wrote { written, all_out },
            ) => {
                let next = if all_out {
                    S::AwaitingHead {
                        conn,
                        reused,
                        attempt,
                    }
                } else {
                    S::Writing {
                        conn,
                        reused,
                        attempt,
                        written_any: written_any || written > 0,
                    }
                };
                (next, Step::Nothing)
            }
            // A server may answer before it read the whole request (413).
            (S::Writing { conn, .. } | S::AwaitingHead { conn, .. }, E::Head { head, stream }) => {
                let next = if stream {
                    S::Streaming { conn, head }
                } else {
                    S::Collecting { conn, head }
                };
                (next, Step::Nothing)
            }
            (S::Streaming { conn, head }, E::End { clean }) => {
                let reusable = clean && head.keep_alive;
                let done = S::Done {
                    head,
                    streamed: true,
                };
                (done, Step::Finished { conn, reusable })
            }
            (S::Collecting { conn, head }, E::End { clean }) => {
                let reusable = clean && head.keep_alive;
                let done = S::Done {
                    head,
                    streamed: false,
                };
                (done, Step::Finished { conn, reusable })
            }
            (
                S::Writing {
                    conn,
                    reused,
                    attempt,
                    written_any,
                },
                E::Broke { response_started },
            ) => self.broke(conn, reused, attempt, written_any, response_started),
            (
                S::AwaitingHead {
                    conn,
                    reused,
                    attempt,
                },
                E::Broke { response_started },
            ) => self.broke(conn, reused, attempt, true, response_started),
            (S::Streaming { conn, .. }, E::Broke { .. }) => (
                S::Failed { streamed: true },
                Step::GiveUp { conn: Some(conn) },
            ),
            (S::Collecting { conn, .. }, E::Broke { .. }) => (
                S::Failed { streamed: false },
                Step::GiveUp { conn: Some(conn) },
            ),
            // No connection yet (a dedicated one could not be opened).
            (S::Queued { .. }, E::Broke { .. }) => {
                (S::Failed { streamed: false }, Step::GiveUp { conn: None })
            }
            (state @ (S::Done { .. } | S::Failed { .. }), E::Abandoned) => (state, Step::Ignored),
            (state, E::Abandoned) => {
                let conn = Lifecycle::conn_of(&state);
                let streamed = matches!(state, S::Streaming { .. });
                (S::Failed { streamed }, Step::GiveUp { conn })
            }
            (state, _) => (state, Step::Ignored),
        };
        self.state = next;
        step
    }

    fn conn_of(state: &ExchangeState<C>) -> Option<C> {
        match state {
            ExchangeState::Writing { conn, .. }
            | ExchangeState::AwaitingHead { conn, .. }
            | ExchangeState::Streaming { conn, .. }
            | ExchangeState::Collecting { conn, .. } => Some(*conn),
            _ => None,
        }
    }

    /// The connection failed before a response head: retry once on a fresh
    /// connection if the rule allows, or give up.
    fn broke(
        &self,
        conn: C,
        reused: bool,
        attempt: Attempt,
        written_any: bool,
        response_started: bool,
    ) -> (ExchangeState<C>, Step<C>) {
        let retry = self.retryable
            && upstream_retry::may_retry(
                reused,
                attempt == Attempt::Retry,
                written_any,
                response_started,
                self.mcp_method.as_deref(),
            );
        if retry {
            let next = ExchangeState::Queued {
                attempt: Attempt::Retry,
            };
            (next, Step::Retry)
        } else {
            (
                ExchangeState::Failed { streamed: false },
                Step::GiveUp { conn: Some(conn) },
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Conn = u32;

    fn head(status: u16, keep_alive: bool) -> ResponseHead {
        ResponseHead {
            status,
            headers: Vec::new(),
            keep_alive,
        }
    }

    fn exchange(method: &str) -> Lifecycle<Conn> {
        Lifecycle::new(Some(method.to_string()), true)
    }

    fn assigned(conn: Conn, reused: bool) -> ExchangeEvent<Conn> {
        ExchangeEvent::Assigned { conn, reused }
    }

    /// Ten more bytes of the request went out; `all_out`: the last of them.
    fn wrote(all_out: bool) -> ExchangeEvent<Conn> {
        ExchangeEvent::Wrote {
            written: 10,
            all_out,
        }
    }

    fn broke(response_started: bool) -> ExchangeEvent<Conn> {
        ExchangeEvent::Broke { response_started }
    }

    #[test]
    fn a_reused_connection_dying_before_any_byte_is_retried_once() {
        let mut life = exchange("tools/call");
        assert_eq!(life.on(assigned(1, true)), Step::Send { conn: 1 });
        assert_eq!(life.on(broke(false)), Step::Retry);
        assert!(matches!(
            life.state(),
            ExchangeState::Queued {
                attempt: Attempt::Retry
            }
        ));
        // The retry gets a fresh connection; even a reused one dying again
        // is not retried twice.
        life.on(assigned(2, true));
        assert_eq!(life.on(broke(false)), Step::GiveUp { conn: Some(2) });
        assert!(matches!(life.state(), ExchangeState::Failed { .. }));
    }

    #[test]
    fn a_written_tools_call_is_never_retried() {
        let mut life = exchange("tools/call");
        life.on(assigned(1, true));
        life.on(wrote(false));
        assert_eq!(life.on(broke(false)), Step::GiveUp { conn: Some(1) });
        let mut life = exchange("tools/call");
        life.on(assigned(1, true));
        life.on(wrote(true));
        assert!(matches!(life.state(), ExchangeState::AwaitingHead { .. }));
        assert_eq!(life.on(broke(false)), Step::GiveUp { conn: Some(1) });
    }

    #[test]
    fn a_replayable_request_cut_by_eof_before_any_response_byte_is_retried_once() {
        let mut life = exchange("tools/list");
        life.on(assigned(1, true));
        life.on(wrote(true));
        assert_eq!(life.on(broke(false)), Step::Retry);
        life.on(assigned(2, false));
        life.on(wrote(true));
        assert_eq!(life.on(broke(false)), Step::GiveUp { conn: Some(2) });
    }

    #[test]
    fn a_replayable_request_whose_response_began_is_not_retried() {
        let mut life = exchange("tools/list");
        life.on(assigned(1, true));
        life.on(wrote(true));
        assert_eq!(life.on(broke(true)), Step::GiveUp { conn: Some(1) });
    }

    #[test]
    fn a_fresh_connection_or_a_stream_is_never_retried() {
        let mut life = exchange("ping");
        life.on(assigned(1, false));
        assert_eq!(life.on(broke(false)), Step::GiveUp { conn: Some(1) });
        let mut life: Lifecycle<Conn> = Lifecycle::new(None, false);
        life.on(assigned(1, true));
        assert_eq!(life.on(broke(false)), Step::GiveUp { conn: Some(1) });
    }

    #[test]
    fn a_response_streams_or_collects_and_releases_its_connection() {
        let mut life = exchange("tools/call");
        life.on(assigned(1, false));
        life.on(wrote(true));
        life.on(ExchangeEvent::Head {
            head: head(200, true),
            stream: true,
        });
        assert!(life.streaming());
        assert_eq!(life.conn(), Some(1));
        assert_eq!(
            life.on(ExchangeEvent::End { clean: true }),
            Step::Finished {
                conn: 1,
                reusable: true
            }
        );
        assert_eq!(life.head().map(|head| head.status), Some(200));
        assert!(life.streaming(), "a finished stream still says it streamed");
        assert_eq!(life.conn(), None);

        // Bytes after the response, or a head without keep-alive, spoil the
        // connection.
        let mut life = exchange("tools/call");
        life.on(assigned(3, false));
        life.on(ExchangeEvent::Head {
            head: head(400, true),
            stream: false,
        });
        assert!(!life.streaming());
        assert_eq!(
            life.on(ExchangeEvent::End { clean: false }),
            Step::Finished {
                conn: 3,
                reusable: false
            }
        );
        let mut life = exchange("tools/call");
        life.on(assigned(4, false));
        life.on(ExchangeEvent::Head {
            head: head(200, false),
            stream: true,
        });
        assert_eq!(
            life.on(ExchangeEvent::End { clean: true }),
            Step::Finished {
                conn: 4,
                reusable: false
            }
        );
    }

    #[test]
    fn a_broken_stream_fails_and_stale_events_are_ignored() {
        let mut life = exchange("tools/list");
        assert_eq!(life.on(ExchangeEvent::End { clean: true }), Step::Ignored);
        life.on(assigned(1, true));
        life.on(ExchangeEvent::Head {
            head: head(200, true),
            stream: true,
        });
        assert_eq!(life.on(broke(true)), Step::GiveUp { conn: Some(1) });
        assert!(
            life.streaming(),
            "a broken stream's requests are failed as such"
        );
        assert_eq!(life.on(ExchangeEvent::Abandoned), Step::Ignored);
        assert!(life.streaming());
        let mut queued = exchange("ping");
        assert_eq!(
            queued.on(ExchangeEvent::Abandoned),
            Step::GiveUp { conn: None }
        );
        let mut queued = exchange("ping");
        assert_eq!(queued.on(broke(false)), Step::GiveUp { conn: None });
    }
}
