//! The health workers: the only threads in mcphop. A small pool takes probe
//! jobs from a `crossbeam-channel` channel, runs each (a TCP connect, then
//! one HTTP GET whose status line, any status, means "alive"), sends the
//! result back on another channel, and wakes the loop through a
//! `mio::Waker`. Workers see only the job (an address, a host name, a path
//! and a time limit): never a session, a connection or the pool. A probe
//! sends no MCP message, so it can never create a session upstream.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{unbounded, Receiver, Sender};
use log::{debug, warn};
use mio::Waker;

use super::http_upstream::TlsTarget;
use super::servers::ServerId;
use super::{Proxy, RunState, Timer};

/// Longest status line read from a probed server.
const MAX_STATUS_LINE: usize = 1024;

/// One probe to run.
#[derive(Debug, Clone)]
pub(crate) struct ProbeJob {
    /// The server probed, handed back with the result.
    pub server: ServerId,
    pub addr: SocketAddr,
    /// The `Host` header.
    pub authority: String,
    pub path: String,
    /// The operator's static upstream headers (`--upstream-header`).
    pub headers: Vec<(String, String)>,
    /// For an https upstream: its TLS configuration and name.
    pub tls: Option<TlsTarget>,
    pub timeout: Duration,
}

/// What a probe found.
#[derive(Debug)]
pub(crate) struct ProbeResult {
    pub server: ServerId,
    /// The HTTP status it answered, or why there was none.
    pub outcome: Result<u16, String>,
    pub took: Duration,
    pub at: SystemTime,
}

/// The worker pool: jobs in, results out.
pub(crate) struct HealthWorkers {
    jobs: Option<Sender<ProbeJob>>,
    results: Receiver<ProbeResult>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl HealthWorkers {
    /// Starts `count` workers that wake the loop through `waker`.
    pub(crate) fn start(count: usize, waker: Arc<Waker>) -> io::Result<HealthWorkers> {
        let (jobs, job_queue) = unbounded::<ProbeJob>();
        let (results_out, results) = unbounded::<ProbeResult>();
        let mut threads = Vec::with_capacity(count);
        for n in 0..count {
            let job_queue = job_queue.clone();
            let results_out = results_out.clone();
            let waker = Arc::clone(&waker);
            let handle = thread::Builder::new()
                .name(format!("mcphop-health-{n}"))
                .spawn(move || {
                    // Ends when the loop drops its sender.
                    for job in job_queue.iter() {
                        let started = Instant::now();
                        let outcome = probe(&job);
                        let result = ProbeResult {
                            server: job.server,
                            outcome,
                            took: started.elapsed(),
                            at: SystemTime::now(),
                        };
                        if results_out.send(result).is_err() {
                            return;
                        }
                        if let Err(error) = waker.wake() {
                            warn!("a health worker cannot wake the loop: {error}");
                        }
                    }
                })?;
            threads.push(handle);
        }
        Ok(HealthWorkers {
            jobs: Some(jobs),
            results,
            threads,
        })
    }

    /// Hands a probe to the next free worker.
    pub(crate) fn submit(&self, job: ProbeJob) {
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(job);
        }
    }

    /// The results that came back since the last call.
    pub(crate) fn results(&self) -> impl Iterator<Item = ProbeResult> + '_ {
        self.results.try_iter()
    }
}

impl Drop for HealthWorkers {
    fn drop(&mut self) {
        // Closing the job channel ends each worker after its current probe,
        // which its timeout bounds; the loop does not wait for that (exit is
        // not delayed by a probe in flight).
        self.jobs = None;
        self.threads.clear();
    }
}

/// A server's probe timer fired: its probe goes to the workers, and the
/// next is scheduled while mcphop serves and the server is not retired.
pub(super) fn on_probe_timer(proxy: &mut Proxy, server: ServerId, now: Instant) {
    let job = proxy
        .servers
        .get_mut(server)
        .and_then(|entry| entry.upstream.probe_job(&proxy.config));
    if let (Some(workers), Some(job)) = (proxy.health_workers.as_ref(), job) {
        workers.submit(job);
    }
    let retired = proxy.servers.get(server).is_none_or(|entry| entry.retired);
    if proxy.run_state == RunState::Serving && !retired {
        let next = now + proxy.config.health_interval;
        proxy.timers.schedule(next, Timer::Probe(server));
    }
}

/// Connects, sends `GET path` and reads the status line, all within the
/// job's time limit.
fn probe(job: &ProbeJob) -> Result<u16, String> {
    let deadline = Instant::now() + job.timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(|| format!("no answer within {:?}", job.timeout))
    };
    let socket = TcpStream::connect_timeout(&job.addr, left()?)
        .map_err(|error| format!("connect to {}: {error}", job.addr))?;
    // Reads are bounded from the start: a TLS handshake reads inside the
    // first write.
    socket.timeout(left()?).map_err(|e| e.to_string())?;
    let mut socket: Box<dyn ReadWrite> = match &job.tls {
        None => Box::new(socket),
        Some(tls) => {
            let session = rustls::ClientConnection::new(tls.config.clone(), tls.name.clone())
                .map_err(|error| format!("TLS setup: {error}"))?;
            Box::new(rustls::StreamOwned::new(session, socket))
        }
    };
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: application/json, text/event-stream\r\nUser-Agent: mcphop-health\r\nConnection: close\r\n",
        job.path, job.authority
    );
    for (name, value) in &job.headers {
        if !name.contains(['\r', '\n', ':']) && !value.contains(['\r', '\n']) {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    request.push_str("\r\n");
    socket
        .write_all(request.as_bytes())
        .map_err(|error| format!("send to {}: {error}", job.addr))?;
    let mut line = Vec::with_capacity(64);
    let mut buffer = [0u8; 256];
    while !line.contains(&b'\n') {
        if line.len() > MAX_STATUS_LINE {
            return Err("the status line is too long".into());
        }
        socket.timeout(left()?).map_err(|e| e.to_string())?;
        match socket.read(&mut buffer) {
            Ok(0) => {
                return Err(format!(
                    "{} closed the connection without an answer",
                    job.addr
                ))
            }
            Ok(count) => line.extend_from_slice(&buffer[..count]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(format!("read from {}: {error}", job.addr)),
        }
    }
    let status = parse_status(&line).ok_or_else(|| "the answer is not HTTP".to_string())?;
    debug!("health probe of {}{}: {status}", job.authority, job.path);
    Ok(status)
}

/// A probe's connection: a socket, or TLS over one.
trait ReadWrite: Read + Write {
    /// Bounds each read and write from now on.
    fn timeout(&self, left: Duration) -> io::Result<()>;
}

impl ReadWrite for TcpStream {
    fn timeout(&self, left: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(left))?;
        self.set_write_timeout(Some(left))
    }
}

impl ReadWrite for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn timeout(&self, left: Duration) -> io::Result<()> {
        self.sock.timeout(left)
    }
}

/// The status code of an HTTP/1.x status line.
fn parse_status(bytes: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut parts = text.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 400 Bad Request\r\n"), Some(400));
        assert_eq!(parse_status(b"HTTP/1.0 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 2000 x\r\n"), None);
    }

    #[test]
    fn a_refused_connect_is_a_failure() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let job = ProbeJob {
            server: ServerId::at(0).unwrap(),
            addr,
            authority: addr.to_string(),
            path: "/".into(),
            headers: Vec::new(),
            tls: None,
            timeout: Duration::from_secs(1),
        };
        assert!(probe(&job).is_err());
    }
}
