//! Converting `[[streams]]` entries (types in `stream.rs`): each becomes
//! a [`Listener`] with its `stream` set, its listener settings (address,
//! TLS, `access`, limits, PROXY protocol) checked as a listener's are.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::listener::Listener;
use super::raw;
use super::source::Problems;
use super::stream::{SniRoute, SniTarget, Stream, DEFAULT_IDLE_TIMEOUT, DEFAULT_PREREAD_TIMEOUT};
use super::upstream::{Protocol, UpstreamGroup};

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
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
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
    let shared = super::listener::Shared {
        address: &s.address,
        max_connections: s.max_connections,
        max_connections_per_ip: s.max_connections_per_ip,
        access: s.access.as_deref(),
        proxy_protocol: s.proxy_protocol.as_ref(),
    };
    let mut out = shared.convert(&at, p);
    out.http2 = false;
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
                    p.add(
                        at("listener"),
                        format!("`{l}` is not an IP:port address ({e})"),
                    );
                    None
                }
                Ok(a) => match listeners.iter().position(|x| x.addr == a) {
                    Some(k) if listeners[k].tls.is_some() => Some(SniTarget::Listener(k)),
                    Some(_) => {
                        p.add(
                            at("listener"),
                            format!("[[listeners]] {a} has no TLS to hand the connection to"),
                        );
                        None
                    }
                    None => {
                        p.add(
                            at("listener"),
                            format!("no [[listeners]] entry has the address {a}"),
                        );
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
        p.add(
            at("alpn"),
            "is offered when the stream terminates TLS: give `tls`",
        );
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
