//! The file's shape, exactly as serde reads it: closed choices are enums
//! and durations are `Duration`s already, so a misspelt value is reported
//! by serde with its line, as an unknown field is.
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::{ClientAuth, CpuAffinity, ErrorLogFormat, Protocol};

/// A duration written as humantime text (`"5s"`, `"250ms"`, `"1h 30m"`),
/// never zero. (`humantime-serde` does the same parse but its errors name
/// neither the value nor the format; this adds both in a few lines.)
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// A duration as the config writes them: more than zero.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration like `5s` or `250ms` ({e})"))?;
    if d.is_zero() {
        return Err(format!("`{text}` must be more than zero"));
    }
    Ok(d)
}

/// A group's `balance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    PeakEwma,
    RoundRobin,
    LeastOutstanding,
    Hash,
}

/// `"1.2"` or `"1.3"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub server: Option<Server>,
    #[serde(default)]
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub streams: Vec<Stream>,
    #[serde(default)]
    pub upstreams: HashMap<String, Upstream>,
    pub timeouts: Option<Timeouts>,
    pub limits: Option<Limits>,
    pub dns: Option<Dns>,
    pub admin: Option<Admin>,
    pub tracing: Option<Tracing>,
    pub acme: Option<Acme>,
    #[serde(default)]
    pub rate_limits: BTreeMap<String, RateLimit>,
    #[serde(default)]
    pub concurrency_limits: BTreeMap<String, ConcurrencyLimit>,
    #[serde(default)]
    pub caches: BTreeMap<String, Cache>,
}

/// `[caches.NAME]` (checked in `cache.rs`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cache {
    pub memory: Option<Size>,
    pub max_object: Option<Size>,
    pub key: Option<Vec<String>>,
    pub set_cookie: Option<SetCookie>,
    pub targeted: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub heuristic_max: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub lock_timeout: Option<Duration>,
    pub disk: Option<CacheDisk>,
}

/// A cache's `disk = { path, size }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheDisk {
    pub path: String,
    pub size: Size,
}

/// A size: bytes, or text with a unit (`"256MiB"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            Size::Bytes(n) => Ok(*n),
            Size::Text(t) => parse_size(t),
        }
    }
}

/// What becomes of a response with `Set-Cookie`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetCookie {
    /// Not stored (nginx's and Varnish's default: a cookie is usually
    /// one client's).
    #[default]
    NoStore,
    /// Stored without its `Set-Cookie` (the client that caused the fetch
    /// still gets it).
    Strip,
    /// Stored with it, as RFC 9111 allows.
    Keep,
}

/// A size as written: bytes, or a number with a unit (`"256MiB"`,
/// `"10GiB"`, `"512k"`, nginx's `"64m"`).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("`{text}` is not a size like `256MiB` or `10GiB`")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size like `256MiB` or `10GiB`"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// One value or a list of them (`key`, a route's `rate_limit`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn items(&self) -> &[String] {
        match self {
            OneOrMany::One(s) => std::slice::from_ref(s),
            OneOrMany::Many(v) => v,
        }
    }
}

/// `[rate_limits.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub key: Option<OneOrMany>,
    pub rate: String,
    pub burst: Option<u32>,
    /// `reject` or `delay` (checked in `rate_limit.rs`).
    pub mode: Option<String>,
    pub max_keys: Option<usize>,
    /// `local` or `redis` (checked in `rate_limit.rs`, as are the three
    /// below).
    pub backend: Option<String>,
    /// One URL (one server) or a list (Redis Cluster's seed nodes).
    pub redis: Option<OneOrMany>,
    pub on_error: Option<String>,
    pub timeout: Option<String>,
}

/// `[concurrency_limits.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyLimit {
    pub key: Option<OneOrMany>,
    pub max: u32,
    pub max_keys: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    pub otlp_endpoint: String,
    pub sample_ratio: Option<f64>,
    pub service_name: Option<String>,
    pub queue: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
}

/// How the CA checks that a name is ours; Tidegate answers both itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum AcmeChallenge {
    /// RFC 8737: a TLS handshake on port 443 with ALPN `acme-tls/1`,
    /// answered by the TLS listeners.
    #[default]
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// RFC 8555 §8.3: `GET /.well-known/acme-challenge/TOKEN` on port 80,
    /// answered by the plain HTTP listeners before any route.
    #[serde(rename = "http-01")]
    Http01,
}

/// `[acme]` (checked in `acme.rs`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acme {
    pub directory: Option<String>,
    pub contact: Option<Vec<String>>,
    pub storage: String,
    pub ca: Option<String>,
    pub challenge: Option<AcmeChallenge>,
    #[serde(default, deserialize_with = "duration")]
    pub lock_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub retry: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub address: String,
    pub token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub threads: Option<usize>,
    pub cpu_affinity: Option<CpuAffinity>,
    pub access_log: Option<String>,
    pub access_log_format: Option<String>,
    pub log_level: Option<String>,
    pub log_format: Option<ErrorLogFormat>,
    #[serde(default, deserialize_with = "duration")]
    pub shutdown_grace: Option<Duration>,
    pub user: Option<String>,
    pub group: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub address: String,
    pub tls: Option<ListenerTls>,
    pub http2: Option<bool>,
    pub max_concurrent_streams: Option<u32>,
    pub hsts: Option<String>,
    pub redirect_https: Option<u16>,
    pub underscores_in_headers: Option<crate::message::admit::Underscores>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<u32>,
    pub request_id: Option<RequestId>,
    pub trusted_proxies: Option<Vec<String>>,
    pub real_ip_header: Option<crate::message::client_ip::RealIpHeader>,
    pub access: Option<Vec<String>>,
    pub compress: Option<Compress>,
    pub proxy_protocol: Option<ProxyProtocol>,
}

/// A health check's `type` (`config::CheckKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckType {
    Http,
    Tcp,
}

/// A `[[streams]]` entry: an L4 (TCP) listener (checked in `stream.rs`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stream {
    pub address: String,
    pub upstream: Option<String>,
    pub sni: Option<Vec<SniRoute>>,
    pub tls: Option<ListenerTls>,
    pub alpn: Option<Vec<String>>,
    pub proxy_protocol: Option<ProxyProtocol>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<u32>,
    pub access: Option<Vec<String>>,
    #[serde(default, deserialize_with = "duration")]
    pub connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub idle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub preread_timeout: Option<Duration>,
}

/// One of a stream's `sni = [...]` routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniRoute {
    pub names: Vec<String>,
    pub alpn: Option<Vec<String>>,
    pub upstream: Option<String>,
    pub listener: Option<String>,
}

/// `proxy_protocol = { ... }` on a listener (checked in
/// `proxy_protocol.rs`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyProtocol {
    pub from: Vec<String>,
    pub mode: Option<super::proxy_protocol::Mode>,
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
}

/// `compress = { ... }` on a listener or a route (checked in
/// `compress.rs`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compress {
    pub algorithms: Option<Vec<String>>,
    pub min_size: Option<u64>,
    pub types: Option<Vec<String>>,
    pub gzip_level: Option<i64>,
    pub br_level: Option<i64>,
    pub zstd_level: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestId {
    pub header: Option<String>,
    pub trust_incoming: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    #[serde(default)]
    pub certificates: Vec<Certificate>,
    /// Names whose certificates come from the `[acme]` CA.
    pub acme: Option<Vec<String>>,
    pub min_version: Option<TlsVersion>,
    pub client_ca: Option<String>,
    pub client_auth: Option<ClientAuth>,
    pub client_subject_header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    pub path_regex: Option<String>,
    pub methods: Option<Vec<String>>,
    pub headers: Option<BTreeMap<String, String>>,
    pub upstream: Option<String>,
    pub redirect: Option<Redirect>,
    pub respond: Option<Respond>,
    /// `static = { root = ... }`: files served from a folder (checked in
    /// `static_files.rs`); with `upstream` too, what no file answers is
    /// proxied.
    #[serde(rename = "static")]
    pub static_files: Option<StaticFiles>,
    pub strip_prefix: Option<String>,
    pub rewrite: Option<Rewrite>,
    pub request_headers: Option<HeaderOps>,
    pub response_headers: Option<HeaderOps>,
    pub max_body_bytes: Option<u64>,
    pub upstream_host: Option<String>,
    pub timeouts: Option<RouteTimeouts>,
    pub request_id: Option<RequestId>,
    pub access: Option<Vec<String>>,
    pub rate_limit: Option<OneOrMany>,
    pub concurrency_limit: Option<OneOrMany>,
    pub basic_auth: Option<BasicAuth>,
    pub compress: Option<Compress>,
    pub forward_auth: Option<ForwardAuth>,
    pub jwt: Option<Jwt>,
    pub cache: Option<String>,
}

/// A route's `[routes.forward_auth]` (checked in `forward_auth.rs`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuth {
    pub upstream: String,
    pub path: Option<String>,
    pub request_headers: Option<Vec<String>>,
    pub response_headers: Option<Vec<String>>,
    pub user_header: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    pub on_error: Option<u16>,
}

/// A route's `[routes.jwt]` (`config/jwt.rs`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jwt {
    pub realm: Option<String>,
    pub issuers: Vec<String>,
    pub audiences: Vec<String>,
    pub algorithms: Vec<String>,
    pub jwks_file: Option<String>,
    pub jwks_url: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub jwks_refresh: Option<Duration>,
    /// A duration that may be zero: parsed in `config/jwt.rs`.
    pub clock_skew: Option<String>,
    pub claims_to_headers: Option<BTreeMap<String, String>>,
    pub forward_token: Option<bool>,
}

/// A route's `basic_auth = { realm, htpasswd, forward_authorization }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub realm: String,
    pub htpasswd: String,
    pub forward_authorization: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    pub status: Option<u16>,
    pub location: String,
}

/// A route's `static` table (checked in `static_files.rs`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticFiles {
    pub root: String,
    pub index: Option<Vec<String>>,
    pub fallback: Option<String>,
    pub symlinks: Option<String>,
    pub precompressed: Option<bool>,
    pub io: Option<String>,
    pub sendfile: Option<bool>,
    pub dotfiles: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Respond {
    pub status: Option<u16>,
    pub body: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    pub regex: String,
    pub replace: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderOps {
    pub add: Option<BTreeMap<String, String>>,
    pub set: Option<BTreeMap<String, String>>,
    pub remove: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTimeouts {
    #[serde(default, deserialize_with = "duration")]
    pub upstream_connect: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub upstream_response_head: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub servers: Vec<ServerEntry>,
    pub balance: Option<Method>,
    pub hash_key: Option<String>,
    pub health: Option<Health>,
    pub outlier: Option<Outlier>,
    pub retry: Option<Retry>,
    pub max_connections: Option<u32>,
    pub max_pending: Option<u32>,
    pub protocol: Option<Protocol>,
    /// For `https://` servers.
    pub tls: Option<UpstreamTls>,
    pub proxy_protocol: Option<super::proxy_protocol::Version>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    pub ca_file: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub server_name: Option<String>,
    pub insecure_skip_verify_for_testing_only: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    pub attempts: Option<u32>,
    pub budget_percent: Option<u32>,
    pub min_per_second: Option<u32>,
    pub max_body_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[serde(rename = "type")]
    pub kind: Option<CheckType>,
    pub method: Option<String>,
    pub path: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    pub expect: Option<Vec<u16>>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outlier {
    pub consecutive_failures: Option<u32>,
    #[serde(default, deserialize_with = "duration")]
    pub base_ejection: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub max_ejection: Option<Duration>,
    pub max_ejected_percent: Option<u32>,
}

/// `"host:port"` or `{ address = "host:port", weight = 3, backup = true }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ServerEntry {
    Address(String),
    Table {
        address: String,
        weight: Option<u32>,
        backup: Option<bool>,
    },
}

impl ServerEntry {
    pub fn address(&self) -> &str {
        match self {
            ServerEntry::Address(a) | ServerEntry::Table { address: a, .. } => a,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    #[serde(default, deserialize_with = "duration")]
    pub client_header: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub client_idle: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub upstream_connect: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub upstream_response_head: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub upstream_idle: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub tls_handshake: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub tunnel_idle: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_connections: Option<usize>,
    pub max_request_head_bytes: Option<usize>,
    pub max_body_bytes: Option<u64>,
    pub upstream_idle_per_server: Option<usize>,
    pub max_requests_per_connection: Option<u64>,
    pub http2_max_resets: Option<u32>,
    #[serde(default, deserialize_with = "duration")]
    pub http2_reset_window: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    pub resolvers: Option<Vec<String>>,
    #[serde(default, deserialize_with = "duration")]
    pub min_refresh: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub max_refresh: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
}
