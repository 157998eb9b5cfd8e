//! Invalidation after unsafe requests (RFC 9111 §4.4).
//!
//! Decisions: references resolve as RFC 3986 §5 says (with the `url`
//! crate); "same origin" is scheme, host and port (default ports
//! normalised); a fragment is dropped; a reference that does not parse is
//! ignored; each URI is listed once.

use http::header::{self, HeaderMap};
use http::{Method, StatusCode};
use url::Url;

/// The URIs a cache invalidates after an unsafe request (any method other
/// than GET, HEAD, OPTIONS, TRACE) answered with a non-error status (2xx
/// or 3xx): the target URI, and the `Location` and `Content-Location`
/// URIs when they have its origin (RFC 9111 §4.4). Each is (scheme,
/// authority, path-and-query), like the target given.
pub(crate) fn invalidation_targets(
    method: &Method,
    status: StatusCode,
    scheme: &str,
    authority: &str,
    path_and_query: &str,
    resp: &HeaderMap,
) -> Vec<(String, String, String)> {
    if method.is_safe() || !(status.is_success() || status.is_redirection()) {
        return Vec::new();
    }
    let mut out = vec![(
        scheme.to_owned(),
        authority.to_owned(),
        path_and_query.to_owned(),
    )];
    let Ok(base) = Url::parse(&format!("{scheme}://{authority}{path_and_query}")) else {
        return out;
    };
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let mut all = resp.get_all(name).iter();
        let (Some(v), None) = (all.next(), all.next()) else {
            continue;
        };
        let Some(target) = v.to_str().ok().and_then(|r| base.join(r.trim()).ok()) else {
            continue;
        };
        if target.origin() != base.origin() {
            continue;
        }
        let mut pq = target.path().to_owned();
        if let Some(q) = target.query() {
            pq.push('?');
            pq.push_str(q);
        }
        let uri = (scheme.to_owned(), authority.to_owned(), pq);
        if !out.contains(&uri) {
            out.push(uri);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HeaderName, HeaderValue};

    fn targets(method: Method, status: u16, fields: &[(&str, &str)]) -> Vec<String> {
        let mut h = HeaderMap::new();
        for (n, v) in fields {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        invalidation_targets(
            &method,
            StatusCode::from_u16(status).unwrap(),
            "http",
            "example.com",
            "/a/b?x=1",
            &h,
        )
        .into_iter()
        .map(|(s, a, p)| format!("{s}://{a}{p}"))
        .collect()
    }

    #[test]
    fn safe_methods_and_errors_invalidate_nothing() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
            assert!(targets(m, 200, &[]).is_empty());
        }
        for s in [400, 404, 500, 503] {
            assert!(targets(Method::POST, s, &[]).is_empty(), "{s}");
        }
        assert!(targets(Method::POST, 101, &[]).is_empty());
    }

    #[test]
    fn unsafe_methods_invalidate_the_target() {
        for m in [
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::from_bytes(b"FOO").unwrap(),
        ] {
            assert_eq!(targets(m, 200, &[]), ["http://example.com/a/b?x=1"]);
        }
        assert_eq!(
            targets(Method::POST, 303, &[]),
            ["http://example.com/a/b?x=1"]
        );
    }

    #[test]
    fn location_and_content_location_resolved_same_origin_only() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("location", "/c", Some("http://example.com/c")),
            ("location", "c?y", Some("http://example.com/a/c?y")),
            ("location", "../d#frag", Some("http://example.com/d")),
            (
                "location",
                "http://example.com/e",
                Some("http://example.com/e"),
            ),
            (
                "location",
                "HTTP://EXAMPLE.COM:80/f",
                Some("http://example.com/f"),
            ),
            ("location", "//example.com/g", Some("http://example.com/g")),
            ("location", "http://other.example/h", None),
            ("location", "https://example.com/i", None),
            ("location", "http://example.com:8080/j", None),
            ("content-location", "/k", Some("http://example.com/k")),
            ("content-location", "http://evil.example/k", None),
            ("location", "http://[bad", None),
        ];
        for &(field, value, want) in cases {
            let got = targets(Method::POST, 201, &[(field, value)]);
            let mut expect = vec!["http://example.com/a/b?x=1".to_owned()];
            expect.extend(want.map(str::to_owned));
            assert_eq!(got, expect, "{field}: {value}");
        }
    }

    #[test]
    fn both_fields_listed_once_each() {
        let got = targets(
            Method::PUT,
            200,
            &[("location", "/z"), ("content-location", "/z")],
        );
        assert_eq!(got, ["http://example.com/a/b?x=1", "http://example.com/z"]);
        let got = targets(Method::PUT, 200, &[("location", "/a/b?x=1")]);
        assert_eq!(got, ["http://example.com/a/b?x=1"]);
    }
}
