//! Where a core input came from (`Origin`): the client connection whose
//! request is being handled or whose stream becomes ready (`ClientRef`),
//! and its request; what a core's `Reply` and `StartStream` refer to.

use crate::client::ConnKey;
use crate::http::request::Request;

/// A client connection a core's actions may answer.
#[derive(Debug, Clone, Copy)]
pub(super) struct ClientRef {
    pub key: ConnKey,
    pub keep_alive: bool,
    pub http11: bool,
}

impl ClientRef {
    pub fn of(key: ConnKey, request: &Request) -> ClientRef {
        ClientRef {
            key,
            keep_alive: request.keep_alive,
            http11: request.minor_version >= 1,
        }
    }
}

/// Where a core input came from: what `Reply` and `StartStream` refer to.
#[derive(Clone, Copy)]
pub(super) struct Origin<'a> {
    /// The client whose request is being handled, or whose POST the stream
    /// that becomes ready answers.
    pub client: Option<ClientRef>,
    /// That client's request, for its body and forwarded headers.
    pub request: Option<&'a Request>,
}

impl<'a> Origin<'a> {
    /// No client: the upstream, a timer, or mcphop's own decision.
    pub const NONE: Origin<'static> = Origin {
        client: None,
        request: None,
    };

    pub fn request(client: ClientRef, request: &'a Request) -> Origin<'a> {
        Origin {
            client: Some(client),
            request: Some(request),
        }
    }

    /// Messages of a client whose one connection `carrier` carries every
    /// stream of its session (a legacy SSE stream, mcphop's stdout), with
    /// the request that brought them, if one did.
    pub fn carried(carrier: ConnKey, request: Option<&'a Request>) -> Origin<'a> {
        let client = ClientRef {
            key: carrier,
            keep_alive: true,
            http11: true,
        };
        Origin {
            client: Some(client),
            request,
        }
    }

    pub fn client(client: Option<ClientRef>) -> Origin<'static> {
        Origin {
            client,
            request: None,
        }
    }
}
