//! The file's shape, exactly as serde reads it.
use std::collections::{BTreeMap, HashMap};

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
    pub dns: Option<Dns>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub threads: Option<usize>,
    pub cpu_affinity: Option<String>,
    pub access_log: Option<String>,
    pub log_level: Option<String>,
    pub shutdown_grace: Option<String>,
}

#[derive(Debug, Deserialize)]
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    pub certificates: Vec<Certificate>,
    pub min_version: Option<String>,
    pub client_ca: Option<String>,
    pub client_auth: Option<String>,
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
    pub host: Option<String>,
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    pub path_regex: Option<String>,
    pub methods: Option<Vec<String>>,
    pub headers: Option<BTreeMap<String, String>>,
    pub upstream: Option<String>,
    pub redirect: Option<Redirect>,
    pub respond: Option<Respond>,
    pub strip_prefix: Option<String>,
    pub rewrite: Option<Rewrite>,
    pub request_headers: Option<HeaderOps>,
    pub response_headers: Option<HeaderOps>,
    pub max_body_bytes: Option<u64>,
    pub upstream_host: Option<String>,
    pub timeouts: Option<RouteTimeouts>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    pub status: Option<u16>,
    pub location: String,
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
    pub upstream_connect: Option<String>,
    pub upstream_response_head: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub servers: Vec<ServerEntry>,
    pub balance: Option<String>,
    pub hash_key: Option<String>,
    pub health: Option<Health>,
    pub outlier: Option<Outlier>,
    pub retry: Option<RetryRaw>,
    pub max_connections: Option<u32>,
    pub max_pending: Option<u32>,
    /// `http1`, `h2` or `auto`.
    pub protocol: Option<String>,
    /// For `https://` servers.
    pub tls: Option<UpstreamTls>,
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
pub struct RetryRaw {
    pub attempts: Option<u32>,
    pub budget_percent: Option<u32>,
    pub min_per_second: Option<u32>,
    pub max_body_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    pub method: Option<String>,
    pub path: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub expect: Option<Vec<u16>>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outlier {
    pub consecutive_failures: Option<u32>,
    pub base_ejection: Option<String>,
    pub max_ejection: Option<String>,
    pub max_ejected_percent: Option<u32>,
}

/// `"host:port"` or `{ address = "host:port", weight = 3 }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ServerEntry {
    Address(String),
    Table {
        address: String,
        weight: Option<u32>,
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
    pub client_header: Option<String>,
    pub client_idle: Option<String>,
    pub upstream_connect: Option<String>,
    pub upstream_response_head: Option<String>,
    pub upstream_idle: Option<String>,
    pub tls_handshake: Option<String>,
    pub tunnel_idle: Option<String>,
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
    pub http2_reset_window: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    pub resolvers: Option<Vec<String>>,
    pub min_refresh: Option<String>,
    pub max_refresh: Option<String>,
    pub timeout: Option<String>,
}
