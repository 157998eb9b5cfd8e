//! How a `[[streams]]` connection ended: the `outcome` label of
//! `tidegate_stream_sessions_total` and the status of its access-log
//! line.

/// How a `[[streams]]` connection ended; its label is
/// [`SessionEnd::label`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionEnd {
    /// Both sides closed (or one did, the other then finished).
    Closed,
    /// No byte either way for the stream's `idle_timeout`.
    IdleTimeout,
    /// A socket error (reset) on either side.
    Error,
    /// Refused by the stream's `access` rules.
    Denied,
    /// No ClientHello read: not TLS, malformed, too long or too late.
    BadHello,
    /// No SNI route took it, and the stream has no default.
    NoRoute,
    /// No server of the group could be reached (or none is in service).
    NoUpstream,
    /// The TLS handshake of a terminating stream failed.
    TlsFailed,
    /// Handed to an HTTP listener's TLS (its requests count there).
    HandedOff,
    /// Still open when shutdown's grace period ended.
    Shutdown,
}

/// Every [`SessionEnd`], in order.
pub(crate) const SESSION_ENDS: [SessionEnd; 10] = [
    SessionEnd::Closed,
    SessionEnd::IdleTimeout,
    SessionEnd::Error,
    SessionEnd::Denied,
    SessionEnd::BadHello,
    SessionEnd::NoRoute,
    SessionEnd::NoUpstream,
    SessionEnd::TlsFailed,
    SessionEnd::HandedOff,
    SessionEnd::Shutdown,
];

impl SessionEnd {
    pub(crate) fn label(self) -> &'static str {
        match self {
            SessionEnd::Closed => "closed",
            SessionEnd::IdleTimeout => "idle_timeout",
            SessionEnd::Error => "error",
            SessionEnd::Denied => "denied",
            SessionEnd::BadHello => "bad_client_hello",
            SessionEnd::NoRoute => "no_route",
            SessionEnd::NoUpstream => "no_upstream",
            SessionEnd::TlsFailed => "tls_failed",
            SessionEnd::HandedOff => "handed_off",
            SessionEnd::Shutdown => "shutdown",
        }
    }

    /// The status nginx's `stream` log gives such a session.
    pub(crate) fn status(self) -> u16 {
        match self {
            SessionEnd::Denied => 403,
            SessionEnd::BadHello | SessionEnd::NoRoute | SessionEnd::TlsFailed => 400,
            SessionEnd::NoUpstream => 502,
            _ => 200,
        }
    }
}
