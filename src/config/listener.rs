//! `[[listeners]]`: where clients connect, as pure data. The TLS settings
//! name certificate files; [`crate::downstream::tls`] reads them when a
//! config is put into service (and `tidegate check` does the same).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use super::raw;
use super::source::Problems;
use crate::message::admit::Underscores;
use crate::message::cidr::{Access, Cidr, Rule};
use crate::message::client_ip::RealIp;

/// HTTP/2 streams per connection unless configured (nginx and HAProxy
/// both default to 100 or 128).
pub const DEFAULT_MAX_STREAMS: u32 = 128;

/// One address to accept client connections on.
#[derive(Debug, Clone, Serialize)]
pub struct Listener {
    pub addr: SocketAddr,
    /// TLS termination, if configured.
    pub tls: Option<ListenerTls>,
    /// HTTP/2: offered in ALPN on TLS; taken with prior knowledge (h2c)
    /// on plain listeners.
    pub http2: bool,
    /// Concurrent streams per HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// `Strict-Transport-Security` added to responses (TLS listeners only).
    #[serde(serialize_with = "super::dump::opt_header_value")]
    pub hsts: Option<HeaderValue>,
    /// Plain listener that only redirects to HTTPS on this port.
    pub redirect_https: Option<u16>,
    /// Request fields whose names have underscores.
    pub underscores: Underscores,
    /// Concurrent connections; `None`: `limits.max_connections`, or the
    /// share of the open-files limit.
    pub max_connections: Option<usize>,
    /// Concurrent connections from one client address (IPv6: one /64).
    pub max_connections_per_ip: Option<u32>,
    /// Request IDs: given to every request, sent upstream and back.
    pub request_id: Option<RequestId>,
    /// `trusted_proxies` and `real_ip_header`; `None`: no proxy is
    /// trusted, the peer is the client.
    #[serde(serialize_with = "super::dump::opt_arc")]
    pub real_ip: Option<Arc<RealIp>>,
    /// `access` rules, checked first on every request; `None`: none.
    #[serde(serialize_with = "super::dump::opt_arc")]
    pub access: Option<Arc<Access>>,
    /// Responses compressed on the way out (`compress`), unless the
    /// route has its own.
    #[serde(serialize_with = "super::dump::opt_arc")]
    pub compress: Option<Arc<super::compress::Compress>>,
    /// Peers whose connections open with a PROXY protocol header, which
    /// then names the client; `None`: no header is read.
    #[serde(serialize_with = "super::dump::opt_arc")]
    pub proxy_protocol: Option<Arc<super::proxy_protocol::ProxyProtocol>>,
    /// A `[[streams]]` entry: its connections are proxied as bytes (L4),
    /// not served as HTTP.
    #[serde(serialize_with = "super::dump::opt_arc")]
    pub stream: Option<Arc<super::stream::Stream>>,
}

/// `request_id = { header = "x-request-id", trust_incoming = false }`, on
/// a listener or a route (whose own wins for the requests it takes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestId {
    /// The field that carries it, upstream and back to the client.
    #[serde(serialize_with = "super::dump::header_name")]
    pub header: HeaderName,
    /// Keep a valid ID the client sent (behind a trusted edge); else
    /// every request gets a new one.
    pub trust_incoming: bool,
}

impl Listener {
    pub fn plain(addr: SocketAddr) -> Listener {
        Listener {
            addr,
            tls: None,
            http2: true,
            max_concurrent_streams: DEFAULT_MAX_STREAMS,
            hsts: None,
            redirect_https: None,
            underscores: Underscores::default(),
            max_connections: None,
            max_connections_per_ip: None,
            request_id: None,
            real_ip: None,
            access: None,
            compress: None,
            proxy_protocol: None,
            stream: None,
        }
    }
}

/// Whether a client must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Handshakes without a valid client certificate fail.
    #[default]
    Required,
    /// A certificate is verified if sent; clients without one get in.
    Optional,
}

/// What a listener's TLS is made of. Paths are resolved against the
/// config file's directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerTls {
    /// `(certificate chain PEM, private key PEM)`; the first is the default.
    pub certificates: Vec<(PathBuf, PathBuf)>,
    /// Lowest protocol version accepted: TLS 1.2 or 1.3.
    pub min_tls13: bool,
    /// CA bundle that client certificates must chain to (mTLS).
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
    /// Where the verified client subject goes upstream.
    #[serde(serialize_with = "super::dump::header_name")]
    pub subject_header: HeaderName,
    /// Names whose certificates come from the `[acme]` CA (checked, lower
    /// case); they take precedence over `certificates` for those names
    /// once obtained.
    pub acme: Vec<String>,
}

/// A `request_id` table, of a listener or a route; on error, the field
/// (relative to the table's owner) and why.
pub(super) fn request_id(r: &raw::RequestId) -> Result<RequestId, (&'static str, String)> {
    let name = r.header.as_deref().unwrap_or("x-request-id");
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| ("request_id.header", format!("`{name}` is not a field name")))?;
    Ok(RequestId {
        header,
        trust_incoming: r.trust_incoming.unwrap_or(false),
    })
}

/// An `access` list (of a listener or a route); `None` when empty. On
/// error, the index of the bad rule and why.
pub(super) fn access(
    rules: Option<&[String]>,
) -> Result<Option<Arc<Access>>, Vec<(usize, String)>> {
    let rules = rules.unwrap_or_default();
    let mut bad = Vec::new();
    let parsed: Vec<Rule> = rules
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Rule::parse(r).map_err(|e| bad.push((i, e))).ok())
        .collect();
    match (bad.is_empty(), parsed.is_empty()) {
        (false, _) => Err(bad),
        (true, true) => Ok(None),
        (true, false) => Ok(Some(Arc::new(Access::new(parsed)))),
    }
}

/// `trusted_proxies` and `real_ip_header`; problems go to `p`.
fn real_ip(
    l: &raw::Listener,
    at: &dyn Fn(&str) -> String,
    p: &mut Problems,
) -> Option<Arc<RealIp>> {
    let blocks = l.trusted_proxies.as_deref().unwrap_or_default();
    let trusted = cidrs(blocks, &at("trusted_proxies"), p);
    if blocks.is_empty() {
        if l.real_ip_header.is_some() {
            p.add(
                at("real_ip_header"),
                "needs trusted_proxies: only a trusted proxy's word on the client is taken",
            );
        }
        return None;
    }
    Some(Arc::new(RealIp {
        trusted_proxies: trusted,
        header: l.real_ip_header.unwrap_or_default(),
    }))
}

/// A list of addresses or CIDR blocks (field `at`), those that parse;
/// each that does not is a problem at `at[i]`.
fn cidrs(list: &[String], at: &str, p: &mut Problems) -> Box<[Cidr]> {
    let mut out = Vec::with_capacity(list.len());
    for (i, c) in list.iter().enumerate() {
        match Cidr::parse(c) {
            Ok(c) => out.push(c),
            Err(reason) => p.add(format!("{at}[{i}]"), reason),
        }
    }
    out.into_boxed_slice()
}

/// What `[[listeners]]` and `[[streams]]` entries both have.
pub(super) struct Shared<'a> {
    pub(super) address: &'a str,
    pub(super) max_connections: Option<usize>,
    pub(super) max_connections_per_ip: Option<u32>,
    pub(super) access: Option<&'a [String]>,
    pub(super) proxy_protocol: Option<&'a raw::ProxyProtocol>,
}

impl Shared<'_> {
    /// A listener with these settings (the rest as
    /// [`Listener::plain`]); problems go to `p`, at the fields `at` names.
    pub(super) fn convert(&self, at: &dyn Fn(&str) -> String, p: &mut Problems) -> Listener {
        let addr = self
            .address
            .parse::<SocketAddr>()
            .map_err(|e| {
                p.add(
                    at("address"),
                    format!("`{}` is not an IP:port address ({e})", self.address),
                )
            })
            .ok();
        let mut out = Listener::plain(addr.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))));
        if self.max_connections == Some(0) {
            p.add(at("max_connections"), "must be at least 1");
        }
        out.max_connections = self.max_connections;
        if self.max_connections_per_ip == Some(0) {
            p.add(
                at("max_connections_per_ip"),
                "must be at least 1 (leave it out for no limit)",
            );
        }
        out.max_connections_per_ip = self.max_connections_per_ip;
        match access(self.access) {
            Ok(a) => out.access = a,
            Err(bad) => {
                for (j, reason) in bad {
                    p.add(at(&format!("access[{j}]")), reason);
                }
            }
        }
        if let Some(pp) = self.proxy_protocol {
            out.proxy_protocol = proxy_protocol(pp, &at("proxy_protocol"), p);
        }
        out
    }
}

/// Converts the `i`-th `[[listeners]]` entry; problems go to `p`.
pub(super) fn listener(
    l: &raw::Listener,
    i: usize,
    base: &Path,
    p: &mut Problems,
) -> Option<Listener> {
    let at = |f: &str| format!("listeners[{i}].{f}");
    let before = p.len();
    let shared = Shared {
        address: &l.address,
        max_connections: l.max_connections,
        max_connections_per_ip: l.max_connections_per_ip,
        access: l.access.as_deref(),
        proxy_protocol: l.proxy_protocol.as_ref(),
    };
    let mut out = shared.convert(&at, p);
    out.http2 = l.http2.unwrap_or(true);
    match l.max_concurrent_streams {
        Some(0) => p.add(at("max_concurrent_streams"), "must be at least 1"),
        Some(n) => out.max_concurrent_streams = n,
        None => {}
    }
    out.redirect_https = l.redirect_https;
    out.underscores = l.underscores_in_headers.unwrap_or_default();
    out.real_ip = real_ip(l, &at, p);
    if let Some(c) = &l.compress {
        match super::compress::compress(c, &at("compress")) {
            Ok(c) => out.compress = Some(Arc::new(c)),
            Err(bad) => bad.into_iter().for_each(|(f, r)| p.add(f, r)),
        }
    }
    if let Some(r) = &l.request_id {
        match request_id(r) {
            Ok(r) => out.request_id = Some(r),
            Err((field, reason)) => p.add(at(field), reason),
        }
    }
    if let Some(h) = &l.hsts {
        match HeaderValue::from_str(h) {
            Ok(v) => out.hsts = Some(v),
            Err(_) => p.add(at("hsts"), format!("`{h}` is not a valid header value")),
        }
    }
    match &l.tls {
        None if l.hsts.is_some() => p.add(
            at("hsts"),
            "HSTS is sent only over TLS: this listener has no [listeners.tls]",
        ),
        None => {}
        Some(t) => {
            if out.redirect_https.is_some() {
                p.add(
                    at("redirect_https"),
                    "a TLS listener cannot redirect to HTTPS; set it on a plain listener",
                );
            }
            out.tls = tls(t, &at, base, p);
        }
    }
    (p.len() == before).then_some(out)
}

pub(super) fn tls(
    t: &raw::ListenerTls,
    at: &dyn Fn(&str) -> String,
    base: &Path,
    p: &mut Problems,
) -> Option<ListenerTls> {
    let acme = super::acme::names(t.acme.as_deref().unwrap_or_default(), &at("tls.acme"), p);
    if t.certificates.is_empty() && t.acme.as_ref().is_none_or(Vec::is_empty) {
        p.add(
            at("tls.certificates"),
            "at least one { cert, key } pair is required (or names under `acme`)",
        );
    }
    let client_ca = t.client_ca.as_ref().map(|c| base.join(c));
    if client_ca.is_none() && (t.client_auth.is_some() || t.client_subject_header.is_some()) {
        p.add(
            at("tls.client_ca"),
            "client_auth and client_subject_header need client_ca",
        );
    }
    let subject_header = match &t.client_subject_header {
        None => HeaderName::from_static("x-client-subject"),
        Some(h) => match HeaderName::from_bytes(h.as_bytes()) {
            Ok(h) => h,
            Err(_) => {
                p.add(
                    at("tls.client_subject_header"),
                    format!("`{h}` is not a header name"),
                );
                return None;
            }
        },
    };
    Some(ListenerTls {
        certificates: t
            .certificates
            .iter()
            .map(|c| (base.join(&c.cert), base.join(&c.key)))
            .collect(),
        min_tls13: t.min_version == Some(raw::TlsVersion::Tls13),
        client_ca,
        client_auth: t.client_auth.unwrap_or_default(),
        subject_header,
        acme,
    })
}

/// `listeners[i].proxy_protocol`, checked; problems go to `p` under `at`.
pub(super) fn proxy_protocol(
    r: &raw::ProxyProtocol,
    at: &str,
    p: &mut Problems,
) -> Option<Arc<super::proxy_protocol::ProxyProtocol>> {
    let before = p.len();
    if r.from.is_empty() {
        p.add(
            format!("{at}.from"),
            "names no address: a PROXY header is believed only from the load balancers listed here",
        );
    }
    let from = cidrs(&r.from, &format!("{at}.from"), p);
    let timeout = r.timeout.unwrap_or(super::proxy_protocol::DEFAULT_TIMEOUT);
    if timeout > std::time::Duration::from_secs(60) {
        p.add(
            format!("{at}.timeout"),
            "at most 60s: the header comes with the connection's first bytes",
        );
    }
    (p.len() == before).then(|| {
        Arc::new(super::proxy_protocol::ProxyProtocol {
            from,
            mode: r.mode.unwrap_or_default(),
            timeout,
        })
    })
}
