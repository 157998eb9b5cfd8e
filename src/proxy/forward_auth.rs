//! A route's `forward_auth`, the last of its gates: a subrequest to an
//! upstream group that decides whether the request goes on (nginx's
//! `auth_request`, Traefik's ForwardAuth, Envoy's HTTP `ext_authz`).
//!
//! The subrequest has the client's method and no body, goes to `path`
//! (or the client's path and query), and carries `X-Forwarded-Method`,
//! `-Uri`, `-Host`, `-Proto`, `-For` and `X-Real-IP` (the client the
//! gate knows), plus the route's `request_headers`. It goes through the
//! group's pool with the forward phase's own `send` (balancing, health,
//! passive ejection, connection reuse, the stale-connection retry),
//! under one deadline for the whole of it (`timeout`).
//!
//! A 2xx lets the request on with the decision's `response_headers`
//! (the client's own fields of those names removed first). Any other
//! answer (401, 403, a 302 to a login page, a 5xx too, as Traefik does)
//! goes back to the client as it came: status, end-to-end fields and
//! body, read whole up to [`MAX_BODY`]. No decision at all (timeout, no
//! server in service, a failed connection or a body over the limit) is
//! the route's `on_error` status with one log line naming the cause.

use std::cell::Cell;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::forward::{record, send, Busy};
use crate::body::RequestBody;
use crate::config::ForwardAuth;
use crate::downstream::state::ConnCtx;
use crate::error::{AuthFailure, Denied, ProxyError};
use crate::message::admit::Authority;
use crate::message::headers::{
    scan, strip_found, HTTP, HTTPS, VIA_VALUE, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO,
};
use crate::router::Route;
use crate::worker::Worker;

/// The most of a decision's body that is read (and of a refusal's, sent
/// on to the client); a longer one is no decision.
pub(crate) const MAX_BODY: usize = 64 * 1024;

static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The decision's status, fields and body.
type Answer = (StatusCode, HeaderMap, Bytes);

/// Asks `fa`'s group about the request: `Ok` to go on (its fields set),
/// the refusal to return, or the `on_error` failure.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn check(
    ctx: &ConnCtx,
    w: &Worker,
    route: &Route,
    fa: &ForwardAuth,
    parts: &mut http::request::Parts,
    authority: Option<&Authority>,
    client: IpAddr,
    user: &Cell<Option<Arc<str>>>,
) -> Result<(), ProxyError> {
    let req = subrequest(ctx, fa, parts, authority, client);
    let failed = |cause| ProxyError::AuthFailed {
        status: fa.on_error,
        upstream: fa.upstream.clone(),
        cause,
    };
    let (status, mut headers, body) =
        match tokio::time::timeout(fa.timeout, ask(w, route, fa, req)).await {
            Err(_) => return Err(failed(AuthFailure::Timeout(fa.timeout))),
            Ok(Err(cause)) => return Err(failed(cause)),
            Ok(Ok(answer)) => answer,
        };
    for name in &fa.response_headers {
        parts.headers.remove(name);
    }
    if !status.is_success() {
        let found = scan(&headers);
        strip_found(&mut headers, found);
        return Err(ProxyError::AuthDenied(Box::new(Denied {
            upstream: fa.upstream.clone(),
            status,
            headers,
            body,
        })));
    }
    for name in &fa.response_headers {
        for v in headers.get_all(name) {
            parts.headers.append(name.clone(), v.clone());
        }
    }
    if let Some(name) = &fa.user_header {
        let named = headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(u) = named.filter(|u| !u.is_empty()) {
            user.set(Some(Arc::from(u)));
        }
    }
    Ok(())
}

/// The subrequest's head (its `Host` is the server's, set in [`ask`]).
fn subrequest(
    ctx: &ConnCtx,
    fa: &ForwardAuth,
    parts: &http::request::Parts,
    authority: Option<&Authority>,
    client: IpAddr,
) -> Request<RequestBody> {
    let original = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let mut req = Request::new(RequestBody::empty());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = Uri::from(fa.path.clone().unwrap_or_else(|| original.clone()));
    let h = req.headers_mut();
    for name in &fa.request_headers {
        for v in parts.headers.get_all(name) {
            h.append(name.clone(), v.clone());
        }
    }
    if let Ok(m) = HeaderValue::from_str(parts.method.as_str()) {
        h.insert(X_FORWARDED_METHOD.clone(), m);
    }
    // A target's bytes are all field-value bytes.
    if let Ok(u) = HeaderValue::from_str(original.as_str()) {
        h.insert(X_FORWARDED_URI.clone(), u);
    }
    match authority {
        Some(a) => h.insert(X_FORWARDED_HOST.clone(), a.header().clone()),
        None => h.remove(&X_FORWARDED_HOST),
    };
    h.insert(
        X_FORWARDED_PROTO.clone(),
        if ctx.tls.is_some() { HTTPS } else { HTTP },
    );
    let ip = match client == ctx.client.ip() {
        true => Some(ctx.client_ip.clone()),
        false => HeaderValue::from_str(&client.to_string()).ok(),
    };
    if let Some(ip) = ip {
        h.insert(X_FORWARDED_FOR.clone(), ip.clone());
        h.insert(X_REAL_IP.clone(), ip);
    }
    h.append(header::VIA, VIA_VALUE);
    req
}

/// Sends `req` to the group's servers in the balancer's order (the next
/// one when a connection cannot be had) and reads the answer whole; the
/// connection goes back to the pool.
async fn ask(
    w: &Worker,
    route: &Route,
    fa: &ForwardAuth,
    mut req: Request<RequestBody>,
) -> Result<Answer, AuthFailure> {
    let upstream = |e| AuthFailure::Upstream(Box::new(e));
    let no_server = || ProxyError::NoServer {
        group: fa.upstream.clone(),
    };
    let servers = w
        .pool
        .order(fa.group, None)
        .ok_or_else(|| upstream(no_server()))?;
    let mut last = None;
    for server in servers {
        let addr = w.pool.addr(server);
        let busy = Busy::new(&w.pool, server);
        let _permit = match w.pool.limit(server) {
            None => None,
            Some(l) => match l.acquire(route.upstream_connect).await {
                Some(p) => Some(p),
                None => return Err(upstream(ProxyError::ServerFull { addr })),
            },
        };
        // (Tidegate's own subrequest: with `proxy_protocol`, a `LOCAL` header;
        // the client is in its X-Forwarded-For.)
        let now = tokio::time::Instant::now();
        let lease = match w
            .pool
            .checkout(server, route.upstream_connect, None, now)
            .await
        {
            Ok(l) => l,
            Err(e) => {
                // The request's one warning names the last failure.
                tracing::debug!("forward auth: {}; trying the next server", e.chain());
                record(w, server, false);
                last = Some(e);
                continue;
            }
        };
        req.headers_mut()
            .insert(header::HOST, w.pool.authority(server).clone());
        let timeouts = (
            route.upstream_connect,
            fa.timeout,
            tokio::time::Instant::now(),
        );
        let (resp, mut lease) = match send(w, lease, req, timeouts, None, None, None, None).await {
            Ok(r) => r,
            Err(e) => {
                if e.upstream().is_some() {
                    record(w, server, false);
                }
                return Err(upstream(e));
            }
        };
        record(w, server, !resp.status().is_server_error());
        let (head, body) = resp.into_parts();
        let body = lease
            .with(Limited::new(body, MAX_BODY).collect())
            .await
            .map_err(|error| match error.is::<LengthLimitError>() {
                true => AuthFailure::BodyTooLarge {
                    addr,
                    limit: MAX_BODY,
                },
                false => AuthFailure::Body { addr, error },
            })?
            .to_bytes();
        w.pool.checkin(lease, tokio::time::Instant::now());
        drop(busy);
        return Ok((head.status, head.headers, body));
    }
    Err(upstream(last.unwrap_or_else(no_server)))
}
