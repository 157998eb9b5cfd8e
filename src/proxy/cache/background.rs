//! `stale-while-revalidate` (RFC 5861 §3): the stale response is the
//! client's answer at once, and the request goes on in a task of its own
//! to revalidate it: routed, rewritten and sent as it would have been
//! (one per key at a time: the fetch others wait for), its answer read
//! whole (up to `max_object`) into the cache, its connection back to the
//! pool. Its access-log line (outcome `background`) is written when the
//! answer is in the cache.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::variant::{refresh, store_decision, stored_variant};
use super::Plan;
use crate::access_log::{End, Entry};
use crate::cache::policy;
use crate::downstream::state::ConnCtx;
use crate::message::admit::Authority;
use crate::message::headers::Found;
use crate::worker::Worker;

use super::super::request::{self, Routed};
use super::super::{forward, Outcome};

/// What the task needs of the request.
pub(crate) struct Request {
    pub(crate) ctx: Rc<ConnCtx>,
    pub(crate) worker: Rc<Worker>,
    pub(crate) route: usize,
    pub(crate) parts: http::request::Parts,
    pub(crate) body: Incoming,
    pub(crate) authority: Option<Authority>,
    pub(crate) client: SocketAddr,
    pub(crate) found: Found,
}

/// Revalidates `plan`'s stale response with the request `r`.
pub(crate) async fn revalidate(r: Request, plan: Box<Plan>) {
    let Request {
        ctx,
        worker: w,
        route,
        mut parts,
        body,
        authority,
        client,
        found,
    } = r;
    let Some(route) = w.config.routes.get(route) else {
        return;
    };
    let authority = authority.as_ref();
    let url = plan.url();
    let entry = Entry {
        start: Instant::now(),
        client,
        method: parts.method.clone(),
        target: parts.uri.clone(),
        version: parts.version,
        host: authority.cloned(),
        headers: w.log.capture(&parts.headers),
        request_id: route
            .request_id
            .as_ref()
            .or(ctx.request_id.as_ref())
            .and_then(|c| parts.headers.get(&c.header).cloned())
            .map(crate::message::id::Id::Kept),
        user: None,
    };
    let group = match request::act(&ctx, route, &mut parts, authority, &body) {
        Ok(Routed::Proxy(group)) => group,
        _ => return,
    };
    let prepared = match request::prepare(
        &ctx, &w, &mut parts, authority, client, route, group, &body, found, false,
    ) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(%url, "background revalidation not sent: {}", e.chain());
            return;
        }
    };
    let sent = forward::to_upstream(
        &ctx, &w, route, group, parts, body, prepared, None, None, None,
    );
    match sent.await {
        Ok(Outcome::Upstream(resp, mut lease, _, _permit, _)) => {
            let (head, body) = resp.into_parts();
            let limit = plan.store.config.max_object as usize;
            let body = lease.with(Limited::new(body, limit).collect()).await;
            let upstream = Some(w.pool.addr(lease.server));
            w.pool.checkin(lease, tokio::time::Instant::now());
            let status = head.status.as_u16();
            let (bytes, outcome) = match body {
                Ok(b) => {
                    let b = b.to_bytes();
                    let n = b.len() as u64;
                    store(plan, Response::from_parts(head, b));
                    (n, "background")
                }
                Err(e) => {
                    tracing::debug!(%url, "background revalidation: {e}");
                    (0, "aborted")
                }
            };
            let end = End {
                status,
                bytes,
                upstream,
                outcome,
                elapsed: entry.start.elapsed(),
            };
            w.log.record(&entry, &end);
        }
        Ok(_) => {}
        Err(e) => tracing::info!(%url, "background revalidation failed: {}", e.chain()),
    }
}

/// The revalidation's answer, into the cache.
fn store(mut plan: Box<Plan>, resp: Response<Bytes>) {
    let now = SystemTime::now();
    let Some(stale) = plan.stale.take() else {
        return;
    };
    let status = resp.status();
    // A 304 freshens the stored response unless it names another (RFC
    // 9111 §4.3.4); then the stored one stays as it is.
    if status == StatusCode::NOT_MODIFIED {
        if policy::revalidates(resp.headers(), &stale.headers) {
            refresh(&plan, &stale, resp.headers(), now);
        }
        return;
    }
    let len = Some(resp.body().len() as u64);
    let Ok(control) = store_decision(&plan, status, resp.headers(), len) else {
        return;
    };
    let (parts, body) = resp.into_parts();
    let len = body.len() as u64;
    let mut v = stored_variant(&plan, status, &parts.headers, control, now);
    v.body = Arc::from(vec![body]);
    v.len = len;
    plan.store
        .put(plan.key(), &plan.url(), Arc::new(v), Some(&stale));
}
