//! What a response becomes in the cache: whether it may be stored, the
//! variant it makes, and a stored variant freshened by a 304 (or a
//! HEAD's 200).

use std::sync::Arc;
use std::time::SystemTime;

use http::{header, HeaderMap, StatusCode};

use super::{Plan, CACHE_STATUS};
use crate::cache::policy::{self, StoreDecision};
use crate::cache::store::Variant;

/// Whether the response may be stored (with its directives, read once),
/// or why not.
pub(super) fn store_decision(
    plan: &Plan,
    status: StatusCode,
    h: &HeaderMap,
) -> Result<policy::ResponseControl, &'static str> {
    if plan.precondition {
        return Err("precondition");
    }
    let rules = &plan.store.rules;
    let control = policy::ResponseControl::parse(h, rules);
    match policy::decide_store(
        &plan.method,
        &plan.request,
        &plan.request_cc,
        status,
        h,
        &control,
        rules,
    ) {
        StoreDecision::DontStore(why) => return Err(why),
        StoreDecision::Store { .. } => {}
    }
    let len = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if len.is_some_and(|l| l > plan.store.config.max_object) {
        return Err("too-large");
    }
    Ok(control)
}

/// `v` freshened with the fields `new` of a 304 (RFC 9111 §4.3.4) or
/// of a HEAD's 200 (§4.3.5), stored in its place.
pub(super) fn refresh(
    plan: &Plan,
    v: &Arc<Variant>,
    new: &HeaderMap,
    now: SystemTime,
) -> Arc<Variant> {
    let fresh = Arc::new(freshen(plan, v, new, now));
    plan.store
        .put(plan.key.clone(), &plan.url(), fresh.clone(), Some(v));
    fresh
}

fn freshen(plan: &Plan, v: &Variant, new: &HeaderMap, now: SystemTime) -> Variant {
    let rules = &plan.store.rules;
    let mut headers = v.headers.clone();
    policy::freshen(&mut headers, new, rules);
    let control = policy::ResponseControl::parse(&headers, rules);
    let lifetime = policy::freshness_lifetime(v.status, &headers, &control, rules, now);
    let times = policy::Times::new(plan.request_time, now, &headers, lifetime);
    Variant {
        status: v.status,
        headers,
        control,
        times,
        vary: v.vary.clone(),
        vary_values: v.vary_values.clone(),
        body: v.body.clone(),
        len: v.len,
        // (The same body: its compressed forms stay right.)
        encoded: v.encoded.clone(),
    }
}

/// The variant a storable response with `status` and fields `h` makes
/// (its body still empty).
pub(super) fn stored_variant(
    plan: &Plan,
    status: StatusCode,
    h: &HeaderMap,
    control: policy::ResponseControl,
    now: SystemTime,
) -> Variant {
    let rules = &plan.store.rules;
    let mut headers = h.clone();
    policy::strip_unstorable(&mut headers, rules);
    headers.remove(&CACHE_STATUS);
    let lifetime = policy::freshness_lifetime(status, &headers, &control, rules, now);
    // (`Vary: *` is never stored: `decide_store` said so first.)
    let vary = policy::vary_names(&headers).unwrap_or(policy::VaryNames(Vec::new()));
    let vary_values = policy::vary_values(&vary, &plan.request);
    Variant {
        status,
        times: policy::Times::new(plan.request_time, now, &headers, lifetime),
        headers,
        control,
        vary,
        vary_values,
        body: Arc::from(Vec::new()),
        len: 0,
        encoded: Default::default(),
    }
}
