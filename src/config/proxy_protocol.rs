//! A listener's `proxy_protocol`: which peers may open their connections
//! with a PROXY protocol header (v1 or v2, HAProxy's spec), whether they
//! must, and how long the header may take. As pure data; the header is
//! read in `downstream::proxy_protocol`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::message::cidr::Cidr;

/// How long a trusted peer has to send its header unless configured
/// (HAProxy and nginx wait for it as long as for a request head; a
/// load balancer sends it at once, with the connection's first bytes).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest header taken: v1 lines are at most 107 bytes; v2 headers
/// carry TLVs (a cloud load balancer's connection ID, the TLS details),
/// a few hundred bytes in practice.
pub const MAX_HEADER: usize = 4096;

/// Whether a trusted peer's connections must start with a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A connection from a trusted peer without one is closed (HAProxy's
    /// `accept-proxy`, nginx's `listen ... proxy_protocol`).
    #[default]
    Required,
    /// A trusted peer may also connect without one (its health checks,
    /// say); the peer is then the client.
    Optional,
}

/// An upstream group's `proxy_protocol`: the header version sent at the
/// start of every connection to its servers (HAProxy's `send-proxy`,
/// `send-proxy-v2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    V1,
    V2,
}

/// `proxy_protocol = { from = [...], mode = "required", timeout = "1s" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyProtocol {
    /// The peers whose header is read (the load balancers in front).
    /// Anyone else is served as a direct client: a header from them is
    /// not read, and fails as a bad request.
    pub from: Box<[Cidr]>,
    pub mode: Mode,
    /// From the accept to the header's last byte.
    #[serde(serialize_with = "super::dump::duration")]
    pub timeout: Duration,
}

impl ProxyProtocol {
    /// Whether a connection from `peer` is read for a header.
    pub fn trusts(&self, peer: std::net::IpAddr) -> bool {
        crate::message::cidr::any_contains(&self.from, peer)
    }
}
