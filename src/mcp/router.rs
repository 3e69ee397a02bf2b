//! Routing inside one session: which open stream carries each message the
//! child sends, and which requests are still waiting for an answer.
//!
//! A child's response goes to the POST stream that carried its request (matched
//! by id). `notifications/progress` follows its `progressToken`. Everything else
//! goes to the GET stream; while none is open, to the newest open POST stream;
//! while none of those is open either, it is held in a bounded buffer until a
//! stream opens. The router knows streams only by number: the reactor maps
//! them to sockets.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde_json::Value;

use crate::jsonrpc::{self, IdKey, Kind};

/// Names one stream within its session.
pub type StreamId = u64;

/// What kind of stream it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// The SSE answer to a POSTed request.
    Post,
    /// The session's GET stream.
    Get,
}

#[derive(Debug)]
struct StreamState {
    kind: StreamKind,
    /// Requests carried by this stream that are still unanswered.
    outstanding: usize,
}

/// A client request forwarded to the child and not yet answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// The stream its answer goes to, while that stream is open.
    pub stream: Option<StreamId>,
    /// The id exactly as the client sent it, for error answers.
    pub id: Value,
    /// The method, for logs.
    pub method: String,
    progress_token: Option<IdKey>,
}

/// Where one message from the child goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// Write it to this stream; when `then_close` is set, the stream has carried
    /// its last answer and ends after this message.
    Stream { stream: StreamId, then_close: bool },
    /// No stream can carry it now; the router holds it.
    Held,
    /// It answers a request whose client went away; nobody can take it.
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

/// The per-session routing table.
#[derive(Debug)]
pub struct Router {
    streams: BTreeMap<StreamId, StreamState>,
    get_stream: Option<StreamId>,
    next_stream: StreamId,
    pending: HashMap<IdKey, Pending>,
    progress: HashMap<IdKey, StreamId>,
    held: VecDeque<Vec<u8>>,
    held_bytes: usize,
    max_held_bytes: usize,
    dropped_held: u64,
}

impl Router {
    /// An empty table that holds at most `max_held_bytes` of undeliverable messages.
    pub fn new(max_held_bytes: usize) -> Self {
        Router {
            streams: BTreeMap::new(),
            get_stream: None,
            next_stream: 1,
            pending: HashMap::new(),
            progress: HashMap::new(),
            held: VecDeque::new(),
            held_bytes: 0,
            max_held_bytes,
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
            },
        );
        stream
    }

    /// Records a client request sent on `stream`, so its answer finds its way back.
    pub fn register_request(
        &mut self,
        stream: StreamId,
        message: &Value,
    ) -> Result<(), RegisterError> {
        let key = IdKey::of_message(message).ok_or(RegisterError::NoId)?;
        if self.pending.contains_key(&key) {
            return Err(RegisterError::DuplicateId);
        }
        let progress_token = jsonrpc::progress_token_of_request(message);
        if let Some(token) = &progress_token {
            self.progress.insert(token.clone(), stream);
        }
        if let Some(state) = self.streams.get_mut(&stream) {
            state.outstanding += 1;
        }
        self.pending.insert(
            key,
            Pending {
                stream: Some(stream),
                id: message.get("id").cloned().unwrap_or(Value::Null),
                method: jsonrpc::method(message).unwrap_or("").to_string(),
                progress_token,
            },
        );
        Ok(())
    }

    /// Decides where a message from the child goes. A message that is held is
    /// kept by the router (`raw` is its serialized form).
    pub fn route(&mut self, message: &Value, kind: Kind, raw: &[u8]) -> Destination {
        if kind == Kind::Response {
            return self.route_response(message);
        }
        let progress_stream = (jsonrpc::method(message) == Some("notifications/progress"))
            .then(|| jsonrpc::progress_token_of_notification(message))
            .flatten()
            .and_then(|token| self.progress.get(&token).copied())
            .filter(|stream| self.streams.contains_key(stream));
        let stream = progress_stream
            .or(self.get_stream)
            .or_else(|| self.newest_post_stream());
        match stream {
            Some(stream) => Destination::Stream {
                stream,
                then_close: false,
            },
            None => {
                self.hold(raw.to_vec());
                Destination::Held
            }
        }
    }

    fn route_response(&mut self, message: &Value) -> Destination {
        let pending = IdKey::of_message(message).and_then(|key| self.pending.remove(&key));
        let Some(pending) = pending else {
            // A response to nothing we forwarded: pass it on like a notification
            // would go, so nothing is silently swallowed.
            return match self.get_stream.or_else(|| self.newest_post_stream()) {
                Some(stream) => Destination::Stream {
                    stream,
                    then_close: false,
                },
                None => Destination::Orphaned,
            };
        };
        if let Some(token) = &pending.progress_token {
            self.progress.remove(token);
        }
        let Some(stream) = pending.stream else {
            return Destination::Orphaned;
        };
        match self.streams.get_mut(&stream) {
            Some(state) => {
                state.outstanding = state.outstanding.saturating_sub(1);
                let then_close = state.kind == StreamKind::Post && state.outstanding == 0;
                if then_close {
                    self.streams.remove(&stream);
                }
                Destination::Stream { stream, then_close }
            }
            None => Destination::Orphaned,
        }
    }

    fn newest_post_stream(&self) -> Option<StreamId> {
        self.streams
            .iter()
            .rev()
            .find(|(_, state)| state.kind == StreamKind::Post)
            .map(|(stream, _)| *stream)
    }

    fn hold(&mut self, raw: Vec<u8>) {
        self.held_bytes += raw.len();
        self.held.push_back(raw);
        while self.held_bytes > self.max_held_bytes {
            match self.held.pop_front() {
                Some(oldest) => {
                    self.held_bytes -= oldest.len();
                    self.dropped_held += 1;
                }
                None => break,
            }
        }
    }

    /// Takes every held message, oldest first, for a stream that just opened.
    pub fn take_held(&mut self) -> Vec<Vec<u8>> {
        self.held_bytes = 0;
        self.held.drain(..).collect()
    }

    /// Messages dropped because the held buffer was full, since the last call.
    pub fn take_dropped_count(&mut self) -> u64 {
        std::mem::take(&mut self.dropped_held)
    }

    /// A stream's client went away. Requests it carried stay pending (the child
    /// still answers them), but their answers are orphaned. Returns their ids.
    pub fn stream_closed(&mut self, stream: StreamId) -> Vec<Value> {
        self.streams.remove(&stream);
        if self.get_stream == Some(stream) {
            self.get_stream = None;
        }
        self.progress.retain(|_, target| *target != stream);
        self.pending
            .values_mut()
            .filter(|pending| pending.stream == Some(stream))
            .map(|pending| {
                pending.stream = None;
                pending.id.clone()
            })
            .collect()
    }

    /// Removes every pending request and open stream (the session is ending).
    /// Returns the pending requests whose stream is still open, to be answered
    /// with an error, and every stream that was open.
    pub fn drain(&mut self) -> (Vec<Pending>, Vec<StreamId>) {
        self.progress.clear();
        self.get_stream = None;
        let pending = self
            .pending
            .drain()
            .map(|(_, pending)| pending)
            .filter(|pending| pending.stream.is_some())
            .collect();
        let streams = std::mem::take(&mut self.streams).into_keys().collect();
        (pending, streams)
    }

    /// Requests still waiting for an answer.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Whether `stream` is open.
    pub fn is_open(&self, stream: StreamId) -> bool {
        self.streams.contains_key(&stream)
    }

    /// The open GET stream, if any.
    pub fn get_stream(&self) -> Option<StreamId> {
        self.get_stream
    }

    /// Number of open streams.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn route(router: &mut Router, text: &str) -> Destination {
        let message = parse(text);
        let kind = jsonrpc::classify(&message).unwrap();
        router.route(&message, kind, text.as_bytes())
    }

    #[test]
    fn a_response_returns_to_its_post_stream_and_closes_it() {
        let mut router = Router::new(1024);
        let first = router.open_post_stream();
        let second = router.open_post_stream();
        router
            .register_request(first, &parse(r#"{"jsonrpc":"2.0","id":1,"method":"a"}"#))
            .unwrap();
        router
            .register_request(second, &parse(r#"{"jsonrpc":"2.0","id":"1","method":"b"}"#))
            .unwrap();
        // "1" and 1 are different ids: each answer finds its own stream.
        assert_eq!(
            route(&mut router, r#"{"jsonrpc":"2.0","id":"1","result":{}}"#),
            Destination::Stream {
                stream: second,
                then_close: true
            }
        );
        assert_eq!(
            route(&mut router, r#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
            Destination::Stream {
                stream: first,
                then_close: true
            }
        );
        assert_eq!(router.pending_count(), 0);
        assert_eq!(router.open_streams(), 0);
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let mut router = Router::new(1024);
        let stream = router.open_post_stream();
        let request = parse(r#"{"jsonrpc":"2.0","id":5,"method":"a"}"#);
        router.register_request(stream, &request).unwrap();
        assert_eq!(
            router.register_request(stream, &request),
            Err(RegisterError::DuplicateId)
        );
    }

    #[test]
    fn progress_follows_its_token_and_other_messages_prefer_the_get_stream() {
        let mut router = Router::new(1024);
        let post = router.open_post_stream();
        router
            .register_request(
                post,
                &parse(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"progressToken":"t"}}}"#),
            )
            .unwrap();
        let progress = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1}}"#;
        let log = r#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#;
        // No GET stream yet: unrelated messages ride the open POST stream.
        assert_eq!(
            route(&mut router, log),
            Destination::Stream {
                stream: post,
                then_close: false
            }
        );
        let (get, replaced) = router.open_get_stream();
        assert_eq!(replaced, None);
        assert_eq!(
            route(&mut router, progress),
            Destination::Stream {
                stream: post,
                then_close: false
            }
        );
        assert_eq!(
            route(&mut router, log),
            Destination::Stream {
                stream: get,
                then_close: false
            }
        );
        let sampling =
            r#"{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{}}"#;
        assert_eq!(
            route(&mut router, sampling),
            Destination::Stream {
                stream: get,
                then_close: false
            }
        );
    }

    #[test]
    fn messages_without_a_stream_are_held_within_the_bound() {
        let mut router = Router::new(100);
        let log = r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"n":1}}"#;
        for _ in 0..5 {
            assert_eq!(route(&mut router, log), Destination::Held);
        }
        assert!(router.take_dropped_count() > 0);
        let held = router.take_held();
        assert!(!held.is_empty());
        assert!(held.iter().map(Vec::len).sum::<usize>() <= 100);
        assert!(router.take_held().is_empty());
    }

    #[test]
    fn a_second_get_stream_replaces_the_first() {
        let mut router = Router::new(100);
        let (first, _) = router.open_get_stream();
        let (second, replaced) = router.open_get_stream();
        assert_eq!(replaced, Some(first));
        assert_ne!(first, second);
        assert!(!router.is_open(first));
        assert_eq!(router.get_stream(), Some(second));
    }

    #[test]
    fn answers_for_a_closed_stream_are_orphaned_and_drain_reports_live_ones() {
        let mut router = Router::new(100);
        let gone = router.open_post_stream();
        let live = router.open_post_stream();
        router
            .register_request(gone, &parse(r#"{"jsonrpc":"2.0","id":1,"method":"a"}"#))
            .unwrap();
        router
            .register_request(live, &parse(r#"{"jsonrpc":"2.0","id":2,"method":"b"}"#))
            .unwrap();
        assert_eq!(router.stream_closed(gone), vec![parse("1")]);
        assert_eq!(
            route(&mut router, r#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
            Destination::Orphaned
        );
        router
            .register_request(live, &parse(r#"{"jsonrpc":"2.0","id":3,"method":"c"}"#))
            .unwrap();
        let (pending, streams) = router.drain();
        assert_eq!(pending.len(), 2);
        assert!(pending.iter().all(|p| p.stream == Some(live)));
        assert_eq!(streams, vec![live]);
        assert_eq!(router.pending_count(), 0);
    }
}
