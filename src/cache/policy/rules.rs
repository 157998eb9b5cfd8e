//! The cache's settings that RFC 9111 leaves to the implementation, as
//! pure data (built by the config from the route's cache section).

use std::time::Duration;

use http::header::HeaderName;

/// What to do with a response's `Set-Cookie` (a shared cache must not
/// hand one client's cookie to another): the config's own choice.
pub(crate) use crate::config::cache::SetCookie;

/// The cache's settings that the RFC leaves open (pure data, built from
/// the config).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Rules {
    /// The targeted field obeyed instead of `Cache-Control` when present
    /// (RFC 9213 §2.2), e.g. `CDN-Cache-Control`.
    pub(crate) targeted: Option<HeaderName>,
    /// What a `Set-Cookie` does to storing.
    pub(crate) set_cookie: SetCookie,
    /// The heuristic freshness as a fraction of the time since
    /// `Last-Modified` (RFC 9111 §4.2.2 suggests 10%).
    pub(crate) heuristic_fraction: f32,
    /// The greatest heuristic freshness.
    pub(crate) heuristic_max: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            targeted: Some(HeaderName::from_static("cdn-cache-control")),
            set_cookie: SetCookie::NoStore,
            heuristic_fraction: 0.1,
            heuristic_max: Duration::from_secs(86400),
        }
    }
}
