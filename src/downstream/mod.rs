//! The client side: which accepted connections may stay ([`listener`]),
//! TLS towards clients ([`tls`]), and serving one connection with hyper's
//! HTTP/1.1 or HTTP/2 server ([`connection`], with the services hyper
//! calls per request in `service`) around the state its requests share
//! with it ([`state`]).

pub(crate) mod accept;
pub(crate) mod connection;
mod io;
pub(crate) mod listener;
mod phase;
pub(crate) mod proxy_protocol;
pub(crate) mod sendfile;
mod service;
pub(crate) mod state;
pub(crate) mod tls;
mod watch;
