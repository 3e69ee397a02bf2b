//! An in-memory harness for the session core, in the manner of quinn-proto's
//! `Pair`: one `SessionCore` between a scripted client and a scripted
//! upstream, on a virtual clock. No socket, no process, no sleep: a scenario
//! runs in microseconds. `scenarios.rs` holds the scenarios.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Action, CoreConfig, Forward, SessionCore};
use crate::jsonrpc::{self, IdKey, Message};
use crate::mcp::endpoint::Reply;
use crate::mcp::router::{event_id, RouterLimits, StreamId};
use crate::mcp::tools::ToolFilter;

mod scenarios;

/// The request timeout the scenarios use.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The hard cap on a request's life, progress or not.
const REQUEST_TIMEOUT_MAX: Duration = Duration::from_secs(25);
/// How long `initialize` may take (mcphop's `--spawn-timeout`).
const INITIALIZE_TIMEOUT: Duration = Duration::from_secs(5);
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
const RESUME_WINDOW: Duration = Duration::from_secs(30);

/// How the scripted upstream takes messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpstreamModel {
    /// A pipe: takes everything at once, so a request's stream starts at once.
    Pipe,
    /// An HTTP server: a request's stream starts at its response head, which
    /// the scenario delivers with `Pair::upstream_head`.
    Http,
}

/// One SSE stream as the scripted client sees it.
#[derive(Debug, Default)]
struct ClientStream {
    /// Started (head written) this many times: 2 after a resume.
    starts: usize,
    /// Carried the session id header (the answer to `initialize`).
    session_header: bool,
    /// Events in the order written: (seq, message).
    events: Vec<(Option<u64>, Value)>,
    ended: bool,
}

/// The session core between a scripted client and a scripted upstream.
struct Pair {
    core: SessionCore,
    model: UpstreamModel,
    now: Instant,
    streams: HashMap<StreamId, ClientStream>,
    /// Stream ids in the order they started.
    started: Vec<StreamId>,
    replies: Vec<Reply>,
    /// Every forward sent upstream, in order.
    upstream: Vec<Forward>,
    /// The messages those forwards carried, read back from their bytes.
    sent: Vec<Value>,
    upstream_gets: usize,
    ended: Option<String>,
}

impl Pair {
    fn new(model: UpstreamModel) -> Pair {
        Pair::hiding(model, ToolFilter::default())
    }

    /// A pair whose server hides the tools `tools` says.
    fn hiding(model: UpstreamModel, tools: ToolFilter) -> Pair {
        let config = CoreConfig {
            tools: std::rc::Rc::new(tools),
            router: RouterLimits {
                max_held_bytes: 1024 * 1024,
                replay_max_events: 100,
                replay_max_bytes: 1024 * 1024,
                request_timeout: REQUEST_TIMEOUT,
                request_timeout_max: REQUEST_TIMEOUT_MAX,
                initialize_timeout: INITIALIZE_TIMEOUT,
            },
            idle_timeout: IDLE_TIMEOUT,
            resume_window: RESUME_WINDOW,
        };
        // The epoch of the virtual clock; only `advance` moves it.
        let now = Instant::now();
        Pair {
            core: SessionCore::new("0123456789abcdef".into(), config, now),
            model,
            now,
            streams: HashMap::new(),
            started: Vec::new(),
            replies: Vec::new(),
            upstream: Vec::new(),
            sent: Vec::new(),
            upstream_gets: 0,
            ended: None,
        }
    }

    /// A session initialized at `version`, the client declaring `capabilities`.
    fn initialized(model: UpstreamModel, version: &str, capabilities: Value) -> Pair {
        Pair::initialized_with(Pair::new(model), version, capabilities)
    }

    /// `pair`, initialized as `initialized` does.
    fn initialized_with(mut pair: Pair, version: &str, capabilities: Value) -> Pair {
        let model = pair.model;
        let message = serde_json::json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": capabilities,
                       "clientInfo": {"name": "harness", "version": "1"}}
        });
        let now = pair.now;
        pair.core.client_initialize(self::message(&message), now);
        pair.run();
        let stream = pair.last_forward_stream();
        if model == UpstreamModel::Http {
            pair.upstream_head(stream);
        }
        pair.upstream_sends(serde_json::json!({
            "jsonrpc": "2.0", "id": 0,
            "result": {"protocolVersion": version, "capabilities": {},
                       "serverInfo": {"name": "scripted", "version": "1"}}
        }));
        assert!(
            pair.streams[&stream].ended,
            "initialize's stream ends with its answer"
        );
        assert_eq!(pair.core.protocol_version(), Some(version));
        pair
    }

    /// Carries out what the core decided.
    fn run(&mut self) {
        let actions = self.core.take_actions();
        for action in actions {
            match action {
                Action::StartStream {
                    stream,
                    session_header,
                    ..
                } => {
                    let state = self.streams.entry(stream).or_default();
                    state.starts += 1;
                    state.ended = false;
                    state.session_header |= session_header;
                    self.started.push(stream);
                }
                Action::Event {
                    stream,
                    seq,
                    payload,
                } => {
                    let bytes = payload.bytes();
                    let message = serde_json::from_slice(bytes).expect("events are JSON");
                    let state = self
                        .streams
                        .get_mut(&stream)
                        .expect("event on a started stream");
                    assert!(!state.ended, "event on an ended stream");
                    state.events.push((seq, message));
                }
                Action::EndStream { stream } => {
                    self.streams
                        .get_mut(&stream)
                        .expect("end of a started stream")
                        .ended = true;
                }
                Action::Reply(reply) => self.replies.push(reply),
                Action::Forward(forward) => {
                    let ready = forward.stream.filter(|_| self.model == UpstreamModel::Pipe);
                    for message in &forward.messages {
                        let value = serde_json::from_slice(message.bytes()).expect("JSON");
                        self.sent.push(value);
                    }
                    self.upstream.push(forward);
                    if let Some(stream) = ready {
                        self.core.stream_ready(stream);
                        self.run();
                    }
                }
                Action::OpenUpstreamGet => self.upstream_gets += 1,
                Action::Ended { reason } => self.ended = Some(reason),
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some(deadline) = self.core.poll_timeout().filter(|at| *at <= until) {
            self.now = self.now.max(deadline);
            let now = self.now;
            self.core.handle_timeout(now);
            self.run();
        }
        self.now = until;
    }

    /// The client POSTs one message.
    fn client_posts(&mut self, message: Value) {
        let now = self.now;
        self.core.touch(now);
        self.core.client_message(self::message(&message), now);
        self.run();
    }

    /// The upstream sends one message.
    fn upstream_sends(&mut self, message: Value) {
        let raw = serde_json::to_vec(&message).expect("encodable");
        let now = self.now;
        let message = Message::parse(raw).expect("JSON-RPC");
        self.core.upstream_message(message, now);
        self.run();
    }

    /// The HTTP upstream answered a POST of requests with a 200 head.
    fn upstream_head(&mut self, stream: StreamId) {
        self.core.stream_ready(stream);
        self.run();
    }

    /// The client's connection carrying `stream` broke.
    fn client_drops(&mut self, stream: StreamId) {
        let now = self.now;
        self.core.stream_lost(stream, now);
        self.run();
    }

    fn client_resumes(&mut self, stream: StreamId, seq: u64) {
        self.core.client_resume(&event_id(stream, seq));
        self.run();
    }

    /// The stream the last forward registered its requests on.
    fn last_forward_stream(&self) -> StreamId {
        self.upstream
            .iter()
            .rev()
            .find_map(|forward| forward.stream)
            .expect("a forward with requests")
    }

    /// The messages sent upstream, in order.
    fn sent_upstream(&self) -> Vec<&Value> {
        self.sent.iter().collect()
    }

    fn events(&self, stream: StreamId) -> &[(Option<u64>, Value)] {
        &self.streams[&stream].events
    }
}

fn request(id: i64, method: &str) -> Value {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {}})
}

fn request_with_progress(id: i64, token: &str) -> Value {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                       "params": {"name": "slow", "_meta": {"progressToken": token}}})
}

fn answer(id: i64) -> Value {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "result": {"content": []}})
}

fn progress(token: &str, step: u64) -> Value {
    serde_json::json!({"jsonrpc": "2.0", "method": "notifications/progress",
                       "params": {"progressToken": token, "progress": step}})
}

fn cancel(id: i64) -> Value {
    serde_json::json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                       "params": {"requestId": id, "reason": "changed my mind"}})
}

/// The JSON-RPC error code of an error answer.
fn error_code(message: &Value) -> Option<i64> {
    message.pointer("/error/code").and_then(Value::as_i64)
}

fn method_of(message: &Value) -> Option<&str> {
    message.get("method").and_then(Value::as_str)
}

/// A message as a client or upstream would write it, read by the view.
fn message(value: &Value) -> Message {
    Message::parse(serde_json::to_vec(value).expect("encodable")).expect("JSON-RPC")
}

fn key(id: i64) -> IdKey {
    IdKey::Number(id.to_string())
}
