//! `[[streams]]`: L4 (TCP) listeners, as pure data. A stream's
//! connections go to an upstream group byte for byte: as they come, after
//! TLS termination (`tls`), or, read by the SNI of their TLS ClientHello
//! and passed through untouched (`sni`), to a group or to one of the
//! HTTP listeners' TLS. Each entry becomes a [`Listener`](super::Listener) whose `stream`
//! is set, after the `[[listeners]]` ones, so that binding, admission
//! (`max_connections`, `max_connections_per_ip`), `access` rules, the
//! PROXY protocol, reloads and upgrades are the listeners' own.

use std::time::Duration;

use serde::Serialize;

/// How long a passthrough stream waits for the ClientHello unless
/// configured (nginx's `preread_timeout` is 30s, HAProxy's usual
/// `tcp-request inspect-delay` 5s).
pub const DEFAULT_PREREAD_TIMEOUT: Duration = Duration::from_secs(5);

/// A stream with no byte either way for this long is closed unless
/// configured (nginx's `proxy_timeout`).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// The most of a ClientHello read before its SNI is known: a ClientHello
/// with post-quantum key shares is about 1.5 KiB; 16 KiB is one TLS
/// record, the most any client sends first.
pub const MAX_PREREAD: usize = 16 * 1024;

/// A stream listener's settings (its address, TLS, limits and PROXY
/// protocol are its [`Listener`](super::Listener)'s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stream {
    /// Its place among `[[streams]]`, for errors found later.
    pub index: usize,
    /// Where a connection goes that no SNI route takes (every one, without
    /// `sni`); `None`: such connections are closed.
    pub upstream: Option<usize>,
    /// Routes by the ClientHello's SNI, first match wins (exact names
    /// before wildcards).
    pub sni: Vec<SniRoute>,
    /// ALPN protocols offered when this stream terminates TLS.
    #[serde(serialize_with = "super::dump::protocols")]
    pub alpn: Vec<Vec<u8>>,
    #[serde(serialize_with = "super::dump::duration")]
    pub connect_timeout: Duration,
    #[serde(serialize_with = "super::dump::duration")]
    pub idle_timeout: Duration,
    #[serde(serialize_with = "super::dump::duration")]
    pub preread_timeout: Duration,
}

/// `{ names = [...], alpn = [...], upstream = "g" | listener = "addr" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SniRoute {
    /// `example.com` (exact, lower case) or `*.example.com` (kept as
    /// `.example.com`: one label or more before it).
    pub names: Vec<String>,
    /// When given, the ClientHello must offer one of these.
    #[serde(serialize_with = "super::dump::protocols")]
    pub alpn: Vec<Vec<u8>>,
    pub to: SniTarget,
}

/// Where an SNI route sends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SniTarget {
    /// Passed through to the group (index into the config's groups).
    Upstream(usize),
    /// Handed to the TLS of this HTTP listener (index into the config's
    /// listeners), as if it had accepted the connection.
    Listener(usize),
}

impl SniRoute {
    /// Whether the ClientHello offers one of this route's protocols (any
    /// ClientHello, when the route names none).
    fn offered(&self, alpn: &[&[u8]]) -> bool {
        self.alpn.is_empty() || self.alpn.iter().any(|a| alpn.contains(&a.as_slice()))
    }

    /// Whether one of its exact names is `sni` (lower case).
    fn names_exactly(&self, sni: &str) -> bool {
        self.names.iter().any(|n| !n.starts_with('.') && n == sni)
    }

    /// The longest of its wildcards (`.example.com`) that `sni` is under.
    fn wildcard_for(&self, sni: &str) -> Option<usize> {
        self.names
            .iter()
            .filter(|n| n.starts_with('.') && sni.len() > n.len() && sni.ends_with(n.as_str()))
            .map(String::len)
            .max()
    }
}

impl Stream {
    /// The route a ClientHello takes: exact names first, then wildcards
    /// (the longest suffix first), then the default upstream.
    pub fn route(&self, sni: Option<&str>, alpn: &[&[u8]]) -> Option<SniTarget> {
        let named = sni.and_then(|sni| {
            let offering = || self.sni.iter().filter(|r| r.offered(alpn));
            let exact = offering().find(|r| r.names_exactly(sni));
            exact.or_else(|| {
                offering()
                    .filter_map(|r| Some((r.wildcard_for(sni)?, r)))
                    .max_by_key(|(len, _)| *len)
                    .map(|(_, r)| r)
            })
        });
        named
            .map(|r| r.to)
            .or(self.upstream.map(SniTarget::Upstream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(names: &[&str], alpn: &[&str], to: usize) -> SniRoute {
        SniRoute {
            names: names
                .iter()
                .map(|n| n.to_ascii_lowercase().replace('*', ""))
                .collect(),
            alpn: alpn.iter().map(|a| a.as_bytes().to_vec()).collect(),
            to: SniTarget::Upstream(to),
        }
    }

    #[test]
    fn exact_names_then_longest_wildcard_then_default() {
        let s = Stream {
            index: 0,
            upstream: Some(9),
            sni: vec![
                route(&["*.example.com"], &[], 1),
                route(&["*.a.example.com"], &[], 2),
                route(&["b.a.example.com", "Other.Test"], &[], 3),
                route(&["h2.test"], &["h2"], 4),
            ],
            alpn: Vec::new(),
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            preread_timeout: Duration::from_secs(1),
        };
        let to = |sni: Option<&str>, alpn: &[&[u8]]| match s.route(sni, alpn) {
            Some(SniTarget::Upstream(i)) => i,
            other => panic!("{other:?}"),
        };
        assert_eq!(to(Some("x.example.com"), &[]), 1);
        assert_eq!(to(Some("c.a.example.com"), &[]), 2);
        assert_eq!(to(Some("b.a.example.com"), &[]), 3);
        assert_eq!(to(Some("other.test"), &[]), 3);
        assert_eq!(to(Some("example.com"), &[]), 9);
        assert_eq!(to(Some("xexample.com"), &[]), 9);
        assert_eq!(to(None, &[]), 9);
        assert_eq!(to(Some("h2.test"), &[b"h2"]), 4);
        assert_eq!(to(Some("h2.test"), &[b"http/1.1"]), 9);
        let none = Stream {
            upstream: None,
            ..s.clone()
        };
        assert_eq!(none.route(Some("nowhere.test"), &[]), None);
    }
}
