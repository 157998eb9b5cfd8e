//! A client's `Range` (RFC 9110 §14) answered from a stored response:
//! one satisfiable range of a stored 200 is a 206; a range past its end
//! is a 416; several ranges, a syntax the parser refuses, or an
//! `If-Range` that does not match its validator mean the whole response
//! (what §14.2 allows a server to do).

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, StatusCode};

use crate::cache::store::Variant;

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

/// `If-Range` (§13.1.5): absent, or a strong entity tag equal to the
/// stored one, or a date equal to its `Last-Modified`.
fn if_range_holds(req: &HeaderMap, stored: &HeaderMap) -> bool {
    let Some(cond) = req.get(header::IF_RANGE) else {
        return true;
    };
    let cond = cond.as_bytes();
    if cond.starts_with(b"\"") {
        return stored
            .get(header::ETAG)
            .is_some_and(|e| e.as_bytes() == cond);
    }
    match (
        std::str::from_utf8(cond)
            .ok()
            .and_then(|c| httpdate::parse_http_date(c).ok()),
        stored
            .get(header::LAST_MODIFIED)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| httpdate::parse_http_date(l).ok()),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

pub(super) fn content_range(start: u64, len: u64, total: u64) -> HeaderValue {
    let text = format!("bytes {}-{}/{}", start, start + len - 1, total);
    HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static("bytes */0"))
}

pub(super) fn unsatisfiable(total: u64) -> HeaderValue {
    HeaderValue::try_from(format!("bytes */{total}"))
        .unwrap_or(HeaderValue::from_static("bytes */0"))
}
