//! Configuration: the TOML file's raw shape, and the validated types the
//! proxy runs on.
//!
//! The file is read into `raw::*` structs (serde, `deny_unknown_fields`),
//! then converted into [`Config`], where every address is a `SocketAddr`,
//! every duration a `Duration` and every route points at its upstream group
//! by index. Nothing on the request path parses a string from the config.
//! Errors name the file, the field and the reason.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderValue;

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
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            client_header: Duration::from_secs(30),
            client_idle: Duration::from_secs(60),
            upstream_connect: Duration::from_secs(5),
            upstream_response_head: Duration::from_secs(60),
            upstream_idle: Duration::from_secs(30),
        }
    }
}

/// Limits on what clients control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Concurrent client connections, across all listeners and threads.
    /// Past it, new connections wait in the kernel's accept backlog.
    pub max_connections: usize,
    /// Largest request head (request line plus headers) in bytes; larger
    /// heads get 431.
    pub max_request_head_bytes: usize,
    /// Default request-body limit for routes that set none (`None`: no limit).
    pub max_body_bytes: Option<u64>,
    /// Idle upstream connections kept per server and per thread.
    pub upstream_idle_per_server: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_request_head_bytes: 16 * 1024,
            max_body_bytes: None,
            upstream_idle_per_server: 1024,
        }
    }
}

/// One address to accept client connections on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
}

/// Which `Host` header the upstream receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamHost {
    /// The client's `Host`, unchanged (the default, as nginx's `$host`).
    Client,
    /// The chosen upstream server's `host:port`.
    Server,
    /// A fixed value.
    Fixed(HeaderValue),
}

/// A validated route: which requests it takes and where they go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Lower-cased host to match exactly (port ignored); `None` matches any.
    pub host: Option<String>,
    /// Path prefix that the request path must start with.
    pub path_prefix: String,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// Request-body limit for this route.
    pub max_body_bytes: Option<u64>,
    pub upstream_host: UpstreamHost,
}

/// One upstream server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub addr: SocketAddr,
    /// `host:port` as written in the config, for `UpstreamHost::Server`.
    pub authority: HeaderValue,
}

/// A named group of servers, balanced round-robin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamGroup {
    pub name: String,
    pub servers: Vec<Server>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listeners: Vec<Listener>,
    pub routes: Vec<Route>,
    pub upstreams: Vec<UpstreamGroup>,
    pub timeouts: Timeouts,
    pub limits: Limits,
    /// Worker threads, each a single-threaded runtime with its own listener
    /// socket (SO_REUSEPORT) and upstream pool.
    pub threads: usize,
    pub access_log: AccessLogTarget,
    /// How long in-flight requests may run on after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    /// `tracing` filter for the process's own log (`info`, `warn`, ...).
    pub log_level: String,
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
            }],
            routes: vec![raw::Route {
                host: None,
                path_prefix: None,
                upstream: "default".into(),
                max_body_bytes: None,
                upstream_host: None,
            }],
            upstreams: [(
                "default".to_string(),
                raw::Upstream {
                    servers: upstreams.to_vec(),
                },
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        Config::from_raw(raw, "command line")
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
        let raw: raw::File = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_string(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        Config::from_raw(raw, file)
    }

    fn from_raw(raw: raw::File, file: &str) -> Result<Config, ConfigError> {
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
            listeners.push(Listener { addr });
        }

        let mut names: Vec<&String> = raw.upstreams.keys().collect();
        names.sort();
        let mut upstreams = Vec::new();
        for name in &names {
            let group = &raw.upstreams[*name];
            if group.servers.is_empty() {
                return Err(invalid(
                    format!("upstreams.{name}.servers"),
                    "at least one server is required".into(),
                ));
            }
            let mut servers = Vec::new();
            for (i, s) in group.servers.iter().enumerate() {
                let server = parse_server(s)
                    .map_err(|reason| invalid(format!("upstreams.{name}.servers[{i}]"), reason))?;
                servers.push(server);
            }
            upstreams.push(UpstreamGroup {
                name: (*name).clone(),
                servers,
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
            limits.max_connections = n;
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

        if raw.routes.is_empty() {
            return Err(invalid(
                "routes".into(),
                "at least one [[routes]] entry is required".into(),
            ));
        }
        let mut routes = Vec::new();
        for (i, rt) in raw.routes.iter().enumerate() {
            let upstream = upstreams
                .iter()
                .position(|g| g.name == rt.upstream)
                .ok_or_else(|| {
                    invalid(
                        format!("routes[{i}].upstream"),
                        format!("no upstream group named `{}`", rt.upstream),
                    )
                })?;
            let path_prefix = rt.path_prefix.clone().unwrap_or_else(|| "/".into());
            if !path_prefix.starts_with('/') {
                return Err(invalid(
                    format!("routes[{i}].path_prefix"),
                    format!("`{path_prefix}` must start with `/`"),
                ));
            }
            let host = match &rt.host {
                None => None,
                Some(h) if h.is_empty() || h.contains(['/', ' ', ':']) => {
                    return Err(invalid(
                        format!("routes[{i}].host"),
                        format!("`{h}` is not a host name (no port, scheme or path)"),
                    ))
                }
                Some(h) => Some(h.to_ascii_lowercase()),
            };
            let upstream_host = match rt.upstream_host.as_deref() {
                None | Some("client") => UpstreamHost::Client,
                Some("server") => UpstreamHost::Server,
                Some(v) => UpstreamHost::Fixed(HeaderValue::from_str(v).map_err(|_| {
                    invalid(
                        format!("routes[{i}].upstream_host"),
                        format!("`{v}` is not a valid header value"),
                    )
                })?),
            };
            routes.push(Route {
                host,
                path_prefix,
                upstream,
                max_body_bytes: rt.max_body_bytes.or(limits.max_body_bytes),
                upstream_host,
            });
        }

        let t = raw.timeouts.unwrap_or_default();
        let mut timeouts = Timeouts::default();
        let fields: [(&str, &Option<String>, &mut Duration); 5] = [
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
        ];
        for (name, value, slot) in fields {
            if let Some(v) = value {
                *slot = parse_duration(v)
                    .map_err(|reason| invalid(format!("timeouts.{name}"), reason))?;
            }
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
            access_log: AccessLogTarget::parse(r.access_log.as_deref().unwrap_or("off")),
            shutdown_grace,
            log_level,
        })
    }
}

fn parse_duration(v: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(v)
        .map_err(|e| format!("`{v}` is not a duration like `5s` or `250ms` ({e})"))?;
    if d.is_zero() {
        return Err(format!("`{v}` must be more than zero"));
    }
    Ok(d)
}

/// Parses `http://host:port`, `host:port` or `host` (port 80), resolving
/// names once, now.
fn parse_server(s: &str) -> Result<Server, String> {
    let rest = if let Some(rest) = s.strip_prefix("http://") {
        rest
    } else if s.contains("://") {
        return Err(format!(
            "`{s}`: only http:// upstreams are supported (https:// comes with TLS support)"
        ));
    } else {
        s
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains('/') {
        return Err(format!(
            "`{s}` must be host:port, without a path (routes carry the path)"
        ));
    }
    let authority = if rest
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !rest.ends_with(']')
    {
        rest.to_string()
    } else {
        format!("{rest}:80")
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("`{s}` does not resolve: {e}"))?
        .next()
        .ok_or_else(|| format!("`{s}` resolves to no address"))?;
    let authority =
        HeaderValue::from_str(rest).map_err(|_| format!("`{s}` is not a valid host"))?;
    Ok(Server { addr, authority })
}

/// The file's shape, exactly as serde reads it.
pub mod raw {
    use std::collections::HashMap;

    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        pub server: Option<Server>,
        #[serde(default)]
        pub listeners: Vec<Listener>,
        #[serde(default)]
        pub routes: Vec<Route>,
        #[serde(default)]
        pub upstreams: HashMap<String, Upstream>,
        pub timeouts: Option<Timeouts>,
        pub limits: Option<Limits>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Server {
        pub threads: Option<usize>,
        pub access_log: Option<String>,
        pub log_level: Option<String>,
        pub shutdown_grace: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Listener {
        pub address: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Route {
        pub host: Option<String>,
        pub path_prefix: Option<String>,
        pub upstream: String,
        pub max_body_bytes: Option<u64>,
        pub upstream_host: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Upstream {
        pub servers: Vec<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Timeouts {
        pub client_header: Option<String>,
        pub client_idle: Option<String>,
        pub upstream_connect: Option<String>,
        pub upstream_response_head: Option<String>,
        pub upstream_idle: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Limits {
        pub max_connections: Option<usize>,
        pub max_request_head_bytes: Option<usize>,
        pub max_body_bytes: Option<u64>,
        pub upstream_idle_per_server: Option<usize>,
    }
}
