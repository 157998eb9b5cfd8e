//! Why a request failed, and the one place that turns that into a status.
//!
//! Each variant says where the failure came from (the client, the upstream,
//! or our routing) and keeps its source typed, so the log line names the
//! real cause while the client gets a short, precise answer.

use std::net::SocketAddr;

use http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("malformed request: {0}")]
    Malformed(#[from] crate::message::admit::Malformed),
    #[error("no route matches the request's host and path")]
    NoRoute,
    #[error("client {0} is denied by the access rules")]
    Forbidden(std::net::IpAddr),
    #[error("basic auth: {reason}")]
    Unauthorized {
        /// The `WWW-Authenticate` of the 401.
        challenge: http::HeaderValue,
        reason: &'static str,
    },
    #[error("forward auth: `{}` refused the request ({})", .0.upstream, .0.status)]
    AuthDenied(Box<Denied>),
    #[error("forward auth: `{upstream}` gave no decision: {cause}")]
    AuthFailed {
        /// The route's `on_error`.
        status: StatusCode,
        upstream: String,
        cause: AuthFailure,
    },
    #[error("jwt: {reason}")]
    BadToken {
        /// The `WWW-Authenticate` of the 401.
        challenge: http::HeaderValue,
        reason: &'static str,
    },
    #[error("rate limit `{}` (key {}) exceeded: retry in {}s", .0.name, .0.key, .0.retry_after)]
    RateLimited(Box<RateLimited>),
    #[error("concurrency limit `{}` (key {}) reached: {} requests already in flight", .0.name, .0.key, .0.max)]
    ConcurrencyLimited(Box<ConcurrencyLimited>),
    #[error("rate limit `{0}`: Redis is unreachable and on_error = \"deny\"")]
    RateLimitUnavailable(std::sync::Arc<str>),
    #[error(
        "host `{host}` is not covered by the certificate of this TLS connection (SNI `{sni}`)"
    )]
    Misdirected { host: String, sni: String },
    #[error("the route's path rewrite produced an invalid target")]
    BadRewrite,
    #[error(
        "upstream group `{group}`: no server in service (all failing health checks or ejected)"
    )]
    NoServer { group: String },
    #[error("upstream {addr}: at its max_connections with max_pending requests waiting")]
    ServerFull { addr: SocketAddr },
    #[error("request body exceeds the route's limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("client request body failed: {0}")]
    ClientBody(#[source] hyper::Error),
    #[error("upstream {addr}: connect failed: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("upstream {addr}: TLS handshake failed: {source}")]
    Tls {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("upstream {addr}: connect timed out")]
    ConnectTimeout { addr: SocketAddr },
    #[error("upstream {addr}: HTTP handshake failed: {source}")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("upstream {addr}: no response head in time")]
    ResponseTimeout { addr: SocketAddr },
    #[error("HTTP/2 extended CONNECT for protocol `{0}`: only `websocket` is proxied")]
    ConnectProtocol(String),
    #[error("no random bytes for a Sec-WebSocket-Key")]
    Random,
    #[error("upstream {addr}: WebSocket handshake for an HTTP/2 client failed: {reason}")]
    WebSocket { addr: SocketAddr, reason: String },
    #[error("upstream {addr}: {source}")]
    Upstream {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
}

/// A forward-auth service's refusal, returned to the client as it came
/// (its hop-by-hop fields removed).
#[derive(Debug)]
pub struct Denied {
    /// The deciding group.
    pub upstream: String,
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
}

/// Why a forward-auth subrequest gave no decision. (Its `Display` holds
/// the whole cause: the subrequest's error is not a source of the
/// request's, so `chain` does not repeat it.)
#[derive(Debug, thiserror::Error)]
pub enum AuthFailure {
    #[error("{}", .0.chain())]
    Upstream(Box<ProxyError>),
    #[error("no decision within {0:?}")]
    Timeout(std::time::Duration),
    #[error("upstream {addr}: response body over {limit} bytes")]
    BodyTooLarge { addr: SocketAddr, limit: usize },
    #[error("upstream {addr}: response body failed: {error}")]
    Body {
        addr: SocketAddr,
        error: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A request refused by a rate limit, with what its 429 says.
#[derive(Debug)]
pub struct RateLimited {
    /// The limit's name.
    pub name: std::sync::Arc<str>,
    /// The kinds of its key parts (`client_ip`, `header+cookie`...), never
    /// their values.
    pub key: String,
    /// Whole seconds, rounded up, at least 1.
    pub retry_after: u64,
    /// `RateLimit-Policy`.
    pub policy: http::HeaderValue,
    /// `RateLimit`.
    pub state: Option<http::HeaderValue>,
}

/// A request refused by a concurrency limit: its key already has `max`
/// requests in flight.
#[derive(Debug)]
pub struct ConcurrencyLimited {
    /// The limit's name.
    pub name: std::sync::Arc<str>,
    /// The kinds of its key parts, never their values.
    pub key: String,
    pub max: u32,
}

impl ProxyError {
    /// The status the client receives.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Malformed(m) => m.status(),
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::Forbidden(_) => StatusCode::FORBIDDEN,
            ProxyError::Unauthorized { .. } | ProxyError::BadToken { .. } => {
                StatusCode::UNAUTHORIZED
            }
            // Not nginx's 503 (`limit_conn_status`'s default): the client
            // sent too many, the server is not unavailable; and a proxy in
            // front (Tidegate included) takes a 503 as the server's
            // trouble.
            ProxyError::RateLimited(_) | ProxyError::ConcurrencyLimited(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ProxyError::AuthDenied(d) => d.status,
            ProxyError::AuthFailed { status, .. } => *status,
            ProxyError::Misdirected { .. } => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BadRewrite | ProxyError::Random => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::ConnectProtocol(_) => StatusCode::NOT_IMPLEMENTED,
            ProxyError::WebSocket { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::NoServer { .. }
            | ProxyError::ServerFull { .. }
            | ProxyError::RateLimitUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::Connect { .. } | ProxyError::Tls { .. } | ProxyError::Handshake { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectTimeout { .. } | ProxyError::ResponseTimeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
        }
    }

    /// The upstream involved, for the access log.
    pub fn upstream(&self) -> Option<SocketAddr> {
        match self {
            ProxyError::Connect { addr, .. }
            | ProxyError::Tls { addr, .. }
            | ProxyError::ConnectTimeout { addr }
            | ProxyError::Handshake { addr, .. }
            | ProxyError::ResponseTimeout { addr }
            | ProxyError::Upstream { addr, .. }
            | ProxyError::WebSocket { addr, .. }
            | ProxyError::ServerFull { addr } => Some(*addr),
            _ => None,
        }
    }

    /// The whole cause chain on one line.
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut src = std::error::Error::source(self);
        // The first source is already in our Display.
        if let Some(first) = src {
            src = first.source();
        }
        while let Some(e) = src {
            s.push_str(": ");
            s.push_str(&e.to_string());
            src = e.source();
        }
        s
    }
}
