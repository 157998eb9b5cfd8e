//! Proxy: one request's life, from routing to the streamed response.
//!
//! 1. route the request (404 if nothing matches);
//! 2. refuse a declared body over the route's limit (413);
//! 3. rewrite headers for the hop (RFC 9110 §7.6): drop hop-by-hop fields,
//!    add `X-Forwarded-*` and `Via`, set `Host`;
//! 4. pick a server and a pooled connection, send, and wait for the
//!    response head under `upstream_response_head`;
//! 5. rewrite the response headers and stream its body back; when the body
//!    ends, the connection returns to the pool and the access log is written.
//!
//! Every failure becomes a [`ProxyError`], mapped to its status in one
//! place, with one log line naming the cause.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;

use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use tokio::time::{sleep_until, Instant};

pub mod exchange;
pub mod tunnel;

use crate::access_log::{AccessLog, Entry};
use crate::body::{BodyProgress, RequestBody};
use crate::upstream::balance::{hash64, HashKey};

use crate::downstream::state::{ConnCtx, HeadTimer, InFlight, TlsInfo};
use crate::error::ProxyError;
use crate::message::headers::{
    forwarded_for, join_cookies, scan, strip_found, trailer_fields, via, Found, HTTP, HTTPS,
    VIA_VALUE, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO,
};

use crate::router::{Action, Route, UpstreamHost};
use crate::upstream::{Lease, Pool};
use crate::worker::Worker;
use exchange::{Exchange, ProxyBody, UpstreamBody};

/// Idle time after which a reused connection may have been closed by the
/// server's idle timer.
const STALE_RISK: Duration = Duration::from_secs(1);

const CLOSE: HeaderValue = HeaderValue::from_static("close");

/// hyper's service entry point: never fails, every error is a response.
pub async fn handle(ctx: Rc<ConnCtx>, req: Request<Incoming>) -> Response<ProxyBody> {
    let in_flight = InFlight::new(&ctx.state);
    let last = ctx.state.last_request();
    let worker = ctx.current.get();
    let (mut parts, body) = req.into_parts();
    // The fields the proxy acts on, found in one pass for the whole request.
    let found = scan(&parts.headers);
    let admitted = admit(&ctx, &mut parts, found);
    let entry = worker.log.enabled().then(|| {
        Box::new(Entry {
            start: Instant::now(),
            client: ctx.client,
            method: parts.method.clone(),
            target: parts.uri.clone(),
            version: parts.version,
            host: admitted.as_ref().ok().cloned().flatten(),
        })
    });
    let pending = Pending {
        state: &ctx.state,
        log: &worker.log,
        entry,
        armed: true,
    };
    let grpc = is_grpc(&parts.headers);
    // `forward`'s future lives directly in this one: a second async layer
    // around it would copy its whole state once more per request.
    let forwarded = match admitted {
        Ok(authority) => forward(&ctx, &worker, parts, body, authority, found).await,
        Err(e) => Err(e),
    };
    let entry = pending.done();
    let mut resp = respond(&ctx, &worker, forwarded, entry, in_flight, grpc);
    let h = resp.headers_mut();
    if let Some(hsts) = &ctx.hsts {
        if !h.contains_key(header::STRICT_TRANSPORT_SECURITY) {
            h.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
    }
    // HTTP/1.1 at `max_requests_per_connection` (HTTP/2 sent GOAWAY).
    if last && ctx.head_timer.is_some() && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        resp.headers_mut().insert(header::CONNECTION, CLOSE);
    }
    resp
}

/// A request whose response is not made yet. Dropped before
/// [`Pending::done`], the client cancelled it (an HTTP/2 reset, or its
/// connection closed): status 499 in the access log, as nginx writes, and
/// one more towards the connection's reset limit.
struct Pending<'a> {
    state: &'a crate::downstream::state::ConnState,
    log: &'a AccessLog,
    entry: Option<Box<Entry>>,
    armed: bool,
}

impl Pending<'_> {
    fn done(mut self) -> Option<Box<Entry>> {
        self.armed = false;
        self.entry.take()
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(e) = &self.entry {
            self.log.record(e, 499, 0, None, "cancelled");
        }
        self.state.client_reset();
    }
}

/// The response to send the client for what `forward` did.
fn respond(
    ctx: &Rc<ConnCtx>,
    worker: &Rc<Worker>,
    forwarded: Result<Outcome, ProxyError>,
    entry: Option<Box<Entry>>,
    in_flight: InFlight,
    grpc: bool,
) -> Response<ProxyBody> {
    match forwarded {
        Ok(Outcome::Upstream(resp, lease, route, permit, progress)) => {
            let (parts, body) = resp.into_parts();
            let status = parts.status.as_u16();
            let server = lease.server;
            let exchange = Exchange {
                worker: worker.clone(),
                lease,
                status: parts.status.as_u16(),
                entry,
                progress,
                in_flight,
                permit,
            };
            let mut resp = Response::from_parts(
                parts,
                ProxyBody::Upstream(UpstreamBody::new(body, exchange)),
            );
            // Announced trailers of a chunked body stay announced: hyper
            // writes only those.
            let chunked = http_body::Body::size_hint(resp.body()).exact().is_none();
            let h = resp.headers_mut();
            let found = scan(h);
            // `Trailer` is in the fixed hop-by-hop set: looked up only when
            // the scan saw one of that set.
            let trailer = (found.hop && chunked)
                .then(|| h.get(header::TRAILER).cloned())
                .flatten();
            strip_found(h, found);
            if let Some(t) = trailer {
                h.insert(header::TRAILER, t);
            }
            h.append(header::VIA, VIA_VALUE);
            route.response_headers.apply(h);
            if matches!(status, 429 | 503) {
                if let Some(delay) = h.get(header::RETRY_AFTER).and_then(retry_after) {
                    let (b, i) = worker.pool.locate(server);
                    b.back_off(i, Instant::now() + delay);
                    tracing::info!(upstream = %worker.pool.addr(server), status, "backing off for {delay:?} (Retry-After)");
                }
            }
            resp
        }
        Ok(Outcome::Tunnel(resp, lease, route, permit, stream)) => {
            let (resp, upstream) = crate::proxy::tunnel::switch(resp, route, stream.is_some());
            let mut tunnel = crate::proxy::tunnel::Tunnel::new(
                worker.clone(),
                lease,
                upstream,
                resp.status().as_u16(),
                entry,
                ctx.client,
                permit,
            );
            match stream {
                // HTTP/1.1: the connection becomes the tunnel once hyper
                // has written the 101.
                None => {
                    drop(in_flight);
                    *ctx.state.tunnel.borrow_mut() = Some(Box::new(tunnel));
                }
                // HTTP/2 (RFC 8441): the stream's tunnel runs as a task of
                // its own, once hyper has sent the 200 and handed the
                // stream over.
                Some(stream) => {
                    tunnel.hold(in_flight);
                    tokio::task::spawn_local(tunnel.run_h2(stream));
                }
            }
            resp
        }
        Ok(Outcome::Local(resp)) => {
            if let Some(e) = &entry {
                let bytes = http_body::Body::size_hint(resp.body()).exact().unwrap_or(0);
                worker
                    .log
                    .record(e, resp.status().as_u16(), bytes, None, "done");
            }
            resp
        }
        Err(err) => {
            let status = err.status();
            if let ProxyError::BodyTooLarge { .. } = err {
                ctx.state.linger.set(true);
            }
            tracing::warn!(client = %ctx.client, status = status.as_u16(), "{}", err.chain());
            if let Some(e) = &entry {
                worker
                    .log
                    .record(e, status.as_u16(), 0, err.upstream(), "error");
            }
            let mut resp = if grpc {
                grpc_error_response(status)
            } else {
                error_response(status)
            };
            // A head that was refused says nothing reliable about what
            // follows it on the connection.
            if ctx.head_timer.is_some() && matches!(err, ProxyError::Malformed(_)) {
                resp.headers_mut().insert(header::CONNECTION, CLOSE);
            }
            resp
        }
    }
}

/// Longest back-off a `Retry-After` can ask for.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3).
fn retry_after(v: &HeaderValue) -> Option<Duration> {
    let s = v.to_str().ok()?.trim();
    let delay = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(s)
            .ok()?
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    };
    (!delay.is_zero()).then_some(delay.min(MAX_BACKOFF))
}

/// A gRPC call (`content-type: application/grpc...`), whose client reads
/// errors from `grpc-status`, not from the HTTP status.
fn is_grpc(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The proxy's own error for a gRPC call: a trailers-only response
/// (HTTP 200, `grpc-status` and `grpc-message` in the head, empty body),
/// as gRPC clients expect of a proxy. The code follows gRPC's
/// HTTP-to-gRPC mapping: 502, 503, 504 and 429 are UNAVAILABLE (14), 404
/// UNIMPLEMENTED (12), 400 INTERNAL (13), 413 RESOURCE_EXHAUSTED (8),
/// anything else UNKNOWN (2).
pub fn grpc_error_response(status: StatusCode) -> Response<ProxyBody> {
    let code: &'static str = match status.as_u16() {
        429 | 502..=504 => "14",
        404 => "12",
        400 => "13",
        413 => "8",
        _ => "2",
    };
    let message = format!(
        "{}%20{}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("").replace(' ', "%20")
    );
    let mut resp = Response::new(ProxyBody::full(Bytes::new()));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from_static(code));
    if let Ok(v) = HeaderValue::from_str(&message) {
        h.insert("grpc-message", v);
    }
    h.insert(header::VIA, VIA_VALUE);
    resp
}

/// A short plain-text response of our own.
pub fn error_response(status: StatusCode) -> Response<ProxyBody> {
    let body = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::VIA, VIA_VALUE);
    resp
}

type Forwarded = (Response<Incoming>, Lease);

/// What became of a request.
enum Outcome<'a> {
    /// The upstream answered; its body streams on (holding the server's
    /// concurrency permit, if it has a limit).
    Upstream(
        Response<Incoming>,
        Lease,
        &'a Route,
        Option<tokio::sync::OwnedSemaphorePermit>,
        Option<Rc<BodyProgress>>,
    ),
    /// The upstream switched protocols (101): the connection (or, for an
    /// HTTP/2 WebSocket, the client's stream, whose upgrade comes last)
    /// becomes a [`crate::proxy::tunnel::Tunnel`].
    Tunnel(
        Response<Incoming>,
        Lease,
        &'a Route,
        Option<tokio::sync::OwnedSemaphorePermit>,
        Option<hyper::upgrade::OnUpgrade>,
    ),
    /// The route answered itself (redirect, fixed response).
    Local(Response<ProxyBody>),
}

/// The checks of [`crate::message::admit`], before anything else looks at the
/// request: its one authority, its framing, its field names.
fn admit(
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

async fn forward<'w>(
    ctx: &ConnCtx,
    w: &'w Worker,
    mut parts: http::request::Parts,
    body: Incoming,
    authority: Option<crate::message::admit::Authority>,
    found: Found,
) -> Result<Outcome<'w>, ProxyError> {
    // An HTTP/2 WebSocket (extended CONNECT, RFC 8441) is routed and sent
    // as the HTTP/1.1 handshake it stands for: a GET.
    let h2_ws = crate::proxy::tunnel::h2_websocket(&mut parts)?;
    if h2_ws.is_some() {
        parts.method = Method::GET;
    }

    let authority = authority.as_ref();
    if let Some(port) = ctx.redirect_https {
        return Ok(Outcome::Local(https_redirect(authority, port, &parts)));
    }
    if let Some(tls) = &ctx.tls {
        check_sni(tls, authority)?;
    }
    let scheme = if ctx.tls.is_some() { "https" } else { "http" };
    let route = w
        .router
        .find(
            authority.map(crate::message::admit::Authority::as_bytes),
            parts.uri.path(),
            &parts.method,
            &parts.headers,
        )
        .ok_or(ProxyError::NoRoute)?;
    let group = match &route.action {
        Action::Proxy(group) => *group,
        Action::Redirect { status, location } => {
            let host = authority.map_or("", crate::message::admit::Authority::as_str);
            let target = location.expand(scheme, host, parts.uri.path(), parts.uri.query());
            return Ok(Outcome::Local(local_response(
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
            return Ok(Outcome::Local(local_response(
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
        http_body::Body::size_hint(&body).exact(),
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

    let balancer = w.pool.balancer(group);
    let key = balancer
        .hash_key()
        .map(|k| request_key(k, ctx.client, &parts.headers));

    let chunked = !http_body::Body::is_end_stream(&body)
        && http_body::Body::size_hint(&body).exact().is_none();
    let mut upgrade = prepare_request(
        &mut parts,
        ctx,
        authority,
        &route.upstream_host,
        chunked,
        found,
    );
    // No authority of the client's to send: the server's goes instead.
    let server_host = route.upstream_host == UpstreamHost::Server
        || (authority.is_none() && route.upstream_host == UpstreamHost::Client);
    let ws_key = match h2_ws {
        Some(_) => {
            upgrade = true;
            Some(crate::proxy::tunnel::to_h1_websocket(&mut parts.headers)?)
        }
        None => None,
    };
    route.request_headers.apply(&mut parts.headers);

    // A request that may go to another server if the first fails before
    // answering: idempotent, in a group with somewhere else to go, and with
    // no body or a small one, read ahead and kept.
    balancer.deposit();
    let retry_policy = balancer.retry();
    let retryable = !upgrade
        && retry_policy.attempts > 1
        && balancer.len() > 1
        && is_idempotent(&parts.method)
        && (http_body::Body::is_end_stream(&body)
            || http_body::Body::size_hint(&body).exact().is_some_and(|n| {
                n <= retry_policy
                    .max_body_bytes
                    .min(route.max_body_bytes.unwrap_or(u64::MAX))
            }));
    // Notes how the body goes (none to note for a request without one).
    let progress = (!http_body::Body::is_end_stream(&body))
        .then(|| BodyProgress::new(route.upstream_response_head));
    let (body, replay) = if retryable {
        let bytes = if http_body::Body::is_end_stream(&body) {
            Bytes::new()
        } else {
            // Boxed, as the retry copy below: rare, and they would
            // otherwise enlarge every request's state.
            Box::pin(http_body_util::BodyExt::collect(body))
                .await
                .map_err(ProxyError::ClientBody)?
                .to_bytes()
        };
        let head = Request::from_parts(parts.clone(), RequestBody::empty());
        let kept: Box<Replay> = Box::new((head, bytes));
        (replay_body(&kept, progress.as_ref()), Some(kept))
    } else {
        // What nobody reads of the body goes back to the client's
        // connection ([`crate::body::Discard`]).
        let discard = ctx.state.clone() as Rc<dyn crate::body::Discard>;
        let b = RequestBody::new(body, route.max_body_bytes, progress.clone(), Some(discard));
        (b, None)
    };
    let mut req = Request::from_parts(parts, body);

    let servers = w
        .pool
        .order(group, key)
        .ok_or_else(|| ProxyError::NoServer {
            group: w.config.upstreams[group].name.clone(),
        })?;
    let mut last_err = None;
    let mut tries = 0;
    for server in servers {
        if server_host {
            req.headers_mut()
                .insert(header::HOST, w.pool.authority(server).clone());
        }
        let busy = Busy::new(&w.pool, server);
        let permit = match w.pool.limit(server) {
            None => None,
            Some(l) => match l.acquire(route.upstream_connect).await {
                Some(p) => Some(p),
                None => {
                    return Err(ProxyError::ServerFull {
                        addr: w.pool.addr(server),
                    })
                }
            },
        };
        // An upgrade goes on a new connection of its own, never pooled.
        let lease = if upgrade {
            Box::pin(crate::proxy::tunnel::connect(
                w,
                server,
                route.upstream_connect,
            ))
            .await
        } else {
            w.pool.checkout(server, route.upstream_connect).await
        };
        let lease = match lease {
            Ok(c) => c,
            Err(e) => {
                // Nothing was sent: the next server may take it.
                tracing::warn!(client = %ctx.client, "{}; trying the next server", e.chain());
                record(w, server, false);
                last_err = Some(e);
                continue;
            }
        };
        tries += 1;
        let timeouts = (route.upstream_connect, route.upstream_response_head);
        let started = balancer.wants_latency().then(Instant::now);
        let (resp, lease) = match send(
            w,
            lease,
            req,
            timeouts,
            progress.as_ref(),
            ctx.head_timer.as_ref(),
            replay.as_deref(),
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                if e.upstream().is_some() {
                    record(w, server, false);
                }
                // Failed before any response byte: another server may take
                // it, within the tries and the budget.
                let again = matches!(
                    e,
                    ProxyError::Upstream { .. } | ProxyError::Handshake { .. }
                ) && tries < retry_policy.attempts;
                match replay.as_deref() {
                    Some(kept) if again && balancer.take_retry() => {
                        tracing::warn!(client = %ctx.client, "{}; retrying on another server", e.chain());
                        req = replay_request(kept, progress.as_ref());
                        last_err = Some(e);
                        continue;
                    }
                    _ => return Err(e),
                }
            }
        };
        let (b, i) = w.pool.locate(server);
        if let Some(t) = started {
            b.observe(i, t.elapsed());
        }
        record(w, server, !resp.status().is_server_error());
        if let Some(key) = &ws_key {
            // The HTTP/2 client gets a 2xx only for a tunnel: a 101 that
            // is a valid WebSocket accept.
            let status = resp.status();
            let failed = if status == StatusCode::SWITCHING_PROTOCOLS {
                crate::proxy::tunnel::check_accept(resp.headers(), key)
                    .err()
                    .map(str::to_string)
            } else if status.is_success() {
                Some(format!("answered {status} without switching protocols"))
            } else {
                None
            };
            if let Some(reason) = failed {
                return Err(ProxyError::WebSocket {
                    addr: w.pool.addr(server),
                    reason,
                });
            }
        }
        busy.hand_over();
        if upgrade && resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(Outcome::Tunnel(resp, lease, route, permit, h2_ws));
        }
        return Ok(Outcome::Upstream(resp, lease, route, permit, progress));
    }
    Err(last_err.unwrap_or(ProxyError::NoRoute))
}

/// Feeds passive ejection; logs when a server is ejected.
fn record(w: &Worker, server: usize, ok: bool) {
    let (b, i) = w.pool.locate(server);
    if let Some(time) = b.record(i, ok) {
        tracing::warn!(
            upstream = %w.pool.addr(server),
            "too many failures in a row: server ejected for {time:?}"
        );
    }
}

/// Counts a request as outstanding on its server until dropped, or until
/// handed over to the [`Exchange`], which ends it with the response body.
struct Busy<'a> {
    pool: &'a Pool,
    server: usize,
    armed: bool,
}

impl<'a> Busy<'a> {
    fn new(pool: &'a Pool, server: usize) -> Busy<'a> {
        let (b, i) = pool.locate(server);
        b.begin(i);
        Busy {
            pool,
            server,
            armed: true,
        }
    }

    fn hand_over(mut self) {
        self.armed = false;
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if self.armed {
            let (b, i) = self.pool.locate(self.server);
            b.end(i);
        }
    }
}

/// The hash of what a hashing group hashes on (a missing header or cookie
/// hashes as empty: such requests share one server).
fn request_key(key: &HashKey, client: SocketAddr, headers: &HeaderMap) -> u64 {
    match key {
        HashKey::ClientIp => hash64(client.ip()),
        HashKey::Header(name) => hash64(headers.get(name).map_or(&b""[..], HeaderValue::as_bytes)),
        HashKey::Cookie(name) => {
            let value = headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(k, _)| k == name)
                .map_or("", |(_, v)| v);
            hash64(value.as_bytes())
        }
    }
}

/// The answer of a plain listener set to `redirect_https`: the same
/// target on HTTPS (301 for GET and HEAD; 308 keeps other methods and
/// their bodies).
fn https_redirect(
    authority: Option<&crate::message::admit::Authority>,
    port: u16,
    parts: &http::request::Parts,
) -> Response<ProxyBody> {
    let name = authority.map_or("", crate::message::admit::Authority::host);
    let mut target = String::with_capacity(16 + name.len() + parts.uri.path().len());
    target.push_str("https://");
    target.push_str(name);
    if port != 443 {
        target.push(':');
        target.push_str(&port.to_string());
    }
    target.push_str(
        parts
            .uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str),
    );
    let status = if matches!(parts.method, Method::GET | Method::HEAD) {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::PERMANENT_REDIRECT
    };
    let mut resp = Response::new(ProxyBody::full(Bytes::new()));
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&target) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut().insert(header::VIA, via(parts.version));
    resp
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

/// A response the route makes itself.
fn local_response(
    status: StatusCode,
    location: Option<String>,
    headers: &HeaderMap,
    body: Bytes,
    route: &Route,
) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.clone_from(headers);
    if let Some(l) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        h.insert(header::LOCATION, l);
    }
    h.append(header::VIA, VIA_VALUE);
    route.response_headers.apply(h);
    resp
}

/// Sends on `conn`; if the pooled connection turns out to be dead before
/// the request could go out (or, for a repeatable request, before any
/// response byte came back), sends again once on a fresh connection.
async fn send(
    w: &Worker,
    mut lease: Lease,
    req: Request<RequestBody>,
    (connect, timeout): (Duration, Duration),
    kept_progress: Option<&Rc<BodyProgress>>,
    timer: Option<&HeadTimer>,
    replay: Option<&Replay>,
) -> Result<Forwarded, ProxyError> {
    let progress = kept_progress.map(|p| &**p);
    let server = lease.server;
    let idle_for = lease.idle_for;
    let addr = w.pool.addr(server);
    // A pooled connection may be closed by the server just as we reuse it
    // (RFC 9112 §9.3.1): a request that is safe to repeat keeps a copy of
    // its head so it can go again on a fresh connection. Servers close idle
    // connections on timers of a second or more, so only connections idle
    // that long pay for the copy (about 7% of a request's instructions).
    let stale_risk = idle_for.is_some_and(|d| d >= STALE_RISK);
    let backup = (stale_risk
        && replay.is_none()
        && http_body::Body::is_end_stream(req.body())
        && is_idempotent(req.method()))
    .then(|| copy_head(&req));
    let fut = lease.sender.try_send_request(req);
    let err = match lease
        .with(with_head_timeout(fut, timeout, progress, timer))
        .await
    {
        None => return Err(ProxyError::ResponseTimeout { addr }),
        Some(Ok(resp)) => return Ok((resp, lease)),
        Some(Err(mut e)) => {
            let retry = match (e.take_message(), idle_for) {
                (Some(req), Some(_)) => Some(req),
                // A body read ahead goes again from the kept copy.
                (None, Some(_)) => backup.or_else(|| {
                    replay
                        .filter(|_| stale_risk)
                        .map(|kept| replay_request(kept, kept_progress))
                }),
                _ => None,
            };
            match retry {
                Some(req) if !e.error().is_timeout() => req,
                _ => return Err(classify(e.into_error(), addr, progress)),
            }
        }
    };
    tracing::debug!(upstream = %addr, "pooled connection was closed; retrying on a new one");
    drop(lease);
    // Boxed: rare, and its state would otherwise enlarge every request.
    let mut lease = Box::pin(w.pool.connect(server, connect)).await?;
    let fut = lease.sender.try_send_request(err);
    match lease
        .with(with_head_timeout(fut, timeout, progress, timer))
        .await
    {
        None => Err(ProxyError::ResponseTimeout { addr }),
        Some(Ok(resp)) => Ok((resp, lease)),
        Some(Err(e)) => Err(classify(e.into_error(), addr, progress)),
    }
}

/// Why a sent request failed: our client's body, or the upstream.
fn classify(e: hyper::Error, addr: SocketAddr, progress: Option<&BodyProgress>) -> ProxyError {
    if let Some(p) = progress {
        if p.too_large.get() {
            // The limit is in the source chain's message.
            let limit = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<crate::body::RequestBodyError>())
                .map_or(0, |b| match b {
                    crate::body::RequestBodyError::TooLarge { limit } => *limit,
                    crate::body::RequestBodyError::Client(_) => 0,
                });
            return ProxyError::BodyTooLarge { limit };
        }
        if p.client_failed.get() {
            return ProxyError::ClientBody(e);
        }
    }
    ProxyError::Upstream { addr, source: e }
}

/// Waits for the response head. The deadline runs from the start, pushed
/// back by every chunk of request body still being sent. `shared`: the
/// connection's [`HeadTimer`], used when free; otherwise a timer of its own.
fn with_head_timeout<'a, F: Future>(
    fut: F,
    timeout: Duration,
    progress: Option<&'a BodyProgress>,
    shared: Option<&'a HeadTimer>,
) -> HeadTimeout<'a, F> {
    HeadTimeout {
        fut,
        own: None,
        deadline: Instant::now() + timeout,
        armed: false,
        timeout,
        progress,
        shared,
    }
}

pin_project_lite::pin_project! {
    /// `Some(output)`, or `None` when the upstream took too long.
    struct HeadTimeout<'a, F> {
        #[pin]
        fut: F,
        #[pin]
        own: Option<tokio::time::Sleep>,
        deadline: Instant,
        // The timer in use (shared or own) is set to `deadline`.
        armed: bool,
        timeout: Duration,
        progress: Option<&'a BodyProgress>,
        shared: Option<&'a HeadTimer>,
    }
}

impl<F: Future> Future for HeadTimeout<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(r) = this.fut.poll(cx) {
            return Poll::Ready(Some(r));
        }
        let mut shared = this.shared.and_then(|t| t.0.try_borrow_mut().ok());
        loop {
            let deadline = *this.deadline;
            let fired = match shared.as_deref_mut() {
                Some(slot) => {
                    let sleep = slot.get_or_insert_with(|| Box::pin(sleep_until(deadline)));
                    poll_until(sleep.as_mut(), deadline, this.armed, cx)
                }
                None => {
                    if this.own.is_none() {
                        this.own.set(Some(sleep_until(deadline)));
                    }
                    let own = this.own.as_mut().as_pin_mut();
                    own.is_some_and(|sleep| poll_until(sleep, deadline, this.armed, cx))
                }
            };
            if !fired {
                return Poll::Pending;
            }
            let next = match this.progress {
                Some(p) => p.last_progress.get() + *this.timeout,
                None => return Poll::Ready(None),
            };
            if next <= Instant::now() {
                return Poll::Ready(None);
            }
            *this.deadline = next;
            *this.armed = false;
        }
    }
}

/// Polls `sleep` for `deadline`, moving it there first unless `armed`
/// says it already is.
#[inline]
fn poll_until(
    mut sleep: Pin<&mut tokio::time::Sleep>,
    deadline: Instant,
    armed: &mut bool,
    cx: &mut Context<'_>,
) -> bool {
    if !std::mem::replace(armed, true) {
        sleep.as_mut().reset(deadline);
    }
    sleep.poll(cx).is_ready()
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// A repeatable request's head and its body, read ahead.
type Replay = (Request<RequestBody>, Bytes);

/// The request again, from its kept copy.
fn replay_request(kept: &Replay, progress: Option<&Rc<BodyProgress>>) -> Request<RequestBody> {
    let mut req = copy_head(&kept.0);
    *req.body_mut() = replay_body(kept, progress);
    req
}

/// A kept body, to send (again); its end noted in `progress`.
fn replay_body(kept: &Replay, progress: Option<&Rc<BodyProgress>>) -> RequestBody {
    match progress {
        Some(p) => {
            p.ended.set(false);
            RequestBody::full_with(kept.1.clone(), p.clone())
        }
        None => RequestBody::full(kept.1.clone()),
    }
}

fn copy_head(req: &Request<RequestBody>) -> Request<RequestBody> {
    let mut copy = Request::new(RequestBody::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    *copy.extensions_mut() = req.extensions().clone();
    copy
}

/// Rewrites the request head for the upstream hop; `true` for an upgrade
/// request (see [`crate::proxy::tunnel`]), which keeps `Upgrade` and
/// `Connection: upgrade`. `chunked`: the body streams with no declared
/// length (and so may end with trailers).
fn prepare_request(
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
