//! Back-pressure on an HTTP upstream (`--upstream`): a client that stops
//! reading its SSE stream makes mcphop stop reading that upstream response.
//! The fake upstream (`common/scripted_upstream.rs`) answers a tools/call
//! with up to 200 MiB of SSE events and counts what its socket took: the
//! count stops far short of the body, mcphop's RSS stays bounded, and
//! another session goes on normally meanwhile.

mod common;
#[path = "common/scripted_upstream.rs"]
mod scripted;
#[path = "common/upstream/mod.rs"]
mod upstream;

use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use common::{post_request, Mcphop, SseStream};
use scripted::{Action, Scripted};
use upstream::fake::FAKE_PROTOCOL;
use upstream::raw::{echo_body, echo_text, post, raw_session, session_header};

const EVENTS: usize = 3200;
const SIZE: usize = 64 * 1024;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap()
}

#[test]
fn a_client_that_stops_reading_stops_mcphop_reading_its_upstream_response() {
    let fake = Scripted::start(|request, _| {
        if request.body.contains("flood-me") {
            Action::Stream {
                events: EVENTS,
                size: SIZE,
            }
        } else {
            Action::Default
        }
    });
    let mcphop = Mcphop::start_http(&[], &fake.url());
    let port = mcphop.port;
    let headers = |session: &str| {
        format!(
            "{}MCP-Protocol-Version: {FAKE_PROTOCOL}\r\n",
            session_header(session)
        )
    };
    let stalled = raw_session(&mcphop);
    let stream = SseStream::open(
        port,
        &post_request(port, &headers(&stalled), &echo_body(2, "flood-me")),
    );
    assert_eq!(stream.status, 200);
    // The client reads nothing more. The upstream's writes must block.
    let mut last = 0;
    let mut steady = 0;
    for _ in 0..100 {
        thread::sleep(Duration::from_millis(100));
        let now = fake.state.streamed.load(Ordering::SeqCst);
        if now == last && now > 0 {
            steady += 1;
            if steady >= 10 {
                break;
            }
        } else {
            steady = 0;
        }
        last = now;
    }
    let total = EVENTS * (SIZE + 100);
    assert!(
        steady >= 10,
        "the upstream never stopped writing: {last} bytes"
    );
    assert!(
        fake.state.streaming.load(Ordering::SeqCst),
        "the body ended"
    );
    assert!(
        last < 64 * 1024 * 1024,
        "the upstream wrote {last} of {total} bytes"
    );
    let rss = rss_kib(mcphop.pid());
    assert!(rss < 48 * 1024, "mcphop RSS {rss} KiB");

    // Another session goes on normally meanwhile.
    let other = raw_session(&mcphop);
    let answer = post(port, &headers(&other), &echo_body(3, "still here"));
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(echo_text(&answer, 3).as_deref(), Some("still here"));
    assert!(fake.state.streaming.load(Ordering::SeqCst));
    assert_eq!(fake.state.streamed.load(Ordering::SeqCst), last);
    eprintln!("upstream wrote {last} of {total} bytes; mcphop RSS {rss} KiB");
    drop(stream.reader);
}
