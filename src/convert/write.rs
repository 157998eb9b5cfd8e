//! What the conversion produced, as Tidegate TOML text (strings quoted by
//! the `toml` crate, so any byte the nginx file held is written validly).
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A listener to write.
#[derive(Debug, Default)]
pub(super) struct Listener {
    pub(super) http2: bool,
    /// `(cert, key)` paths; the first is the default certificate.
    pub(super) certificates: Vec<(String, String)>,
    pub(super) tls: bool,
    pub(super) redirect_https: Option<u16>,
    pub(super) from: String,
    /// Set by the first server on the address (empty: none trusted).
    pub(super) trusted_proxies: Option<Vec<String>>,
    /// `listen ... proxy_protocol`: the peers whose headers are read.
    pub(super) proxy_protocol_from: Option<Vec<String>>,
}

/// A route's path matcher.
#[derive(Debug, Clone)]
pub(super) enum Path {
    Exact(String),
    Prefix(String),
    Regex(String),
}

/// A route's action.
#[derive(Debug, Clone)]
pub(super) enum Action {
    Upstream(String),
    Redirect(u16, String),
    Respond(u16, Option<String>),
    /// Its `static` files alone (no group for what they do not answer).
    Files,
}

/// A route's `static` table (`files.rs`).
#[derive(Debug, Clone, Default)]
pub(super) struct Files {
    pub(super) root: String,
    /// nginx's `index` (absent: Tidegate's default, nginx's too).
    pub(super) index: Option<Vec<String>>,
    /// A file under `root` for GETs that find none (`try_files ... /URI`).
    pub(super) fallback: Option<String>,
    /// `gzip_static on`.
    pub(super) precompressed: bool,
}

/// A route to write.
#[derive(Debug, Clone)]
pub(super) struct Route {
    pub(super) from: String,
    pub(super) host: Option<String>,
    pub(super) path: Path,
    pub(super) action: Action,
    pub(super) rewrite: Option<(String, String)>,
    /// `alias`: the location's prefix, taken off before the file is
    /// looked for.
    pub(super) strip_prefix: Option<String>,
    pub(super) files: Option<Files>,
    pub(super) request_set: BTreeMap<String, String>,
    pub(super) request_remove: Vec<String>,
    pub(super) response_add: BTreeMap<String, String>,
    pub(super) max_body_bytes: Option<u64>,
    pub(super) upstream_host: Option<String>,
    pub(super) connect_timeout: Option<String>,
    pub(super) read_timeout: Option<String>,
    /// `allow`/`deny` rules, as Tidegate writes them.
    pub(super) access: Vec<String>,
    /// `(realm, htpasswd file)`.
    pub(super) basic_auth: Option<(String, String)>,
    /// From `limit_req` lines (`rates.rs`).
    pub(super) rate_limits: Vec<RateLimit>,
    /// From `limit_conn` lines (`gates.rs`).
    pub(super) concurrency_limits: Vec<ConcurrencyLimit>,
    /// From `auth_request` (`gates.rs`).
    pub(super) forward_auth: Option<ForwardAuth>,
}

/// A `limit_conn ZONE N` with its zone's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ConcurrencyLimit {
    pub(super) zone: String,
    /// As Tidegate writes a key (`client_ip`, `header:NAME`...).
    pub(super) key: String,
    pub(super) max: u32,
    /// The `limit_conn_zone` line.
    pub(super) from: String,
}

/// A `limit_req` with its zone's key and rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RateLimit {
    pub(super) zone: String,
    /// As Tidegate writes a key's parts.
    pub(super) key: Vec<String>,
    /// As Tidegate writes a rate (`10/s`).
    pub(super) rate: String,
    pub(super) burst: u32,
    /// `reject` (nodelay) or `delay`.
    pub(super) mode: &'static str,
    /// The `limit_req_zone` line.
    pub(super) from: String,
}

/// A route's `forward_auth`.
#[derive(Debug, Clone)]
pub(super) struct ForwardAuth {
    pub(super) upstream: String,
    pub(super) path: String,
    pub(super) request_headers: Vec<String>,
    pub(super) response_headers: Vec<String>,
}

/// An upstream group to write.
#[derive(Debug, Default)]
pub(super) struct Group {
    /// `(address with scheme, weight, backup)`.
    pub(super) servers: Vec<(String, u32, bool)>,
    pub(super) balance: &'static str,
    pub(super) hash_key: Option<&'static str>,
    pub(super) max_fails: u32,
    pub(super) fail_timeout: String,
    pub(super) from: String,
    /// `"v1"`: `proxy_protocol on` in a `stream` server.
    pub(super) proxy_protocol: Option<&'static str>,
    /// `proxy_ssl on` in a `stream` server: the group's `tls` table.
    pub(super) tls: Option<UpstreamTls>,
}

/// A group's `tls` table (`proxy_ssl_*`).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct UpstreamTls {
    pub(super) ca_file: Option<String>,
    pub(super) server_name: Option<String>,
    pub(super) client_cert: Option<String>,
    pub(super) client_key: Option<String>,
}

/// A `[[streams]]` entry to write (`streams.rs`).
#[derive(Debug, Default)]
pub(super) struct StreamOut {
    pub(super) from: String,
    pub(super) address: String,
    pub(super) upstream: Option<String>,
    /// SNI routes: names and their group.
    pub(super) sni: Vec<(Vec<String>, String)>,
    /// `(cert, key)`: TLS terminated here.
    pub(super) certificates: Vec<(String, String)>,
    /// The peers whose PROXY headers are read.
    pub(super) proxy_protocol_from: Option<Vec<String>>,
    pub(super) access: Vec<String>,
    /// `limit_conn` on a zone keyed by the client's address.
    pub(super) max_connections_per_ip: Option<u32>,
    pub(super) connect_timeout: Option<String>,
    pub(super) idle_timeout: Option<String>,
    pub(super) preread_timeout: Option<String>,
}

/// The whole output.
#[derive(Debug, Default)]
pub(super) struct Output {
    pub(super) threads: Option<u64>,
    pub(super) access_log: Option<(String, Option<&'static str>)>,
    pub(super) client_idle: Option<String>,
    pub(super) client_header: Option<String>,
    pub(super) listeners: BTreeMap<String, Listener>,
    pub(super) routes: Vec<Route>,
    pub(super) streams: Vec<StreamOut>,
    pub(super) groups: BTreeMap<String, Group>,
}

fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// `s` as a TOML key: quoted on one line when it must be (a value may be
/// a multi-line string, a key may not).
fn key(s: &str) -> String {
    toml_edit::Key::new(s).to_string()
}

fn map(m: &BTreeMap<String, String>) -> String {
    let items: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{} = {}", key(k), q(v)))
        .collect();
    format!("{{ {} }}", items.join(", "))
}

fn list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", items.join(", "))
}

/// `tls = { certificates = [...] }` of `(cert, key)` pairs.
fn tls(pairs: &[(String, String)]) -> String {
    let certs: Vec<String> = pairs
        .iter()
        .map(|(c, k)| format!("{{ cert = {}, key = {} }}", q(c), q(k)))
        .collect();
    format!("tls = {{ certificates = [{}] }}", certs.join(", "))
}

/// The limits of every route as named tables, and each route's names:
/// a zone's lines that differ in what Tidegate keeps on the table get the
/// first free name of `names(limit)` (else the zone's name and a count).
fn tables<'a, L: PartialEq>(
    routes: &'a [Route],
    of: impl Fn(&'a Route) -> &'a Vec<L>,
    names: impl Fn(&L) -> Vec<String>,
) -> (BTreeMap<String, &'a L>, Vec<Vec<String>>) {
    let mut tables: BTreeMap<String, &L> = BTreeMap::new();
    let mut out = Vec::new();
    for r in routes {
        let mut mine = Vec::new();
        for l in of(r) {
            let fits = |n: &String| tables.get(n).is_none_or(|have| *have == l);
            let candidates = names(l);
            let first = candidates.first().cloned().unwrap_or_default();
            let name = candidates
                .into_iter()
                .chain((2..).map(|i| format!("{first}_{i}")))
                .find(fits)
                .unwrap_or_default();
            tables.entry(name.clone()).or_insert(l);
            if !mine.contains(&name) {
                mine.push(name);
            }
        }
        out.push(mine);
    }
    (tables, out)
}

impl Output {
    pub(super) fn toml(&self) -> String {
        let mut o = String::from(
            "# Written by `tidegate convert`; see README.md, \"Converting an nginx config\".\n",
        );
        // `write!` to a String cannot fail.
        let mut server = Vec::new();
        if let Some(t) = self.threads {
            server.push(format!("threads = {t}"));
        }
        if let Some((path, format)) = &self.access_log {
            server.push(format!("access_log = {}", q(path)));
            if let Some(f) = format {
                server.push(format!("access_log_format = {}", q(f)));
            }
        }
        if !server.is_empty() {
            let _ = writeln!(o, "\n[server]\n{}", server.join("\n"));
        }
        let mut timeouts = Vec::new();
        if let Some(t) = &self.client_idle {
            timeouts.push(format!("client_idle = {}", q(t)));
        }
        if let Some(t) = &self.client_header {
            timeouts.push(format!("client_header = {}", q(t)));
        }
        if !timeouts.is_empty() {
            let _ = writeln!(o, "\n[timeouts]\n{}", timeouts.join("\n"));
        }
        for (address, l) in &self.listeners {
            let _ = writeln!(o, "\n[[listeners]]   # {}", l.from);
            let _ = writeln!(o, "address = {}", q(address));
            let _ = writeln!(o, "http2 = {}", l.http2);
            if let Some(port) = l.redirect_https {
                let _ = writeln!(o, "redirect_https = {port}");
            }
            if let Some(t) = l.trusted_proxies.as_ref().filter(|t| !t.is_empty()) {
                let _ = writeln!(o, "trusted_proxies = {}", list(t));
            }
            if let Some(from) = &l.proxy_protocol_from {
                let _ = writeln!(o, "proxy_protocol = {{ from = {} }}", list(from));
            }
            if l.tls {
                let _ = writeln!(o, "{}", tls(&l.certificates));
            }
        }
        // One table per zone and number: a zone used with two numbers
        // becomes two limits (nginx counts both on one zone).
        let (limits, names) = tables(
            &self.routes,
            |r| &r.concurrency_limits,
            |l| vec![l.zone.clone(), format!("{}_{}", l.zone, l.max)],
        );
        for (name, l) in &limits {
            let _ = writeln!(o, "\n[concurrency_limits.{}]   # {}", key(name), l.from);
            let _ = writeln!(o, "key = {}\nmax = {}", q(&l.key), l.max);
        }
        // The same for burst and mode, which nginx gives each limit_req
        // line and Tidegate each limit.
        let (rates, rate_names) = tables(
            &self.routes,
            |r| &r.rate_limits,
            |l| {
                let b = format!("{}_burst{}", l.zone, l.burst);
                vec![l.zone.clone(), b.clone(), format!("{b}_{}", l.mode)]
            },
        );
        for (name, l) in &rates {
            let _ = writeln!(o, "\n[rate_limits.{}]   # {}", key(name), l.from);
            let k = match l.key.as_slice() {
                [one] => q(one),
                many => list(many),
            };
            let _ = writeln!(o, "key = {k}\nrate = {}", q(&l.rate));
            let _ = writeln!(o, "burst = {}\nmode = {}", l.burst, q(l.mode));
        }
        for ((r, limit_names), rate_names) in self.routes.iter().zip(&names).zip(&rate_names) {
            let _ = writeln!(o, "\n[[routes]]   # {}", r.from);
            if let Some(h) = &r.host {
                let _ = writeln!(o, "host = {}", q(h));
            }
            let _ = match &r.path {
                Path::Exact(p) => writeln!(o, "path = {}", q(p)),
                Path::Prefix(p) => writeln!(o, "path_prefix = {}", q(p)),
                Path::Regex(p) => writeln!(o, "path_regex = {}", q(p)),
            };
            let _ = match &r.action {
                Action::Upstream(g) => writeln!(o, "upstream = {}", q(g)),
                Action::Redirect(status, location) => writeln!(
                    o,
                    "redirect = {{ status = {status}, location = {} }}",
                    q(location)
                ),
                Action::Respond(status, None) => writeln!(o, "respond = {{ status = {status} }}"),
                Action::Respond(status, Some(body)) => {
                    writeln!(o, "respond = {{ status = {status}, body = {} }}", q(body))
                }
                Action::Files => Ok(()),
            };
            if let Some(f) = &r.files {
                let mut t = vec![format!("root = {}", q(&f.root))];
                if let Some(index) = &f.index {
                    t.push(format!("index = {}", list(index)));
                }
                if let Some(fallback) = &f.fallback {
                    t.push(format!("fallback = {}", q(fallback)));
                }
                if !f.precompressed {
                    t.push("precompressed = false".into());
                }
                let _ = writeln!(o, "static = {{ {} }}", t.join(", "));
            }
            if let Some(p) = &r.strip_prefix {
                let _ = writeln!(o, "strip_prefix = {}", q(p));
            }
            if let Some((regex, replace)) = &r.rewrite {
                let _ = writeln!(
                    o,
                    "rewrite = {{ regex = {}, replace = {} }}",
                    q(regex),
                    q(replace)
                );
            }
            if let Some(h) = &r.upstream_host {
                let _ = writeln!(o, "upstream_host = {}", q(h));
            }
            if let Some(n) = r.max_body_bytes {
                let _ = writeln!(o, "max_body_bytes = {n}");
            }
            if !r.access.is_empty() {
                let _ = writeln!(o, "access = {}", list(&r.access));
            }
            if let Some((realm, file)) = &r.basic_auth {
                let (realm, file) = (q(realm), q(file));
                let _ = writeln!(o, "basic_auth = {{ realm = {realm}, htpasswd = {file} }}");
            }
            if !rate_names.is_empty() {
                let _ = writeln!(o, "rate_limit = {}", list(rate_names));
            }
            if !limit_names.is_empty() {
                let _ = writeln!(o, "concurrency_limit = {}", list(limit_names));
            }
            if let Some(fa) = &r.forward_auth {
                let _ = writeln!(
                    o,
                    "forward_auth = {{ upstream = {}, path = {}, request_headers = {}, response_headers = {}, on_error = 500 }}",
                    q(&fa.upstream),
                    q(&fa.path),
                    list(&fa.request_headers),
                    list(&fa.response_headers)
                );
            }
            let mut ops = Vec::new();
            if !r.request_set.is_empty() {
                ops.push(format!("set = {}", map(&r.request_set)));
            }
            if !r.request_remove.is_empty() {
                let names: Vec<String> = r.request_remove.iter().map(|n| q(n)).collect();
                ops.push(format!("remove = [{}]", names.join(", ")));
            }
            if !ops.is_empty() {
                let _ = writeln!(o, "request_headers = {{ {} }}", ops.join(", "));
            }
            if !r.response_add.is_empty() {
                let _ = writeln!(o, "response_headers = {{ add = {} }}", map(&r.response_add));
            }
            let mut t = Vec::new();
            if let Some(d) = &r.connect_timeout {
                t.push(format!("upstream_connect = {}", q(d)));
            }
            if let Some(d) = &r.read_timeout {
                t.push(format!("upstream_response_head = {}", q(d)));
            }
            if !t.is_empty() {
                let _ = writeln!(o, "timeouts = {{ {} }}", t.join(", "));
            }
        }
        for s in &self.streams {
            let _ = writeln!(o, "\n[[streams]]   # {}", s.from);
            let _ = writeln!(o, "address = {}", q(&s.address));
            if let Some(g) = &s.upstream {
                let _ = writeln!(o, "upstream = {}", q(g));
            }
            if !s.sni.is_empty() {
                let routes: Vec<String> = s
                    .sni
                    .iter()
                    .map(|(names, g)| format!("{{ names = {}, upstream = {} }}", list(names), q(g)))
                    .collect();
                let _ = writeln!(o, "sni = [{}]", routes.join(", "));
            }
            for (key, value) in [
                ("connect_timeout", &s.connect_timeout),
                ("idle_timeout", &s.idle_timeout),
                ("preread_timeout", &s.preread_timeout),
            ] {
                if let Some(v) = value {
                    let _ = writeln!(o, "{key} = {}", q(v));
                }
            }
            if !s.access.is_empty() {
                let _ = writeln!(o, "access = {}", list(&s.access));
            }
            if let Some(n) = s.max_connections_per_ip {
                let _ = writeln!(o, "max_connections_per_ip = {n}");
            }
            if let Some(from) = &s.proxy_protocol_from {
                let _ = writeln!(o, "proxy_protocol = {{ from = {} }}", list(from));
            }
            if !s.certificates.is_empty() {
                let _ = writeln!(o, "{}", tls(&s.certificates));
            }
        }
        for (name, g) in &self.groups {
            let _ = writeln!(o, "\n[upstreams.{}]   # {}", key(name), g.from);
            let servers: Vec<String> = g
                .servers
                .iter()
                .map(|(a, w, backup)| match backup {
                    false => format!("{{ address = {}, weight = {w} }}", q(a)),
                    true => format!("{{ address = {}, weight = {w}, backup = true }}", q(a)),
                })
                .collect();
            let _ = writeln!(o, "servers = [{}]", servers.join(", "));
            let _ = writeln!(o, "balance = {}", q(g.balance));
            if let Some(v) = g.proxy_protocol {
                let _ = writeln!(o, "proxy_protocol = {}", q(v));
            }
            if let Some(t) = &g.tls {
                let fields: Vec<String> = [
                    ("ca_file", &t.ca_file),
                    ("server_name", &t.server_name),
                    ("client_cert", &t.client_cert),
                    ("client_key", &t.client_key),
                ]
                .into_iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} = {}", q(v))))
                .collect();
                if !fields.is_empty() {
                    let _ = writeln!(o, "tls = {{ {} }}", fields.join(", "));
                }
            }
            if let Some(k) = g.hash_key {
                let _ = writeln!(o, "hash_key = {}", q(k));
            }
            let _ = writeln!(
                o,
                "outlier = {{ consecutive_failures = {}, base_ejection = {t}, max_ejection = {t}, max_ejected_percent = 100 }}",
                g.max_fails,
                t = q(&g.fail_timeout)
            );
        }
        o
    }
}
