//! Shared harness for the integration tests: starts the real `mcphop` binary
//! in front of a stdio server, speaks raw HTTP to it, runs the real peer
//! clients installed by `tests/peers/install.sh`, and inspects child processes
//! through /proc. A missing peer fails the test with a clear message: tests
//! never skip themselves.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A fresh temp directory with a `logs/` folder (for configs, certificates,
/// logs), removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mcphop-{what}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("logs")).expect("create the temp dir");
        TempDir(dir)
    }

    /// Writes `text` to `name` in it; the file's path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write a temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A binary of Debian's packages unpacked into `.peers/deb` (nginx,
/// haproxy), and the folder of the shared libraries it needs.
pub fn deb_binary(name: &str) -> (PathBuf, PathBuf) {
    let deb = peers_dir().join("deb");
    let binary = deb.join("usr/sbin").join(name);
    assert!(
        binary.exists(),
        "{} is missing: run tests/peers/install.sh (it unpacks Debian's nginx and haproxy into .peers/deb)",
        binary.display()
    );
    (binary, deb.join("usr/lib/x86_64-linux-gnu"))
}

/// Debian's nginx in the foreground with everything in `dir`: a
/// `nginx.conf` of one worker whose `http` block holds `http` after the
/// temp paths (the compiled-in ones are the system's), its pid and error
/// log in `dir/logs`.
pub fn nginx_command(dir: &TempDir, http: &str) -> Command {
    let (binary, libs) = deb_binary("nginx");
    let logs = dir.0.join("logs");
    let logs = logs.display();
    let conf = dir.write(
        "nginx.conf",
        &format!(
            "worker_processes 1;\nevents {{ worker_connections 2048; }}\nhttp {{\n\
             client_body_temp_path {logs}/body; proxy_temp_path {logs}/proxy;\n\
             fastcgi_temp_path {logs}/fastcgi; uwsgi_temp_path {logs}/uwsgi;\n\
             scgi_temp_path {logs}/scgi;\n{http}\n}}\n"
        ),
    );
    let mut command = Command::new(binary);
    command
        .env("LD_LIBRARY_PATH", libs)
        .arg("-p")
        .arg(&dir.0)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(format!("{logs}/error.log"))
        .arg("-g")
        .arg(format!("daemon off; pid {logs}/nginx.pid;"));
    command
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where the pinned peers live; fails loudly when they are not installed.
pub fn peers_dir() -> PathBuf {
    let dir = repo_root().join(".peers");
    assert!(
        dir.join("py1/bin/python").exists()
            && dir.join("py2/bin/python").exists()
            && dir.join("node/node_modules/@modelcontextprotocol/server-everything").exists(),
        "the test peers are not installed: run tests/peers/install.sh (or the README's test command)"
    );
    dir
}

/// The bundled example server, built by `cargo test` with the examples.
pub fn example_server() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/examples/example_server
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("examples").join("example_server"))
        .expect("target directory");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --examples` (cargo test does this)",
        path.display()
    );
    path
}

/// The upstream command for server-everything over stdio.
pub fn server_everything() -> Vec<String> {
    let entry =
        peers_dir().join("node/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    vec!["node".into(), entry.display().to_string(), "stdio".into()]
}

/// The Python SDK (FastMCP 1.x) stdio server.
pub fn python_stdio_server() -> Vec<String> {
    vec![
        peers_dir().join("py1/bin/python").display().to_string(),
        repo_root()
            .join("tests/peers/py_stdio_server.py")
            .display()
            .to_string(),
    ]
}

/// SIGKILLs a child started with `process_group(0)`, and its whole group,
/// and reaps it.
pub fn kill_group(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        unsafe {
            libc::kill(-(child.id() as i32), libc::SIGKILL);
        }
    }
    let _ = child.wait();
}

/// What one run of a command printed, and whether it finished in time.
pub struct RunOutput {
    pub stdout: String,
    pub stderr: String,
    pub exit: Option<i32>,
    pub timed_out: bool,
    pub elapsed: Duration,
}

/// Runs `command` in its own process group, killing the group after `limit`.
pub fn run_bounded(mut command: Command, limit: Duration) -> RunOutput {
    let program = command.get_program().to_string_lossy().into_owned();
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if started.elapsed() > limit {
            timed_out = true;
            kill_group(&mut child);
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    RunOutput {
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        exit: status.and_then(|s| s.code()),
        timed_out,
        elapsed: started.elapsed(),
    }
}

/// A running mcphop process.
pub struct Mcphop {
    pub child: Child,
    pub port: u16,
    pub log: Arc<Mutex<String>>,
}

impl Mcphop {
    /// Starts mcphop on a free loopback port with extra `options`, in front
    /// of `upstream`, and waits until it listens.
    pub fn start(options: &[&str], upstream: &[String]) -> Mcphop {
        let mut args: Vec<String> = options.iter().map(|option| option.to_string()).collect();
        args.push("--".to_string());
        args.extend(upstream.iter().cloned());
        Mcphop::start_args(&args)
    }

    /// Starts mcphop on a free loopback port in front of the Streamable HTTP
    /// upstream at `url` (`--upstream URL`, no `--` and no command), with
    /// extra `options`, and waits until it listens.
    pub fn start_http(options: &[&str], url: &str) -> Mcphop {
        let mut args = vec!["--upstream".to_string(), url.to_string()];
        args.extend(options.iter().map(|option| option.to_string()));
        Mcphop::start_args(&args)
    }

    /// Starts mcphop on a free loopback port with exactly these arguments
    /// after `--listen 127.0.0.1:0`, and waits until it listens.
    pub fn start_args(args: &[String]) -> Mcphop {
        Mcphop::start_with_env(args, &[])
    }

    /// As `start_args`, with extra environment variables for mcphop.
    pub fn start_with_env(args: &[String], env: &[(&str, String)]) -> Mcphop {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mcphop"))
            .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mcphop");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            let mut port_tx = Some(port_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://127.0.0.1:").nth(1) {
                    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    if let (Some(tx), Ok(port)) = (port_tx.take(), port.parse::<u16>()) {
                        let _ = tx.send(port);
                    }
                }
                if std::env::var_os("MCPHOP_TEST_LOG").is_some() {
                    eprintln!("mcphop: {line}");
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let Ok(port) = port_rx.recv_timeout(Duration::from_secs(10)) else {
            // Not left running after the failed start.
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "mcphop did not report its port (a `listening on` line at level info):\n{}",
                log.lock().unwrap()
            );
        };
        Mcphop { child, port, log }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// True once mcphop's log holds `text` (within 5 s: the log is read by
    /// a thread of its own, so a line may land just after what caused it,
    /// even after the exit is seen).
    pub fn log_shows(&self, text: &str) -> bool {
        eventually(Duration::from_secs(5), || self.log_text().contains(text))
    }

    /// The admin port (`--admin-listen 127.0.0.1:0`) mcphop logged at start.
    pub fn admin_port(&self) -> u16 {
        let mut port = None;
        eventually(Duration::from_secs(10), || {
            port = self
                .log_text()
                .split("admin endpoints on http://127.0.0.1:")
                .nth(1)
                .and_then(|rest| {
                    rest.chars()
                        .take_while(char::is_ascii_digit)
                        .collect::<String>()
                        .parse()
                        .ok()
                });
            port.is_some()
        });
        port.unwrap_or_else(|| panic!("no admin port in the log:\n{}", self.log_text()))
    }

    /// Sends a signal to mcphop.
    pub fn signal(&self, signal: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Waits up to `limit` for mcphop to exit; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Mcphop {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGTERM);
            if self.wait_exit(Duration::from_secs(15)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// A process as /proc shows it.
#[derive(Debug, Clone)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    pub state: char,
}

/// Every process whose parent is `parent`.
pub fn children_of(parent: u32) -> Vec<ProcInfo> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name is in parentheses and may hold spaces: parse after ')'.
        let Some(after) = stat.rfind(')').map(|at| &stat[at + 1..]) else {
            continue;
        };
        let mut fields = after.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if ppid == parent {
            found.push(ProcInfo { pid, ppid, state });
        }
    }
    found
}

/// True while a process with this pid exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|at| stat[at + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Polls `condition` until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// One raw HTTP response.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (for plain JSON bodies).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// The `data:` payloads of an SSE body, as JSON.
    pub fn sse_messages(&self) -> Vec<serde_json::Value> {
        self.body
            .lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .filter(|data| !data.is_empty())
            .map(|data| serde_json::from_str(data).expect("SSE data is JSON"))
            .collect()
    }
}

/// Sends raw bytes on a fresh connection and reads one response: the head,
/// then a Content-Length or chunked body, or everything until close.
pub fn raw_exchange(port: u16, request: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(request).expect("write request");
    read_response(&mut stream)
}

/// Reads one HTTP response from a stream that carries no other response
/// after it (the reader's read-ahead is dropped).
pub fn read_response(stream: &mut TcpStream) -> RawResponse {
    read_buffered_response(&mut BufReader::new(stream))
}

/// Reads one HTTP response from a buffered reader, leaving whatever follows
/// it buffered: for several responses on one connection.
pub fn read_buffered_response<R: BufRead>(reader: &mut R) -> RawResponse {
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("status line");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _): &&(String, String)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(length) = find("content-length") {
        let length: usize = length.parse().expect("content-length");
        body.resize(length, 0);
        reader.read_exact(&mut body).expect("body");
    } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line).expect("chunk size");
            let size = usize::from_str_radix(size_line.trim(), 16).expect("chunk size hex");
            if size == 0 {
                let mut end = String::new();
                reader.read_line(&mut end).expect("last CRLF");
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).expect("chunk");
            body.extend_from_slice(&chunk[..size]);
        }
    } else if status != 202 && status != 204 && !(100..200).contains(&status) {
        let _ = reader.read_to_end(&mut body);
    }
    RawResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// The headers a well-behaved client sends on a POST.
pub const POST_HEADERS: &str =
    "Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n";

/// A POST of `body` with the usual headers plus `extra` (CRLF-terminated lines).
pub fn post_request(port: u16, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{POST_HEADERS}{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

pub const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#;

/// Opens a session with raw HTTP; returns its id.
pub fn open_session(port: u16) -> String {
    let response = raw_exchange(port, &post_request(port, "", INITIALIZE));
    assert_eq!(response.status, 200, "initialize: {response:?}");
    let session = response
        .header("mcp-session-id")
        .expect("initialize returns Mcp-Session-Id")
        .to_string();
    let messages = response.sse_messages();
    assert_eq!(messages.last().unwrap()["id"], 1, "{messages:?}");
    let initialized = raw_exchange(
        port,
        &post_request(
            port,
            &format!("Mcp-Session-Id: {session}\r\n"),
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        ),
    );
    assert_eq!(initialized.status, 202);
    session
}

/// Runs a peer Python client (`major` 1 or 2) with arguments; its output.
pub fn python_client(major: u8, args: &[&str]) -> Output {
    let peers = peers_dir();
    let python = peers.join(format!("py{major}/bin/python"));
    let script = repo_root().join(format!("tests/peers/client_v{major}.py"));
    Command::new(python)
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the Python client")
}

/// The last stdout line of a successful client run, as JSON.
pub fn client_result(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "client failed: {}\nstdout: {}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().expect("client printed a result");
    serde_json::from_str(last).expect("client result is JSON")
}

/// One item read from an SSE response.
#[derive(Debug, Clone, PartialEq)]
pub enum SseItem {
    /// An event (a priming event has empty `data`).
    Event {
        id: Option<String>,
        data: String,
        retry: Option<u64>,
    },
    /// A comment line (`: text`), such as a heartbeat.
    Comment(String),
    /// The response body ended (last chunk, or the connection closed).
    End,
}

impl SseItem {
    /// The event's data as JSON, for non-empty events.
    pub fn json(&self) -> Option<serde_json::Value> {
        match self {
            SseItem::Event { data, .. } if !data.is_empty() => serde_json::from_str(data).ok(),
            _ => None,
        }
    }

    pub fn id(&self) -> Option<&str> {
        match self {
            SseItem::Event { id, .. } => id.as_deref(),
            _ => None,
        }
    }
}

/// A raw legacy HTTP+SSE stream (`GET /sse`): its reader past the
/// `endpoint` event, and the endpoint it named.
pub struct LegacyStream {
    pub reader: BufReader<TcpStream>,
    pub endpoint: String,
}

impl LegacyStream {
    /// Opens `/sse` on mcphop's `port` with `extra` header lines.
    pub fn open(port: u16, extra: &str) -> LegacyStream {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        write!(
            stream,
            "GET /sse HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n{extra}\r\n"
        )
        .expect("send GET /sse");
        let mut reader = BufReader::new(stream);
        let mut endpoint = None;
        let mut line = String::new();
        while endpoint.is_none() {
            line.clear();
            assert!(
                reader.read_line(&mut line).expect("read") > 0,
                "no endpoint"
            );
            if line.starts_with("event: endpoint") {
                line.clear();
                reader.read_line(&mut line).expect("read");
                endpoint = line.strip_prefix("data: ").map(|d| d.trim().to_string());
            }
        }
        LegacyStream {
            reader,
            endpoint: endpoint.unwrap_or_default(),
        }
    }

    /// The next `message` event's JSON.
    pub fn next_message(&mut self) -> serde_json::Value {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                self.reader.read_line(&mut line).expect("read") > 0,
                "stream ended"
            );
            if let Some(data) = line.strip_prefix("data: ") {
                if let Ok(message) = serde_json::from_str(data.trim()) {
                    return message;
                }
            }
        }
    }
}

/// POSTs `body` to a legacy stream's `endpoint`, with `extra` header lines.
pub fn post_message(port: u16, endpoint: &str, extra: &str, body: &str) -> RawResponse {
    let request = format!(
        "POST {endpoint} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw_exchange(port, request.as_bytes())
}

/// An SSE response read item by item from a chunked HTTP/1.1 body.
pub struct SseStream {
    pub reader: BufReader<TcpStream>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    text: String,
    ended: bool,
}

impl SseStream {
    /// Sends `request` on a fresh connection and reads the response head.
    /// A non-SSE response is read whole into `text` (see `body_text`).
    pub fn open(port: u16, request: &[u8]) -> SseStream {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.write_all(request).expect("write request");
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).expect("status line");
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("header");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        SseStream {
            reader,
            status,
            headers,
            text: String::new(),
            ended: false,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Reads the next chunk into the text buffer; false at the body's end.
    fn read_chunk(&mut self) -> bool {
        if self.ended {
            return false;
        }
        let mut size_line = String::new();
        match self.reader.read_line(&mut size_line) {
            Ok(0) | Err(_) => {
                self.ended = true;
                return false;
            }
            Ok(_) => {}
        }
        let size = usize::from_str_radix(size_line.trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
        if size == 0 {
            let mut end = String::new();
            let _ = self.reader.read_line(&mut end);
            self.ended = true;
            return false;
        }
        let mut chunk = vec![0; size + 2];
        if self.reader.read_exact(&mut chunk).is_err() {
            self.ended = true;
            return false;
        }
        self.text.push_str(&String::from_utf8_lossy(&chunk[..size]));
        true
    }

    /// The next event or comment, or `End`.
    pub fn next_item(&mut self) -> SseItem {
        loop {
            if let Some(at) = self.text.find("\n\n") {
                let block: String = self.text.drain(..at + 2).collect();
                let mut id = None;
                let mut data: Vec<&str> = Vec::new();
                let mut retry = None;
                let mut comment = None;
                for line in block.lines() {
                    if let Some(text) = line.strip_prefix(':') {
                        comment = Some(text.trim().to_string());
                    } else if let Some(value) = line.strip_prefix("id:") {
                        id = Some(value.trim().to_string());
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push(value.strip_prefix(' ').unwrap_or(value));
                    } else if let Some(value) = line.strip_prefix("retry:") {
                        retry = value.trim().parse().ok();
                    }
                }
                if id.is_none() && data.is_empty() && retry.is_none() {
                    if let Some(comment) = comment {
                        return SseItem::Comment(comment);
                    }
                    continue;
                }
                return SseItem::Event {
                    id,
                    data: data.join("\n"),
                    retry,
                };
            }
            if !self.read_chunk() {
                return SseItem::End;
            }
        }
    }

    /// Every remaining item up to and including `End`.
    pub fn rest(&mut self) -> Vec<SseItem> {
        let mut items = Vec::new();
        loop {
            let item = self.next_item();
            let end = item == SseItem::End;
            items.push(item);
            if end {
                return items;
            }
        }
    }
}

/// Asserts a progress scenario's output: three progress events, 1, 2, 3 in
/// order, strictly before the result.
pub fn assert_progress_then_result(result: &serde_json::Value, context: &str) {
    assert_eq!(result["progress_count"], 3, "{context}");
    let events = result["events"]
        .as_array()
        .unwrap_or_else(|| panic!("events is not a list: {context}"));
    let kinds: Vec<&str> = events
        .iter()
        .map(|event| event["type"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        kinds,
        ["progress", "progress", "progress", "result"],
        "every progress event must come strictly before the result: {context}"
    );
    let values: Vec<f64> = events[..3]
        .iter()
        .map(|event| event["progress"].as_f64().unwrap_or(f64::NAN))
        .collect();
    assert_eq!(values, [1.0, 2.0, 3.0], "{context}");
}
