//! Admission: what a request head must be before anything acts on it.
//!
//! Checked once, right after the head is read and before routing, so that
//! routing, the TLS 421 check, the forwarded fields and the access log all
//! see the same request, and nothing ambiguous is ever forwarded:
//!
//! - **One authority** (RFC 9112 §3.2, RFC 9113 §8.3.1, RFC 9110 §7.2):
//!   HTTP/1.1 needs exactly one `Host`; an absolute-form target's authority
//!   wins over it. HTTP/2's `:authority` wins; a `host` field that differs
//!   from it makes the request malformed, and one of the two is required.
//!   HTTP/1.0 may send none: such a request has no authority (only routes
//!   without a host take it). The value must be `uri-host [":" port]`
//!   ([`Authority::parse`]).
//! - **Framing**: `chunked` at most once and last; any other transfer
//!   coding is not implemented (501). (`Transfer-Encoding` together with
//!   `Content-Length` is refused by the vendored hyper's parser, and an
//!   HTTP/1.x minor version above 1 is read as HTTP/1.1 there.)
//! - **Field names with underscores**, which CGI-style gateways read as
//!   the hyphenated name (`X_Forwarded_For` as `X-Forwarded-For`): dropped,
//!   refused or allowed, per listener ([`Underscores`]).

use std::net::Ipv6Addr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Version;

/// The longest authority accepted: a 253-byte name, `:` and a port.
const MAX_AUTHORITY: usize = 260;

/// Why a request head was refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("no Host field (HTTP/1.1 requires exactly one)")]
    NoHost,
    #[error("{0} Host fields (exactly one is allowed)")]
    ManyHosts(usize),
    #[error("invalid authority `{0}` (not uri-host[:port])")]
    InvalidAuthority(String),
    #[error("HTTP/2 `host` field `{host}` differs from `:authority` `{authority}`")]
    AuthorityMismatch { authority: String, host: String },
    #[error("HTTP/2 request with neither `:authority` nor `host`")]
    NoAuthority,
    #[error("field name `{0}` contains an underscore (underscores_in_headers = \"reject\")")]
    Underscore(String),
    #[error("Transfer-Encoding applies `chunked` more than once")]
    ChunkedTwice,
    #[error("Transfer-Encoding: `chunked` is not the final coding")]
    ChunkedNotLast,
    #[error("transfer coding `{0}` is not implemented (only chunked)")]
    UnknownCoding(String),
}

impl Malformed {
    /// 400, or 501 for a transfer coding the proxy does not implement
    /// (RFC 9112 §6.1).
    pub fn status(&self) -> http::StatusCode {
        match self {
            Malformed::UnknownCoding(_) => http::StatusCode::NOT_IMPLEMENTED,
            _ => http::StatusCode::BAD_REQUEST,
        }
    }
}

/// At most 64 characters of client bytes, escaped, for a log line.
pub(crate) fn show(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(64)]);
    s.escape_debug().collect()
}

/// A request's target host and port, validated and normalised: at most one
/// trailing dot of the name and an empty port are dropped (a dot right
/// before a port is refused), the case is kept. It is what the request is routed on and what goes upstream as
/// `Host` (unless the route says otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authority {
    value: HeaderValue,
    /// Length of the host part (a bracketed IPv6 literal with its brackets).
    host_len: usize,
    /// `value` is the request's one Host field as received.
    host_field: bool,
}

impl Authority {
    /// Validates `uri-host [":" port]` (RFC 3986 §3.2.2): a name of
    /// letters, digits, `-`, `.`, `_` and `~` with no empty label, an
    /// IPv4 address, or a bracketed IPv6 literal; a port of at most five
    /// digits up to 65535. Commas, `@`, `%`, whitespace, control bytes and
    /// anything else are refused: a proxy that forwards them lets the next
    /// hop read another host than the one that was routed.
    pub(crate) fn parse(raw: &[u8]) -> Result<Authority, Malformed> {
        let (host_len, keep) = validate(raw)?;
        let value =
            HeaderValue::from_bytes(&raw[..keep.unwrap_or(raw.len())]).map_err(|_| invalid(raw))?;
        Ok(Authority {
            value,
            host_len,
            host_field: false,
        })
    }

    /// As [`Authority::parse`], sharing the field's bytes when nothing
    /// needs normalising (no copy).
    pub(crate) fn from_header(v: &HeaderValue) -> Result<Authority, Malformed> {
        let raw = v.as_bytes();
        let (host_len, keep) = validate(raw)?;
        let value = match keep {
            None => v.clone(),
            Some(n) => HeaderValue::from_bytes(&raw[..n]).map_err(|_| invalid(raw))?,
        };
        Ok(Authority {
            value,
            host_len,
            host_field: false,
        })
    }

    /// Whether this is the request's `Host` field, unchanged (then it need
    /// not be set again upstream).
    pub(crate) fn is_host_field(&self) -> bool {
        self.host_field
    }

    /// `host[:port]`, as a field value.
    pub(crate) fn header(&self) -> &HeaderValue {
        &self.value
    }

    /// `host[:port]`.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.value.as_bytes()
    }

    /// `host[:port]` (validated ASCII).
    pub(crate) fn as_str(&self) -> &str {
        self.value.to_str().unwrap_or_default()
    }

    /// The host, without the port (`[::1]` keeps its brackets).
    pub(crate) fn host(&self) -> &str {
        self.as_str().get(..self.host_len).unwrap_or_default()
    }
}

fn invalid(raw: &[u8]) -> Malformed {
    Malformed::InvalidAuthority(show(raw))
}

/// The host's length, and `Some(n)` when only the first `n` bytes are to be
/// kept (a trailing dot before the port is dropped by copying, see below).
fn validate(raw: &[u8]) -> Result<(usize, Option<usize>), Malformed> {
    if raw.is_empty() || raw.len() > MAX_AUTHORITY {
        return Err(invalid(raw));
    }
    let (host, port) = if raw[0] == b'[' {
        let close = raw
            .iter()
            .position(|&b| b == b']')
            .ok_or_else(|| invalid(raw))?;
        let literal = std::str::from_utf8(&raw[1..close]).map_err(|_| invalid(raw))?;
        literal.parse::<Ipv6Addr>().map_err(|_| invalid(raw))?;
        match &raw[close + 1..] {
            [] => (&raw[..=close], None),
            [b':', port @ ..] => (&raw[..=close], Some(port)),
            _ => return Err(invalid(raw)),
        }
    } else {
        let (host, port) = match raw.iter().rposition(|&b| b == b':') {
            Some(i) => (&raw[..i], Some(&raw[i + 1..])),
            None => (raw, None),
        };
        if !reg_name(host.strip_suffix(b".").unwrap_or(host)) {
            return Err(invalid(raw));
        }
        (host, port)
    };
    if let Some(p) = port {
        if p.len() > 5 || !p.iter().all(u8::is_ascii_digit) {
            return Err(invalid(raw));
        }
        let value = p.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
        if value > 65535 {
            return Err(invalid(raw));
        }
    }
    let dot = host.last() == Some(&b'.');
    let host_len = host.len() - usize::from(dot);
    match port {
        // `name.:port`: valid, but too odd to be worth a copy.
        Some(p) if dot && !p.is_empty() => Err(invalid(raw)),
        Some([]) => Ok((host_len, Some(host_len))),
        _ if dot => Ok((host_len, Some(host_len))),
        _ => Ok((host_len, None)),
    }
}

/// Letters, digits, `-`, `_` and `~` (and `.` between labels).
const NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'~';
        b += 1;
    }
    t
};

/// A host name of labels of [`NAME`] bytes, none empty (one pass).
fn reg_name(name: &[u8]) -> bool {
    let mut label = 0usize;
    for &b in name {
        if b == b'.' {
            if label == 0 {
                return false;
            }
            label = 0;
        } else if NAME[usize::from(b)] {
            label += 1;
        } else {
            return false;
        }
    }
    label > 0
}

/// What a listener does with request fields whose name has an underscore
/// (`underscores_in_headers`, as nginx's setting of that name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Underscores {
    /// Removed before routing and forwarding (nginx's default).
    #[default]
    Drop,
    /// The request is refused with 400.
    Reject,
    /// Forwarded as any other field.
    Allow,
}

/// Which codings a request's `Transfer-Encoding` applies (RFC 9112
/// §6.1): `chunked` exactly once and last (400 otherwise); any other
/// coding is one the proxy does not implement (501).
pub(crate) fn transfer_codings<'a>(
    values: impl Iterator<Item = &'a HeaderValue>,
) -> Result<(), Malformed> {
    let mut chunked = 0;
    let mut last_chunked = false;
    let mut other = None;
    for v in values {
        for token in v.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.is_empty() {
                continue;
            }
            // Parameters (`;q=...`) do not make `chunked` another coding.
            let name = token
                .split(|&b| b == b';')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            last_chunked = name.eq_ignore_ascii_case(b"chunked");
            if last_chunked {
                chunked += 1;
            } else if other.is_none() {
                other = Some(show(name));
            }
        }
    }
    if chunked > 1 {
        return Err(Malformed::ChunkedTwice);
    }
    if !last_chunked {
        return Err(Malformed::ChunkedNotLast);
    }
    match other {
        Some(coding) => Err(Malformed::UnknownCoding(coding)),
        None => Ok(()),
    }
}

/// The request's authority (see the module doc); `None` for an HTTP/1.0
/// request without one (no `Host`, or an empty one, and an origin-form
/// target).
pub(crate) fn authority(parts: &http::request::Parts) -> Result<Option<Authority>, Malformed> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Malformed::ManyHosts(
            parts.headers.get_all(header::HOST).iter().count(),
        ));
    }
    let target = parts.uri.authority();
    if parts.version == Version::HTTP_2 {
        return match (target, host) {
            (Some(a), host) => {
                let authority = Authority::parse(a.as_str().as_bytes())?;
                match host {
                    Some(h) if !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()) => {
                        Err(Malformed::AuthorityMismatch {
                            authority: show(a.as_str().as_bytes()),
                            host: show(h.as_bytes()),
                        })
                    }
                    _ => Ok(Some(authority)),
                }
            }
            (None, Some(h)) => Authority::from_header(h).map(Some),
            (None, None) => Err(Malformed::NoAuthority),
        };
    }
    // HTTP/1.x: Host is checked even when an absolute-form target's
    // authority replaces it.
    let from_host = match host {
        None if parts.version == Version::HTTP_10 || parts.version == Version::HTTP_09 => None,
        None => return Err(Malformed::NoHost),
        Some(h) if h.is_empty() => None,
        Some(h) => {
            let mut a = Authority::from_header(h)?;
            a.host_field = a.value.as_bytes() == h.as_bytes();
            Some(a)
        }
    };
    match target {
        Some(a) => Authority::parse(a.as_str().as_bytes()).map(Some),
        None => Ok(from_host),
    }
}

/// Whether a field name has an underscore: eight bytes at a time, as this
/// looks at every name of every request.
#[inline]
pub(crate) fn has_underscore(name: &[u8]) -> bool {
    const LOW: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    const UNDERSCORE: u64 = u64::from_ne_bytes([b'_'; 8]);
    let mut chunks = name.chunks_exact(8);
    for c in &mut chunks {
        let word = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        let x = word ^ UNDERSCORE;
        // A zero byte of `x` is an underscore of `word`.
        if x.wrapping_sub(LOW) & !x & HIGH != 0 {
            return true;
        }
    }
    chunks.remainder().contains(&b'_')
}

/// Applies the listener's [`Underscores`] to a request's fields; `true`
/// when some were dropped.
pub(crate) fn underscores(h: &mut HeaderMap, mode: Underscores) -> Result<bool, Malformed> {
    if mode == Underscores::Allow {
        return Ok(false);
    }
    let has = |n: &HeaderName| has_underscore(n.as_str().as_bytes());
    let Some(first) = h.keys().find(|n| has(n)) else {
        return Ok(false);
    };
    if mode == Underscores::Reject {
        return Err(Malformed::Underscore(show(first.as_str().as_bytes())));
    }
    let named: Vec<HeaderName> = h.keys().filter(|n| has(n)).cloned().collect();
    for n in &named {
        h.remove(n);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> (String, String) {
        let a = Authority::parse(s.as_bytes()).unwrap_or_else(|e| panic!("{s}: {e}"));
        (a.as_str().to_string(), a.host().to_string())
    }

    fn bad(s: &[u8]) {
        assert!(
            Authority::parse(s).is_err(),
            "accepted {:?}",
            String::from_utf8_lossy(s)
        );
    }

    #[test]
    fn valid_authorities_and_their_normal_form() {
        let cases = [
            ("a.test", "a.test", "a.test"),
            ("A.Test:8080", "A.Test:8080", "A.Test"),
            ("a.test.", "a.test", "a.test"),
            ("a.test:", "a.test", "a.test"),
            ("127.0.0.1:80", "127.0.0.1:80", "127.0.0.1"),
            ("[::1]", "[::1]", "[::1]"),
            ("[::1]:443", "[::1]:443", "[::1]"),
            ("[2001:db8::1]:", "[2001:db8::1]", "[2001:db8::1]"),
            (
                "under_score-name~x",
                "under_score-name~x",
                "under_score-name~x",
            ),
            ("a:65535", "a:65535", "a"),
            ("a:0", "a:0", "a"),
        ];
        for (raw, value, host) in cases {
            assert_eq!(ok(raw), (value.to_string(), host.to_string()), "{raw}");
        }
    }

    #[test]
    fn invalid_authorities() {
        for s in [
            &b""[..],
            b"a.test, admin.test",
            b"a.test@admin.test",
            b"user@a.test",
            b"a test",
            b"a.test\t",
            b"a\x00b",
            b"a.test:65536",
            b"a.test:99999",
            b"a.test:123456",
            b"a.test:8o",
            b"a.test:-1",
            b"a..test",
            b".a.test",
            b".",
            b"a.test..",
            b"a%2etest",
            b"a/b",
            b"a:b:c",
            b"::1",
            b"[::1",
            b"[::1]x",
            b"[::1]:x",
            b"[v1.x]",
            b"[fe80::1%eth0]",
            b"[1.2.3.4]",
            "é.test".as_bytes(),
            b"a.test.:80",
        ] {
            bad(s);
        }
        bad(&[b'a'; MAX_AUTHORITY + 1]);
    }

    #[test]
    fn underscores_anywhere_in_a_name() {
        for (name, want) in [
            (&b""[..], false),
            (b"a", false),
            (b"_", true),
            (b"x-forwarded-for", false),
            (b"x_forwarded_for", true),
            (b"abcdefgh_", true),
            (b"abcdefg_", true),
            (b"abcdefghijklmnop", false),
            (b"abcdefghijklmno_", true),
            (b"\x7f\x80\xde\xdf\xe0\x5e\x60\x9f\xdf", false),
        ] {
            assert_eq!(has_underscore(name), want, "{name:?}");
        }
        for i in 0..40 {
            let mut v = vec![b'a'; 40];
            assert!(!has_underscore(&v));
            v[i] = b'_';
            assert!(has_underscore(&v), "at {i}");
        }
    }

    #[test]
    fn a_shared_field_value_is_not_copied_when_already_normal() {
        let v = HeaderValue::from_static("b.test:81");
        let a = Authority::from_header(&v).unwrap();
        assert_eq!(a.header(), &v);
        assert_eq!(a.host(), "b.test");
        let a = Authority::from_header(&HeaderValue::from_static("b.test.")).unwrap();
        assert_eq!(a.as_str(), "b.test");
    }

    fn codings(values: &[&'static str]) -> Result<(), String> {
        let v: Vec<HeaderValue> = values.iter().map(|s| HeaderValue::from_static(s)).collect();
        transfer_codings(v.iter()).map_err(|e| format!("{} {e}", e.status().as_u16()))
    }

    #[test]
    fn transfer_codings_chunked_once_and_last() {
        let twice = "400 Transfer-Encoding applies `chunked` more than once";
        let not_last = "400 Transfer-Encoding: `chunked` is not the final coding";
        assert_eq!(codings(&["chunked"]), Ok(()));
        assert_eq!(codings(&["Chunked"]), Ok(()));
        assert_eq!(codings(&[" chunked ,"]), Ok(()));
        assert_eq!(codings(&["chunked, chunked"]).unwrap_err(), twice);
        assert_eq!(codings(&["chunked", "chunked"]).unwrap_err(), twice);
        assert_eq!(codings(&["chunked, gzip"]).unwrap_err(), not_last);
        assert_eq!(codings(&["chunked", "gzip"]).unwrap_err(), not_last);
        assert_eq!(codings(&[""]).unwrap_err(), not_last);
        assert!(codings(&["gzip, chunked"]).unwrap_err().starts_with("501 "));
        assert!(codings(&["identity", "chunked"])
            .unwrap_err()
            .contains("`identity`"));
    }
}
