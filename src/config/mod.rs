//! Configuration as pure data: the validated types the proxy runs on.
//!
//! The file is read into `raw::*` structs (serde, `deny_unknown_fields`),
//! then converted section by section (`load.rs`) into [`Config`], where
//! every address is a `SocketAddr`, every duration a `Duration` and every
//! route points at its upstream group by index. Nothing on the request
//! path parses a string from the config. Every problem found is reported
//! with its file, line and field (`source.rs`).
//!
//! Nothing here holds runtime state or does I/O: certificates are read,
//! names resolved and health state kept by what puts a config into service
//! ([`crate::upstream::registry`], `downstream/tls.rs`). The one lookup is
//! `[server] user`'s and `group`'s, in the system's user database
//! (`run_as.rs`), so that `tidegate check` names an unknown one.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod acme;
mod auth;
pub mod cache;
pub mod compress;
pub(crate) mod concurrency_limit;
mod dns;
pub(crate) mod dump;
pub(crate) mod forward_auth;
mod health;
mod jwt;
pub(crate) mod listener;
mod load;
mod log_format;
pub mod proxy_protocol;
pub(crate) mod rate_limit;
pub mod raw;
mod route;
mod run_as;
mod source;
pub mod static_files;
pub mod stream;
mod stream_entry;
mod tracing;
mod upstream;

pub use self::tracing::Tracing;
pub use crate::auth::basic::BasicAuth;
pub use concurrency_limit::ConcurrencyLimit;
pub use dns::Dns;
pub use forward_auth::ForwardAuth;
pub use listener::{ClientAuth, Listener, ListenerTls, RequestId, DEFAULT_MAX_STREAMS};
pub use log_format::{LogFormat, Piece, Var};
pub use rate_limit::{
    Backend as RateLimitBackend, KeyPart, Mode as RateLimitMode, OnError, RateLimit,
    Redis as RedisBackend,
};
pub use run_as::RunAs;
pub use source::{ConfigError, Problem, Source};
pub use static_files::{StaticFiles, Symlinks};
pub use upstream::{
    tls_name, Balance, Check, CheckKind, HashKey, Limit, Outlier, Protocol, Retry, Server, Target,
    UpstreamGroup, UpstreamTls,
};

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Timeouts {
    /// Time a client has to send a complete request head, counted from the
    /// connection's accept (first request) or from the first byte of a
    /// later request on a kept-alive connection.
    #[serde(serialize_with = "dump::duration")]
    pub client_header: Duration,
    /// How long an idle kept-alive client connection is kept open.
    #[serde(serialize_with = "dump::duration")]
    pub client_idle: Duration,
    /// Time to establish a TCP connection to an upstream server.
    #[serde(serialize_with = "dump::duration")]
    pub upstream_connect: Duration,
    /// Time the upstream has to send a response head once the request
    /// (including its body) has been sent; a body still streaming resets it
    /// on every chunk, as nginx's `proxy_send_timeout` does.
    #[serde(serialize_with = "dump::duration")]
    pub upstream_response_head: Duration,
    /// How long an idle pooled upstream connection is kept for reuse.
    #[serde(serialize_with = "dump::duration")]
    pub upstream_idle: Duration,
    /// Time a client has to complete the TLS handshake.
    #[serde(serialize_with = "dump::duration")]
    pub tls_handshake: Duration,
    /// An upgraded connection (WebSocket, ...) with no byte in either
    /// direction for this long is closed (HAProxy's `timeout tunnel`).
    #[serde(serialize_with = "dump::duration")]
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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
    #[serde(serialize_with = "dump::duration")]
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

pub use crate::message::admit::Underscores;
pub use crate::message::cidr::{Access, Cidr, Rule};
pub use crate::message::client_ip::{RealIp, RealIpHeader};
pub use crate::router::{
    Action, HeaderOps, HostMatch, PathMatch, Rewrite, Route, Template, UpstreamHost,
};

/// The validated configuration. Serialised (`GET /config` on the admin
/// listener), secrets are redacted (`config/dump.rs`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    pub listeners: Vec<Listener>,
    pub routes: Vec<Route>,
    pub upstreams: Vec<UpstreamGroup>,
    /// `[rate_limits.*]`, in name order; routes refer to them by index.
    pub rate_limits: Vec<RateLimit>,
    /// `[concurrency_limits.*]`, in name order; routes refer to them by
    /// index.
    pub concurrency_limits: Vec<ConcurrencyLimit>,
    /// `[caches.*]`, in name order; routes refer to them by index.
    pub caches: Vec<cache::Cache>,
    pub timeouts: Timeouts,
    pub limits: Limits,
    /// Worker threads, each a single-threaded runtime with its own listener
    /// socket (SO_REUSEPORT) and upstream pool.
    pub threads: usize,
    /// Whether each worker thread is bound to a CPU of its own.
    pub cpu_affinity: CpuAffinity,
    pub access_log: AccessLogTarget,
    /// How its lines are written.
    pub access_log_format: LogFormat,
    /// How long in-flight requests may run on after SIGTERM/SIGINT.
    #[serde(serialize_with = "dump::duration")]
    pub shutdown_grace: Duration,
    /// `tracing` filter for the process's own log (`info`, `warn`, ...).
    pub log_level: String,
    /// How that log's lines are written.
    pub log_format: ErrorLogFormat,
    /// How servers given by name are resolved and refreshed.
    pub dns: Dns,
    /// The admin listener (metrics, health), off unless configured.
    pub admin: Option<Admin>,
    /// OpenTelemetry traces (`[tracing]`), off unless configured.
    pub tracing: Option<Tracing>,
    /// ACME certificates (`[acme]`), off unless configured.
    pub acme: Option<acme::Acme>,
    /// Who the process runs as once its sockets and files are open
    /// (`[server] user`, `group`), if not as who started it.
    pub run_as: Option<RunAs>,
    /// The file this came from, for errors found when it is put into
    /// service.
    pub source: Source,
}

/// The `[admin]` listener: `/metrics`, `/healthz`, `/readyz`. Never served
/// on the proxy's listeners.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Admin {
    pub addr: std::net::SocketAddr,
    /// When set, every request needs `Authorization: Bearer <token>`.
    #[serde(serialize_with = "dump::secret")]
    pub token: Option<String>,
}

/// How the process's own log (warnings, errors, what it did) is written
/// on stderr; the access log has its own `access_log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorLogFormat {
    /// One line of text per event (the default).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, and
    /// `fields` (the `message` and the event's fields, such as
    /// `client`, `status`, `request_id`).
    Json,
}

impl std::str::FromStr for ErrorLogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(ErrorLogFormat::Text),
            "json" => Ok(ErrorLogFormat::Json),
            other => Err(format!("`{other}` is neither \"text\" nor \"json\"")),
        }
    }
}

/// Binding worker threads to CPUs (nginx's `worker_cpu_affinity`,
/// HAProxy's `cpu-map`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
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
                ..Default::default()
            }],
            streams: Vec::new(),
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
                    balance: Some(raw::Method::RoundRobin),
                    hash_key: None,
                    health: None,
                    outlier: None,
                    retry: None,
                    proxy_protocol: None,
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
        load::from_raw(raw, load::command_line())
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

    /// Validates TOML text; `file` names it in errors and is the base of
    /// relative paths.
    pub fn from_toml(text: &str, file: &str) -> Result<Config, ConfigError> {
        load::parse(Source {
            file: file.to_string(),
            text: text.into(),
        })
    }
}

/// A listener and the upstream group `app`: what a config test adds its
/// tables and routes to.
#[cfg(test)]
pub(crate) const TEST_BASE: &str =
    "[[listeners]]\naddress = \"127.0.0.1:1\"\n[upstreams.app]\nservers = [\"127.0.0.1:2\"]\n";

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
        assert_eq!(c.upstreams[0].balance, Balance::RoundRobin);
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
        let g = &c.upstreams[0];
        let s = &g.servers[0];
        assert_eq!(
            s.target,
            Target::Name {
                host: "localhost".into(),
                port: 443
            }
        );
        assert!(g.tls.as_ref().unwrap().server_name.is_none());
        assert_eq!(tls_name(s).unwrap().to_str(), "localhost");
        assert_eq!(g.protocol, Protocol::Auto);
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
            .map(|s| match s.target {
                Target::Addr(a) => a.to_string(),
                Target::Name { .. } => panic!("a name"),
            })
            .collect();
        assert_eq!(addrs, ["[::1]:8080", "127.0.0.1:80"]);
        assert_eq!(c.dns.resolvers.len(), 2);
        assert_eq!(c.dns.resolvers[1].port(), 53);
        assert_eq!(c.dns.min_refresh, Duration::from_secs(5));
        assert_eq!(c.dns.max_refresh, Duration::from_secs(300));
    }

    #[test]
    fn serialised_as_in_force_with_templates_as_written() {
        let text = "[server]\naccess_log_format = '$remote_addr \"$http_user_agent\" ${status}x'\n\
                    log_format = \"json\"\n\
                    [[listeners]]\naddress = \"127.0.0.1:1\"\n\
                    [upstreams.app]\nservers = [\"127.0.0.1:2\"]\n\
                    [[routes]]\nupstream = \"app\"\nrequest_id = {}\n\
                    [[routes]]\npath = \"/r\"\n\
                    redirect = { status = 301, location = \"https://u:p@{host}/n{uri}\" }\n";
        let c = Config::from_toml(text, "t.toml").unwrap();
        assert_eq!(c.log_format, ErrorLogFormat::Json);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["log_format"], "json");
        assert_eq!(
            v["routes"][1]["action"]["redirect"],
            serde_json::json!({ "status": 301, "location": "https://<redacted>@{host}/n{uri}" })
        );
        assert_eq!(
            v["routes"][0]["request_id"],
            serde_json::json!({ "header": "x-request-id", "trust_incoming": false })
        );
        assert_eq!(
            v["access_log_format"]["template"],
            serde_json::json!([
                { "var": "remote_addr" },
                { "text": " \"" },
                { "var": { "header": "user-agent" } },
                { "text": "\" " },
                { "var": "status" },
                { "text": "x" },
            ])
        );
    }

    #[test]
    fn every_problem_of_a_route_is_reported() {
        let text = "[[listeners]]\naddress = \"127.0.0.1:1\"\n[upstreams.app]\nservers = [\"127.0.0.1:2\"]\n\
                    [[routes]]\nhost = \"a:1\"\nmethods = [\"G T\"]\nupstream = \"app\"\n\
                    rewrite = { regex = \"a\", replace = \"b\" }\n";
        let e = Config::from_toml(text, "t.toml").unwrap_err();
        let got: Vec<(Option<usize>, &str)> = e
            .problems()
            .iter()
            .map(|p| (p.line, p.field.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (Some(6), "routes[0].host"),
                (Some(7), "routes[0].methods"),
                (Some(9), "routes[0].rewrite.replace"),
            ],
            "{e}"
        );
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
            ("upstream = \"app\"\nrequest_id = { header = \"a b\" }", "routes[0].request_id.header: `a b` is not a field name"),
            ("upstream = \"app\"\nrequest_id = { trust = true }", "unknown field `trust`"),
            ("upstream = \"app\"\nbasic_auth = { realm = \"r\", htpasswd = \"/nonexistent/users\" }", "routes[0].basic_auth.htpasswd: cannot read /nonexistent/users"),
            ("upstream = \"app\"\nbasic_auth = { realm = \"a\\u0001\", htpasswd = \"u\" }", "routes[0].basic_auth.realm"),
            ("upstream = \"app\"\nbasic_auth = { htpasswd = \"u\" }", "missing field `realm`"),
        ];
        for (route, want) in cases {
            let err = route_error(route);
            let line = err
                .strip_prefix("t.toml:")
                .and_then(|r| r.split(':').next());
            assert!(
                line.is_some_and(|l| l.parse::<usize>().is_ok_and(|l| l >= 5)),
                "{err}"
            );
            assert!(err.contains(want), "{route}: {err}");
        }
    }
}
