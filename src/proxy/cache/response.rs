//! The response phase of a request that went upstream: what the cache
//! makes of its response (stored as it streams, a stored one freshened or
//! served stale, what an unsafe method invalidates dropped), and the
//! `Cache-Status` it gets.

use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode};

use super::body::Storing;
use super::variant::{refresh, store_decision, stored_variant};
use super::{count, is_safe, not_modified_fields, serve, Plan, CACHE_STATUS, NAME};
use crate::cache::key::{key, Target};
use crate::cache::policy::{self, CacheStatus, Conditional, Fwd};
use crate::metrics::{CacheResult, Counters};
use crate::proxy::response_body::{ProxyBody, UpstreamBody};

/// How long misses for a key whose response could not be stored go on
/// without waiting for one another (Varnish's hit-for-miss lasts 120 s).
const PASS: std::time::Duration = std::time::Duration::from_secs(30);

/// The response to a request that went upstream, as the cache makes it
/// (in place: a response is large to move): stored as it streams, or a
/// stored one freshened or served stale. With `Cache-Status` added, or
/// returned for the caller to add to the upstream's response as it is
/// (on HTTP/1.1, written after its fields: see `proxy::handle`).
#[must_use]
pub(crate) fn response(
    resp: &mut Response<ProxyBody>,
    mut plan: Box<Plan>,
    counters: Option<&Counters>,
) -> Option<HeaderValue> {
    let index = plan.index;
    // (Read only where a stored response is served or made.)
    let now = || SystemTime::now();
    let status = resp.status();
    if plan.method != Method::GET && plan.method != Method::HEAD {
        count(counters, index, CacheResult::Bypass);
        if !is_safe(&plan.method) {
            invalidate(&plan, resp);
        }
        let cs = CacheStatus {
            fwd: Some(Fwd::Method),
            fwd_status: Some(status.as_u16()),
            ..CacheStatus::default()
        };
        return Some(cs.header_value(NAME));
    }
    let mut cs = CacheStatus {
        fwd: Some(plan.fwd),
        fwd_status: Some(status.as_u16()),
        collapsed: plan.collapsed,
        ..CacheStatus::default()
    };
    let len = match resp.body() {
        ProxyBody::Upstream(u) => u.size_hint().exact(),
        _ => None,
    };
    if !matches!(resp.body(), ProxyBody::Upstream(_)) {
        // Our own answer (no server, a timeout): a stale response may
        // stand in for it.
        let now = now();
        if let Some(v) = plan.stale.as_ref().filter(|v| {
            status.is_server_error() && policy::stale_if_error_allows(&v.control, &v.times, now)
        }) {
            cs.detail = Some("stale-if-error");
            cs.fwd_status = None;
            count(counters, index, CacheResult::Stale);
            *resp = serve(plan.stored(), v, plan.request(), now, cs, None);
            return None;
        }
        count(counters, index, CacheResult::Miss);
        return Some(cs.header_value(NAME));
    }
    if let Some(v) = plan.stale.take() {
        let now = now();
        // (A GET went with `v`'s validators; a HEAD with the client's.)
        let get = plan.method == Method::GET;
        let headers = resp.headers();
        if status == StatusCode::NOT_MODIFIED {
            if get && policy::revalidates(headers, &v.headers)
                || !policy::select_for_304(headers, &[&v.headers]).is_empty()
            {
                let fresh = refresh(&plan, &v, headers, now);
                cs.ttl = Some(fresh.times.ttl(now));
                count(counters, index, CacheResult::Revalidated);
                let upstream = take_upstream(resp);
                *resp = serve(plan.stored(), &fresh, plan.request(), now, cs, upstream);
                return None;
            }
            // A 304 naming another response than the one asked about
            // updates nothing (RFC 9111 §4.3.4), but "not modified" is
            // the origin's word: the client (whose request may not have
            // been conditional) gets the stored response as it is.
            if get {
                cs.detail = Some("not-updated");
                count(counters, index, CacheResult::Stale);
                let upstream = take_upstream(resp);
                *resp = serve(plan.stored(), &v, plan.request(), now, cs, upstream);
                return None;
            }
        }
        // A HEAD's 200 freshens the stored GET when its validators agree,
        // else that one is dropped (RFC 9111 §4.3.5).
        if plan.method == Method::HEAD && status == StatusCode::OK {
            if policy::head_updates(headers, &v.headers) {
                refresh(&plan, &v, headers, now);
            } else {
                plan.store.remove(&plan.key());
            }
        }
        if status.is_server_error() && policy::stale_if_error_allows(&v.control, &v.times, now) {
            cs.detail = Some("stale-if-error");
            count(counters, index, CacheResult::Stale);
            // The upstream's answer is not read: its connection closes.
            *resp = serve(plan.stored(), &v, plan.request(), now, cs, None);
            return None;
        }
        plan.stale = Some(v);
    }
    count(counters, index, CacheResult::Miss);
    match store_decision(&plan, status, resp.headers(), len) {
        Ok(control) => {
            let now = now();
            let variant = stored_variant(&plan, status, resp.headers(), control, now);
            cs.stored = true;
            cs.ttl = Some(variant.times.ttl(now));
            let mut storing = Box::new(Storing {
                store: plan.store.clone(),
                key: plan.key(),
                url: plan.url(),
                guard: plan.guard.take(),
                variant,
                replaces: plan.stale.take(),
                body: super::body::Joined::new(len),
                len: 0,
                // (`store_decision` refused a declared length over
                // `max_object`.)
                declared: len.is_some(),
                writer: None,
            });
            storing.offer();
            if let ProxyBody::Upstream(upstream) = resp.body_mut() {
                upstream.store(storing);
            }
            // The client's conditionals, removed to fill the cache,
            // answered from the full response.
            if status == StatusCode::OK && plan.fields.answered {
                if let Conditional::NotModified =
                    policy::client_conditional(&plan.method, plan.request(), status, resp.headers())
                {
                    resp.headers_mut()
                        .append(CACHE_STATUS.clone(), cs.header_value(NAME));
                    let mut not_modified = Response::new(ProxyBody::full(Bytes::new()));
                    *not_modified.status_mut() = StatusCode::NOT_MODIFIED;
                    not_modified_fields(resp.headers(), not_modified.headers_mut());
                    // The body is still read, into the cache.
                    let body = std::mem::replace(resp, not_modified).into_body();
                    tokio::task::spawn_local(drain(body));
                    return None;
                }
            }
        }
        Err(why) => {
            cs.detail = Some(why);
            // The fetch others would wait for found a response that
            // cannot be stored (not for this request's own reasons): for a
            // while, misses go on without waiting for one another.
            let own = matches!(why, "authorization" | "precondition" | "pass")
                || plan.request_cc.no_store;
            // (A fetch others wait for has its key.)
            if let (Some(_), Some(k), false) = (&plan.guard, &plan.key, own) {
                plan.store.pass(k, PASS);
            }
        }
    }
    Some(cs.header_value(NAME))
}

/// The upstream body of `resp` (left empty), to be read on for a stored
/// response that answers instead.
fn take_upstream(resp: &mut Response<ProxyBody>) -> Option<UpstreamBody> {
    match std::mem::replace(resp.body_mut(), ProxyBody::full(Bytes::new())) {
        ProxyBody::Upstream(u) => Some(u),
        _ => None,
    }
}

/// After an unsafe request's response `resp`: what it invalidates,
/// dropped (RFC 9111 §4.4).
fn invalidate(plan: &Plan, resp: &Response<ProxyBody>) {
    let targets = policy::invalidation_targets(
        &plan.method,
        resp.status(),
        plan.scheme,
        &plan.host(),
        plan.path_and_query.as_str(),
        resp.headers(),
    );
    for (s, a, p) in targets {
        let (path, query) = match p.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (p.as_str(), None),
        };
        let t = Target {
            scheme: &s,
            host: a.as_bytes(),
            path,
            query,
        };
        plan.store
            .remove(&key(&plan.store.config.key, &t, plan.request()));
    }
}

/// Reads a body to its end (into the cache), for no one.
async fn drain(mut body: ProxyBody) {
    use http_body_util::BodyExt;
    while let Some(Ok(_)) = body.frame().await {}
}
