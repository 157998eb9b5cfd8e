//! Stored responses updated by a 304 or a HEAD response (RFC 9111 §3.2,
//! §4.3.4, §4.3.5).
//!
//! Decisions (§3.2 leaves the "fields the stored response depends upon"
//! to the cache): a stored response's body is kept as received, so its
//! `Content-Length`, `Content-Encoding` and `Content-Range` describe those
//! bytes and are never replaced; neither is anything [`strip_unstorable`]
//! drops, nor `Set-Cookie` unless the rules keep cookies.
//!
//! [`strip_unstorable`]: super::storing::strip_unstorable

use http::header::{self, HeaderMap};

use super::conditional::{strong_match, weak_match};
use super::rules::{Rules, SetCookie};
use super::storing::strip_unstorable;

/// Which stored responses (their header maps, oldest first) a 304 applies
/// to (RFC 9111 §4.3.4): all with its strong `ETag`; else, for a weak
/// `ETag`, the newest with the same tag; else, with no `ETag`, the newest
/// with its `Last-Modified`; else, when the 304 has no validator, the
/// only stored response if it has none either.
pub(crate) fn select_for_304(not_modified: &HeaderMap, stored: &[&HeaderMap]) -> Vec<usize> {
    if let Some(etag) = not_modified.get(header::ETAG) {
        let strong = !etag.as_bytes().trim_ascii_start().starts_with(b"W/");
        if strong {
            return (0..stored.len())
                .filter(|&i| strong_match(not_modified, stored[i]))
                .collect();
        }
        return (0..stored.len())
            .rev()
            .find(|&i| weak_match(not_modified, stored[i]))
            .into_iter()
            .collect();
    }
    if let Some(lm) = not_modified.get(header::LAST_MODIFIED) {
        return (0..stored.len())
            .rev()
            .find(|&i| stored[i].get(header::LAST_MODIFIED) == Some(lm))
            .into_iter()
            .collect();
    }
    match stored {
        [only] if !only.contains_key(header::ETAG) && !only.contains_key(header::LAST_MODIFIED) => {
            vec![0]
        }
        _ => Vec::new(),
    }
}

/// Whether a 304 answering a conditional request made from the
/// validators of one stored response (`stored`, its fields) updates it:
/// when [`select_for_304`] selects it, or when the 304 carries no
/// validator at all (the request named that response alone, so the 304
/// can only be about it: what the cache-tests suite requires, and what
/// nginx, Varnish and Squid do). A 304 with another response's validator
/// updates nothing (§4.3.4: MUST NOT).
pub(crate) fn revalidates(not_modified: &HeaderMap, stored: &HeaderMap) -> bool {
    let bare = !not_modified.contains_key(header::ETAG)
        && !not_modified.contains_key(header::LAST_MODIFIED);
    bare || !select_for_304(not_modified, &[stored]).is_empty()
}

/// Updates a stored response's fields from a 304 or HEAD response (RFC
/// 9111 §3.2): each field of `new` replaces all the stored lines of that
/// name, except the fields described in the module's documentation; the
/// stored `Age` is dropped (compute the new [`Times`] from `new`).
///
/// [`Times`]: super::freshness::Times
pub(crate) fn freshen(stored: &mut HeaderMap, new: &HeaderMap, rules: &Rules) {
    let mut new = new.clone();
    strip_unstorable(&mut new, rules);
    new.remove(header::CONTENT_LENGTH);
    new.remove(header::CONTENT_ENCODING);
    new.remove(header::CONTENT_RANGE);
    if rules.set_cookie != SetCookie::Keep {
        new.remove(header::SET_COOKIE);
    }
    // An `Age` goes with the `Date` of the response it came in: the old
    // one is dropped, the 304's (if any) taken.
    stored.remove(header::AGE);
    let mut last = None;
    for (name, value) in new {
        // `HeaderMap`'s owning iterator names only a field's first line.
        let name = match name {
            Some(n) => {
                stored.remove(&n);
                last = Some(n.clone());
                n
            }
            None => match &last {
                Some(n) => n.clone(),
                None => continue,
            },
        };
        stored.append(name, value);
    }
}

/// Whether a 200 response to a HEAD request may update a stored GET
/// response (RFC 9111 §4.3.5): every validator the HEAD response has
/// (`ETag`, `Last-Modified`) equals the stored one, and so does its
/// `Content-Length` if it has one. If not, the stored response is to be
/// taken as stale (or invalidated).
pub(crate) fn head_updates(head: &HeaderMap, stored: &HeaderMap) -> bool {
    [header::ETAG, header::LAST_MODIFIED, header::CONTENT_LENGTH]
        .into_iter()
        .all(|name| match head.get(&name) {
            Some(v) => stored.get(&name) == Some(v),
            None => true,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::test_fields as map;

    fn values<'a>(h: &'a HeaderMap, name: &str) -> Vec<&'a str> {
        h.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn freshen_replaces_every_field_and_keeps_the_rest() {
        let mut stored = map(&[
            ("cache-control", "max-age=1"),
            ("content-type", "text/plain"),
            ("x-test", "A"),
            ("x-multi", "1"),
            ("x-multi", "2"),
            ("x-kept", "k"),
            ("age", "100"),
            ("content-length", "5"),
            ("content-encoding", "gzip"),
        ]);
        let new = map(&[
            ("cache-control", "max-age=3600"),
            ("content-type", "text/plain;charset=utf-8"),
            ("x-test", "B"),
            ("x-multi", "3"),
            ("expires", "Mon, 01 Jan 2024 00:00:00 GMT"),
            ("content-length", "0"),
            ("content-encoding", "br"),
            ("content-range", "bytes 0-1/2"),
            ("set-cookie", "a=c"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("proxy-authenticate", "Basic"),
        ]);
        freshen(&mut stored, &new, &Rules::default());
        assert_eq!(values(&stored, "cache-control"), ["max-age=3600"]);
        assert_eq!(
            values(&stored, "content-type"),
            ["text/plain;charset=utf-8"]
        );
        assert_eq!(values(&stored, "x-test"), ["B"]);
        assert_eq!(values(&stored, "x-multi"), ["3"]);
        assert_eq!(values(&stored, "x-kept"), ["k"]);
        assert_eq!(
            values(&stored, "expires"),
            ["Mon, 01 Jan 2024 00:00:00 GMT"]
        );
        assert_eq!(values(&stored, "content-length"), ["5"]);
        assert_eq!(values(&stored, "content-encoding"), ["gzip"]);
        for gone in [
            "age",
            "content-range",
            "set-cookie",
            "connection",
            "x-hop",
            "proxy-authenticate",
        ] {
            assert!(!stored.contains_key(gone), "{gone}");
        }
    }

    #[test]
    fn freshen_copies_every_line_of_a_repeated_field() {
        let mut stored = map(&[("x-a", "old")]);
        freshen(
            &mut stored,
            &map(&[("x-a", "1"), ("x-a", "2"), ("x-b", "3")]),
            &Rules::default(),
        );
        assert_eq!(values(&stored, "x-a"), ["1", "2"]);
        assert_eq!(values(&stored, "x-b"), ["3"]);
    }

    #[test]
    fn freshen_keeps_cookies_only_when_the_rules_do() {
        let new = map(&[("set-cookie", "a=c")]);
        let mut stored = map(&[("set-cookie", "a=b")]);
        let keep = Rules {
            set_cookie: SetCookie::Keep,
            ..Rules::default()
        };
        freshen(&mut stored, &new, &keep);
        assert_eq!(values(&stored, "set-cookie"), ["a=c"]);
    }

    #[test]
    fn head_updates_only_a_matching_stored_response() {
        let stored = map(&[
            ("etag", "\"1\""),
            ("last-modified", "x"),
            ("content-length", "5"),
        ]);
        assert!(head_updates(&map(&[("etag", "\"1\"")]), &stored));
        assert!(head_updates(
            &map(&[("etag", "\"1\""), ("content-length", "5"), ("x-new", "1")]),
            &stored
        ));
        assert!(head_updates(&HeaderMap::new(), &stored));
        assert!(!head_updates(&map(&[("etag", "\"2\"")]), &stored));
        assert!(!head_updates(&map(&[("content-length", "6")]), &stored));
        assert!(!head_updates(&map(&[("last-modified", "y")]), &stored));
        assert!(!head_updates(&map(&[("etag", "\"1\"")]), &HeaderMap::new()));
    }

    #[test]
    fn select_by_strong_etag_all_matches() {
        let a = map(&[("etag", "\"1\"")]);
        let b = map(&[("etag", "\"2\"")]);
        let c = map(&[("etag", "\"1\"")]);
        let w = map(&[("etag", "W/\"1\"")]);
        assert_eq!(
            select_for_304(&map(&[("etag", "\"1\"")]), &[&a, &b, &c, &w]),
            [0, 2]
        );
        assert!(select_for_304(&map(&[("etag", "\"3\"")]), &[&a, &b]).is_empty());
    }

    #[test]
    fn select_by_weak_etag_newest_match() {
        let a = map(&[("etag", "W/\"1\"")]);
        let b = map(&[("etag", "\"1\"")]);
        let c = map(&[("etag", "\"2\"")]);
        assert_eq!(
            select_for_304(&map(&[("etag", "W/\"1\"")]), &[&a, &b, &c]),
            [1]
        );
    }

    #[test]
    fn select_by_last_modified_without_etag() {
        let lm = "Mon, 01 Jan 2024 00:00:00 GMT";
        let a = map(&[("last-modified", lm)]);
        let b = map(&[("last-modified", "Tue, 02 Jan 2024 00:00:00 GMT")]);
        assert_eq!(
            select_for_304(&map(&[("last-modified", lm)]), &[&a, &b]),
            [0]
        );
    }

    #[test]
    fn select_without_validators_only_a_lone_validatorless_response() {
        let plain = map(&[("x", "1")]);
        let tagged = map(&[("etag", "\"1\"")]);
        let none = HeaderMap::new();
        assert_eq!(select_for_304(&none, &[&plain]), [0]);
        assert!(select_for_304(&none, &[&tagged]).is_empty());
        assert!(select_for_304(&none, &[&plain, &plain]).is_empty());
        assert!(select_for_304(&none, &[]).is_empty());
    }

    #[test]
    fn a_304_to_the_caches_own_request_updates_unless_it_names_another() {
        let tagged = map(&[
            ("etag", "\"1\""),
            ("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT"),
        ]);
        assert!(revalidates(&HeaderMap::new(), &tagged));
        assert!(revalidates(&map(&[("etag", "\"1\"")]), &tagged));
        assert!(revalidates(&map(&[("etag", "W/\"1\"")]), &tagged));
        assert!(!revalidates(&map(&[("etag", "\"2\"")]), &tagged));
        assert!(!revalidates(
            &map(&[("last-modified", "Tue, 02 Jan 2024 00:00:00 GMT")]),
            &map(&[("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")])
        ));
    }
}
