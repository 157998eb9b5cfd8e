//! Secondary keys: `Vary` (RFC 9111 §4.1).
//!
//! Decisions left to the cache (§4.1 allows normalising "in a way that is
//! known to have identical semantics"):
//! - a request's field lines are combined with `, `, and the whitespace
//!   around each comma and at the ends dropped (RFC 9110 §5.3, §5.6.1);
//! - `Accept-Encoding` and `Accept-Language` values compare without case
//!   (their tokens and language tags are case-insensitive);
//! - an absent field differs from an empty one;
//! - a `Vary` member that is not a field name, like `*`, matches nothing:
//!   the response is not stored.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};

/// The field names a stored response varies on (§4.1), lower case, each
/// once, in the order given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct VaryNames(pub(crate) Vec<HeaderName>);

/// `Vary: *` (or a member that is no field name): no request matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Star;

/// The field names of a response's `Vary` lines (§4.1); [`Star`] when `*`
/// appears anywhere in any line.
pub(crate) fn vary_names(resp: &HeaderMap) -> Result<VaryNames, Star> {
    let mut names = Vec::new();
    for line in resp.get_all(header::VARY) {
        for member in line.as_bytes().split(|&b| b == b',') {
            let member = member.trim_ascii();
            if member.is_empty() {
                continue;
            }
            if member == b"*" {
                return Err(Star);
            }
            let name = HeaderName::from_bytes(member).map_err(|_| Star)?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Ok(VaryNames(names))
}

fn caseless(name: &HeaderName) -> bool {
    name == header::ACCEPT_ENCODING || name == header::ACCEPT_LANGUAGE
}

/// Appends the normalised value of `name`'s lines in `req` to `out`;
/// false when the field is absent.
fn normalise(name: &HeaderName, req: &HeaderMap, out: &mut Vec<u8>) -> bool {
    let lower = caseless(name);
    let mut present = false;
    for line in req.get_all(name) {
        present = true;
        for element in line.as_bytes().split(|&b| b == b',') {
            let element = element.trim_ascii();
            if element.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.extend_from_slice(b", ");
            }
            if lower {
                out.extend(element.iter().map(u8::to_ascii_lowercase));
            } else {
                out.extend_from_slice(element);
            }
        }
    }
    present
}

/// The normalised selecting values of `req` for `names` (§4.1), kept with
/// the stored response to match later requests.
pub(crate) fn vary_values(names: &VaryNames, req: &HeaderMap) -> Vec<Option<Bytes>> {
    names
        .0
        .iter()
        .map(|name| {
            let mut out = Vec::new();
            normalise(name, req, &mut out).then(|| Bytes::from(out))
        })
        .collect()
}

/// Whether a stored variant (its `Vary` names and the values its request
/// had) matches `req` (§4.1). One buffer for all names; none when the
/// response varies on nothing.
pub(crate) fn vary_matches(names: &VaryNames, stored: &[Option<Bytes>], req: &HeaderMap) -> bool {
    if names.0.len() != stored.len() {
        return false;
    }
    let mut buf = Vec::new();
    names.0.iter().zip(stored).all(|(name, want)| {
        buf.clear();
        let present = normalise(name, req, &mut buf);
        match want {
            Some(want) => present && buf == want.as_ref(),
            None => !present,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::test_fields as map;

    fn names(vary: &[&str]) -> Result<VaryNames, Star> {
        vary_names(&map(&vary.iter().map(|v| ("vary", *v)).collect::<Vec<_>>()))
    }

    #[test]
    fn names_are_lowercased_deduplicated_and_combined() {
        let n = names(&["Accept-Encoding, foo", "FOO,, Bar"]).unwrap();
        let got: Vec<&str> = n.0.iter().map(HeaderName::as_str).collect();
        assert_eq!(got, ["accept-encoding", "foo", "bar"]);
        assert_eq!(names(&[]).unwrap(), VaryNames::default());
        assert_eq!(names(&[""]).unwrap(), VaryNames::default());
    }

    #[test]
    fn star_anywhere_is_star() {
        for v in [
            &["*"][..],
            &["*, *"],
            &["*", "*"],
            &[", *"],
            &["", "*"],
            &["*, Foo"],
            &["Foo, *"],
            &["a b"],
        ] {
            assert_eq!(names(v), Err(Star), "{v:?}");
        }
    }

    fn matches(vary: &str, stored_req: &[(&str, &str)], new_req: &[(&str, &str)]) -> bool {
        let n = names(&[vary]).unwrap();
        let stored = vary_values(&n, &map(stored_req));
        vary_matches(&n, &stored, &map(new_req))
    }

    #[test]
    fn matching_table() {
        type Fields = &'static [(&'static str, &'static str)];
        let cases: &[(&str, Fields, Fields, bool)] = &[
            ("foo", &[("foo", "1")], &[("foo", "1")], true),
            ("foo", &[("foo", "1")], &[("foo", "2")], false),
            ("foo", &[("foo", "1")], &[], false),
            ("foo", &[], &[], true),
            ("foo", &[], &[("foo", "")], false),
            ("foo", &[("foo", "")], &[("foo", "")], true),
            ("foo", &[("foo", "a,b")], &[("foo", "a , b")], true),
            (
                "foo",
                &[("foo", "a, b")],
                &[("foo", "a"), ("foo", "b")],
                true,
            ),
            ("foo", &[("foo", "a, b")], &[("foo", "b, a")], false),
            ("foo", &[("foo", "A")], &[("foo", "a")], false),
            (
                "accept-encoding",
                &[("accept-encoding", "GZIP, br")],
                &[("accept-encoding", "gzip,br")],
                true,
            ),
            (
                "accept-language",
                &[("accept-language", "en-US")],
                &[("accept-language", "en-us")],
                true,
            ),
            (
                "foo, bar",
                &[("foo", "1"), ("bar", "2")],
                &[("foo", "1"), ("bar", "2")],
                true,
            ),
            (
                "foo, bar",
                &[("foo", "1"), ("bar", "2")],
                &[("foo", "1"), ("bar", "3")],
                false,
            ),
            (
                "foo, bar",
                &[("foo", "1")],
                &[("foo", "1"), ("bar", "2")],
                false,
            ),
            (
                "foo",
                &[("foo", "1")],
                &[("foo", "1"), ("other", "x")],
                true,
            ),
            ("", &[("foo", "1")], &[("foo", "2")], true),
        ];
        for &(vary, a, b, want) in cases {
            assert_eq!(matches(vary, a, b), want, "vary {vary:?}: {a:?} vs {b:?}");
        }
    }

    #[test]
    fn mismatched_lengths_never_match() {
        let n = names(&["foo, bar"]).unwrap();
        assert!(!vary_matches(&n, &[None], &HeaderMap::new()));
    }
}
