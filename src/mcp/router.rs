//! Routing inside one session: which stream carries each message the child
//! sends, which requests still wait for an answer and until when, and what each
//! stream sent (for clients that reconnect with `Last-Event-ID`).
//!
//! A child's response goes to the POST stream that carried its request (matched
//! by id). `notifications/progress` follows its `progressToken` and resets its
//! request's timeout. A child's `notifications/cancelled` for a server-to-client
//! request follows that request. Everything else goes to the GET stream; while
//! none is open, to the newest open POST stream; while none of those is open
//! either, it is held in a bounded buffer until a stream opens.
//!
//! A stream whose client disconnects is kept, detached, for the resume window:
//! messages for it are recorded in its replay buffer, and a GET with
//! `Last-Event-ID` re-attaches it. The router knows streams only by number; the
//! reactor maps them to sockets and runs the clocks. Every time is passed in.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::jsonrpc::{self, IdKey, Kind, Message};
use crate::mcp::replay::{EventBytes, ReplayBuffer, ReplayError};

/// Names one stream within its session.
pub type StreamId = u64;

/// Most server-to-client requests remembered (to route their cancellation).
const MAX_TRACKED_SERVER_REQUESTS: usize = 1024;

/// What kind of stream it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// The SSE answer to a POSTed request (or batch).
    Post,
    /// The session's GET stream.
    Get,
}

/// The router's bounds and clocks.
#[derive(Debug, Clone, Copy)]
pub struct RouterLimits {
    pub max_held_bytes: usize,
    pub replay_max_events: usize,
    pub replay_max_bytes: usize,
    /// A request with no answer and no progress for this long times out.
    pub request_timeout: Duration,
    /// No request lives longer than this, progress or not.
    pub request_timeout_max: Duration,
    /// How long `initialize` may take (the child's start included).
    pub initialize_timeout: Duration,
}

#[derive(Debug)]
struct StreamState {
    kind: StreamKind,
    /// Requests carried by this stream that are still unanswered.
    outstanding: usize,
    /// The sequence number of the last event; 0 is the priming event.
    last_seq: u64,
    replay: ReplayBuffer,
    /// Since when no connection carries it.
    detached_at: Option<Instant>,
    /// Every answer was sent; kept only until its detached client resumes.
    finished: bool,
}

/// How a client request ended, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The upstream answered with a result.
    Ok,
    /// The upstream answered with a JSON-RPC error.
    Error,
    /// No answer in time.
    Timeout,
    /// The client cancelled it, or left and did not come back.
    Cancelled,
    /// Its upstream stream or session failed, or the session ended first.
    Failed,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::Error,
        Outcome::Timeout,
        Outcome::Cancelled,
        Outcome::Failed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Cancelled => "cancelled",
            Outcome::Failed => "failed",
        }
    }
}

/// A client request that ended: its method, how, and since when it was in
/// flight (the driver measures its latency against its own clock).
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub method: String,
    pub outcome: Outcome,
    pub started: Instant,
}

/// A client request forwarded to the child and not yet answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// The stream its answer goes to.
    pub stream: StreamId,
    /// The id, for error answers and cancels (`IdKey::to_raw` writes it as
    /// the client's JSON would read it).
    pub id: IdKey,
    /// The method, for logs and for never cancelling `initialize`.
    pub method: String,
    progress_token: Option<IdKey>,
    started: Instant,
    deadline: Instant,
}

impl Pending {
    /// True for the session's `initialize`, which is never cancelled.
    pub fn is_initialize(&self) -> bool {
        self.method == "initialize"
    }
}

/// Where one message from the child goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// Recorded as event `seq` of `stream`; write it if a connection carries
    /// the stream. With `then_close`, the stream carried its last answer and
    /// ends after this event.
    Stream {
        stream: StreamId,
        seq: u64,
        then_close: bool,
    },
    /// No stream can carry it now; the router holds it.
    Held,
    /// It answers a request that was cancelled, timed out or abandoned.
    Orphaned,
}

/// Why a client request could not be registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterError {
    /// A request with the same id is already waiting for its answer.
    DuplicateId,
    /// The message has no usable id.
    NoId,
}

/// Why a `Last-Event-ID` cannot be resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeError {
    /// Not an event id this session issued.
    Malformed,
    /// The stream is unknown, or ended and gone.
    UnknownStream,
    /// The events after it were evicted from the replay buffer.
    Evicted,
}

/// A stream taken over by a resuming client.
#[derive(Debug, Clone, PartialEq)]
pub struct Resumed {
    /// Events to send again, in order.
    pub events: Vec<(u64, EventBytes)>,
    /// The stream has nothing more to carry: end it after the replay.
    pub finished: bool,
}

/// What became of a stream whose connection went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detached {
    /// Kept for a resume; expire it with `expire_detached` at the given time.
    Kept { since: Instant },
    /// Nothing was left to resume; it is gone.
    Dropped,
}

/// The event id that names event `seq` of `stream`.
pub fn event_id(stream: StreamId, seq: u64) -> String {
    format!("{stream}-{seq}")
}

/// The stream and sequence number an event id names.
pub fn parse_event_id(text: &str) -> Option<(StreamId, u64)> {
    let (stream, seq) = text.trim().split_once('-')?;
    Some((stream.parse().ok()?, seq.parse().ok()?))
}

/// The per-session routing table.
#[derive(Debug)]
pub struct Router {
    limits: RouterLimits,
    streams: BTreeMap<StreamId, StreamState>,
    get_stream: Option<StreamId>,
    next_stream: StreamId,
    pending: HashMap<IdKey, Pending>,
    /// Requests that ended since the driver last took them (`take_completions`).
    completions: Vec<Completion>,
    /// Progress token → the request that set it.
    progress: HashMap<IdKey, IdKey>,
    /// Server-to-client request id → the stream that carried it.
    server_requests: HashMap<IdKey, StreamId>,
    held: VecDeque<EventBytes>,
    held_bytes: usize,
    dropped_held: u64,
}

impl Router {
    /// An empty table.
    pub fn new(limits: RouterLimits) -> Self {
        Router {
            limits,
            streams: BTreeMap::new(),
            get_stream: None,
            next_stream: 1,
            pending: HashMap::new(),
            completions: Vec::new(),
            progress: HashMap::new(),
            server_requests: HashMap::new(),
            held: VecDeque::new(),
            held_bytes: 0,
            dropped_held: 0,
        }
    }

    /// Opens a stream for a POSTed request.
    pub fn open_post_stream(&mut self) -> StreamId {
        self.open(StreamKind::Post)
    }

    /// Opens the GET stream. Returns it, and the older GET stream it replaces,
    /// which the caller must end.
    pub fn open_get_stream(&mut self) -> (StreamId, Option<StreamId>) {
        let replaced = self.get_stream.take();
        if let Some(old) = replaced {
            self.streams.remove(&old);
        }
        let stream = self.open(StreamKind::Get);
        self.get_stream = Some(stream);
        (stream, replaced)
    }

    fn open(&mut self, kind: StreamKind) -> StreamId {
        let stream = self.next_stream;
        self.next_stream += 1;
        self.streams.insert(
            stream,
            StreamState {
                kind,
                outstanding: 0,
                last_seq: 0,
                replay: ReplayBuffer::new(
                    self.limits.replay_max_events,
                    self.limits.replay_max_bytes,
                ),
                detached_at: None,
                finished: false,
            },
        );
        stream
    }

    /// Records a client request sent on `stream`, so its answer finds its way
    /// back, and starts its clock.
    pub(crate) fn register_request<B: AsRef<[u8]>>(
        &mut self,
        stream: StreamId,
        message: &Message<B>,
        now: Instant,
    ) -> Result<(), RegisterError> {
        let key = message.id_key().ok_or(RegisterError::NoId)?;
        if self.pending.contains_key(&key) {
            return Err(RegisterError::DuplicateId);
        }
        let method = message.method().unwrap_or("").to_string();
        let progress_token = message.request_progress_token();
        if let Some(token) = &progress_token {
            self.progress.insert(token.clone(), key.clone());
        }
        if let Some(state) = self.streams.get_mut(&stream) {
            state.outstanding += 1;
        }
        let timeout = if method == "initialize" {
            self.limits.initialize_timeout
        } else {
            self.limits.request_timeout
        };
        self.pending.insert(
            key.clone(),
            Pending {
                stream,
                id: key,
                method,
                progress_token,
                started: now,
                deadline: now + timeout,
            },
        );
        Ok(())
    }

    /// True when a request with this id is waiting for its answer.
    pub fn is_pending(&self, id: &IdKey) -> bool {
        self.pending.contains_key(id)
    }

    /// The method of the pending request `id`.
    pub fn pending_method(&self, id: &IdKey) -> Option<&str> {
        self.pending.get(id).map(|pending| pending.method.as_str())
    }

    /// Decides where a message from the child goes, and records its bytes
    /// (moved, then shared: no copy) in that stream's replay buffer (or holds
    /// them); the bytes come back for the event to write.
    pub(crate) fn route(&mut self, message: Message, now: Instant) -> (Destination, EventBytes) {
        let stream = match message.kind() {
            Kind::Response => {
                let (destination, raw) = self.route_response(message);
                return (destination, raw);
            }
            Kind::Request => {
                let stream = self.default_stream();
                if let (Some(stream), Some(id)) = (stream, message.id_key()) {
                    if self.server_requests.len() < MAX_TRACKED_SERVER_REQUESTS {
                        self.server_requests.insert(id, stream);
                    }
                }
                stream
            }
            Kind::Notification => {
                let stream = match message.method() {
                    Some("notifications/progress") => self.progress_stream(&message, now),
                    Some("notifications/cancelled") => message
                        .cancelled_request()
                        .and_then(|id| self.server_requests.remove(&id))
                        .filter(|stream| self.streams.contains_key(stream)),
                    _ => None,
                };
                stream.or_else(|| self.default_stream())
            }
        };
        let raw = EventBytes::new(message.into_bytes());
        (self.record_or_hold(stream, &raw), raw)
    }

    /// The stream a progress notification belongs to; its request's clock
    /// restarts, within the hard maximum.
    fn progress_stream<B: AsRef<[u8]>>(
        &mut self,
        message: &Message<B>,
        now: Instant,
    ) -> Option<StreamId> {
        let token = message.progress_token()?;
        let request = self.progress.get(&token)?;
        let pending = self.pending.get_mut(request)?;
        let cap = pending.started + self.limits.request_timeout_max;
        pending.deadline = (now + self.limits.request_timeout).min(cap);
        Some(pending.stream).filter(|stream| self.streams.contains_key(stream))
    }

    /// The GET stream, else the newest open POST stream.
    fn default_stream(&self) -> Option<StreamId> {
        self.get_stream.or_else(|| {
            self.streams
                .iter()
                .rev()
                .find(|(_, state)| state.kind == StreamKind::Post && !state.finished)
                .map(|(stream, _)| *stream)
        })
    }

    fn record_or_hold(&mut self, stream: Option<StreamId>, raw: &EventBytes) -> Destination {
        match stream.and_then(|stream| self.record(stream, raw, false)) {
            Some(destination) => destination,
            None => {
                self.hold(EventBytes::clone(raw));
                Destination::Held
            }
        }
    }

    /// Appends an event to a stream's history.
    fn record(
        &mut self,
        stream: StreamId,
        raw: &EventBytes,
        then_close: bool,
    ) -> Option<Destination> {
        let state = self.streams.get_mut(&stream)?;
        state.last_seq += 1;
        let seq = state.last_seq;
        state.replay.push(seq, EventBytes::clone(raw));
        Some(Destination::Stream {
            stream,
            seq,
            then_close,
        })
    }

    fn route_response(&mut self, message: Message) -> (Destination, EventBytes) {
        let key = message.id_key();
        let outcome = if message.has_result() {
            Outcome::Ok
        } else {
            Outcome::Error
        };
        let raw = EventBytes::new(message.into_bytes());
        let Some(key) = key else {
            return (self.record_or_hold(self.default_stream(), &raw), raw);
        };
        let Some(pending) = self.pending.remove(&key) else {
            // An answer to a request that was cancelled or timed out: the
            // client already got its one answer.
            return (Destination::Orphaned, raw);
        };
        if let Some(token) = &pending.progress_token {
            self.progress.remove(token);
        }
        let then_close = self.answered(pending.stream);
        self.completions.push(Completion {
            method: pending.method,
            outcome,
            started: pending.started,
        });
        let destination = self
            .record(pending.stream, &raw, then_close)
            .unwrap_or(Destination::Orphaned);
        (destination, raw)
    }

    /// Notes that `pending` ended with `outcome`.
    fn complete(&mut self, pending: &Pending, outcome: Outcome) {
        self.completions.push(Completion {
            method: pending.method.clone(),
            outcome,
            started: pending.started,
        });
    }

    /// The requests that ended since the last call, in order.
    pub fn take_completions(&mut self) -> std::vec::Drain<'_, Completion> {
        self.completions.drain(..)
    }

    /// One request of `stream` got its answer; true when that was the last one
    /// and the stream now ends. A finished stream is kept only while detached.
    fn answered(&mut self, stream: StreamId) -> bool {
        let Some(state) = self.streams.get_mut(&stream) else {
            return false;
        };
        state.outstanding = state.outstanding.saturating_sub(1);
        let done = state.kind == StreamKind::Post && state.outstanding == 0;
        if done {
            state.finished = true;
        }
        done
    }

    /// Forgets a finished stream once its last event was written to a client.
    pub fn stream_ended(&mut self, stream: StreamId) {
        if self
            .streams
            .get(&stream)
            .is_some_and(|state| state.detached_at.is_none())
        {
            self.streams.remove(&stream);
        }
    }

    fn hold(&mut self, raw: EventBytes) {
        self.held_bytes += raw.len();
        self.held.push_back(raw);
        while self.held_bytes > self.limits.max_held_bytes {
            match self.held.pop_front() {
                Some(oldest) => {
                    self.held_bytes -= oldest.len();
                    self.dropped_held += 1;
                }
                None => break,
            }
        }
    }

    /// Moves every held message into `stream`'s history, oldest first, and
    /// returns them as events to write.
    pub(crate) fn release_held(&mut self, stream: StreamId) -> Vec<(u64, EventBytes)> {
        self.held_bytes = 0;
        let held: Vec<EventBytes> = self.held.drain(..).collect();
        let mut events = Vec::with_capacity(held.len());
        for raw in held {
            if let Some(Destination::Stream { seq, .. }) = self.record(stream, &raw, false) {
                events.push((seq, raw));
            }
        }
        events
    }

    /// Messages dropped because the held buffer was full, since the last call.
    pub fn take_dropped_count(&mut self) -> u64 {
        std::mem::take(&mut self.dropped_held)
    }

    /// A client answered a server-to-client request.
    pub(crate) fn client_answered<B: AsRef<[u8]>>(&mut self, message: &Message<B>) {
        if let Some(id) = message.id_key() {
            self.server_requests.remove(&id);
        }
    }

    /// The connection carrying `stream` went away. A stream with answers
    /// still to come, or the GET stream, is kept for a resume.
    pub fn detach(&mut self, stream: StreamId, now: Instant) -> Detached {
        let Some(state) = self.streams.get_mut(&stream) else {
            return Detached::Dropped;
        };
        let resumable = state.kind == StreamKind::Get || (state.outstanding > 0);
        if resumable {
            state.detached_at = Some(now);
            Detached::Kept { since: now }
        } else {
            self.streams.remove(&stream);
            Detached::Dropped
        }
    }

    /// Ends a stream that stayed detached since `since`: its client is not
    /// coming back. Returns the requests it carried, now abandoned, for the
    /// caller to cancel upstream.
    pub fn expire_detached(&mut self, stream: StreamId, since: Instant) -> Vec<Pending> {
        let still_detached = self
            .streams
            .get(&stream)
            .is_some_and(|state| state.detached_at == Some(since));
        if !still_detached {
            return Vec::new();
        }
        self.streams.remove(&stream);
        if self.get_stream == Some(stream) {
            self.get_stream = None;
        }
        let abandoned = self.take_pending_where(|pending| pending.stream == stream);
        for pending in &abandoned {
            self.complete(pending, Outcome::Cancelled);
        }
        abandoned
    }

    fn take_pending_where(&mut self, mut condition: impl FnMut(&Pending) -> bool) -> Vec<Pending> {
        let keys: Vec<IdKey> = self
            .pending
            .iter()
            .filter(|(_, pending)| condition(pending))
            .map(|(key, _)| key.clone())
            .collect();
        let mut taken = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(pending) = self.pending.remove(&key) {
                if let Some(token) = &pending.progress_token {
                    self.progress.remove(token);
                }
                taken.push(pending);
            }
        }
        taken
    }

    /// A client reconnects with `Last-Event-ID`: re-attaches its stream and
    /// returns what it missed.
    pub fn resume(&mut self, last_event_id: &str) -> Result<(StreamId, Resumed), ResumeError> {
        let (stream, seq) = parse_event_id(last_event_id).ok_or(ResumeError::Malformed)?;
        Ok((stream, self.resume_after(stream, seq)?))
    }

    /// Re-attaches `stream` and returns its events after `seq` (after 0: all
    /// it recorded before a client first carried it).
    pub fn resume_after(&mut self, stream: StreamId, seq: u64) -> Result<Resumed, ResumeError> {
        let state = self
            .streams
            .get_mut(&stream)
            .ok_or(ResumeError::UnknownStream)?;
        let events = state.replay.after(seq).map_err(|error| match error {
            ReplayError::Evicted => ResumeError::Evicted,
            ReplayError::FromTheFuture => ResumeError::Malformed,
        })?;
        state.detached_at = None;
        Ok(Resumed {
            events,
            finished: state.finished,
        })
    }

    /// The client cancelled request `id`: forget it. Returns it and whether
    /// its stream has nothing else to carry and should end now. `initialize`
    /// is never cancelled.
    pub fn cancel(&mut self, id: &IdKey) -> Option<(Pending, bool)> {
        if self.pending.get(id).is_none_or(Pending::is_initialize) {
            return None;
        }
        self.forget(id, Outcome::Cancelled)
    }

    /// The upstream refused request `id` before answering it: forget it
    /// (as `cancel`, `initialize` included; the client hears of it in the
    /// reply to its POST).
    pub fn refused(&mut self, id: &IdKey) -> Option<(Pending, bool)> {
        self.forget(id, Outcome::Failed)
    }

    fn forget(&mut self, id: &IdKey, outcome: Outcome) -> Option<(Pending, bool)> {
        let pending = self.pending.remove(id)?;
        if let Some(token) = &pending.progress_token {
            self.progress.remove(token);
        }
        self.complete(&pending, outcome);
        let then_close = self.answered(pending.stream);
        if then_close {
            self.stream_ended(pending.stream);
        }
        Some((pending, then_close))
    }

    /// Removes every request whose deadline passed, records a JSON-RPC error
    /// answer for each in its stream, and returns them with where that answer
    /// goes (its serialized form included).
    pub(crate) fn take_expired(&mut self, now: Instant) -> Vec<(Pending, Destination, EventBytes)> {
        let expired = self.take_pending_where(|pending| pending.deadline <= now);
        expired
            .into_iter()
            .map(|pending| {
                self.complete(&pending, Outcome::Timeout);
                let text = if pending.is_initialize() {
                    format!(
                        "The upstream server did not answer initialize within {:?}",
                        self.limits.initialize_timeout
                    )
                } else {
                    format!(
                        "Request timed out: no answer from the upstream server within {:?} (or {:?} in all)",
                        self.limits.request_timeout, self.limits.request_timeout_max
                    )
                };
                let error = EventBytes::new(jsonrpc::error_response(
                    &pending.id.to_raw(),
                    jsonrpc::REQUEST_TIMEOUT,
                    &text,
                ));
                let then_close = self.answered(pending.stream);
                let destination = self
                    .record(pending.stream, &error, then_close)
                    .unwrap_or(Destination::Orphaned);
                (pending, destination, error)
            })
            .collect()
    }

    /// Answers every request still waiting on `stream` with an error (its
    /// upstream answer stream ended or broke), recorded in the stream like
    /// `take_expired` does.
    pub fn fail_stream(
        &mut self,
        stream: StreamId,
        why: &str,
    ) -> Vec<(Pending, Destination, EventBytes)> {
        let failed = self.take_pending_where(|pending| pending.stream == stream);
        failed
            .into_iter()
            .map(|pending| {
                self.complete(&pending, Outcome::Failed);
                let error = EventBytes::new(jsonrpc::error_response(
                    &pending.id.to_raw(),
                    jsonrpc::UPSTREAM_GONE,
                    why,
                ));
                let then_close = self.answered(pending.stream);
                let destination = self
                    .record(pending.stream, &error, then_close)
                    .unwrap_or(Destination::Orphaned);
                (pending, destination, error)
            })
            .collect()
    }

    /// The earliest request deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|pending| pending.deadline).min()
    }

    /// Removes every pending request and stream (the session is ending).
    /// Returns the pending requests, to be answered with an error.
    pub fn drain(&mut self) -> Vec<Pending> {
        self.progress.clear();
        self.server_requests.clear();
        self.get_stream = None;
        self.streams.clear();
        let pending: Vec<Pending> = self.pending.drain().map(|(_, pending)| pending).collect();
        for request in &pending {
            self.complete(request, Outcome::Failed);
        }
        pending
    }

    /// Requests on `stream` still waiting for an answer.
    pub fn pending_on(&self, stream: StreamId) -> usize {
        self.pending
            .values()
            .filter(|pending| pending.stream == stream)
            .count()
    }

    /// Requests still waiting for an answer.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Whether `stream` exists (attached or not).
    pub fn is_open(&self, stream: StreamId) -> bool {
        self.streams.contains_key(&stream)
    }

    /// The GET stream, if any.
    pub fn get_stream(&self) -> Option<StreamId> {
        self.get_stream
    }

    /// Number of streams, detached ones included.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }
}

#[cfg(test)]
mod tests;
