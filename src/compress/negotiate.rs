//! `Accept-Encoding` (RFC 9110 §12.5.3): which of the offered codings a
//! request takes. The client's q-values decide; among equal ones, the
//! server's order. A coding not named takes `*`'s weight, or none; `q=0`
//! refuses; `x-gzip` is `gzip` (§8.4.1.3). No `Accept-Encoding` at all
//! gets no coding (as nginx, and browsers always send one). An element
//! whose weight is not a valid qvalue is ignored. `identity` named with a
//! weight above the best coding's wins: no coding (at equal weights the
//! coding, the server's preference). (`identity;q=0` with no acceptable
//! coding still gets the body as it is, not a 406: the SHOULD of §12.5.3
//! that nginx and HAProxy do not follow either, and a proxied 200 turned
//! into an error would break more clients than it helps.)

use http::header::{HeaderMap, ACCEPT_ENCODING};

use crate::config::compress::Coding;

/// The coding of `offered` (the server's preference first) that the
/// request with fields `h` prefers, if any.
pub(crate) fn negotiate(h: &HeaderMap, offered: &[Coding]) -> Option<Coding> {
    // Weights in thousandths; `None`: not named.
    let mut named = [None::<u16>; 3];
    let mut star = None::<u16>;
    let mut identity = None::<u16>;
    for value in h.get_all(ACCEPT_ENCODING) {
        for element in value.as_bytes().split(|&b| b == b',') {
            let mut parts = element.split(|&b| b == b';');
            let coding = parts.next().unwrap_or_default().trim_ascii();
            let mut q = Some(1000);
            for p in parts {
                let p = p.trim_ascii();
                if let Some(v) = p.strip_prefix(b"q=").or_else(|| p.strip_prefix(b"Q=")) {
                    q = qvalue(v);
                }
            }
            let Some(q) = q else { continue };
            let slot = if coding == b"*" {
                &mut star
            } else if coding.eq_ignore_ascii_case(b"identity") {
                &mut identity
            } else {
                match index(coding) {
                    Some(i) => &mut named[i],
                    None => continue,
                }
            };
            // Named twice: the highest weight stands.
            *slot = Some(slot.map_or(q, |old| old.max(q)));
        }
    }
    let mut best: Option<(u16, Coding)> = None;
    for &c in offered {
        let q = named[c as usize].or(star).unwrap_or(0);
        if q > 0 && best.is_none_or(|(b, _)| q > b) {
            best = Some((q, c));
        }
    }
    best.filter(|&(q, _)| identity.is_none_or(|i| q >= i))
        .map(|(_, c)| c)
}

fn index(coding: &[u8]) -> Option<usize> {
    let is = |name: &[u8]| coding.eq_ignore_ascii_case(name);
    if is(b"zstd") {
        Some(Coding::Zstd as usize)
    } else if is(b"br") {
        Some(Coding::Br as usize)
    } else if is(b"gzip") || is(b"x-gzip") {
        Some(Coding::Gzip as usize)
    } else {
        None
    }
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in
/// thousandths.
pub(crate) fn qvalue(v: &[u8]) -> Option<u16> {
    let (int, frac) = match v.split_first()? {
        (b'0', rest) => (0, rest),
        (b'1', rest) => (1000, rest),
        _ => return None,
    };
    let digits = match frac {
        [] => &[][..],
        [b'.', d @ ..] if d.len() <= 3 && d.iter().all(u8::is_ascii_digit) => d,
        _ => return None,
    };
    let mut thousandths = 0u16;
    for (i, d) in digits.iter().enumerate() {
        thousandths += u16::from(d - b'0') * [100, 10, 1][i];
    }
    match int {
        1000 if thousandths > 0 => None,
        _ => Some(int + thousandths),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const ALL: [Coding; 3] = [Coding::Zstd, Coding::Br, Coding::Gzip];

    fn pick(values: &[&'static str], offered: &[Coding]) -> Option<Coding> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(ACCEPT_ENCODING, HeaderValue::from_static(v));
        }
        negotiate(&h, offered)
    }

    #[test]
    fn weights_then_the_servers_order() {
        assert_eq!(pick(&[], &ALL), None);
        assert_eq!(pick(&["gzip, deflate, br, zstd"], &ALL), Some(Coding::Zstd));
        assert_eq!(pick(&["gzip, deflate, br"], &ALL), Some(Coding::Br));
        assert_eq!(pick(&["gzip;q=1.0, br;q=0.5"], &ALL), Some(Coding::Gzip));
        assert_eq!(pick(&["br;q=0.5", "GZIP;Q=0.8"], &ALL), Some(Coding::Gzip));
        assert_eq!(pick(&["*"], &ALL), Some(Coding::Zstd));
        assert_eq!(
            pick(&["*;q=0.5, zstd;q=0, br;q=0.4"], &ALL),
            Some(Coding::Gzip)
        );
        assert_eq!(pick(&["x-gzip"], &ALL), Some(Coding::Gzip));
        assert_eq!(pick(&["identity"], &ALL), None);
        // Identity preferred by weight: no coding; at equal weights, one.
        assert_eq!(pick(&["gzip;q=0.5, identity"], &ALL), None);
        assert_eq!(pick(&["gzip, identity;q=0.5"], &ALL), Some(Coding::Gzip));
        assert_eq!(
            pick(&["gzip;q=0.5, IDENTITY;q=0.5"], &ALL),
            Some(Coding::Gzip)
        );
        assert_eq!(pick(&["gzip, identity;q=0"], &ALL), Some(Coding::Gzip));
        assert_eq!(pick(&["gzip;q=0"], &ALL), None);
        assert_eq!(pick(&["br"], &[Coding::Gzip]), None);
        assert_eq!(pick(&["deflate, compress"], &ALL), None);
        // A bad weight ignores its element only.
        assert_eq!(pick(&["zstd;q=2, br;q=0.9"], &ALL), Some(Coding::Br));
        assert_eq!(pick(&["gzip ; q=0.001"], &ALL), Some(Coding::Gzip));
    }

    #[test]
    fn qvalues() {
        for (v, q) in [
            ("0", Some(0)),
            ("1", Some(1000)),
            ("1.000", Some(1000)),
            ("0.5", Some(500)),
            ("0.125", Some(125)),
            ("0.", Some(0)),
            ("1.001", None),
            ("0.1234", None),
            ("2", None),
            ("", None),
            (".5", None),
            ("0.a", None),
        ] {
            assert_eq!(qvalue(v.as_bytes()), q, "{v}");
        }
    }
}
