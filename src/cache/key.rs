//! A request's cache key (before `Vary`): the parts its cache's `key`
//! names, each written with its length so that no two requests' parts
//! run together into one key.

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;

use crate::config::cache::KeyPart;

/// What a key is made of, taken from the request.
pub(crate) struct Target<'a> {
    pub(crate) scheme: &'a str,
    /// `host[:port]`, lower case.
    pub(crate) host: &'a str,
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
}

/// The key of `t` with request fields `headers`, as `parts` say.
pub(crate) fn key(parts: &[KeyPart], t: &Target<'_>, headers: &HeaderMap) -> Bytes {
    let mut out = BytesMut::with_capacity(t.host.len() + t.path.len() + 32);
    let mut put = |b: Option<&[u8]>| match b {
        // Absent differs from empty.
        None => out.put_u32(u32::MAX),
        Some(b) => {
            out.put_u32(b.len() as u32);
            out.put_slice(b);
        }
    };
    for p in parts {
        match p {
            KeyPart::Scheme => put(Some(t.scheme.as_bytes())),
            KeyPart::Host => put(Some(t.host.as_bytes())),
            KeyPart::Path => put(Some(t.path.as_bytes())),
            KeyPart::Query => put(t.query.map(str::as_bytes)),
            KeyPart::Header(name) => {
                let mut all = headers.get_all(name).iter();
                match all.next() {
                    None => put(None),
                    Some(first) => {
                        let mut v = first.as_bytes().to_vec();
                        for more in all {
                            v.extend_from_slice(b", ");
                            v.extend_from_slice(more.as_bytes());
                        }
                        put(Some(&v));
                    }
                }
            }
            KeyPart::Cookie(name) => put(cookie(headers, name)),
        }
    }
    out.freeze()
}

/// The value of cookie `name` in the request's `Cookie` fields.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target<'a>(path: &'a str, query: Option<&'a str>) -> Target<'a> {
        Target {
            scheme: "http",
            host: "example.com",
            path,
            query,
        }
    }

    #[test]
    fn parts_do_not_run_together() {
        let parts = [KeyPart::Path, KeyPart::Query];
        let h = HeaderMap::new();
        assert_ne!(
            key(&parts, &target("/a", Some("b")), &h),
            key(&parts, &target("/a?b", None), &h)
        );
        assert_ne!(
            key(&parts, &target("/a", Some("")), &h),
            key(&parts, &target("/a", None), &h)
        );
        assert_eq!(
            key(&parts, &target("/a", Some("b")), &h),
            key(&parts, &target("/a", Some("b")), &h)
        );
    }

    #[test]
    fn a_cookie_and_a_field_are_parts() {
        let parts = [KeyPart::Path, KeyPart::Cookie("lang".into())];
        let mut a = HeaderMap::new();
        a.insert("cookie", "x=1; lang=de; y=2".parse().unwrap());
        let mut b = HeaderMap::new();
        b.insert("cookie", "lang=fr".parse().unwrap());
        let mut c = HeaderMap::new();
        c.insert("cookie", "xlang=de; lang=de".parse().unwrap());
        let t = target("/", None);
        assert_ne!(key(&parts, &t, &a), key(&parts, &t, &b));
        assert_eq!(key(&parts, &t, &a), key(&parts, &t, &c));
    }
}
