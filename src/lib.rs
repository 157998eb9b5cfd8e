//! Tidegate: a streaming HTTP reverse proxy on tokio and hyper.
//!
//! # Layout
//!
//! Modules follow a request's path through the proxy:
//!
//! - [`server`]: runtime layout (one single-threaded runtime per core, each
//!   with its own SO_REUSEPORT listener and upstream pool), accept loops,
//!   connection limits, graceful shutdown. Start here: [`server::start`].
//! - [`listener`]: which accepted connections may stay: per-listener and
//!   per-address caps, idle connections closed first at the cap.
//! - [`tls`]: TLS towards clients: certificates by SNI, ALPN, client
//!   certificates.
//! - [`connection`]: one client connection: TLS handshake, hyper's
//!   HTTP/1.1 or HTTP/2 server (ALPN or h2c prior knowledge), plus a
//!   watchdog for head and idle timeouts.
//! - [`message`]: what a request head must be before anything acts on it
//!   (one valid authority, unambiguous framing, field names).
//! - [`router`]: picks a route by host and path.
//! - [`proxy`]: one request's life: header rewriting, sending upstream,
//!   mapping failures to statuses, streaming the response back.
//! - [`upstream`]: the per-thread upstream connection pool; [`balance`]:
//!   which server of a group takes a request; [`health`]: active checks
//!   and passive ejection; [`upstream_tls`]: TLS and HTTP version to
//!   upstreams; [`dns`]: servers given by name, re-resolved in the
//!   background.
//! - [`tunnel`]: HTTP/1.1 upgrades (WebSocket...): the 101 and the
//!   byte tunnel that follows it.
//! - [`body`]: the streaming body wrappers (limits, byte counts, completion).
//! - [`error`]: why a request failed, and the status that follows.
//! - [`access_log`]: one line per request, buffered per thread.
//!
//! Around them: [`config`] (TOML → validated types), [`cli`] (the binary's
//! behaviour) and [`demo`] (a small origin for the quickstart and tests).
#![forbid(unsafe_code)]

pub mod access_log;
pub mod balance;
pub mod body;
pub mod cli;
pub mod config;
pub mod connection;
pub mod demo;
pub mod dns;
pub mod error;
pub mod fuzz;
pub mod health;
pub mod listener;
pub mod message;
pub mod proxy;
pub mod router;
pub mod rt;
pub mod server;
pub mod tls;
pub mod tunnel;
pub mod upstream;
pub mod upstream_tls;

pub use config::Config;
pub use server::{start, Running, StartError};
