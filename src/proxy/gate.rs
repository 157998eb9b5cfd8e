//! The route's gates, between finding the route and acting on it, in
//! nginx's phase order: the rate limits first (its preaccess phase, so
//! that a client guessing passwords is limited too), then who the client
//! is (basic auth: its access phase). A route with none costs one branch
//! ([`any`]).

use std::time::Duration;

use super::auth;
use super::request::Noted;
use crate::error::ProxyError;
use crate::router::Route;
use crate::worker::Worker;

/// Whether `route` has any gate at all.
#[inline]
pub(crate) fn any(route: &Route) -> bool {
    !route.rate_limit.is_empty() || route.basic_auth.is_some()
}

/// Runs `route`'s gates on a request: how long its rate limits make it
/// wait before it goes upstream (`mode = "delay"`), or the refusal (429,
/// 503 for a global limit without its Redis, 401).
pub(crate) async fn pass(
    w: &Worker,
    route: &Route,
    parts: &mut http::request::Parts,
    client: std::net::IpAddr,
    routed: &Noted,
) -> Result<Duration, ProxyError> {
    let wait = match route.rate_limit.is_empty() {
        true => Duration::ZERO,
        false => {
            w.limiters
                .check(&route.rate_limit, route.index, client, &parts.headers)
                .await?
        }
    };
    if let Some(p) = auth::check(route, &mut parts.headers, &routed.user)? {
        // A password this thread has not seen: hashed off the thread;
        // once right, the same check passes from this thread's cache.
        let challenge = p.challenge().clone();
        auth::verified(p).await?;
        if auth::check(route, &mut parts.headers, &routed.user)?.is_some() {
            return Err(auth::unauthorized(challenge));
        }
    }
    Ok(wait)
}
