//! A route's `cache`, on the request path: after the gates, the request
//! is looked up ([`begin`], then [`lookup`] unless its key passes or its
//! method looks nothing up): a stored response that may be reused is
//! the answer (with `Age` and `Cache-Status`, and the client's own
//! conditionals and range answered from it); otherwise the request goes
//! upstream (revalidating a stored response with its validators), and
//! the response phase ([`response`]) stores what may be stored as it
//! streams to the client, freshens a stored response with a 304, serves
//! a stale one when the origin fails and `stale-if-error` allows, and
//! invalidates on unsafe methods (RFC 9111 §4.4).
//!
//! Concurrent misses for one key wait for the first one's response (up
//! to the cache's `lock_timeout`), then look again: one fetch fills the
//! cache for all of them. A response that turns out not to be storable
//! lets them go to the origin themselves.

mod background;
pub(crate) mod body;
mod range;
mod response;
mod variant;

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};

use body::{CachedBody, Source};

use super::response_body::ProxyBody;
use crate::cache::growing::Growing;
use crate::cache::key::{key, written, Target};
use crate::cache::policy::{
    self, CacheStatus, Conditional, Fwd, RequestControl, RequestFields, Reuse,
};
use crate::cache::store::{Filling, Store, Variant};
use crate::message::admit::Authority;
use crate::metrics::{CacheResult, Counters};

pub(crate) use crate::message::headers::CACHE_STATUS;

/// What the response phase needs of a request that went upstream.
pub(crate) struct Plan {
    store: Arc<Store>,
    /// `None`: not made, for a plain miss on a passed key (see
    /// [`begin`]), which needs it only to store (then [`Plan::key`]
    /// makes it from the URL).
    key: Option<Bytes>,
    /// Its URL's parts (what purges match, what unsafe methods
    /// invalidate).
    scheme: &'static str,
    /// The request's `host[:port]` (any case).
    authority: Option<Authority>,
    path_and_query: http::uri::PathAndQuery,
    method: Method,
    /// The request's fields as the client sent them (what `Vary`
    /// selects on, and the conditionals answered here); `None` for a
    /// plain miss that fills nothing others wait for (see [`lookup`]).
    request: Option<HeaderMap>,
    /// Which of the fields the cache acts on it has.
    fields: RequestFields,
    request_cc: RequestControl,
    request_time: SystemTime,
    /// The stored response being revalidated.
    stale: Option<Arc<Variant>>,
    /// The fetch others wait for.
    guard: Option<crate::cache::store::FillGuard>,
    fwd: Fwd,
    collapsed: bool,
    /// The cache's config index (its metrics).
    index: usize,
}

impl Plan {
    /// The key, made now if the lookup did not make it (from the URL: a
    /// plan without one has a key of the URL alone).
    fn key(&self) -> Bytes {
        match &self.key {
            Some(k) => k.clone(),
            None => {
                let t = Target {
                    scheme: self.scheme,
                    host: self.authority.as_ref().map_or(&[][..], Authority::as_bytes),
                    path: self.path_and_query.path(),
                    query: self.path_and_query.query(),
                };
                key(&self.store.config.key, &t, self.request())
            }
        }
    }

    /// The request's fields as kept (none: an empty map).
    fn request(&self) -> &HeaderMap {
        static NONE: std::sync::LazyLock<HeaderMap> = std::sync::LazyLock::new(HeaderMap::new);
        self.request.as_ref().unwrap_or(&NONE)
    }

    /// The host and port, lower case.
    fn host(&self) -> String {
        self.authority
            .as_ref()
            .map_or(String::new(), |a| a.as_str().to_ascii_lowercase())
    }

    /// The URL stored responses are kept under. (Written by hand:
    /// `format!` took about 2,000 instructions.)
    fn url(&self) -> String {
        let host = self.authority.as_ref().map_or("", Authority::as_str);
        let path = self.path_and_query.as_str();
        let mut url = String::with_capacity(self.scheme.len() + 3 + host.len() + path.len());
        url.push_str(self.scheme);
        url.push_str("://");
        let at = url.len();
        url.push_str(host);
        url[at..].make_ascii_lowercase();
        url.push_str(path);
        url
    }
}

/// Counts a request's `result` for cache `index`.
fn count(counters: Option<&Counters>, index: usize, result: CacheResult) {
    if let Some(c) = counters {
        c.cache(index, result);
    }
}

/// What the lookup found. (Returned once, straight into the response:
/// boxing the hit would cost an allocation per hit.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum Looked {
    /// A stored response answers.
    Hit(Response<ProxyBody>),
    /// Upstream, then [`response`].
    Forward(Box<Plan>),
    /// A stale response answers at once (`stale-while-revalidate`); the
    /// request goes on in the background ([`revalidate`]).
    Stale(Response<ProxyBody>, Box<Plan>),
}

pub(crate) use background::{revalidate, Request as Background};
pub(crate) use response::response;

/// What a lookup knows of a request before it looks (see [`begin`]).
pub(crate) struct Asked<'a> {
    store: &'a Arc<Store>,
    index: usize,
    scheme: &'static str,
    authority: Option<&'a Authority>,
    now: SystemTime,
    fields: RequestFields,
    request_cc: RequestControl,
}

impl Asked<'_> {
    /// The plan, made in its box only for a request that goes upstream (a
    /// hit needs none of its copies), straight into its allocation (made
    /// on the stack and moved into a box, it was copied twice).
    fn plan(&self, parts: &http::request::Parts, key: Option<Bytes>, fwd: Fwd) -> Box<Plan> {
        Box::write(
            Box::new_uninit(),
            Plan {
                store: self.store.clone(),
                key,
                scheme: self.scheme,
                authority: self.authority.cloned(),
                path_and_query: parts
                    .uri
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
                method: parts.method.clone(),
                request: None,
                fields: self.fields,
                request_cc: self.request_cc,
                request_time: self.now,
                stale: None,
                guard: None,
                fwd,
                collapsed: false,
                index: self.index,
            },
        )
    }
}

/// What [`begin`] found.
pub(crate) enum Begun<'a> {
    /// Upstream without a look, then [`response`].
    Forward(Box<Plan>),
    /// To be looked up ([`lookup`]) under its key; `true`: the key passes
    /// ([`Store::passing`]).
    Look(Asked<'a>, Bytes, bool),
}

/// What the request asks of cache `index` (its fields, directives and
/// key), and whether it is looked up there. (Not async: a miss on a key
/// that passes, or an unsafe method, goes on without a lookup's future.)
pub(crate) fn begin<'a>(
    store: &'a Arc<Store>,
    index: usize,
    tls: bool,
    parts: &http::request::Parts,
    authority: Option<&'a Authority>,
) -> Begun<'a> {
    let fields = RequestFields::of(&parts.headers);
    let asked = Asked {
        store,
        index,
        scheme: if tls { "https" } else { "http" },
        authority,
        now: SystemTime::now(),
        fields,
        request_cc: RequestControl::read(&parts.headers, &fields),
    };
    // Only GET and HEAD look anything up: other methods' keys are those
    // they invalidate, made once the response says so.
    if parts.method != Method::GET && parts.method != Method::HEAD {
        let mut plan = asked.plan(parts, None, Fwd::Method);
        if !is_safe(&parts.method) {
            plan.request = Some(parts.headers.clone());
        }
        return Begun::Forward(plan);
    }
    // (The path as the plan keeps it, for [`Plan::key`] to make the same.)
    let (path, query) = parts
        .uri
        .path_and_query()
        .map_or(("/", None), |pq| (pq.path(), pq.query()));
    let target = Target {
        scheme: asked.scheme,
        host: authority.map_or(&[][..], Authority::as_bytes),
        path,
        query,
    };
    let mut room = [0; crate::cache::key::SMALL];
    let written = written(&store.config.key, &target, &parts.headers, &mut room);
    // A key whose last response could not be stored is not looked up.
    let pass = store.passing(written.as_bytes(), asked.now);
    // A plain miss for such a key goes on without its key made: made
    // from the URL if its response is stored.
    if pass && store.url_keys && !fields.precondition && !asked.request_cc.only_if_cached {
        let mut plan = asked.plan(parts, None, Fwd::UriMiss);
        if fields.answered {
            plan.request = Some(parts.headers.clone());
        }
        return Begun::Forward(plan);
    }
    let k = written.to_bytes();
    Begun::Look(asked, k, pass)
}

/// Looks the request up (as [`begin`] asked it) under key `k` (`pass`:
/// it passes).
///
/// (An async block, not an `async fn`, which would first move its
/// arguments within its own state; `asked` by reference, where the
/// caller keeps it.)
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub(crate) fn lookup<'a>(
    asked: &'a Asked<'a>,
    k: Bytes,
    mut pass: bool,
    counters: Option<&'a Counters>,
    parts: &'a mut http::request::Parts,
) -> impl std::future::Future<Output = Looked> + use<'a> {
    async move {
        let Asked {
            store,
            index,
            now,
            fields,
            request_cc,
            ..
        } = *asked;
        let get = parts.method == Method::GET;
        let mut waited = false;
        let mut from_disk = false;
        let mut collapsed = false;
        let mut guard = None;
        let mut stale = None;
        let mut fwd;
        loop {
            let mut entry = match pass {
                true => None,
                false => store.get(&k),
            };
            // A memory miss may be on disk (read off this thread).
            if entry.is_none() && !pass && store.promote_from_disk(&k).await {
                entry = store.get(&k);
                from_disk = true;
            }
            let found = entry.as_ref().and_then(|e| {
                e.variants
                    .iter()
                    .find(|v| policy::vary_matches(&v.vary, &v.vary_values, &parts.headers))
            });
            fwd = match (&entry, found) {
                (None, _) => Fwd::UriMiss,
                (Some(e), None) if e.variants.is_empty() => Fwd::UriMiss,
                (Some(_), None) => Fwd::VaryMiss,
                (_, Some(v)) => {
                    let v = v.clone();
                    let served = |status| {
                        let at = Stored::new(store, &k, &parts.method);
                        serve(at, &v, &parts.headers, now, status, None)
                    };
                    match policy::decide_reuse(&request_cc, &v.control, &v.times, now) {
                        _ if fields.precondition => Fwd::Request,
                        Reuse::Fresh | Reuse::StaleAllowed => {
                            let status = hit(&v, now, waited, from_disk.then_some("disk"));
                            count(counters, index, CacheResult::Hit);
                            return Looked::Hit(served(status));
                        }
                        Reuse::StaleWhileRevalidate => {
                            let status = hit(&v, now, false, Some("stale-while-revalidate"));
                            count(counters, index, CacheResult::Stale);
                            let resp = served(status);
                            // One revalidation per key at a time, for a GET.
                            if !get {
                                return Looked::Hit(resp);
                            }
                            let Filling::Mine(g) = store.fill(&k) else {
                                return Looked::Hit(resp);
                            };
                            let mut plan = asked.plan(parts, Some(k.clone()), Fwd::Stale);
                            plan.guard = Some(g);
                            plan.stale = Some(v);
                            plan.request = Some(parts.headers.clone());
                            to_origin(parts, fields.answered, plan.stale.as_deref());
                            return Looked::Stale(resp, plan);
                        }
                        // Served only once the origin agrees.
                        Reuse::Validate => {
                            let fwd = match v.times.is_fresh(now) {
                                true => Fwd::Request,
                                false => Fwd::Stale,
                            };
                            stale = Some(v);
                            fwd
                        }
                    }
                }
            };
            // Preconditions only the origin evaluates (RFC 9111 §4.3.2) go
            // there as they came, and what comes back is not stored.
            if fields.precondition {
                let mut plan = asked.plan(parts, Some(k.clone()), fwd);
                plan.stale = stale;
                plan.collapsed = collapsed;
                plan.request = Some(parts.headers.clone());
                return Looked::Forward(plan);
            }
            if request_cc.only_if_cached && stale.is_none() {
                let status = CacheStatus {
                    fwd: Some(fwd),
                    detail: Some("only-if-cached"),
                    ..CacheStatus::default()
                };
                let mut resp = Response::new(ProxyBody::full(Bytes::new()));
                *resp.status_mut() = StatusCode::GATEWAY_TIMEOUT;
                resp.headers_mut()
                    .insert(CACHE_STATUS.clone(), status.header_value(NAME));
                return Looked::Hit(resp);
            }
            if !get || waited || pass {
                break;
            }
            match store.fill(&k) {
                Filling::Mine(g) => {
                    guard = Some(g);
                    break;
                }
                Filling::Wait(fill) => {
                    waited = true;
                    collapsed = true;
                    // A plain GET streams the response as it is stored; one
                    // the stored response must answer whole (a range, a
                    // conditional) waits for its end.
                    let stream = !fields.answered;
                    if let Some(g) = store.wait(&fill, stream).await {
                        let v = &g.head;
                        if policy::vary_matches(&v.vary, &v.vary_values, &parts.headers)
                            && matches!(
                                policy::decide_reuse(&request_cc, &v.control, &v.times, now),
                                Reuse::Fresh
                            )
                        {
                            count(counters, index, CacheResult::Hit);
                            return Looked::Hit(growing(&g, now));
                        }
                        // Not this request's answer: after it, look again.
                        store.wait(&fill, false).await;
                    }
                    pass = store.passing(&k, now);
                }
            }
        }
        let mut plan = asked.plan(parts, Some(k), fwd);
        plan.stale = stale;
        plan.guard = guard;
        plan.collapsed = collapsed;
        // A plain miss for a key whose last response could not be stored
        // fills nothing others wait for and asks nothing the cache answers:
        // it keeps no copy of the request's fields (its response is stored
        // only if it varies on none).
        if !pass || waited || fields.answered || plan.stale.is_some() {
            plan.request = Some(parts.headers.clone());
        }
        if get && (plan.stale.is_some() || plan.guard.is_some()) {
            to_origin(parts, fields.answered, plan.stale.as_deref());
        }
        Looked::Forward(plan)
    }
}

/// The response being stored that `g` shows, as the answer to a miss
/// that waited for its fetch: its body streamed as it comes.
fn growing(g: &Arc<Growing>, now: SystemTime) -> Response<ProxyBody> {
    let v = &g.head;
    let mut headers = v.headers.clone();
    headers.insert(header::AGE, policy::age_header(v.times.current_age(now)));
    let status = hit(v, now, true, None);
    headers.append(CACHE_STATUS.clone(), status.header_value(NAME));
    let body = CachedBody::growing(g.clone());
    let mut resp = Response::new(ProxyBody::Cached(Box::new((body, None))));
    *resp.status_mut() = v.status;
    *resp.headers_mut() = headers;
    resp
}

/// `Cache-Status` of a hit on `v`.
fn hit(v: &Variant, now: SystemTime, collapsed: bool, detail: Option<&'static str>) -> CacheStatus {
    CacheStatus {
        hit: true,
        ttl: Some(v.times.ttl(now)),
        collapsed,
        detail,
        ..CacheStatus::default()
    }
}

/// A GET that fetches for the cache: the client's conditionals and range
/// removed (the cache answers them from the full response), `stale`'s
/// validators added. (`answered`: it has some of those.)
fn to_origin(parts: &mut http::request::Parts, answered: bool, stale: Option<&Variant>) {
    // (A request with `If-Match` or `If-Unmodified-Since` does neither:
    // see [`RequestFields`].)
    if answered {
        for name in &policy::ANSWERED {
            parts.headers.remove(name);
        }
    }
    if let Some(v) = stale {
        for (n, val) in policy::validators(&v.headers) {
            parts.headers.insert(n, val);
        }
    }
}

/// Whether a request with `method` leaves stored responses as they are
/// (RFC 9110 §9.2.1); the others invalidate (RFC 9111 §4.4).
fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The name this cache goes by in `Cache-Status`.
const NAME: &str = "tidegate";

/// Where a stored response is served from: its cache and key, and the
/// method it answers.
struct Stored<'a> {
    store: &'a Arc<Store>,
    key: &'a Bytes,
    method: &'a Method,
}

impl<'a> Stored<'a> {
    fn new(store: &'a Arc<Store>, key: &'a Bytes, method: &'a Method) -> Stored<'a> {
        Stored { store, key, method }
    }
}

impl Plan {
    /// (Of a plan that revalidates or stands in a stored response: one
    /// that has its key.)
    fn stored(&self) -> Stored<'_> {
        static NONE: Bytes = Bytes::new();
        debug_assert!(self.key.is_some());
        Stored::new(
            &self.store,
            self.key.as_ref().unwrap_or(&NONE),
            &self.method,
        )
    }
}

/// A stored response (`at`'s variant `v`) as the answer to a request
/// with fields `req`: its head with `Age` and `Cache-Status`, the
/// client's conditionals and range answered; `upstream`: the exchange
/// that revalidated it.
fn serve(
    at: Stored<'_>,
    v: &Arc<Variant>,
    req: &HeaderMap,
    now: SystemTime,
    status: CacheStatus,
    upstream: Option<super::response_body::UpstreamBody>,
) -> Response<ProxyBody> {
    let method = at.method;
    let mut headers = v.headers.clone();
    headers.insert(header::AGE, policy::age_header(v.times.current_age(now)));
    headers.append(CACHE_STATUS.clone(), status.header_value(NAME));
    let mut resp = Response::new(ProxyBody::full(Bytes::new()));
    // (`If-Range` is answered in `range`.)
    match policy::client_conditional(method, req, v.status, &v.headers) {
        Conditional::NotModified => {
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            not_modified_fields(&headers, resp.headers_mut());
            return resp;
        }
        // (Preconditions for the origin went there: see `lookup`.)
        Conditional::Forward | Conditional::None => {}
    }
    let (code, skip, len) = match range::select(method, req, v) {
        range::Selected::Whole => (v.status, 0, v.len),
        range::Selected::Part { start, len } => {
            headers.insert(
                header::CONTENT_RANGE,
                range::content_range(start, len, v.len),
            );
            (StatusCode::PARTIAL_CONTENT, start, len)
        }
        range::Selected::Unsatisfiable => {
            *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            let h = resp.headers_mut();
            h.insert(header::CONTENT_RANGE, range::unsatisfiable(v.len));
            h.insert(CACHE_STATUS.clone(), status.header_value(NAME));
            return resp;
        }
    };
    *resp.status_mut() = code;
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    *resp.headers_mut() = headers;
    if method != Method::HEAD {
        let body = match code == v.status {
            true => CachedBody::whole(Source {
                variant: v.clone(),
                store: at.store.clone(),
                key: at.key.clone(),
            }),
            false => CachedBody::new(v.body.clone(), skip, len),
        };
        *resp.body_mut() = ProxyBody::Cached(Box::new((body, upstream)));
    }
    resp
}

/// What a 304 carries of the response it stands for (RFC 9110 §15.4.5).
fn not_modified_fields(from: &HeaderMap, to: &mut HeaderMap) {
    for name in [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::VARY,
        header::LAST_MODIFIED,
        header::AGE,
        CACHE_STATUS.clone(),
    ] {
        for v in from.get_all(&name) {
            to.append(name.clone(), v.clone());
        }
    }
}
