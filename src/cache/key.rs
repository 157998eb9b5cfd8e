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

/// Keys up to this long are written on the stack, then copied into one
/// exact allocation.
const SMALL: usize = 256;

/// The key of `t` with request fields `headers`, as `parts` say. Written
/// on the stack and copied out (no capacity checks, one exact allocation);
/// a longer key as [`joined`].
pub(crate) fn key(parts: &[KeyPart], t: &Target<'_>, headers: &HeaderMap) -> Bytes {
    let mut buf = [0u8; SMALL];
    let mut n = 0;
    let mut fits = true;
    each(parts, t, headers, |b, lower| {
        fits = fits && put(&mut buf, &mut n, b, lower);
    });
    match fits {
        true => Bytes::copy_from_slice(&buf[..n]),
        false => joined(parts, t, headers),
    }
}

/// Writes one part at `*n` in `out`: its length (`u32::MAX` when absent:
/// absent differs from empty), then its bytes. `false`: it does not fit.
fn put(out: &mut [u8], n: &mut usize, b: Option<&[u8]>, lower: bool) -> bool {
    let len = b.map_or(u32::MAX, |b| b.len() as u32);
    let Some(at) = out.get_mut(*n..*n + 4) else {
        return false;
    };
    at.copy_from_slice(&len.to_be_bytes());
    *n += 4;
    if let Some(b) = b {
        let Some(at) = out.get_mut(*n..*n + b.len()) else {
            return false;
        };
        at.copy_from_slice(b);
        if lower {
            lower_ascii(at);
        }
        *n += b.len();
    }
    true
}

/// `b` in ASCII lower case, eight bytes at a time (the last eight
/// overlapping the ones before: lowering twice changes nothing). Bytes
/// over 0x7f stay as they are.
fn lower_ascii(b: &mut [u8]) {
    const fn lower8(x: u64) -> u64 {
        const ONES: u64 = 0x0101_0101_0101_0101;
        let low7 = x & (0x7f * ONES);
        // Bit 7 of each byte: at least `A`, above `Z`, and ASCII.
        let from_a = low7 + 0x3f * ONES;
        let past_z = low7 + 0x25 * ONES;
        let upper = from_a & !past_z & !x & (0x80 * ONES);
        x | (upper >> 2)
    }
    let len = b.len();
    if len < 8 {
        b.make_ascii_lowercase();
        return;
    }
    let mut i = 0;
    loop {
        let at = i.min(len - 8);
        if let Some(c) = b.get_mut(at..at + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            c.copy_from_slice(&lower8(u64::from_le_bytes(w)).to_le_bytes());
        }
        if at == len - 8 {
            return;
        }
        i += 8;
    }
}

/// As [`key`], for a key of any length: sized first, then written into
/// its one exact allocation (a `Bytes` made of a vector with room to spare
/// takes a second one).
fn joined(parts: &[KeyPart], t: &Target<'_>, headers: &HeaderMap) -> Bytes {
    let mut len = 0;
    each(parts, t, headers, |b, _| {
        len += 4 + b.map_or(0, <[u8]>::len)
    });
    let mut out = vec![0u8; len];
    let mut n = 0;
    each(parts, t, headers, |b, lower| {
        put(&mut out, &mut n, b, lower);
    });
    Bytes::from(out)
}

/// Each of `parts` in turn, to `f`: its bytes (`None`: absent), and
/// whether they go in lower case. A field sent on several lines is one
/// part, its values joined with `, ` (the only case that copies).
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
                match (all.next(), all.next()) {
                    (None, _) => f(None, false),
                    (Some(one), None) => f(Some(one.as_bytes()), false),
                    (Some(first), Some(second)) => {
                        let mut v = first.as_bytes().to_vec();
                        for more in std::iter::once(second).chain(all) {
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
    fn the_stack_and_the_joined_keys_are_the_same() {
        let parts = [
            KeyPart::Scheme,
            KeyPart::Host,
            KeyPart::Path,
            KeyPart::Query,
            KeyPart::Header(http::header::ACCEPT_LANGUAGE),
            KeyPart::Cookie("lang".into()),
        ];
        let mut h = HeaderMap::new();
        h.insert("cookie", "lang=de".parse().unwrap());
        let long = "/".repeat(300);
        for (host, path, query) in [
            (&b"Example.COM:8080"[..], "/a", Some("b")),
            (b"", "/", None),
            (b"x.Y", "/", Some("")),
            (
                b"aBcDeFgHiJkLmNoPqRsTuVwXyZ@[`{\xc3\x89.example",
                "/a",
                None,
            ),
            (b"h", &long, None),
        ] {
            let t = Target {
                scheme: "https",
                host,
                path,
                query,
            };
            assert_eq!(key(&parts, &t, &h), joined(&parts, &t, &h));
        }
        // A field sent on two lines is one part, joined.
        h.append("accept-language", "de".parse().unwrap());
        h.append("accept-language", "fr".parse().unwrap());
        let t = target("/", None);
        assert_eq!(key(&parts, &t, &h), joined(&parts, &t, &h));
        assert!(key(&parts, &t, &h).windows(6).any(|w| w == b"de, fr"));
    }

    #[test]
    fn lower_ascii_lowers_only_ascii_capitals() {
        let all: Vec<u8> = (0..=255).collect();
        for len in 0..all.len() {
            for start in [0, 60, 190] {
                let Some(part) = all.get(start..start + len) else {
                    continue;
                };
                let mut ours = part.to_vec();
                lower_ascii(&mut ours);
                assert_eq!(ours, part.to_ascii_lowercase(), "{start} {len}");
            }
        }
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
