//! Router: picks the route for a request from its host and path.
//!
//! Precedence is fixed when the config loads: routes naming a host come
//! before host-less ones, and within each, longer path prefixes first; among
//! equals, the one written first in the file wins. Matching compares bytes
//! and allocates nothing.

use crate::config::Route;

/// Routes in match order.
#[derive(Debug)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn new(routes: &[Route]) -> Router {
        let mut routes = routes.to_vec();
        // Stable sort keeps the file's order among equals.
        routes.sort_by_key(|r| (r.host.is_none(), std::cmp::Reverse(r.path_prefix.len())));
        Router { routes }
    }

    /// The route for `host` (as sent: may carry a port, any case) and `path`.
    pub fn find(&self, host: Option<&[u8]>, path: &str) -> Option<&Route> {
        let host = host.map(strip_port);
        self.routes.iter().find(|r| {
            let host_ok = match (&r.host, host) {
                (None, _) => true,
                (Some(want), Some(got)) => want.as_bytes().eq_ignore_ascii_case(got),
                (Some(_), None) => false,
            };
            host_ok && path.starts_with(r.path_prefix.as_str())
        })
    }
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
fn strip_port(host: &[u8]) -> &[u8] {
    match host.iter().rposition(|&b| b == b':') {
        Some(i) if !host[i..].contains(&b']') => &host[..i],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamHost;

    fn route(host: Option<&str>, prefix: &str, upstream: usize) -> Route {
        Route {
            host: host.map(str::to_string),
            path_prefix: prefix.to_string(),
            upstream,
            max_body_bytes: None,
            upstream_host: UpstreamHost::Client,
        }
    }

    #[test]
    fn host_routes_win_then_longest_prefix() {
        let r = Router::new(&[
            route(None, "/", 0),
            route(None, "/api", 1),
            route(Some("example.com"), "/", 2),
        ]);
        assert_eq!(r.find(Some(b"other"), "/api/x").unwrap().upstream, 1);
        assert_eq!(r.find(Some(b"other"), "/x").unwrap().upstream, 0);
        assert_eq!(
            r.find(Some(b"Example.COM:8080"), "/api").unwrap().upstream,
            2
        );
        assert_eq!(r.find(None, "/api").unwrap().upstream, 1);
    }

    #[test]
    fn no_match_is_none() {
        let r = Router::new(&[route(Some("a.test"), "/only", 0)]);
        assert!(r.find(Some(b"a.test"), "/other").is_none());
        assert!(r.find(Some(b"b.test"), "/only").is_none());
    }

    #[test]
    fn strips_ports_but_not_ipv6() {
        assert_eq!(strip_port(b"a:1"), b"a");
        assert_eq!(strip_port(b"[::1]:80"), b"[::1]");
        assert_eq!(strip_port(b"[::1]"), b"[::1]");
        assert_eq!(strip_port(b"a"), b"a");
    }
}
