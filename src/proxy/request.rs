//! The request phase: the checks of [`crate::message::admit`], the 421 of
//! a TLS connection asked for another host, the route and what it answers
//! itself, the body limit, the path rewrite, and the head rewritten for the
//! upstream hop.

use std::cell::Cell;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, Uri, Version};
use hyper::body::Incoming;

use super::synthetic::{https_redirect, local_response};

use super::response_body::ProxyBody;
use crate::config::HashKey;
use crate::downstream::state::{ConnCtx, TlsInfo};
use crate::error::ProxyError;
use crate::message::admit::Authority;
use crate::message::headers::{
    forwarded_for, join_cookies, strip_found, trailer_fields, via, Found, HTTP, HTTPS,
    X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO,
};
use crate::router::{Action, Route, UpstreamHost};
use crate::upstream::balance::hash64;
use crate::worker::Worker;

/// The checks of [`crate::message::admit`], before anything else looks at the
/// request: its one authority, its framing, its field names.
pub(crate) fn admit(
    ctx: &ConnCtx,
    parts: &mut http::request::Parts,
    found: Found,
) -> Result<Option<crate::message::admit::Authority>, ProxyError> {
    if found.transfer_encoding {
        crate::message::admit::transfer_codings(
            parts.headers.get_all(header::TRANSFER_ENCODING).iter(),
        )?;
    }
    let authority = crate::message::admit::authority(parts)?;
    if found.underscore
        && crate::message::admit::underscores(&mut parts.headers, ctx.underscores)?
        && !ctx.state.underscores_dropped.replace(true)
    {
        tracing::debug!(client = %ctx.client, "dropped request fields whose names have underscores (underscores_in_headers)");
    }
    Ok(authority)
}

/// The hash of what a hashing group hashes on (a missing header or cookie
/// hashes as empty: such requests share one server).
fn request_key(key: &HashKey, client: SocketAddr, headers: &HeaderMap) -> u64 {
    match key {
        HashKey::ClientIp => hash64(client.ip()),
        HashKey::Header(name) => hash64(headers.get(name).map_or(&b""[..], HeaderValue::as_bytes)),
        HashKey::Cookie(name) => {
            let value = crate::message::headers::cookie(headers, name).unwrap_or("");
            hash64(value.as_bytes())
        }
    }
}

/// RFC 9110 §15.5.20: a request on a TLS connection for a host other than
/// the one the connection was set up for gets 421, unless the certificate
/// that answered covers that host too (HTTP/2 connection reuse, RFC 9113
/// §9.1.1). Connections without SNI are not checked.
fn check_sni(
    tls: &TlsInfo,
    authority: Option<&crate::message::admit::Authority>,
) -> Result<(), ProxyError> {
    let Some(sni) = &tls.sni else { return Ok(()) };
    let Some(authority) = authority else {
        return Ok(());
    };
    let name = authority.host();
    if name.eq_ignore_ascii_case(sni) || tls.certs.covers(tls.cert, name) {
        return Ok(());
    }
    Err(ProxyError::Misdirected {
        host: name.to_string(),
        sni: sni.to_string(),
    })
}

/// Rewrites the request head for the upstream hop; `true` for an upgrade
/// request (see [`crate::proxy::tunnel`]), which keeps `Upgrade` and
/// `Connection: upgrade`. `chunked`: the body streams with no declared
/// length (and so may end with trailers).
pub(crate) fn prepare_request(
    parts: &mut http::request::Parts,
    ctx: &ConnCtx,
    authority: Option<&crate::message::admit::Authority>,
    host_mode: &UpstreamHost,
    chunked: bool,
    found: Found,
) -> bool {
    let http11 = parts.version == Version::HTTP_11;
    // Origin-form target (the authority of an absolute-form or HTTP/2
    // target is the request's authority, below).
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let pq = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        parts.uri = Uri::from(pq);
    }
    let received = parts.version;
    parts.version = Version::HTTP_11;
    if received == Version::HTTP_2 {
        join_cookies(&mut parts.headers);
    }

    let h = &mut parts.headers;
    let upgrade =
        (http11 && found.upgrade && found.connection && crate::message::headers::wants_upgrade(h))
            .then(|| {
                h.get_all(header::UPGRADE)
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
            });
    let trailers = found
        .hop
        .then(|| trailer_fields(h, chunked, &mut parts.extensions));
    strip_found(h, found);
    if let Some(Some(t)) = trailers {
        h.insert(header::TRAILER, t);
    }
    let is_upgrade = upgrade.is_some();
    if let Some(upgrade) = upgrade {
        crate::message::headers::keep_upgrade(h, upgrade);
    }
    if found.expect {
        h.remove(header::EXPECT);
    }
    h.reserve(4);

    let xff = match found.forwarded_for {
        false => ctx.client_ip.clone(),
        true => forwarded_for(h, &ctx.client_ip),
    };
    h.insert(X_FORWARDED_FOR.clone(), xff);
    h.insert(
        X_FORWARDED_PROTO.clone(),
        if ctx.tls.is_some() { HTTPS } else { HTTP },
    );
    if let Some((name, value)) = ctx.tls.as_ref().and_then(|t| t.subject.as_ref()) {
        // Only the handshake may say who the client is.
        h.remove(name);
        if let Some(v) = value {
            h.insert(name.clone(), v.clone());
        }
    }
    match authority {
        Some(a) => {
            // Already so when it came unchanged from the one Host field.
            if !a.is_host_field() {
                h.insert(header::HOST, a.header().clone());
            }
            h.insert(X_FORWARDED_HOST.clone(), a.header().clone());
        }
        None => {
            // The server's authority goes as Host (see `forward`); no
            // client's word on the host passes.
            h.remove(header::HOST);
            h.remove(&X_FORWARDED_HOST);
        }
    }
    h.append(header::VIA, via(received));
    if let UpstreamHost::Fixed(v) = host_mode {
        h.insert(header::HOST, v.clone());
    }
    is_upgrade
}

/// What the route phase found, for the request's log line: the route
/// (config index) and the user basic auth let in; and the fields the
/// request adds where it goes out.
#[derive(Default)]
pub(crate) struct Noted<'c> {
    /// The fields added where the request goes out (its ID, its trace
    /// context).
    pub(crate) added: super::added::Added<'c>,
    pub(crate) route: Cell<Option<usize>>,
    pub(crate) user: Cell<Option<std::sync::Arc<str>>>,
    /// The response's compression, when its route or listener has one.
    pub(crate) compress: Cell<Option<super::compress::Compression>>,
    /// What the cache's response phase needs (a route with `cache`).
    pub(crate) cache: Cell<Option<Box<super::cache::Plan>>>,
}

/// Notes the compression of the request with head `parts` on `route`
/// (the route's, else the listener's).
pub(crate) fn note_compression(
    ctx: &ConnCtx,
    w: &Worker,
    route: &Route,
    parts: &http::request::Parts,
    routed: &Noted<'_>,
) {
    let config = route.compress.as_ref().or_else(|| {
        w.config
            .listeners
            .get(ctx.index.get())
            .and_then(|l| l.compress.as_ref())
    });
    if let Some(config) = config {
        routed.compress.set(Some(super::compress::Compression {
            config: config.clone(),
            coding: crate::compress::negotiate(&parts.headers, &config.algorithms),
            method: parts.method.clone(),
        }));
    }
}

/// The route a request found, or the listener's own answer.
/// (Returned once and matched at once: boxing the larger variant would
/// only add an allocation.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum Matched<'w> {
    Route(&'w Route),
    /// The listener's HTTPS redirect or an ACME HTTP-01 answer (no route
    /// is looked at).
    Listener(Response<ProxyBody>),
}

/// What a route does with a request that passed its gates (matched at
/// once, as [`Matched`]).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Routed {
    /// Upstream, to this group.
    Proxy(usize),
    /// Answered here (a redirect, a fixed response).
    Local(Response<ProxyBody>),
}

/// The request's route, and what stops it before the route's gates: an
/// ACME HTTP-01 validation on a plain listener, the listener's HTTPS
/// redirect, the 421 of a TLS connection asked for
/// another host, no route (404), the route's `access` rules on `client`
/// (403).
pub(crate) fn find<'w>(
    ctx: &ConnCtx,
    w: &'w Worker,
    parts: &http::request::Parts,
    authority: Option<&Authority>,
    client: SocketAddr,
    routed: &Noted<'_>,
) -> Result<Matched<'w>, ProxyError> {
    if let Some(acme) = w.acme.as_deref().filter(|_| ctx.tls.is_none()) {
        if let Some(token) = parts.uri.path().strip_prefix(crate::acme::HTTP01_PREFIX) {
            return Ok(Matched::Listener(super::synthetic::acme_http01(
                acme.http01(token).as_deref(),
                parts,
            )));
        }
    }
    if let Some(port) = ctx.redirect_https {
        return Ok(Matched::Listener(https_redirect(authority, port, parts)));
    }
    if let Some(tls) = &ctx.tls {
        check_sni(tls, authority)?;
    }
    let route = w
        .router
        .find(
            authority.map(crate::message::admit::Authority::as_bytes),
            parts.uri.path(),
            &parts.method,
            &parts.headers,
        )
        .ok_or(ProxyError::NoRoute)?;
    routed.route.set(Some(route.index));
    if let Some(access) = &route.access {
        if !access.allows(client.ip()) {
            return Err(ProxyError::Forbidden(client.ip()));
        }
    }
    Ok(Matched::Route(route))
}

/// What the route does with a request its gates let through: its own
/// answers, or the upstream group once a declared body is within the
/// route's limit (413) and the path is rewritten.
pub(crate) fn act(
    ctx: &ConnCtx,
    route: &Route,
    parts: &mut http::request::Parts,
    authority: Option<&Authority>,
    body: &Incoming,
) -> Result<Routed, ProxyError> {
    let group = match &route.action {
        Action::Proxy(group) => *group,
        // What no file answered (`static_files.rs`).
        Action::Static(files) => files.upstream.ok_or(ProxyError::NoRoute)?,
        Action::Redirect { status, location } => {
            let scheme = if ctx.tls.is_some() { "https" } else { "http" };
            let host = authority.map_or("", crate::message::admit::Authority::as_str);
            let target = location.expand(scheme, host, parts.uri.path(), parts.uri.query());
            return Ok(Routed::Local(local_response(
                *status,
                Some(target),
                &HeaderMap::new(),
                Bytes::new(),
                route,
            )));
        }
        Action::Respond {
            status,
            headers,
            body,
        } => {
            return Ok(Routed::Local(local_response(
                *status,
                None,
                headers,
                body.clone(),
                route,
            )));
        }
    };

    if let (Some(limit), Some(len)) = (
        route.max_body_bytes,
        http_body::Body::size_hint(body).exact(),
    ) {
        if len > limit {
            return Err(ProxyError::BodyTooLarge { limit });
        }
    }

    if let Some(path) = route.rewrite_path(parts.uri.path()) {
        let pq = match parts.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let pq =
            http::uri::PathAndQuery::from_maybe_shared(pq).map_err(|_| ProxyError::BadRewrite)?;
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.path_and_query = Some(pq);
        parts.uri = Uri::from_parts(uri).map_err(|_| ProxyError::BadRewrite)?;
    }

    Ok(Routed::Proxy(group))
}

/// What the forward phase needs to know of a prepared request.
pub(crate) struct Plan {
    /// The balancer's hash of the request, for hashing groups.
    pub(crate) key: Option<u64>,
    /// An upgrade (WebSocket...): a connection of its own, no retry.
    pub(crate) upgrade: bool,
    /// Send the server's authority as `Host`.
    pub(crate) server_host: bool,
    /// The `Sec-WebSocket-Key` sent for an HTTP/2 WebSocket, whose accept
    /// is checked.
    pub(crate) ws_key: Option<HeaderValue>,
}

/// Rewrites the head for the upstream hop (see [`prepare_request`]), adds
/// the route's request fields, and hashes the request for its balancer.
#[allow(clippy::too_many_arguments)]
pub(crate) fn prepare(
    ctx: &ConnCtx,
    w: &Worker,
    parts: &mut http::request::Parts,
    authority: Option<&Authority>,
    client: SocketAddr,
    route: &Route,
    group: usize,
    body: &Incoming,
    found: Found,
    h2_websocket: bool,
) -> Result<Plan, ProxyError> {
    let balancer = w.pool.balancer(group);
    let key = balancer
        .hash_key()
        .map(|k| request_key(k, client, &parts.headers));

    let chunked =
        !http_body::Body::is_end_stream(body) && http_body::Body::size_hint(body).exact().is_none();
    let mut upgrade = prepare_request(parts, ctx, authority, &route.upstream_host, chunked, found);
    // No authority of the client's to send: the server's goes instead.
    let server_host = route.upstream_host == UpstreamHost::Server
        || (authority.is_none() && route.upstream_host == UpstreamHost::Client);
    let ws_key = if h2_websocket {
        upgrade = true;
        Some(crate::proxy::tunnel::to_h1_websocket(&mut parts.headers)?)
    } else {
        None
    };
    route.request_headers.apply(&mut parts.headers);

    Ok(Plan {
        key,
        upgrade,
        server_host,
        ws_key,
    })
}
