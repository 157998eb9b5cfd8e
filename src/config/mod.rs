//! Configuration: the TOML file's raw shape, and the validated types the
//! proxy runs on.
//!
//! The file is read into `raw::*` structs (serde, `deny_unknown_fields`),
//! then converted into [`Config`], where every address is a `SocketAddr`,
//! every duration a `Duration` and every route points at its upstream group
//! by index. Nothing on the request path parses a string from the config.
//! Errors name the file, the field and the reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderValue;

pub mod raw;
mod route;

use route::compile_route;

/// A configuration error: which file, which field, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: {field}: {reason}")]
    Invalid {
        file: String,
        field: String,
        reason: String,
    },
}

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Off,
    Stdout,
    File(PathBuf),
}

impl AccessLogTarget {
    /// Parses `off`, `stdout` or a path.
    pub fn parse(s: &str) -> Self {
        match s {
            "off" | "" => AccessLogTarget::Off,
            "stdout" | "-" => AccessLogTarget::Stdout,
            path => AccessLogTarget::File(PathBuf::from(path)),
        }
    }
}

/// Every timeout the proxy enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// Time a client has to send a complete request head, counted from the
    /// connection's accept (first request) or from the first byte of a
    /// later request on a kept-alive connection.
    pub client_header: Duration,
    /// How long an idle kept-alive client connection is kept open.
    pub client_idle: Duration,
    /// Time to establish a TCP connection to an upstream server.
    pub upstream_connect: Duration,
    /// Time the upstream has to send a response head once the request
    /// (including its body) has been sent; a body still streaming resets it
    /// on every chunk, as nginx's `proxy_send_timeout` does.
    pub upstream_response_head: Duration,
    /// How long an idle pooled upstream connection is kept for reuse.
    pub upstream_idle: Duration,
    /// Time a client has to complete the TLS handshake.
    pub tls_handshake: Duration,
    /// An upgraded connection (WebSocket, ...) with no byte in either
    /// direction for this long is closed (HAProxy's `timeout tunnel`).
    pub tunnel_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            client_header: Duration::from_secs(30),
            client_idle: Duration::from_secs(60),
            upstream_connect: Duration::from_secs(5),
            upstream_response_head: Duration::from_secs(60),
            upstream_idle: Duration::from_secs(30),
            tls_handshake: Duration::from_secs(10),
            tunnel_idle: Duration::from_secs(3600),
        }
    }
}

/// Limits on what clients control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Concurrent client connections per listener (all threads), for
    /// listeners that set none; `None`: derived from the open-files limit
    /// at start (see [`crate::server::start`]).
    pub max_connections: Option<usize>,
    /// Largest request head (request line plus headers) in bytes; larger
    /// heads get 431.
    pub max_request_head_bytes: usize,
    /// Default request-body limit for routes that set none (`None`: no limit).
    pub max_body_bytes: Option<u64>,
    /// Idle upstream connections kept per server and per thread.
    pub upstream_idle_per_server: usize,
    /// Requests (HTTP/1.1) or streams (HTTP/2) one client connection may
    /// carry; the last one gets `Connection: close`, or the connection a
    /// graceful GOAWAY (nginx's `keepalive_requests`, 1000).
    pub max_requests_per_connection: u64,
    /// Requests a client may cancel (HTTP/2 `RST_STREAM` of a stream in
    /// progress, or one ended in error) per `http2_reset_window`; one more
    /// and the connection gets GOAWAY(ENHANCE_YOUR_CALM) and closes.
    pub http2_max_resets: u32,
    pub http2_reset_window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: None,
            max_request_head_bytes: 16 * 1024,
            max_body_bytes: None,
            upstream_idle_per_server: 1024,
            max_requests_per_connection: 1000,
            http2_max_resets: 200,
            http2_reset_window: Duration::from_secs(10),
        }
    }
}

/// One address to accept client connections on.
#[derive(Debug, Clone)]
pub struct Listener {
    pub addr: SocketAddr,
    /// TLS termination, if configured: certificates read at load.
    pub tls: Option<std::sync::Arc<crate::downstream::tls::ServerTls>>,
    /// HTTP/2: offered in ALPN on TLS; taken with prior knowledge (h2c)
    /// on plain listeners.
    pub http2: bool,
    /// Concurrent streams per HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// `Strict-Transport-Security` added to responses (TLS listeners only).
    pub hsts: Option<HeaderValue>,
    /// Plain listener that only redirects to HTTPS on this port.
    pub redirect_https: Option<u16>,
    /// Request fields whose names have underscores.
    pub underscores: crate::message::admit::Underscores,
    /// Concurrent connections; `None`: `limits.max_connections`, or the
    /// share of the open-files limit.
    pub max_connections: Option<usize>,
    /// Concurrent connections from one client address (IPv6: one /64).
    pub max_connections_per_ip: Option<u32>,
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
            underscores: crate::message::admit::Underscores::default(),
            max_connections: None,
            max_connections_per_ip: None,
        }
    }
}

/// HTTP/2 streams per connection unless configured (nginx and HAProxy
/// both default to 100 or 128).
pub const DEFAULT_MAX_STREAMS: u32 = 128;

pub use crate::router::{Route, UpstreamHost};

/// One upstream server.
#[derive(Debug, Clone)]
pub struct Server {
    pub addr: SocketAddr,
    /// `host:port` as written in the config, for `UpstreamHost::Server`.
    pub authority: HeaderValue,
    /// Relative share of requests (default 1).
    pub weight: u32,
    /// Shared by every thread; carried over by a reload.
    pub health: std::sync::Arc<crate::upstream::health::ServerHealth>,
    /// The group's per-server concurrency cap, if set.
    pub limit: Option<std::sync::Arc<crate::upstream::ServerLimit>>,
    /// Set for `https://` servers.
    pub tls: Option<crate::upstream::tls::ServerTls>,
    /// The group's HTTP version choice.
    pub protocol: crate::upstream::tls::Protocol,
    /// The DNS entry this address came from (`name:port` servers).
    pub dns: Option<std::sync::Arc<crate::upstream::dns::Origin>>,
}

/// A named group of servers and how it balances between them.
#[derive(Debug, Clone)]
pub struct UpstreamGroup {
    pub name: String,
    pub servers: Vec<Server>,
    pub balance: crate::upstream::balance::Method,
    /// Active checks, if configured.
    pub health: Option<crate::upstream::health::Check>,
    pub outlier: crate::upstream::health::Outlier,
    pub retry: Retry,
}

/// When a failed request goes again to another server of its group.
#[derive(Debug, Clone)]
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

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listeners: Vec<Listener>,
    pub routes: Vec<Route>,
    pub upstreams: Vec<UpstreamGroup>,
    pub timeouts: Timeouts,
    pub limits: Limits,
    /// Worker threads, each a single-threaded runtime with its own listener
    /// socket (SO_REUSEPORT) and upstream pool.
    pub threads: usize,
    /// Whether each worker thread is bound to a CPU of its own.
    pub cpu_affinity: CpuAffinity,
    pub access_log: AccessLogTarget,
    /// How long in-flight requests may run on after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    /// `tracing` filter for the process's own log (`info`, `warn`, ...).
    pub log_level: String,
    /// How servers given by name are resolved and refreshed.
    pub dns: crate::upstream::dns::Settings,
}

/// Binding worker threads to CPUs (nginx's `worker_cpu_affinity`,
/// HAProxy's `cpu-map`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuAffinity {
    /// The kernel places the threads (the default).
    #[default]
    Off,
    /// Worker `i` runs only on the `i`-th CPU the process may use (modulo
    /// their number): no migrations, and a thread keeps its caches.
    Auto,
}

impl std::str::FromStr for CpuAffinity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(CpuAffinity::Off),
            "auto" => Ok(CpuAffinity::Auto),
            other => Err(format!("`{other}` is neither \"off\" nor \"auto\"")),
        }
    }
}

/// Number of cores, the default thread count.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

impl Config {
    /// Quick mode: one listener, every path proxied round-robin to `upstreams`.
    pub fn quick(listen: &str, upstreams: &[String]) -> Result<Config, ConfigError> {
        let raw = raw::File {
            listeners: vec![raw::Listener {
                address: listen.to_string(),
                tls: None,
                http2: None,
                max_concurrent_streams: None,
                hsts: None,
                redirect_https: None,
                underscores_in_headers: None,
                max_connections: None,
                max_connections_per_ip: None,
            }],
            routes: vec![raw::Route {
                upstream: Some("default".into()),
                ..Default::default()
            }],
            upstreams: [(
                "default".to_string(),
                raw::Upstream {
                    servers: upstreams
                        .iter()
                        .map(|s| raw::ServerEntry::Address(s.clone()))
                        .collect(),
                    balance: Some("round_robin".into()),
                    hash_key: None,
                    health: None,
                    outlier: None,
                    retry: None,
                    max_connections: None,
                    max_pending: None,
                    protocol: None,
                    tls: None,
                },
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        Config::from_raw(raw, "command line", true)
    }

    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Config::from_toml(&text, &file)
    }

    /// Validates TOML text; `file` names it in errors.
    pub fn from_toml(text: &str, file: &str) -> Result<Config, ConfigError> {
        Config::parse(text, file, true)
    }

    /// As [`Config::from_toml`], but with no I/O: no server name is looked
    /// up (each one is an error) and no certificate is read (TLS settings
    /// are checked, not built): for the fuzz targets.
    pub(crate) fn from_toml_offline(text: &str, file: &str) -> Result<Config, ConfigError> {
        Config::parse(text, file, false)
    }

    fn parse(text: &str, file: &str, io: bool) -> Result<Config, ConfigError> {
        let raw: raw::File = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_string(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        Config::from_raw(raw, file, io)
    }

    /// `io`: look names up and read certificates (see
    /// [`Config::from_toml_offline`]).
    fn from_raw(raw: raw::File, file: &str, io: bool) -> Result<Config, ConfigError> {
        let invalid = |field: String, reason: String| ConfigError::Invalid {
            file: file.to_string(),
            field,
            reason,
        };

        if raw.listeners.is_empty() {
            return Err(invalid(
                "listeners".into(),
                "at least one [[listeners]] entry is required".into(),
            ));
        }
        let mut listeners = Vec::new();
        for (i, l) in raw.listeners.iter().enumerate() {
            let addr = l.address.parse::<SocketAddr>().map_err(|e| {
                invalid(
                    format!("listeners[{i}].address"),
                    format!("`{}` is not an IP:port address ({e})", l.address),
                )
            })?;
            listeners.push(listener(l, addr, i, file, io, &invalid)?);
        }

        let dns = dns_settings(raw.dns.as_ref())
            .map_err(|(f, reason)| invalid(format!("dns.{f}"), reason))?;
        let mut names: Vec<&String> = raw.upstreams.keys().collect();
        names.sort();
        // Every name any server gives, resolved together before the groups
        // are built (errors in the entries are reported below).
        let mut hosts: Vec<String> = raw
            .upstreams
            .values()
            .flat_map(|g| &g.servers)
            .filter_map(|s| match parse_target(s.address()) {
                Ok((Target::Name { host, .. }, _)) => Some(host),
                _ => None,
            })
            .collect();
        hosts.sort();
        hosts.dedup();
        let resolved = if hosts.is_empty() || !io {
            Default::default()
        } else {
            crate::upstream::dns::resolve_blocking(&dns, &hosts)
        };
        let mut upstreams = Vec::new();
        for name in &names {
            let group = &raw.upstreams[*name];
            if group.servers.is_empty() {
                return Err(invalid(
                    format!("upstreams.{name}.servers"),
                    "at least one server is required".into(),
                ));
            }
            let protocol = match group.protocol.as_deref() {
                None => crate::upstream::tls::Protocol::Auto,
                Some(p) => crate::upstream::tls::Protocol::parse(p).ok_or_else(|| {
                    invalid(
                        format!("upstreams.{name}.protocol"),
                        format!("`{p}`: use http1, h2 or auto (the default)"),
                    )
                })?,
            };
            let mut servers = Vec::new();
            let mut schemes = Vec::new();
            for (i, s) in group.servers.iter().enumerate() {
                let (address, weight) = match s {
                    raw::ServerEntry::Address(a) => (a, 1),
                    raw::ServerEntry::Table { address, weight } => (address, weight.unwrap_or(1)),
                };
                if weight == 0 || weight > 1000 {
                    return Err(invalid(
                        format!("upstreams.{name}.servers[{i}].weight"),
                        format!("{weight} is outside 1..=1000"),
                    ));
                }
                let (target, https) = parse_target(address)
                    .map_err(|reason| invalid(format!("upstreams.{name}.servers[{i}]"), reason))?;
                schemes.push(https);
                let limit = match group.max_connections {
                    Some(0) => {
                        return Err(invalid(
                            format!("upstreams.{name}.max_connections"),
                            "must be at least 1 (leave it out for no limit)".into(),
                        ))
                    }
                    Some(max) => Some((max, group.max_pending.unwrap_or(0))),
                    None => None,
                };
                let (addrs, authority, origin) = match target {
                    Target::Addr(addr, authority) => (vec![addr], authority, None),
                    Target::Name {
                        host,
                        port,
                        authority,
                    } => {
                        let (ips, expires) = match resolved.get(&host) {
                            Some(Ok(answer)) => answer.clone(),
                            Some(Err(e)) => {
                                return Err(invalid(
                                    format!("upstreams.{name}.servers[{i}]"),
                                    format!("`{address}` does not resolve: {e}"),
                                ))
                            }
                            None => {
                                return Err(invalid(
                                    format!("upstreams.{name}.servers[{i}]"),
                                    format!("`{address}` does not resolve"),
                                ))
                            }
                        };
                        let addrs = ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
                        let origin = crate::upstream::dns::Origin {
                            host,
                            port,
                            limit,
                            expires,
                        };
                        (addrs, authority, Some(std::sync::Arc::new(origin)))
                    }
                };
                for addr in addrs {
                    servers.push(Server {
                        addr,
                        authority: authority.clone(),
                        weight,
                        health: crate::upstream::health::ServerHealth::new(),
                        limit: limit
                            .map(|(max, pending)| crate::upstream::ServerLimit::new(max, pending)),
                        dns: origin.clone(),
                        tls: None,
                        protocol,
                    });
                }
            }
            upstream_tls(name, group, &schemes, &mut servers, file, io)
                .map_err(|(f, reason)| invalid(format!("upstreams.{name}.{f}"), reason))?;
            let balance = balance_method(group, &servers)
                .map_err(|(f, reason)| invalid(format!("upstreams.{name}.{f}"), reason))?;
            let health = match &group.health {
                None => None,
                Some(h) => Some(health_check(h).map_err(|(f, reason)| {
                    invalid(format!("upstreams.{name}.health.{f}"), reason)
                })?),
            };
            let outlier = outlier_policy(group.outlier.as_ref())
                .map_err(|(f, reason)| invalid(format!("upstreams.{name}.outlier.{f}"), reason))?;
            let mut retry = Retry::default();
            if let Some(r) = &group.retry {
                if let Some(n) = r.attempts {
                    if !(1..=10).contains(&n) {
                        return Err(invalid(
                            format!("upstreams.{name}.retry.attempts"),
                            format!("{n} is outside 1..=10"),
                        ));
                    }
                    retry.attempts = n;
                }
                if let Some(p) = r.budget_percent {
                    retry.budget_percent = p;
                }
                if let Some(n) = r.min_per_second {
                    retry.min_per_second = n;
                }
                if let Some(n) = r.max_body_bytes {
                    retry.max_body_bytes = n;
                }
            }
            upstreams.push(UpstreamGroup {
                name: (*name).clone(),
                servers,
                balance,
                health,
                outlier,
                retry,
            });
        }

        let r = raw.server.unwrap_or_default();
        let limits_raw = raw.limits.unwrap_or_default();
        let mut limits = Limits::default();
        if let Some(n) = limits_raw.max_connections {
            if n == 0 {
                return Err(invalid(
                    "limits.max_connections".into(),
                    "must be at least 1".into(),
                ));
            }
            limits.max_connections = Some(n);
        }
        if let Some(n) = limits_raw.max_request_head_bytes {
            if !(1024..=1024 * 1024).contains(&n) {
                return Err(invalid(
                    "limits.max_request_head_bytes".into(),
                    format!("{n} is outside 1024..=1048576"),
                ));
            }
            limits.max_request_head_bytes = n;
        }
        limits.max_body_bytes = limits_raw.max_body_bytes;
        if let Some(n) = limits_raw.upstream_idle_per_server {
            limits.upstream_idle_per_server = n;
        }
        if let Some(n) = limits_raw.max_requests_per_connection {
            if n == 0 {
                return Err(invalid(
                    "limits.max_requests_per_connection".into(),
                    "must be at least 1".into(),
                ));
            }
            limits.max_requests_per_connection = n;
        }
        if let Some(n) = limits_raw.http2_max_resets {
            limits.http2_max_resets = n;
        }
        if let Some(v) = &limits_raw.http2_reset_window {
            limits.http2_reset_window = parse_duration(v)
                .map_err(|reason| invalid("limits.http2_reset_window".into(), reason))?;
        }

        if raw.routes.is_empty() {
            return Err(invalid(
                "routes".into(),
                "at least one [[routes]] entry is required".into(),
            ));
        }
        let t = raw.timeouts.unwrap_or_default();
        let mut timeouts = Timeouts::default();
        let fields: [(&str, &Option<String>, &mut Duration); 7] = [
            (
                "client_header",
                &t.client_header,
                &mut timeouts.client_header,
            ),
            ("client_idle", &t.client_idle, &mut timeouts.client_idle),
            (
                "upstream_connect",
                &t.upstream_connect,
                &mut timeouts.upstream_connect,
            ),
            (
                "upstream_response_head",
                &t.upstream_response_head,
                &mut timeouts.upstream_response_head,
            ),
            (
                "upstream_idle",
                &t.upstream_idle,
                &mut timeouts.upstream_idle,
            ),
            (
                "tls_handshake",
                &t.tls_handshake,
                &mut timeouts.tls_handshake,
            ),
            ("tunnel_idle", &t.tunnel_idle, &mut timeouts.tunnel_idle),
        ];
        for (name, value, slot) in fields {
            if let Some(v) = value {
                *slot = parse_duration(v)
                    .map_err(|reason| invalid(format!("timeouts.{name}"), reason))?;
            }
        }

        let mut routes = Vec::new();
        for (i, rt) in raw.routes.iter().enumerate() {
            let route = compile_route(rt, &upstreams, &timeouts, &limits)
                .map_err(|(field, reason)| invalid(format!("routes[{i}].{field}"), reason))?;
            routes.push(route);
        }

        let threads = match r.threads {
            None | Some(0) => default_threads(),
            Some(n) if n > 1024 => {
                return Err(invalid(
                    "server.threads".into(),
                    format!("{n} is more than 1024"),
                ))
            }
            Some(n) => n,
        };
        let cpu_affinity = match &r.cpu_affinity {
            None => CpuAffinity::Off,
            Some(v) => v
                .parse()
                .map_err(|reason| invalid("server.cpu_affinity".into(), reason))?,
        };
        let shutdown_grace = match &r.shutdown_grace {
            None => Duration::from_secs(30),
            Some(v) => parse_duration(v)
                .map_err(|reason| invalid("server.shutdown_grace".into(), reason))?,
        };
        let log_level = r.log_level.unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            return Err(invalid(
                "server.log_level".into(),
                format!("`{log_level}` is not a log filter (try error, warn, info, debug)"),
            ));
        }

        Ok(Config {
            listeners,
            routes,
            upstreams,
            timeouts,
            limits,
            threads,
            cpu_affinity,
            access_log: AccessLogTarget::parse(r.access_log.as_deref().unwrap_or("off")),
            shutdown_grace,
            log_level,
            dns,
        })
    }
}

type FieldError = (String, String);

fn field(name: &str, reason: impl Into<String>) -> FieldError {
    (name.to_string(), reason.into())
}

pub(crate) fn parse_duration(v: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(v)
        .map_err(|e| format!("`{v}` is not a duration like `5s` or `250ms` ({e})"))?;
    if d.is_zero() {
        return Err(format!("`{v}` must be more than zero"));
    }
    Ok(d)
}

/// A server entry: an address, or a name to resolve.
enum Target {
    Addr(SocketAddr, HeaderValue),
    Name {
        /// Lowercase.
        host: String,
        port: u16,
        authority: HeaderValue,
    },
}

/// Parses `http://host:port`, `https://host:port`, `host:port` or `host`
/// (port 80, or 443 for https). An IP literal is an address; anything else
/// a DNS name. Also says whether it is https.
fn parse_target(s: &str) -> Result<(Target, bool), String> {
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
    if let Ok(ip) = literal.parse::<std::net::IpAddr>() {
        if ip.is_ipv6() && literal == host {
            return Err(format!(
                "`{s}`: write IPv6 addresses in brackets, `[{host}]:port`"
            ));
        }
        return Ok((Target::Addr(SocketAddr::new(ip, port), authority), https));
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
    Ok((
        Target::Name {
            host: host.to_ascii_lowercase(),
            port,
            authority,
        },
        https,
    ))
}

/// A group's TLS: one client config for its `https://` servers, each with
/// its name for SNI (`server_name`, or the host the server was written
/// with). All servers of a group share one scheme.
fn upstream_tls(
    name: &str,
    group: &raw::Upstream,
    schemes: &[bool],
    servers: &mut [Server],
    file: &str,
    io: bool,
) -> Result<(), FieldError> {
    // Paths are relative to the config file's directory.
    let base = Path::new(file).parent().unwrap_or(Path::new(""));
    let path = |p: &Option<String>| p.as_ref().map(|p| base.join(p).display().to_string());
    let https = schemes.first().copied().unwrap_or(false);
    if schemes.iter().any(|&s| s != https) {
        return Err(field(
            "servers",
            "mixes http:// and https:// servers; use one scheme per group",
        ));
    }
    let raw_tls = match (&group.tls, https) {
        (None, false) => return Ok(()),
        (Some(_), false) => {
            return Err(field(
                "tls",
                "TLS settings need https:// servers (write them https://host:port)",
            ))
        }
        (t, true) => t,
    };
    let mut opts = crate::upstream::tls::Options::default();
    let mut server_name = None;
    if let Some(t) = raw_tls {
        opts.ca_file = path(&t.ca_file);
        opts.client_cert = path(&t.client_cert);
        opts.client_key = path(&t.client_key);
        opts.insecure_skip_verify = t.insecure_skip_verify_for_testing_only == Some(true);
        if opts.insecure_skip_verify && opts.ca_file.is_some() {
            return Err(field(
                "tls.ca_file",
                "has no use with insecure_skip_verify_for_testing_only",
            ));
        }
        if let Some(n) = &t.server_name {
            server_name = Some(
                rustls::pki_types::ServerName::try_from(n.clone())
                    .map_err(|e| field("tls.server_name", format!("`{n}`: {e}")))?,
            );
        }
    }
    if opts.insecure_skip_verify {
        tracing::warn!(
            group = name,
            "insecure_skip_verify_for_testing_only: upstream certificates are NOT verified; \
             anyone on the path can read and change this group's traffic"
        );
    }
    if !io {
        return Ok(());
    }
    let config = crate::upstream::tls::client_config(&opts, servers[0].protocol)
        .map_err(|(f, reason)| (format!("tls.{f}").trim_end_matches('.').to_string(), reason))?;
    let http1_config = if servers[0].protocol == crate::upstream::tls::Protocol::Http1 {
        config.clone()
    } else {
        let mut c = (*config).clone();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        std::sync::Arc::new(c)
    };
    for s in servers {
        let name = match &server_name {
            Some(n) => n.clone(),
            None => {
                let authority = s.authority.to_str().unwrap_or_default();
                let host = &authority[..crate::router::strip_port(authority.as_bytes()).len()];
                let host = host.trim_start_matches('[').trim_end_matches(']');
                rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| {
                    field(
                        "servers",
                        format!("`{host}` is no name for TLS ({e}); set tls.server_name"),
                    )
                })?
            }
        };
        s.tls = Some(crate::upstream::tls::ServerTls {
            config: config.clone(),
            http1_config: http1_config.clone(),
            name,
        });
    }
    Ok(())
}

fn dns_settings(d: Option<&raw::Dns>) -> Result<crate::upstream::dns::Settings, FieldError> {
    let mut s = crate::upstream::dns::Settings::default();
    let Some(d) = d else { return Ok(s) };
    for (i, r) in d.resolvers.iter().flatten().enumerate() {
        let addr = r
            .parse::<SocketAddr>()
            .or_else(|_| {
                r.parse::<std::net::IpAddr>()
                    .map(|ip| SocketAddr::new(ip, 53))
            })
            .map_err(|_| {
                field(
                    &format!("resolvers[{i}]"),
                    format!("`{r}` is not an IP address or IP:port"),
                )
            })?;
        s.resolvers.push(addr);
    }
    let fields: [(&str, &Option<String>, &mut Duration); 3] = [
        ("min_refresh", &d.min_refresh, &mut s.min_refresh),
        ("max_refresh", &d.max_refresh, &mut s.max_refresh),
        ("timeout", &d.timeout, &mut s.timeout),
    ];
    for (name, value, slot) in fields {
        if let Some(v) = value {
            *slot = parse_duration(v).map_err(|e| field(name, e))?;
        }
    }
    if s.min_refresh > s.max_refresh {
        return Err(field(
            "min_refresh",
            format!(
                "{:?} is more than max_refresh ({:?})",
                s.min_refresh, s.max_refresh
            ),
        ));
    }
    Ok(s)
}

fn health_check(h: &raw::Health) -> Result<crate::upstream::health::Check, FieldError> {
    let path = h.path.clone().unwrap_or_else(|| "/".into());
    if !path.starts_with('/') {
        return Err(field("path", format!("`{path}` must start with `/`")));
    }
    let duration = |name: &str, v: &Option<String>, default: u64| match v {
        None => Ok(Duration::from_secs(default)),
        Some(v) => parse_duration(v).map_err(|e| field(name, e)),
    };
    let mut expect = Vec::new();
    for code in h.expect.clone().unwrap_or_else(|| vec![200]) {
        expect.push(
            http::StatusCode::from_u16(code)
                .map_err(|_| field("expect", format!("{code} is not a status")))?,
        );
    }
    let threshold = |name: &str, v: Option<u32>, default: u32| match v.unwrap_or(default) {
        0 => Err(field(name, "must be at least 1")),
        n => Ok(n),
    };
    Ok(crate::upstream::health::Check {
        method: http::Method::from_bytes(h.method.as_deref().unwrap_or("GET").as_bytes())
            .map_err(|_| field("method", "not an HTTP method"))?,
        path: http::uri::PathAndQuery::from_maybe_shared(path.clone())
            .map_err(|_| field("path", format!("`{path}` is not a valid path")))?,
        interval: duration("interval", &h.interval, 5)?,
        timeout: duration("timeout", &h.timeout, 2)?,
        expect,
        healthy_threshold: threshold("healthy_threshold", h.healthy_threshold, 2)?,
        unhealthy_threshold: threshold("unhealthy_threshold", h.unhealthy_threshold, 3)?,
    })
}

fn outlier_policy(
    o: Option<&raw::Outlier>,
) -> Result<crate::upstream::health::Outlier, FieldError> {
    let mut p = crate::upstream::health::Outlier::default();
    let Some(o) = o else { return Ok(p) };
    if let Some(n) = o.consecutive_failures {
        p.consecutive_failures = n;
    }
    if let Some(v) = &o.base_ejection {
        p.base_ejection = parse_duration(v).map_err(|e| field("base_ejection", e))?;
    }
    if let Some(v) = &o.max_ejection {
        p.max_ejection = parse_duration(v).map_err(|e| field("max_ejection", e))?;
    }
    if let Some(n) = o.max_ejected_percent {
        if n > 100 {
            return Err(field("max_ejected_percent", format!("{n} is over 100")));
        }
        p.max_ejected_percent = n;
    }
    Ok(p)
}

/// The group's `balance` and `hash_key`.
fn balance_method(
    group: &raw::Upstream,
    servers: &[Server],
) -> Result<crate::upstream::balance::Method, FieldError> {
    use crate::upstream::balance::{HashKey, Method, Ring};
    let method = match group.balance.as_deref() {
        None | Some("peak_ewma") => Method::PeakEwma,
        Some("round_robin") => Method::RoundRobin,
        Some("least_outstanding") => Method::LeastOutstanding,
        Some("hash") => {
            let key = match group.hash_key.as_deref() {
                None | Some("client_ip") => HashKey::ClientIp,
                Some(k) => {
                    if let Some(h) = k.strip_prefix("header:") {
                        HashKey::Header(http::HeaderName::from_bytes(h.as_bytes()).map_err(
                            |_| field("hash_key", format!("`{h}` is not a header name")),
                        )?)
                    } else if let Some(c) = k.strip_prefix("cookie:").filter(|c| !c.is_empty()) {
                        HashKey::Cookie(c.to_string())
                    } else {
                        return Err(field(
                            "hash_key",
                            format!("`{k}`: use client_ip, header:NAME or cookie:NAME"),
                        ));
                    }
                }
            };
            let points: Vec<(SocketAddr, u32)> =
                servers.iter().map(|s| (s.addr, s.weight)).collect();
            Method::Hash(key, std::sync::Arc::new(Ring::new(&points)))
        }
        Some(other) => {
            return Err(field(
                "balance",
                format!(
                    "`{other}`: use peak_ewma (the default), round_robin, least_outstanding or hash"
                ),
            ))
        }
    };
    if group.hash_key.is_some() && !matches!(method, Method::Hash(..)) {
        return Err(field("hash_key", "only applies with balance = \"hash\""));
    }
    Ok(method)
}

/// Validates one `[[listeners]]` entry (its address already parsed).
fn listener(
    l: &raw::Listener,
    addr: SocketAddr,
    i: usize,
    file: &str,
    io: bool,
    invalid: &dyn Fn(String, String) -> ConfigError,
) -> Result<Listener, ConfigError> {
    let field = |f: &str| format!("listeners[{i}].{f}");
    let mut out = Listener::plain(addr);
    out.http2 = l.http2.unwrap_or(true);
    if let Some(n) = l.max_concurrent_streams {
        if n == 0 {
            return Err(invalid(
                field("max_concurrent_streams"),
                "must be at least 1".into(),
            ));
        }
        out.max_concurrent_streams = n;
    }
    out.redirect_https = l.redirect_https;
    out.underscores = l.underscores_in_headers.unwrap_or_default();
    if l.max_connections == Some(0) {
        return Err(invalid(
            field("max_connections"),
            "must be at least 1".into(),
        ));
    }
    out.max_connections = l.max_connections;
    if l.max_connections_per_ip == Some(0) {
        return Err(invalid(
            field("max_connections_per_ip"),
            "must be at least 1 (leave it out for no limit)".into(),
        ));
    }
    out.max_connections_per_ip = l.max_connections_per_ip;
    if let Some(h) = &l.hsts {
        out.hsts =
            Some(HeaderValue::from_str(h).map_err(|_| {
                invalid(field("hsts"), format!("`{h}` is not a valid header value"))
            })?);
    }
    let Some(t) = &l.tls else {
        if out.hsts.is_some() {
            return Err(invalid(
                field("hsts"),
                "HSTS is sent only over TLS: this listener has no [listeners.tls]".into(),
            ));
        }
        return Ok(out);
    };
    if out.redirect_https.is_some() {
        return Err(invalid(
            field("redirect_https"),
            "a TLS listener cannot redirect to HTTPS; set it on a plain listener".into(),
        ));
    }
    if t.certificates.is_empty() {
        return Err(invalid(
            field("tls.certificates"),
            "at least one { cert, key } pair is required".into(),
        ));
    }
    // Paths are relative to the config file's directory.
    let base = Path::new(file).parent().unwrap_or(Path::new(""));
    let paths: Vec<(PathBuf, PathBuf)> = t
        .certificates
        .iter()
        .map(|c| (base.join(&c.cert), base.join(&c.key)))
        .collect();
    let min_tls13 = match t.min_version.as_deref() {
        None | Some("1.2") => false,
        Some("1.3") => true,
        Some(v) => {
            return Err(invalid(
                field("tls.min_version"),
                format!("`{v}`: expected \"1.2\" or \"1.3\""),
            ))
        }
    };
    let client_ca = t.client_ca.as_ref().map(|p| base.join(p));
    let client_auth = match t.client_auth.as_deref() {
        None | Some("required") => crate::downstream::tls::ClientAuth::Required,
        Some("optional") => crate::downstream::tls::ClientAuth::Optional,
        Some(v) => {
            return Err(invalid(
                field("tls.client_auth"),
                format!("`{v}`: expected \"required\" or \"optional\""),
            ))
        }
    };
    if client_ca.is_none() && (t.client_auth.is_some() || t.client_subject_header.is_some()) {
        return Err(invalid(
            field("tls.client_ca"),
            "client_auth and client_subject_header need client_ca".into(),
        ));
    }
    let subject_header = match &t.client_subject_header {
        None => http::HeaderName::from_static("x-client-subject"),
        Some(h) => http::HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
            invalid(
                field("tls.client_subject_header"),
                format!("`{h}` is not a header name"),
            )
        })?,
    };
    let settings = crate::downstream::tls::Settings {
        certificates: paths
            .iter()
            .map(|(c, k)| (c.as_path(), k.as_path()))
            .collect(),
        min_tls13,
        client_ca: client_ca.as_deref(),
        client_auth,
        subject_header,
        http2: out.http2,
    };
    if !io {
        return Ok(out);
    }
    let tls = crate::downstream::tls::ServerTls::build(&settings)
        .map_err(|e| invalid(field("tls"), e.to_string()))?;
    out.tls = Some(std::sync::Arc::new(tls));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route_error(route: &str) -> String {
        let text = format!(
            "[[listeners]]\naddress = \"127.0.0.1:1\"\n[upstreams.app]\nservers = [\"127.0.0.1:2\"]\n[[routes]]\n{route}\n"
        );
        match Config::from_toml(&text, "t.toml") {
            Ok(_) => panic!("accepted: {route}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn quick_mode_is_round_robin_over_its_upstreams() {
        let c = Config::quick(
            "127.0.0.1:0",
            &["http://127.0.0.1:1".into(), "127.0.0.1:2".into()],
        )
        .unwrap();
        assert_eq!(c.upstreams[0].servers.len(), 2);
        assert!(matches!(
            c.upstreams[0].balance,
            crate::upstream::balance::Method::RoundRobin
        ));
    }

    #[test]
    fn tunnel_idle_default_setting_and_error() {
        let base = "[[listeners]]\naddress = \"127.0.0.1:1\"\n[upstreams.app]\nservers = [\"127.0.0.1:2\"]\n[[routes]]\nupstream = \"app\"\n";
        let c = Config::from_toml(base, "t.toml").unwrap();
        assert_eq!(c.timeouts.tunnel_idle, Duration::from_secs(3600));
        let c = Config::from_toml(
            &format!("{base}[timeouts]\ntunnel_idle = \"90s\"\n"),
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.timeouts.tunnel_idle, Duration::from_secs(90));
        let err = Config::from_toml(
            &format!("{base}[timeouts]\ntunnel_idle = \"later\"\n"),
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("timeouts.tunnel_idle"), "{err}");
    }

    #[test]
    fn https_servers_default_to_port_443_and_their_host_as_tls_name() {
        let text = "[[listeners]]\naddress = \"127.0.0.1:1\"\n[upstreams.app]\n\
                    servers = [\"https://localhost\"]\n[upstreams.app.tls]\n\
                    insecure_skip_verify_for_testing_only = true\n[[routes]]\nupstream = \"app\"\n";
        let c = Config::from_toml(text, "t.toml").unwrap();
        let s = &c.upstreams[0].servers[0];
        assert_eq!(s.addr.port(), 443);
        let tls = s.tls.as_ref().unwrap();
        assert_eq!(tls.name.to_str(), "localhost");
        assert_eq!(s.protocol, crate::upstream::tls::Protocol::Auto);
    }

    #[test]
    fn dns_section_and_server_names() {
        let base = "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[routes]]\nupstream = \"app\"\n";
        let err = |text: &str| match Config::from_toml(&format!("{base}{text}"), "t.toml") {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        };
        let app = "[upstreams.app]\nservers = [\"127.0.0.1:2\"]\n";
        let cases = [
            (
                "[dns]\nmin_refresh = \"10m\"",
                "dns.min_refresh: 600s is more than max_refresh",
            ),
            (
                "[dns]\nresolvers = [\"dns.example\"]",
                "dns.resolvers[0]: `dns.example`",
            ),
            ("[dns]\ntimeout = \"0s\"", "dns.timeout"),
            ("[dns]\nrefresh = \"1s\"", "unknown field"),
        ];
        for (text, want) in cases {
            let e = err(&format!("{app}{text}"));
            assert!(e.contains(want), "{text}: {e}");
        }
        let e = err("[upstreams.app]\nservers = [\"bad host!:80\"]");
        assert!(
            e.contains("upstreams.app.servers[0]: `bad host!:80`: `bad host!` is neither"),
            "{e}"
        );
        let e = err("[upstreams.app]\nservers = [\"::1:80\"]");
        assert!(e.contains("write IPv6 addresses in brackets"), "{e}");
        let e = err("[upstreams.app]\nservers = [\"app.test:http\"]");
        assert!(e.contains("`http` is not a port"), "{e}");

        let c = Config::from_toml(
            &format!("{base}[upstreams.app]\nservers = [\"[::1]:8080\", \"127.0.0.1\"]\n[dns]\nresolvers = [\"127.0.0.1:5353\", \"::1\"]\nmin_refresh = \"5s\"\n"),
            "t.toml",
        )
        .expect("valid");
        let addrs: Vec<String> = c.upstreams[0]
            .servers
            .iter()
            .map(|s| s.addr.to_string())
            .collect();
        assert_eq!(addrs, ["[::1]:8080", "127.0.0.1:80"]);
        assert!(c.upstreams[0].servers.iter().all(|s| s.dns.is_none()));
        assert_eq!(c.dns.resolvers.len(), 2);
        assert_eq!(c.dns.resolvers[1].port(), 53);
        assert_eq!(c.dns.min_refresh, Duration::from_secs(5));
        assert_eq!(c.dns.max_refresh, Duration::from_secs(300));
    }

    #[test]
    fn route_errors_name_field_and_reason() {
        let cases = [
            ("upstream = \"app\"\nrespond = { status = 200 }", "routes[0].upstream: give only one"),
            ("path = \"/a\"", "routes[0].upstream: a route needs one action"),
            ("host = \"www.*.com\"\nupstream = \"app\"", "routes[0].host: `www.*.com`"),
            ("host = \"*example.com\"\nupstream = \"app\"", "routes[0].host: `*example.com`"),
            ("path = \"/a\"\npath_prefix = \"/b\"\nupstream = \"app\"", "routes[0].path: give at most one"),
            ("path_regex = \"(\"\nupstream = \"app\"", "routes[0].path_regex: `(`"),
            ("redirect = { status = 200, location = \"/\" }", "routes[0].redirect.status: 200"),
            ("redirect = { location = \"{nope}\" }", "routes[0].redirect.location"),
            ("respond = { status = 99 }", "routes[0].respond.status: 99"),
            ("respond = {}\nstrip_prefix = \"/a\"", "routes[0].strip_prefix: only applies"),
            ("upstream = \"app\"\nstrip_prefix = \"/a\"\nrewrite = { regex = \"a\", replace = \"/b\" }", "routes[0].rewrite: give either"),
            ("upstream = \"app\"\nmethods = [\"G ET\"]", "routes[0].methods: `G ET`"),
            ("upstream = \"app\"\nheaders = { \"bad name\" = \"1\" }", "routes[0].headers: `bad name`"),
            ("upstream = \"app\"\ntimeouts = { upstream_connect = \"soon\" }", "routes[0].timeouts.upstream_connect"),
        ];
        for (route, want) in cases {
            let err = route_error(route);
            assert!(err.starts_with("t.toml: "), "{err}");
            assert!(err.contains(want), "{route}: {err}");
        }
    }
}
