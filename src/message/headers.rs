//! Header rules of RFC 9110 and RFC 9112 for a proxy, as pure functions
//! over header maps: which fields are hop-by-hop and go, which are
//! protected, what `X-Forwarded-For` and `Via` become, HTTP/2 cookies for
//! HTTP/1.1, upgrades, trailers. Shared by the request path and tunnels.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Version;

/// W3C Trace Context's vendor field (found by [`scan`], used by `trace`).
pub(crate) const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// W3C Trace Context's parent (found by [`scan`], used by `trace`).
pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// RFC 9211: the proxy's cache adds its member (`proxy::cache`), written
/// after a response's fields on HTTP/1.1 (`downstream::service`).
pub(crate) static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

pub(crate) const VIA_VALUE: HeaderValue = HeaderValue::from_static("1.1 tidegate");

pub(crate) const VIA_VALUE_H2: HeaderValue = HeaderValue::from_static("2 tidegate");

pub(crate) const HTTP: HeaderValue = HeaderValue::from_static("http");

pub(crate) const HTTPS: HeaderValue = HeaderValue::from_static("https");

const UPGRADE: HeaderValue = HeaderValue::from_static("upgrade");

/// `Via` names the protocol version the message came in with (RFC 9110 §7.6.3).
pub(crate) fn via(v: Version) -> HeaderValue {
    if v == Version::HTTP_2 {
        VIA_VALUE_H2
    } else {
        VIA_VALUE
    }
}

/// The `X-Forwarded-For` to send: the ones received, in order, then the
/// client's address.
pub(crate) fn forwarded_for(h: &HeaderMap, client_ip: &HeaderValue) -> HeaderValue {
    let mut v = Vec::with_capacity(64);
    for prior in h.get_all(&X_FORWARDED_FOR) {
        v.extend_from_slice(prior.as_bytes());
        v.extend_from_slice(b", ");
    }
    v.extend_from_slice(client_ip.as_bytes());
    HeaderValue::from_bytes(&v).unwrap_or_else(|_| client_ip.clone())
}

/// The value of the cookie `name` in the request's `Cookie` fields (the
/// first pair with that name), if it has one.
pub(crate) fn cookie<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// HTTP/2 lets a client split `Cookie` into one field per pair; HTTP/1.1
/// wants one field, joined with "; " (RFC 9113 §8.2.3).
pub(crate) fn join_cookies(h: &mut HeaderMap) {
    let mut all = h.get_all(header::COOKIE).iter();
    if let (Some(_), None) = (all.next(), all.next()) {
        return;
    }
    let mut joined = Vec::new();
    for v in h.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    if joined.is_empty() {
        return;
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        h.insert(header::COOKIE, v);
    }
}

/// What `TE` and `Trailer` ask that outlives the hop: a client accepting
/// trailers (`TE: trailers`, passed on to HTTP/2 upstreams through
/// [`TeTrailers`]), and the trailer fields a
/// chunked body announces (which hyper only writes when announced).
pub(crate) fn trailer_fields(
    h: &HeaderMap,
    chunked: bool,
    ext: &mut http::Extensions,
) -> Option<HeaderValue> {
    let te_trailers = h
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("trailers")
        });
    if te_trailers {
        ext.insert(TeTrailers);
    }
    chunked.then(|| h.get(header::TRAILER).cloned()).flatten()
}

/// Headers the proxy must act on, found in one pass over a header map
/// (most messages carry none of them, and then nothing is hashed).
#[derive(Default, Clone, Copy)]
pub(crate) struct Found {
    pub(crate) connection: bool,
    /// Fixed hop-by-hop fields other than `Connection`.
    pub(crate) hop: bool,
    pub(crate) upgrade: bool,
    pub(crate) expect: bool,
    pub(crate) forwarded_for: bool,
    pub(crate) transfer_encoding: bool,
    /// A field name with an underscore.
    pub(crate) underscore: bool,
    /// `tracestate` (dropped with a missing or invalid `traceparent`).
    pub(crate) trace_state: bool,
    /// `traceparent` (read, then replaced by the proxy's own).
    pub(crate) trace_parent: bool,
    /// The field named to [`scan_request`] or [`scan_response`] (a
    /// request ID's).
    pub(crate) named: bool,
}

pub(crate) fn scan(h: &HeaderMap) -> Found {
    scan_as::<false>(h, None)
}

/// [`scan`] of a response's fields, also noting whether a field called
/// `named` is there.
pub(crate) fn scan_response(h: &HeaderMap, named: Option<&HeaderName>) -> Found {
    scan_as::<false>(h, named)
}

/// [`scan`] of a request's fields, also noting `traceparent` and whether a
/// field called `named` is there.
pub(crate) fn scan_request(h: &HeaderMap, named: Option<&HeaderName>) -> Found {
    scan_as::<true>(h, named)
}

/// A response's scan does not look for `traceparent`.
fn scan_as<const REQUEST: bool>(h: &HeaderMap, named: Option<&HeaderName>) -> Found {
    let mut f = Found::default();
    for name in h.keys() {
        if name == header::TRANSFER_ENCODING {
            f.hop = true;
            f.transfer_encoding = true;
        } else if name == header::CONNECTION {
            f.connection = true;
        } else if name == header::TE
            || name == header::TRAILER
            || name == KEEP_ALIVE
            || name == PROXY_CONNECTION
        {
            f.hop = true;
        } else if name == header::UPGRADE {
            f.hop = true;
            f.upgrade = true;
        } else if name == header::EXPECT {
            f.expect = true;
        } else if name == X_FORWARDED_FOR {
            f.forwarded_for = true;
        } else if name == TRACESTATE {
            f.trace_state = true;
        } else if REQUEST && name == TRACEPARENT {
            f.trace_parent = true;
        } else if named == Some(name) {
            f.named = true;
        } else if crate::message::admit::has_underscore(name.as_str().as_bytes()) {
            f.underscore = true;
        }
    }
    f
}

/// Removes `Connection`, every field it names, and the fixed hop-by-hop set
/// (RFC 9110 §7.6.1).
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    let found = scan(h);
    strip_found(h, found);
}

pub(crate) fn strip_found(h: &mut HeaderMap, found: Found) {
    if found.connection {
        // One lookup takes every `Connection` field out; the usual one
        // value needs no vector (an empty one allocates nothing).
        if let header::Entry::Occupied(e) = h.entry(header::CONNECTION) {
            let (_, mut values) = e.remove_entry_mult();
            let first = values.next();
            let rest: Vec<HeaderValue> = values.collect();
            for v in first.iter().chain(&rest) {
                remove_listed(h, v);
            }
        }
    }
    if found.hop {
        for name in [
            &KEEP_ALIVE,
            &PROXY_CONNECTION,
            &header::TE,
            &header::TRAILER,
            &header::TRANSFER_ENCODING,
            &header::UPGRADE,
        ] {
            h.remove(name);
        }
    }
}

/// Fields a `Connection` option may not name for removal.
const PROTECTED: [&str; 8] = [
    "host",
    "content-length",
    "transfer-encoding",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "via",
];

pub(crate) fn remove_listed(h: &mut HeaderMap, v: &HeaderValue) {
    // The value of nearly every `Connection` field, whole: nothing to split.
    if plain_option(v.as_bytes()) {
        return;
    }
    // Bytes, not `to_str`: no UTF-8 pass over the value, and a value with
    // obs-text still has its listed fields removed.
    for token in v.as_bytes().split(|&b| b == b',') {
        let token = token.trim_ascii();
        if token.is_empty() || plain_option(token) {
            continue;
        }
        // Framing, routing and the proxy's own forwarding fields are not
        // the sender's to remove.
        if PROTECTED
            .iter()
            .any(|p| token.eq_ignore_ascii_case(p.as_bytes()))
        {
            continue;
        }
        // `&str` lookups lower-case on the stack: no allocation. A token
        // that is not UTF-8 names no field.
        if let Ok(name) = std::str::from_utf8(token) {
            h.remove(name);
        }
    }
}

/// `keep-alive` or `close` (any case): connection options that name no
/// field of their own to remove (`Keep-Alive` is in the fixed set).
fn plain_option(token: &[u8]) -> bool {
    token.eq_ignore_ascii_case(b"keep-alive") || token.eq_ignore_ascii_case(b"close")
}

/// Whether a request head (HTTP/1.1) asks for an upgrade: an `Upgrade`
/// field and the `upgrade` option in `Connection` (RFC 9110 §7.8). Not
/// `h2c`: its upgrade needs `HTTP2-Settings`, a hop-by-hop field, and
/// RFC 9113 dropped it; such a request goes on as plain HTTP/1.1.
pub(crate) fn wants_upgrade(h: &HeaderMap) -> bool {
    let mut protocols = h
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .peekable();
    protocols.peek().is_some()
        && !protocols.any(|p| {
            p.split('/')
                .next()
                .is_some_and(|name| name.eq_ignore_ascii_case("h2c"))
        })
        && lists(h, header::CONNECTION, "upgrade")
}

/// Whether the comma-separated list fields `name` hold `token` (any case).
pub(crate) fn lists(h: &HeaderMap, name: HeaderName, token: &str) -> bool {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// After the hop-by-hop fields were dropped: puts back the `Upgrade`
/// values and `Connection: upgrade`.
pub(crate) fn keep_upgrade(h: &mut HeaderMap, upgrade: Vec<HeaderValue>) {
    h.remove(header::UPGRADE);
    for v in upgrade {
        h.append(header::UPGRADE, v);
    }
    h.insert(header::CONNECTION, UPGRADE);
}

/// Marks a request whose client accepts trailers (`TE: trailers`): the
/// proxy says the same upstream on its own behalf (RFC 9110 §10.1.4; gRPC
/// servers require it), since it forwards trailers. Any other `TE` coding
/// stops at the proxy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TeTrailers;

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut n: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        n.sort_unstable();
        n
    }

    #[test]
    fn upgrade_needs_both_fields() {
        assert!(wants_upgrade(&map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket")
        ])));
        assert!(wants_upgrade(&map(&[
            ("connection", "keep-alive"),
            ("connection", "UPGRADE"),
            ("upgrade", "foo")
        ])));
        assert!(!wants_upgrade(&map(&[("upgrade", "websocket")])));
        assert!(!wants_upgrade(&map(&[("connection", "upgrade")])));
        assert!(!wants_upgrade(&map(&[
            ("connection", "upgraded"),
            ("upgrade", "websocket")
        ])));
        assert!(!wants_upgrade(&map(&[
            ("connection", "upgrade"),
            ("upgrade", "")
        ])));
        assert!(!wants_upgrade(&map(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c")
        ])));
        assert!(!wants_upgrade(&map(&[
            ("connection", "upgrade"),
            ("upgrade", "foo/2, H2C")
        ])));
    }

    #[test]
    fn keep_upgrade_restores_the_fields() {
        let mut h = map(&[("x", "1")]);
        keep_upgrade(&mut h, vec![HeaderValue::from_static("websocket")]);
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert_eq!(h.get("connection").unwrap(), "upgrade");
    }

    #[test]
    fn hop_by_hop_fields_and_the_ones_connection_names_go() {
        let mut h = map(&[
            ("connection", "keep-alive, x-private"),
            ("connection", "close, X-Other"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-private", "1"),
            ("x-other", "2"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["accept"]);
    }

    #[test]
    fn connection_cannot_remove_routing_framing_or_forwarding_fields() {
        let mut h = map(&[
            (
                "connection",
                "host, content-length, transfer-encoding, x-forwarded-for, \
                 x-forwarded-proto, X-Forwarded-Host, forwarded, via, x-gone",
            ),
            ("host", "a.test"),
            ("content-length", "3"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "a.test"),
            ("forwarded", "for=10.0.0.1"),
            ("via", "1.1 other"),
            ("x-gone", "1"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(
            names(&h),
            [
                "content-length",
                "forwarded",
                "host",
                "via",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto"
            ]
        );
    }

    #[test]
    fn connection_tokens_that_name_no_field_are_skipped() {
        let mut h = map(&[
            ("connection", ", ,x-a ,  "),
            ("x-a", "1"),
            ("x-b", "2"),
            ("x-c", "3"),
        ]);
        h.append(
            header::CONNECTION,
            HeaderValue::from_bytes(b"caf\xe9, x-b").unwrap(),
        );
        strip_hop_by_hop(&mut h);
        assert_eq!(
            names(&h),
            ["x-c"],
            "empty and non-UTF-8 tokens skipped, the rest removed"
        );
    }

    #[test]
    fn scan_finds_what_the_proxy_acts_on() {
        let f = scan(&map(&[("accept", "*/*"), ("x_real_ip", "1")]));
        assert!(!f.hop && !f.connection && !f.upgrade && !f.expect && !f.forwarded_for);
        assert!(f.underscore && !f.transfer_encoding);
        let f = scan(&map(&[
            ("transfer-encoding", "chunked"),
            ("connection", "close"),
            ("expect", "100-continue"),
            ("x-forwarded-for", "10.0.0.1"),
            ("upgrade", "websocket"),
        ]));
        assert!(f.hop && f.transfer_encoding && f.connection && f.expect);
        assert!(f.forwarded_for && f.upgrade && !f.underscore);
        assert!(!f.trace_parent && !f.trace_state && !f.named);
        let id = HeaderName::from_static("x-request-id");
        let h = map(&[("traceparent", "00-1"), ("x-request-id", "a")]);
        let f = scan_request(&h, None);
        assert!(f.trace_parent && !f.named);
        assert!(scan_request(&h, Some(&id)).named);
        assert!(!scan(&h).trace_parent, "a response's scan does not look");
        assert!(scan_response(&h, Some(&id)).named);
    }

    #[test]
    fn forwarded_for_appends_the_client_to_every_field_in_order() {
        let ip = HeaderValue::from_static("192.0.2.7");
        assert_eq!(forwarded_for(&HeaderMap::new(), &ip), "192.0.2.7");
        let h = map(&[
            ("x-forwarded-for", "10.0.0.1, 10.0.0.2"),
            ("x-forwarded-for", "10.0.0.3"),
        ]);
        assert_eq!(
            forwarded_for(&h, &ip),
            "10.0.0.1, 10.0.0.2, 10.0.0.3, 192.0.2.7"
        );
    }

    #[test]
    fn http2_cookies_become_one_field() {
        let mut h = map(&[("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")]);
        join_cookies(&mut h);
        let all: Vec<_> = h.get_all(header::COOKIE).iter().collect();
        assert_eq!(all, ["a=1; b=2; c=3"]);
        let mut one = map(&[("cookie", "a=1; b=2")]);
        join_cookies(&mut one);
        assert_eq!(one.get(header::COOKIE).unwrap(), "a=1; b=2");
    }

    #[test]
    fn te_trailers_is_kept_as_a_mark_and_trailer_only_for_chunked_bodies() {
        let h = map(&[("te", "gzip;q=0.5, Trailers"), ("trailer", "x-sum")]);
        let mut ext = http::Extensions::new();
        assert_eq!(trailer_fields(&h, true, &mut ext).unwrap(), "x-sum");
        assert!(ext.get::<TeTrailers>().is_some());
        let mut ext = http::Extensions::new();
        assert!(
            trailer_fields(&map(&[("te", "gzip"), ("trailer", "x")]), false, &mut ext).is_none()
        );
        assert!(ext.get::<TeTrailers>().is_none());
    }

    #[test]
    fn via_names_the_version_received() {
        assert_eq!(via(Version::HTTP_11), "1.1 tidegate");
        assert_eq!(via(Version::HTTP_10), "1.1 tidegate");
        assert_eq!(via(Version::HTTP_2), "2 tidegate");
    }
}
