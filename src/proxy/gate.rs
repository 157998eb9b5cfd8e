//! The route's gates, between finding the route and acting on it, in
//! nginx's phase order: the rate limits first (its preaccess phase, so
//! that a client guessing passwords is limited too), then the concurrency
//! limits (preaccess too, after `limit_req` as there: a request refused
//! by a rate never takes a place), then who the client is (basic auth,
//! then a JWT bearer token: its access phase), and last what another
//! service says of it (`forward_auth`: nginx's `auth_request`, also in
//! its access phase, after the cheaper checks). A route with none costs
//! one branch ([`any`]).

use std::time::Duration;

use super::request::Noted;
use super::{auth, forward_auth, jwt};
use crate::downstream::state::ConnCtx;
use crate::error::ProxyError;
use crate::message::admit::Authority;
use crate::ratelimit::concurrency::Held;
use crate::router::Route;
use crate::worker::Worker;

/// Whether `route` has any gate at all.
#[inline]
pub(crate) fn any(route: &Route) -> bool {
    !route.rate_limit.is_empty() || !route.concurrency_limit.is_empty() || asks_who(route)
}

/// Whether `route` asks who the client is (basic auth, JWT, forward
/// auth): gates that [`pass_now`] leaves to [`pass`].
#[inline]
fn asks_who(route: &Route) -> bool {
    route.basic_auth.is_some() || route.jwt.is_some() || route.forward_auth.is_some()
}

/// What a request that passed the gates carries on.
#[derive(Default)]
pub(crate) struct Passed {
    /// How long its rate limits make it wait before it goes upstream
    /// (`mode = "delay"`).
    pub(crate) wait: Duration,
    /// Its places in the route's concurrency limits: it counts as in
    /// flight until this is dropped.
    pub(crate) held: Held,
}

/// As [`pass`], at once, for a route whose gates are all decided here and
/// now: rate limits none of which is global, and concurrency limits (no
/// future made for them: most limited routes). `None`: [`pass`] it.
pub(crate) fn pass_now(
    w: &Worker,
    route: &Route,
    headers: &http::HeaderMap,
    client: std::net::IpAddr,
) -> Option<Result<Passed, ProxyError>> {
    if asks_who(route) {
        return None;
    }
    let wait = match route.rate_limit.is_empty() {
        true => Ok(Duration::ZERO),
        false => w
            .limiters
            .check_local(&route.rate_limit, route.index, client, headers)?,
    };
    Some(wait.and_then(|wait| {
        let held = concurrency(w, route, client, headers)?;
        Ok(Passed { wait, held })
    }))
}

/// The request's places in `route`'s concurrency limits, or the refusal.
/// (Inlined: most limited routes have none, and the call cost more than
/// finding that out.)
#[inline]
fn concurrency(
    w: &Worker,
    route: &Route,
    client: std::net::IpAddr,
    headers: &http::HeaderMap,
) -> Result<Held, ProxyError> {
    match route.concurrency_limit.is_empty() {
        true => Ok(Held::default()),
        false => w
            .limiters
            .concurrency
            .take(&route.concurrency_limit, route.index, client, headers)
            .map_err(ProxyError::ConcurrencyLimited),
    }
}

/// Runs `route`'s gates on a request: what it carries on with, or the
/// refusal (429, 503 for a global limit without its Redis, 401: basic
/// auth, then JWT; the forward-auth service's answer or its `on_error`).
pub(crate) async fn pass(
    ctx: &ConnCtx,
    w: &Worker,
    route: &Route,
    parts: &mut http::request::Parts,
    authority: Option<&Authority>,
    client: std::net::IpAddr,
    routed: &Noted<'_>,
) -> Result<Passed, ProxyError> {
    let wait = match route.rate_limit.is_empty() {
        true => Duration::ZERO,
        false => {
            w.limiters
                .check(&route.rate_limit, route.index, client, &parts.headers)
                .await?
        }
    };
    let held = concurrency(w, route, client, &parts.headers)?;
    // The client's Authorization, for a forward_auth that asks for it:
    // basic auth (and JWT) take it off before the subrequest is made.
    let authorization = route
        .forward_auth
        .as_ref()
        .filter(|fa| fa.request_headers.contains(&http::header::AUTHORIZATION))
        .and_then(|_| parts.headers.get(http::header::AUTHORIZATION).cloned());
    if let Some(p) = auth::check(route, &mut parts.headers, &routed.user)? {
        // A password this thread has not seen: hashed off the thread;
        // once right, the same check passes from this thread's cache.
        let challenge = p.challenge().clone();
        auth::verified(p).await?;
        if auth::check(route, &mut parts.headers, &routed.user)?.is_some() {
            return Err(auth::unauthorized(challenge));
        }
    }
    if let Some(j) = &route.jwt {
        jwt::check(j, &mut parts.headers, &routed.user).await?;
    }
    if let Some(fa) = &route.forward_auth {
        // Boxed: its state would otherwise enlarge every request's.
        let user = &routed.user;
        let restored = match authorization {
            Some(a) if !parts.headers.contains_key(http::header::AUTHORIZATION) => {
                parts.headers.insert(http::header::AUTHORIZATION, a);
                true
            }
            _ => false,
        };
        Box::pin(forward_auth::check(
            ctx, w, route, fa, parts, authority, client, user,
        ))
        .await?;
        // Still not for the upstream, unless the decision set it.
        if restored && !fa.response_headers.contains(&http::header::AUTHORIZATION) {
            parts.headers.remove(http::header::AUTHORIZATION);
        }
    }
    Ok(Passed { wait, held })
}
