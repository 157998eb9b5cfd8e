//! Tidegate: a streaming HTTP reverse proxy on tokio and hyper.
//!
//! The library's public surface is what the binary and the tests use:
//! [`cli`], [`config`] (pure data: [`Config::from_file`]), [`start`] and
//! [`check`], [`upstream::open`] and [`upstream::registry`] (to build a
//! config's upstreams as the proxy does) and [`fuzz`] (the fuzz targets'
//! entry points). Everything else is crate-private, so dead code is
//! reported; `cargo doc --document-private-items` shows it.
//!
//! # Layout
//!
//! Folders follow a request's path; a module imports only those below it
//! in this list (no import cycle: `tools/import_cycles.py src`):
//!
//! - `server/`: runtime layout (one single-threaded runtime per core, each
//!   with its own SO_REUSEPORT listener and upstream pool), reload, DNS
//!   refresh, graceful shutdown. Start here: [`start`].
//! - `downstream/`: the client side. `listener.rs` (which accepted
//!   connections may stay), `tls.rs` (certificates by SNI, ALPN, client
//!   certificates), `proxy_protocol.rs` (a trusted peer's PROXY protocol
//!   header, before anything else), `connection.rs` (hyper's HTTP/1.1 or
//!   HTTP/2 server for one connection, its timeouts, its lingering close),
//!   around `state.rs` (what a connection shares with its requests).
//! - `stream/`: a `[[streams]]` (L4) connection's life, which
//!   `downstream/connection.rs` hands over after the PROXY protocol:
//!   `access`, TLS terminated or the ClientHello read for its SNI
//!   (`hello.rs`, fuzzed), a server of the group, the bytes both ways
//!   (`splice.rs`: half-closes, idle timeout), the session's log line and
//!   metrics; or back to `downstream/` for an HTTP listener's TLS.
//! - `proxy/`: one request's life, phase by phase: admit, route, the
//!   route's gates (`gate.rs`: rate and concurrency limits, basic auth,
//!   JWT, forward auth's subrequest in `forward_auth.rs`), local answers,
//!   forward (server choice, retries, the stale-connection retry), respond
//!   (`exchange.rs`: the streamed response body, compressed or not, the
//!   access-log line, the connection back to the pool; `compress.rs`:
//!   whether a response is compressed; `static_files.rs`: a `static`
//!   route's files, found on the blocking pool, with `file_body.rs`
//!   their streamed body; `cache/`: a route's cache on the
//!   request path: lookup, revalidation, storing while streaming, stale
//!   on error, invalidation); `tunnel.rs` for upgrades (WebSocket...).
//! - `acme/`: ACME certificates for listeners' `tls.acme` names:
//!   `certs.rs` (what handshakes and plain listeners' HTTP-01 answers
//!   read, swapped whole), `manager.rs` (the thread that reads the
//!   storage and orders and renews), `order.rs` (one order with
//!   instant-acme), `disk.rs` (the storage folder instances may share),
//!   `lock.rs` (which instance orders: a lock file with a heartbeat).
//! - `worker.rs`: a config put into service (`Generation`: the config plus
//!   its built upstreams and listener TLS) and one thread's state under it
//!   (routes, pool, log).
//! - `upstream/`: the per-thread connection pool (`mod.rs`, `h2.rs` for
//!   the shared HTTP/2 connections, `connect.rs`; `proxy_protocol.rs`: the
//!   header a group's connections open with);
//!   `registry.rs`: a config's upstreams built (names resolved, TLS,
//!   rings) with each server's health and limit kept by (group, address)
//!   across reloads; `balance.rs`: which server of a group takes a
//!   request; `health.rs`: health state and passive ejection; `check.rs`:
//!   active checks; `tls.rs`: TLS to upstreams; `dns.rs`: names
//!   re-resolved in the background.
//! - `router.rs`: picks a route by host and path; `body.rs`: the request
//!   body streamed upstream (limits, progress); `access_log/`: one line
//!   per request in the configured format, buffered per thread and written
//!   by a writer thread; `error.rs`: why a request failed, and the status
//!   that follows; `metrics/`: per-thread counters summed at scrape time
//!   (with what each thread's pool counts, `upstream/stats.rs`);
//!   `admin/`: the admin listener (`/metrics`, `/status`, `/healthz`,
//!   `/readyz`, `/config`, `/reload`, drain and enable); `trace/`: W3C
//!   Trace Context on each request (`mod.rs`: `traceparent` read and
//!   written, sampling, the span record) and the OTLP/HTTP exporter
//!   thread (`export.rs`, with the protobuf messages of `proto.rs`).
//! - `auth/`: HTTP Basic authentication against htpasswd files (parsed
//!   and checked in `basic.rs`, each thread's verified passwords in
//!   `cache.rs`), read by `config/` and applied by `proxy/auth.rs`; JWT
//!   bearer tokens (`jwt/`: the checks, the key sets read without a lock,
//!   the `jwks_url` fetch thread, each thread's verified tokens), read by
//!   `config/jwt.rs` and applied by `proxy/jwt.rs`.
//! - `ratelimit/`: traffic limits, read by `config/` and applied by
//!   `proxy/gate.rs`: request rates (`mod.rs`, the GCRA of `gcra.rs`) and
//!   requests in flight (`concurrency.rs`), each limit a fixed lock-free
//!   table of atomics indexed by the keyed hash of `key.rs`; global limits
//!   shared through Redis (`global.rs`, the leases of `lease.rs`, the
//!   connections and the Lua GCRA of `store.rs` and `gcra.lua`).
//! - `cache/`: HTTP caching (RFC 9111, shared cache): the pure decisions
//!   (`policy/`: directives, storing, freshness and age, reuse, `Vary`,
//!   conditionals, freshening, invalidation, `Cache-Status`), the key
//!   (`key.rs`) and each cache's store (`store.rs`: responses by key and
//!   variant under a byte budget, and the fetches concurrent misses wait
//!   for; `entry.rs`: what it holds), and the disk tier below memory
//!   (`disk/`: the file format, the writer thread and folder scan, the
//!   index of files).
//! - `files/`: static files, the pure part: a request path made a path
//!   under a root (`path.rs`), `Range` (`range.rs`), RFC 9110
//!   preconditions (`conditional.rs`), `Content-Type` (`mime.rs`), the
//!   answer's head and body parts (`mod.rs`); read from disk and streamed
//!   by `proxy/static_files.rs` and `proxy/file_body.rs`, configured by
//!   `config/static_files.rs`.
//! - `compress/`: response compression: `Accept-Encoding` negotiated
//!   (`negotiate.rs`), the head rewritten, the gzip/br/zstd encoders.
//! - `message/`: pure HTTP rules: what a request head must be before
//!   anything acts on it (`admit.rs`), the RFC 9110 header rewriting
//!   for the next hop (`headers.rs`), and fields added where a request
//!   goes out (`added.rs`).
//! - `config/`: the TOML file to validated pure data, every problem
//!   reported with its file, line and field; `dump.rs`: that data shown
//!   as JSON with its secrets redacted.
//! - `tally.rs`: single-writer counters and histograms, what the layers
//!   above count with.
//!
//! - `convert/`: `tidegate convert nginx.conf`, an nginx configuration
//!   read (`parse.rs`, `include`s followed) and written as Tidegate TOML;
//!   a tool beside the request path, which nothing below imports.
//!
//! Around them: `cli.rs` (the binary's behaviour), `notify.rs` (what
//! systemd is told: ready, reloading, stopping, watchdog), `demo.rs` (a small
//! origin for the quickstart and tests), `rt.rs` (runtime glue),
//! `random.rs` (per-thread random numbers for IDs), `fuzz.rs`.
#![forbid(unsafe_code)]

mod access_log;
mod acme;
mod admin;
mod auth;
mod body;
mod cache;
pub mod cli;
pub(crate) mod compress;
pub mod config;
mod control;
pub mod convert;
mod demo;
mod downstream;
mod error;
mod files;
pub mod fuzz;
mod message;
mod metrics;
mod notify;
mod proxy;
mod random;
mod ratelimit;
mod router;
mod rt;
mod server;
mod stream;
mod tally;
mod trace;
pub mod upstream;
mod worker;

pub use config::Config;
pub use error::ProxyError;
pub use server::{check, start, Running, StartError};
