//! The client side: which accepted connections may stay ([`listener`]),
//! TLS towards clients ([`tls`]), and serving one connection with hyper's
//! HTTP/1.1 or HTTP/2 server ([`connection`]) around the state its
//! requests share with it ([`state`]).

pub mod accept;
pub mod connection;
mod io;
pub mod listener;
pub mod state;
pub mod tls;
mod watch;
