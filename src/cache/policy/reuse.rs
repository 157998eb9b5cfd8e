//! May a stored response answer a request without the origin? (RFC 9111
//! §4, §4.2.4, §5.2.1; RFC 5861.) Runs on every hit: no parsing here,
//! only the directives and times parsed when the response was stored.
//!
//! Decisions left to the cache:
//! - request `max-age=0` always validates (even an age of zero seconds);
//! - a request with `min-fresh` gets no stale-while-revalidate answer (it
//!   asked for freshness to spare);
//! - `immutable` (RFC 8246) does not override a request's `no-cache`: it
//!   is advice to user agents, and a shared cache honours the reload;
//! - `only-if-cached` (§5.2.1.7) is the caller's: answer 504 when this
//!   says [`Reuse::Validate`] or nothing is stored.

use std::time::{Duration, SystemTime};

use super::control::ResponseControl;
use super::freshness::Times;
use super::request::RequestControl;

/// How a stored response may be used for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reuse {
    /// Fresh: serve it.
    Fresh,
    /// Stale, but the request's `max-stale` allows it (§5.2.1.2).
    StaleAllowed,
    /// Stale within `stale-while-revalidate`: serve now, revalidate in the
    /// background (RFC 5861 §3).
    StaleWhileRevalidate,
    /// Must be validated with the origin first (stale, `no-cache`, the
    /// request's `no-cache` or `max-age`, ...).
    Validate,
}

/// Decides how a stored response with these directives and times may be
/// reused at `now` for a request with `req_cc` (RFC 9111 §4, §4.2.4).
/// `must-revalidate`, `proxy-revalidate` and `s-maxage` forbid any stale
/// answer (§5.2.2.2, §5.2.2.8, §5.2.2.10), even with `max-stale`.
pub(crate) fn decide_reuse(
    req_cc: &RequestControl,
    resp_cc: &ResponseControl,
    times: &Times,
    now: SystemTime,
) -> Reuse {
    if resp_cc.no_cache || req_cc.no_cache {
        return Reuse::Validate;
    }
    let age = times.current_age(now);
    match req_cc.max_age {
        Some(max) if max.is_zero() || age > max => return Reuse::Validate,
        _ => {}
    }
    let wanted = age.saturating_add(req_cc.min_fresh.unwrap_or(Duration::ZERO));
    if times.lifetime > wanted {
        return Reuse::Fresh;
    }
    if resp_cc.forbids_stale() {
        return Reuse::Validate;
    }
    let stale = times.staleness(now);
    match req_cc.max_stale {
        Some(None) => return Reuse::StaleAllowed,
        Some(Some(max)) if stale <= max => return Reuse::StaleAllowed,
        _ => {}
    }
    match resp_cc.stale_while_revalidate {
        Some(window) if req_cc.min_fresh.is_none() && stale <= window => {
            Reuse::StaleWhileRevalidate
        }
        _ => Reuse::Validate,
    }
}

/// Whether a stored response may be served because the origin failed
/// (RFC 5861 §4 `stale-if-error`): fresh, or stale within the window;
/// never with `no-cache` (it may not be used unvalidated, RFC 9111
/// §5.2.2.4), nor stale with `must-revalidate`, `proxy-revalidate` or
/// `s-maxage`. Without `stale-if-error` nothing stale is served on an
/// error (§4.2.4 allows it when disconnected; this cache does not).
pub(crate) fn stale_if_error_allows(
    resp_cc: &ResponseControl,
    times: &Times,
    now: SystemTime,
) -> bool {
    if resp_cc.no_cache {
        return false;
    }
    if times.is_fresh(now) {
        return true;
    }
    if resp_cc.forbids_stale() {
        return false;
    }
    resp_cc
        .stale_if_error
        .is_some_and(|window| times.staleness(now) <= window)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::rules::Rules;
    use http::header::{HeaderMap, HeaderName, HeaderValue};

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + S(1_704_067_200)
    }

    fn resp(cc: &str) -> ResponseControl {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_str(cc).unwrap(),
        );
        ResponseControl::parse(&h, &Rules::default())
    }

    fn req(cc: &str) -> RequestControl {
        let mut h = HeaderMap::new();
        if !cc.is_empty() {
            h.insert(
                HeaderName::from_static("cache-control"),
                HeaderValue::from_str(cc).unwrap(),
            );
        }
        RequestControl::parse(&h)
    }

    /// A response stored at t0 with age 0 and this lifetime, asked about
    /// `after` seconds later.
    fn reuse(req_cc: &str, resp_cc: &str, lifetime: u64, after: u64) -> Reuse {
        let times = Times {
            response_time: t0(),
            corrected_initial_age: S(0),
            lifetime: S(lifetime),
        };
        decide_reuse(&req(req_cc), &resp(resp_cc), &times, t0() + S(after))
    }

    use Reuse::*;

    #[test]
    fn reuse_table() {
        let cases: &[(&str, &str, u64, u64, Reuse)] = &[
            ("", "max-age=60", 60, 10, Fresh),
            ("", "max-age=60", 60, 60, Validate),
            ("", "max-age=60", 60, 61, Validate),
            ("", "max-age=0", 0, 0, Validate),
            ("", "no-cache, max-age=60", 60, 0, Validate),
            ("no-cache", "max-age=60", 60, 0, Validate),
            ("no-cache", "max-age=60, immutable", 60, 0, Validate),
            ("max-age=0", "max-age=60", 60, 0, Validate),
            ("max-age=10", "max-age=60", 60, 5, Fresh),
            ("max-age=10", "max-age=60", 60, 11, Validate),
            ("min-fresh=30", "max-age=60", 60, 20, Fresh),
            ("min-fresh=30", "max-age=60", 60, 31, Validate),
            ("max-stale", "max-age=60", 60, 1000, StaleAllowed),
            ("max-stale=100", "max-age=60", 60, 160, StaleAllowed),
            ("max-stale=100", "max-age=60", 60, 161, Validate),
            ("max-stale", "max-age=60, must-revalidate", 60, 61, Validate),
            (
                "max-stale",
                "max-age=60, proxy-revalidate",
                60,
                61,
                Validate,
            ),
            ("max-stale", "s-maxage=60", 60, 61, Validate),
            (
                "",
                "max-age=60, stale-while-revalidate=30",
                60,
                80,
                StaleWhileRevalidate,
            ),
            (
                "",
                "max-age=60, stale-while-revalidate=30",
                60,
                90,
                StaleWhileRevalidate,
            ),
            (
                "",
                "max-age=60, stale-while-revalidate=30",
                60,
                91,
                Validate,
            ),
            (
                "",
                "max-age=60, stale-while-revalidate=30, must-revalidate",
                60,
                70,
                Validate,
            ),
            (
                "",
                "s-maxage=60, stale-while-revalidate=30",
                60,
                70,
                Validate,
            ),
            (
                "min-fresh=1",
                "max-age=60, stale-while-revalidate=30",
                60,
                70,
                Validate,
            ),
            (
                "max-age=5",
                "max-age=60, stale-while-revalidate=30",
                60,
                70,
                Validate,
            ),
            ("", "max-age=60, stale-while-revalidate=x", 60, 70, Validate),
        ];
        for &(q, r, lifetime, after, want) in cases {
            assert_eq!(
                reuse(q, r, lifetime, after),
                want,
                "req {q:?} resp {r:?} after {after}"
            );
        }
    }

    #[test]
    fn initial_age_counts_toward_staleness() {
        let times = Times {
            response_time: t0(),
            corrected_initial_age: S(50),
            lifetime: S(60),
        };
        let (q, r) = (req(""), resp("max-age=60"));
        assert_eq!(decide_reuse(&q, &r, &times, t0() + S(9)), Fresh);
        assert_eq!(decide_reuse(&q, &r, &times, t0() + S(10)), Validate);
    }

    #[test]
    fn stale_if_error_window() {
        let times = Times {
            response_time: t0(),
            corrected_initial_age: S(0),
            lifetime: S(60),
        };
        let allows =
            |cc: &str, after: u64| stale_if_error_allows(&resp(cc), &times, t0() + S(after));
        assert!(allows("max-age=60", 10));
        assert!(!allows("max-age=60", 61));
        assert!(allows("max-age=60, stale-if-error=30", 90));
        assert!(!allows("max-age=60, stale-if-error=30", 91));
        assert!(!allows(
            "max-age=60, stale-if-error=30, must-revalidate",
            61
        ));
        assert!(!allows("s-maxage=60, stale-if-error=30", 61));
        assert!(!allows("max-age=60, no-cache, stale-if-error=30", 10));
    }
}
