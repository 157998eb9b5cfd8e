//! The `Cache-Status` member this cache adds (RFC 9211): a Structured
//! Field list item, the cache's name with parameters.

use std::cell::RefCell;

use http::HeaderValue;

/// Why the request went forward (RFC 9211 §2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fwd {
    /// No response stored for the URI.
    UriMiss,
    /// Stored responses, none for the request's `Vary` values.
    VaryMiss,
    /// The request asked for it (`no-cache`, `max-age=0`, ...).
    Request,
    /// The stored response was stale: revalidated or replaced.
    Stale,
    /// The request's method cannot be answered from the cache.
    Method,
}

impl Fwd {
    fn token(self) -> &'static str {
        match self {
            Fwd::UriMiss => "uri-miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Request => "request",
            Fwd::Stale => "stale",
            Fwd::Method => "method",
        }
    }
}

/// What this cache did with a request (RFC 9211 §2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CacheStatus {
    /// §2.1: answered from the cache without going forward.
    pub(crate) hit: bool,
    /// §2.2: went forward, and why.
    pub(crate) fwd: Option<Fwd>,
    /// §2.3: the status the next hop answered.
    pub(crate) fwd_status: Option<u16>,
    /// §2.4: the response's remaining freshness in seconds (negative when
    /// stale).
    pub(crate) ttl: Option<i64>,
    /// §2.5: the response was stored.
    pub(crate) stored: bool,
    /// §2.6: the request was collapsed into another one.
    pub(crate) collapsed: bool,
    /// §2.8: more detail (why a response was not stored, ...).
    pub(crate) detail: Option<&'static str>,
}

/// An sf-token (RFC 8941 §3.3.4)?
fn is_token(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'*')
        && b.all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                        | b':'
                        | b'/'
                )
        })
}

/// Writes `s` as an sf-token when it is one, else as an sf-string
/// (characters outside printable ASCII dropped).
fn push_item(out: &mut String, s: &str) {
    if is_token(s) {
        out.push_str(s);
        return;
    }
    out.push('"');
    for c in s.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// The same constant: same place and length.
fn same_str(a: &str, b: &str) -> bool {
    std::ptr::eq(a, b)
}

/// How many values without `ttl` each worker keeps made.
const MEMO: usize = 32;

thread_local! {
    /// Values without `ttl` (what most misses send: a few combinations
    /// of reason, status and detail), made once per worker thread and
    /// then shared (a `HeaderValue` clone is a reference count): found by
    /// a scan of at most [`MEMO`] small entries, no lock.
    static MADE: RefCell<Vec<(CacheStatus, &'static str, HeaderValue)>> =
        const { RefCell::new(Vec::new()) };
}

impl CacheStatus {
    /// This cache's member, named `name` (RFC 9211 §2): `name; hit;
    /// ttl=42` or `name; fwd=miss; fwd-status=200; stored`.
    pub(crate) fn header_value(&self, name: &'static str) -> HeaderValue {
        if self.ttl.is_some() {
            return self.make(name);
        }
        MADE.with(|m| {
            let mut m = m.borrow_mut();
            if let Some((_, _, v)) = m.iter().find(|(s, n, _)| s.same(self) && same_str(n, name)) {
                return v.clone();
            }
            let v = self.make(name);
            if m.len() < MEMO {
                m.push((*self, name, v.clone()));
            }
            v
        })
    }

    /// Equal, with `detail` compared by where it is (the words are
    /// constants): a memo lookup calls no `memcmp`. (Equal words in two
    /// places make two entries.)
    fn same(&self, o: &CacheStatus) -> bool {
        let detail = match (self.detail, o.detail) {
            (None, None) => true,
            (Some(a), Some(b)) => same_str(a, b),
            _ => false,
        };
        detail
            && (self.hit, self.fwd, self.fwd_status, self.ttl)
                == (o.hit, o.fwd, o.fwd_status, o.ttl)
            && (self.stored, self.collapsed) == (o.stored, o.collapsed)
    }

    /// The value, written.
    fn make(&self, name: &str) -> HeaderValue {
        let mut out = String::with_capacity(64);
        push_item(&mut out, name);
        if self.hit {
            out.push_str("; hit");
        }
        if let Some(fwd) = self.fwd {
            out.push_str("; fwd=");
            out.push_str(fwd.token());
        }
        if let Some(s) = self.fwd_status {
            out.push_str("; fwd-status=");
            out.push_str(itoa::Buffer::new().format(s));
        }
        if let Some(ttl) = self.ttl {
            out.push_str("; ttl=");
            out.push_str(
                itoa::Buffer::new().format(ttl.clamp(-999_999_999_999_999, 999_999_999_999_999)),
            );
        }
        if self.stored {
            out.push_str("; stored");
        }
        if self.collapsed {
            out.push_str("; collapsed");
        }
        if let Some(d) = self.detail {
            out.push_str("; detail=");
            push_item(&mut out, d);
        }
        // Only printable ASCII was written.
        HeaderValue::from_str(&out).unwrap_or(HeaderValue::from_static("tidegate"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_made_before_is_the_same_value() {
        let s = CacheStatus {
            fwd: Some(Fwd::UriMiss),
            fwd_status: Some(200),
            detail: Some("no-store"),
            ..Default::default()
        };
        let want = "tidegate; fwd=uri-miss; fwd-status=200; detail=no-store";
        assert_eq!(s.header_value("tidegate"), want);
        assert_eq!(s.header_value("tidegate"), want);
        let other = CacheStatus {
            fwd_status: Some(404),
            ..s
        };
        assert_eq!(
            other.header_value("tidegate"),
            "tidegate; fwd=uri-miss; fwd-status=404; detail=no-store"
        );
        assert_eq!(
            s.header_value("other"),
            "other; fwd=uri-miss; fwd-status=200; detail=no-store"
        );
    }

    #[test]
    fn hit_with_ttl() {
        let s = CacheStatus {
            hit: true,
            ttl: Some(42),
            ..Default::default()
        };
        assert_eq!(s.header_value("tidegate"), "tidegate; hit; ttl=42");
    }

    #[test]
    fn miss_forwarded_and_stored() {
        let s = CacheStatus {
            fwd: Some(Fwd::UriMiss),
            fwd_status: Some(200),
            stored: true,
            ..Default::default()
        };
        assert_eq!(
            s.header_value("tidegate"),
            "tidegate; fwd=uri-miss; fwd-status=200; stored"
        );
    }

    #[test]
    fn every_fwd_token_and_detail() {
        for (f, t) in [
            (Fwd::UriMiss, "uri-miss"),
            (Fwd::VaryMiss, "vary-miss"),
            (Fwd::Request, "request"),
            (Fwd::Stale, "stale"),
            (Fwd::Method, "method"),
        ] {
            let s = CacheStatus {
                fwd: Some(f),
                detail: Some("no-store"),
                ..Default::default()
            };
            assert_eq!(
                s.header_value("tidegate"),
                format!("tidegate; fwd={t}; detail=no-store")
            );
        }
    }

    #[test]
    fn negative_ttl_collapsed_and_strings() {
        let s = CacheStatus {
            fwd: Some(Fwd::Stale),
            ttl: Some(-5),
            collapsed: true,
            detail: Some("two words"),
            ..Default::default()
        };
        assert_eq!(
            s.header_value("my cache"),
            "\"my cache\"; fwd=stale; ttl=-5; collapsed; detail=\"two words\""
        );
        let s = CacheStatus {
            hit: true,
            detail: Some("a\"b\\c"),
            ..Default::default()
        };
        assert_eq!(
            s.header_value("1cache"),
            "\"1cache\"; hit; detail=\"a\\\"b\\\\c\""
        );
    }
}
