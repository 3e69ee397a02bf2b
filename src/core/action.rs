//! What a session core asks its driver to do. The core decides; the driver
//! (the reactor, or the test harness) carries each action out on whatever
//! carries the session: client connections and an upstream.

use crate::jsonrpc::Message;
use crate::mcp::endpoint::Reply;
use crate::mcp::replay::EventBytes;
use crate::mcp::router::StreamId;

/// The bytes of an event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Payload {
    /// Bytes the core shares with a stream's replay history (an upstream
    /// message as it was received, moved in; a recorded error; a replayed
    /// or held event): written without a copy.
    Shared(EventBytes),
    /// Bytes the core made and does not keep (the errors of a session that
    /// ends).
    Owned(Vec<u8>),
}

impl Payload {
    /// The event's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Payload::Shared(bytes) => bytes,
            Payload::Owned(bytes) => bytes,
        }
    }
}

/// One thing for the driver to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Open an SSE response for `stream` and attach it to `stream`: on the
    /// connection of the request being handled (GET, resume), or, after
    /// `SessionCore::stream_ready`, on the connection whose POST it answers.
    StartStream {
        stream: StreamId,
        /// Carries the `Mcp-Session-Id` header (the answer to `initialize`).
        session_header: bool,
        /// Opens with a priming event (a fresh stream, not a resumed one).
        priming: bool,
    },
    /// Write an event on the connection carrying `stream`; `seq` names its
    /// place (none for the errors of a session that ends).
    Event {
        stream: StreamId,
        seq: Option<u64>,
        payload: Payload,
    },
    /// End the response carrying `stream`; its connection takes its next
    /// request.
    EndStream { stream: StreamId },
    /// Answer the request being handled at once.
    Reply(Reply),
    /// Send messages upstream.
    Forward(Forward),
    /// Open the session's upstream stream for server-initiated messages
    /// (an upstream kind that has none ignores it).
    OpenUpstreamGet,
    /// The session ended: it is unreachable from now on, and its upstream is
    /// to be shut down.
    Ended { reason: String },
}

/// Messages for the upstream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Forward {
    /// Each as the bytes its sender wrote (the client's body, moved here),
    /// with its routing fields.
    pub messages: Vec<Message>,
    /// The requests among them are registered on this stream; the driver
    /// calls `SessionCore::stream_ready` when the stream may start (at once
    /// for a pipe; at the upstream's response head for HTTP).
    pub stream: Option<StreamId>,
    /// The messages are exactly the body of the request being handled, so
    /// its original bytes can travel instead of a re-encoding.
    pub whole_body: bool,
    /// The client's request waits for the upstream to take them: a pipe
    /// takes them at once (202); an HTTP upstream answers with its status.
    pub client_waits: bool,
    /// This is the session's `initialize`.
    pub initialize: bool,
}

impl Forward {
    /// Messages mcphop itself sends (a cancel), with no client waiting.
    pub(crate) fn own(message: Message) -> Forward {
        Forward {
            messages: vec![message],
            stream: None,
            whole_body: false,
            client_waits: false,
            initialize: false,
        }
    }
}
