//! The byte stream of one upstream connection: a plain TCP socket, or a
//! rustls `ClientConnection` wrapping one (an https upstream). Both are
//! `Read + Write` with the socket's non-blocking meaning, so the exchange
//! code and `edge_io`'s helpers never branch on TLS; the TLS session is
//! driven from the loop (`read_tls` / `process_new_packets` / `write_tls`),
//! with no thread and no blocking handshake.
//!
//! Edge-triggered discipline with TLS: `edge_io::read_into` stops reading
//! after a short read, taking it to mean the socket is drained. A TLS read
//! therefore returns fewer bytes than asked only once the socket said
//! `WouldBlock` (or closed): it reads records until the caller's buffer is
//! full or the socket is empty. Whatever rustls wants to send (handshake
//! messages, alerts, buffered request bytes) is written after each batch
//! of records read and before each write; what the socket does not take
//! waits for the next writable edge (`flush_tls`, called on every event of
//! a busy connection). The handshake starts with the first request bytes
//! written, so an idle pooled connection never has TLS traffic of its own
//! in flight.

use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::pool::EvictCause;

/// What opening a TLS session to an upstream takes: the shared client
/// configuration and the name the certificate must carry.
#[derive(Debug, Clone)]
pub(crate) struct TlsTarget {
    pub config: Arc<ClientConfig>,
    pub name: ServerName<'static>,
}

/// A connection's byte stream.
pub(crate) enum UpStream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

/// A TLS session over a socket.
pub(crate) struct TlsStream {
    socket: TcpStream,
    session: ClientConnection,
    /// The server's name, for errors.
    name: String,
}

impl UpStream {
    /// Starts a non-blocking connect to `addr`; with `tls`, a TLS session
    /// whose handshake goes out with the first bytes written.
    pub(crate) fn connect(addr: SocketAddr, tls: Option<&TlsTarget>) -> io::Result<UpStream> {
        let socket = TcpStream::connect(addr)?;
        let _ = socket.set_nodelay(true);
        let Some(tls) = tls else {
            return Ok(UpStream::Plain(socket));
        };
        let mut session = ClientConnection::new(tls.config.clone(), tls.name.clone())
            .map_err(|error| io::Error::other(format!("TLS setup: {error}")))?;
        // The request is written once, from the exchange: rustls holds what
        // the handshake keeps back (at most one request, bounded by
        // --max-body), so a write before the handshake ends never stalls.
        session.set_buffer_limit(None);
        Ok(UpStream::Tls(Box::new(TlsStream {
            socket,
            session,
            name: tls.name.to_str().into_owned(),
        })))
    }

    /// The socket, to register, deregister or ask about the connect.
    pub(crate) fn socket(&self) -> &TcpStream {
        match self {
            UpStream::Plain(socket) => socket,
            UpStream::Tls(tls) => &tls.socket,
        }
    }

    pub(crate) fn socket_mut(&mut self) -> &mut TcpStream {
        match self {
            UpStream::Plain(socket) => socket,
            UpStream::Tls(tls) => &mut tls.socket,
        }
    }

    /// Writes what TLS has queued (handshake messages, records of request
    /// bytes) while the socket takes it. `WouldBlock` is no error: the next
    /// writable edge calls this again.
    pub(crate) fn flush_tls(&mut self) -> io::Result<()> {
        match self {
            UpStream::Plain(_) => Ok(()),
            UpStream::Tls(tls) => tls.flush_records().map(|_| ()),
        }
    }

    /// Looks at an idle connection that became readable (or is about to be
    /// lent): `None` when nothing is wrong and the socket is drained, or
    /// why it must go. A TLS connection consumes the records that came
    /// (session tickets are fine; a close or application bytes are not).
    pub(crate) fn idle_check(&mut self) -> Option<EvictCause> {
        match self {
            UpStream::Plain(socket) => {
                let mut byte = [0u8; 1];
                loop {
                    return match socket.peek(&mut byte) {
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => None,
                        Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                        Ok(0) => Some(EvictCause::PeerClosed),
                        Ok(_) => Some(EvictCause::UnexpectedData),
                        Err(_) => Some(EvictCause::Error),
                    };
                }
            }
            UpStream::Tls(tls) => tls.idle_check(),
        }
    }
}

impl TlsStream {
    /// Writes queued TLS records; true when all went out.
    fn flush_records(&mut self) -> io::Result<bool> {
        while self.session.wants_write() {
            match self.session.write_tls(&mut self.socket) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(true)
    }

    /// Processes the records read; a TLS failure (a certificate refused, an
    /// alert) is an error naming the peer.
    fn process(&mut self) -> io::Result<()> {
        if let Err(error) = self.session.process_new_packets() {
            // The alert rustls queued goes out if it can.
            let _ = self.flush_records();
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("TLS with {}: {error}", self.name),
            ));
        }
        self.flush_records().map(|_| ())
    }

    fn idle_check(&mut self) -> Option<EvictCause> {
        loop {
            match self.session.read_tls(&mut self.socket) {
                Ok(0) => return Some(EvictCause::PeerClosed),
                Ok(_) => {
                    if self.process().is_err() {
                        return Some(EvictCause::Error);
                    }
                    let state = match self.session.process_new_packets() {
                        Ok(state) => state,
                        Err(_) => return Some(EvictCause::Error),
                    };
                    if state.peer_has_closed() {
                        return Some(EvictCause::PeerClosed);
                    }
                    if state.plaintext_bytes_to_read() > 0 {
                        return Some(EvictCause::UnexpectedData);
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return None,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Some(EvictCause::Error),
            }
        }
    }
}

impl Read for UpStream {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self {
            UpStream::Plain(socket) => socket.read(buffer),
            UpStream::Tls(tls) => tls.read(buffer),
        }
    }
}

impl Read for TlsStream {
    /// Plaintext until `buffer` is full or the socket would block: a short
    /// read means the socket is drained, as `read_into` expects.
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        loop {
            let Some(room) = buffer.get_mut(filled..).filter(|room| !room.is_empty()) else {
                return Ok(filled);
            };
            match self.session.reader().read(room) {
                // A close_notify: the end of the stream.
                Ok(0) => return Ok(filled),
                Ok(count) => {
                    filled += count;
                    continue;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                // The socket closed without a close_notify: an end all the
                // same (the HTTP decoder knows whether the response was
                // complete).
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(filled),
                Err(error) => return Err(error),
            }
            match self.session.read_tls(&mut self.socket) {
                Ok(_) => self.process()?,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    return if filled > 0 { Ok(filled) } else { Err(error) };
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }
}

impl Write for UpStream {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buffer)])
    }

    fn write_vectored(&mut self, buffers: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            UpStream::Plain(socket) => socket.write_vectored(buffers),
            UpStream::Tls(tls) => {
                // Records still queued go first; while the socket is full,
                // no more plaintext is taken.
                if !tls.flush_records()? {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let taken = tls.session.writer().write_vectored(buffers)?;
                let offered: usize = buffers.iter().map(|buffer| buffer.len()).sum();
                if taken == 0 && offered > 0 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                // What the socket does not take now leaves on the next
                // writable edge (`flush_tls`).
                tls.flush_records()?;
                Ok(taken)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_tls()
    }
}
