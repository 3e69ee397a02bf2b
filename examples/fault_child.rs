//! A stdio MCP server that misbehaves on purpose, for the fault-injection
//! tests (`tests/child_faults.rs`). A session's fault is picked by the
//! client: an `initialize` whose `clientInfo.name` is `fault:<mode>` (else
//! the first argument, else none: a well-behaved server). The modes:
//!
//! - `crash-mid-response`: answers `initialize`; a `tools/call` gets half a
//!   JSON line on stdout, then the process exits with status 3.
//! - `silent-init`: reads stdin and never writes a byte; exits on EOF.
//! - `flood`: answers `initialize`; once `notifications/initialized`
//!   arrives, a thread writes, as fast as stdout takes them, 1 KiB lines
//!   that alternate between valid but unrelated `notifications/message`
//!   and non-JSON garbage, until stdout fails. `echo` calls are answered.
//! - `huge-line`: answers `initialize` and `echo`; the tool `huge` gets one
//!   100 MiB line (a JSON string of `x`, its newline written only after a
//!   pause), and no answer.
//! - `close-stdout`: answers `initialize`; a `tools/call` closes stdout and
//!   the process keeps running: it reads stdin to EOF (logging `stdin eof`
//!   on stderr), then waits forever with SIGTERM at its default action.
//! - `grandchildren`: spawns two `sleep 1000` (in its own process group,
//!   with the same pipes) and logs `grandchildren <pid> <pid>` on stderr,
//!   then serves `initialize` and `echo`; exits on stdin EOF, leaving them.
//!
//! Every answering mode answers `initialize`, `tools/call echo` (its text
//! is `arguments.message`) and `tools/call pid`; diagnostics go to stderr.

use std::io::{self, BufRead, Write};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

/// Size of the `huge-line` line.
const HUGE_LINE_BYTES: usize = 100 * 1024 * 1024;
/// Size of each flood line.
const FLOOD_LINE_BYTES: usize = 1024;
/// Lines between two reports of the flood's progress on stderr (16 MiB).
const FLOOD_REPORT_LINES: u64 = 16 * 1024;

type Out = Arc<Mutex<io::Stdout>>;

fn write_line(out: &Out, line: &str) -> io::Result<()> {
    let mut out = out.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}

fn answer(out: &Out, id: &Value, result: Value) {
    let line = json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
    if write_line(out, &line).is_err() {
        std::process::exit(0);
    }
}

fn initialize_result(message: &Value) -> Value {
    json!({
        "protocolVersion": message["params"]["protocolVersion"],
        "capabilities": {"tools": {}},
        "serverInfo": {"name": "fault-child", "version": "0"},
    })
}

fn text(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}]})
}

fn flood(out: Out) {
    let padding = "f".repeat(FLOOD_LINE_BYTES - 120);
    let mut n: u64 = 0;
    loop {
        let line = if n % 2 == 0 {
            json!({"jsonrpc": "2.0", "method": "notifications/message",
                   "params": {"level": "info", "data": format!("{n} {padding}")}})
            .to_string()
        } else {
            format!("garbage {n} {padding} not json")
        };
        if write_line(&out, &line).is_err() {
            return;
        }
        n += 1;
        if n % FLOOD_REPORT_LINES == 0 {
            eprintln!(
                "flooded {} MiB",
                n * FLOOD_LINE_BYTES as u64 / (1024 * 1024)
            );
        }
    }
}

fn huge_line(out: &Out) {
    let mut out = out.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let chunk = vec![b'x'; 1024 * 1024];
    let mut written = 0;
    let _ =
        out.write_all(br#"{"jsonrpc":"2.0","method":"notifications/message","params":{"data":""#);
    while written < HUGE_LINE_BYTES {
        if out.write_all(&chunk).is_err() {
            std::process::exit(0);
        }
        written += chunk.len();
    }
    let _ = out.flush();
    eprintln!("wrote {written} bytes without a newline");
    thread::sleep(Duration::from_millis(300));
    let _ = out.write_all(b"\"}}\n");
    let _ = out.flush();
}

/// Two `sleep 1000` in this process's group, sharing its pipes.
fn spawn_grandchildren() {
    let pids: Vec<String> = (0..2)
        .filter_map(|_| Command::new("sleep").arg("1000").spawn().ok())
        .map(|child| child.id().to_string())
        .collect();
    eprintln!("grandchildren {}", pids.join(" "));
}

fn main() {
    let mut mode = std::env::args().nth(1).unwrap_or_default();
    let out: Out = Arc::new(Mutex::new(io::stdout()));
    let stdin = io::stdin();
    let mut lines = stdin.lock().lines();
    while let Some(line) = lines.next() {
        let Ok(line) = line else { break };
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if message["method"] == "initialize" {
            if let Some(chosen) = message["params"]["clientInfo"]["name"]
                .as_str()
                .and_then(|name| name.strip_prefix("fault:"))
            {
                mode = chosen.to_string();
            }
            eprintln!("mode {mode:?}");
            if mode == "grandchildren" {
                spawn_grandchildren();
            }
        }
        if mode == "silent-init" {
            continue;
        }
        let id = &message["id"];
        match message["method"].as_str().unwrap_or_default() {
            "initialize" => answer(&out, id, initialize_result(&message)),
            "notifications/initialized" if mode == "flood" => {
                let out = Arc::clone(&out);
                thread::spawn(move || flood(out));
            }
            "tools/call" => {
                let tool = message["params"]["name"].as_str().unwrap_or_default();
                match (mode.as_str(), tool) {
                    (_, "pid") => answer(&out, id, text(&std::process::id().to_string())),
                    (_, "echo") => {
                        let said = message["params"]["arguments"]["message"]
                            .as_str()
                            .unwrap_or_default();
                        answer(&out, id, text(said));
                    }
                    ("crash-mid-response", _) => {
                        let half =
                            format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[{{"ty"#);
                        let mut stdout = out.lock().unwrap_or_else(|p| p.into_inner());
                        let _ = stdout.write_all(half.as_bytes());
                        let _ = stdout.flush();
                        eprintln!("crashing mid-response");
                        std::process::exit(3);
                    }
                    ("huge-line", "huge") => huge_line(&out),
                    ("close-stdout", _) => {
                        // SAFETY: closes this process's own stdout descriptor;
                        // nothing writes to it afterwards.
                        unsafe {
                            libc::close(1);
                        }
                        eprintln!("stdout closed");
                        for line in lines.by_ref() {
                            if line.is_err() {
                                break;
                            }
                        }
                        eprintln!("stdin eof");
                        loop {
                            thread::sleep(Duration::from_secs(1));
                        }
                    }
                    _ => answer(&out, id, text("unknown tool")),
                }
            }
            _ => {}
        }
    }
    eprintln!("stdin closed, exiting");
}
