//! Proxy: one request's life, as a list of phases ([`handle`]):
//!
//! 0. **client**: who the client is (the peer, or who its trusted proxies
//!    say: [`crate::message::client_ip`]), and the listener's `access`
//!    rules on it (403);
//! 1. **admit** (`request`): the checks of [`crate::message::admit`]
//!    (one authority, unambiguous framing, field names);
//! 2. **route** (`request`, `gate`): the HTTPS redirect, the 421 check,
//!    the route (404 if none), its `access` rules (403); its gates
//!    (`gate`): rate limits (429), concurrency limits (429: the place
//!    taken is held until the response ends), basic auth (`auth`: 401),
//!    JWT bearer tokens (`jwt`: 401), forward auth (`forward_auth`: the
//!    auth service's refusal as it came, or the route's `on_error`); then
//!    its own answers (a `static` route's files: `static_files`), the
//!    body limit (413), the path rewrite;
//! 3. **prepare** (`request`): the head rewritten for the hop (RFC 9110
//!    §7.6: hop-by-hop fields dropped, `X-Forwarded-*` and `Via` added,
//!    `Host` set) and the route's fields;
//! 4. **forward** (`forward`): a server and a pooled connection, the
//!    send (with the fields the request adds where it goes out: its ID,
//!    its trace context, `added`), the response head under
//!    `upstream_response_head` (`head_timeout`), retries;
//! 5. **respond** (`respond`, [`exchange`]): the response head rewritten,
//!    its body streamed back; when it ends the connection returns to the
//!    pool and the access-log line is written ([`exchange::LogLine`]).
//!
//! Every failure becomes a [`ProxyError`], mapped to its status in one
//! place and rendered in one place (`synthetic`), with one log line
//! naming the cause. Upgrades continue in [`tunnel`].

use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;

mod added;
mod auth;
pub(crate) mod cache;
mod compress;
pub(crate) mod exchange;
mod file_body;
mod forward;
mod forward_auth;
mod gate;
mod head_timeout;
mod jwt;
mod request;
mod request_id;
pub(crate) mod response_body;
mod static_files;
mod synthetic;
pub(crate) mod tunnel;
mod upstream_body;

use crate::access_log::Entry;
use crate::body::BodyProgress;
use crate::downstream::state::{ConnCtx, InFlight};
use crate::error::ProxyError;
use crate::message::admit::Authority;
use crate::message::headers::{scan_request, scan_response, strip_found, Found, VIA_VALUE};
use crate::ratelimit::concurrency::Held;
use crate::router::Route;
use crate::upstream::Lease;
use crate::worker::Worker;

use exchange::{Exchange, LogLine};
use request::{admit, Matched, Routed};
use request_id::Late;
use response_body::{ProxyBody, UpstreamBody};
/// Closes the static roots this worker thread holds open (at a reload).
pub(crate) use static_files::forget_roots as forget_static_roots;
use synthetic::is_grpc;

const CLOSE: HeaderValue = HeaderValue::from_static("close");

/// hyper's service entry point: never fails, every error is a response.
///
/// An async block, not an `async fn`, as [`forward::send`]: no copy of
/// the request from one place in the future's state to another.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub(crate) fn handle(
    ctx: Rc<ConnCtx>,
    req: Request<Incoming>,
) -> impl std::future::Future<Output = Response<ProxyBody>> {
    async move {
        let in_flight = InFlight::new(&ctx.state);
        let last = ctx.state.last_request();
        let worker = ctx.current.get();
        let (mut parts, body) = req.into_parts();
        // The fields the proxy acts on, found in one pass for the whole request.
        let found = scan_request(&parts.headers, ctx.request_id.as_ref().map(|r| &r.header));
        // Room for what the proxy adds (request.rs's forwarded fields, the
        // ID, the traceparent) in one step: growing the map on the way costs
        // a rehash.
        parts.headers.reserve(
            6 + usize::from(ctx.request_id.is_some() || worker.router.route_request_ids)
                + usize::from(worker.trace.is_some()),
        );
        // The client: the peer, or who its trusted proxies say; then the
        // listener's `access` rules on it, before anything else. (No listener
        // with either, the default: one branch.)
        let listener = match worker.client_rules {
            false => None,
            true => worker.config.listeners.get(ctx.index.get()),
        };
        let client = match listener.and_then(|l| l.real_ip.as_deref()) {
            None => ctx.client,
            Some(r) => r.client(ctx.client, &parts.headers),
        };
        let admitted = match listener.and_then(|l| l.access.as_deref()) {
            Some(a) if !a.allows(client.ip()) => Err(ProxyError::Forbidden(client.ip())),
            _ => admit(&ctx, &mut parts, found),
        };
        // The listener's request ID, given at once; unless some route has
        // its own, and every ID waits for the route (`Late`). A new one
        // goes upstream as an added field (`added`), as the trace context.
        let late = worker.router.route_request_ids;
        // (Made here, filled in place: a move of it costs a copy.)
        let mut routed = request::Noted::default();
        let mut request_id = match &ctx.request_id {
            Some(cfg) if !late => {
                let (id, new) = request_id::give(cfg, &mut parts.headers, found.named);
                if new {
                    routed.added.id = Some((&cfg.header, id.clone()));
                }
                Some((cfg, id))
            }
            _ => None,
        };
        // The trace context it goes upstream with, and its span if sampled.
        let span = worker.trace.as_ref().and_then(|t| {
            let host = admitted.as_ref().ok().and_then(Option::as_ref);
            let (context, span) = t.begin(&mut parts, &found, host, client);
            routed.added.trace = Some(context);
            span
        });
        // HTTP/1.1 connections have a head timer; HTTP/2 ones do not.
        let h2 = ctx.head_timer.is_none();
        let mut line = LogLine::new(&worker, ctx.index.get(), h2, span, |start| Entry {
            start,
            client,
            method: parts.method.clone(),
            target: parts.uri.clone(),
            version: parts.version,
            host: admitted.as_ref().ok().cloned().flatten(),
            headers: worker.log.capture(&parts.headers),
            request_id: request_id.as_ref().map(|(_, id)| id.clone()),
            user: None,
        });
        let pending = Pending {
            state: &ctx.state,
            armed: true,
        };
        let grpc = is_grpc(&parts.headers);
        // `forward`'s future lives directly in this one: a second async layer
        // around it would copy its whole state once more per request.
        let forwarded = match admitted {
            // `Late` made in the call, in no local that the await keeps.
            Ok(authority) => {
                let (hop, slot) = line.split();
                // Pinned where made: awaited as a value, its state (the
                // largest of the request's) was copied whole once more.
                let forwarding = pin!(forward(
                    &ctx,
                    &worker,
                    parts,
                    body,
                    authority,
                    client,
                    found,
                    &routed,
                    hop,
                    late.then_some(Late {
                        line: slot,
                        id: &mut request_id,
                    }),
                ));
                forwarding.await
            }
            Err(e) => {
                if late {
                    let late = Late {
                        line: line.split().1,
                        id: &mut request_id,
                    };
                    late.assign(None, ctx.request_id.as_ref(), &mut parts.headers);
                }
                Err(e)
            }
        };
        pending.done();
        line.route(routed.route.get());
        line.user(routed.user.take());
        // Whether the response has no field of the ID's name, nor will
        // have one from the route's rules or a stored response.
        let mut id_free = false;
        let mut resp = respond(
            &ctx,
            &worker,
            forwarded,
            line,
            in_flight,
            grpc,
            request_id.as_ref().map(|(_, id)| id),
            &mut id_free,
        );
        if let Some(plan) = routed.cache.take() {
            id_free = false;
            if let Some(status) = cache::response(&mut resp, plan, worker.counters.as_deref()) {
                // On HTTP/1.1 written by hyper after the response's fields
                // (`Svc::extra`), as the ID; an origin's own stay before it.
                match ctx.head_timer.is_some() {
                    true => ctx.cache_status.set(Some(status)),
                    false => {
                        resp.headers_mut()
                            .append(cache::CACHE_STATUS.clone(), status);
                    }
                }
            }
        }
        if let Some(c) = routed.compress.take() {
            resp = compress::response(resp, c);
        }
        let h = resp.headers_mut();
        if let Some((cfg, id)) = request_id {
            // HTTP/1.1 and the listener's ID, on a response without a field
            // of its name: written by hyper after the response's fields
            // (`Svc::extra`), not inserted in them.
            match id_free && !late && ctx.head_timer.is_some() {
                true => ctx.response_id.set(Some(id)),
                false => {
                    h.insert(cfg.header.clone(), id.value());
                }
            }
        }
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
}

/// A request whose response is not made yet. Dropped before
/// [`Pending::done`], the client cancelled it (an HTTP/2 reset, or its
/// connection closed): one more towards the connection's reset limit (and
/// its [`LogLine`], dropped too, says 499).
struct Pending<'a> {
    state: &'a crate::downstream::state::ConnState,
    armed: bool,
}

impl Pending<'_> {
    fn done(mut self) {
        self.armed = false;
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.state.client_reset();
        }
    }
}

/// The response to send the client for what `forward` did. `id_free`:
/// set when it is the upstream's and has no field of the listener's
/// request ID's name (nor a route's rule that could add one).
#[allow(clippy::too_many_arguments)]
fn respond(
    ctx: &Rc<ConnCtx>,
    worker: &Rc<Worker>,
    forwarded: Result<(Outcome, Held), ProxyError>,
    mut line: LogLine,
    in_flight: InFlight,
    grpc: bool,
    request_id: Option<&crate::message::id::Id>,
    id_free: &mut bool,
) -> Response<ProxyBody> {
    match forwarded {
        Ok((Outcome::Upstream(resp, lease, route, permit, progress), held)) => {
            let (parts, body) = resp.into_parts();
            let status = parts.status.as_u16();
            let server = lease.server;
            let exchange = Exchange {
                worker: worker.clone(),
                lease,
                status: parts.status.as_u16(),
                line,
                progress,
                in_flight,
                permit,
                held,
            };
            let mut resp = Response::from_parts(
                parts,
                ProxyBody::Upstream(UpstreamBody::new(body, exchange)),
            );
            // Announced trailers of a chunked body stay announced: hyper
            // writes only those.
            let chunked = http_body::Body::size_hint(resp.body()).exact().is_none();
            let h = resp.headers_mut();
            let found = scan_response(h, ctx.request_id.as_ref().map(|r| &r.header));
            *id_free = !found.named && route.response_headers.is_empty();
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
                    if let Some(s) = worker.pool.stats() {
                        use crate::upstream::stats::Count;
                        s.count(Count::Backoffs, server);
                        let until = crate::tally::unix_ms() + delay.as_millis() as u64;
                        s.set(Count::BackoffUntil, server, until);
                    }
                    tracing::info!(upstream = %worker.pool.addr(server), status, "backing off for {delay:?} (Retry-After)");
                }
            }
            resp
        }
        Ok((Outcome::Tunnel(resp, lease, route, permit, stream), held)) => {
            let (resp, upstream) = crate::proxy::tunnel::switch(resp, route, stream.is_some());
            let mut tunnel = crate::proxy::tunnel::Tunnel::new(
                worker.clone(),
                lease,
                upstream,
                resp.status().as_u16(),
                line,
                ctx.client,
                permit,
            );
            tunnel.keep(held);
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
        // A place taken in a concurrency limit is given back at once
        // (dropped with the `Held`).
        Ok((Outcome::Local(resp), _)) => {
            let bytes = http_body::Body::size_hint(resp.body()).exact().unwrap_or(0);
            line.set(resp.status().as_u16(), bytes, None, "done");
            resp
        }
        Err(err) => {
            let status = err.status();
            if let ProxyError::BodyTooLarge { .. } = err {
                ctx.state.linger.set(true);
            }
            match request_id.and_then(|v| v.as_str()) {
                Some(id) => tracing::warn!(
                    client = %ctx.client,
                    status = status.as_u16(),
                    request_id = id,
                    "{}",
                    err.chain()
                ),
                None => {
                    tracing::warn!(client = %ctx.client, status = status.as_u16(), "{}", err.chain())
                }
            }
            line.set(status.as_u16(), 0, err.upstream(), "error");
            let mut resp = synthetic::for_error(&err, grpc);
            if let ProxyError::Unauthorized { challenge, .. }
            | ProxyError::BadToken { challenge, .. } = &err
            {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, challenge.clone());
            }
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

/// The request phase decides where the request goes (or answers it
/// itself), the forward phase takes it there. `late`: the request's ID
/// is given once its route is known; `hop`: where a traced request's
/// span notes the upstream phases. With the outcome comes the request's
/// places in its concurrency limits, for the response to hold until it
/// ends; on an error they are given back as it returns (as when the
/// client cancels, which drops this future).
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_async_fn)] // no argument copy: see `handle`
fn forward<'w, 'a>(
    ctx: &'w Rc<ConnCtx>,
    w: &'w Rc<Worker>,
    mut parts: http::request::Parts,
    body: Incoming,
    authority: Option<Authority>,
    client: std::net::SocketAddr,
    found: Found,
    routed: &'a request::Noted<'w>,
    hop: Option<&'a crate::trace::Hop>,
    late: Option<Late<'a, 'w>>,
) -> impl std::future::Future<Output = Result<(Outcome<'w>, Held), ProxyError>> + use<'w, 'a> {
    async move {
        let added = &routed.added;
        let authority = authority.as_ref();
        // An HTTP/2 WebSocket (extended CONNECT, RFC 8441) is routed and sent
        // as the HTTP/1.1 handshake it stands for: a GET.
        let matched = tunnel::h2_websocket(&mut parts).and_then(|h2_ws| {
            if h2_ws.is_some() {
                parts.method = Method::GET;
            }
            request::find(ctx, w, &parts, authority, client, routed).map(|m| (m, h2_ws))
        });
        if let Some(late) = late {
            let route = routed.route.get().and_then(|i| w.config.routes.get(i));
            late.assign(route, ctx.request_id.as_ref(), &mut parts.headers);
        }
        let (route, h2_ws) = match matched? {
            (Matched::Route(route), h2_ws) => (route, h2_ws),
            (Matched::Listener(resp), _) => return Ok((Outcome::Local(resp), Held::default())),
        };
        // What reads the request's fields before it goes out sees the
        // added ones there.
        if route.forward_auth.is_some() || !route.request_headers.is_empty() {
            added.insert_now(&mut parts.headers);
        }
        if w.compress {
            request::note_compression(ctx, w, route, &parts, routed);
        }
        let gate::Passed { wait, held } = match gate::any(route) {
            false => gate::Passed::default(),
            true => match gate::pass_now(w, route, &parts.headers, client.ip()) {
                Some(passed) => passed?,
                None => {
                    gate::pass(ctx, w, route, &mut parts, authority, client.ip(), routed).await?
                }
            },
        };
        // A stored response answers before the request is rewritten (as a
        // route's own answers, it is not delayed); a miss goes on with what
        // the response phase needs to store or freshen.
        if let Some((i, store)) = route.cache.and_then(|i| Some((i, w.caches.get(i)?))) {
            if h2_ws.is_none() && !found.upgrade {
                // (The lookup's result matched where it comes back: bound
                // first, a hit was copied whole once more.)
                match cache::begin(store, i, ctx.tls.is_some(), &parts, authority) {
                    cache::Begun::Forward(plan) => routed.cache.set(Some(plan)),
                    cache::Begun::Look(asked, key, pass) => {
                        let counters = w.counters.as_deref();
                        match cache::lookup(&asked, key, pass, counters, &mut parts).await {
                            cache::Looked::Hit(resp) => return Ok((Outcome::Local(resp), held)),
                            cache::Looked::Forward(plan) => routed.cache.set(Some(plan)),
                            cache::Looked::Stale(resp, plan) => {
                                added.insert_now(&mut parts.headers);
                                let r = cache::Background {
                                    ctx: ctx.clone(),
                                    worker: w.clone(),
                                    route: route.index,
                                    parts,
                                    body,
                                    authority: authority.cloned(),
                                    client,
                                    found,
                                };
                                tokio::task::spawn_local(cache::revalidate(r, plan));
                                return Ok((Outcome::Local(resp), held));
                            }
                        }
                    }
                }
            }
        }
        // A static route's files (async: the file system is read on the
        // blocking pool); what none answers goes on to its upstream group.
        if let crate::router::Action::Static(files) = &route.action {
            if h2_ws.is_none() {
                if let Some(mut resp) = static_files::serve(route, files, &parts).await {
                    // The body goes to hyper as it is, on a plain
                    // HTTP/1.1 connection: its spans with `sendfile`.
                    if let (ProxyBody::File(body), true) = (resp.body_mut(), files.sendfile) {
                        if ctx.tls.is_none() && ctx.state.http1.get() {
                            body.send_with(ctx.state.clone());
                        }
                    }
                    return Ok((Outcome::Local(resp), Held::default()));
                }
            }
        }
        let group = match request::act(ctx, route, &mut parts, authority, &body)? {
            Routed::Proxy(group) => group,
            // A route's own answers are not delayed.
            Routed::Local(resp) => return Ok((Outcome::Local(resp), Held::default())),
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let plan = request::prepare(
            ctx,
            w,
            &mut parts,
            authority,
            client,
            route,
            group,
            &body,
            found,
            h2_ws.is_some(),
        )?;
        let outcome = forward::to_upstream(
            ctx,
            w,
            route,
            group,
            parts,
            body,
            plan,
            h2_ws,
            hop,
            added.pending(),
        )
        .await?;
        Ok((outcome, held))
    }
}
