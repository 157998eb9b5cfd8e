//! `Cache-Control` directives (RFC 9111 §5.2), parsed straight from the
//! field lines' bytes: no allocation, no regex, quoted strings honoured
//! (a comma or a directive name inside quotes is not a directive).
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

use super::rules::Rules;
use super::targeted::{dictionary, Item};

/// The greatest delta-seconds a cache need represent (RFC 9111 §1.2.2).
pub(crate) const DELTA_MAX: u64 = 1 << 31;

/// A directive present with an unusable value: the response is stale
/// (RFC 9111 §4.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Invalid;

/// One directive's argument, as written (RFC 9111 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arg<'a> {
    /// `name=token`: the bytes up to the next comma, trailing OWS trimmed.
    Token(&'a [u8]),
    /// `name="..."`: the bytes between the quotes, escapes not undone.
    Quoted(&'a [u8]),
    /// Something after `=` that is neither (an unterminated quote, text
    /// after the closing quote).
    Bad,
}

/// Calls `f(name, argument)` for each directive of every line of `lines`
/// (RFC 9111 §5.2: `#( token [ "=" ( token / quoted-string ) ] )`). Names
/// are as written (compare them with `eq_ignore_ascii_case`); a name that
/// is not a token (`max-age =1`) is passed on and matches nothing; an
/// element with no name (`=1`) is skipped.
pub(crate) fn directives<'a>(
    lines: impl Iterator<Item = &'a HeaderValue>,
    mut f: impl FnMut(&'a [u8], Option<Arg<'a>>),
) {
    for line in lines {
        let s = line.as_bytes();
        let mut i = 0;
        while i < s.len() {
            // Skip empty elements and OWS (RFC 9110 §5.6.1).
            while i < s.len() && matches!(s[i], b',' | b' ' | b'\t') {
                i += 1;
            }
            if i == s.len() {
                break;
            }
            let start = i;
            while i < s.len() && s[i] != b',' && s[i] != b'=' {
                i += 1;
            }
            if i == s.len() || s[i] == b',' {
                f(trim_end(&s[start..i]), None);
                continue;
            }
            let name = &s[start..i];
            i += 1; // '='
            if s.get(i) == Some(&b'"') {
                i += 1;
                let from = i;
                let mut closed = None;
                while i < s.len() {
                    match s[i] {
                        b'\\' => i += 2,
                        b'"' => {
                            closed = Some(i);
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
                // A final backslash steps past the end.
                i = i.min(s.len());
                let tail_start = i;
                while i < s.len() && s[i] != b',' {
                    i += 1;
                }
                let tail = trim_end(&s[tail_start..i]);
                let arg = match closed {
                    Some(end) if tail.is_empty() => Arg::Quoted(&s[from..end]),
                    _ => Arg::Bad,
                };
                if !name.is_empty() {
                    f(name, Some(arg));
                }
            } else {
                let from = i;
                while i < s.len() && s[i] != b',' {
                    i += 1;
                }
                if !name.is_empty() {
                    f(name, Some(Arg::Token(trim_end(&s[from..i]))));
                }
            }
        }
    }
}

fn trim_end(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// delta-seconds (RFC 9111 §1.2.2): `1*DIGIT`, token or quoted form,
/// saturating at 2^31.
pub(crate) fn delta_seconds(arg: Option<Arg<'_>>) -> Result<Duration, Invalid> {
    let digits = match arg {
        Some(Arg::Token(t) | Arg::Quoted(t)) => t,
        _ => return Err(Invalid),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(Invalid);
    }
    let mut n: u64 = 0;
    for d in digits {
        n = (n * 10 + u64::from(d - b'0')).min(DELTA_MAX);
    }
    Ok(Duration::from_secs(n))
}

fn is(name: &[u8], known: &str) -> bool {
    name.eq_ignore_ascii_case(known.as_bytes())
}

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
        let mut cc = Self::default();
        let mut any = false;
        directives(
            headers.get_all(header::CACHE_CONTROL).iter(),
            |name, arg| {
                any = true;
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
        if !any && !headers.contains_key(header::CACHE_CONTROL) {
            cc.no_cache = headers
                .get_all(header::PRAGMA)
                .iter()
                .flat_map(|v| v.as_bytes().split(|&b| b == b','))
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"no-cache"));
        }
        cc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderName;

    fn resp(lines: &[&str]) -> ResponseControl {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(header::CACHE_CONTROL, HeaderValue::from_str(l).unwrap());
        }
        ResponseControl::parse(&h, &Rules::default())
    }

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

    #[test]
    fn directives_yield_names_and_arguments() {
        let mut h = HeaderMap::new();
        h.append(
            header::CACHE_CONTROL,
            HeaderValue::from_static(" a, b=1 ,c=\"x,y\", =5, d=\"e"),
        );
        h.append(
            header::CACHE_CONTROL,
            HeaderValue::from_static("f=\"g\" h, i"),
        );
        h.append(header::CACHE_CONTROL, HeaderValue::from_static("j=\"k\\"));
        let mut got = Vec::new();
        directives(h.get_all(header::CACHE_CONTROL).iter(), |n, a| {
            got.push((n, a))
        });
        assert_eq!(
            got,
            [
                (&b"a"[..], None),
                (b"b", Some(Arg::Token(b"1"))),
                (b"c", Some(Arg::Quoted(b"x,y"))),
                (b"d", Some(Arg::Bad)),
                (b"f", Some(Arg::Bad)),
                (b"i", None),
                (b"j", Some(Arg::Bad)),
            ]
        );
    }

    #[test]
    fn delta_seconds_overflow_saturates() {
        assert_eq!(
            delta_seconds(Some(Arg::Token(b"18446744073709551616"))),
            Ok(S(DELTA_MAX))
        );
        assert_eq!(delta_seconds(Some(Arg::Bad)), Err(Invalid));
        assert_eq!(delta_seconds(None), Err(Invalid));
    }
}
