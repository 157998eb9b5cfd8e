//! A request's cache key (before `Vary`): the parts its cache's `key`
//! names, each written with its length so that no two requests' parts
//! run together into one key.

use bytes::Bytes;
use http::HeaderMap;

use crate::config::cache::KeyPart;

/// The keys' hash in the cache's maps: keyed per process (a client
/// chooses the URLs that keys are made of), and on a key of a few dozen
/// bytes about a fifth of std's SipHash (about 300 instructions a lookup).
pub(crate) type Hasher = ahash::RandomState;

/// What a key is made of, taken from the request.
pub(crate) struct Target<'a> {
    pub(crate) scheme: &'a str,
    /// `host[:port]`, in any case (the key has it in lower case). Bytes:
    /// a request's authority as text is checked again each time.
    pub(crate) host: &'a [u8],
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
}

/// The key of `t` with request fields `headers`, as `parts` say: sized
/// first and written second, so that its one allocation is exact (a
/// `Bytes` made of a vector with room to spare takes a second one).
pub(crate) fn key(parts: &[KeyPart], t: &Target<'_>, headers: &HeaderMap) -> Bytes {
    let mut len = 0;
    each(parts, t, headers, |b, _| {
        len += 4 + b.map_or(0, <[u8]>::len)
    });
    let mut out = Vec::with_capacity(len);
    each(parts, t, headers, |b, lower| match b {
        // Absent differs from empty.
        None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
        Some(b) => {
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            let at = out.len();
            out.extend_from_slice(b);
            if lower {
                out[at..].make_ascii_lowercase();
            }
        }
    });
    Bytes::from(out)
}

/// Each of `parts` in turn, to `f`: its bytes (`None`: absent), and
/// whether they go in lower case.
fn each(
    parts: &[KeyPart],
    t: &Target<'_>,
    headers: &HeaderMap,
    mut f: impl FnMut(Option<&[u8]>, bool),
) {
    for p in parts {
        match p {
            KeyPart::Scheme => f(Some(t.scheme.as_bytes()), false),
            KeyPart::Host => f(Some(t.host), true),
            KeyPart::Path => f(Some(t.path.as_bytes()), false),
            KeyPart::Query => f(t.query.map(str::as_bytes), false),
            KeyPart::Header(name) => {
                let mut all = headers.get_all(name).iter();
                match all.next() {
                    None => f(None, false),
                    Some(first) => {
                        let mut v = first.as_bytes().to_vec();
                        for more in all {
                            v.extend_from_slice(b", ");
                            v.extend_from_slice(more.as_bytes());
                        }
                        f(Some(&v), false);
                    }
                }
            }
            KeyPart::Cookie(name) => f(cookie(headers, name), false),
        }
    }
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
            host: b"example.com",
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
    fn the_host_is_lower_case() {
        let parts = [KeyPart::Host, KeyPart::Path];
        let h = HeaderMap::new();
        let mut upper = target("/A", None);
        upper.host = b"Example.COM:8080";
        let mut lower = target("/A", None);
        lower.host = b"example.com:8080";
        assert_eq!(key(&parts, &upper, &h), key(&parts, &lower, &h));
        // (Only the host.)
        lower.path = "/a";
        assert_ne!(key(&parts, &upper, &h), key(&parts, &lower, &h));
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
