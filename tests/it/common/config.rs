//! Test configs built by type: the `[server]`, listener and upstream
//! prelude every proxy test needs, and routes, without a TOML string per
//! test. The result is TOML text, loaded as a user's file is (a few tests,
//! such as `routing::rewrites_redirects_fixed_responses_and_header_edits`
//! and the `cli` ones, keep real TOML on purpose).

use std::fmt::Display;

use toml::{Table, Value};

/// A whole config.
#[derive(Debug, Clone)]
pub struct TestConfig {
    doc: Table,
    listeners: Vec<Table>,
    routes: Vec<Table>,
}

impl Default for TestConfig {
    fn default() -> Self {
        TestConfig::new()
    }
}

impl TestConfig {
    /// Two threads, `warn` logs, a 10 s shutdown grace, one plain listener
    /// on a free loopback port; no route and no upstream yet.
    pub fn new() -> TestConfig {
        TestConfig {
            doc: Table::new(),
            listeners: vec![table([("address", "127.0.0.1:0".into())])],
            routes: Vec::new(),
        }
        .set("server.threads", 2)
        .set("server.log_level", "warn")
        .set("server.shutdown_grace", "10s")
    }

    /// [`TestConfig::new`] with every request proxied to `upstream`
    /// (group `app`).
    pub fn proxying(upstream: impl Display) -> TestConfig {
        TestConfig::new()
            .group("app", [upstream])
            .route(Route::to("app"))
    }

    pub fn threads(self, n: usize) -> TestConfig {
        self.set("server.threads", n as i64)
    }

    pub fn log_level(self, level: &str) -> TestConfig {
        self.set("server.log_level", level)
    }

    /// Sets a dotted key (`timeouts.client_idle`, `upstreams.app.retry.attempts`),
    /// creating the tables on the way.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> TestConfig {
        set(&mut self.doc, key, value.into());
        self
    }

    /// Sets a key on the last listener.
    pub fn listener_set(mut self, key: &str, value: impl Into<Value>) -> TestConfig {
        let last = self.listeners.last_mut().expect("a listener");
        set(last, key, value.into());
        self
    }

    /// TLS on the last listener with these `(cert, key)` files.
    pub fn listener_tls(self, certificates: &[(&str, &str)]) -> TestConfig {
        let certs: Vec<Value> = certificates
            .iter()
            .map(|(c, k)| Value::Table(table([("cert", (*c).into()), ("key", (*k).into())])))
            .collect();
        self.listener_set("tls.certificates", certs)
    }

    /// Listeners at these addresses instead.
    pub fn listeners_at(mut self, addresses: &[&str]) -> TestConfig {
        self.listeners = addresses
            .iter()
            .map(|a| table([("address", (*a).into())]))
            .collect();
        self
    }

    /// Another listener at `address`.
    pub fn listener(mut self, address: &str) -> TestConfig {
        self.listeners.push(table([("address", address.into())]));
        self
    }

    /// The upstream group `name` with these servers.
    pub fn group<S: Display>(self, name: &str, servers: impl IntoIterator<Item = S>) -> TestConfig {
        let servers: Vec<Value> = servers.into_iter().map(|s| s.to_string().into()).collect();
        self.set(&format!("upstreams.{name}.servers"), servers)
    }

    /// Another route (the router tries the most specific first, whatever
    /// the order).
    pub fn route(mut self, r: Route) -> TestConfig {
        self.routes.push(r.0);
        self
    }

    /// The TOML text.
    pub fn toml(&self) -> String {
        let mut doc = self.doc.clone();
        let array =
            |tables: &[Table]| Value::Array(tables.iter().cloned().map(Value::Table).collect());
        doc.insert("listeners".into(), array(&self.listeners));
        if !self.routes.is_empty() {
            doc.insert("routes".into(), array(&self.routes));
        }
        toml::to_string(&doc).expect("a test config serialises")
    }
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct Route(Table);

impl Route {
    /// A route proxying to `group`.
    pub fn to(group: &str) -> Route {
        Route(table([("upstream", group.into())]))
    }

    /// A route answering itself with `status` (`respond`).
    pub fn respond(status: u16) -> Route {
        Route(table([(
            "respond",
            Value::Table(table([("status", i64::from(status).into())])),
        )]))
    }

    pub fn host(self, host: &str) -> Route {
        self.set("host", host)
    }

    pub fn path(self, path: &str) -> Route {
        self.set("path", path)
    }

    pub fn path_prefix(self, prefix: &str) -> Route {
        self.set("path_prefix", prefix)
    }

    pub fn path_regex(self, regex: &str) -> Route {
        self.set("path_regex", regex)
    }

    pub fn methods(self, methods: &[&str]) -> Route {
        let m: Vec<Value> = methods.iter().map(|m| Value::from(*m)).collect();
        self.set("methods", m)
    }

    /// Matches only requests with this header value.
    pub fn header(self, name: &str, value: &str) -> Route {
        self.set(&format!("headers.\"{name}\""), value)
    }

    /// Any other key, dotted for tables (`timeouts.upstream_response_head`).
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Route {
        set(&mut self.0, key, value.into());
        self
    }
}

fn table<const N: usize>(pairs: [(&str, Value); N]) -> Table {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// `a.b."c.d"`: keys, a quoted one kept whole.
fn keys(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').expect("closing quote");
            out.push(quoted[..end].to_string());
            rest = quoted[end + 1..].trim_start_matches('.');
        } else {
            let end = rest.find('.').unwrap_or(rest.len());
            out.push(rest[..end].to_string());
            rest = rest[end..].trim_start_matches('.');
        }
    }
    out
}

fn set(t: &mut Table, path: &str, value: Value) {
    let keys = keys(path);
    let (last, tables) = keys.split_last().expect("a key");
    let mut t = t;
    for k in tables {
        t = t
            .entry(k.clone())
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .expect("a table on the way");
    }
    t.insert(last.clone(), value);
}

#[test]
fn a_built_config_loads_as_written() {
    let text = TestConfig::proxying("127.0.0.1:9")
        .threads(1)
        .set("timeouts.client_idle", "1s")
        .set("upstreams.app.retry.attempts", 3)
        .route(
            Route::to("app")
                .path_prefix("/a/")
                .methods(&["GET"])
                .header("x-canary", "1")
                .set("timeouts.upstream_response_head", "300ms"),
        )
        .toml();
    let c = tidegate::Config::from_toml(&text, "built.toml").expect("valid");
    assert_eq!(c.threads, 1);
    assert_eq!(c.timeouts.client_idle, std::time::Duration::from_secs(1));
    assert_eq!(c.upstreams[0].retry.attempts, 3);
    assert_eq!(c.routes.len(), 2);
    assert_eq!(
        c.routes[1].upstream_response_head,
        std::time::Duration::from_millis(300)
    );
    assert_eq!(c.routes[1].headers.len(), 1);
}
