//! Whether a response may be stored by a shared cache (RFC 9111 §3, §3.5,
//! §4.2.2), and what of it (§3.1).
//!
//! Decisions left to the cache:
//! - only `GET` is stored (`HEAD` is answered from a stored `GET`);
//! - 206 is never stored (no range assembly, §3.3), nor 304 (it freshens,
//!   §4.3.4), nor any 1xx;
//! - a response with no usable freshness is stored only when it has a
//!   validator to revalidate it with; else storing it is useless;
//! - heuristic freshness needs `Last-Modified` (§4.2.2's fraction of its
//!   age): without it a heuristically cacheable response is not stored.

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, StatusCode};

use super::control::{qualified_names, ResponseControl};
use super::fields::ResponseFields;
use super::freshness::{heuristic_status, parse_date, understood};
use super::request::RequestControl;
pub(crate) use super::rules::{Rules, SetCookie};

/// The outcome of [`decide_store`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StoreDecision {
    /// Store it; `heuristic` when its freshness is heuristic (§4.2.2).
    Store { heuristic: bool },
    /// Don't; a short reason for `Cache-Status`'s `detail` and the logs.
    DontStore(&'static str),
}

/// May this response to this request be stored? (RFC 9111 §3, §3.5,
/// §4.2.2; RFC 9213 through `resp_cc`).
/// `authorization`: the request had `Authorization`; `fields`: which of
/// the fields this reads `resp` has ([`ResponseFields::of`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn decide_store(
    method: &Method,
    authorization: bool,
    req_cc: &RequestControl,
    status: StatusCode,
    resp: &HeaderMap,
    fields: &ResponseFields,
    resp_cc: &ResponseControl,
    rules: &Rules,
) -> StoreDecision {
    use StoreDecision::DontStore;
    if method != Method::GET {
        return DontStore("method");
    }
    let code = status.as_u16();
    if code < 200 || code == 206 || code == 304 {
        return DontStore("status");
    }
    if req_cc.no_store {
        return DontStore("no-store");
    }
    if resp_cc.must_understand && !understood(status) {
        return DontStore("must-understand");
    }
    if resp_cc.no_store && !resp_cc.must_understand {
        return DontStore("no-store");
    }
    if resp_cc.private {
        return DontStore("private");
    }
    if authorization && !(resp_cc.public || resp_cc.s_maxage.is_some() || resp_cc.must_revalidate) {
        return DontStore("authorization");
    }
    if fields.vary && super::vary::vary_names(resp).is_err() {
        return DontStore("vary-star");
    }
    if rules.set_cookie == SetCookie::NoStore && fields.set_cookie {
        return DontStore("set-cookie");
    }
    let validator = fields.validator();
    if resp_cc.no_cache {
        return if validator {
            StoreDecision::Store { heuristic: false }
        } else {
            DontStore("no-cache")
        };
    }
    let explicit = resp_cc.s_maxage.or(resp_cc.max_age);
    match explicit {
        Some(Ok(d)) if !d.is_zero() => return StoreDecision::Store { heuristic: false },
        Some(_) => {
            return if validator {
                StoreDecision::Store { heuristic: false }
            } else {
                DontStore("no-freshness")
            }
        }
        None => {}
    }
    if fields.expires {
        return if validator || expires_later(resp) {
            StoreDecision::Store { heuristic: false }
        } else {
            DontStore("no-freshness")
        };
    }
    let modified = fields.last_modified
        && resp
            .get(header::LAST_MODIFIED)
            .and_then(parse_date)
            .is_some();
    if (heuristic_status(status) || resp_cc.public) && modified {
        return StoreDecision::Store { heuristic: true };
    }
    if validator && (heuristic_status(status) || resp_cc.public || resp_cc.must_revalidate) {
        return StoreDecision::Store { heuristic: false };
    }
    DontStore("no-freshness")
}

/// Whether `Expires` is a valid date after `Date` (or with no `Date`).
fn expires_later(resp: &HeaderMap) -> bool {
    let mut all = resp.get_all(header::EXPIRES).iter();
    let (Some(e), None) = (all.next(), all.next()) else {
        return false;
    };
    let Some(expires) = parse_date(e) else {
        return false;
    };
    match resp.get(header::DATE).and_then(parse_date) {
        Some(date) => expires > date,
        None => true,
    }
}

static PROXY_AUTHENTICATION_INFO: HeaderName = HeaderName::from_static("proxy-authentication-info");

/// Drops what a cache must not store (RFC 9111 §3.1): `Connection` and
/// the fields it names, the hop-by-hop set, the proxy authentication
/// fields, the fields named by a qualified `no-cache` or `private`
/// (§5.2.2.4, §5.2.2.7), and `Set-Cookie` when the rules say `Strip`.
pub(crate) fn strip_unstorable(resp: &mut HeaderMap, rules: &Rules) {
    crate::message::headers::strip_hop_by_hop(resp);
    // (What is there, found in one pass: most responses have none.)
    let (mut proxy_auth, mut cookie, mut cc, mut targeted) = (false, false, false, false);
    for k in resp.keys() {
        if k == header::PROXY_AUTHENTICATE
            || k == header::PROXY_AUTHORIZATION
            || k == PROXY_AUTHENTICATION_INFO
        {
            proxy_auth = true;
        } else if k == header::SET_COOKIE {
            cookie = true;
        } else if k == header::CACHE_CONTROL {
            cc = true;
        } else if rules.targeted.as_ref().is_some_and(|t| k == t) {
            targeted = true;
        }
    }
    if proxy_auth {
        resp.remove(header::PROXY_AUTHENTICATE);
        resp.remove(header::PROXY_AUTHORIZATION);
        resp.remove(&PROXY_AUTHENTICATION_INFO);
    }
    if cookie && rules.set_cookie == SetCookie::Strip {
        resp.remove(header::SET_COOKIE);
    }
    let mut named: Vec<HeaderName> = Vec::new();
    let mut collect = |n: &[u8]| {
        if let Ok(n) = HeaderName::from_bytes(n) {
            named.push(n);
        }
    };
    if cc {
        qualified_names(resp.get_all(header::CACHE_CONTROL).iter(), &mut collect);
    }
    if let Some(t) = rules.targeted.as_ref().filter(|_| targeted) {
        qualified_names(resp.get_all(t).iter(), &mut collect);
    }
    for n in named {
        resp.remove(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::test_fields as map;

    const LM: (&str, &str) = ("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT");

    fn decide_with(
        method: Method,
        req: &[(&str, &str)],
        status: u16,
        resp: &[(&str, &str)],
        rules: &Rules,
    ) -> StoreDecision {
        let (req, resp) = (map(req), map(resp));
        decide_store(
            &method,
            req.contains_key(header::AUTHORIZATION),
            &RequestControl::parse(&req),
            StatusCode::from_u16(status).unwrap(),
            &resp,
            &ResponseFields::of(&resp, rules.targeted.as_ref()),
            &ResponseControl::parse(&resp, rules),
            rules,
        )
    }

    fn decide(req: &[(&str, &str)], status: u16, resp: &[(&str, &str)]) -> StoreDecision {
        decide_with(Method::GET, req, status, resp, &Rules::default())
    }

    const STORE: StoreDecision = StoreDecision::Store { heuristic: false };
    const HEURISTIC: StoreDecision = StoreDecision::Store { heuristic: true };
    use StoreDecision::DontStore as Dont;

    #[test]
    fn only_get_is_stored() {
        for m in [Method::HEAD, Method::POST, Method::PUT, Method::OPTIONS] {
            let d = decide_with(
                m,
                &[],
                200,
                &[("cache-control", "max-age=60")],
                &Rules::default(),
            );
            assert_eq!(d, Dont("method"));
        }
    }

    #[test]
    fn status_table() {
        let cc = [("cache-control", "max-age=60")];
        for (status, want) in [
            (100, Dont("status")),
            (103, Dont("status")),
            (200, STORE),
            (206, Dont("status")),
            (304, Dont("status")),
            (302, STORE),
            (307, STORE),
            (500, STORE),
            (599, STORE),
        ] {
            assert_eq!(decide(&[], status, &cc), want, "{status}");
        }
    }

    #[test]
    fn heuristic_statuses_need_last_modified() {
        for s in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
            assert_eq!(decide(&[], s, &[LM]), HEURISTIC, "{s}");
            assert_eq!(decide(&[], s, &[]), Dont("no-freshness"), "{s}");
        }
        for s in [201, 302, 303, 307, 400, 500, 502, 503] {
            assert_eq!(decide(&[], s, &[LM]), Dont("no-freshness"), "{s}");
        }
        // `public` makes any status heuristically cacheable.
        assert_eq!(
            decide(&[], 302, &[LM, ("cache-control", "public")]),
            HEURISTIC
        );
    }

    #[test]
    fn no_store_in_request_or_response() {
        let ok = [("cache-control", "max-age=60")];
        assert_eq!(
            decide(&[("cache-control", "no-store")], 200, &ok),
            Dont("no-store")
        );
        assert_eq!(
            decide(&[], 200, &[("cache-control", "max-age=60, no-store")]),
            Dont("no-store")
        );
    }

    #[test]
    fn must_understand_overrides_no_store_for_understood_statuses() {
        let cc = [("cache-control", "must-understand, no-store, max-age=60")];
        assert_eq!(decide(&[], 200, &cc), STORE);
        assert_eq!(decide(&[], 299, &cc), Dont("must-understand"));
        assert_eq!(decide(&[], 500, &cc), Dont("must-understand"));
    }

    #[test]
    fn private_is_never_stored_by_a_shared_cache() {
        assert_eq!(
            decide(&[], 200, &[("cache-control", "private, max-age=60")]),
            Dont("private")
        );
        // The qualified form stores the rest.
        assert_eq!(
            decide(
                &[],
                200,
                &[("cache-control", "private=\"x-a\", max-age=60")]
            ),
            STORE
        );
    }

    #[test]
    fn authorization_needs_an_explicit_permission() {
        let auth = [("authorization", "Basic QWxhZGRpbjpvcGVu")];
        assert_eq!(
            decide(&auth, 200, &[("cache-control", "max-age=60")]),
            Dont("authorization")
        );
        for ok in [
            "public, max-age=60",
            "s-maxage=60",
            "must-revalidate, max-age=60",
        ] {
            assert_eq!(decide(&auth, 200, &[("cache-control", ok)]), STORE, "{ok}");
        }
    }

    #[test]
    fn vary_star_anywhere_is_not_stored() {
        for v in [
            &["*"][..],
            &["*, *"],
            &["*", "*"],
            &[", *"],
            &["", "*"],
            &["*, Foo"],
            &["Foo, *"],
            &["foo", "*"],
        ] {
            let mut h = vec![("cache-control", "max-age=60")];
            h.extend(v.iter().map(|v| ("vary", *v)));
            assert_eq!(decide(&[], 200, &h), Dont("vary-star"), "{v:?}");
        }
        assert_eq!(
            decide(
                &[],
                200,
                &[("cache-control", "max-age=60"), ("vary", "foo")]
            ),
            STORE
        );
    }

    #[test]
    fn set_cookie_rules() {
        let h = [("cache-control", "max-age=60"), ("set-cookie", "a=b")];
        assert_eq!(decide(&[], 200, &h), Dont("set-cookie"));
        for sc in [SetCookie::Strip, SetCookie::Keep] {
            let rules = Rules {
                set_cookie: sc,
                ..Rules::default()
            };
            assert_eq!(decide_with(Method::GET, &[], 200, &h, &rules), STORE);
        }
    }

    #[test]
    fn no_cache_and_zero_freshness_need_a_validator() {
        let etag = ("etag", "\"a\"");
        assert_eq!(
            decide(&[], 200, &[("cache-control", "no-cache")]),
            Dont("no-cache")
        );
        assert_eq!(
            decide(&[], 200, &[("cache-control", "no-cache"), etag]),
            STORE
        );
        assert_eq!(
            decide(&[], 200, &[("cache-control", "max-age=0")]),
            Dont("no-freshness")
        );
        assert_eq!(
            decide(&[], 200, &[("cache-control", "max-age=0"), etag]),
            STORE
        );
        assert_eq!(
            decide(&[], 200, &[("cache-control", "max-age=\"x\""), etag]),
            STORE
        );
        assert_eq!(
            decide(&[], 500, &[("cache-control", "must-revalidate"), etag]),
            STORE
        );
        assert_eq!(decide(&[], 500, &[etag]), Dont("no-freshness"));
    }

    #[test]
    fn expires_table() {
        let date = ("date", "Mon, 01 Jan 2024 00:00:00 GMT");
        for (expires, want) in [
            ("Mon, 01 Jan 2024 01:00:00 GMT", STORE),
            ("Mon, 01 Jan 2024 00:00:00 GMT", Dont("no-freshness")),
            ("0", Dont("no-freshness")),
            ("-1", Dont("no-freshness")),
            ("soon", Dont("no-freshness")),
        ] {
            assert_eq!(
                decide(&[], 200, &[date, ("expires", expires)]),
                want,
                "{expires}"
            );
        }
        // max-age wins over an Expires in the past.
        assert_eq!(
            decide(
                &[],
                200,
                &[date, ("expires", "0"), ("cache-control", "max-age=60")]
            ),
            STORE
        );
    }

    #[test]
    fn strip_unstorable_drops_hop_by_hop_and_named_fields() {
        let mut h = map(&[
            ("connection", "a, b"),
            ("a", "1"),
            ("b", "2"),
            ("c", "3"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("trailer", "x"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authentication-info", "x"),
            (
                "cache-control",
                "max-age=60, no-cache=\"d, E\", private=\"f\"",
            ),
            ("d", "4"),
            ("e", "5"),
            ("f", "6"),
            ("set-cookie", "a=b"),
            ("content-length", "3"),
        ]);
        strip_unstorable(&mut h, &Rules::default());
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["c", "cache-control", "content-length", "set-cookie"]);
        let rules = Rules {
            set_cookie: SetCookie::Strip,
            ..Rules::default()
        };
        strip_unstorable(&mut h, &rules);
        assert!(!h.contains_key(header::SET_COOKIE));
    }

    #[test]
    fn strip_unstorable_reads_the_targeted_field() {
        let mut h = map(&[
            ("cdn-cache-control", "no-cache=\"x\""),
            ("x", "1"),
            ("y", "2"),
        ]);
        strip_unstorable(&mut h, &Rules::default());
        assert!(!h.contains_key("x") && h.contains_key("y"));
    }
}
