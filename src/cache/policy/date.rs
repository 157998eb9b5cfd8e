//! HTTP dates (RFC 9110 §5.6.7) as a cache reads them: strictly first
//! (the `httpdate` crate), else leniently, as §5.6.7 encourages
//! recipients to be ("robust in parsing timestamps"): the three formats,
//! exactly, but with their names in any case and a day name that does not
//! agree with the date (the date wins). Nothing else is let through (a
//! two-digit year in the preferred format, a missing comma, doubled
//! spaces, dashes: what the RFC 9111 suite requires refused). What this
//! reads is rewritten with its names as the strict parser wants them and
//! parsed strictly, so every check of the date is the crate's.

use std::time::SystemTime;

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const LONG_DAYS: [&str; 7] = [
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
];

/// The time `s` names, or `None`.
pub(crate) fn parse(s: &str) -> Option<SystemTime> {
    let s = s.trim_matches([' ', '\t']);
    httpdate::parse_http_date(s).ok().or_else(|| lenient(s))
}

/// `t` with its first letter upper case.
fn capital(t: &str) -> String {
    let mut out = t.to_string();
    if let Some(first) = out.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    out
}

/// `s` in one of the three formats exactly, but for the case of its
/// names and its day name: tried with each day name (the strict parser
/// takes only the one that agrees with the date), its names written as
/// the strict parser wants them.
fn lenient(s: &str) -> Option<SystemTime> {
    if !s.is_ascii() {
        return None;
    }
    let l = s.to_ascii_lowercase();
    let b = l.as_bytes();
    let short_day = |t: &str| DAYS.iter().any(|d| d.eq_ignore_ascii_case(t));
    // The day names to try, and what follows the day name.
    let (names, rest): (&[&str], String) = match l.len() {
        // IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
        29 if b[3] == b',' && short_day(&l[..3]) && &l[26..] == "gmt" => (
            &DAYS,
            format!("{}{}{}GMT", &l[3..8], capital(&l[8..11]), &l[11..26]),
        ),
        // asctime: `Sun Nov  6 08:49:37 1994`.
        24 if b[3] == b' ' && short_day(&l[..3]) => {
            (&DAYS, format!(" {}{}", capital(&l[4..7]), &l[7..]))
        }
        // RFC 850: `Sunday, 06-Nov-94 08:49:37 GMT`.
        n if n > 24 && b[n - 24] == b',' && LONG_DAYS.contains(&&l[..n - 24]) => {
            let r = &l[n - 24..];
            if &r[21..] != "gmt" {
                return None;
            }
            (
                &LONG_DAYS,
                format!("{}{}{}GMT", &r[..5], capital(&r[5..8]), &r[8..21]),
            )
        }
        _ => return None,
    };
    names
        .iter()
        .find_map(|d| httpdate::parse_http_date(&format!("{}{rest}", capital(d))).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SystemTime {
        httpdate::parse_http_date(s).unwrap()
    }

    #[test]
    fn the_three_formats_strictly() {
        let t = at("Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT"), Some(t));
        assert_eq!(parse("Sunday, 06-Nov-94 08:49:37 GMT"), Some(t));
        assert_eq!(parse("Sun Nov  6 08:49:37 1994"), Some(t));
    }

    #[test]
    fn names_in_any_case_and_a_wrong_day_name_are_read() {
        let t = at("Mon, 08 Aug 2050 02:01:18 GMT");
        for s in [
            "THU, 08 Aug 2050 02:01:18 GMT",
            "Mon, 08 AUG 2050 02:01:18 GMT",
            "Mon, 08 Aug 2050 02:01:18 gMT",
            "Thu, 08 Aug 2050 02:01:18 GMT",
            "Thu Aug  8 02:01:18 2050",
            "thursday, 08-aug-50 02:01:18 gmt",
        ] {
            assert_eq!(parse(s), Some(t), "{s}");
        }
    }

    #[test]
    fn what_is_not_a_date_in_one_of_the_formats_is_not_read() {
        for s in [
            "",
            "0",
            "yesterday",
            "Mon, 32 Aug 2050 02:01:18 GMT",
            "Mon, 30 Feb 2050 02:01:18 GMT",
            "Mon, 08 Aug 2050 25:01:18 GMT",
            "Mon, 08 Aug 2050 02:01:18 UTC",
            "Mon, 08 Aug 2050 02:01:18",
            "Xyz, 08 Aug 2050 02:01:18 GMT",
            "Mon, 08 Aug 2050 02:01 GMT",
            // What the RFC 9111 suite requires refused:
            "Mon, 08 Aug 50 02:01:18 GMT",
            "Mon 08 Aug 2050 02:01:18 GMT",
            "Mon,  08 Aug 2050 02:01:18 GMT",
            "Mon, 08-Aug-2050 02:01:18 GMT",
            "Xyzday, 08-Aug-50 02:01:18 GMT",
            "Mon, 08 Aug 2050 02:01:18 GMT\u{e9}",
        ] {
            assert_eq!(parse(s), None, "{s:?}");
        }
    }
}
