//! RFC 9111 for a shared cache, as pure functions over `http` types and
//! `SystemTime`: no I/O, no global state. The store and the proxy phases
//! (`cache/`, `proxy/`) call these to decide; nothing here remembers.
//!
//! - `directive.rs`: the `Cache-Control` syntax; `control.rs`: response
//!   directives from it or from an RFC 9213 targeted field (`targeted.rs`:
//!   the Structured Field Dictionary those are); `request.rs`: request
//!   directives.
//! - `fields.rs`: which of the fields these read a map holds, in one pass.
//! - `rules.rs`: the settings the RFC leaves open (from the config).
//! - `storing.rs`: may a response be stored (§3), and what of it (§3.1).
//! - `freshness.rs`: freshness lifetime, age, `Age` (§4.2, §5.1).
//! - `reuse.rs`: fresh, stale-but-allowed, or validate (§4, RFC 5861).
//! - `vary.rs`: secondary keys (§4.1).
//! - `conditional.rs`: client conditionals, validators (RFC 9110 §13, §4.3).
//! - `update.rs`: 304 and HEAD updates (§3.2, §4.3.4).
//! - `invalidate.rs`: what unsafe requests invalidate (§4.4).
//! - `status.rs`: the `Cache-Status` member (RFC 9211).

mod conditional;
mod control;
mod date;
mod directive;
mod fields;
mod freshness;
mod invalidate;
mod request;
mod reuse;
mod rules;
mod status;
mod storing;
mod targeted;
mod update;
mod vary;

pub(crate) use conditional::{client_conditional, validators, Conditional};
pub(crate) use control::ResponseControl;
pub(crate) use directive::{directives, Arg};
pub(crate) use fields::{RequestFields, ResponseFields, ANSWERED};
pub(crate) use freshness::{age_header, freshness_lifetime, parse_date, Times};
pub(crate) use invalidate::invalidation_targets;
pub(crate) use request::RequestControl;
pub(crate) use reuse::{decide_reuse, stale_if_error_allows, Reuse};
pub(crate) use status::{CacheStatus, Fwd};
pub(crate) use storing::{decide_store, strip_unstorable, Rules, StoreDecision};
pub(crate) use update::{freshen, head_updates, revalidates, select_for_304};
pub(crate) use vary::{vary_matches, vary_names, vary_values, VaryNames};

/// A header map of `fields`, for the tests.
#[cfg(test)]
pub(crate) fn test_fields(fields: &[(&str, &str)]) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (n, v) in fields {
        h.append(
            http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}
