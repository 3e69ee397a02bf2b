//! Signals as readable bytes: SIGINT/SIGTERM, SIGCHLD and SIGHUP are each
//! turned into writes on a socket pair (signal-hook's pipe), whose read end
//! the loop polls like any other source (`SignalPipes`); and mcphop's own
//! stdin and stdout as the stdio front door's transport.

use std::io::{self, Read};
use std::os::unix::net::UnixStream as StdUnixStream;

use mio::net::UnixStream;
use mio::{Interest, Registry};

use crate::token::Source;

/// The signal pipes the loop polls, each registered under its own token.
pub(super) struct SignalPipes {
    /// SIGINT and SIGTERM (`Source::ShutdownSignal`).
    pub(super) shutdown: UnixStream,
    /// SIGCHLD (`Source::ChildSignal`).
    pub(super) child: UnixStream,
    /// SIGHUP (`Source::ReloadSignal`): re-read what can be re-read.
    pub(super) reload: UnixStream,
}

impl SignalPipes {
    /// Installs the handlers and registers the pipes' read ends.
    pub(super) fn register(registry: &Registry) -> io::Result<SignalPipes> {
        let mut pipes = SignalPipes {
            shutdown: signal_pipe(&[libc::SIGINT, libc::SIGTERM])?,
            child: signal_pipe(&[libc::SIGCHLD])?,
            reload: signal_pipe(&[libc::SIGHUP])?,
        };
        for (pipe, source) in [
            (&mut pipes.shutdown, Source::ShutdownSignal),
            (&mut pipes.child, Source::ChildSignal),
            (&mut pipes.reload, Source::ReloadSignal),
        ] {
            registry.register(pipe, source.token(), Interest::READABLE)?;
        }
        Ok(pipes)
    }
}

/// A pipe that turns the given signals into readable bytes.
fn signal_pipe(signals: &[libc::c_int]) -> io::Result<UnixStream> {
    let (read_end, write_end) = StdUnixStream::pair()?;
    read_end.set_nonblocking(true)?;
    write_end.set_nonblocking(true)?;
    for &signal in signals {
        signal_hook::low_level::pipe::register(signal, write_end.try_clone()?)?;
    }
    Ok(UnixStream::from_std(read_end))
}

/// Reads everything a signal pipe holds: the bytes only say "a signal came".
pub(super) fn drain_signal_pipe(pipe: &mut UnixStream) -> usize {
    let mut buffer = [0u8; 64];
    let mut total = 0;
    loop {
        match pipe.read(&mut buffer) {
            Ok(0) => return total,
            Ok(count) => total += count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return total,
        }
    }
}

/// mcphop's own stdin and stdout as a non-blocking client transport (the
/// stdio front door). They must be pipes or terminals: epoll refuses
/// regular files.
pub(super) fn stdio_transport() -> io::Result<crate::client::Transport> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: fds 0 and 1 are open for the process's life and nothing else
    // in mcphop reads stdin or writes stdout (logs go to stderr).
    let (input, output) = unsafe { (OwnedFd::from_raw_fd(0), OwnedFd::from_raw_fd(1)) };
    let input = mio::unix::pipe::Receiver::from(input);
    let output = mio::unix::pipe::Sender::from(output);
    input.set_nonblocking(true)?;
    output.set_nonblocking(true)?;
    Ok(crate::client::Transport::Stdio { input, output })
}
