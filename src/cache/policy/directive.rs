//! The `Cache-Control` syntax (RFC 9111 §5.2), read straight from the
//! field lines' bytes: no allocation, no regex, quoted strings honoured
//! (a comma or a directive name inside quotes is not a directive). Shared
//! by the response's and the request's directives.

use std::time::Duration;

use http::header::HeaderValue;

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

/// Whether a directive name is `known` (names are case-insensitive).
pub(crate) fn is(name: &[u8], known: &str) -> bool {
    name.eq_ignore_ascii_case(known.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{self, HeaderMap};

    const S: fn(u64) -> Duration = Duration::from_secs;

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
