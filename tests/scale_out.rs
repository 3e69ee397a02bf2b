//! Scale-out behind real balancers: Debian's nginx and HAProxy (unpacked
//! into `.peers/deb` by `tests/peers/install.sh`), each running the shipped
//! config from `examples/deploy/` with only its port numbers changed, in
//! front of three mcphop instances (`--instance-id a|b|c`, each in front of
//! the bundled example server).
//!
//! Each test: 100 concurrent raw sessions and 100 concurrent Python SDK
//! sessions each stay on one instance for their whole life (one child pid
//! on every call, a child of the instance the id's tag names, and only that
//! instance's log knows the session); then one instance is killed: its
//! sessions get 404 at their next request, Python SDK clients on it open a
//! new session through the balancer and carry on, and the other instances'
//! sessions are untouched. Everything listens on loopback; every process
//! started here is stopped by a guard. Legacy HTTP+SSE sessions are routed
//! by the tag in their `/message?sessionId=` query too.

#[path = "scale_out/balancer.rs"]
mod balancer;
mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use balancer::{free_port, Balancer, Instance, Kind, Orphans};
use common::{
    children_of, eventually, is_alive, kill_group, peers_dir, post_request, raw_exchange,
    repo_root, RawResponse, INITIALIZE,
};
use serde_json::Value;

/// The instances' tags, as in the example configs.
const TAGS: [&str; 3] = ["a", "b", "c"];
/// The instance killed in the failover phase.
const VICTIM: &str = "b";
/// Concurrent sessions per client kind.
const SESSIONS: usize = 100;
/// `tools/call pid` per session in the stickiness phase.
const CALLS: usize = 3;
/// Python SDK sessions in the failover phase (a few on each instance).
const FAILOVER_SESSIONS: usize = 9;
/// Per-phase timeout handed to the Python clients (seconds).
const CLIENT_TIMEOUT: &str = "30";

/// The balancer and its three instances.
struct Cluster {
    // Dropped first: the balancer goes before the instances.
    balancer: Balancer,
    instances: Vec<Instance>,
}

impl Cluster {
    fn start(kind: Kind) -> Cluster {
        let port = free_port();
        let instances: Vec<Instance> = TAGS.iter().map(|tag| Instance::start(tag, port)).collect();
        let balancer = Balancer::start(kind, port, &instances);
        Cluster {
            balancer,
            instances,
        }
    }

    fn instance(&self, tag: &str) -> &Instance {
        self.instances
            .iter()
            .find(|instance| instance.tag == tag)
            .unwrap_or_else(|| panic!("no instance {tag}"))
    }

    fn instance_mut(&mut self, tag: &str) -> &mut Instance {
        self.instances
            .iter_mut()
            .find(|instance| instance.tag == tag)
            .unwrap_or_else(|| panic!("no instance {tag}"))
    }

    /// Every log, for failure messages.
    fn logs(&self) -> String {
        let mut text = self.balancer.logs();
        for instance in &self.instances {
            let log = instance.mcphop.log_text();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            text.push_str(&format!("--- instance {} (last lines)\n", instance.tag));
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}

/// The instance tag of a session id (`b.` + 32 hex digits).
fn tag_of(session: &str) -> &str {
    let (tag, random) = session
        .split_once('.')
        .unwrap_or_else(|| panic!("session id {session:?} has no instance tag"));
    assert!(
        random.len() == 32 && random.bytes().all(|b| b.is_ascii_hexdigit()),
        "{session:?}"
    );
    tag
}

/// What mcphop logs of a session: its tag and 8 hex digits.
fn short_id(session: &str) -> &str {
    &session[..tag_of(session).len() + 1 + 8]
}

// ----- raw sessions ----------------------------------------------------------

/// Opens a session through the balancer; its id.
fn raw_open(port: u16) -> String {
    let response = raw_exchange(port, &post_request(port, "", INITIALIZE));
    assert_eq!(response.status, 200, "initialize: {response:?}");
    let session = response
        .header("mcp-session-id")
        .unwrap_or_else(|| panic!("no Mcp-Session-Id: {response:?}"))
        .to_string();
    let initialized = raw_exchange(
        port,
        &post_request(
            port,
            &format!("Mcp-Session-Id: {session}\r\n"),
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        ),
    );
    assert_eq!(initialized.status, 202, "{initialized:?}");
    session
}

/// `tools/call pid` on a session through the balancer: the raw response.
fn raw_pid_call(port: u16, session: &str) -> RawResponse {
    let body =
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"pid","arguments":{}}}"#;
    raw_exchange(
        port,
        &post_request(port, &format!("Mcp-Session-Id: {session}\r\n"), body),
    )
}

/// The child pid a successful `tools/call pid` answered.
fn pid_of(response: &RawResponse, context: &str) -> u32 {
    assert_eq!(response.status, 200, "{context}: {response:?}");
    let messages = response.sse_messages();
    let answer = messages
        .iter()
        .find(|message| message["id"] == 7)
        .unwrap_or_else(|| panic!("{context}: no answer in {messages:?}"));
    answer["result"]["content"][0]["text"]
        .as_str()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("{context}: not a pid: {answer}"))
}

/// SESSIONS raw sessions at once, each calling `pid` CALLS times: their
/// ids and the pid each answered.
fn raw_sessions(port: u16) -> Vec<(String, u32)> {
    let (tx, rx) = mpsc::channel();
    let workers: Vec<_> = (0..SESSIONS)
        .map(|_| {
            let tx = tx.clone();
            thread::spawn(move || {
                let session = raw_open(port);
                let mut pids = Vec::new();
                for call in 0..CALLS {
                    pids.push(pid_of(
                        &raw_pid_call(port, &session),
                        &format!("session {session}, call {call}"),
                    ));
                    thread::sleep(Duration::from_millis(10));
                }
                let _ = tx.send((session, pids));
            })
        })
        .collect();
    drop(tx);
    let mut sessions = Vec::new();
    for (session, pids) in rx.iter() {
        let distinct: HashSet<u32> = pids.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            1,
            "session {session} met several children: {pids:?}"
        );
        sessions.push((session, pids[0]));
    }
    for worker in workers {
        assert!(worker.join().is_ok(), "a raw session failed (see above)");
    }
    assert_eq!(sessions.len(), SESSIONS);
    sessions
}

/// Every session's pid is a live child of the instance its tag names, that
/// instance's log started it with that pid, and no other instance's log
/// knows it; every instance got a share of the sessions.
fn assert_on_their_instance(cluster: &Cluster, sessions: &[(String, u32)], who: &str) {
    let mut children: HashMap<&str, HashSet<u32>> = HashMap::new();
    let mut logs: HashMap<&str, String> = HashMap::new();
    for instance in &cluster.instances {
        let pids = children_of(instance.mcphop.pid())
            .into_iter()
            .map(|p| p.pid)
            .collect();
        children.insert(instance.tag, pids);
        logs.insert(instance.tag, instance.mcphop.log_text());
    }
    let mut per_instance: HashMap<&str, usize> = HashMap::new();
    let pids: HashSet<u32> = sessions.iter().map(|(_, pid)| *pid).collect();
    assert_eq!(
        pids.len(),
        sessions.len(),
        "{who}: a child served two sessions"
    );
    for (session, pid) in sessions {
        let tag = tag_of(session);
        *per_instance.entry(tag).or_default() += 1;
        let context = format!("{who}: session {session} (pid {pid})");
        assert!(
            children[tag].contains(pid),
            "{context}: not a child of instance {tag}\n{}",
            cluster.logs()
        );
        let started = format!("session {} started: pid {pid},", short_id(session));
        assert!(
            logs[tag].contains(&started),
            "{context}: instance {tag} never logged {started:?}"
        );
        for other in TAGS.iter().filter(|other| **other != tag) {
            assert!(
                !logs[other].contains(short_id(session)),
                "{context}: instance {other} saw it too"
            );
        }
    }
    for tag in TAGS {
        let count = per_instance.get(tag).copied().unwrap_or(0);
        assert!(
            count >= sessions.len() / 6,
            "{who}: round-robin gave instance {tag} only {count} of {} sessions: {per_instance:?}",
            sessions.len()
        );
    }
}

// ----- Python SDK sessions -----------------------------------------------------

fn python_args(cluster: &Cluster, scenario: &str, sessions: usize) -> Vec<String> {
    let url = format!("http://127.0.0.1:{}/mcp", cluster.balancer.port);
    [
        "--url",
        url.as_str(),
        "--timeout",
        CLIENT_TIMEOUT,
        "--scenario",
        scenario,
        "--pid-tool",
        "pid",
        "--sessions",
        &sessions.to_string(),
        "--calls",
        &CALLS.to_string(),
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect()
}

fn python_command(args: &[String]) -> Command {
    let mut command = Command::new(peers_dir().join("py1/bin/python"));
    command
        .arg(repo_root().join("tests/peers/client_v1.py"))
        .args(args)
        .process_group(0);
    command
}

/// SESSIONS Python SDK sessions at once through the balancer, CALLS pid
/// calls each: ids and pids.
fn python_sessions(cluster: &Cluster) -> Vec<(String, u32)> {
    let output = python_command(&python_args(cluster, "sticky", SESSIONS))
        .stdin(Stdio::null())
        .output()
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "sticky scenario failed: {}\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr),
        cluster.logs()
    );
    let result: Value = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no JSON result: {stdout}"));
    let sessions = result["sessions"].as_array().cloned().unwrap_or_default();
    assert_eq!(sessions.len(), SESSIONS, "{result}");
    sessions
        .iter()
        .map(|session| {
            let id = session["id"].as_str().unwrap_or_default().to_string();
            let pids: HashSet<u64> = session["pids"]
                .as_array()
                .map(|pids| pids.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default();
            assert_eq!(
                pids.len(),
                1,
                "session {id} met several children: {session}"
            );
            let pid = pids.into_iter().next().unwrap_or_default() as u32;
            (id, pid)
        })
        .collect()
}

/// The failover client, once its sessions made their first call.
struct FailoverClient {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    first: Vec<(String, u32)>,
}

impl FailoverClient {
    fn start(cluster: &Cluster) -> FailoverClient {
        let mut child = python_command(&python_args(cluster, "failover", FAILOVER_SESSIONS))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run the Python client");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("client stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut client = FailoverClient {
            child,
            stdin,
            lines,
            first: Vec::new(),
        };
        let first = client.next_json(&cluster.logs());
        client.first = sessions_of(&first, "id", "pid");
        client
    }

    fn next_json(&self, context: &str) -> Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(40))
            .unwrap_or_else(|e| panic!("no line from the failover client ({e})\n{context}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// Lets the sessions make their second call; the client's result.
    fn carry_on(&mut self, context: &str) -> Value {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"go\n");
        }
        let result = self.next_json(context);
        let status = self.child.wait().expect("wait for the client");
        assert!(
            status.success(),
            "failover client failed: {result}\n{context}"
        );
        result
    }
}

impl Drop for FailoverClient {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// `[{id_key, pid_key}]` as pairs.
fn sessions_of(result: &Value, id_key: &str, pid_key: &str) -> Vec<(String, u32)> {
    result["sessions"]
        .as_array()
        .unwrap_or_else(|| panic!("no sessions: {result}"))
        .iter()
        .map(|session| {
            let id = session[id_key].as_str().unwrap_or_default().to_string();
            let pid = session[pid_key].as_u64().unwrap_or_default() as u32;
            (id, pid)
        })
        .collect()
}

// ----- legacy HTTP+SSE sessions ------------------------------------------------

/// Legacy sessions through the balancer: `GET /sse` goes round-robin, and
/// each POST to `/message?sessionId=TAG.…` reaches the instance holding the
/// stream (routed on the query's tag), which answers on that stream.
fn legacy_sessions(cluster: &Cluster) {
    let port = cluster.balancer.port;
    let mut tags = HashSet::new();
    for round in 0..6 {
        let open = format!(
            "GET /sse HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n"
        );
        let mut stream = common::SseStream::open(port, open.as_bytes());
        assert_eq!(stream.status, 200, "GET /sse #{round}\n{}", cluster.logs());
        let endpoint = match stream.next_item() {
            common::SseItem::Event { data, .. } => data,
            other => panic!("no endpoint event: {other:?}"),
        };
        let session = endpoint
            .split("sessionId=")
            .nth(1)
            .unwrap_or_else(|| panic!("endpoint {endpoint:?}"));
        tags.insert(tag_of(session).to_string());
        let post = format!(
            "POST {endpoint} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{INITIALIZE}",
            INITIALIZE.len()
        );
        let response = raw_exchange(port, post.as_bytes());
        assert_eq!(response.status, 202, "POST {endpoint}: {response:?}");
        let answer = (0..5)
            .map(|_| stream.next_item())
            .find_map(|item| item.json().filter(|message| message["id"] == 1));
        assert!(
            answer.is_some(),
            "no initialize answer on {endpoint}'s stream"
        );
    }
    assert!(tags.len() >= 2, "legacy sessions not spread: {tags:?}");
}

// ----- the scenario ------------------------------------------------------------

fn scale_out(kind: Kind) {
    let started = Instant::now();
    let mut cluster = Cluster::start(kind);
    let port = cluster.balancer.port;

    // 1. Stickiness: raw and SDK sessions, all at once.
    let raw = raw_sessions(port);
    assert_on_their_instance(&cluster, &raw, "raw client");
    let sdk = python_sessions(&cluster);
    // The SDK closed its sessions (DELETE): their children are gone, so the
    // log lines say where they lived.
    for (session, pid) in &sdk {
        let tag = tag_of(session);
        let started = format!("session {} started: pid {pid},", short_id(session));
        assert!(
            cluster.instance(tag).mcphop.log_text().contains(&started),
            "SDK session {session} (pid {pid}): instance {tag} never logged {started:?}"
        );
    }
    let sdk_pids: HashSet<u32> = sdk.iter().map(|(_, pid)| *pid).collect();
    assert_eq!(
        sdk_pids.len(),
        SESSIONS,
        "an SDK session met another's child"
    );
    let sdk_tags: HashSet<&str> = sdk.iter().map(|(id, _)| tag_of(id)).collect();
    assert_eq!(
        sdk_tags.len(),
        TAGS.len(),
        "SDK sessions not spread: {sdk_tags:?}"
    );
    legacy_sessions(&cluster);
    eprintln!("{kind:?}: stickiness checked after {:?}", started.elapsed());

    // 2. Failover: one instance dies under open sessions.
    let mut client = FailoverClient::start(&cluster);
    assert!(
        client.first.iter().any(|(id, _)| tag_of(id) == VICTIM),
        "no SDK session on instance {VICTIM}: {:?}",
        client.first
    );
    let victim = cluster.instance_mut(VICTIM);
    let orphans = Orphans(
        children_of(victim.mcphop.pid())
            .into_iter()
            .map(|p| p.pid)
            .collect(),
    );
    victim.mcphop.signal(libc::SIGKILL);
    victim.mcphop.wait_exit(Duration::from_secs(5));
    assert!(
        !is_alive(victim.mcphop.pid()),
        "instance {VICTIM} survived SIGKILL"
    );
    for (session, pid) in &raw {
        let response = raw_pid_call(port, session);
        if tag_of(session) == VICTIM {
            assert_eq!(
                response.status,
                404,
                "session {session} of the killed instance: {response:?}\n{}",
                cluster.logs()
            );
        } else {
            let context = format!("session {session} on a live instance");
            assert_eq!(
                pid_of(&response, &context),
                *pid,
                "{context}: another child"
            );
        }
    }
    let foreign = format!("tagged for instance \"{VICTIM}\", not this one");
    assert!(
        cluster
            .instances
            .iter()
            .any(|instance| instance.mcphop.log_text().contains(&foreign)),
        "no surviving instance logged {foreign:?}\n{}",
        cluster.logs()
    );
    let context = cluster.logs();
    let result = client.carry_on(&context);
    let first: HashMap<String, u32> = client.first.iter().cloned().collect();
    for session in result["sessions"].as_array().cloned().unwrap_or_default() {
        let id = session["id"].as_str().unwrap_or_default();
        let after_id = session["after_id"].as_str().unwrap_or_default();
        let after_pid = session["after_pid"].as_u64().unwrap_or_default() as u32;
        let reinitialized = session["reinitialized"].as_bool();
        if tag_of(id) == VICTIM {
            assert_eq!(reinitialized, Some(true), "{session}");
            assert_ne!(tag_of(after_id), VICTIM, "{session}");
            let on = cluster.instance(tag_of(after_id)).mcphop.log_text();
            let started = format!("session {} started: pid {after_pid},", short_id(after_id));
            assert!(on.contains(&started), "{session}: no {started:?}");
        } else {
            assert_eq!(reinitialized, Some(false), "{session}");
            assert_eq!(after_id, id, "{session}");
            assert_eq!(Some(&after_pid), first.get(id), "{session}: another child");
        }
    }
    // The killed instance's children end once their stdin closes.
    assert!(
        eventually(Duration::from_secs(5), || orphans
            .0
            .iter()
            .all(|&pid| !is_alive(pid))),
        "children of the killed instance still run"
    );
    eprintln!("{kind:?}: failover checked after {:?}", started.elapsed());
}

#[test]
fn nginx_keeps_sessions_on_their_instance_and_fails_over() {
    scale_out(Kind::Nginx);
}

#[test]
fn haproxy_keeps_sessions_on_their_instance_and_fails_over() {
    scale_out(Kind::Haproxy);
}
