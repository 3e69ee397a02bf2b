//! The real Python SDK clients resume a dropped stream through mcphop and
//! lose nothing: a relay between client and mcphop cuts the POST stream's
//! connection mid-request; the client reconnects with `Last-Event-ID` and must
//! see every progress event exactly once, then the result.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::thread;

use common::*;

/// A loopback TCP relay that cuts the first connection whose server-to-client
/// bytes contain `trigger`, right after forwarding them. Its target port is
/// set after it starts, since mcphop must know the relay's port first.
struct CuttingRelay {
    port: u16,
    target: Arc<AtomicU16>,
    cut: Arc<AtomicBool>,
}

impl CuttingRelay {
    fn start(trigger: &'static [u8]) -> CuttingRelay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let target = Arc::new(AtomicU16::new(0));
        let (cut_flag, target_port) = (Arc::clone(&cut), Arc::clone(&target));
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let target = target_port.load(Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    break;
                };
                let (mut client_in, mut server_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                thread::spawn(move || {
                    let mut buffer = [0u8; 16384];
                    while let Ok(count) = client_in.read(&mut buffer) {
                        if count == 0 || server_out.write_all(&buffer[..count]).is_err() {
                            break;
                        }
                    }
                    let _ = server_out.shutdown(Shutdown::Write);
                });
                let cut_flag = Arc::clone(&cut_flag);
                thread::spawn(move || {
                    let (mut server_in, mut client_out) = (server, client);
                    let mut buffer = [0u8; 16384];
                    while let Ok(count) = server_in.read(&mut buffer) {
                        if count == 0 || client_out.write_all(&buffer[..count]).is_err() {
                            break;
                        }
                        let hit = buffer[..count]
                            .windows(trigger.len())
                            .any(|window| window == trigger);
                        if hit && !cut_flag.swap(true, Ordering::SeqCst) {
                            let _ = client_out.shutdown(Shutdown::Both);
                            let _ = server_in.shutdown(Shutdown::Both);
                            break;
                        }
                    }
                    let _ = client_out.shutdown(Shutdown::Both);
                });
            }
        });
        CuttingRelay { port, target, cut }
    }
}

fn resume_through_a_cut(major: u8) {
    let relay = CuttingRelay::start(br#""progress":2,"#);
    let allowed = format!("127.0.0.1:{}", relay.port);
    let proxy = Mcphop::start(
        &["--sse-retry", "200ms", "--allowed-host", &allowed],
        &[example_server().display().to_string()],
    );
    relay.target.store(proxy.port, Ordering::SeqCst);
    let url = format!("http://127.0.0.1:{}/mcp", relay.port);
    let output = python_client(
        major,
        &[
            "--url",
            &url,
            "--scenario",
            "progress",
            "--tool",
            "progress",
            "--args",
            r#"{"steps":6,"delay_ms":250}"#,
        ],
    );
    let result = client_result(&output);
    assert!(
        relay.cut.load(Ordering::SeqCst),
        "the relay never cut the stream"
    );
    let events = result["events"].as_array().unwrap();
    let progress: Vec<i64> = events
        .iter()
        .filter(|event| event["type"] == "progress")
        .map(|event| event["progress"].as_i64().unwrap())
        .collect();
    assert_eq!(progress, vec![1, 2, 3, 4, 5, 6], "{result}");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "result");
    assert_eq!(last["text"], "done after 6 steps");
}

#[test]
fn python_v1_client_resumes_a_cut_stream_without_loss() {
    resume_through_a_cut(1);
}

#[test]
fn python_v2_client_resumes_a_cut_stream_without_loss() {
    resume_through_a_cut(2);
}
