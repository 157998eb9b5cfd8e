//! Conditional requests (RFC 9110 §13, RFC 9111 §4.3): a client's
//! conditions answered from a stored response, and the validators sent
//! upstream to revalidate one.
//!
//! Decisions:
//! - `If-Match` and `If-Unmodified-Since` are "not applicable to a cache"
//!   (RFC 9111 §4.3.2): such a request is [`Conditional::Forward`]ed to
//!   the origin, which evaluates them on the current representation;
//! - `If-Range` is left to the caller, which answers ranges (§4.3.2: a
//!   cache that implements ranges evaluates it): it comes last in RFC 9110
//!   §13.2.2's order, after `If-None-Match` and `If-Modified-Since`;
//! - `If-Modified-Since` is compared with the stored `Last-Modified`, or
//!   without one its `Date` (RFC 9111 §4.3.2; the time of receipt that
//!   §4.3.2 names last is not known here: with neither, or an invalid
//!   date, the condition does not apply and the stored response is sent);
//! - conditions apply only to GET and HEAD and a stored 2xx (RFC 9110
//!   §13.2.1).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use super::freshness::parse_date;

/// What a client's conditional request gets from a stored response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Conditional {
    /// 304 with the stored response's metadata (RFC 9110 §15.4.5).
    NotModified,
    /// The request has preconditions only the origin evaluates
    /// (`If-Match`, `If-Unmodified-Since`): forward it (RFC 9111 §4.3.2).
    Forward,
    /// No condition applies: send the stored response.
    None,
}

/// One entity-tag of a list (RFC 9110 §8.8.3): weak or not, and its
/// opaque tag with the quotes.
fn entity_tags(v: &[u8]) -> impl Iterator<Item = (bool, &[u8])> {
    let mut rest = v;
    std::iter::from_fn(move || loop {
        rest = rest.trim_ascii_start();
        while let [b',', tail @ ..] = rest {
            rest = tail.trim_ascii_start();
        }
        if rest.is_empty() {
            return None;
        }
        let weak = rest.starts_with(b"W/");
        let tag_start = if weak { 2 } else { 0 };
        if rest.get(tag_start) != Some(&b'"') {
            // Not an entity-tag: skip to the next comma.
            let next = rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
            rest = &rest[next..];
            continue;
        }
        let close = rest[tag_start + 1..].iter().position(|&b| b == b'"');
        let Some(close) = close else {
            rest = &[];
            return None;
        };
        let end = tag_start + 1 + close + 1;
        let tag = &rest[tag_start..end];
        rest = &rest[end..];
        return Some((weak, tag));
    })
}

/// The stored response's entity-tag, if it has exactly one valid one.
fn stored_etag(stored: &HeaderMap) -> Option<(bool, &[u8])> {
    let mut all = stored.get_all(header::ETAG).iter();
    let (Some(v), None) = (all.next(), all.next()) else {
        return None;
    };
    let mut tags = entity_tags(v.as_bytes().trim_ascii());
    match (tags.next(), tags.next()) {
        (Some(t), None) => Some(t),
        _ => None,
    }
}

/// Whether two validators' ETag fields are a strong match (RFC 9110
/// §8.8.3.2): both strong and the same.
pub(crate) fn strong_match(a: &HeaderMap, b: &HeaderMap) -> bool {
    match (stored_etag(a), stored_etag(b)) {
        (Some((false, x)), Some((false, y))) => x == y,
        _ => false,
    }
}

/// Whether two ETag fields are a weak match (same opaque tag).
pub(crate) fn weak_match(a: &HeaderMap, b: &HeaderMap) -> bool {
    match (stored_etag(a), stored_etag(b)) {
        (Some((_, x)), Some((_, y))) => x == y,
        _ => false,
    }
}

/// Evaluates a client's conditions against a stored (fresh, or just
/// validated) response, in RFC 9110 §13.2.2's order: preconditions for
/// the origin first (forwarded), then `If-None-Match` (weak comparison,
/// `*`), then `If-Modified-Since` only without `If-None-Match`.
pub(crate) fn client_conditional(
    method: &Method,
    req: &HeaderMap,
    stored_status: StatusCode,
    stored: &HeaderMap,
) -> Conditional {
    if req.contains_key(header::IF_MATCH) || req.contains_key(header::IF_UNMODIFIED_SINCE) {
        return Conditional::Forward;
    }
    if !(method == Method::GET || method == Method::HEAD) || !stored_status.is_success() {
        return Conditional::None;
    }
    if req.contains_key(header::IF_NONE_MATCH) {
        let ours = stored_etag(stored);
        let hit = req.get_all(header::IF_NONE_MATCH).iter().any(|line| {
            let line = line.as_bytes().trim_ascii();
            line == b"*"
                || ours.is_some_and(|(_, ours)| entity_tags(line).any(|(_, theirs)| theirs == ours))
        });
        return if hit {
            Conditional::NotModified
        } else {
            Conditional::None
        };
    }
    let since = req.get(header::IF_MODIFIED_SINCE).and_then(parse_date);
    let modified = match stored.get(header::LAST_MODIFIED) {
        Some(lm) => parse_date(lm),
        None => stored.get(header::DATE).and_then(parse_date),
    };
    match (since, modified) {
        (Some(since), Some(modified)) if modified <= since => Conditional::NotModified,
        _ => Conditional::None,
    }
}

/// The validators to revalidate a stored response with (RFC 9111 §4.3.1):
/// `If-None-Match` from its `ETag`, `If-Modified-Since` from its
/// `Last-Modified` (when a valid date).
pub(crate) fn validators(stored: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::with_capacity(2);
    if let Some(etag) = stored.get(header::ETAG) {
        out.push((header::IF_NONE_MATCH, etag.clone()));
    }
    if let Some(lm) = stored.get(header::LAST_MODIFIED) {
        if parse_date(lm).is_some() {
            out.push((header::IF_MODIFIED_SINCE, lm.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::test_fields as map;

    const LM: &str = "Mon, 01 Jan 2024 00:00:00 GMT";
    const EARLIER: &str = "Sun, 31 Dec 2023 00:00:00 GMT";
    const LATER: &str = "Tue, 02 Jan 2024 00:00:00 GMT";
    use Conditional::*;

    fn cond(req: &[(&str, &str)], stored: &[(&str, &str)]) -> Conditional {
        client_conditional(&Method::GET, &map(req), StatusCode::OK, &map(stored))
    }

    #[test]
    fn if_none_match_table() {
        let stored = [("etag", "\"abc\""), ("last-modified", LM)];
        for (inm, want) in [
            ("\"abc\"", NotModified),
            ("W/\"abc\"", NotModified),
            ("\"x\", \"abc\"", NotModified),
            ("\"x\",W/\"abc\"", NotModified),
            ("*", NotModified),
            ("\"x\"", None),
            ("\"ab\"", None),
            ("abc", None),
            ("\"a,b\", \"c\"", None),
        ] {
            assert_eq!(cond(&[("if-none-match", inm)], &stored), want, "{inm}");
        }
        assert_eq!(
            cond(&[("if-none-match", "W/\"abc\"")], &[("etag", "W/\"abc\"")]),
            NotModified
        );
        assert_eq!(
            cond(&[("if-none-match", "\"a,b\"")], &[("etag", "\"a,b\"")]),
            NotModified
        );
        assert_eq!(
            cond(
                &[("if-none-match", "\"x\""), ("if-none-match", "\"abc\"")],
                &stored
            ),
            NotModified
        );
        assert_eq!(cond(&[("if-none-match", "\"abc\"")], &[]), None);
        assert_eq!(cond(&[("if-none-match", "*")], &[]), NotModified);
    }

    #[test]
    fn etags_with_obs_text_compare_as_bytes() {
        let tag = HeaderValue::from_bytes(b"\"abcdef\xc3\xbc\"").unwrap();
        let mut stored = HeaderMap::new();
        stored.insert(header::ETAG, tag.clone());
        let mut req = HeaderMap::new();
        req.insert(header::IF_NONE_MATCH, tag);
        assert_eq!(
            client_conditional(&Method::GET, &req, StatusCode::OK, &stored),
            NotModified
        );
    }

    #[test]
    fn if_none_match_takes_precedence_over_if_modified_since() {
        let stored = [("etag", "\"abc\""), ("last-modified", LM)];
        assert_eq!(
            cond(
                &[("if-none-match", "\"x\""), ("if-modified-since", LATER)],
                &stored
            ),
            None
        );
    }

    #[test]
    fn if_modified_since_table() {
        let stored = [("last-modified", LM)];
        for (ims, want) in [
            (LM, NotModified),
            (LATER, NotModified),
            (EARLIER, None),
            ("garbage", None),
        ] {
            assert_eq!(cond(&[("if-modified-since", ims)], &stored), want, "{ims}");
        }
        // No Last-Modified: the stored Date stands in (RFC 9111 §4.3.2).
        assert_eq!(
            cond(&[("if-modified-since", LATER)], &[("date", LM)]),
            NotModified
        );
        assert_eq!(
            cond(&[("if-modified-since", EARLIER)], &[("date", LM)]),
            None
        );
        assert_eq!(cond(&[("if-modified-since", LATER)], &[]), None);
        assert_eq!(
            cond(&[("if-modified-since", LATER)], &[("last-modified", "bad")]),
            None
        );
    }

    #[test]
    fn if_range_is_left_to_the_caller() {
        let stored = [("etag", "\"abc\"")];
        let ir = ("if-range", "\"abc\"");
        assert_eq!(
            cond(&[ir, ("if-none-match", "\"abc\"")], &stored),
            NotModified
        );
        assert_eq!(cond(&[ir], &stored), None);
    }

    #[test]
    fn origin_preconditions_are_forwarded() {
        let stored = [("etag", "\"abc\""), ("last-modified", LM)];
        for f in ["if-match", "if-unmodified-since"] {
            assert_eq!(
                cond(&[(f, "\"abc\""), ("if-none-match", "\"abc\"")], &stored),
                Forward,
                "{f}"
            );
        }
    }

    #[test]
    fn only_get_and_head_and_success() {
        let stored = map(&[("etag", "\"abc\"")]);
        let req = map(&[("if-none-match", "\"abc\"")]);
        assert_eq!(
            client_conditional(&Method::HEAD, &req, StatusCode::OK, &stored),
            NotModified
        );
        assert_eq!(
            client_conditional(&Method::POST, &req, StatusCode::OK, &stored),
            None
        );
        assert_eq!(
            client_conditional(&Method::GET, &req, StatusCode::NOT_FOUND, &stored),
            None
        );
        assert_eq!(cond(&[], &[("etag", "\"abc\"")]), None);
    }

    #[test]
    fn validators_from_etag_and_last_modified() {
        let v = validators(&map(&[("etag", "W/\"1\""), ("last-modified", LM)]));
        assert_eq!(
            v,
            [
                (header::IF_NONE_MATCH, HeaderValue::from_static("W/\"1\"")),
                (header::IF_MODIFIED_SINCE, HeaderValue::from_static(LM)),
            ]
        );
        assert!(validators(&map(&[("last-modified", "nope")])).is_empty());
        assert!(validators(&HeaderMap::new()).is_empty());
    }

    #[test]
    fn strong_and_weak_matches() {
        let a = map(&[("etag", "\"1\"")]);
        let w = map(&[("etag", "W/\"1\"")]);
        assert!(strong_match(&a, &a) && !strong_match(&a, &w) && !strong_match(&w, &w));
        assert!(weak_match(&a, &w) && weak_match(&w, &w));
        assert!(!weak_match(&a, &map(&[("etag", "\"2\"")])));
        assert!(!weak_match(&a, &HeaderMap::new()));
    }
}
