//! HTTP/1.1, sans-IO: the request decoder (`request`) and the response
//! encoder (`response`). Bytes in, requests out; responses in, bytes out.

pub mod client;
pub mod request;
pub mod response;
pub mod url;
