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

/// Whether keys of `parts` are made of the request's URL alone (no field
/// or cookie in them): such a key can be made again from the URL.
pub(crate) fn of_url(parts: &[KeyPart]) -> bool {
    parts.iter().all(|p| {
        matches!(
            p,
            KeyPart::Scheme | KeyPart::Host | KeyPart::Path | KeyPart::Query
        )
    })
}

/// Keys up to this long are written on the stack, then copied into one
/// exact allocation.
pub(crate) const SMALL: usize = 256;

/// The key of `t` with request fields `headers`, as `parts` say. Written
/// on the stack and copied out (no capacity checks, one exact allocation);
/// a longer key as [`joined`].
pub(crate) fn key(parts: &[KeyPart], t: &Target<'_>, headers: &HeaderMap) -> Bytes {
    written(parts, t, headers, &mut [0; SMALL]).to_bytes()
}

/// A key as [`written`] makes it: in the caller's room, or (longer) in
/// its allocation.
pub(crate) enum Written<'a> {
    Small(&'a [u8]),
    Long(Bytes),
}

impl Written<'_> {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Written::Small(b) => b,
            Written::Long(b) => b,
        }
    }

    /// The key in one exact allocation of its own.
    pub(crate) fn to_bytes(&self) -> Bytes {
        match self {
            Written::Small(b) => Bytes::copy_from_slice(b),
            Written::Long(b) => b.clone(),
        }
    }
}

/// The key of `t` (see [`key`]) written in `room` where it fits, not
/// allocated: what a look in a map needs.
pub(crate) fn written<'a>(
    parts: &[KeyPart],
    t: &Target<'_>,
    headers: &HeaderMap,
    room: &'a mut [u8; SMALL],
) -> Written<'a> {
    if matches!(
        parts,
        [
            KeyPart::Scheme,
            KeyPart::Host,
            KeyPart::Path,
            KeyPart::Query
        ]
    ) {
        if let Some(n) = url_written(t, room) {
            return Written::Small(room.get(..n).unwrap_or_default());
        }
    }
    let mut n = 0;
    let mut fits = true;
    each(parts, t, headers, |b, lower| {
        fits = fits && put(room, &mut n, b, lower);
    });
    match fits {
        true => Written::Small(room.get(..n).unwrap_or_default()),
        false => Written::Long(joined(parts, t, headers)),
    }
}

/// [`written`] for the default key (scheme, host, path, query),
/// straight: its length known first, then each part put where it goes
/// (the general loop's checks and calls cost a third more). `None`: it
/// does not fit.
fn url_written(t: &Target<'_>, room: &mut [u8; SMALL]) -> Option<usize> {
    let query = t.query.map(str::as_bytes);
    let (s, h, p) = (t.scheme.as_bytes(), t.host, t.path.as_bytes());
    let n = 16 + s.len() + h.len() + p.len() + query.map_or(0, <[u8]>::len);
    let out = room.get_mut(..n)?;
    let (_, out) = part(out, s.len() as u32, s)?;
    let (host, out) = part(out, h.len() as u32, h)?;
    lower_ascii(host);
    let (_, out) = part(out, p.len() as u32, p)?;
    let q = query.unwrap_or_default();
    part(out, query.map_or(u32::MAX, |q| q.len() as u32), q)?;
    Some(n)
}

/// Puts `len` then `b` at the start of `out`: where `b` went, and what is
/// left.
fn part<'o>(out: &'o mut [u8], len: u32, b: &[u8]) -> Option<(&'o mut [u8], &'o mut [u8])> {
    let (l, out) = out.split_at_mut_checked(4)?;
    l.copy_from_slice(&len.to_be_bytes());
    let (at, out) = out.split_at_mut_checked(b.len())?;
    at.copy_from_slice(b);
    Some((at, out))
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
    fn the_default_key_written_straight_is_the_same() {
        const URL: [KeyPart; 4] = [
            KeyPart::Scheme,
            KeyPart::Host,
            KeyPart::Path,
            KeyPart::Query,
        ];
        let h = HeaderMap::new();
        let long = "/".repeat(300);
        for (host, path, query) in [
            (&b"Example.COM:8080"[..], "/a", Some("b=C")),
            (b"", "/", None),
            (b"x.Y", "/", Some("")),
            (b"aBcDeFgHiJkLmNoPqRsTuVwXyZ.example", "/A/b", None),
            (b"h", &long, None),
            (b"h", &long[..230], Some("q")),
        ] {
            for scheme in ["http", "https"] {
                let t = Target {
                    scheme,
                    host,
                    path,
                    query,
                };
                let mut room = [0; SMALL];
                let w = written(&URL, &t, &h, &mut room);
                assert_eq!(w.as_bytes(), &joined(&URL, &t, &h)[..]);
            }
        }
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
