//! Tidegate: a streaming HTTP reverse proxy on tokio and hyper.
//!
//! # Layout
//!
//! Folders follow a request's path; a module imports only those below it
//! in this list (no import cycle on the request path):
//!
//! - [`server`]: runtime layout (one single-threaded runtime per core, each
//!   with its own SO_REUSEPORT listener and upstream pool), accept loops,
//!   reload, graceful shutdown. Start here: [`server::start`].
//! - [`downstream`]: the client side. [`downstream::listener`] (which
//!   accepted connections may stay), [`downstream::tls`] (certificates by
//!   SNI, ALPN, client certificates), [`downstream::connection`] (hyper's
//!   HTTP/1.1 or HTTP/2 server for one connection, its timeouts, its
//!   lingering close), around [`downstream::state`] (what a connection
//!   shares with its requests).
//! - [`proxy`]: one request's life, phase by phase: admit, route, local
//!   answers, forward (server choice, retries, the stale-connection retry),
//!   respond ([`proxy::exchange`]: the streamed response body, the
//!   access-log line, the connection back to the pool); [`proxy::tunnel`]
//!   for upgrades (WebSocket...).
//! - [`worker`]: one thread's state under one config (routes, pool, log).
//! - [`upstream`]: the per-thread upstream connection pool; [`upstream::balance`]:
//!   which server of a group takes a request; [`upstream::health`]: active checks
//!   and passive ejection; [`upstream::tls`]: TLS and HTTP version to
//!   upstreams; [`upstream::dns`]: servers given by name, re-resolved in the
//!   background.
//! - [`router`]: picks a route by host and path; [`body`]: the request
//!   body streamed upstream (limits, progress); [`access_log`]: one line
//!   per request, buffered per thread; [`error`]: why a request failed,
//!   and the status that follows.
//! - [`message`]: pure HTTP rules: what a request head must be before
//!   anything acts on it ([`message::admit`]) and the RFC 9110 header
//!   rewriting for the next hop.
//!
//! Around them: [`config`] (TOML → validated types), [`cli`] (the binary's
//! behaviour), [`demo`] (a small origin for the quickstart and tests),
//! [`rt`] (runtime glue), [`fuzz`] (the fuzz targets' entry points).
#![forbid(unsafe_code)]

pub mod access_log;
pub mod body;
pub mod cli;
pub mod config;
pub mod demo;
pub mod downstream;
pub mod error;
pub mod fuzz;
pub mod message;
pub mod proxy;
pub mod router;
pub mod rt;
pub mod server;
pub mod upstream;
pub mod worker;

pub use config::Config;
pub use server::{start, Running, StartError};
