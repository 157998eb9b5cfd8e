//! The config as data for `GET /config` on the admin listener: what is in
//! force after defaults, overrides and validation, with secrets redacted.
//!
//! The config types derive `serde::Serialize`, so a new field shows up
//! without a line here; this file holds the `serialize_with` helpers for
//! the foreign types they hold (durations as humantime text, HTTP types as
//! their text) and the redaction:
//!
//! - the admin `token` ([`secret`]);
//! - the value of any field whose name says credential (`authorization`,
//!   `proxy-authorization`, `cookie`, `x-api-key`, anything with `token`,
//!   `secret`, `password`...), wherever a route matches on, sets or
//!   answers with one ([`header_pairs`], [`header_map`]);
//! - the user information of a URL in any field value or redirect
//!   target (`http://user:pass@host` → `http://<redacted>@host`).
//!
//! File paths (certificates, keys, CA bundles) are shown: a path is no
//! secret, and an operator needs to see which file is in force.
//!
//! Nothing here imports the rest of the crate, so every config type (and
//! the router's, which the config holds) can use it.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::Serialize as _;

/// A shared value, as the value (serde's `rc` feature is not on).
pub(crate) fn opt_arc<S: Serializer, T: serde::Serialize>(
    v: &Option<std::sync::Arc<T>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    v.as_deref().serialize(s)
}

/// A shared value, as the value.
pub(crate) fn arc<S: Serializer, T: serde::Serialize>(
    v: &std::sync::Arc<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    v.as_ref().serialize(s)
}

/// What a secret shows as.
pub(crate) const REDACTED: &str = "<redacted>";

/// Parts of field names that mark a credential (names are lowercase).
const CREDENTIAL_NAMES: &[&str] = &[
    "authorization",
    "cookie",
    "api-key",
    "apikey",
    "token",
    "secret",
    "password",
    "passwd",
];

/// Whether a field's value is a credential, by its name.
pub(crate) fn is_credential(name: &HeaderName) -> bool {
    let name = name.as_str();
    CREDENTIAL_NAMES.iter().any(|c| name.contains(c))
}

/// `text` with the user information of every URL in it replaced:
/// `https://user:pass@host/` → `https://<redacted>@host/`.
pub(crate) fn redact_userinfo(text: &str) -> Cow<'_, str> {
    let mut out = String::new();
    let mut rest = text;
    let mut changed = false;
    while let Some(i) = rest.find("://") {
        let start = i + 3;
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        // The authority ends at the path, query, fragment, a template's
        // placeholder, or anything that cannot be in it.
        let end = after
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '{' | '"' | '\'' | '<' | '>') || c.is_whitespace()
            })
            .unwrap_or(after.len());
        match after[..end].rfind('@') {
            Some(at) => {
                out.push_str(REDACTED);
                out.push_str(&after[at..end]);
                changed = true;
            }
            None => out.push_str(&after[..end]),
        }
        rest = &after[end..];
    }
    if !changed {
        return Cow::Borrowed(text);
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// A field value as text (bytes that are not UTF-8 replaced), without
/// URL user information.
fn value_text(v: &HeaderValue) -> String {
    redact_userinfo(&String::from_utf8_lossy(v.as_bytes())).into_owned()
}

/// A duration as humantime writes it: `5s`, `1m 30s`, `250ms`.
pub(crate) fn duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

/// A URL without the password its userinfo may hold.
pub(crate) fn url<S: Serializer>(u: &http::Uri, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_userinfo(&u.to_string()))
}

/// Anything by its `Display` text (a method, a regex, a path).
pub(crate) fn display<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Each item by its `Display` text.
pub(crate) fn display_all<T: std::fmt::Display, S: Serializer>(
    items: &[T],
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(items.len()))?;
    for i in items {
        seq.serialize_element(&i.to_string())?;
    }
    seq.end()
}

pub(crate) fn header_name<S: Serializer>(n: &HeaderName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(n.as_str())
}

pub(crate) fn header_names<S: Serializer>(names: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(names.iter().map(HeaderName::as_str))
}

/// A field value set by the config for a field not named here (`Host`,
/// `Strict-Transport-Security`, a server's authority).
pub(crate) fn header_value<S: Serializer>(v: &HeaderValue, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&value_text(v))
}

pub(crate) fn opt_header_value<S: Serializer>(
    v: &Option<HeaderValue>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => header_value(v, s),
        None => s.serialize_none(),
    }
}

/// Fields as a map from name to value, credentials redacted.
pub(crate) fn header_pairs<S: Serializer>(
    pairs: &[(HeaderName, HeaderValue)],
    s: S,
) -> Result<S::Ok, S::Error> {
    fields(pairs.iter().map(|(n, v)| (n, v)), pairs.len(), s)
}

/// [`header_pairs`] for a `HeaderMap`.
pub(crate) fn header_map<S: Serializer>(map: &HeaderMap, s: S) -> Result<S::Ok, S::Error> {
    fields(map.iter(), map.len(), s)
}

fn fields<'a, S: Serializer>(
    pairs: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    len: usize,
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(len))?;
    for (n, v) in pairs {
        if is_credential(n) {
            map.serialize_entry(n.as_str(), REDACTED)?;
        } else {
            map.serialize_entry(n.as_str(), &value_text(v))?;
        }
    }
    map.end()
}

pub(crate) fn status<S: Serializer>(code: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(code.as_u16())
}

pub(crate) fn statuses<S: Serializer>(codes: &[StatusCode], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(codes.iter().map(StatusCode::as_u16))
}

/// A fixed response's body, as text (bytes that are not UTF-8 replaced).
/// ALPN protocol names, as text.
pub(crate) fn protocols<S: Serializer>(list: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(list.iter().map(|p| String::from_utf8_lossy(p)))
}

pub(crate) fn body<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

/// A secret: whether it is set, never its value.
pub(crate) fn secret<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str(REDACTED),
        None => s.serialize_none(),
    }
}

/// A TLS server name, as text.
pub(crate) fn server_name<S: Serializer>(
    v: &Option<rustls::pki_types::ServerName<'static>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(n) => s.serialize_str(&n.to_str()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_redacted_wherever_a_url_is() {
        let cases = [
            ("http://user:pass@host/x", "http://<redacted>@host/x"),
            ("https://u@h:8443", "https://<redacted>@h:8443"),
            (
                "see https://a:b@one.test{uri} and ftp://c@two.test?q=x@y",
                "see https://<redacted>@one.test{uri} and ftp://<redacted>@two.test?q=x@y",
            ),
            ("<http://a:b@c>; rel=x", "<http://<redacted>@c>; rel=x"),
        ];
        for (text, want) in cases {
            assert_eq!(redact_userinfo(text), want, "{text}");
        }
        for plain in [
            "http://host/a@b",
            "no url here",
            "mailto:a@b",
            "/path?x=a@b",
        ] {
            assert!(
                matches!(redact_userinfo(plain), Cow::Borrowed(_)),
                "{plain}"
            );
        }
    }

    #[test]
    fn credential_names() {
        for n in [
            "authorization",
            "proxy-authorization",
            "cookie",
            "x-api-key",
            "x-auth-token",
            "x-client-secret",
        ] {
            assert!(is_credential(&HeaderName::from_static(n)), "{n}");
        }
        for n in ["x-request-id", "host", "accept", "x-forwarded-for"] {
            assert!(!is_credential(&HeaderName::from_static(n)), "{n}");
        }
    }
}
