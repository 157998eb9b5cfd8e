//! Request directives (RFC 9111 §5.2.1), and `Pragma: no-cache` (§5.4).

use std::time::Duration;

use http::header::{self, HeaderMap};

use super::directive::{delta_seconds, directives, is};
use super::fields::RequestFields;

/// Request directives (RFC 9111 §5.2.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RequestControl {
    /// §5.2.1.4 (or `Pragma: no-cache` without `Cache-Control`, §5.4).
    pub(crate) no_cache: bool,
    /// §5.2.1.5: neither the request nor its response is stored.
    pub(crate) no_store: bool,
    /// §5.2.1.1: the client accepts no response older than this.
    pub(crate) max_age: Option<Duration>,
    /// §5.2.1.2: `Some(None)`: any staleness; `Some(Some(d))`: stale by
    /// at most `d`.
    pub(crate) max_stale: Option<Option<Duration>>,
    /// §5.2.1.3: fresh for at least this much longer.
    pub(crate) min_fresh: Option<Duration>,
    /// §5.2.1.7: answer from the cache or with 504.
    pub(crate) only_if_cached: bool,
}

impl RequestControl {
    /// Parses a request's `Cache-Control` lines (§5.2.1). An invalid
    /// `max-age` is `max-age=0` and an invalid `min-fresh` is ignored
    /// (both the conservative reading); an invalid `max-stale` is
    /// ignored (no staleness allowed). `Pragma: no-cache` counts as
    /// `no-cache` only when there is no `Cache-Control` (§5.4).
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        Self::read(headers, &RequestFields::of(headers))
    }

    /// As [`RequestControl::parse`], knowing which fields `headers` has.
    pub(crate) fn read(headers: &HeaderMap, fields: &RequestFields) -> Self {
        let mut cc = Self::default();
        if !fields.cache_control {
            cc.no_cache = fields.pragma
                && headers
                    .get_all(header::PRAGMA)
                    .iter()
                    .flat_map(|v| v.as_bytes().split(|&b| b == b','))
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"no-cache"));
            return cc;
        }
        directives(
            headers.get_all(header::CACHE_CONTROL).iter(),
            |name, arg| {
                if is(name, "no-cache") {
                    cc.no_cache = true;
                } else if is(name, "no-store") {
                    cc.no_store = true;
                } else if is(name, "max-age") {
                    let d = delta_seconds(arg).unwrap_or(Duration::ZERO);
                    cc.max_age = Some(cc.max_age.map_or(d, |old| old.min(d)));
                } else if is(name, "max-stale") {
                    match arg {
                        None => cc.max_stale = Some(None),
                        Some(_) => {
                            if let Ok(d) = delta_seconds(arg) {
                                cc.max_stale = match cc.max_stale {
                                    Some(Some(old)) => Some(Some(old.min(d))),
                                    Some(None) | None => Some(Some(d)),
                                };
                            }
                        }
                    }
                } else if is(name, "min-fresh") {
                    if let Ok(d) = delta_seconds(arg) {
                        cc.min_fresh = Some(cc.min_fresh.map_or(d, |old| old.max(d)));
                    }
                } else if is(name, "only-if-cached") {
                    cc.only_if_cached = true;
                }
            },
        );
        cc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HeaderName, HeaderValue};

    fn req(lines: &[(&str, &str)]) -> RequestControl {
        let mut h = HeaderMap::new();
        for (n, v) in lines {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        RequestControl::parse(&h)
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn request_directives() {
        let cc = req(&[(
            "cache-control",
            "no-cache, no-store, max-age=5, min-fresh=3, only-if-cached",
        )]);
        assert!(cc.no_cache && cc.no_store && cc.only_if_cached);
        assert_eq!((cc.max_age, cc.min_fresh), (Some(S(5)), Some(S(3))));
        assert_eq!(req(&[("cache-control", "max-stale")]).max_stale, Some(None));
        assert_eq!(
            req(&[("cache-control", "max-stale=10")]).max_stale,
            Some(Some(S(10)))
        );
        assert_eq!(req(&[("cache-control", "max-stale=x")]).max_stale, None);
        assert_eq!(req(&[("cache-control", "max-age=x")]).max_age, Some(S(0)));
        assert_eq!(req(&[("cache-control", "min-fresh=x")]).min_fresh, None);
    }

    #[test]
    fn pragma_no_cache_only_without_cache_control() {
        assert!(req(&[("pragma", "no-cache")]).no_cache);
        assert!(req(&[("pragma", "foo, No-Cache")]).no_cache);
        assert!(!req(&[("pragma", "no-cache"), ("cache-control", "max-stale")]).no_cache);
        assert!(!req(&[("pragma", "x")]).no_cache);
    }
}
