//! What an HTTP message must be and what a proxy does to its head, as
//! pure functions with no I/O: [`admit`] (the checks a request head passes
//! before anything acts on it) and `headers` (the RFC 9110 rewriting of
//! fields for the next hop).

pub(crate) mod admit;
pub(crate) mod headers;
