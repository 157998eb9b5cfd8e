//! Targeted cache-control fields (RFC 9213 §2.1) are Structured Field
//! Dictionaries (RFC 8941 §3.2): this checks one and hands over its
//! members. A field that does not parse is ignored whole by the caller
//! (RFC 9213 §2.1), so the parser is strict: lower-case keys, no space
//! before `=`, no trailing comma, items of the RFC 8941 types only.

use http::HeaderValue;

/// A member's value, reduced to what cache directives use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Item<'a> {
    /// An sf-integer (at most 15 digits, RFC 8941 §3.3.1).
    Integer(i64),
    /// An sf-boolean; a member with no value is `true`.
    Boolean(bool),
    /// An sf-string's contents, escapes not undone.
    String(&'a [u8]),
    /// Any other valid item or inner list (decimal, token, byte sequence).
    Other,
}

/// Parses the lines of a Dictionary, calling `f(key, value)` for each
/// member in order (a later duplicate key overrides an earlier one, RFC
/// 8941 §3.2: callers assign, so the last wins). Returns false, having
/// perhaps called `f` already, when the field is not a valid Dictionary.
pub(crate) fn dictionary<'a>(
    lines: impl Iterator<Item = &'a HeaderValue>,
    mut f: impl FnMut(&'a [u8], Item<'a>),
) -> bool {
    let mut any = false;
    for line in lines {
        let s = line.as_bytes().trim_ascii();
        if s.is_empty() {
            continue;
        }
        any = true;
        if parse_line(s, &mut f).is_none() {
            return false;
        }
    }
    any
}

fn parse_line<'a>(s: &'a [u8], f: &mut impl FnMut(&'a [u8], Item<'a>)) -> Option<()> {
    let mut i = 0;
    loop {
        let key = key(s, &mut i)?;
        let value = if s.get(i) == Some(&b'=') {
            i += 1;
            if s.get(i) == Some(&b'(') {
                inner_list(s, &mut i)?;
                Item::Other
            } else {
                bare_item(s, &mut i)?
            }
        } else {
            Item::Boolean(true)
        };
        parameters(s, &mut i)?;
        f(key, value);
        while matches!(s.get(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        if i == s.len() {
            return Some(());
        }
        if s[i] != b',' {
            return None;
        }
        i += 1;
        while matches!(s.get(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        if i == s.len() {
            return None; // trailing comma
        }
    }
}

/// key = ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )
fn key<'a>(s: &'a [u8], i: &mut usize) -> Option<&'a [u8]> {
    let start = *i;
    match s.get(*i) {
        Some(c) if c.is_ascii_lowercase() || *c == b'*' => *i += 1,
        _ => return None,
    }
    while let Some(c) = s.get(*i) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-.*".contains(c) {
            *i += 1;
        } else {
            break;
        }
    }
    Some(&s[start..*i])
}

fn parameters(s: &[u8], i: &mut usize) -> Option<()> {
    while s.get(*i) == Some(&b';') {
        *i += 1;
        while s.get(*i) == Some(&b' ') {
            *i += 1;
        }
        key(s, i)?;
        if s.get(*i) == Some(&b'=') {
            *i += 1;
            bare_item(s, i)?;
        }
    }
    Some(())
}

fn inner_list(s: &[u8], i: &mut usize) -> Option<()> {
    *i += 1; // '('
    loop {
        while s.get(*i) == Some(&b' ') {
            *i += 1;
        }
        match s.get(*i)? {
            b')' => {
                *i += 1;
                return Some(());
            }
            _ => {
                bare_item(s, i)?;
                parameters(s, i)?;
                if !matches!(s.get(*i), Some(b' ' | b')')) {
                    return None;
                }
            }
        }
    }
}

fn bare_item<'a>(s: &'a [u8], i: &mut usize) -> Option<Item<'a>> {
    let c = *s.get(*i)?;
    match c {
        b'-' | b'0'..=b'9' => number(s, i),
        b'"' => {
            *i += 1;
            let start = *i;
            loop {
                match *s.get(*i)? {
                    b'\\' => {
                        if !matches!(s.get(*i + 1), Some(b'"' | b'\\')) {
                            return None;
                        }
                        *i += 2;
                    }
                    b'"' => {
                        *i += 1;
                        return Some(Item::String(&s[start..*i - 1]));
                    }
                    0x20..=0x7e => *i += 1,
                    _ => return None,
                }
            }
        }
        b'?' => {
            let v = match s.get(*i + 1)? {
                b'0' => false,
                b'1' => true,
                _ => return None,
            };
            *i += 2;
            Some(Item::Boolean(v))
        }
        b':' => {
            *i += 1;
            while let Some(&c) = s.get(*i) {
                if c == b':' {
                    *i += 1;
                    return Some(Item::Other);
                }
                if !(c.is_ascii_alphanumeric() || b"+/=".contains(&c)) {
                    return None;
                }
                *i += 1;
            }
            None
        }
        c if c.is_ascii_alphabetic() || c == b'*' => {
            *i += 1;
            while let Some(&c) = s.get(*i) {
                if c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&c) {
                    *i += 1;
                } else {
                    break;
                }
            }
            Some(Item::Other)
        }
        _ => None,
    }
}

/// sf-integer or sf-decimal (RFC 8941 §4.2.4).
fn number<'a>(s: &'a [u8], i: &mut usize) -> Option<Item<'a>> {
    let negative = s[*i] == b'-';
    if negative {
        *i += 1;
    }
    let start = *i;
    while s.get(*i).is_some_and(u8::is_ascii_digit) {
        *i += 1;
    }
    let int_digits = *i - start;
    if int_digits == 0 {
        return None;
    }
    if s.get(*i) == Some(&b'.') {
        if int_digits > 12 {
            return None;
        }
        *i += 1;
        let frac = *i;
        while s.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        let n = *i - frac;
        return (1..=3).contains(&n).then_some(Item::Other);
    }
    if int_digits > 15 {
        return None;
    }
    let mut n: i64 = 0;
    for d in &s[start..*i] {
        n = n * 10 + i64::from(d - b'0');
    }
    Some(Item::Integer(if negative { -n } else { n }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(lines: &[&str]) -> Option<Vec<(String, Item<'static>)>> {
        let values: Vec<HeaderValue> = lines
            .iter()
            .map(|l| HeaderValue::from_str(l).unwrap())
            .collect();
        let values: &'static [HeaderValue] = Box::leak(values.into_boxed_slice());
        let mut out = Vec::new();
        let ok = dictionary(values.iter(), |k, v| {
            out.push((String::from_utf8(k.to_vec()).unwrap(), v))
        });
        ok.then_some(out)
    }

    #[test]
    fn valid_dictionaries() {
        use Item::*;
        assert_eq!(
            members(&["max-age=60, no-store,private=\"a, b\" , x=?0;p=1, y=(1 \"z\");q, d=1.5, t=tok, b=:AQ==:"]),
            Some(vec![
                ("max-age".into(), Integer(60)),
                ("no-store".into(), Boolean(true)),
                ("private".into(), String(b"a, b")),
                ("x".into(), Boolean(false)),
                ("y".into(), Other),
                ("d".into(), Other),
                ("t".into(), Other),
                ("b".into(), Other),
            ])
        );
        assert_eq!(
            members(&["max-age=-5"]),
            Some(vec![("max-age".into(), Integer(-5))])
        );
        assert_eq!(members(&["a", "b=2"]).map(|m| m.len()), Some(2));
        assert_eq!(members(&["none"]).map(|m| m.len()), Some(1));
    }

    #[test]
    fn invalid_dictionaries() {
        for bad in [
            "max-age=10000, &&&&&",
            "MaX-aGe=3600",
            "max-age =100",
            "max-age= 100",
            "max-age=1,",
            "max-age=1 no-store",
            "max-age=1234567890123456",
            "max-age=1.2345",
            "a=\"unterminated",
            "a=\"bad\\escape\"",
            "a=(1 2",
            "a=?2",
            "a=:not base64!:",
            "=1",
        ] {
            assert_eq!(members(&[bad]), None, "{bad}");
        }
        // Only empty lines: no field at all.
        assert_eq!(members(&["", " "]), None);
    }
}
