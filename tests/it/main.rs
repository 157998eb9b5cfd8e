//! Tidegate's integration tests: one crate (one build, one link) with a
//! module per topic. `common` holds the helpers: in-process origins, a
//! proxy started on port 0, raw HTTP/1.1 and HTTP/2 clients, test PKI.

// Helpers are `pub` for the topic modules; tests unwrap.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

mod acme;
mod admin;
mod affinity;
mod balance;
mod basic_auth;
mod cache;
mod cache_disk;
mod cli;
mod client_ip;
mod clients;
mod compress;
mod concurrency;
mod concurrency_limit;
mod convert;
mod dns;
mod error_log;
mod errors;
mod forward_auth;
mod fuzz_targets;
mod global_rate_limit;
mod grpc;
mod hardening;
mod headers;
mod health;
mod jwt;
mod limits_and_log;
mod log_formats;
mod messages;
mod metrics;
mod pkg;
mod pool;
mod privilege;
mod prometheus;
mod proxy_protocol;
mod rate_limit;
mod reload;
mod retry;
mod routing;
mod server_limit;
mod shutdown;
mod startup;
mod static_files;
mod status;
mod streaming;
mod streams;
mod systemd;
mod timeouts;
mod tls;
mod tracing;
mod upgrade;
mod upstream_h2;
mod upstream_tls;
mod websocket;
mod websocket_h2;
