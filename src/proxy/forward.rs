//! The forward phase: the request body as it will go (streamed, or read
//! ahead and kept when another server may have to take it), the servers in
//! the balancer's order, a connection from the pool, the send with its
//! stale-connection retry, and a retry on the next server within the
//! group's budget.

use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http::header;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::head_timeout::with_head_timeout;
use super::Outcome;
use crate::body::{BodyProgress, RequestBody};
use crate::downstream::state::{ConnCtx, HeadTimer};
use crate::error::ProxyError;
use crate::message::added::Added;
use crate::router::Route;
use crate::upstream::stats::Count;
use crate::upstream::{Lease, Pool, Sender};
use crate::worker::Worker;

/// Idle time after which a reused connection may have been closed by the
/// server's idle timer.
const STALE_RISK: Duration = Duration::from_secs(1);

type Forwarded = (Response<Incoming>, Lease);

/// Feeds passive ejection; logs when a server is ejected.
pub(super) fn record(w: &Worker, server: usize, ok: bool) {
    let (b, i) = w.pool.locate(server);
    if let Some(time) = b.record(i, ok) {
        tracing::warn!(
            upstream = %w.pool.addr(server),
            "too many failures in a row: server ejected for {time:?}"
        );
    }
}

/// Counts a request as outstanding on its server until dropped, or until
/// handed over to the [`Exchange`](super::exchange::Exchange), which ends it with the response body.
pub(super) struct Busy<'a> {
    pool: &'a Pool,
    server: usize,
    armed: bool,
}

impl<'a> Busy<'a> {
    pub(super) fn new(pool: &'a Pool, server: usize) -> Busy<'a> {
        pool.begin(server);
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
            self.pool.end(self.server);
        }
    }
}

/// Sends on `conn`; if the pooled connection turns out to be dead before
/// the request could go out (or, for a repeatable request, before any
/// response byte came back), sends again once on a fresh connection.
/// `at`: now, when the response-head deadline starts.
///
/// (An async block, not an `async fn`: an `async fn` first moves each
/// argument from its future's state into a second place in that state, a
/// copy of the whole request per call.)
#[allow(clippy::manual_async_fn)] // on purpose: see above
#[allow(clippy::too_many_arguments)]
pub(super) fn send<'a>(
    w: &'a Worker,
    mut lease: Lease,
    req: Request<RequestBody>,
    (connect, timeout, at): (Duration, Duration, Instant),
    kept_progress: Option<&'a Rc<BodyProgress>>,
    timer: Option<&'a HeadTimer>,
    replay: Option<&'a Replay>,
    added: Option<&'a dyn Added>,
) -> impl std::future::Future<Output = Result<Forwarded, ProxyError>> + use<'a> {
    async move {
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
        let got = {
            let exchange = pin!(lease.exchange(req, added));
            with_head_timeout(exchange, at, timeout, progress, timer).await
        };
        let err = match got {
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
                    _ => return Err(classify(e.into_error(), addr)),
                }
            }
        };
        tracing::debug!(upstream = %addr, "pooled connection was closed; retrying on a new one");
        drop(lease);
        // Boxed: rare, and its state would otherwise enlarge every request.
        let mut lease = Box::pin(w.pool.connect(server, connect)).await?;
        let got = {
            let again = pin!(lease.exchange(err, added));
            with_head_timeout(again, Instant::now(), timeout, progress, timer).await
        };
        match got {
            None => Err(ProxyError::ResponseTimeout { addr }),
            Some(Ok(resp)) => Ok((resp, lease)),
            Some(Err(e)) => Err(classify(e.into_error(), addr)),
        }
    }
}

/// Why a sent request failed: our client's body, or the upstream.
fn classify(e: hyper::Error, addr: SocketAddr) -> ProxyError {
    // A failure of the request body is the client's (its error is in the
    // source chain), not the upstream's.
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        match s.downcast_ref::<crate::body::RequestBodyError>() {
            Some(crate::body::RequestBodyError::TooLarge { limit }) => {
                return ProxyError::BodyTooLarge { limit: *limit }
            }
            Some(crate::body::RequestBodyError::Client(_)) => return ProxyError::ClientBody(e),
            None => source = s.source(),
        }
    }
    ProxyError::Upstream { addr, source: e }
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

/// Sends the prepared request to the group's servers in the balancer's
/// order until one answers: the next server when a connection cannot be
/// had, or (for a request that can be repeated) when the send failed
/// before any response byte, within the group's tries and retry budget.
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_async_fn)] // no argument copy: see `send`
pub(crate) fn to_upstream<'w, 'a>(
    ctx: &'a ConnCtx,
    w: &'w Worker,
    route: &'w Route,
    group: usize,
    parts: http::request::Parts,
    body: Incoming,
    plan: super::request::Plan,
    h2_ws: Option<hyper::upgrade::OnUpgrade>,
    hop: Option<&'a crate::trace::Hop>,
    added: Option<&'a dyn Added>,
) -> impl std::future::Future<Output = Result<Outcome<'w>, ProxyError>> + use<'w, 'a> {
    async move {
        let super::request::Plan {
            key,
            upgrade,
            server_host,
            ws_key,
        } = plan;
        let balancer = w.pool.balancer(group);
        balancer.deposit();
        let retry_policy = balancer.retry();
        let (mut req, replay, progress) = outgoing(
            ctx,
            route,
            parts,
            body,
            !upgrade && balancer.len() > 1,
            retry_policy,
        )
        .await?;

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
            if let Some(h) = hop {
                h.server();
            }
            let permit = match w.pool.limit(server) {
                None => None,
                Some(l) => match l.acquire(route.upstream_connect).await {
                    Some(p) => Some(p),
                    None => {
                        if let Some(s) = w.pool.stats() {
                            s.count(Count::PendingRefused, server);
                        }
                        return Err(ProxyError::ServerFull {
                            addr: w.pool.addr(server),
                        });
                    }
                },
            };
            // One clock read for a pooled connection's idle time, the
            // response-head deadline and the exchange's timings (read
            // again after a wait: a fresh connection, an HTTP/2 stream). The
            // phases of a traced request start here (past the server's
            // limit).
            let now = Instant::now();
            let asked = hop.map(|_| now);
            let lease = match connection(ctx, w, server, upgrade, route.upstream_connect, now).await
            {
                Ok(c) => c,
                Err(e) => {
                    // Nothing was sent: the next server may take it.
                    tracing::warn!(client = %ctx.client, "{}; trying the next server", e.chain());
                    record(w, server, false);
                    if let Some(s) = w.pool.stats() {
                        let c = match e {
                            ProxyError::ServerFull { .. } => Count::PendingRefused,
                            _ => Count::ConnectFailed,
                        };
                        s.count(c, server);
                    }
                    last_err = Some(e);
                    continue;
                }
            };
            tries += 1;
            let now = match (lease.idle_for, &lease.sender) {
                (Some(_), Sender::H1(_)) => now,
                _ => Instant::now(),
            };
            let timeouts = (route.upstream_connect, route.upstream_response_head, now);
            let started = (balancer.wants_latency() || w.pool.stats().is_some()).then_some(now);
            let sent = match (hop, asked) {
                (Some(h), Some(asked)) => {
                    h.connected(asked, lease.idle_for.is_some());
                    Some(now)
                }
                _ => None,
            };
            // Pinned where made: awaited as a value, the large future
            // was copied whole on its way into this one's state.
            let answer = {
                let send = pin!(send(
                    w,
                    lease,
                    req,
                    timeouts,
                    progress.as_ref(),
                    ctx.head_timer.as_ref(),
                    replay.as_deref(),
                    added,
                ));
                send.await
            };
            let (resp, lease) = match answer {
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
                        Some(kept) if again && retry_allowed(w, group, balancer) => {
                            tracing::warn!(client = %ctx.client, "{}; retrying on another server", e.chain());
                            if let Some(s) = w.pool.stats() {
                                s.count(Count::Retries, server);
                            }
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
                let took = t.elapsed();
                if balancer.wants_latency() {
                    b.observe(i, took);
                }
                if let Some(s) = w.pool.stats() {
                    s.head.observe(server, took);
                }
            }
            if let (Some(h), Some(t)) = (hop, sent) {
                h.answered(t);
            }
            record(w, server, !resp.status().is_server_error());
            if let Some(key) = &ws_key {
                websocket_accepted(&resp, key, w.pool.addr(server))?;
            }
            busy.hand_over();
            if upgrade && resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                return Ok(Outcome::Tunnel(resp, lease, route, permit, h2_ws));
            }
            return Ok(Outcome::Upstream(resp, lease, route, permit, progress));
        }
        Err(last_err.unwrap_or(ProxyError::NoRoute))
    }
}

/// Whether the group's retry budget allows one more retry (counted when
/// it does not).
fn retry_allowed(w: &Worker, group: usize, balancer: &crate::upstream::balance::Group) -> bool {
    let ok = balancer.take_retry();
    if !ok {
        if let Some(s) = w.pool.stats() {
            s.budget_exhausted(group);
        }
    }
    ok
}

/// A connection to `server`: from the pool, or for an upgrade a new one of
/// its own, never pooled.
async fn connection(
    ctx: &ConnCtx,
    w: &Worker,
    server: usize,
    upgrade: bool,
    timeout: Duration,
    now: Instant,
) -> Result<Lease, ProxyError> {
    // (Only a group that sends PROXY protocol headers needs it.)
    let client = w.pool.proxy_protocol(server).map(|_| proxied(ctx));
    if upgrade {
        Box::pin(crate::proxy::tunnel::connect(
            w,
            server,
            timeout,
            client.as_ref(),
        ))
        .await
    } else {
        w.pool.checkout(server, timeout, client.as_ref(), now).await
    }
}

/// The client connection as a PROXY protocol header to an upstream names
/// it (for groups with `proxy_protocol`).
fn proxied(ctx: &ConnCtx) -> crate::upstream::proxy_protocol::Client<'_> {
    let tls = ctx.tls.as_deref();
    crate::upstream::proxy_protocol::Client {
        src: ctx.client,
        dst: ctx.state.local.get(),
        sni: tls.and_then(|t| t.sni.as_deref()),
        alpn: tls.map(|_| match ctx.state.http1.get() {
            true => b"http/1.1".as_slice(),
            false => b"h2".as_slice(),
        }),
        conn: crate::upstream::proxy_protocol::Owner(ctx.state.id),
    }
}

/// The HTTP/2 client of a WebSocket gets a 2xx only for a tunnel: a 101
/// that is a valid WebSocket accept of `key`.
fn websocket_accepted(
    resp: &Response<Incoming>,
    key: &http::HeaderValue,
    addr: SocketAddr,
) -> Result<(), ProxyError> {
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
    match failed {
        Some(reason) => Err(ProxyError::WebSocket { addr, reason }),
        None => Ok(()),
    }
}

/// The request as it goes upstream, the copy kept for a retry, and the
/// body's progress (none for a request without a body). A request that
/// may go to another server if the first fails before answering
/// (idempotent, with `elsewhere` to go, with no body or a small one) has
/// its body read ahead and kept; any other streams.
#[allow(clippy::manual_async_fn)] // no argument copy: see `send`
fn outgoing<'a>(
    ctx: &'a ConnCtx,
    route: &'a Route,
    parts: http::request::Parts,
    body: Incoming,
    elsewhere: bool,
    retry_policy: &'a crate::config::Retry,
) -> impl std::future::Future<Output = Result<Outgoing, ProxyError>> + use<'a> {
    async move {
        let retryable = elsewhere
            && retry_policy.attempts > 1
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
        Ok((Request::from_parts(parts, body), replay, progress))
    }
}

/// What [`outgoing`] makes.
type Outgoing = (
    Request<RequestBody>,
    Option<Box<Replay>>,
    Option<Rc<BodyProgress>>,
);
