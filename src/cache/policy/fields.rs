//! Which of the fields the cache reads a request or a response holds,
//! found in one pass over the map's names. (A lookup per name costs a
//! hash and a probe, about 90 instructions, and most of the names asked
//! about are absent: a miss asked about eleven.)

use http::header::{self, HeaderMap, HeaderName};

/// The fields a cache answers from a whole stored response (RFC 9111
/// §4.3.2): taken off a request that fills or revalidates.
pub(crate) const ANSWERED: [HeaderName; 4] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_RANGE,
    header::RANGE,
];

/// The request fields the cache acts on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RequestFields {
    pub(crate) cache_control: bool,
    pub(crate) pragma: bool,
    pub(crate) authorization: bool,
    /// `If-Match` or `If-Unmodified-Since`: preconditions only the origin
    /// evaluates.
    pub(crate) precondition: bool,
    /// One of [`ANSWERED`].
    pub(crate) answered: bool,
}

impl RequestFields {
    pub(crate) fn of(h: &HeaderMap) -> Self {
        let mut f = Self::default();
        for k in h.keys() {
            if k == header::CACHE_CONTROL {
                f.cache_control = true;
            } else if k == header::PRAGMA {
                f.pragma = true;
            } else if k == header::AUTHORIZATION {
                f.authorization = true;
            } else if k == header::IF_MATCH || k == header::IF_UNMODIFIED_SINCE {
                f.precondition = true;
            } else if ANSWERED.iter().any(|n| k == n) {
                f.answered = true;
            }
        }
        f
    }
}

/// The response fields the storing decision reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ResponseFields {
    pub(crate) cache_control: bool,
    /// The rules' targeted field (RFC 9213), when they name one.
    pub(crate) targeted: bool,
    pub(crate) vary: bool,
    pub(crate) etag: bool,
    pub(crate) last_modified: bool,
    pub(crate) expires: bool,
    pub(crate) set_cookie: bool,
}

impl ResponseFields {
    pub(crate) fn of(h: &HeaderMap, targeted: Option<&HeaderName>) -> Self {
        let mut f = Self::default();
        for k in h.keys() {
            if k == header::CACHE_CONTROL {
                f.cache_control = true;
            } else if k == header::VARY {
                f.vary = true;
            } else if k == header::ETAG {
                f.etag = true;
            } else if k == header::LAST_MODIFIED {
                f.last_modified = true;
            } else if k == header::EXPIRES {
                f.expires = true;
            } else if k == header::SET_COOKIE {
                f.set_cookie = true;
            } else if targeted.is_some_and(|t| k == t) {
                f.targeted = true;
            }
        }
        f
    }

    /// Whether it has a validator (§4.3.1).
    pub(crate) fn validator(&self) -> bool {
        self.etag || self.last_modified
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::test_fields as map;

    #[test]
    fn each_field_is_found_and_no_other() {
        let none = RequestFields::of(&map(&[("host", "a"), ("accept", "*/*")]));
        assert_eq!(none, RequestFields::default());
        let all = RequestFields::of(&map(&[
            ("cache-control", "no-cache"),
            ("pragma", "no-cache"),
            ("authorization", "x"),
            ("if-unmodified-since", "x"),
            ("range", "bytes=0-1"),
        ]));
        assert!(all.cache_control && all.pragma && all.authorization);
        assert!(all.precondition && all.answered);
        for n in ["if-match", "if-unmodified-since"] {
            assert!(RequestFields::of(&map(&[(n, "x")])).precondition, "{n}");
        }
        for n in ["if-none-match", "if-modified-since", "if-range", "range"] {
            let f = RequestFields::of(&map(&[(n, "x")]));
            assert!(f.answered && !f.precondition, "{n}");
        }

        let t = HeaderName::from_static("cdn-cache-control");
        let none = ResponseFields::of(&map(&[("server", "x"), ("content-length", "1")]), Some(&t));
        assert_eq!(none, ResponseFields::default());
        let names = [
            "cache-control",
            "vary",
            "etag",
            "last-modified",
            "expires",
            "set-cookie",
            "cdn-cache-control",
        ];
        let fields: Vec<_> = names.iter().map(|n| (*n, "x")).collect();
        let all = ResponseFields::of(&map(&fields), Some(&t));
        assert!(all.cache_control && all.vary && all.etag && all.last_modified);
        assert!(all.expires && all.set_cookie && all.targeted && all.validator());
        assert!(!ResponseFields::of(&map(&[("cdn-cache-control", "x")]), None).targeted);
    }
}
