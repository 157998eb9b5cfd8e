//! A request's preconditions (RFC 9110 §13) evaluated against a file's
//! validators, in §13.2.2's order: `If-Match` (else `If-Unmodified-Since`)
//! may fail (412); `If-None-Match` (else, for GET and HEAD,
//! `If-Modified-Since`) may make it a 304 (412 for other methods); then
//! `If-Range` decides whether a `Range` applies.
//!
//! The file's entity-tag is strong; its `Last-Modified` has whole
//! seconds, so dates are compared in seconds. A date that does not parse
//! makes its condition not apply (§13.1.3, §13.1.4), as does an
//! `If-Modified-Since` later than now.

use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderValue};
use http::Method;

/// A file's validators.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Validators<'a> {
    /// The strong entity-tag, quotes included.
    pub(crate) etag: &'a [u8],
    /// `Last-Modified`, in seconds since the epoch.
    pub(crate) modified: u64,
}

/// What the preconditions make of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Precondition {
    /// Go on and answer it.
    Proceed,
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// `req`'s preconditions against `v`, at `now`.
pub(crate) fn evaluate(
    method: &Method,
    req: &HeaderMap,
    v: Validators<'_>,
    now: SystemTime,
) -> Precondition {
    if let Some(m) = req.get(header::IF_MATCH).map(HeaderValue::as_bytes) {
        if !list_matches(m, v.etag, false) {
            return Precondition::Failed;
        }
    } else if let Some(d) = req.get(header::IF_UNMODIFIED_SINCE).and_then(seconds) {
        if v.modified > d {
            return Precondition::Failed;
        }
    }
    let get = *method == Method::GET || *method == Method::HEAD;
    if let Some(m) = req.get(header::IF_NONE_MATCH).map(HeaderValue::as_bytes) {
        if list_matches(m, v.etag, true) {
            return match get {
                true => Precondition::NotModified,
                false => Precondition::Failed,
            };
        }
    } else if get {
        if let Some(d) = req.get(header::IF_MODIFIED_SINCE).and_then(seconds) {
            if d <= secs(now) && v.modified <= d {
                return Precondition::NotModified;
            }
        }
    }
    Precondition::Proceed
}

/// `If-Range` (§13.1.5) at `now`: absent, or it matches the file's
/// validators ([`if_range_matches`], `now` being the `Date` sent).
pub(crate) fn range_applies(req: &HeaderMap, v: Validators<'_>, now: SystemTime) -> bool {
    req.get(header::IF_RANGE)
        .is_none_or(|cond| if_range_matches(cond, Some(v.etag), Some(v.modified), Some(secs(now))))
}

/// An `If-Range` condition (RFC 9110 §13.1.5) against a representation's
/// validators: a strong entity-tag equal to `etag`, or a date exactly its
/// `Last-Modified` (`modified`, seconds since the epoch) when that is a
/// strong validator: at least one second before `sent`, the response's
/// `Date` (§8.8.2.2: two changes within one second cannot be told apart).
/// A weak tag never matches. Shared by static files and the cache.
pub(crate) fn if_range_matches(
    cond: &HeaderValue,
    etag: Option<&[u8]>,
    modified: Option<u64>,
    sent: Option<u64>,
) -> bool {
    let b = cond.as_bytes().trim_ascii();
    if b.starts_with(b"W/") {
        return false;
    }
    if b.starts_with(b"\"") {
        return etag == Some(b);
    }
    match (seconds(cond), modified, sent) {
        (Some(asked), Some(modified), Some(sent)) => asked == modified && modified < sent,
        _ => false,
    }
}

/// Whether an entity-tag list (`*` or `1#entity-tag`) holds `etag`:
/// compared weakly (`If-None-Match`, the `W/` ignored on both sides) or
/// strongly (`If-Match`: a weak tag never matches).
fn list_matches(list: &[u8], etag: &[u8], weak: bool) -> bool {
    if list.trim_ascii() == b"*" {
        return true;
    }
    let mut rest = list;
    loop {
        rest = rest.trim_ascii_start();
        while let [b',', tail @ ..] = rest {
            rest = tail.trim_ascii_start();
        }
        if rest.is_empty() {
            return false;
        }
        let is_weak = rest.starts_with(b"W/");
        let body = if is_weak { &rest[2..] } else { rest };
        let Some(after) = body.strip_prefix(b"\"") else {
            return false;
        };
        let Some(close) = after.iter().position(|&b| b == b'"') else {
            return false;
        };
        let tag = &body[..close + 2];
        if tag == etag && (weak || !is_weak) {
            return true;
        }
        rest = &after[close + 1..];
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// An HTTP date, in seconds since the epoch.
pub(crate) fn seconds(v: &HeaderValue) -> Option<u64> {
    let t = httpdate::parse_http_date(v.to_str().ok()?.trim()).ok()?;
    Some(secs(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const TAG: &[u8] = b"\"1-2-3\"";
    const MODIFIED: u64 = 1_700_000_000;

    fn v() -> Validators<'static> {
        Validators {
            etag: TAG,
            modified: MODIFIED,
        }
    }

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
    }

    fn eval(method: Method, fields: &[(&str, &str)]) -> Precondition {
        let mut h = HeaderMap::new();
        for (n, val) in fields {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).expect("name"),
                HeaderValue::from_str(val).expect("value"),
            );
        }
        let now = UNIX_EPOCH + Duration::from_secs(MODIFIED + 1000);
        evaluate(&method, &h, v(), now)
    }

    #[test]
    fn if_none_match_and_if_modified_since() {
        use Precondition::*;
        assert_eq!(eval(Method::GET, &[]), Proceed);
        assert_eq!(
            eval(Method::GET, &[("if-none-match", "\"1-2-3\"")]),
            NotModified
        );
        assert_eq!(
            eval(Method::HEAD, &[("if-none-match", "W/\"1-2-3\"")]),
            NotModified
        );
        assert_eq!(
            eval(Method::GET, &[("if-none-match", "\"x\", \"1-2-3\"")]),
            NotModified
        );
        assert_eq!(eval(Method::GET, &[("if-none-match", "*")]), NotModified);
        assert_eq!(eval(Method::GET, &[("if-none-match", "\"x\"")]), Proceed);
        assert_eq!(eval(Method::POST, &[("if-none-match", "*")]), Failed);
        let same = date(MODIFIED);
        let earlier = date(MODIFIED - 1);
        let future = date(MODIFIED + 5000);
        assert_eq!(
            eval(Method::GET, &[("if-modified-since", &same)]),
            NotModified
        );
        assert_eq!(
            eval(Method::GET, &[("if-modified-since", &earlier)]),
            Proceed
        );
        assert_eq!(
            eval(Method::GET, &[("if-modified-since", &future)]),
            Proceed
        );
        assert_eq!(
            eval(Method::GET, &[("if-modified-since", "yesterday")]),
            Proceed
        );
        // If-None-Match wins over If-Modified-Since.
        assert_eq!(
            eval(
                Method::GET,
                &[("if-none-match", "\"x\""), ("if-modified-since", &same)]
            ),
            Proceed
        );
    }

    #[test]
    fn if_match_and_if_unmodified_since() {
        use Precondition::*;
        assert_eq!(eval(Method::GET, &[("if-match", "\"1-2-3\"")]), Proceed);
        assert_eq!(eval(Method::GET, &[("if-match", "*")]), Proceed);
        assert_eq!(eval(Method::GET, &[("if-match", "W/\"1-2-3\"")]), Failed);
        assert_eq!(eval(Method::GET, &[("if-match", "\"nope\"")]), Failed);
        assert_eq!(
            eval(Method::GET, &[("if-unmodified-since", &date(MODIFIED))]),
            Proceed
        );
        assert_eq!(
            eval(Method::GET, &[("if-unmodified-since", &date(MODIFIED - 1))]),
            Failed
        );
        // If-Match wins over If-Unmodified-Since.
        assert_eq!(
            eval(
                Method::GET,
                &[("if-match", "\"1-2-3\""), ("if-unmodified-since", &date(1))]
            ),
            Proceed
        );
    }

    #[test]
    fn if_range() {
        let later = UNIX_EPOCH + Duration::from_secs(MODIFIED + 1);
        let at = |val: &str, now| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_RANGE, HeaderValue::from_str(val).expect("value"));
            range_applies(&h, v(), now)
        };
        let with = |val: &str| at(val, later);
        assert!(range_applies(&HeaderMap::new(), v(), later));
        // Modified within the second it is asked in: a weak date.
        let same_second = UNIX_EPOCH + Duration::from_millis(MODIFIED * 1000 + 900);
        assert!(!at(&date(MODIFIED), same_second));
        assert!(at("\"1-2-3\"", same_second));
        assert!(with("\"1-2-3\""));
        assert!(!with("W/\"1-2-3\""));
        assert!(!with("\"other\""));
        assert!(with(&date(MODIFIED)));
        assert!(!with(&date(MODIFIED - 1)));
        assert!(!with("garbage"));
    }
}
