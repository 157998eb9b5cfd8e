//! A client's `Range` (RFC 9110 §14) answered from a stored response:
//! one satisfiable range of a stored 200 is a 206; a range past its end
//! is a 416; several ranges, a syntax the parser refuses, or an
//! `If-Range` that does not match its validator mean the whole response
//! (what §14.2 allows a server to do).

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, StatusCode};

use crate::cache::store::Variant;
use crate::files::conditional::{if_range_matches, seconds};

/// What part of a stored body to send.
pub(super) enum Selected {
    Whole,
    Part { start: u64, len: u64 },
    Unsatisfiable,
}

pub(super) fn select(method: &Method, req: &HeaderMap, v: &Variant) -> Selected {
    let Some(range) = req.get(header::RANGE).and_then(|r| r.to_str().ok()) else {
        return Selected::Whole;
    };
    if *method != Method::GET || v.status != StatusCode::OK || !if_range_holds(req, &v.headers) {
        return Selected::Whole;
    }
    let Ok(parsed) = http_range_header::parse_range_header(range) else {
        return Selected::Whole;
    };
    match parsed.validate(v.len) {
        Err(_) => Selected::Unsatisfiable,
        Ok(ranges) => match ranges.as_slice() {
            [one] => Selected::Part {
                start: *one.start(),
                len: one.end() - one.start() + 1,
            },
            _ => Selected::Whole,
        },
    }
}

/// `If-Range` (§13.1.5): absent, or it matches the stored response's
/// `ETag`, or its `Last-Modified` as a strong validator against its `Date`
/// ([`if_range_matches`]).
fn if_range_holds(req: &HeaderMap, stored: &HeaderMap) -> bool {
    let date = |name| stored.get(name).and_then(seconds);
    req.get(header::IF_RANGE).is_none_or(|cond| {
        let etag = stored.get(header::ETAG).map(HeaderValue::as_bytes);
        if_range_matches(cond, etag, date(header::LAST_MODIFIED), date(header::DATE))
    })
}

pub(super) fn content_range(start: u64, len: u64, total: u64) -> HeaderValue {
    let text = format!("bytes {}-{}/{}", start, start + len - 1, total);
    HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static("bytes */0"))
}

pub(super) fn unsatisfiable(total: u64) -> HeaderValue {
    HeaderValue::try_from(format!("bytes */{total}"))
        .unwrap_or(HeaderValue::from_static("bytes */0"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::test_fields as map;

    #[test]
    fn if_range_by_date_needs_a_strong_last_modified() {
        let lm = "Mon, 01 Jan 2024 00:00:00 GMT";
        let req = map(&[("if-range", lm)]);
        let stored = |date: &str| map(&[("last-modified", lm), ("date", date)]);
        assert!(if_range_holds(
            &req,
            &stored("Mon, 01 Jan 2024 00:00:01 GMT")
        ));
        // Modified in the second it was sent, or no Date: weak.
        assert!(!if_range_holds(&req, &stored(lm)));
        assert!(!if_range_holds(&req, &map(&[("last-modified", lm)])));
        let other = map(&[("if-range", "Mon, 01 Jan 2024 00:00:02 GMT")]);
        assert!(!if_range_holds(
            &other,
            &stored("Tue, 02 Jan 2024 00:00:00 GMT")
        ));
        let tag = map(&[("if-range", "\"a\"")]);
        assert!(if_range_holds(&tag, &map(&[("etag", "\"a\"")])));
        assert!(!if_range_holds(&tag, &map(&[("etag", "W/\"a\"")])));
    }
}
