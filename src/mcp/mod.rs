//! The MCP side of the proxy: what a Streamable HTTP request means
//! (`endpoint`), what a legacy HTTP+SSE request means (`legacy_endpoint`),
//! where a session's messages go (`router`), and who may send them
//! (`auth`: static tokens; `oauth`, `jwt`, `jwks`: OAuth access tokens).

pub(crate) mod auth;
pub mod endpoint;
pub(crate) mod jwks;
pub(crate) mod jwt;
#[cfg(test)]
pub(crate) mod jwt_testkit;
pub mod legacy_endpoint;
pub mod limits;
pub mod oauth;
pub mod replay;
pub mod router;
pub mod tools;

/// Handshake-era protocol revisions a session may use.
pub const SUPPORTED_PROTOCOL_VERSIONS: [&str; 4] =
    ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

/// The stateless-era revision, bridged by a later version of mcphop.
pub const STATELESS_PROTOCOL_VERSION: &str = "2026-07-28";
