//! Proves the load-generation harness works, in a few seconds: the
//! `loadgen` example drives the `bench_server` example directly (its
//! Streamable HTTP mode) and through mcphop (in front of `bench_server` over
//! stdio), in call mode and in idle mode, over Streamable HTTP and over
//! mcphop's legacy HTTP+SSE front door (`--transport sse`). Only correctness
//! is asserted (no errors, some calls), never timing.
//!
//! The example binaries come from `cargo build --examples` (the CI runs it
//! before `cargo test`); a missing one fails with a message saying so.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Time any one step may take.
const STEP_LIMIT: Duration = Duration::from_secs(60);

/// target/<profile>/examples/<name>, next to this test's target/<profile>/deps.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("examples").join(name))
        .expect("target directory");
    assert!(
        path.exists(),
        "{} is missing: build the examples first with `cargo build --examples`",
        path.display()
    );
    path
}

/// A child process killed (after a SIGTERM and a grace period) when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            unsafe {
                libc::kill(self.0.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Reads lines from `reader` on a thread until one contains `marker`; the
/// text after it. The thread keeps draining the pipe afterwards.
fn wait_for_line<R: Read + Send + 'static>(reader: R, marker: &'static str, what: &str) -> String {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut tx = Some(tx);
        let mut seen = String::new();
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split(marker).nth(1) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(Ok(rest.to_string()));
                }
            } else if tx.is_some() && seen.len() < 4096 {
                seen.push_str(&line);
                seen.push('\n');
            }
        }
        if let Some(tx) = tx {
            let _ = tx.send(Err(seen));
        }
    });
    match rx.recv_timeout(STEP_LIMIT) {
        Ok(Ok(rest)) => rest,
        Ok(Err(output)) => {
            panic!("{what} ended without printing {marker:?}; it printed:\n{output}")
        }
        Err(_) => panic!("{what} did not print {marker:?} within {STEP_LIMIT:?}"),
    }
}

fn port_of(rest: &str) -> u16 {
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no port in {rest:?}"))
}

/// Collects a pipe's whole output on a thread.
fn collect<R: Read + Send + 'static>(mut reader: R) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut text = Vec::new();
        let _ = reader.read_to_end(&mut text);
        let _ = tx.send(String::from_utf8_lossy(&text).into_owned());
    });
    rx
}

/// Waits for `child` to exit within the step limit; its exit status success.
fn wait_exit(child: &mut Child, what: &str) -> bool {
    let deadline = Instant::now() + STEP_LIMIT;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.success();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {STEP_LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The JSON report on the last line of loadgen's stdout.
fn report(stdout: &str, stderr: &str, ok: bool) -> serde_json::Value {
    assert!(ok, "loadgen failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let last = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("loadgen printed nothing; stderr:\n{stderr}"));
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!("loadgen's last line is not JSON ({e}): {last:?}\nstderr:\n{stderr}")
    })
}

/// Runs loadgen in call mode to the end; its report.
fn loadgen_calls(url: &str, transport: &str) -> serde_json::Value {
    let mut child = Command::new(example("loadgen"))
        .args([
            "--transport",
            transport,
            "--url",
            url,
            "--sessions",
            "2",
            "--duration",
            "1s",
        ])
        .args(["--warmup", "0s", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadgen");
    let stdout = collect(child.stdout.take().expect("stdout"));
    let stderr = collect(child.stderr.take().expect("stderr"));
    let ok = wait_exit(&mut child, "loadgen");
    let stdout = stdout.recv_timeout(STEP_LIMIT).expect("loadgen stdout");
    let stderr = stderr.recv_timeout(STEP_LIMIT).expect("loadgen stderr");
    let report = report(&stdout, &stderr, ok);
    assert_eq!(report["errors"], 0, "errors: {report}\nstderr:\n{stderr}");
    assert!(
        report["calls"].as_u64().unwrap_or(0) > 0,
        "no calls: {report}"
    );
    assert_eq!(report["sessions"], 2, "{report}");
    for key in [
        "duration_s",
        "calls_per_s",
        "p50_us",
        "p90_us",
        "p99_us",
        "max_us",
        "setup_p50_us",
        "setup_p99_us",
    ] {
        assert!(report[key].is_number(), "{key} missing: {report}");
    }
    report
}

/// Runs loadgen in idle mode: waits for `ready N`, closes its stdin, and
/// checks that it then ends the sessions and exits; its report.
fn loadgen_idle(url: &str, transport: &str, sessions: usize) -> serde_json::Value {
    let count = sessions.to_string();
    let mut child = Command::new(example("loadgen"))
        .args([
            "--transport",
            transport,
            "--url",
            url,
            "--sessions",
            &count,
            "--mode",
            "idle",
        ])
        .args(["--hold", "30s", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadgen");
    let stdin = child.stdin.take().expect("stdin");
    let stderr = collect(child.stderr.take().expect("stderr"));
    let (ready_tx, ready_rx) = mpsc::channel();
    let stdout: ChildStdout = child.stdout.take().expect("stdout");
    let lines = thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("ready ") {
                let _ = ready_tx.send(line.clone());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let ready = ready_rx
        .recv_timeout(STEP_LIMIT)
        .expect("loadgen idle mode never printed `ready N`");
    assert_eq!(ready, format!("ready {sessions}"));
    // Holding: the sessions stay open until stdin reaches EOF.
    thread::sleep(Duration::from_millis(200));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "loadgen stopped holding before stdin closed"
    );
    drop(stdin);
    let ok = wait_exit(&mut child, "loadgen in idle mode");
    let stdout = lines.join().expect("stdout reader");
    let stderr = stderr.recv_timeout(STEP_LIMIT).expect("loadgen stderr");
    let report = report(&stdout, &stderr, ok);
    assert_eq!(report["errors"], 0, "errors: {report}\nstderr:\n{stderr}");
    assert_eq!(report["calls"], 0, "{report}");
    assert!(report["setup_p50_us"].is_number(), "{report}");
    report
}

#[test]
fn loadgen_against_bench_server_and_mcphop() {
    // 1. The bench server's own Streamable HTTP mode, directly.
    let mut server = Command::new(example("bench_server"))
        .args(["--http", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn bench_server --http 0");
    let server_out = server.stdout.take().expect("bench_server stdout");
    let server = Guard(server);
    let rest = wait_for_line(server_out, "listening on 127.0.0.1:", "bench_server");
    let direct = format!("http://127.0.0.1:{}/mcp", port_of(&rest));
    let report = loadgen_calls(&direct, "streamable");
    println!("direct:      {report}");
    drop(server);

    // 2. mcphop in front of the bench server over stdio.
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_mcphop"))
        .args(["--listen", "127.0.0.1:0", "--"])
        .arg(example("bench_server"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mcphop");
    let proxy_err = proxy.stderr.take().expect("mcphop stderr");
    let proxy = Guard(proxy);
    let rest = wait_for_line(proxy_err, "listening on http://127.0.0.1:", "mcphop");
    let port = port_of(&rest);
    let url = format!("http://127.0.0.1:{port}/mcp");
    let report = loadgen_calls(&url, "streamable");
    println!("via mcphop:  {report}");
    let report = loadgen_idle(&url, "streamable", 5);
    assert_eq!(report["ready"], 5, "{report}");
    println!("idle:        {report}");

    // 3. The same mcphop's legacy HTTP+SSE front door.
    let sse = format!("http://127.0.0.1:{port}/sse");
    let report = loadgen_calls(&sse, "sse");
    assert_eq!(report["transport"], "sse", "{report}");
    println!("legacy sse:  {report}");
    let report = loadgen_idle(&sse, "sse", 5);
    assert_eq!(report["ready"], 5, "{report}");
    println!("sse idle:    {report}");
    drop(proxy);
}
