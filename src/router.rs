//! Router: picks the route for a request, and says what the route does to
//! it.
//!
//! A route matches on host, path, method and header values, all compiled
//! once when the config loads. Precedence is fixed then too, and does not
//! depend on the order requests arrive in:
//!
//! 1. host: an exact host, then wildcards (`*.example.com`, longest suffix
//!    first), then routes without a host;
//! 2. path: an exact `path`, then `path_regex` routes, then `path_prefix`
//!    routes, longest prefix first (as nginx: `=`, then regex, then prefix);
//! 3. routes with method or header conditions before those without;
//! 4. the order of the file.
//!
//! The first route in that order whose every condition holds is taken.
//! Matching compares bytes and allocates nothing; only a regex rewrite or a
//! redirect builds a new string.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde::Serialize;

/// Which hosts a route takes.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HostMatch {
    Any,
    /// Lower-cased, without port.
    Exact(String),
    /// `*.example.com` is stored as `.example.com`: any name ending so.
    Suffix(String),
}

/// Which paths a route takes.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    Regex(#[serde(serialize_with = "crate::config::dump::display")] regex::Regex),
}

/// What a route does with a request it takes.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Proxy to this upstream group (index into the config's groups).
    #[serde(rename = "upstream_index")]
    Proxy(usize),
    /// Answer with a redirect to the expanded template.
    Redirect {
        #[serde(serialize_with = "crate::config::dump::status")]
        status: StatusCode,
        location: Template,
    },
    /// Answer with a fixed response.
    Respond {
        #[serde(serialize_with = "crate::config::dump::status")]
        status: StatusCode,
        #[serde(serialize_with = "crate::config::dump::header_map")]
        headers: HeaderMap,
        #[serde(serialize_with = "crate::config::dump::body")]
        body: Bytes,
    },
    /// Answer with files from a folder (and proxy what none answers, if
    /// it has an upstream group).
    Static(
        #[serde(serialize_with = "crate::config::dump::arc")]
        std::sync::Arc<crate::config::static_files::StaticFiles>,
    ),
}

/// How the path is rewritten before going upstream.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rewrite {
    /// Remove this prefix (the path keeps a leading `/`).
    StripPrefix(String),
    /// Replace the regex's match; `$1`, `${name}` refer to captures.
    Regex {
        #[serde(serialize_with = "crate::config::dump::display")]
        regex: regex::Regex,
        replace: String,
    },
}

/// Header edits, applied in this order: remove, set, add.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HeaderOps {
    #[serde(serialize_with = "crate::config::dump::header_names")]
    pub remove: Vec<HeaderName>,
    #[serde(serialize_with = "crate::config::dump::header_pairs")]
    pub set: Vec<(HeaderName, HeaderValue)>,
    #[serde(serialize_with = "crate::config::dump::header_pairs")]
    pub add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    pub fn apply(&self, h: &mut HeaderMap) {
        for n in &self.remove {
            h.remove(n);
        }
        for (n, v) in &self.set {
            h.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            h.append(n.clone(), v.clone());
        }
    }
}

/// Which `Host` header the upstream receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamHost {
    /// The client's `Host`, unchanged (the default, as nginx's `$host`).
    Client,
    /// The chosen upstream server's `host:port`.
    Server,
    /// A fixed value.
    Fixed(#[serde(serialize_with = "crate::config::dump::header_value")] HeaderValue),
}

/// A redirect target: literal text with `{scheme}`, `{host}`, `{path}`,
/// `{query}` (with its `?`, or empty) and `{uri}` (path and query) filled in
/// from the request.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Scheme,
    Host,
    Path,
    Query,
    Uri,
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("`{s}`: `{{` without `}}`"))?
                + open;
            parts.push(match &rest[open + 1..close] {
                "scheme" => Part::Scheme,
                "host" => Part::Host,
                "path" => Part::Path,
                "query" => Part::Query,
                "uri" => Part::Uri,
                other => {
                    return Err(format!(
                        "`{{{other}}}` is not one of {{scheme}} {{host}} {{path}} {{query}} {{uri}}"
                    ))
                }
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// The template as written (`{scheme}`, ... put back).
    fn source(&self) -> String {
        let mut out = String::new();
        for p in &self.parts {
            out.push_str(match p {
                Part::Text(t) => t,
                Part::Scheme => "{scheme}",
                Part::Host => "{host}",
                Part::Path => "{path}",
                Part::Query => "{query}",
                Part::Uri => "{uri}",
            });
        }
        out
    }

    /// The target for a request.
    pub fn expand(&self, scheme: &str, host: &str, path: &str, query: Option<&str>) -> String {
        let mut out = String::with_capacity(64);
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Scheme => out.push_str(scheme),
                Part::Host => out.push_str(host),
                Part::Path => out.push_str(path),
                Part::Query | Part::Uri => {
                    if let Part::Uri = p {
                        out.push_str(path);
                    }
                    if let Some(q) = query {
                        out.push('?');
                        out.push_str(q);
                    }
                }
            }
        }
        out
    }
}

/// As written, without the user information of a URL in it.
impl Serialize for Template {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::config::dump::redact_userinfo(&self.source()))
    }
}

/// A compiled route.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    /// Its position in the config (`routes[index]`).
    pub index: usize,
    /// Its `name`, for metrics.
    pub name: Option<String>,
    pub host: HostMatch,
    pub path: PathMatch,
    /// Empty: any method.
    #[serde(serialize_with = "crate::config::dump::display_all")]
    pub methods: Vec<Method>,
    /// Each header must be present with exactly this value.
    #[serde(serialize_with = "crate::config::dump::header_pairs")]
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub action: Action,
    pub rewrite: Option<Rewrite>,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub upstream_host: UpstreamHost,
    /// The route's own `request_id`, which wins over its listener's for
    /// the requests it takes; `None`: the listener's.
    pub request_id: Option<crate::config::listener::RequestId>,
    /// `access` rules, checked once the route is found; `None`: none.
    #[serde(serialize_with = "crate::config::dump::opt_arc")]
    pub access: Option<std::sync::Arc<crate::message::cidr::Access>>,
    /// `rate_limit`: indexes into `Config::rate_limits`, checked in order.
    pub rate_limit: Vec<usize>,
    /// `concurrency_limit`: indexes into `Config::concurrency_limits`,
    /// taken in order.
    pub concurrency_limit: Vec<usize>,
    /// Request-body limit for this route.
    pub max_body_bytes: Option<u64>,
    #[serde(serialize_with = "crate::config::dump::duration")]
    pub upstream_connect: Duration,
    #[serde(serialize_with = "crate::config::dump::duration")]
    pub upstream_response_head: Duration,
    /// Credentials needed first (`basic_auth`).
    #[serde(serialize_with = "crate::auth::basic::dump")]
    pub basic_auth: Option<std::sync::Arc<crate::auth::basic::BasicAuth>>,
    /// Responses compressed on the way out (`compress`); `None`: the
    /// listener's, if it has one.
    #[serde(serialize_with = "crate::config::dump::opt_arc")]
    pub compress: Option<std::sync::Arc<crate::config::compress::Compress>>,
    /// An upstream group's word needed first (`forward_auth`).
    #[serde(serialize_with = "crate::config::dump::opt_arc")]
    pub forward_auth: Option<std::sync::Arc<crate::config::forward_auth::ForwardAuth>>,
    /// A JWT bearer token needed first (`jwt`).
    #[serde(serialize_with = "crate::auth::jwt::dump")]
    pub(crate) jwt: Option<std::sync::Arc<crate::auth::jwt::Jwt>>,
    /// `cache`: an index into `Config::caches`.
    pub cache: Option<usize>,
}

impl Route {
    /// What it matches, in the config's words (for the status page).
    pub fn describe_match(&self) -> String {
        let mut parts = Vec::new();
        match &self.host {
            HostMatch::Any => {}
            HostMatch::Exact(h) => parts.push(format!("host {h}")),
            HostMatch::Suffix(s) => parts.push(format!("host *{s}")),
        }
        match &self.path {
            PathMatch::Exact(p) => parts.push(format!("path {p}")),
            PathMatch::Prefix(p) if p == "/" && parts.is_empty() => parts.push("any".into()),
            PathMatch::Prefix(p) if p == "/" => {}
            PathMatch::Prefix(p) => parts.push(format!("prefix {p}")),
            PathMatch::Regex(r) => parts.push(format!("regex {}", r.as_str())),
        }
        if !self.methods.is_empty() {
            let m: Vec<&str> = self.methods.iter().map(Method::as_str).collect();
            parts.push(m.join("|"));
        }
        for (n, _) in &self.headers {
            parts.push(format!("header {n}"));
        }
        parts.join(", ")
    }

    /// What metrics call it: its `name`, else `routes[index]`.
    pub fn label(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("routes[{}]", self.index))
    }

    fn rank(
        &self,
    ) -> (
        u8,
        std::cmp::Reverse<usize>,
        u8,
        std::cmp::Reverse<usize>,
        bool,
    ) {
        let (host_rank, host_len) = match &self.host {
            HostMatch::Exact(h) => (0, h.len()),
            HostMatch::Suffix(s) => (1, s.len()),
            HostMatch::Any => (2, 0),
        };
        let (path_rank, path_len) = match &self.path {
            PathMatch::Exact(p) => (0, p.len()),
            PathMatch::Regex(_) => (1, 0),
            PathMatch::Prefix(p) => (2, p.len()),
        };
        let unconditional = self.methods.is_empty() && self.headers.is_empty();
        (
            host_rank,
            std::cmp::Reverse(host_len),
            path_rank,
            std::cmp::Reverse(path_len),
            unconditional,
        )
    }

    fn matches(
        &self,
        host: Option<&[u8]>,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> bool {
        let host_ok = match (&self.host, host) {
            (HostMatch::Any, _) => true,
            (HostMatch::Exact(want), Some(got)) => want.as_bytes().eq_ignore_ascii_case(got),
            (HostMatch::Suffix(suffix), Some(got)) => {
                got.len() > suffix.len()
                    && got[got.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
            }
            (_, None) => false,
        };
        host_ok
            && match &self.path {
                PathMatch::Exact(p) => path == p,
                PathMatch::Prefix(p) => path.starts_with(p.as_str()),
                PathMatch::Regex(r) => r.is_match(path),
            }
            && (self.methods.is_empty() || self.methods.contains(method))
            && self
                .headers
                .iter()
                .all(|(n, v)| headers.get_all(n).iter().any(|got| got == v))
    }

    /// The upstream path for `path`, if this route rewrites it.
    pub fn rewrite_path(&self, path: &str) -> Option<String> {
        match self.rewrite.as_ref()? {
            Rewrite::StripPrefix(prefix) => {
                let rest = path.strip_prefix(prefix.as_str())?;
                Some(if rest.starts_with('/') {
                    rest.to_string()
                } else {
                    format!("/{rest}")
                })
            }
            Rewrite::Regex { regex, replace } => {
                let out = regex.replace(path, replace.as_str());
                match out {
                    std::borrow::Cow::Borrowed(_) => None,
                    std::borrow::Cow::Owned(s) => Some(s),
                }
            }
        }
    }
}

/// Routes in match order.
#[derive(Debug)]
pub(crate) struct Router {
    routes: Vec<Route>,
    /// Whether some route has its own `request_id`: then a request's ID
    /// waits until its route is known.
    pub(crate) route_request_ids: bool,
}

impl Router {
    pub(crate) fn new(routes: &[Route]) -> Router {
        let mut routes = routes.to_vec();
        // Stable: the file's order decides among equals.
        routes.sort_by_key(Route::rank);
        Router {
            route_request_ids: routes.iter().any(|r| r.request_id.is_some()),
            routes,
        }
    }

    /// The route for a request; `host` as sent (may carry a port, any case).
    pub(crate) fn find(
        &self,
        host: Option<&[u8]>,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<&Route> {
        let host = host.map(strip_port);
        self.routes
            .iter()
            .find(|r| r.matches(host, path, method, headers))
    }
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
pub(crate) fn strip_port(host: &[u8]) -> &[u8] {
    match host.iter().rposition(|&b| b == b':') {
        Some(i) if !host[i..].contains(&b']') => &host[..i],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: HostMatch, path: PathMatch, upstream: usize) -> Route {
        Route {
            index: 0,
            name: None,
            host,
            path,
            methods: Vec::new(),
            headers: Vec::new(),
            action: Action::Proxy(upstream),
            rewrite: None,
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
            upstream_host: UpstreamHost::Client,
            request_id: None,
            access: None,
            rate_limit: Vec::new(),
            concurrency_limit: Vec::new(),
            max_body_bytes: None,
            upstream_connect: Duration::from_secs(1),
            upstream_response_head: Duration::from_secs(1),
            basic_auth: None,
            compress: None,
            cache: None,
            forward_auth: None,
            jwt: None,
        }
    }

    fn prefix(p: &str) -> PathMatch {
        PathMatch::Prefix(p.into())
    }

    fn which(r: &Router, host: &str, path: &str) -> Option<usize> {
        which_with(r, host, path, &Method::GET, &HeaderMap::new())
    }

    fn which_with(r: &Router, host: &str, path: &str, m: &Method, h: &HeaderMap) -> Option<usize> {
        r.find(Some(host.as_bytes()), path, m, h)
            .map(|r| match r.action {
                Action::Proxy(u) => u,
                _ => usize::MAX,
            })
    }

    #[test]
    fn host_kinds_in_order_exact_wildcard_any() {
        let r = Router::new(&[
            route(HostMatch::Any, prefix("/"), 0),
            route(HostMatch::Suffix(".example.com".into()), prefix("/"), 1),
            route(HostMatch::Suffix(".api.example.com".into()), prefix("/"), 2),
            route(HostMatch::Exact("www.example.com".into()), prefix("/"), 3),
        ]);
        assert_eq!(which(&r, "WWW.example.com:8080", "/"), Some(3));
        assert_eq!(which(&r, "v1.api.example.com", "/"), Some(2));
        assert_eq!(which(&r, "shop.example.com", "/"), Some(1));
        // The bare domain is not under its own wildcard.
        assert_eq!(which(&r, "example.com", "/"), Some(0));
        assert_eq!(which(&r, "other.test", "/"), Some(0));
    }

    #[test]
    fn path_kinds_in_order_exact_regex_longest_prefix() {
        let r = Router::new(&[
            route(HostMatch::Any, prefix("/"), 0),
            route(HostMatch::Any, prefix("/static/"), 1),
            route(
                HostMatch::Any,
                PathMatch::Regex(regex::Regex::new(r"\.php$").unwrap()),
                2,
            ),
            route(
                HostMatch::Any,
                PathMatch::Exact("/static/index.php".into()),
                3,
            ),
            route(HostMatch::Any, prefix("/static/img/"), 4),
        ]);
        assert_eq!(which(&r, "h", "/static/index.php"), Some(3));
        assert_eq!(which(&r, "h", "/static/x.php"), Some(2));
        assert_eq!(which(&r, "h", "/static/img/a.png"), Some(4));
        assert_eq!(which(&r, "h", "/static/a.css"), Some(1));
        assert_eq!(which(&r, "h", "/other"), Some(0));
    }

    #[test]
    fn conditions_on_method_and_headers() {
        let mut canary = route(HostMatch::Any, prefix("/"), 1);
        canary.headers = vec![(
            HeaderName::from_static("x-canary"),
            HeaderValue::from_static("1"),
        )];
        let mut writes = route(HostMatch::Any, prefix("/"), 2);
        writes.methods = vec![Method::POST, Method::PUT];
        let r = Router::new(&[route(HostMatch::Any, prefix("/"), 0), canary, writes]);
        let mut h = HeaderMap::new();
        assert_eq!(which_with(&r, "h", "/", &Method::GET, &h), Some(0));
        assert_eq!(which_with(&r, "h", "/", &Method::PUT, &h), Some(2));
        h.insert("x-canary", HeaderValue::from_static("1"));
        assert_eq!(which_with(&r, "h", "/", &Method::GET, &h), Some(1));
        h.insert("x-canary", HeaderValue::from_static("0"));
        assert_eq!(which_with(&r, "h", "/", &Method::GET, &h), Some(0));
    }

    #[test]
    fn file_order_breaks_ties() {
        let r = Router::new(&[
            route(HostMatch::Any, prefix("/a"), 0),
            route(HostMatch::Any, prefix("/a"), 1),
        ]);
        assert_eq!(which(&r, "h", "/a"), Some(0));
    }

    #[test]
    fn no_match_is_none() {
        let r = Router::new(&[route(HostMatch::Exact("a.test".into()), prefix("/only"), 0)]);
        assert_eq!(which(&r, "a.test", "/other"), None);
        assert_eq!(which(&r, "b.test", "/only"), None);
        assert!(r
            .find(None, "/only", &Method::GET, &HeaderMap::new())
            .is_none());
    }

    #[test]
    fn rewrites() {
        let mut r = route(HostMatch::Any, prefix("/api"), 0);
        r.rewrite = Some(Rewrite::StripPrefix("/api".into()));
        assert_eq!(r.rewrite_path("/api/users").as_deref(), Some("/users"));
        assert_eq!(r.rewrite_path("/api").as_deref(), Some("/"));
        r.rewrite = Some(Rewrite::Regex {
            regex: regex::Regex::new(r"^/old/(\w+)/(\d+)$").unwrap(),
            replace: "/new/$2/$1".into(),
        });
        assert_eq!(
            r.rewrite_path("/old/user/42").as_deref(),
            Some("/new/42/user")
        );
        assert_eq!(r.rewrite_path("/other"), None);
    }

    #[test]
    fn templates() {
        let t = Template::parse("https://{host}{uri}").unwrap();
        assert_eq!(
            t.expand("http", "a.test", "/p", Some("x=1")),
            "https://a.test/p?x=1"
        );
        let t = Template::parse("{scheme}://new.test{path}{query}#top").unwrap();
        assert_eq!(t.expand("http", "a", "/p", None), "http://new.test/p#top");
        assert!(Template::parse("{nope}").is_err());
        assert!(Template::parse("{host").is_err());
    }

    #[test]
    fn strips_ports_but_not_ipv6() {
        assert_eq!(strip_port(b"a:1"), b"a");
        assert_eq!(strip_port(b"[::1]:80"), b"[::1]");
        assert_eq!(strip_port(b"[::1]"), b"[::1]");
        assert_eq!(strip_port(b"a"), b"a");
    }
}
