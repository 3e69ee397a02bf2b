//! One HTTP GET run on the loop, for the OAuth resource server's documents
//! (the authorization server's metadata and its JWK Set): connect (TLS for
//! https, with the run's trusted roots), write the request, read the
//! response to its end with the sans-IO response decoder, under one
//! deadline. One fetch is in flight at a time, on its own fixed poll token
//! (`Source::KeyFetch`); the loop never blocks on it, so a slow or dead
//! issuer delays only the requests that wait for its keys.
//!
//! A host name is resolved the first time a fetch goes to it, which may
//! block for a name that is not an address; the first document's host
//! (`--auth-jwks-url`'s, or the issuer's) is resolved at start-up.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Instant;

use mio::event::Event;
use mio::{Interest, Registry};
use rustls::ClientConfig;

use crate::http::client::{self as http_client, ResponseDecoder, ResponseEvent};
use crate::http::url::{Scheme, UpstreamUrl};
use crate::token::Source;

use super::edge_io::{read_into, write_from, ReadOutcome, Readiness};
use super::http_upstream::{TlsTarget, UpStream};

/// Largest metadata or key set document read.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
const READ_CHUNK: usize = 16 * 1024;

/// A fetch's outcome: the status and body, or why there is none.
pub(super) type Fetched = Result<(u16, Vec<u8>), String>;

/// One GET in flight.
pub(super) struct KeyFetch {
    stream: UpStream,
    ready: Readiness,
    connected: bool,
    request: Vec<u8>,
    written: usize,
    decoder: ResponseDecoder,
    events: Vec<ResponseEvent>,
    status: Option<u16>,
    body: Vec<u8>,
    /// When it is given up.
    pub(super) deadline: Instant,
    /// The URL, for logs.
    pub(super) url: String,
}

/// Where hosts were resolved, so a document on a known host costs no
/// lookup on the loop.
#[derive(Debug, Default)]
pub(super) struct Resolved {
    known: Vec<((String, u16), SocketAddr)>,
}

impl Resolved {
    /// Resolves `url`'s host, remembering it.
    pub(super) fn address(&mut self, url: &UpstreamUrl) -> Result<SocketAddr, String> {
        let key = (url.host.clone(), url.port);
        if let Some((_, addr)) = self.known.iter().find(|(known, _)| *known == key) {
            return Ok(*addr);
        }
        let addr = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(|error| format!("{}: {error}", url.host))?
            .next()
            .ok_or_else(|| format!("{} has no address", url.host))?;
        self.known.push((key, addr));
        Ok(addr)
    }
}

impl KeyFetch {
    /// Starts a GET of `url`, registered under `Source::KeyFetch`.
    pub(super) fn start(
        url: &str,
        resolved: &mut Resolved,
        tls: Option<&Arc<ClientConfig>>,
        registry: &Registry,
        deadline: Instant,
    ) -> Result<KeyFetch, String> {
        let parsed = UpstreamUrl::parse(url)?;
        let addr = resolved.address(&parsed)?;
        let target = match (parsed.scheme, tls) {
            (Scheme::Http, _) => None,
            (Scheme::Https, Some(config)) => Some(TlsTarget {
                config: Arc::clone(config),
                name: crate::tls::server_name(&parsed.host)?,
            }),
            (Scheme::Https, None) => return Err("https with no TLS configuration".into()),
        };
        let mut stream =
            UpStream::connect(addr, target.as_ref()).map_err(|error| error.to_string())?;
        registry
            .register(
                stream.socket_mut(),
                Source::KeyFetch.token(),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|error| error.to_string())?;
        let mut request = Vec::new();
        http_client::write_request(
            &mut request,
            "GET",
            &parsed.target,
            &parsed.authority(),
            &[("Accept", "application/json"), ("Connection", "close")],
            b"",
        );
        Ok(KeyFetch {
            stream,
            ready: Readiness::default(),
            connected: false,
            request,
            written: 0,
            decoder: ResponseDecoder::new(http_client::DEFAULT_MAX_RESPONSE_HEAD_BYTES, false),
            events: Vec::new(),
            status: None,
            body: Vec::new(),
            deadline,
            url: url.to_string(),
        })
    }

    /// An edge on its socket: writes what is left of the request and reads
    /// what came. Some when the fetch is over.
    pub(super) fn on_event(&mut self, event: &Event) -> Option<Fetched> {
        self.ready.on_event(event);
        self.step().err().map(Err).or_else(|| self.finished())
    }

    fn step(&mut self) -> Result<(), String> {
        if !self.connected {
            let socket = self.stream.socket();
            match socket.take_error() {
                Ok(Some(error)) | Err(error) => return Err(format!("connect: {error}")),
                Ok(None) => match socket.peer_addr() {
                    Ok(_) => self.connected = true,
                    Err(error) if error.kind() == io::ErrorKind::NotConnected => return Ok(()),
                    Err(error) => return Err(format!("connect: {error}")),
                },
            }
        }
        let rest = self.request.get(self.written..).unwrap_or_default();
        let outcome = write_from(&mut self.stream, &mut self.ready, rest);
        self.written += outcome.written;
        if let Some(error) = outcome.failed {
            return Err(format!("write: {error}"));
        }
        self.stream
            .flush_tls()
            .map_err(|error| format!("write: {error}"))?;
        let mut buffer = [0; READ_CHUNK];
        loop {
            match read_into(&mut self.stream, &mut self.ready, &mut buffer) {
                ReadOutcome::Data(count) => self.decode(buffer.get(..count).unwrap_or_default())?,
                ReadOutcome::Blocked => return Ok(()),
                ReadOutcome::Eof => {
                    return self
                        .decoder
                        .eof(&mut self.events)
                        .map_err(|error| format!("response: {error:?}"))
                        .and_then(|()| self.take_events());
                }
                ReadOutcome::Failed(error) => return Err(format!("read: {error}")),
            }
            if self.decoder.is_complete() {
                return Ok(());
            }
        }
    }

    fn decode(&mut self, mut bytes: &[u8]) -> Result<(), String> {
        while !bytes.is_empty() && !self.decoder.is_complete() {
            let used = self
                .decoder
                .decode(bytes, &mut self.events)
                .map_err(|error| format!("response: {error:?}"))?;
            bytes = bytes.get(used..).unwrap_or_default();
            self.take_events()?;
            if used == 0 {
                break;
            }
        }
        Ok(())
    }

    fn take_events(&mut self) -> Result<(), String> {
        for event in self.events.drain(..) {
            match event {
                ResponseEvent::Head(head) => self.status = Some(head.status),
                ResponseEvent::Body(bytes) => {
                    if self.body.len() + bytes.len() > MAX_DOCUMENT_BYTES {
                        return Err(format!("a document over {MAX_DOCUMENT_BYTES} bytes"));
                    }
                    self.body.extend_from_slice(&bytes);
                }
                ResponseEvent::End => {}
            }
        }
        Ok(())
    }

    /// The response, once complete.
    fn finished(&mut self) -> Option<Fetched> {
        let status = self.status.filter(|_| self.decoder.is_complete())?;
        Some(Ok((status, std::mem::take(&mut self.body))))
    }

    /// Stops watching its socket; dropping it closes the socket.
    pub(super) fn close(mut self, registry: &Registry) {
        let _ = registry.deregister(self.stream.socket_mut());
    }
}
