//! What an HTTP message must be and what a proxy does to its head, as
//! pure functions with no I/O: [`added`] (fields added where a request
//! goes out), [`admit`] (the checks a request head passes
//! before anything acts on it) and `headers` (the RFC 9110 rewriting of
//! fields for the next hop), `cidr` (address blocks and `allow`/`deny`
//! rules) and `client_ip` (the real client behind trusted proxies), [`id`] (a
//! request's ID as carried).

pub(crate) mod added;
pub(crate) mod admit;
pub(crate) mod cidr;
pub(crate) mod client_ip;
pub(crate) mod headers;
pub(crate) mod id;
