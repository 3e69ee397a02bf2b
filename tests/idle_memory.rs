//! Memory is given back once load went away (issue 11's soak): when the
//! last session has ended and none started for a second, mcphop shrinks
//! what a burst grew (slabs, maps, queues, the timer heap) and returns
//! glibc's free memory; never while a session is open. How much comes back
//! is `benches/soak.sh`'s to report (an allocator's residue is no test's
//! to bound without flaking); this checks when the release runs, from its
//! debug log line.

mod common;

use std::time::Duration;

use common::{eventually, example_server, open_session, raw_exchange, Mcphop};

const RELEASED: &str = "idle: memory given back";

fn delete(port: u16, session: &str) -> u16 {
    let request = format!(
        "DELETE /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nMcp-Session-Id: {session}\r\n\r\n"
    );
    raw_exchange(port, request.as_bytes()).status
}

#[test]
fn memory_is_given_back_once_the_last_session_ended_and_not_before() {
    let server = example_server().display().to_string();
    let mcphop = Mcphop::start(&["--log-level", "debug"], &[server]);
    let sessions: Vec<String> = (0..20).map(|_| open_session(mcphop.port)).collect();
    let Some((last, others)) = sessions.split_last() else {
        unreachable!("twenty sessions");
    };
    for session in others {
        assert_eq!(delete(mcphop.port, session), 200);
    }
    // One session is still open: nothing is released, however long it
    // lasts (the idle wait is one second).
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !mcphop.log_text().contains(RELEASED),
        "{}",
        mcphop.log_text()
    );
    assert_eq!(delete(mcphop.port, last), 200);
    assert!(
        eventually(Duration::from_secs(15), || mcphop
            .log_text()
            .contains(RELEASED)),
        "{}",
        mcphop.log_text()
    );
    // Once per idle period.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(mcphop.log_text().matches(RELEASED).count(), 1);
}
