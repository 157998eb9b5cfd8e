//! The nginx tree mapped to Tidegate's listeners, routes and groups.
//!
//! nginx picks a server by listen address and name, then a location: `=`
//! exact, else the longest prefix (final when it is `^~`), else the first
//! regex in file order, else that longest prefix. Tidegate's fixed route
//! order (exact host, wildcard, any; then exact path, regex in file order,
//! longest prefix) gives the same choice when each location becomes one
//! route, except `^~`: in a server with regex locations, a `^~` prefix is
//! written as an anchored regex placed before the server's other regexes.
//!
//! `groups.rs`: the upstream groups `proxy_pass` lines name; `listen.rs`:
//! `listen` lines and a server's own lines.
use std::collections::{BTreeMap, HashSet};

use super::parse::Directive;
use super::values;
use super::write::{Listener, Output, Route};
use super::{Conversion, Skipped};

mod groups;
mod listen;

pub(super) use groups::{TcpWay, UNCHECKED};
pub(super) use listen::{listen, Server};

/// nginx's `client_max_body_size` default (1m).
pub(super) const NGINX_BODY_LIMIT: u64 = 1 << 20;

/// What a level (http, server, location) passes down to the levels inside.
/// nginx's array directives (`proxy_set_header`, `add_header`) are inherited
/// only by a level that sets none of its own.
#[derive(Clone, Default)]
pub(super) struct Inherited {
    pub body_limit: Option<u64>,
    pub proxy_headers: Option<Vec<(String, String, String)>>,
    pub add_headers: Option<Vec<(String, String, String)>>,
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
    pub certificate: Option<String>,
    pub key: Option<String>,
    /// `allow`/`deny` and the real-IP lines (`access.rs`).
    pub access: super::access::Lines,
    /// `limit_conn` and `auth_request` lines (`gates.rs`).
    pub gates: super::gates::Lines,
    pub auth_basic: Option<String>,
    pub auth_basic_user_file: Option<String>,
    /// File serving (`files.rs`): `root`, `index`, `gzip_static`.
    pub root: Option<String>,
    pub index: Option<Vec<String>>,
    pub gzip_static: bool,
}

/// What is said of nginx's tuning directives.
const TUNING: &str =
    "not converted: Tidegate's defaults apply (static routes send with sendfile); \
     compression is set by hand (README: \"Compression\")";

pub(super) struct Converter {
    out: Output,
    skipped: Vec<Skipped>,
    /// Names of the `upstream` blocks (proxy_pass may name them).
    group_names: HashSet<String>,
    /// Upstream blocks, read when a proxy_pass first names them.
    blocks: BTreeMap<String, Directive>,
    /// Hosts (`None`: no host) already given routes, with where.
    hosts_taken: BTreeMap<Option<String>, String>,
    /// The upper layers' parts (given by the driver: they build on this
    /// file, which does not import them).
    parts: Parts,
    /// The groups made for `stream` blocks (`streams.rs`), by the name
    /// or address their `proxy_pass` gave and how they connect.
    tcp_groups: BTreeMap<(String, TcpWay), String>,
}

/// What turns one server block into routes (`routes.rs`), and a `stream`
/// block into streams (`streams.rs`).
pub(super) struct Parts {
    pub(super) server_routes: fn(&mut Converter, &Server, &Inherited),
    pub(super) streams: fn(&mut Converter, &[Directive]),
}

/// Converts a parsed (include-expanded) nginx configuration.
pub(super) fn convert(tree: &[Directive], parts: Parts) -> Conversion {
    let mut c = Converter {
        out: Output::default(),
        skipped: Vec::new(),
        group_names: HashSet::new(),
        blocks: BTreeMap::new(),
        hosts_taken: BTreeMap::new(),
        parts,
        tcp_groups: BTreeMap::new(),
    };
    for d in tree {
        match (d.name.as_str(), &d.block) {
            ("http", Some(block)) => c.http(block),
            // After the `http` blocks (below): a stream's group then
            // takes a name no HTTP route's group has.
            ("stream", Some(_)) => {}
            ("load_module", None) => c.skip(d, "Tidegate loads no modules (streams are built in)"),
            ("worker_processes", None) => match d.args.first().map(|a| a.parse::<u64>()) {
                Some(Ok(n)) if n > 0 => c.out.threads = Some(n),
                Some(_) if d.args.first().map(String::as_str) == Some("auto") => {}
                _ => c.skip(d, "not a number of workers"),
            },
            ("events", _) => c.skip(d, "Tidegate handles connections its own way (see [limits])"),
            ("include", None) => c.skip(d, "includes are followed only when converting a file"),
            _ => c.skip(d, "not converted (outside the reverse-proxy subset)"),
        }
    }
    for d in tree {
        if let ("stream", Some(block)) = (d.name.as_str(), &d.block) {
            (c.parts.streams)(&mut c, block);
        }
    }
    let streams = std::mem::take(&mut c.out.streams);
    c.out.streams = without_ipv4_twins(streams, |s| &s.address, |s| &s.from, &mut c.skipped);
    // A header line inherited by several locations is reported once.
    let mut seen = HashSet::new();
    c.skipped.retain(|s| seen.insert(s.clone()));
    Conversion {
        toml: c.out.toml(),
        skipped: c.skipped,
    }
}

/// `items` less each `[::]:P` beside a `0.0.0.0:P` (Tidegate refuses the
/// pair: the latter listens on both), each reported at its `listen`.
fn without_ipv4_twins<T>(
    items: Vec<T>,
    address: fn(&T) -> &String,
    from: fn(&T) -> &String,
    skipped: &mut Vec<Skipped>,
) -> Vec<T> {
    let all: HashSet<String> = items.iter().map(|i| address(i).clone()).collect();
    let mut kept = Vec::new();
    for i in items {
        let twin = address(&i)
            .strip_prefix("[::]:")
            .map(|port| format!("0.0.0.0:{port}"))
            .filter(|twin| all.contains(twin));
        match twin {
            Some(twin) => skipped.push(Skipped {
                at: from(&i).clone(),
                directive: "listen".into(),
                why: format!(
                    "{} beside {twin}: Tidegate listens on one of them",
                    address(&i)
                ),
            }),
            None => kept.push(i),
        }
    }
    kept
}

pub(super) fn arg(d: &Directive, i: usize) -> &str {
    d.args.get(i).map(String::as_str).unwrap_or_default()
}

impl Converter {
    fn skip(&mut self, d: &Directive, why: &str) {
        self.skipped.push(Skipped {
            at: d.at(),
            directive: d.name.clone(),
            why: why.to_string(),
        });
    }

    /// Reads the directives that every level may carry into `inherit`;
    /// true when `d` was one of them.
    fn inheritable(&mut self, d: &Directive, inherit: &mut Inherited, own: &mut Inherited) -> bool {
        match d.name.as_str() {
            "client_max_body_size" => match values::size(arg(d, 0)) {
                Ok(n) => inherit.body_limit = Some(n),
                Err(e) => self.skip(d, &e),
            },
            "proxy_set_header" | "add_header" if d.args.len() >= 2 => {
                let list = if d.name == "add_header" {
                    &mut own.add_headers
                } else {
                    &mut own.proxy_headers
                };
                list.get_or_insert_with(Vec::new).push((
                    arg(d, 0).to_string(),
                    arg(d, 1).to_string(),
                    d.at(),
                ));
            }
            "proxy_connect_timeout" | "proxy_read_timeout" => match values::duration(arg(d, 0)) {
                Ok(t) if d.name == "proxy_connect_timeout" => inherit.connect_timeout = Some(t),
                Ok(t) => inherit.read_timeout = Some(t),
                Err(e) => self.skip(d, &e),
            },
            "ssl_certificate" => inherit.certificate = Some(arg(d, 0).to_string()),
            "ssl_certificate_key" => inherit.key = Some(arg(d, 0).to_string()),
            "auth_basic" => inherit.auth_basic = Some(arg(d, 0).to_string()),
            "auth_basic_user_file" => inherit.auth_basic_user_file = Some(arg(d, 0).to_string()),
            "root" if arg(d, 0).starts_with('/') => {
                inherit.root = Some(arg(d, 0).trim_end_matches('/').to_string())
            }
            "root" => {
                inherit.root = None;
                self.skip(d, "a relative root is nginx's prefix's (-p) folder: give it absolute");
            }
            "index" => {
                // Tidegate's are file names in the folder asked for.
                let (names, other): (Vec<String>, Vec<String>) = d
                    .args
                    .iter()
                    .cloned()
                    .partition(|n| !n.contains(['/', '$']) && n != "." && n != "..");
                if !other.is_empty() {
                    self.skip(d, &format!("{}: only file names (no `/` or variables) are converted", other.join(" ")));
                }
                inherit.index = (!names.is_empty()).then_some(names);
            }
            "gzip_static" => inherit.gzip_static = matches!(arg(d, 0), "on" | "always"),
            "autoindex" if arg(d, 0) == "off" => {}
            "autoindex" => self.skip(d, "not converted: Tidegate lists no folders (an index file or 404)"),
            "disable_symlinks" => self.skip(
                d,
                "not converted: Tidegate follows links only when they stay inside the root (static.symlinks)",
            ),
            "sendfile" | "tcp_nopush" | "tcp_nodelay" | "types" | "default_type" | "gzip"
            | "server_tokens" => self.skip(d, TUNING),
            // Tidegate speaks HTTP/1.1 upstream and passes upgrades by
            // itself: what these lines ask of nginx is its default.
            "proxy_http_version" if arg(d, 0) == "1.1" => {}
            _ => return own.access.read(d) || own.gates.read(d),
        }
        true
    }

    /// Header lists set at this level replace the inherited ones.
    pub(super) fn settle(inherit: &mut Inherited, own: Inherited) {
        if own.proxy_headers.is_some() {
            inherit.proxy_headers = own.proxy_headers;
        }
        if own.add_headers.is_some() {
            inherit.add_headers = own.add_headers;
        }
        inherit.access.settle(own.access);
        inherit.gates.settle(own.gates);
    }

    fn http(&mut self, block: &[Directive]) {
        let mut inherit = Inherited::default();
        let mut own = Inherited::default();
        for d in block {
            if d.name == "upstream" && d.block.is_some() {
                self.group_names.insert(arg(d, 0).to_string());
                self.blocks.insert(arg(d, 0).to_string(), d.clone());
            }
        }
        let mut servers = Vec::new();
        for d in block {
            if self.inheritable(d, &mut inherit, &mut own) {
                continue;
            }
            match d.name.as_str() {
                "upstream" if d.block.is_some() => {}
                "server" if d.block.is_some() => servers.push(d),
                "access_log" => self.access_log(d),
                "keepalive_timeout" => match values::duration(arg(d, 0)) {
                    Ok(t) => self.out.client_idle = Some(t),
                    Err(e) => self.skip(d, &e),
                },
                "client_header_timeout" => match values::duration(arg(d, 0)) {
                    Ok(t) => self.out.client_header = Some(t),
                    Err(e) => self.skip(d, &e),
                },
                "log_format" => self.skip(
                    d,
                    "named log formats are not converted: access_log uses `combined`",
                ),
                _ => self.skip(d, "not converted (outside the reverse-proxy subset)"),
            }
        }
        Self::settle(&mut inherit, own);
        self.servers(&servers, &inherit);
    }

    pub(super) fn access_log(&mut self, d: &Directive) {
        let wanted = match arg(d, 0) {
            "off" => ("off".to_string(), None),
            path => {
                if d.args.len() > 1 && arg(d, 1) != "combined" {
                    self.skip(
                        d,
                        "only the `combined` format is converted; written as combined",
                    );
                }
                (path.to_string(), Some("combined"))
            }
        };
        match &self.out.access_log {
            None => self.out.access_log = Some(wanted),
            Some(have) if *have == wanted => {}
            Some(_) => self.skip(
                d,
                "Tidegate has one access log; the first one named is kept",
            ),
        }
    }

    /// Every server block: listeners first (default servers known), then
    /// routes.
    fn servers(&mut self, servers: &[&Directive], inherit: &Inherited) {
        let mut parsed: Vec<Server> = servers.iter().map(|d| Server::read(d, self)).collect();
        // The default server of each address: flagged, else the first.
        let mut defaults: BTreeMap<String, usize> = BTreeMap::new();
        for (i, s) in parsed.iter().enumerate() {
            for l in &s.listens {
                if l.default {
                    defaults.insert(l.address.clone(), i);
                }
            }
        }
        for (i, s) in parsed.iter().enumerate() {
            for l in &s.listens {
                defaults.entry(l.address.clone()).or_insert(i);
            }
        }
        let users = |address: &str, parsed: &[Server]| {
            parsed
                .iter()
                .filter(|s| s.listens.iter().any(|l| l.address == address))
                .count()
        };
        for i in 0..parsed.len() {
            let only_redirects = parsed[i].https_redirect.is_some()
                && parsed[i]
                    .listens
                    .iter()
                    .all(|l| !l.ssl && users(&l.address, &parsed) == 1);
            parsed[i].is_default = defaults.values().any(|&d| d == i);
            let server = &parsed[i];
            let (mut inner, mut own) = (inherit.clone(), Inherited::default());
            for d in server.directive.block.iter().flatten() {
                self.inheritable_quiet(d, &mut inner, &mut own);
            }
            Self::settle(&mut inner, own);
            let pair = inner.certificate.zip(inner.key);
            for l in &server.listens {
                let entry = self
                    .out
                    .listeners
                    .entry(l.address.clone())
                    .or_insert_with(|| Listener {
                        from: l.from.clone(),
                        ..Listener::default()
                    });
                inner
                    .access
                    .listener(entry, l.proxy_protocol, &mut self.skipped);
                entry.http2 |= l.http2;
                entry.tls |= l.ssl;
                if only_redirects {
                    entry.redirect_https = Some(443);
                }
                if !l.ssl {
                    continue;
                }
                match &pair {
                    Some(pair) => {
                        if !entry.certificates.contains(pair) {
                            entry.certificates.push(pair.clone());
                        }
                    }
                    None => self.skipped.push(Skipped {
                        at: l.from.clone(),
                        directive: "listen".into(),
                        why: "ssl without ssl_certificate and ssl_certificate_key".into(),
                    }),
                }
            }
            if !only_redirects {
                let server = &parsed[i];
                (self.parts.server_routes)(self, server, inherit);
            }
        }
        let listeners = std::mem::take(&mut self.out.listeners)
            .into_iter()
            .collect();
        self.out.listeners =
            without_ipv4_twins(listeners, |(a, _)| a, |(_, l)| &l.from, &mut self.skipped)
                .into_iter()
                .collect();
        self.out
            .listeners
            .retain(|_, l| !l.tls || !l.certificates.is_empty());
    }

    fn inheritable_quiet(&mut self, d: &Directive, inherit: &mut Inherited, own: &mut Inherited) {
        let before = self.skipped.len();
        self.inheritable(d, inherit, own);
        self.skipped.truncate(before);
    }

    pub(super) fn push_stream(&mut self, s: super::write::StreamOut) {
        self.out.streams.push(s);
    }

    /// Records that `host` has routes from `from`; false (and reported)
    /// when another server has it already.
    pub(super) fn take_host(&mut self, d: &Directive, host: &Option<String>) -> bool {
        if let Some(first) = self.hosts_taken.get(host) {
            let what = host
                .clone()
                .unwrap_or_else(|| "requests without a listed name".into());
            let why = format!("{what} is served by the server at {first} already: Tidegate's routes are shared by every listener");
            self.skip(d, &why);
            return false;
        }
        self.hosts_taken.insert(host.clone(), d.at());
        true
    }

    pub(super) fn push(&mut self, r: Route) {
        self.out.routes.push(r);
    }
    pub(super) fn skip_at(&mut self, d: &Directive, why: &str) {
        self.skip(d, why);
    }
    pub(super) fn skip_raw(&mut self, at: &str, directive: &str, why: &str) {
        self.skipped.push(Skipped {
            at: at.to_string(),
            directive: directive.to_string(),
            why: why.to_string(),
        });
    }

    pub(super) fn level(
        &mut self,
        d: &Directive,
        inherit: &mut Inherited,
        own: &mut Inherited,
    ) -> bool {
        self.inheritable(d, inherit, own)
    }
}

pub(super) use self::Inherited as Inherit;
