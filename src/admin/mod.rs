//! The admin listener (`[admin]`, off by default): what operators and
//! their tools ask of the proxy itself, never served on the proxy's own
//! listeners.
//!
//! - `GET /metrics`: Prometheus text exposition ([`crate::metrics`]).
//! - `GET /status` and `GET /status.json`: the state of listeners, routes
//!   and upstream servers, with rates and latencies over the last minute
//!   ([`status`]).
//! - `GET /healthz`: 200 while the process runs.
//! - `GET /readyz`: 200 while it takes traffic, 503 once shutdown began.
//! - `POST /upstreams/GROUP/servers/ADDRESS/drain` and `.../enable`: a
//!   drained server gets no new requests (in-flight ones finish); the
//!   state survives reloads (until restart).
//! - `GET /caches`: each cache's keys, bytes and waiting misses;
//!   `POST /caches/NAME/purge` (everything), `?url=URL` (one URL's
//!   responses, every variant) or `?prefix=URL` (every URL starting
//!   with it) ([`caches`]).
//! - `GET /config`: the config in force (defaults filled in, command-line
//!   overrides applied) as JSON, secrets redacted
//!   ([`crate::config::dump`]).
//! - `POST /reload`: what SIGHUP does, answered when done: 200, or 422
//!   with the problems (`FILE:LINE: FIELD: REASON`) and the old config
//!   still serving, or 409 when there is no config file to read. The
//!   request goes to the binary's main loop ([`ReloadAsk`]), which runs
//!   reloads one at a time, SIGHUP's too.
//!
//! It runs on a thread of its own (a single-threaded runtime, HTTP/1.1),
//! so a slow scrape never takes time from a worker. With a `token`, every
//! request needs `Authorization: Bearer TOKEN` (401 otherwise).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::{Gauges, Registry};

mod caches;
mod status;

/// Reads the values a scrape shows beside the counters (open
/// connections, servers in service) from the config in force.
pub(crate) type GaugeSource = Arc<dyn Fn() -> Gauges + Send + Sync>;

/// Drains (`true`) or enables a server of a group, by name and address;
/// how many servers matched (`None`: no such group).
pub(crate) type Drain = Arc<dyn Fn(&str, &str, bool) -> Option<usize> + Send + Sync>;

/// The config in force.
pub(crate) type ConfigSource = Arc<dyn Fn() -> Option<Arc<crate::config::Config>> + Send + Sync>;

/// The caches in force.
pub(crate) type CacheSource = Arc<dyn Fn() -> Option<Arc<crate::cache::Caches>> + Send + Sync>;

/// `POST /reload`, sent to whoever reloads (the binary's main loop), with
/// where the answer goes: `Err` holds why the new config was refused.
pub(crate) struct ReloadAsk {
    pub(crate) reply: oneshot::Sender<Result<(), String>>,
}

/// What the admin endpoints read.
pub(crate) struct State {
    pub(crate) metrics: Arc<Registry>,
    pub(crate) gauges: GaugeSource,
    pub(crate) drain: Drain,
    pub(crate) config: ConfigSource,
    pub(crate) caches: CacheSource,
    /// Where `POST /reload` goes; set only by a process that has a config
    /// file to reload (the binary started with `--config`).
    pub(crate) reloads: OnceLock<mpsc::Sender<ReloadAsk>>,
    /// Cleared when shutdown begins.
    pub(crate) ready: AtomicBool,
    pub(crate) token: Option<HeaderValue>,
    /// Snapshots of the counters for the status page's rates.
    pub(crate) samples: status::Samples,
}

/// The running admin listener; stopped by [`Admin::stop`].
pub(crate) struct Admin {
    handle: JoinHandle<()>,
    stop: watch::Sender<bool>,
    pub(crate) addr: SocketAddr,
}

impl Admin {
    /// Binds `addr`: before anything starts, so that a taken address
    /// fails start cleanly.
    pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
        let l = std::net::TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        Ok(l)
    }

    /// Serves on `std_listener` from a thread of its own.
    pub(crate) fn serve(
        std_listener: std::net::TcpListener,
        state: Arc<State>,
    ) -> std::io::Result<Admin> {
        let addr = std_listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        let handle = crate::rt::on_own_thread("tidegate-admin", move || async move {
            let listener = match tokio::net::TcpListener::from_std(std_listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!("admin listener {addr}: {e}");
                    return;
                }
            };
            let sampled = state.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(status::SAMPLE_EVERY);
                loop {
                    every.tick().await;
                    sampled.samples.sample(&sampled.metrics);
                }
            });
            loop {
                let (stream, _) = tokio::select! {
                    a = listener.accept() => match a {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                    _ = stopped.changed() => return,
                };
                let state = state.clone();
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(respond(&state, req).await) }
                    });
                    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = stopped.changed() => {}
                    }
                });
            }
        })?;
        Ok(Admin { handle, stop, addr })
    }

    pub(crate) fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.handle.join();
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// One admin request's answer.
async fn respond(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match answer(state, &req) {
        Answer::Now(resp) => resp,
        Answer::Reload => {
            drop(req);
            reload(state).await
        }
    }
}

/// What a request asks: an answer at once, or a reload.
enum Answer {
    Now(Response<Full<Bytes>>),
    /// An authorised `POST /reload`.
    Reload,
}

fn answer(state: &State, req: &Request<Incoming>) -> Answer {
    if let Some(refused) = unauthorized(state, req) {
        return Answer::Now(refused);
    }
    let path = req.uri().path();
    if path == "/reload" {
        if req.method() != Method::POST {
            return Answer::Now(post_only());
        }
        return Answer::Reload;
    }
    Answer::Now(read(state, req, path))
}

/// With a `token`, every request needs it: the 401 for one without.
fn unauthorized(state: &State, req: &Request<Incoming>) -> Option<Response<Full<Bytes>>> {
    if let Some(token) = &state.token {
        let ok = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .is_some_and(|t| constant_time_eq(t, token.as_bytes()));
        if !ok {
            let mut r = text(StatusCode::UNAUTHORIZED, "a bearer token is needed\n");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return Some(r);
        }
    }
    None
}

/// The endpoints answered at once.
fn read(state: &State, req: &Request<Incoming>, path: &str) -> Response<Full<Bytes>> {
    if let Some(rest) = path.strip_prefix("/upstreams/") {
        return drain(state, req.method(), rest);
    }
    if path == "/caches" || path.starts_with("/caches/") {
        return caches::answer(state, req.method(), path, req.uri().query());
    }
    if !matches!(
        path,
        "/metrics" | "/healthz" | "/readyz" | "/status" | "/status.json" | "/config"
    ) {
        return text(StatusCode::NOT_FOUND, "no such admin endpoint\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/metrics" => {
            let body = crate::metrics::render(&state.metrics, &(state.gauges)());
            // OpenMetrics when the scraper asks for it (Prometheus does,
            // in its Accept), else the classic text format.
            let open = req.headers().get_all(header::ACCEPT).iter().any(|v| {
                v.as_bytes()
                    .windows(24)
                    .any(|w| w == b"application/openmetrics-")
            });
            let (body, kind) = if open {
                (
                    crate::metrics::open_metrics(&body),
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
            } else {
                (body, "text/plain; version=0.0.4; charset=utf-8")
            };
            let mut r = text(StatusCode::OK, body);
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
            r
        }
        "/status" => {
            let mut r = text(StatusCode::OK, status::html(&status::status(state)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        "/status.json" => {
            let body = serde_json::to_vec_pretty(&status::status(state)).unwrap_or_default();
            let mut r = text(StatusCode::OK, body);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/config" => config(state),
        _ if state.ready.load(Ordering::Relaxed) => text(StatusCode::OK, "ready\n"),
        _ => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
    }
}

/// `POST /upstreams/GROUP/servers/ADDRESS/drain` or `.../enable`.
fn drain(state: &State, method: &Method, rest: &str) -> Response<Full<Bytes>> {
    let parts: Vec<&str> = rest.split('/').collect();
    let (group, server, action) = match parts.as_slice() {
        [g, "servers", s, a] if matches!(*a, "drain" | "enable") => (*g, *s, *a),
        _ => return text(StatusCode::NOT_FOUND, "no such admin endpoint\n"),
    };
    if method != Method::POST {
        return post_only();
    }
    let drained = action == "drain";
    match (state.drain)(group, server, drained) {
        None => text(
            StatusCode::NOT_FOUND,
            format!("no upstream group `{group}`\n"),
        ),
        Some(0) => text(
            StatusCode::NOT_FOUND,
            format!("group `{group}` has no server `{server}`\n"),
        ),
        Some(_) => {
            tracing::info!(
                group,
                server,
                "admin: server {}",
                if drained { "drained" } else { "enabled" }
            );
            text(
                StatusCode::OK,
                if drained { "drained\n" } else { "enabled\n" },
            )
        }
    }
}

fn post_only() -> Response<Full<Bytes>> {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "POST only\n");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    r
}

/// `GET /config`: the config in force as JSON, secrets redacted.
fn config(state: &State) -> Response<Full<Bytes>> {
    let Some(config) = (state.config)() else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "stopping\n");
    };
    match serde_json::to_vec_pretty(&*config) {
        Ok(mut body) => {
            body.push(b'\n');
            let mut r = text(StatusCode::OK, body);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot write the config as JSON: {e}\n"),
        ),
    }
}

/// `POST /reload`: asks the reloader and waits for its answer.
async fn reload(state: &State) -> Response<Full<Bytes>> {
    let Some(reloads) = state.reloads.get() else {
        return text(
            StatusCode::CONFLICT,
            "no config file to reload: Tidegate was not started with --config\n",
        );
    };
    let (reply, answer) = oneshot::channel();
    // One reload at a time: a second waits here for the first.
    if reloads.send(ReloadAsk { reply }).await.is_err() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    match answer.await {
        Ok(Ok(())) => text(StatusCode::OK, "reloaded\n"),
        // The old config still serves; the body is the problems, one a
        // line, as `tidegate check` prints them.
        Ok(Err(problems)) => text(StatusCode::UNPROCESSABLE_ENTITY, format!("{problems}\n")),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
    }
}

/// Compares without stopping at the first difference, so that the time
/// taken says nothing about the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
