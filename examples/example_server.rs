//! A small stdio MCP server used to exercise `mcphop` end to end.
//!
//! Wire format: one JSON-RPC 2.0 message per line on stdin/stdout (UTF-8,
//! no embedded newlines). Diagnostics go to stderr only. The server exits
//! cleanly when stdin reaches EOF (or stdout is closed).
//!
//! Supported methods:
//! - `initialize`: echoes the client's protocol version when it is one we
//!   know, otherwise offers the newest; advertises only `tools`.
//! - `ping`: returns `{}`.
//! - `tools/list`: six tools, `echo`, `pid`, `progress`, `sample`, `flood`
//!   (a burst of large progress notifications, to test back-pressure) and
//!   `wait` (answers only when cancelled, to test cancellation and timeouts).
//! - `notifications/cancelled` is logged to stderr as
//!   `cancelled request <id>: <reason>`, so tests can see it arrive.
//! - `tools/call`: runs one of those tools.
//! - notifications (`notifications/initialized`, `notifications/cancelled`,
//!   ...) are ignored; any other method gets `-32601`.
//!
//! The `sample` tool sends a server-to-client `sampling/createMessage`
//! request and blocks until the client answers it. While waiting, pings are
//! answered immediately and every other incoming message is queued and
//! handled afterwards, so the server stays single-threaded.
//!
//! Requests are answered even before `initialize` (lenient on purpose), and
//! no input, however malformed, makes the server panic.
//!
//! Run it by hand:
//! ```text
//! cargo build --example example_server
//! echo '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pid"}}' \
//!     | target/debug/examples/example_server
//! ```

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Stdin, Stdout, Write};
use std::thread;
use std::time::Duration;

use serde_json::{json, Map, Value};

/// Protocol versions this server accepts verbatim from `initialize`.
const SUPPORTED_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// Offered when the client asks for a version we do not know.
const LATEST_VERSION: &str = "2025-11-25";

const SERVER_NAME: &str = "mcphop-example";
const SERVER_VERSION: &str = "0.1.0";

// JSON-RPC error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;

/// Upper bounds for the `flood` tool: at most 64 MiB in one call.
const MAX_FLOOD_COUNT: u64 = 65_536;
const MAX_FLOOD_SIZE: u64 = 1024 * 1024;

/// Upper bounds for the `progress` tool so a silly request cannot stall us for hours.
const MAX_STEPS: u64 = 1_000;
const MAX_DELAY_MS: u64 = 10_000;

/// Why the server has to stop: stdin reached EOF, or stdout/stdin failed.
#[derive(Debug)]
enum Stop {
    Eof,
    Io(io::Error),
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Self {
        Stop::Io(e)
    }
}

/// One line read from stdin, classified.
enum Incoming {
    /// The line was not valid JSON (or not UTF-8).
    Malformed(String),
    /// A JSON value; may still be an invalid JSON-RPC message.
    Message(Value),
}

/// All state of the server. Single-threaded: everything happens on `main`'s thread.
struct Server {
    input: BufReader<Stdin>,
    output: Stdout,
    /// Messages read while waiting for a sampling response, handled later in order.
    backlog: VecDeque<Incoming>,
    /// Counter for server-initiated request ids (`s-1`, `s-2`, ...).
    next_request: u64,
}

fn main() {
    let mut server = Server {
        input: BufReader::new(io::stdin()),
        output: io::stdout(),
        backlog: VecDeque::new(),
        next_request: 1,
    };
    log(&format!("started (pid {})", std::process::id()));
    match server.run() {
        Stop::Eof => log("stdin closed, exiting"),
        Stop::Io(e) => log(&format!("I/O error, exiting: {e}")),
    }
}

/// Write a diagnostic line to stderr (never stdout, which carries the protocol).
/// Logs a `notifications/cancelled` as `cancelled request <id>: <reason>`.
fn log_cancel(msg: &Map<String, Value>) {
    let params = msg.get("params");
    let id = params
        .and_then(|p| p.get("requestId"))
        .cloned()
        .unwrap_or(Value::Null);
    let reason = params
        .and_then(|p| p.get("reason"))
        .and_then(Value::as_str)
        .unwrap_or("no reason given");
    log(&format!("cancelled request {id}: {reason}"));
}

fn log(msg: &str) {
    eprintln!("[{SERVER_NAME}] {msg}");
}

impl Server {
    /// Main loop: handle messages until stdin closes.
    fn run(&mut self) -> Stop {
        loop {
            let incoming = match self.backlog.pop_front() {
                Some(queued) => queued,
                None => match self.read_line() {
                    Ok(Some(incoming)) => incoming,
                    Ok(None) => continue, // blank line
                    Err(stop) => return stop,
                },
            };
            if let Err(stop) = self.handle(incoming) {
                return stop;
            }
        }
    }

    /// Read one line from stdin. `Ok(None)` for a blank line, `Err(Stop::Eof)` at EOF.
    fn read_line(&mut self) -> Result<Option<Incoming>, Stop> {
        let mut buf = Vec::new();
        if self.input.read_until(b'\n', &mut buf)? == 0 {
            return Err(Stop::Eof);
        }
        let text = match std::str::from_utf8(&buf) {
            Ok(t) => t.trim(),
            Err(e) => return Ok(Some(Incoming::Malformed(format!("invalid UTF-8: {e}")))),
        };
        if text.is_empty() {
            return Ok(None);
        }
        Ok(Some(match serde_json::from_str::<Value>(text) {
            Ok(v) => Incoming::Message(v),
            Err(e) => Incoming::Malformed(e.to_string()),
        }))
    }

    /// Serialize one message as a single line on stdout and flush it.
    fn send(&mut self, msg: &Value) -> Result<(), Stop> {
        // serde_json's compact form never contains a raw newline.
        let mut line = msg.to_string();
        line.push('\n');
        self.output.write_all(line.as_bytes())?;
        self.output.flush()?;
        Ok(())
    }

    fn send_result(&mut self, id: &Value, result: &Value) -> Result<(), Stop> {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "result": result}))
    }

    fn send_error(&mut self, id: &Value, code: i64, message: &str) -> Result<(), Stop> {
        self.send(&json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": code, "message": message}
        }))
    }

    /// Dispatch one incoming line: request, notification, stray response or junk.
    fn handle(&mut self, incoming: Incoming) -> Result<(), Stop> {
        let msg = match incoming {
            Incoming::Malformed(why) => {
                log(&format!("parse error: {why}"));
                return self.send_error(&Value::Null, PARSE_ERROR, "Parse error");
            }
            Incoming::Message(Value::Object(map)) => map,
            Incoming::Message(_) => {
                // Arrays (batches) and scalars are not supported.
                return self.send_error(&Value::Null, INVALID_REQUEST, "Invalid Request");
            }
        };
        let id = msg.get("id").cloned();
        let method = msg.get("method").and_then(Value::as_str).map(str::to_owned);
        match (method, id) {
            (Some(method), Some(id)) => self.handle_request(&method, &id, msg.get("params")),
            (Some(method), None) => {
                // Notifications (initialized, cancelled, ...) need no answer.
                if method == "notifications/cancelled" {
                    log_cancel(&msg);
                } else {
                    log(&format!("notification {method} ignored"));
                }
                Ok(())
            }
            (None, Some(id)) if msg.contains_key("result") || msg.contains_key("error") => {
                // A response to a request we are no longer waiting for.
                log(&format!("stray response with id {id} ignored"));
                Ok(())
            }
            (None, id) => {
                let id = id.unwrap_or(Value::Null);
                self.send_error(&id, INVALID_REQUEST, "Invalid Request")
            }
        }
    }

    fn handle_request(
        &mut self,
        method: &str,
        id: &Value,
        params: Option<&Value>,
    ) -> Result<(), Stop> {
        match method {
            "initialize" => {
                let result = initialize_result(params);
                self.send_result(id, &result)
            }
            "ping" => self.send_result(id, &json!({})),
            "tools/list" => self.send_result(id, &json!({"tools": tool_list()})),
            "tools/call" => self.call_tool(id, params),
            _ => self.send_error(id, METHOD_NOT_FOUND, &format!("Method not found: {method}")),
        }
    }

    /// `tools/call`: validate the name, run the tool, send its result.
    fn call_tool(&mut self, id: &Value, params: Option<&Value>) -> Result<(), Stop> {
        let empty = Map::new();
        let params = params.and_then(Value::as_object).unwrap_or(&empty);
        let name = params.get("name").and_then(Value::as_str).unwrap_or("");
        let args = params
            .get("arguments")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let progress_token = params
            .get("_meta")
            .and_then(|m| m.get("progressToken"))
            .filter(|t| t.is_string() || t.is_number())
            .cloned();

        let result = match name {
            "echo" => match args.get("message").and_then(Value::as_str) {
                Some(message) => text_result(message),
                None => error_result("argument 'message' (string) is required"),
            },
            "pid" => text_result(&std::process::id().to_string()),
            "progress" => match self.run_progress(args, progress_token.as_ref())? {
                Ok(steps) => text_result(&format!("done after {steps} steps")),
                Err(why) => error_result(&why),
            },
            "wait" => {
                self.wait_for_cancel(id)?;
                return Ok(());
            }
            "flood" => match self.run_flood(args, progress_token.as_ref())? {
                Ok(count) => text_result(&format!("flooded {count}")),
                Err(why) => error_result(&why),
            },
            "sample" => match args.get("prompt").and_then(Value::as_str) {
                Some(prompt) => match self.sample(id, prompt)? {
                    Some(result) => result,
                    // The tool call itself was cancelled: send nothing.
                    None => return Ok(()),
                },
                None => error_result("argument 'prompt' (string) is required"),
            },
            _ => return self.send_error(id, INVALID_PARAMS, &format!("Unknown tool: {name}")),
        };
        self.send_result(id, &result)
    }

    /// The `progress` tool: `steps` notifications `delay_ms` apart.
    /// The outer `Result` is I/O, the inner one a bad argument.
    fn run_progress(
        &mut self,
        args: &Map<String, Value>,
        token: Option<&Value>,
    ) -> Result<Result<u64, String>, Stop> {
        let steps = match int_arg(args, "steps", 3, MAX_STEPS) {
            Ok(v) => v,
            Err(why) => return Ok(Err(why)),
        };
        let delay_ms = match int_arg(args, "delay_ms", 50, MAX_DELAY_MS) {
            Ok(v) => v,
            Err(why) => return Ok(Err(why)),
        };
        for i in 1..=steps {
            if i > 1 {
                thread::sleep(Duration::from_millis(delay_ms));
            }
            if let Some(token) = token {
                self.send(&json!({
                    "jsonrpc": "2.0",
                    "method": "notifications/progress",
                    "params": {
                        "progressToken": token,
                        "progress": i,
                        "total": steps,
                        "message": format!("step {i} of {steps}"),
                    }
                }))?;
            }
        }
        Ok(Ok(steps))
    }

    /// The `flood` tool: `count` progress notifications of `size` padding
    /// bytes each, as fast as stdout takes them.
    fn run_flood(
        &mut self,
        args: &Map<String, Value>,
        token: Option<&Value>,
    ) -> Result<Result<u64, String>, Stop> {
        let count = match int_arg(args, "count", 100, MAX_FLOOD_COUNT) {
            Ok(v) => v,
            Err(why) => return Ok(Err(why)),
        };
        let size = match int_arg(args, "size", 1024, MAX_FLOOD_SIZE) {
            Ok(v) => v,
            Err(why) => return Ok(Err(why)),
        };
        let Some(token) = token else {
            return Ok(Err("flood needs a progressToken".to_string()));
        };
        let padding = "x".repeat(usize::try_from(size).unwrap_or(0));
        for i in 1..=count {
            self.send(&json!({
                "jsonrpc": "2.0",
                "method": "notifications/progress",
                "params": {"progressToken": token, "progress": i, "total": count, "message": padding}
            }))?;
        }
        Ok(Ok(count))
    }

    /// The `wait` tool: blocks until the client cancels this call, answering
    /// pings meanwhile and queueing everything else. A cancelled call gets
    /// no answer, as the specification says.
    fn wait_for_cancel(&mut self, call_id: &Value) -> Result<(), Stop> {
        log(&format!("waiting for request {call_id} to be cancelled"));
        loop {
            let msg = match self.read_line()? {
                None => continue,
                Some(Incoming::Message(Value::Object(map))) => map,
                Some(other) => {
                    self.backlog.push_back(other);
                    continue;
                }
            };
            let method = msg.get("method").and_then(Value::as_str);
            if let (Some("ping"), Some(ping_id)) = (method, msg.get("id")) {
                let ping_id = ping_id.clone();
                self.send_result(&ping_id, &json!({}))?;
                continue;
            }
            if method == Some("notifications/cancelled") {
                log_cancel(&msg);
                if msg.get("params").and_then(|p| p.get("requestId")) == Some(call_id) {
                    return Ok(());
                }
                continue;
            }
            self.backlog
                .push_back(Incoming::Message(Value::Object(msg)));
        }
    }

    /// The `sample` tool: ask the client for a completion and wait for it.
    ///
    /// Returns `Ok(None)` when the client cancelled the tool call (request id
    /// `call_id`) while we were waiting; per the spec no response is sent then.
    fn sample(&mut self, call_id: &Value, prompt: &str) -> Result<Option<Value>, Stop> {
        let req_id = Value::String(format!("s-{}", self.next_request));
        self.next_request += 1;
        self.send(&json!({
            "jsonrpc": "2.0",
            "id": req_id,
            "method": "sampling/createMessage",
            "params": {
                "messages": [{"role": "user", "content": {"type": "text", "text": prompt}}],
                "maxTokens": 100
            }
        }))?;

        loop {
            // Read straight from stdin: anything queued in the backlog was
            // read before this request existed, so it cannot be its answer.
            let msg = match self.read_line()? {
                None => continue,
                Some(Incoming::Message(Value::Object(map))) => map,
                Some(other) => {
                    self.backlog.push_back(other);
                    continue;
                }
            };
            let method = msg.get("method").and_then(Value::as_str);
            let id = msg.get("id");

            // The answer to our sampling request.
            if method.is_none() && id == Some(&req_id) {
                if let Some(err) = msg.get("error") {
                    let what = err
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown error");
                    return Ok(Some(error_result(&format!("sampling failed: {what}"))));
                }
                let text = msg
                    .get("result")
                    .and_then(|r| r.get("content"))
                    .map(content_text)
                    .unwrap_or_default();
                return Ok(Some(text_result(&format!("sampled: {text}"))));
            }
            // Pings are answered right away so a keep-alive cannot deadlock us.
            if let (Some("ping"), Some(ping_id)) = (method, id) {
                let ping_id = ping_id.clone();
                self.send_result(&ping_id, &json!({}))?;
                continue;
            }
            // Cancellation of the tool call that is waiting here.
            if method == Some("notifications/cancelled")
                && msg.get("params").and_then(|p| p.get("requestId")) == Some(call_id)
            {
                log("sample: tool call cancelled while waiting for sampling");
                return Ok(None);
            }
            // Anything else waits its turn.
            self.backlog
                .push_back(Incoming::Message(Value::Object(msg)));
        }
    }
}

/// Build the `initialize` result, echoing a supported requested version.
fn initialize_result(params: Option<&Value>) -> Value {
    let requested = params
        .and_then(|p| p.get("protocolVersion"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let version = if SUPPORTED_VERSIONS.contains(&requested) {
        requested
    } else {
        LATEST_VERSION
    };
    json!({
        "protocolVersion": version,
        "capabilities": {"tools": {}},
        "serverInfo": {"name": SERVER_NAME, "version": SERVER_VERSION}
    })
}

/// The four tools with their JSON Schemas.
fn tool_list() -> Value {
    json!([
        {
            "name": "echo",
            "description": "Returns the given message unchanged.",
            "inputSchema": {
                "type": "object",
                "properties": {"message": {"type": "string", "description": "Text to echo back"}},
                "required": ["message"]
            }
        },
        {
            "name": "pid",
            "description": "Returns the process id of this server process.",
            "inputSchema": {"type": "object", "properties": {}}
        },
        {
            "name": "progress",
            "description": "Sends `steps` progress notifications `delay_ms` apart (when the call has a progressToken).",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "steps": {"type": "integer", "minimum": 0, "maximum": MAX_STEPS, "default": 3},
                    "delay_ms": {"type": "integer", "minimum": 0, "maximum": MAX_DELAY_MS, "default": 50}
                }
            }
        },
        {
            "name": "wait",
            "description": "Answers only when the client cancels it.",
            "inputSchema": {"type": "object", "properties": {}}
        },
        {
            "name": "flood",
            "description": "Sends `count` progress notifications of `size` bytes each, without pause.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "count": {"type": "integer", "minimum": 0, "maximum": MAX_FLOOD_COUNT, "default": 100},
                    "size": {"type": "integer", "minimum": 0, "maximum": MAX_FLOOD_SIZE, "default": 1024}
                }
            }
        },
        {
            "name": "sample",
            "description": "Asks the client for an LLM completion (sampling/createMessage) and returns it.",
            "inputSchema": {
                "type": "object",
                "properties": {"prompt": {"type": "string", "description": "Prompt sent to the client"}},
                "required": ["prompt"]
            }
        }
    ])
}

/// A successful tool result with one text block.
fn text_result(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": false})
}

/// A tool execution error (reported in the result, not as a JSON-RPC error).
fn error_result(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": true})
}

/// Read an optional non-negative integer argument, with a default and an upper bound.
fn int_arg(args: &Map<String, Value>, key: &str, default: u64, max: u64) -> Result<u64, String> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => match v.as_u64() {
            Some(n) if n <= max => Ok(n),
            _ => Err(format!(
                "argument '{key}' must be an integer between 0 and {max}"
            )),
        },
    }
}

/// Concatenate the text of a sampling result's `content`, which is either
/// one content block or (since 2025-11-25) an array of them.
fn content_text(content: &Value) -> String {
    let block_text = |b: &Value| {
        b.get("text")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    match content {
        Value::Array(blocks) => blocks.iter().map(block_text).collect(),
        block => block_text(block),
    }
}
