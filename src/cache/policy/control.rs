//! Response directives (RFC 9111 §5.2.2) from `Cache-Control` (read by
//! `directive.rs`) or a targeted field (RFC 9213, read by `targeted.rs`).
//!
//! Parsing decisions (RFC 9111 leaves them to the cache):
//! - all field lines are one list (RFC 9110 §5.3); directive names compare
//!   case-insensitively; unknown directives are ignored (§5.2.3);
//! - `max-age="60"` (the quoted form) is accepted: §5.2 says recipients
//!   "ought to accept both forms"; `max-age='60'`, `max-age=6.0`,
//!   `max-age=-1`, `max-age= 60` are invalid;
//! - `max-age =60` (space before `=`) is not a directive name at all: it
//!   is ignored, as if absent;
//! - a `max-age` or `s-maxage` given twice is [`Invalid`] (§4.2.1 allows
//!   "consider the response stale"): the conservative choice;
//! - a delta-seconds above 2^31 is 2^31 (§1.2.2);
//! - `no-cache="a, b"` and `private="a"` (qualified forms) are kept apart
//!   from the unqualified ones: the response may be stored and reused
//!   without the listed fields, which `strip_unstorable` drops (§5.2.2.4,
//!   §5.2.2.7); one naming a field the stored response needs (`ETag`,
//!   `Content-Length`, ...) is taken as unqualified;
//! - a targeted field (RFC 9213) is read as the Structured Field it is,
//!   strictly: lower-case keys, Integer delta-seconds (over 2^31: 2^31),
//!   Boolean flags; any syntax or type error and the field is ignored,
//!   `Cache-Control` applying instead. It replaces `Cache-Control` even
//!   when it holds no known directive (`CDN-Cache-Control: none`).

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};

use super::directive::{delta_seconds, directives, is, Arg, Invalid, DELTA_MAX};
use super::fields::ResponseFields;
use super::rules::Rules;
use super::targeted::{dictionary, Item};

/// Response directives for a shared cache (RFC 9111 §5.2.2, RFC 5861,
/// RFC 8246 `immutable`), from `Cache-Control` or from the targeted field
/// (RFC 9213) when one is configured and present.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ResponseControl {
    /// §5.2.2.5: never store.
    pub(crate) no_store: bool,
    /// §5.2.2.4, unqualified: store, but validate before each reuse.
    pub(crate) no_cache: bool,
    /// §5.2.2.7, unqualified: a shared cache never stores it.
    pub(crate) private: bool,
    /// §5.2.2.9: storable even with `Authorization` or no explicit freshness.
    pub(crate) public: bool,
    /// §5.2.2.2: never served stale.
    pub(crate) must_revalidate: bool,
    /// §5.2.2.8: `must-revalidate` for shared caches.
    pub(crate) proxy_revalidate: bool,
    /// §5.2.2.3: store only a status we understand (then `no-store` is
    /// overridden).
    pub(crate) must_understand: bool,
    /// RFC 8246: no need to revalidate while fresh (reload requests too).
    pub(crate) immutable: bool,
    /// §5.2.2.1.
    pub(crate) max_age: Option<Result<Duration, Invalid>>,
    /// §5.2.2.10: beats `max-age` here, and forbids serving stale.
    pub(crate) s_maxage: Option<Result<Duration, Invalid>>,
    /// RFC 5861 §3 (an invalid value is ignored).
    pub(crate) stale_while_revalidate: Option<Duration>,
    /// RFC 5861 §4 (an invalid value is ignored).
    pub(crate) stale_if_error: Option<Duration>,
    /// `no-cache="..."` or `private="..."` was seen: `strip_unstorable`
    /// drops the fields they name before storing.
    pub(crate) qualified: bool,
}

impl ResponseControl {
    /// Parses the directives a shared cache obeys: the targeted field of
    /// `rules` (RFC 9213 §2.2) when the response carries it and it is a
    /// valid Dictionary whose known directives have values of the right
    /// type (RFC 9213 §2.1: `max-age="60"`, `max-age=-1` or `&&&` make
    /// the whole field ignored), which then replaces `Cache-Control`
    /// entirely; otherwise `Cache-Control`.
    pub(crate) fn parse(headers: &HeaderMap, rules: &Rules) -> Self {
        if let Some(t) = &rules.targeted {
            if let Some(cc) = Self::parse_targeted(headers.get_all(t).iter()) {
                return cc;
            }
        }
        Self::parse_cache_control(headers)
    }

    /// As [`ResponseControl::parse`], knowing which fields `headers` has
    /// (`fields` found with `rules`' targeted field): with neither
    /// `Cache-Control` nor that one, no directive.
    pub(crate) fn read(headers: &HeaderMap, rules: &Rules, fields: &ResponseFields) -> Self {
        match fields.cache_control || fields.targeted {
            true => Self::parse(headers, rules),
            false => Self::default(),
        }
    }

    /// A targeted field's directives (RFC 9213 §2.1), or `None` when it is
    /// absent, empty or invalid. Duplicate keys: the last wins (RFC 8941).
    fn parse_targeted<'a>(lines: impl Iterator<Item = &'a HeaderValue>) -> Option<Self> {
        let mut cc = Self::default();
        let mut ok = true;
        let valid = dictionary(lines, |key, item| {
            let delta = || match item {
                Item::Integer(n) => u64::try_from(n)
                    .ok()
                    .map(|n| Duration::from_secs(n.min(DELTA_MAX))),
                _ => None,
            };
            let mut flag = |to: &mut bool| match item {
                Item::Boolean(b) => *to = b,
                _ => ok = false,
            };
            match key {
                b"no-store" => flag(&mut cc.no_store),
                b"public" => flag(&mut cc.public),
                b"must-revalidate" => flag(&mut cc.must_revalidate),
                b"proxy-revalidate" => flag(&mut cc.proxy_revalidate),
                b"must-understand" => flag(&mut cc.must_understand),
                b"immutable" => flag(&mut cc.immutable),
                b"no-cache" | b"private" => {
                    let to = if key == b"no-cache" {
                        &mut cc.no_cache
                    } else {
                        &mut cc.private
                    };
                    match item {
                        Item::Boolean(b) => *to = b,
                        Item::String(list) if strippable(list) => cc.qualified = true,
                        _ => *to = true,
                    }
                }
                b"max-age" | b"s-maxage" | b"stale-while-revalidate" | b"stale-if-error" => {
                    let Some(d) = delta() else {
                        ok = false;
                        return;
                    };
                    match key {
                        b"max-age" => cc.max_age = Some(Ok(d)),
                        b"s-maxage" => cc.s_maxage = Some(Ok(d)),
                        b"stale-while-revalidate" => cc.stale_while_revalidate = Some(d),
                        _ => cc.stale_if_error = Some(d),
                    }
                }
                _ => {}
            }
        });
        (valid && ok).then_some(cc)
    }

    /// `Cache-Control`'s directives (RFC 9111 §5.2.2).
    fn parse_cache_control(headers: &HeaderMap) -> Self {
        let mut cc = Self::default();
        let (mut max_age_seen, mut s_maxage_seen) = (false, false);
        directives(
            headers.get_all(header::CACHE_CONTROL).iter(),
            |name, arg| {
                if is(name, "no-store") {
                    cc.no_store = true;
                } else if is(name, "no-cache") {
                    match arg {
                        None => cc.no_cache = true,
                        Some(Arg::Quoted(q)) if strippable(q) => cc.qualified = true,
                        // `no-cache=` `no-cache=a` `no-cache=""`, or a field the
                        // stored response needs: conservative.
                        Some(_) => cc.no_cache = true,
                    }
                } else if is(name, "private") {
                    match arg {
                        None => cc.private = true,
                        Some(Arg::Quoted(q)) if strippable(q) => cc.qualified = true,
                        Some(_) => cc.private = true,
                    }
                } else if is(name, "public") {
                    cc.public = true;
                } else if is(name, "must-revalidate") {
                    cc.must_revalidate = true;
                } else if is(name, "proxy-revalidate") {
                    cc.proxy_revalidate = true;
                } else if is(name, "must-understand") {
                    cc.must_understand = true;
                } else if is(name, "immutable") {
                    cc.immutable = true;
                } else if is(name, "max-age") {
                    cc.max_age = Some(if max_age_seen {
                        Err(Invalid)
                    } else {
                        delta_seconds(arg)
                    });
                    max_age_seen = true;
                } else if is(name, "s-maxage") {
                    cc.s_maxage = Some(if s_maxage_seen {
                        Err(Invalid)
                    } else {
                        delta_seconds(arg)
                    });
                    s_maxage_seen = true;
                } else if is(name, "stale-while-revalidate") {
                    cc.stale_while_revalidate = least(cc.stale_while_revalidate, arg);
                } else if is(name, "stale-if-error") {
                    cc.stale_if_error = least(cc.stale_if_error, arg);
                }
            },
        );
        cc
    }

    /// Whether the response may never be served stale by a shared cache:
    /// `must-revalidate`, `proxy-revalidate`, or `s-maxage` (§5.2.2.10).
    pub(crate) fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some()
    }
}

/// A repeated stale-* directive keeps its smallest valid value.
fn least(old: Option<Duration>, arg: Option<Arg<'_>>) -> Option<Duration> {
    match (old, delta_seconds(arg).ok()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Calls `f` with each field name listed by a qualified `no-cache` or
/// `private` directive of `lines` (RFC 9111 §5.2.2.4, §5.2.2.7).
pub(crate) fn qualified_names<'a>(
    lines: impl Iterator<Item = &'a HeaderValue>,
    mut f: impl FnMut(&'a [u8]),
) {
    directives(lines, |name, arg| {
        if let Some(Arg::Quoted(list)) = arg {
            if (is(name, "no-cache") || is(name, "private")) && strippable(list) {
                for n in list.split(|&b| b == b',') {
                    let n = n.trim_ascii();
                    if !n.is_empty() {
                        f(n);
                    }
                }
            }
        }
    });
}

/// Fields the cache needs to keep a stored response coherent (framing,
/// validators, freshness, variants): a qualified `no-cache` or `private`
/// naming one is taken as unqualified, since they cannot be dropped.
const KEPT: [&str; 12] = [
    "cache-control",
    "cdn-cache-control",
    "content-length",
    "content-encoding",
    "content-range",
    "content-type",
    "etag",
    "last-modified",
    "date",
    "expires",
    "vary",
    "age",
];

/// Whether a qualified directive's list names at least one field and
/// only fields that may be dropped from the stored response.
fn strippable(list: &[u8]) -> bool {
    let mut any = false;
    for n in list.split(|&b| b == b',') {
        let n = n.trim_ascii();
        if n.is_empty() {
            continue;
        }
        if KEPT.iter().any(|k| n.eq_ignore_ascii_case(k.as_bytes())) {
            return false;
        }
        any = true;
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(lines: &[&str]) -> ResponseControl {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(header::CACHE_CONTROL, HeaderValue::from_str(l).unwrap());
        }
        ResponseControl::parse(&h, &Rules::default())
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn max_age_values_table() {
        let cases: &[(&str, Option<Result<Duration, Invalid>>)] = &[
            ("max-age=3600", Some(Ok(S(3600)))),
            ("max-age=0", Some(Ok(S(0)))),
            ("max-age=003600", Some(Ok(S(3600)))),
            ("max-age=\"3600\"", Some(Ok(S(3600)))),
            ("max-age='3600'", Some(Err(Invalid))),
            ("max-age=3600.0", Some(Err(Invalid))),
            ("max-age=3600.5", Some(Err(Invalid))),
            ("max-age=a3600", Some(Err(Invalid))),
            ("max-age=3600a", Some(Err(Invalid))),
            ("max-age=-1", Some(Err(Invalid))),
            ("max-age=", Some(Err(Invalid))),
            ("max-age", Some(Err(Invalid))),
            ("max-age= 3600", Some(Err(Invalid))),
            ("max-age=\"36\"00", Some(Err(Invalid))),
            ("max-age=\"3600", Some(Err(Invalid))),
            ("max-age =3600", None),
            ("MAX-AGE=5", Some(Ok(S(5)))),
            ("Max-Age=5 ", Some(Ok(S(5)))),
            ("max-age=99999999999999999999999", Some(Ok(S(DELTA_MAX)))),
            ("max-age=2147483648", Some(Ok(S(DELTA_MAX)))),
            ("max-age=2147483647", Some(Ok(S(DELTA_MAX - 1)))),
        ];
        for (line, want) in cases {
            assert_eq!(resp(&[line]).max_age, *want, "{line}");
        }
    }

    #[test]
    fn duplicate_max_age_is_invalid_same_line_and_separate_lines() {
        assert_eq!(
            resp(&["max-age=1800, max-age=1"]).max_age,
            Some(Err(Invalid))
        );
        assert_eq!(
            resp(&["max-age=1", "max-age=1800"]).max_age,
            Some(Err(Invalid))
        );
        assert_eq!(
            resp(&["s-maxage=1, S-MAXAGE=2"]).s_maxage,
            Some(Err(Invalid))
        );
    }

    #[test]
    fn quoted_strings_hide_directives_and_commas() {
        let cc = resp(&["extension=\"max-age=3600\", max-age=1"]);
        assert_eq!(cc.max_age, Some(Ok(S(1))));
        let cc = resp(&["max-age=1, extension=\"max-age=3600, no-store\""]);
        assert_eq!(cc.max_age, Some(Ok(S(1))));
        assert!(!cc.no_store);
        let cc = resp(&["x=\"a\\\"b, private\", public"]);
        assert!(cc.public && !cc.private);
    }

    #[test]
    fn flags_are_case_insensitive_and_unknown_ignored() {
        let cc =
            resp(&["No-Store, PRIVATE, Public, must-REVALIDATE, foo, bar=baz, proxy-revalidate"]);
        assert!(
            cc.no_store && cc.private && cc.public && cc.must_revalidate && cc.proxy_revalidate
        );
        let cc = resp(&["must-understand, immutable"]);
        assert!(cc.must_understand && cc.immutable);
        assert_eq!(resp(&["foo, bar=1"]), ResponseControl::default());
    }

    #[test]
    fn multiple_lines_and_empty_elements_combine() {
        let cc = resp(&[", ,no-cache,,", "", "s-maxage=10"]);
        assert!(cc.no_cache);
        assert_eq!(cc.s_maxage, Some(Ok(S(10))));
    }

    #[test]
    fn qualified_no_cache_and_private_are_not_unqualified() {
        let cc = resp(&["no-cache=\"Set-Cookie\", private=\"a, b\""]);
        assert!(!cc.no_cache && !cc.private && cc.qualified);
        // Malformed arguments are taken as the unqualified directive.
        assert!(resp(&["no-cache=a"]).no_cache);
        assert!(resp(&["private=\"\""]).private);
        // Naming a field the stored response needs: unqualified.
        assert!(resp(&["no-cache=\"a, ETag\""]).no_cache);
        assert!(resp(&["private=\"Content-Length\""]).private);
        let mut h = HeaderMap::new();
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache=\"a, B\", private=\"c\", x=\"d\""),
        );
        let mut got = Vec::new();
        qualified_names(h.get_all(header::CACHE_CONTROL).iter(), |n| got.push(n));
        assert_eq!(got, [&b"a"[..], b"B", b"c"]);
    }

    #[test]
    fn stale_extensions_take_the_smallest_valid_value() {
        let cc = resp(&["stale-while-revalidate=60, stale-if-error=10, stale-if-error=5"]);
        assert_eq!(cc.stale_while_revalidate, Some(S(60)));
        assert_eq!(cc.stale_if_error, Some(S(5)));
        assert_eq!(
            resp(&["stale-while-revalidate=x"]).stale_while_revalidate,
            None
        );
    }

    #[test]
    fn forbids_stale_with_revalidate_or_s_maxage() {
        assert!(resp(&["must-revalidate"]).forbids_stale());
        assert!(resp(&["proxy-revalidate"]).forbids_stale());
        assert!(resp(&["s-maxage=5"]).forbids_stale());
        assert!(!resp(&["max-age=5"]).forbids_stale());
    }

    #[test]
    fn targeted_field_replaces_cache_control_when_present() {
        let mut h = HeaderMap::new();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert("cdn-cache-control", HeaderValue::from_static("max-age=60"));
        let cc = ResponseControl::parse(&h, &Rules::default());
        assert!(!cc.no_store);
        assert_eq!(cc.max_age, Some(Ok(S(60))));
        // `none` (no known directive) still replaces Cache-Control.
        h.insert("cdn-cache-control", HeaderValue::from_static("none"));
        assert_eq!(
            ResponseControl::parse(&h, &Rules::default()),
            ResponseControl::default()
        );
        // Empty or invalid: ignored, Cache-Control applies.
        for bad in [
            "",
            "max-age=10000, &&&&&",
            "max-age=\"10000\"",
            "MaX-aGe=3600",
            "max-age =100",
            "max-age= 100",
            "max-age=-1",
            "no-store=1",
            "max-age=60,",
        ] {
            h.insert("cdn-cache-control", HeaderValue::from_static(bad));
            assert!(
                ResponseControl::parse(&h, &Rules::default()).no_store,
                "{bad}"
            );
        }
        let off = Rules {
            targeted: None,
            ..Rules::default()
        };
        h.insert("cdn-cache-control", HeaderValue::from_static("max-age=60"));
        assert!(ResponseControl::parse(&h, &off).no_store);
    }

    #[test]
    fn targeted_field_directives() {
        let parse = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("cdn-cache-control", HeaderValue::from_static(v));
            ResponseControl::parse(&h, &Rules::default())
        };
        let cc = parse(
            "max-age=99999999999, s-maxage=5, stale-while-revalidate=7, stale-if-error=8, public",
        );
        assert_eq!(cc.max_age, Some(Ok(S(DELTA_MAX))));
        assert_eq!(cc.s_maxage, Some(Ok(S(5))));
        assert_eq!(
            (cc.stale_while_revalidate, cc.stale_if_error),
            (Some(S(7)), Some(S(8)))
        );
        assert!(cc.public);
        assert!(
            parse("private").private && parse("no-cache").no_cache && parse("no-store").no_store
        );
        assert!(!parse("no-store=?0").no_store);
        assert_eq!(parse("max-age=1, max-age=2").max_age, Some(Ok(S(2))));
        let q = parse("no-cache=\"x-a\"");
        assert!(q.qualified && !q.no_cache);
        assert!(parse("private=\"etag\"").private);
        assert!(parse("no-cache=tok").no_cache);
    }
}
