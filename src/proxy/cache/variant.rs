//! What a response becomes in the cache: whether it may be stored, the
//! variant it makes, and a stored variant freshened by a 304 (or a
//! HEAD's 200).

use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, StatusCode};

use super::{Plan, CACHE_STATUS};
use crate::cache::policy::{self, StoreDecision};
use crate::cache::store::Variant;

/// Whether the response may be stored (with its directives, read once),
/// or why not. `len`: its body's length, when known.
pub(super) fn store_decision(
    plan: &Plan,
    status: StatusCode,
    h: &HeaderMap,
    len: Option<u64>,
) -> Result<policy::ResponseControl, &'static str> {
    if plan.fields.precondition {
        return Err("precondition");
    }
    let rules = &plan.store.rules;
    let fields = policy::ResponseFields::of(h, rules.targeted.as_ref());
    let control = policy::ResponseControl::read(h, rules, &fields);
    match policy::decide_store(
        &plan.method,
        plan.fields.authorization,
        &plan.request_cc,
        status,
        h,
        &fields,
        &control,
        rules,
    ) {
        StoreDecision::DontStore(why) => return Err(why),
        StoreDecision::Store { .. } => {}
    }
    // What it varies on is unknown without the request's fields, which
    // a miss that fills nothing others wait for does not keep.
    if fields.vary && plan.request.is_none() {
        return Err("pass");
    }
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
        .put(plan.key(), &plan.url(), fresh.clone(), Some(v));
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
    let vary_values = policy::vary_values(&vary, plan.request());
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
