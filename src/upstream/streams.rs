//! The schedule of one session's streams on a Streamable HTTP upstream, with
//! no I/O: its GET stream (open, refused, reopened after the server closed
//! it), the gate that holds the session's messages until that stream is open
//! upstream, and the continuations of answer streams the server closed with
//! requests unanswered (SSE polling). Methods take `now` and return
//! decisions; the reactor starts and ends the exchanges. `X` names an
//! exchange.

use std::time::{Duration, Instant};

/// How long a session's messages wait for the upstream GET stream its
/// client just opened to be open upstream too, before they go anyway.
/// Servers drop what they send to a standalone stream that is not open yet,
/// so a request sent after the client's GET waits for it; a server that sends
/// no response head before its first event must not stall a session for
/// longer than this.
pub(crate) const GET_OPEN_WAIT: Duration = Duration::from_secs(2);
/// The wait before reconnecting an SSE stream the upstream closed without a
/// `retry:` hint.
pub(crate) const DEFAULT_UPSTREAM_RETRY: Duration = Duration::from_secs(1);
/// The longest `retry:` hint honoured: a larger one would hold a client's
/// answer for longer than it is likely to wait.
pub(crate) const MAX_UPSTREAM_RETRY: Duration = Duration::from_secs(30);
/// Reconnects of one stream in a row that bring no event before mcphop gives
/// the stream up: a server that closes at once forever is not polling.
pub(crate) const MAX_EMPTY_RECONNECTS: u32 = 3;

/// How long to wait before reconnecting a stream the upstream closed.
pub(crate) fn retry_delay(hint: Option<Duration>) -> Duration {
    hint.map_or(DEFAULT_UPSTREAM_RETRY, |hint| hint.min(MAX_UPSTREAM_RETRY))
}

/// What an SSE stream told before it closed.
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamEnd {
    /// The last event id it gave.
    pub last_event_id: Option<String>,
    /// Its last `retry:` hint.
    pub retry: Option<Duration>,
    /// An event with data came on it.
    pub saw_data: bool,
}

/// An upstream answer stream to pick up again where it stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Continuation<S> {
    /// The router stream its events feed.
    pub stream: S,
    /// The last event id the upstream gave on it.
    pub last_event_id: String,
    /// When to reconnect (the server's `retry:` hint after the close).
    pub at: Instant,
    /// Reconnects in a row that brought no event.
    pub empty_reconnects: u32,
}

/// What is due when the session's upstream timer fires.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Due<X, S> {
    /// The gate's wait is over: these held exchanges go now.
    pub released: Option<Vec<X>>,
    /// The GET stream is to be reopened now.
    pub reopen_get: bool,
    /// These answer streams are to be continued now.
    pub continuations: Vec<Continuation<S>>,
}

/// What to do about a GET stream the upstream closed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum GetClosed {
    /// Nothing: the session is over, or the stream never opened.
    Nothing,
    /// Reopen it at this moment.
    ReopenAt(Instant),
    /// The upstream keeps closing it at once: it is not reopened.
    GiveUp,
}

/// One session's upstream stream schedule.
#[derive(Debug)]
pub(crate) struct StreamSchedule<X, S> {
    /// The exchange carrying the GET stream, while one is open or opening.
    get: Option<X>,
    /// The upstream answered the GET stream with something else than a
    /// stream (405): it is not asked again.
    get_refused: bool,
    /// The last event id seen on the GET stream, to continue it.
    get_last_event_id: Option<String>,
    /// When to reopen the GET stream the server closed.
    get_reopen_at: Option<Instant>,
    /// Reopens of the GET stream in a row that brought no event.
    get_empty_reopens: u32,
    /// Until when the session's messages wait for the GET stream's head.
    gate_until: Option<Instant>,
    /// Exchanges held by the gate, in the order they were started.
    gated: Vec<X>,
    continuations: Vec<Continuation<S>>,
}

impl<X, S> Default for StreamSchedule<X, S> {
    fn default() -> Self {
        StreamSchedule {
            get: None,
            get_refused: false,
            get_last_event_id: None,
            get_reopen_at: None,
            get_empty_reopens: 0,
            gate_until: None,
            gated: Vec::new(),
            continuations: Vec::new(),
        }
    }
}

impl<X: Copy + PartialEq, S: Copy> StreamSchedule<X, S> {
    /// The earliest moment something is due.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.continuations
            .iter()
            .map(|continuation| continuation.at)
            .chain(self.gate_until)
            .chain(self.get_reopen_at)
            .min()
    }

    /// True when a GET stream should be opened now: none is open, the
    /// upstream did not refuse one, and it named a session.
    pub(crate) fn wants_get(&self, has_upstream_session: bool) -> bool {
        self.get.is_none() && !self.get_refused && has_upstream_session
    }

    /// A GET stream is about to be opened: the event id to continue from.
    pub(crate) fn get_opening(&mut self) -> Option<String> {
        self.get_reopen_at = None;
        self.get_last_event_id.clone()
    }

    /// The GET stream's exchange started. One opened afresh (not continued
    /// from an event id) closes the gate until its head, or `GET_OPEN_WAIT`.
    pub(crate) fn get_started(&mut self, exchange: X, resumed: bool, now: Instant) {
        self.get = Some(exchange);
        if !resumed {
            self.gate_until = Some(now + GET_OPEN_WAIT);
        }
    }

    /// True when the upstream refused a GET stream.
    #[cfg(test)]
    pub(crate) fn get_refused(&self) -> bool {
        self.get_refused
    }

    /// Holds `exchange` if the gate is closed; false: it goes now.
    pub(crate) fn hold(&mut self, exchange: X) -> bool {
        if self.gate_until.is_none() {
            return false;
        }
        self.gated.push(exchange);
        true
    }

    /// The gate opens (the GET head came, or the GET failed): the held
    /// exchanges, in order, or `None` if the gate was open.
    pub(crate) fn release_gate(&mut self) -> Option<Vec<X>> {
        self.gate_until.take()?;
        Some(std::mem::take(&mut self.gated))
    }

    /// The GET stream's head came: refused unless it is a stream. The gate
    /// opens either way.
    pub(crate) fn get_head(&mut self, is_stream: bool) -> Option<Vec<X>> {
        if !is_stream {
            self.get_refused = true;
        }
        self.release_gate()
    }

    /// The GET stream's exchange failed before or after its head: the gate
    /// opens; the stream is not reopened.
    pub(crate) fn get_failed(&mut self) -> Option<Vec<X>> {
        self.get = None;
        self.release_gate()
    }

    /// The upstream ended the GET stream; `opened`: it had answered with a
    /// head. `carry_on`: the session lives and mcphop is serving. It is
    /// reopened after the server's `retry:` hint from its last event id,
    /// unless it keeps closing at once with no event.
    pub(crate) fn get_closed(
        &mut self,
        end: &StreamEnd,
        opened: bool,
        carry_on: bool,
        now: Instant,
    ) -> GetClosed {
        self.get = None;
        if !carry_on || self.get_refused || !opened {
            return GetClosed::Nothing;
        }
        if end.last_event_id.is_some() {
            self.get_last_event_id.clone_from(&end.last_event_id);
        }
        self.get_empty_reopens = if end.saw_data {
            0
        } else {
            self.get_empty_reopens + 1
        };
        if self.get_empty_reopens > MAX_EMPTY_RECONNECTS {
            return GetClosed::GiveUp;
        }
        let at = now + retry_delay(end.retry);
        self.get_reopen_at = Some(at);
        GetClosed::ReopenAt(at)
    }

    /// An answer stream ended with requests unanswered. With an event id
    /// from an SSE stream (the server closed it on purpose: SSE polling),
    /// it is continued after the server's `retry:` hint; `empty_before` is
    /// how many reconnects before this one brought nothing (`None`: this was
    /// not a reconnect). `None` back: give its requests up.
    pub(crate) fn answer_closed(
        &mut self,
        stream: S,
        end: &StreamEnd,
        is_sse: bool,
        empty_before: Option<u32>,
        serving: bool,
        now: Instant,
    ) -> Option<&Continuation<S>> {
        let empty_reconnects = match (empty_before, end.saw_data) {
            (Some(before), false) => before + 1,
            _ => 0,
        };
        let last_event_id = end.last_event_id.as_ref()?;
        if !is_sse || empty_reconnects > MAX_EMPTY_RECONNECTS || !serving {
            return None;
        }
        self.continuations.push(Continuation {
            stream,
            last_event_id: last_event_id.clone(),
            at: now + retry_delay(end.retry),
            empty_reconnects,
        });
        self.continuations.last()
    }

    /// What is due at `now`: taken out of the schedule.
    pub(crate) fn due(&mut self, now: Instant) -> Due<X, S> {
        let released = if self.gate_until.is_some_and(|until| until <= now) {
            self.release_gate()
        } else {
            None
        };
        let reopen_get = self.get_reopen_at.is_some_and(|at| at <= now);
        if reopen_get {
            self.get_reopen_at = None;
        }
        let mut continuations = Vec::new();
        self.continuations.retain(|continuation| {
            if continuation.at <= now {
                continuations.push(continuation.clone());
                false
            } else {
                true
            }
        });
        Due {
            released,
            reopen_get,
            continuations,
        }
    }

    /// The session ended: nothing more is started for it. Returns the GET
    /// stream's exchange to close and the held exchanges to fail.
    pub(crate) fn end(&mut self) -> (Option<X>, Vec<X>) {
        self.gate_until = None;
        self.get_reopen_at = None;
        self.continuations.clear();
        (self.get.take(), std::mem::take(&mut self.gated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Schedule = StreamSchedule<u32, u8>;

    fn polled(id: &str, retry_ms: Option<u64>, saw_data: bool) -> StreamEnd {
        StreamEnd {
            last_event_id: Some(id.to_string()),
            retry: retry_ms.map(Duration::from_millis),
            saw_data,
        }
    }

    #[test]
    fn the_gate_holds_messages_until_the_get_head() {
        let t0 = Instant::now();
        let mut schedule = Schedule::default();
        assert!(schedule.wants_get(true));
        assert!(!schedule.wants_get(false));
        assert_eq!(schedule.get_opening(), None);
        schedule.get_started(1, false, t0);
        assert!(!schedule.wants_get(true));
        assert_eq!(schedule.next_deadline(), Some(t0 + GET_OPEN_WAIT));
        assert!(schedule.hold(10));
        assert!(schedule.hold(11));
        assert_eq!(schedule.get_head(true), Some(vec![10, 11]));
        assert!(!schedule.hold(12), "an open gate holds nothing");
        assert_eq!(schedule.next_deadline(), None);
        assert_eq!(schedule.get_head(true), None);
    }

    #[test]
    fn the_gate_opens_when_the_get_fails_or_is_refused() {
        let t0 = Instant::now();
        let mut schedule = Schedule::default();
        schedule.get_started(1, false, t0);
        assert!(schedule.hold(10));
        assert_eq!(schedule.get_failed(), Some(vec![10]));
        assert!(schedule.wants_get(true), "a failed GET may be opened again");

        schedule.get_started(2, false, t0);
        assert!(schedule.hold(11));
        assert_eq!(schedule.get_head(false), Some(vec![11]));
        assert!(schedule.get_refused());
        assert!(
            !schedule.wants_get(true),
            "a refused GET is not asked again"
        );
    }

    #[test]
    fn the_gate_opens_at_its_deadline_on_a_virtual_clock() {
        let t0 = Instant::now();
        let mut schedule = Schedule::default();
        schedule.get_started(1, false, t0);
        assert!(schedule.hold(10));
        let early = schedule.due(t0 + GET_OPEN_WAIT - Duration::from_millis(1));
        assert_eq!(early.released, None);
        let due = schedule.due(t0 + GET_OPEN_WAIT);
        assert_eq!(due.released, Some(vec![10]));
        assert!(!schedule.hold(11));
    }

    #[test]
    fn a_resumed_get_does_not_gate() {
        let t0 = Instant::now();
        let mut schedule = Schedule::default();
        schedule.get_started(1, false, t0);
        schedule.get_head(true);
        let closed = schedule.get_closed(&polled("e7", Some(500), true), true, true, t0);
        assert_eq!(closed, GetClosed::ReopenAt(t0 + Duration::from_millis(500)));
        let due = schedule.due(t0 + Duration::from_millis(500));
        assert!(due.reopen_get);
        assert_eq!(schedule.get_opening().as_deref(), Some("e7"));
        schedule.get_started(2, true, t0);
        assert!(!schedule.hold(10));
    }

    #[test]
    fn a_get_closing_at_once_forever_is_given_up() {
        let t0 = Instant::now();
        let mut schedule = Schedule::default();
        for round in 1..=MAX_EMPTY_RECONNECTS {
            schedule.get_started(round, true, t0);
            let closed = schedule.get_closed(&StreamEnd::default(), true, true, t0);
            assert_eq!(closed, GetClosed::ReopenAt(t0 + DEFAULT_UPSTREAM_RETRY));
        }
        schedule.get_started(9, true, t0);
        let closed = schedule.get_closed(&StreamEnd::default(), true, true, t0);
        assert_eq!(closed, GetClosed::GiveUp);
        // A stream that never opened, or a session that ended, is let go.
        let mut schedule = Schedule::default();
        assert_eq!(
            schedule.get_closed(&StreamEnd::default(), false, true, t0),
            GetClosed::Nothing
        );
        assert_eq!(
            schedule.get_closed(&StreamEnd::default(), true, false, t0),
            GetClosed::Nothing
        );
    }

    #[test]
    fn a_continuation_waits_for_the_retry_hint_capped() {
        let t0 = Instant::now();
        let mut schedule = Schedule::default();
        let at = schedule
            .answer_closed(3, &polled("e1", Some(250), false), true, None, true, t0)
            .map(|continuation| continuation.at);
        assert_eq!(at, Some(t0 + Duration::from_millis(250)));
        let at = schedule
            .answer_closed(4, &polled("e2", Some(600_000), false), true, None, true, t0)
            .map(|continuation| continuation.at);
        assert_eq!(at, Some(t0 + MAX_UPSTREAM_RETRY), "hint capped");
        assert_eq!(
            schedule.next_deadline(),
            Some(t0 + Duration::from_millis(250))
        );
        let due = schedule.due(t0 + Duration::from_millis(250));
        assert_eq!(due.continuations.len(), 1);
        assert_eq!(due.continuations[0].stream, 3);
        assert_eq!(due.continuations[0].last_event_id, "e1");
        assert_eq!(schedule.next_deadline(), Some(t0 + MAX_UPSTREAM_RETRY));
        let (get, gated) = schedule.end();
        assert_eq!((get, gated.len()), (None, 0));
        assert_eq!(schedule.next_deadline(), None);
    }

    #[test]
    fn a_continuation_needs_an_event_id_an_sse_stream_and_a_serving_proxy() {
        let t0 = Instant::now();
        let mut schedule = Schedule::default();
        let no_id = StreamEnd::default();
        assert!(schedule
            .answer_closed(1, &no_id, true, None, true, t0)
            .is_none());
        let end = polled("e1", None, false);
        assert!(schedule
            .answer_closed(1, &end, false, None, true, t0)
            .is_none());
        assert!(schedule
            .answer_closed(1, &end, true, None, false, t0)
            .is_none());
    }

    #[test]
    fn continuations_give_up_after_max_empty_reconnects() {
        let t0 = Instant::now();
        let mut schedule = Schedule::default();
        let empty = polled("e1", None, false);
        let mut before = None;
        for expected in 0..=MAX_EMPTY_RECONNECTS {
            let continuation = schedule
                .answer_closed(1, &empty, true, before, true, t0)
                .cloned();
            let continuation = continuation.expect("continued");
            assert_eq!(continuation.empty_reconnects, expected);
            before = Some(continuation.empty_reconnects);
        }
        assert!(schedule
            .answer_closed(1, &empty, true, before, true, t0)
            .is_none());
        // An event with data resets the count.
        let fed = polled("e2", None, true);
        let continuation = schedule.answer_closed(1, &fed, true, before, true, t0);
        assert_eq!(continuation.map(|c| c.empty_reconnects), Some(0));
    }
}
