//! `Range: bytes=...` (RFC 9110 §14.1.2) against a representation's
//! length. Our own parser, not http-range-header's (which the cache
//! uses): that one refuses a whole set when any range in it is past the
//! end, or a suffix is longer than the representation, where §14.1.1 says
//! a set is satisfiable when any one range is, and a long suffix means
//! the whole.
//!
//! Decisions (§14.2 lets a server ignore `Range`): a header that does not
//! parse, another unit than `bytes`, more than [`MAX_RANGES`] ranges, or
//! ranges that overlap (a way to make a small request ask for much) get
//! the whole representation.

/// Most ranges in one request.
pub(crate) const MAX_RANGES: usize = 16;

/// What a `Range` asks of a representation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ranges {
    /// The whole representation (no `Range`, or one that is ignored).
    Whole,
    /// These parts, each `(first, last)` inclusive, in the request's order.
    Parts(Vec<(u64, u64)>),
    /// None of the ranges is satisfiable: 416.
    Unsatisfiable,
}

/// `value` (a `Range` field) against a representation of `len` bytes.
pub(crate) fn parse(value: &[u8], len: u64) -> Ranges {
    match parse_set(value, len) {
        None => Ranges::Whole,
        Some(parts) if parts.is_empty() => Ranges::Unsatisfiable,
        Some(parts) => {
            let mut sorted = parts.clone();
            sorted.sort_unstable();
            if sorted.windows(2).any(|w| w[1].0 <= w[0].1) {
                return Ranges::Whole;
            }
            Ranges::Parts(parts)
        }
    }
}

/// The satisfiable ranges, or `None` when the field is to be ignored.
fn parse_set(value: &[u8], len: u64) -> Option<Vec<(u64, u64)>> {
    let eq = value.iter().position(|&b| b == b'=')?;
    if !value[..eq].eq_ignore_ascii_case(b"bytes") {
        return None;
    }
    let mut parts = Vec::new();
    let mut specs = 0;
    for spec in value[eq + 1..].split(|&b| b == b',') {
        let spec = spec.trim_ascii();
        if spec.is_empty() {
            // `1#` allows empty list elements.
            continue;
        }
        specs += 1;
        if specs > MAX_RANGES {
            return None;
        }
        let dash = spec.iter().position(|&b| b == b'-')?;
        let (first, last) = (&spec[..dash], &spec[dash + 1..]);
        if first.is_empty() {
            // suffix-range: the last `n` bytes.
            let n = number(last)?;
            if n > 0 && len > 0 {
                parts.push((len - n.min(len), len - 1));
            }
            continue;
        }
        let first = number(first)?;
        let last = match last {
            [] => None,
            l => Some(number(l)?),
        };
        if last.is_some_and(|l| l < first) {
            // Invalid (§14.1.1): the whole field is.
            return None;
        }
        if first < len {
            parts.push((first, last.map_or(len - 1, |l| l.min(len - 1))));
        }
    }
    (specs > 0).then_some(parts)
}

/// `1*DIGIT`, within `u64`.
fn number(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &str, len: u64) -> Ranges {
        parse(v.as_bytes(), len)
    }

    #[test]
    fn single_ranges() {
        assert_eq!(p("bytes=0-9", 100), Ranges::Parts(vec![(0, 9)]));
        assert_eq!(p("bytes=90-", 100), Ranges::Parts(vec![(90, 99)]));
        assert_eq!(p("bytes=90-500", 100), Ranges::Parts(vec![(90, 99)]));
        assert_eq!(p("bytes=-10", 100), Ranges::Parts(vec![(90, 99)]));
        assert_eq!(p("bytes=-500", 100), Ranges::Parts(vec![(0, 99)]));
        assert_eq!(p("Bytes = 0-0", 100), Ranges::Whole);
        assert_eq!(p("BYTES=0-0", 100), Ranges::Parts(vec![(0, 0)]));
    }

    #[test]
    fn several_ranges_in_order() {
        assert_eq!(
            p("bytes=20-29, 0-9,,", 100),
            Ranges::Parts(vec![(20, 29), (0, 9)])
        );
        // The unsatisfiable one is dropped.
        assert_eq!(p("bytes=0-9,500-600", 100), Ranges::Parts(vec![(0, 9)]));
        // Overlapping: the whole.
        assert_eq!(p("bytes=0-9,5-20", 100), Ranges::Whole);
        let many = (0..17)
            .map(|i| format!("{}-{}", i * 2, i * 2))
            .collect::<Vec<_>>();
        assert_eq!(p(&format!("bytes={}", many.join(",")), 100), Ranges::Whole);
    }

    #[test]
    fn unsatisfiable_and_ignored() {
        assert_eq!(p("bytes=100-", 100), Ranges::Unsatisfiable);
        assert_eq!(p("bytes=-0", 100), Ranges::Unsatisfiable);
        assert_eq!(p("bytes=0-", 0), Ranges::Unsatisfiable);
        for ignored in [
            "bytes=9-1",
            "bytes=",
            "bytes=a-b",
            "bytes=1",
            "bytes=--1",
            "bytes=0-1-2",
            "items=0-1",
            "bytes=99999999999999999999-",
            "0-1",
        ] {
            assert_eq!(p(ignored, 100), Ranges::Whole, "{ignored}");
        }
    }
}
