//! `[upstreams.NAME]`: the groups of servers requests go to,
//! as pure data. What runs them (health state, concurrency limits, hash
//! rings, rustls configs, resolved addresses) is built from these by
//! [`crate::upstream::registry`].

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};

pub use super::health::{Check, CheckKind};
use super::raw;
use super::source::Problems;

/// A named group of servers and how it balances between them.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamGroup {
    pub name: String,
    /// As written, in order; a name stands for all its addresses.
    pub servers: Vec<Server>,
    pub balance: Balance,
    /// Active checks, if configured.
    pub health: Option<Check>,
    pub outlier: Outlier,
    pub retry: Retry,
    /// Per-server concurrency cap (`max_connections`, `max_pending`).
    pub limit: Option<Limit>,
    /// The HTTP version to speak to the group's servers.
    pub protocol: Protocol,
    /// Set when the servers are `https://`.
    pub tls: Option<UpstreamTls>,
    /// A PROXY protocol header opens every connection to the servers
    /// (and every health check's); such connections serve one client
    /// connection each.
    pub proxy_protocol: Option<super::proxy_protocol::Version>,
}

/// One server entry as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Server {
    pub target: Target,
    /// `host:port` as written, for `upstream_host = "server"` and as the
    /// TLS name.
    #[serde(serialize_with = "super::dump::header_value")]
    pub authority: HeaderValue,
    /// Relative share of requests (default 1).
    pub weight: u32,
    /// Only used while no other server of the group is in service
    /// (nginx's `backup`).
    pub backup: bool,
}

/// An address, or a DNS name to resolve (every address it has becomes a
/// server of the group).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Addr(SocketAddr),
    Name {
        /// Lowercase.
        host: String,
        port: u16,
    },
}

/// A server's cap on concurrent requests, and how many may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limit {
    pub max_connections: u32,
    pub max_pending: u32,
}

/// How a group picks its server (`balance`, `hash_key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    RoundRobin,
    LeastOutstanding,
    PeakEwma,
    Hash(HashKey),
}

/// What a hashing group hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashKey {
    ClientIp,
    Header(#[serde(serialize_with = "super::dump::header_name")] HeaderName),
    Cookie(String),
}

/// Which HTTP version to speak to a group's servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only: offered alone by ALPN over TLS, prior knowledge (h2c)
    /// on plain connections.
    H2,
    /// Over TLS, whatever ALPN settles (h2 preferred); HTTP/1.1 on plain
    /// connections.
    #[default]
    Auto,
}

impl Protocol {
    /// Whether a connection opened for this choice speaks HTTP/2, given
    /// what ALPN settled (`false` on plain connections).
    pub fn speaks_h2(self, alpn_h2: bool) -> bool {
        match self {
            Protocol::H2 => true,
            Protocol::Http1 => false,
            Protocol::Auto => alpn_h2,
        }
    }
}

/// A group's TLS towards its `https://` servers. Paths are resolved
/// against the config file's directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UpstreamTls {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// SNI and verified name for every server; default: each server's host.
    #[serde(serialize_with = "super::dump::server_name")]
    pub server_name: Option<ServerName<'static>>,
    pub insecure_skip_verify: bool,
}

/// Passive ejection settings of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outlier {
    /// 0 turns passive ejection off.
    pub consecutive_failures: u32,
    #[serde(serialize_with = "super::dump::duration")]
    pub base_ejection: Duration,
    #[serde(serialize_with = "super::dump::duration")]
    pub max_ejection: Duration,
    pub max_ejected_percent: u32,
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

/// When a failed request goes again to another server of its group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retry {
    /// Tries in all, the first included (1: never retry).
    pub attempts: u32,
    /// Retries may be at most this share of requests...
    pub budget_percent: u32,
    /// ...plus this many per second.
    pub min_per_second: u32,
    /// Request bodies up to this size are read ahead and kept for a retry;
    /// larger ones stream and are never retried.
    pub max_body_bytes: u64,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 2,
            budget_percent: 20,
            min_per_second: 10,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// Converts one `[upstreams.NAME]` table; problems go to `p`, and `None`
/// comes back when there were any.
pub(super) fn group(
    name: &str,
    g: &raw::Upstream,
    base: &Path,
    streams_only: bool,
    p: &mut Problems,
) -> Option<UpstreamGroup> {
    let at = format!("upstreams.{name}");
    let before = p.len();
    if g.servers.is_empty() {
        p.add(format!("{at}.servers"), "at least one server is required");
    }
    let mut servers = Vec::new();
    let mut schemes = Vec::new();
    for (i, s) in g.servers.iter().enumerate() {
        let (address, weight, backup) = match s {
            raw::ServerEntry::Address(a) => (a, 1, false),
            raw::ServerEntry::Table {
                address,
                weight,
                backup,
            } => (address, weight.unwrap_or(1), backup.unwrap_or(false)),
        };
        if weight == 0 || weight > 1000 {
            p.add(
                format!("{at}.servers[{i}].weight"),
                format!("{weight} is outside 1..=1000"),
            );
        }
        match parse_target(address) {
            Ok((target, authority, https)) => {
                schemes.push(https);
                servers.push(Server {
                    target,
                    authority,
                    weight,
                    backup,
                });
            }
            Err(reason) => p.add(format!("{at}.servers[{i}]"), reason),
        }
    }
    let limit = match g.max_connections {
        Some(0) => {
            p.add(
                format!("{at}.max_connections"),
                "must be at least 1 (leave it out for no limit)",
            );
            None
        }
        Some(max) => Some(Limit {
            max_connections: max,
            max_pending: g.max_pending.unwrap_or(0),
        }),
        None => None,
    };
    let tls = upstream_tls(name, g, &schemes, &servers, base, p);
    let balance = balance(g, &at, p);
    let health = g
        .health
        .as_ref()
        .and_then(|h| super::health::check(h, &at, streams_only, p));
    let outlier = outlier(g.outlier.as_ref(), &at, p);
    let retry = retry(g.retry.as_ref(), &at, p);
    let protocol = g.protocol.unwrap_or_default();
    // A header names one client: its connection cannot be shared by
    // HTTP/2 streams of others.
    let h2 = protocol == Protocol::H2 || protocol == Protocol::Auto && matches!(tls, Some(Some(_)));
    if g.proxy_protocol.is_some() && h2 {
        p.add(
            format!("{at}.proxy_protocol"),
            "needs HTTP/1.1 connections (a header names one client; HTTP/2 would share them): set protocol = \"http1\"",
        );
    }
    (p.len() == before).then(|| UpstreamGroup {
        name: name.to_string(),
        servers,
        balance: balance.unwrap_or(Balance::PeakEwma),
        health,
        outlier,
        retry,
        limit,
        protocol,
        tls: tls.flatten(),
        proxy_protocol: g.proxy_protocol,
    })
}

fn retry(r: Option<&raw::Retry>, at: &str, p: &mut Problems) -> Retry {
    let mut retry = Retry::default();
    let Some(r) = r else { return retry };
    if let Some(n) = r.attempts {
        if (1..=10).contains(&n) {
            retry.attempts = n;
        } else {
            p.add(
                format!("{at}.retry.attempts"),
                format!("{n} is outside 1..=10"),
            );
        }
    }
    if let Some(n) = r.budget_percent {
        retry.budget_percent = n;
    }
    if let Some(n) = r.min_per_second {
        retry.min_per_second = n;
    }
    if let Some(n) = r.max_body_bytes {
        retry.max_body_bytes = n;
    }
    retry
}

fn outlier(o: Option<&raw::Outlier>, at: &str, p: &mut Problems) -> Outlier {
    let mut out = Outlier::default();
    let Some(o) = o else { return out };
    if let Some(n) = o.consecutive_failures {
        out.consecutive_failures = n;
    }
    if let Some(d) = o.base_ejection {
        out.base_ejection = d;
    }
    if let Some(d) = o.max_ejection {
        out.max_ejection = d;
    }
    if let Some(n) = o.max_ejected_percent {
        if n > 100 {
            p.add(
                format!("{at}.outlier.max_ejected_percent"),
                format!("{n} is over 100"),
            );
        } else {
            out.max_ejected_percent = n;
        }
    }
    out
}

/// The group's `balance` and `hash_key`.
fn balance(g: &raw::Upstream, at: &str, p: &mut Problems) -> Option<Balance> {
    let method = g.balance.unwrap_or(raw::Method::PeakEwma);
    if method != raw::Method::Hash {
        if g.hash_key.is_some() {
            p.add(
                format!("{at}.hash_key"),
                "only applies with balance = \"hash\"",
            );
        }
        return Some(match method {
            raw::Method::RoundRobin => Balance::RoundRobin,
            raw::Method::LeastOutstanding => Balance::LeastOutstanding,
            _ => Balance::PeakEwma,
        });
    }
    let key = match g.hash_key.as_deref() {
        None | Some("client_ip") => HashKey::ClientIp,
        Some(k) => {
            if let Some(h) = k.strip_prefix("header:") {
                match HeaderName::from_bytes(h.as_bytes()) {
                    Ok(h) => HashKey::Header(h),
                    Err(_) => {
                        p.add(
                            format!("{at}.hash_key"),
                            format!("`{h}` is not a header name"),
                        );
                        return None;
                    }
                }
            } else if let Some(c) = k.strip_prefix("cookie:").filter(|c| !c.is_empty()) {
                HashKey::Cookie(c.to_string())
            } else {
                p.add(
                    format!("{at}.hash_key"),
                    format!("`{k}`: use client_ip, header:NAME or cookie:NAME"),
                );
                return None;
            }
        }
    };
    Some(Balance::Hash(key))
}

/// Parses `http://host:port`, `https://host:port`, `host:port` or `host`
/// (port 80, or 443 for https): the target, the authority as written, and
/// whether it is https. An IP literal is an address; anything else a DNS
/// name.
pub(super) fn parse_target(s: &str) -> Result<(Target, HeaderValue, bool), String> {
    let (rest, https) = if let Some(rest) = s.strip_prefix("http://") {
        (rest, false)
    } else if let Some(rest) = s.strip_prefix("https://") {
        (rest, true)
    } else if s.contains("://") {
        return Err(format!("`{s}`: only http:// and https:// upstreams exist"));
    } else {
        (s, false)
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains('/') {
        return Err(format!(
            "`{s}` must be host:port, without a path (routes carry the path)"
        ));
    }
    let authority =
        HeaderValue::from_str(rest).map_err(|_| format!("`{s}` is not a valid host"))?;
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !rest.ends_with(']') => {
            let port = p
                .parse::<u16>()
                .map_err(|_| format!("`{s}`: `{p}` is not a port"))?;
            (h, port)
        }
        _ => (rest, if https { 443 } else { 80 }),
    };
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = literal.parse::<IpAddr>() {
        if ip.is_ipv6() && literal == host {
            return Err(format!(
                "`{s}`: write IPv6 addresses in brackets, `[{host}]:port`"
            ));
        }
        return Ok((Target::Addr(SocketAddr::new(ip, port)), authority, https));
    }
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.split('.').enumerate().all(|(i, label)| {
            (!label.is_empty() || (i > 0 && host.ends_with('.')))
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err(format!(
            "`{s}`: `{host}` is neither an IP address nor a host name"
        ));
    }
    let host = host.to_ascii_lowercase();
    Ok((Target::Name { host, port }, authority, https))
}

/// A group's TLS: `Some(None)` for plain servers, `Some(Some(..))` for
/// `https://` ones; `None` after a problem. All servers of a group share
/// one scheme, and each needs a name for TLS.
fn upstream_tls(
    name: &str,
    g: &raw::Upstream,
    schemes: &[bool],
    servers: &[Server],
    base: &Path,
    p: &mut Problems,
) -> Option<Option<UpstreamTls>> {
    let at = format!("upstreams.{name}");
    let https = schemes.first().copied().unwrap_or(false);
    if schemes.iter().any(|&s| s != https) {
        p.add(
            format!("{at}.servers"),
            "mixes http:// and https:// servers; use one scheme per group",
        );
        return None;
    }
    let t = match (&g.tls, https) {
        (None, false) => return Some(None),
        (Some(_), false) => {
            p.add(
                format!("{at}.tls"),
                "TLS settings need https:// servers (write them https://host:port)",
            );
            return None;
        }
        (t, true) => t,
    };
    let before = p.len();
    let mut out = UpstreamTls::default();
    if let Some(t) = t {
        let path = |v: &Option<String>| v.as_ref().map(|v| base.join(v));
        out.ca_file = path(&t.ca_file);
        out.client_cert = path(&t.client_cert);
        out.client_key = path(&t.client_key);
        out.insecure_skip_verify = t.insecure_skip_verify_for_testing_only == Some(true);
        if out.insecure_skip_verify && out.ca_file.is_some() {
            p.add(
                format!("{at}.tls.ca_file"),
                "has no use with insecure_skip_verify_for_testing_only",
            );
        }
        match (&out.client_cert, &out.client_key) {
            (Some(_), None) => p.add(
                format!("{at}.tls.client_key"),
                "client_cert needs client_key",
            ),
            (None, Some(_)) => p.add(
                format!("{at}.tls.client_cert"),
                "client_key needs client_cert",
            ),
            _ => {}
        }
        if let Some(n) = &t.server_name {
            match ServerName::try_from(n.clone()) {
                Ok(n) => out.server_name = Some(n),
                Err(e) => p.add(format!("{at}.tls.server_name"), format!("`{n}`: {e}")),
            }
        }
    }
    if out.server_name.is_none() {
        for s in servers {
            if let Err(reason) = tls_name(s) {
                p.add(format!("{at}.servers"), reason);
            }
        }
    }
    if out.insecure_skip_verify {
        tracing::warn!(
            group = name,
            "insecure_skip_verify_for_testing_only: upstream certificates are NOT verified; \
             anyone on the path can read and change this group's traffic"
        );
    }
    (p.len() == before).then_some(Some(out))
}

/// The name a server is checked against when the group sets no
/// `server_name`: its host as written.
pub fn tls_name(s: &Server) -> Result<ServerName<'static>, String> {
    let authority = s.authority.to_str().unwrap_or_default();
    let host = &authority[..crate::router::strip_port(authority.as_bytes()).len()];
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| format!("`{host}` is no name for TLS ({e}); set tls.server_name"))
}
