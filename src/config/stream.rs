//! `[[streams]]`: L4 (TCP) listeners, as pure data. A stream's
//! connections go to an upstream group byte for byte: as they come, after
//! TLS termination (`tls`), or, read by the SNI of their TLS ClientHello
//! and passed through untouched (`sni`), to a group or to one of the
//! HTTP listeners' TLS. Each entry becomes a [`Listener`] whose `stream`
//! is set, after the `[[listeners]]` ones, so that binding, admission
//! (`max_connections`, `max_connections_per_ip`), `access` rules, the
//! PROXY protocol, reloads and upgrades are the listeners' own.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::source::Problems;
use super::{raw, Listener, Protocol, UpstreamGroup};

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
/// protocol are its [`Listener`]'s).
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
    /// Whether this route takes a ClientHello naming `sni` (lower case)
    /// and offering `alpn`.
    pub fn takes(&self, sni: Option<&str>, alpn: &[&[u8]]) -> bool {
        let named = sni.is_some_and(|sni| {
            self.names.iter().any(|n| match n.strip_prefix('.') {
                Some(_) => sni.len() > n.len() && sni.ends_with(n.as_str()),
                None => n == sni,
            })
        });
        named && (self.alpn.is_empty() || self.alpn.iter().any(|a| alpn.contains(&a.as_slice())))
    }
}

impl Stream {
    /// The route a ClientHello takes: exact names first, then wildcards
    /// (the longest suffix first), then the default upstream.
    pub fn route(&self, sni: Option<&str>, alpn: &[&[u8]]) -> Option<SniTarget> {
        let exact = self.sni.iter().find(|r| {
            r.names.iter().any(|n| !n.starts_with('.') && Some(n.as_str()) == sni)
                && (r.alpn.is_empty() || r.alpn.iter().any(|a| alpn.contains(&a.as_slice())))
        });
        let wild = || {
            self.sni
                .iter()
                .filter(|r| r.takes(sni, alpn))
                .max_by_key(|r| {
                    r.names
                        .iter()
                        .filter(|n| n.starts_with('.') && sni.is_some_and(|s| s.ends_with(*n)))
                        .map(|n| n.len())
                        .max()
                        .unwrap_or(0)
                })
        };
        exact
            .or_else(wild)
            .map(|r| r.to)
            .or(self.upstream.map(SniTarget::Upstream))
    }
}

/// What a stream's conversion looks at beside its entry.
pub(super) struct Around<'a> {
    /// Relative paths are relative to it.
    pub(super) base: &'a Path,
    /// The HTTP listeners converted (that SNI routes may hand
    /// connections to).
    pub(super) listeners: &'a [Listener],
    pub(super) upstreams: &'a [UpstreamGroup],
    /// Every group converted: a missing one is then the stream's problem
    /// (else it is the group's own).
    pub(super) groups_ok: bool,
    pub(super) connect_timeout: Duration,
}

/// A stream's or an SNI route's group: it exists and carries bytes
/// (not HTTP/2).
fn group(name: &str, at: &str, around: &Around<'_>, p: &mut Problems) -> Option<usize> {
    let upstreams = around.upstreams;
    let Some(i) = upstreams.iter().position(|g| g.name == name) else {
        if around.groups_ok {
            p.add(at, format!("no upstream group named `{name}`"));
        }
        return None;
    };
    if upstreams[i].protocol == Protocol::H2 {
        p.add(
            at,
            format!("`{name}` speaks HTTP/2 (`protocol = \"h2\"`): a stream carries bytes, not requests"),
        );
    }
    Some(i)
}

fn protocols(list: Option<&[String]>, at: &str, p: &mut Problems) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, a) in list.unwrap_or_default().iter().enumerate() {
        if a.is_empty() || a.len() > 255 {
            p.add(format!("{at}[{i}]"), "an ALPN protocol is 1 to 255 bytes");
        }
        out.push(a.as_bytes().to_vec());
    }
    out
}

/// An SNI route's name: a host name, or `*.` and one.
fn sni_name(n: &str, at: &str, p: &mut Problems) -> String {
    let lower = n.to_ascii_lowercase();
    let host = lower.strip_prefix("*.").unwrap_or(&lower);
    let valid = !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        p.add(
            at,
            format!("`{n}` is neither a host name nor `*.` and a host name"),
        );
    }
    match lower.strip_prefix('*') {
        Some(dot) => dot.to_string(),
        None => lower,
    }
}

/// Converts the `i`-th `[[streams]]` entry; problems go to `p`.
pub(super) fn stream(
    s: &raw::Stream,
    i: usize,
    around: &Around<'_>,
    p: &mut Problems,
) -> Option<Listener> {
    let listeners = around.listeners;
    let at = |f: &str| format!("streams[{i}].{f}");
    let before = p.len();
    let addr = s
        .address
        .parse::<SocketAddr>()
        .map_err(|e| {
            p.add(
                at("address"),
                format!("`{}` is not an IP:port address ({e})", s.address),
            )
        })
        .ok();
    let mut out = Listener::plain(addr.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))));
    out.http2 = false;
    if s.max_connections == Some(0) {
        p.add(at("max_connections"), "must be at least 1");
    }
    out.max_connections = s.max_connections;
    if s.max_connections_per_ip == Some(0) {
        p.add(
            at("max_connections_per_ip"),
            "must be at least 1 (leave it out for no limit)",
        );
    }
    out.max_connections_per_ip = s.max_connections_per_ip;
    match super::listener::access(s.access.as_deref()) {
        Ok(a) => out.access = a,
        Err(bad) => {
            for (j, reason) in bad {
                p.add(at(&format!("access[{j}]")), reason);
            }
        }
    }
    if let Some(pp) = &s.proxy_protocol {
        out.proxy_protocol = super::listener::proxy_protocol(pp, &at("proxy_protocol"), p);
    }
    if let Some(t) = &s.tls {
        out.tls = super::listener::tls(t, &at, around.base, p);
    }
    let upstream = s
        .upstream
        .as_ref()
        .and_then(|name| group(name, &at("upstream"), around, p));
    let mut sni = Vec::new();
    for (j, r) in s.sni.iter().flatten().enumerate() {
        let at = |f: &str| at(&format!("sni[{j}].{f}"));
        if r.names.is_empty() {
            p.add(at("names"), "names no host");
        }
        let names = r
            .names
            .iter()
            .enumerate()
            .map(|(k, n)| sni_name(n, &at(&format!("names[{k}]")), p))
            .collect();
        let alpn = protocols(r.alpn.as_deref(), &at("alpn"), p);
        let to = match (&r.upstream, &r.listener) {
            (Some(name), None) => group(name, &at("upstream"), around, p).map(SniTarget::Upstream),
            (None, Some(l)) if s.tls.is_some() => {
                p.add(
                    at("listener"),
                    format!("`{l}`: this stream terminates TLS itself; hand-over is for passthrough streams"),
                );
                None
            }
            (None, Some(l)) => match l.parse::<SocketAddr>() {
                Err(e) => {
                    p.add(at("listener"), format!("`{l}` is not an IP:port address ({e})"));
                    None
                }
                Ok(a) => match listeners.iter().position(|x| x.addr == a) {
                    Some(k) if listeners[k].tls.is_some() => Some(SniTarget::Listener(k)),
                    Some(_) => {
                        p.add(at("listener"), format!("[[listeners]] {a} has no TLS to hand the connection to"));
                        None
                    }
                    None => {
                        p.add(at("listener"), format!("no [[listeners]] entry has the address {a}"));
                        None
                    }
                },
            },
            _ => {
                p.add(at("upstream"), "give one of `upstream` and `listener`");
                None
            }
        };
        if let Some(to) = to {
            sni.push(SniRoute { names, alpn, to });
        }
    }
    if upstream.is_none() && s.sni.as_ref().is_none_or(Vec::is_empty) && s.upstream.is_none() {
        p.add(
            at("upstream"),
            "a stream needs `upstream`, or `sni` routes (with `upstream` as their default)",
        );
    }
    let alpn = protocols(s.alpn.as_deref(), &at("alpn"), p);
    if !alpn.is_empty() && s.tls.is_none() {
        p.add(at("alpn"), "is offered when the stream terminates TLS: give `tls`");
    }
    let stream = Stream {
        index: i,
        upstream,
        sni,
        alpn,
        connect_timeout: s.connect_timeout.unwrap_or(around.connect_timeout),
        idle_timeout: s.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT),
        preread_timeout: s.preread_timeout.unwrap_or(DEFAULT_PREREAD_TIMEOUT),
    };
    if stream.preread_timeout > Duration::from_secs(60) {
        p.add(
            at("preread_timeout"),
            "at most 60s: the ClientHello is a client's first bytes",
        );
    }
    out.stream = Some(Arc::new(stream));
    (p.len() == before).then_some(out)
}

/// The upstream groups that only streams name (their health checks are
/// TCP connects unless they say otherwise).
pub(super) fn streams_only(raw: &raw::File) -> Vec<&str> {
    let mut by_streams: Vec<&str> = Vec::new();
    for s in &raw.streams {
        by_streams.extend(s.upstream.as_deref());
        for r in s.sni.iter().flatten() {
            by_streams.extend(r.upstream.as_deref());
        }
    }
    let by_routes = |name: &str| {
        raw.routes.iter().any(|r| {
            r.upstream.as_deref() == Some(name)
                || r.forward_auth.as_ref().is_some_and(|f| f.upstream == name)
        })
    };
    by_streams.retain(|n| !by_routes(n));
    by_streams
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(names: &[&str], alpn: &[&str], to: usize) -> SniRoute {
        let mut p = Problems::default();
        SniRoute {
            names: names.iter().map(|n| sni_name(n, "x", &mut p)).collect(),
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
