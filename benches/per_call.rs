//! Per-call cost benchmark: heap allocations, bytes allocated, payload copies
//! held on the heap, wall time and proxy CPU time of one `tools/call`, with
//! mcphop running in-process on its own thread in front of
//! `bench_server` over stdio and over Streamable HTTP (`--upstream`).
//!
//! A counting `#[global_allocator]` counts only on threads that carry a
//! counting slot (a thread-local set by the proxy thread itself), so the
//! client on the main thread and the upstream process are never counted.
//! One keep-alive HTTP/1.1 client on the main thread opens one session,
//! warms up, then makes N calls with a 1 KiB echo message; the figures are
//! the proxy thread's counters over those N calls, divided by N.
//!
//! **Payload census.** A second proxy instance per upstream kind runs in a
//! slot where every heap block of at least `MARKER.len()` bytes is zeroed
//! when allocated, and scanned for the payload's marker when freed or moved
//! by `realloc`. Each marker found in a freed (or moved-away) block is one
//! copy of the payload that lived in a short-lived heap block. Buffers that
//! live across calls (read and write buffers, framers) are not freed per
//! call: the census lists how many still hold the marker at the end; each
//! of those is written about once per call. Copies into the stack or into
//! kernel buffers are not seen; see benches/PER_CALL.md for the full list.
//!
//! `cargo bench --bench per_call` runs the full measurement (release
//! `bench_server`, built by `cargo build --release --examples`); under
//! `cargo test` (no `--bench` argument) it runs a short smoke pass against
//! the debug `bench_server`. Figures are printed, never asserted.
//! `MCPHOP_BENCH_SERVER=PATH` picks another upstream binary.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::thread::JoinHandleExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// The counting allocator

/// Counting slots; 0 means "not counted".
const SLOTS: usize = 8;
/// Allocation size classes: up to 64, 256, 1 KiB, 4 KiB bytes, and larger.
const SIZE_CLASSES: [usize; 4] = [64, 256, 1024, 4096];
/// Heap blocks tracked at once by the payload census.
const LIVE_CAPACITY: usize = 1024;

/// The first bytes of every payload: a string no header or JSON key holds.
const MARKER: &[u8] = b"PERCALLMARKER-7q";
/// Bytes of the echo message (marker included).
const PAYLOAD_BYTES: usize = 1024;

struct Slot {
    allocs: AtomicU64,
    reallocs: AtomicU64,
    frees: AtomicU64,
    bytes: AtomicU64,
    classes: [AtomicU64; SIZE_CLASSES.len() + 1],
    /// Markers found in blocks freed or moved away (census slots only).
    marked: AtomicU64,
    /// Blocks the census could not track (its table was full).
    untracked: AtomicU64,
    census: AtomicBool,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            allocs: AtomicU64::new(0),
            reallocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            classes: [const { AtomicU64::new(0) }; SIZE_CLASSES.len() + 1],
            marked: AtomicU64::new(0),
            untracked: AtomicU64::new(0),
            census: AtomicBool::new(false),
        }
    }

    fn count_size(&self, size: usize) {
        let class = SIZE_CLASSES
            .iter()
            .position(|&limit| size <= limit)
            .unwrap_or(SIZE_CLASSES.len());
        self.classes[class].fetch_add(1, Relaxed);
        self.bytes.fetch_add(size as u64, Relaxed);
    }
}

static COUNTERS: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];
/// Census table: block address, size and slot (address 0: free entry).
static LIVE: [[AtomicUsize; 3]; LIVE_CAPACITY] =
    [const { [const { AtomicUsize::new(0) }; 3] }; LIVE_CAPACITY];
/// Any census slot in use: frees from every thread look the block up.
static CENSUS_ACTIVE: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// This thread's counting slot; set once by the proxy thread.
    static SLOT: Cell<usize> = const { Cell::new(0) };
}

fn current_slot() -> usize {
    SLOT.try_with(Cell::get).unwrap_or(0)
}

/// Occurrences of the marker in `len` bytes at `ptr`.
///
/// # Safety
/// `ptr..ptr+len` must be a live, initialised allocation.
unsafe fn markers_in(ptr: *const u8, len: usize) -> u64 {
    // SAFETY: the caller guarantees the range; the census zeroes every
    // tracked block when it is allocated, so all of it is initialised.
    let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
    bytes.windows(MARKER.len()).filter(|w| *w == MARKER).count() as u64
}

fn track(ptr: *mut u8, size: usize, slot: usize) {
    for entry in &LIVE {
        if entry[0]
            .compare_exchange(0, ptr as usize, Relaxed, Relaxed)
            .is_ok()
        {
            entry[1].store(size, Relaxed);
            entry[2].store(slot, Relaxed);
            return;
        }
    }
    COUNTERS[slot].untracked.fetch_add(1, Relaxed);
}

/// Forgets a tracked block; returns its (size, slot) when it was tracked.
fn untrack(ptr: *mut u8) -> Option<(usize, usize)> {
    for entry in &LIVE {
        if entry[0].load(Relaxed) == ptr as usize {
            let found = (entry[1].load(Relaxed), entry[2].load(Relaxed));
            entry[0].store(0, Relaxed);
            return Some(found);
        }
    }
    None
}

struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments; the
// bookkeeping around it only reads blocks that are live and initialised.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let slot = current_slot();
        if slot == 0 {
            // SAFETY: forwarded unchanged.
            return unsafe { System.alloc(layout) };
        }
        let counters = &COUNTERS[slot];
        counters.allocs.fetch_add(1, Relaxed);
        counters.count_size(layout.size());
        if counters.census.load(Relaxed) && layout.size() >= MARKER.len() {
            // SAFETY: forwarded; zeroed so a later scan sees only what was
            // written into this block.
            let ptr = unsafe { System.alloc_zeroed(layout) };
            if !ptr.is_null() {
                track(ptr, layout.size(), slot);
            }
            return ptr;
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let slot = current_slot();
        // SAFETY: forwarded unchanged.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if slot != 0 {
            let counters = &COUNTERS[slot];
            counters.allocs.fetch_add(1, Relaxed);
            counters.count_size(layout.size());
            if counters.census.load(Relaxed) && layout.size() >= MARKER.len() && !ptr.is_null() {
                track(ptr, layout.size(), slot);
            }
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let slot = current_slot();
        if slot != 0 {
            COUNTERS[slot].frees.fetch_add(1, Relaxed);
        }
        if CENSUS_ACTIVE.load(Relaxed) && layout.size() >= MARKER.len() {
            if let Some((size, owner)) = untrack(ptr) {
                // SAFETY: the block is still live and was zeroed at birth.
                let found = unsafe { markers_in(ptr, size) };
                COUNTERS[owner].marked.fetch_add(found, Relaxed);
            }
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let slot = current_slot();
        if slot != 0 {
            COUNTERS[slot].reallocs.fetch_add(1, Relaxed);
            COUNTERS[slot].count_size(new_size);
        }
        let tracked = if CENSUS_ACTIVE.load(Relaxed) && layout.size() >= MARKER.len() {
            untrack(ptr)
        } else {
            None
        };
        // Markers the old block holds, counted only if realloc moves it.
        let before = match tracked {
            // SAFETY: the block is live and was zeroed at birth.
            Some((size, _)) => unsafe { markers_in(ptr, size) },
            None => 0,
        };
        // SAFETY: forwarded unchanged.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if new.is_null() {
            if let Some((size, owner)) = tracked {
                track(ptr, size, owner);
            }
            return new;
        }
        let census = if slot != 0 && COUNTERS[slot].census.load(Relaxed) {
            Some(slot)
        } else {
            tracked.map(|(_, owner)| owner)
        };
        if let Some(owner) = census.filter(|_| new_size >= MARKER.len()) {
            if new_size > layout.size() {
                // SAFETY: the tail of the new block is ours to write.
                unsafe {
                    new.add(layout.size())
                        .write_bytes(0, new_size - layout.size())
                };
            }
            track(new, new_size, owner);
        }
        if new != ptr {
            if let Some((_, owner)) = tracked {
                COUNTERS[owner].marked.fetch_add(before, Relaxed);
            }
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A copy of one slot's counters.
#[derive(Debug, Clone, Copy, Default)]
struct Snapshot {
    allocs: u64,
    reallocs: u64,
    frees: u64,
    bytes: u64,
    classes: [u64; SIZE_CLASSES.len() + 1],
    marked: u64,
    untracked: u64,
}

fn snapshot(slot: usize) -> Snapshot {
    let c = &COUNTERS[slot];
    Snapshot {
        allocs: c.allocs.load(Relaxed),
        reallocs: c.reallocs.load(Relaxed),
        frees: c.frees.load(Relaxed),
        bytes: c.bytes.load(Relaxed),
        classes: std::array::from_fn(|i| c.classes[i].load(Relaxed)),
        marked: c.marked.load(Relaxed),
        untracked: c.untracked.load(Relaxed),
    }
}

impl std::ops::Sub for Snapshot {
    type Output = Snapshot;
    fn sub(self, o: Snapshot) -> Snapshot {
        Snapshot {
            allocs: self.allocs - o.allocs,
            reallocs: self.reallocs - o.reallocs,
            frees: self.frees - o.frees,
            bytes: self.bytes - o.bytes,
            classes: std::array::from_fn(|i| self.classes[i] - o.classes[i]),
            marked: self.marked - o.marked,
            untracked: self.untracked - o.untracked,
        }
    }
}

/// Ends a census: forgets the slot's blocks, so frees stop searching.
fn end_census(slot: usize) {
    COUNTERS[slot].census.store(false, Relaxed);
    CENSUS_ACTIVE.store(false, Relaxed);
    for entry in &LIVE {
        if entry[2].load(Relaxed) == slot {
            entry[0].store(0, Relaxed);
        }
    }
}

/// Live tracked blocks of `slot` that hold the marker, and their sizes.
fn live_marked_blocks(slot: usize) -> Vec<(usize, u64)> {
    let mut found = Vec::new();
    for entry in &LIVE {
        let ptr = entry[0].load(Relaxed);
        if ptr == 0 || entry[2].load(Relaxed) != slot {
            continue;
        }
        let size = entry[1].load(Relaxed);
        // SAFETY: tracked blocks are live until freed, and the proxy thread
        // is idle (no call in flight) when this runs.
        let markers = unsafe { markers_in(ptr as *const u8, size) };
        if markers > 0 {
            found.push((size, markers));
        }
    }
    found
}

// ---------------------------------------------------------------------------
// mcphop in-process

/// mcphop on a thread of this process.
struct InProcess {
    addr: SocketAddr,
    thread: JoinHandle<()>,
}

impl InProcess {
    /// The only code that knows how to run mcphop in-process: parses `args`
    /// as the binary would, binds, and runs the loop on a new thread that
    /// counts its heap use in `slot`.
    fn start(args: &[String], slot: usize) -> InProcess {
        let args = args.to_vec();
        let (tx, rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name(format!("mcphop-{slot}"))
            .spawn(move || {
                SLOT.with(|s| s.set(slot));
                let config = match mcphop::config::parse_args(args) {
                    Ok(mcphop::config::Invocation::Run(config)) => config,
                    other => panic!("mcphop arguments: {other:?}"),
                };
                let proxy = mcphop::reactor::Proxy::bind(*config).expect("bind");
                tx.send(proxy.local_addr()).expect("report the address");
                // It stops only on SIGINT/SIGTERM, whose handlers it took
                // over for the whole process: end the process with it.
                let code = proxy.run().unwrap_or_else(|error| {
                    eprintln!("in-process mcphop stopped: {error}");
                    1
                });
                std::process::exit(code.max(1));
            })
            .expect("spawn the proxy thread");
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the proxy binds");
        InProcess { addr, thread }
    }

    /// CPU time the proxy thread has used so far.
    fn cpu_time(&self) -> Duration {
        let mut clock: libc::clockid_t = 0;
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: the thread is alive (it runs until the process exits), and
        // both calls write only to the locals passed.
        unsafe {
            if libc::pthread_getcpuclockid(self.thread.as_pthread_t(), &mut clock) != 0
                || libc::clock_gettime(clock, &mut now) != 0
            {
                return Duration::ZERO;
            }
        }
        Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
    }
}

// ---------------------------------------------------------------------------
// The client: raw keep-alive HTTP/1.1

struct Response {
    status: u16,
    session: Option<String>,
    body: Vec<u8>,
}

struct Client {
    reader: BufReader<TcpStream>,
    host: String,
    session: Option<String>,
    next_id: u64,
    request: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to mcphop");
        stream.set_nodelay(true).ok();
        stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
        Client {
            reader: BufReader::with_capacity(64 * 1024, stream),
            host: addr.to_string(),
            session: None,
            next_id: 1,
            request: Vec::with_capacity(4096),
        }
    }

    fn send(&mut self, method: &str, body: &[u8]) -> Response {
        self.request.clear();
        write!(
            self.request,
            "{method} /mcp HTTP/1.1\r\nHost: {}\r\nAccept: application/json, text/event-stream\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n",
            self.host,
            body.len()
        )
        .expect("format");
        if let Some(session) = &self.session {
            write!(
                self.request,
                "Mcp-Session-Id: {session}\r\nMcp-Protocol-Version: 2025-06-18\r\n"
            )
            .expect("format");
        }
        self.request.extend_from_slice(b"\r\n");
        self.request.extend_from_slice(body);
        self.reader
            .get_mut()
            .write_all(&self.request)
            .expect("send the request");
        self.read_response()
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read a line");
        assert!(line.ends_with('\n'), "connection closed mid-response");
        line
    }

    fn read_response(&mut self) -> Response {
        let status_line = self.line();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let (mut length, mut chunked, mut session) = (None, false, None);
        loop {
            let line = self.line();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "mcp-session-id" => session = Some(value.to_string()),
                _ => {}
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let size = usize::from_str_radix(self.line().trim(), 16).expect("chunk size");
                let start = body.len();
                body.resize(start + size, 0);
                self.reader.read_exact(&mut body[start..]).expect("chunk");
                self.line(); // CRLF after the chunk, or after the last (empty) one
                if size == 0 {
                    break;
                }
            }
        } else if let Some(length) = length {
            body.resize(length, 0);
            self.reader.read_exact(&mut body).expect("body");
        }
        Response {
            status,
            session,
            body,
        }
    }

    fn open_session(&mut self) {
        let init = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"per_call","version":"0"}}}"#;
        let response = self.send("POST", init);
        assert_eq!(response.status, 200, "initialize");
        self.session = Some(response.session.expect("an Mcp-Session-Id"));
        let initialized = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        assert_eq!(self.send("POST", initialized).status, 202, "initialized");
    }

    /// One tools/call of `echo`; checks that the answer carries its id and
    /// the whole payload.
    fn call(&mut self, payload: &str) {
        let id = self.next_id;
        self.next_id += 1;
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"{payload}"}}}}}}"#
        );
        let response = self.send("POST", body.as_bytes());
        assert_eq!(response.status, 200, "tools/call");
        let text = String::from_utf8_lossy(&response.body);
        assert!(
            text.contains(payload)
                && (text.contains(&format!("\"id\":{id},"))
                    || text.contains(&format!("\"id\":{id}}}"))),
            "unexpected answer to call {id}: {text}"
        );
    }

    fn close_session(&mut self) {
        let response = self.send("DELETE", b"");
        assert!(response.status < 300, "DELETE answered {}", response.status);
    }
}

// ---------------------------------------------------------------------------
// The upstreams

/// `MCPHOP_BENCH_SERVER`, else `bench_server` of this bench's profile
/// (target/<profile>/examples), else of the other profile. `cargo test`
/// builds the debug one; `cargo test --bench per_call` and `cargo bench` do
/// not build examples.
fn bench_server() -> PathBuf {
    if let Some(path) = std::env::var_os("MCPHOP_BENCH_SERVER") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("own path");
    // target/<profile>/deps/per_call-HASH
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let target = profile_dir.parent().expect("target");
    let candidates = [
        profile_dir.join("examples/bench_server"),
        target.join("release/examples/bench_server"),
        target.join("debug/examples/bench_server"),
    ];
    candidates
        .iter()
        .find(|path| path.exists())
        .unwrap_or_else(|| {
            panic!(
                "{} is missing: build it first (cargo build --release --examples), \
                 or set MCPHOP_BENCH_SERVER",
                candidates[0].display()
            )
        })
        .clone()
}

/// `bench_server --http 0`, and the port it printed.
fn start_http_upstream(server: &PathBuf) -> (Child, u16) {
    let mut child = Command::new(server)
        .args(["--http", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start bench_server --http");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("bench_server prints its port");
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line from bench_server: {line:?}"));
    (child, port)
}

// ---------------------------------------------------------------------------
// The measurement

struct Plan {
    warmup: usize,
    calls: usize,
    census_calls: usize,
}

fn payload() -> String {
    let mut payload = String::from_utf8(MARKER.to_vec()).expect("ASCII marker");
    while payload.len() < PAYLOAD_BYTES {
        payload.push((b'a' + (payload.len() % 26) as u8) as char);
    }
    payload
}

fn per_call(total: u64, calls: usize) -> f64 {
    total as f64 / calls as f64
}

/// Runs one pass: a fresh in-process mcphop in `slot`, one session, warm-up,
/// then `calls` calls; returns the slot's counters over the calls, the
/// census slot's long-lived blocks holding the payload after them, the wall
/// time and the proxy thread's CPU time. The proxy thread stays, idle.
fn pass(
    args: &[String],
    slot: usize,
    warmup: usize,
    calls: usize,
) -> (Snapshot, Vec<(usize, u64)>, Duration, Duration) {
    let proxy = InProcess::start(args, slot);
    let payload = payload();
    let mut client = Client::connect(proxy.addr);
    client.open_session();
    for _ in 0..warmup {
        client.call(&payload);
    }
    let (counters, cpu, started) = (snapshot(slot), proxy.cpu_time(), Instant::now());
    for _ in 0..calls {
        client.call(&payload);
    }
    let wall = started.elapsed();
    let (cpu, counters) = (proxy.cpu_time() - cpu, snapshot(slot) - counters);
    // The proxy is idle now (no call in flight): its long-lived blocks can
    // be read before the session and the connection end.
    thread::sleep(Duration::from_millis(100));
    let live = live_marked_blocks(slot);
    client.close_session();
    (counters, live, wall, cpu)
}

fn measure(label: &str, args: &[String], slots: (usize, usize), plan: &Plan) {
    let (counters, _, wall, cpu) = pass(args, slots.0, plan.warmup, plan.calls);
    let n = plan.calls;
    println!("  {label}, 1 session, {n} calls:");
    println!(
        "    heap per call: {:.2} allocations, {:.2} reallocations, {:.2} frees, {:.0} bytes allocated",
        per_call(counters.allocs, n),
        per_call(counters.reallocs, n),
        per_call(counters.frees, n),
        per_call(counters.bytes, n),
    );
    let classes: Vec<String> = counters
        .classes
        .iter()
        .enumerate()
        .map(|(i, &count)| {
            let name = match SIZE_CLASSES.get(i) {
                Some(limit) => format!("<={limit} B"),
                None => format!(">{} B", SIZE_CLASSES[SIZE_CLASSES.len() - 1]),
            };
            format!("{name} {:.2}", per_call(count, n))
        })
        .collect();
    println!(
        "    allocations + reallocations per call by size: {}",
        classes.join(", ")
    );
    println!(
        "    time per call: {:.1} us wall ({:.0} calls/s), {:.1} us CPU on the proxy thread",
        wall.as_secs_f64() * 1e6 / n as f64,
        n as f64 / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / n as f64,
    );

    // The census: a second instance, zeroing and scanning its blocks.
    COUNTERS[slots.1].census.store(true, Relaxed);
    CENSUS_ACTIVE.store(true, Relaxed);
    let (census, live, _, _) = pass(args, slots.1, plan.warmup.min(50), plan.census_calls);
    let sizes: Vec<String> = live
        .iter()
        .map(|(size, markers)| format!("{size} B (x{markers})"))
        .collect();
    println!(
        "    payload census over {} calls: {:.2} payload copies per call in heap blocks freed or moved; \
         {} long-lived block(s) hold it at the end{}{}",
        plan.census_calls,
        per_call(census.marked, plan.census_calls),
        live.len(),
        if sizes.is_empty() {
            String::new()
        } else {
            format!(": {}", sizes.join(", "))
        },
        if census.untracked > 0 {
            format!(" ({} blocks untracked: table full)", census.untracked)
        } else {
            String::new()
        },
    );
    end_census(slots.1);
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let plan = if full {
        Plan {
            warmup: 1000,
            calls: 20_000,
            census_calls: 2000,
        }
    } else {
        Plan {
            warmup: 20,
            calls: 200,
            census_calls: 50,
        }
    };
    let server = bench_server();
    println!(
        "mcphop per-call benchmark ({}), payload {PAYLOAD_BYTES} B, upstream {}",
        if full { "full" } else { "smoke" },
        server.display()
    );
    let common = |upstream: &[String]| -> Vec<String> {
        let mut args: Vec<String> = ["--listen", "127.0.0.1:0", "--log-level", "warn"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend_from_slice(upstream);
        args
    };
    let stdio = common(&["--".to_string(), server.display().to_string()]);
    measure("stdio upstream (bench_server)", &stdio, (1, 2), &plan);

    let (mut http_server, port) = start_http_upstream(&server);
    let http = common(&[
        "--upstream".to_string(),
        format!("http://127.0.0.1:{port}/mcp"),
    ]);
    measure(
        "Streamable HTTP upstream (bench_server --http)",
        &http,
        (3, 4),
        &plan,
    );
    // The proxy threads reap any child (waitpid(-1)), so this may find it gone.
    let _ = http_server.kill();
    let _ = http_server.wait();
}
