//! Poll tokens: which source an event is for. A token packs a slab index with
//! the kind of end it names (a client socket, a child's stdin, stdout or
//! stderr, an upstream socket), so one `usize` leads straight to the entry
//! without a lookup table. It has no room for the entry's generation: the
//! reactor takes the key of whatever lives at the index now
//! (`Arena::key_at`), so a stale event only sets readiness flags on the slot's
//! new occupant, which is harmless.

use mio::Token;

/// Bits of a token that name the kind of end.
const KIND_BITS: u32 = 3;
const KIND_MASK: usize = (1 << KIND_BITS) - 1;

const KIND_FIXED: usize = 0;
const KIND_CLIENT: usize = 1;
const KIND_CHILD_STDIN: usize = 2;
const KIND_CHILD_STDOUT: usize = 3;
const KIND_CHILD_STDERR: usize = 4;
const KIND_UPSTREAM: usize = 5;
const KIND_ADMIN: usize = 6;

/// Bits of an upstream socket's index that name its server.
const SERVER_BITS: u32 = 6;
const SERVER_MASK: usize = (1 << SERVER_BITS) - 1;

const FIXED_LISTENER: usize = 0;
const FIXED_SHUTDOWN_SIGNAL: usize = 1;
const FIXED_CHILD_SIGNAL: usize = 2;
const FIXED_ADMIN_LISTENER: usize = 3;
const FIXED_HEALTH_WAKER: usize = 4;
const FIXED_RELOAD_SIGNAL: usize = 5;
const FIXED_KEY_FETCH: usize = 6;

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The listening socket.
    Listener,
    /// SIGINT or SIGTERM arrived.
    ShutdownSignal,
    /// SIGCHLD arrived: some child changed state.
    ChildSignal,
    /// SIGHUP arrived: re-read the token file and the config file.
    ReloadSignal,
    /// A client connection, by its slab key.
    Client(usize),
    /// A session's child stdin, by the session's slab key.
    ChildStdin(usize),
    /// A session's child stdout.
    ChildStdout(usize),
    /// A session's child stderr.
    ChildStderr(usize),
    /// A connection to an HTTP upstream: its server's number (below
    /// `config::MAX_SERVERS`) and its slab index in that server's side.
    Upstream { server: usize, conn: usize },
    /// The admin endpoints' listening socket.
    AdminListener,
    /// An admin connection, by its slab key.
    Admin(usize),
    /// A health worker sent probe results.
    HealthWaker,
    /// The socket of the OAuth resource server's one fetch (metadata or
    /// key set).
    KeyFetch,
}

impl Source {
    /// The token that names this source.
    pub fn token(self) -> Token {
        let (index, kind) = match self {
            Source::Listener => (FIXED_LISTENER, KIND_FIXED),
            Source::ShutdownSignal => (FIXED_SHUTDOWN_SIGNAL, KIND_FIXED),
            Source::ChildSignal => (FIXED_CHILD_SIGNAL, KIND_FIXED),
            Source::ReloadSignal => (FIXED_RELOAD_SIGNAL, KIND_FIXED),
            Source::Client(key) => (key, KIND_CLIENT),
            Source::ChildStdin(key) => (key, KIND_CHILD_STDIN),
            Source::ChildStdout(key) => (key, KIND_CHILD_STDOUT),
            Source::ChildStderr(key) => (key, KIND_CHILD_STDERR),
            Source::Upstream { server, conn } => (
                (conn << SERVER_BITS) | (server & SERVER_MASK),
                KIND_UPSTREAM,
            ),
            Source::AdminListener => (FIXED_ADMIN_LISTENER, KIND_FIXED),
            Source::Admin(key) => (key, KIND_ADMIN),
            Source::HealthWaker => (FIXED_HEALTH_WAKER, KIND_FIXED),
            Source::KeyFetch => (FIXED_KEY_FETCH, KIND_FIXED),
        };
        Token((index << KIND_BITS) | kind)
    }

    /// The source a token names, if it names one.
    pub fn of(token: Token) -> Option<Source> {
        let index = token.0 >> KIND_BITS;
        match (token.0 & KIND_MASK, index) {
            (KIND_FIXED, FIXED_LISTENER) => Some(Source::Listener),
            (KIND_FIXED, FIXED_SHUTDOWN_SIGNAL) => Some(Source::ShutdownSignal),
            (KIND_FIXED, FIXED_CHILD_SIGNAL) => Some(Source::ChildSignal),
            (KIND_FIXED, FIXED_RELOAD_SIGNAL) => Some(Source::ReloadSignal),
            (KIND_CLIENT, key) => Some(Source::Client(key)),
            (KIND_CHILD_STDIN, key) => Some(Source::ChildStdin(key)),
            (KIND_CHILD_STDOUT, key) => Some(Source::ChildStdout(key)),
            (KIND_CHILD_STDERR, key) => Some(Source::ChildStderr(key)),
            (KIND_UPSTREAM, key) => Some(Source::Upstream {
                server: key & SERVER_MASK,
                conn: key >> SERVER_BITS,
            }),
            (KIND_FIXED, FIXED_ADMIN_LISTENER) => Some(Source::AdminListener),
            (KIND_FIXED, FIXED_HEALTH_WAKER) => Some(Source::HealthWaker),
            (KIND_FIXED, FIXED_KEY_FETCH) => Some(Source::KeyFetch),
            (KIND_ADMIN, key) => Some(Source::Admin(key)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_round_trips() {
        let sources = [
            Source::Listener,
            Source::ShutdownSignal,
            Source::ChildSignal,
            Source::ReloadSignal,
            Source::AdminListener,
            Source::HealthWaker,
            Source::KeyFetch,
            Source::Client(0),
            Source::Client(12345),
            Source::ChildStdin(7),
            Source::ChildStdout(7),
            Source::ChildStderr(usize::MAX >> KIND_BITS),
            Source::Upstream { server: 0, conn: 3 },
            Source::Upstream {
                server: 63,
                conn: 12345,
            },
        ];
        for source in sources {
            assert_eq!(Source::of(source.token()), Some(source));
        }
        assert_eq!(Source::of(Token(7)), None);
        assert_eq!(Source::of(Token((9 << KIND_BITS) | KIND_FIXED)), None);
    }
}
