//! Loading: the file's text through serde into [`raw`], then one
//! conversion per section into [`Config`]. Conversions do not stop at a
//! problem: each one is recorded with its field path and checking goes on,
//! so one `tidegate check` lists everything wrong with a file. Nothing here
//! does I/O (certificates are read and names resolved when a config is put
//! into service) but `[server] user`'s lookup.

use std::path::Path;
use std::sync::Arc;

use super::route::compile_route;
use super::source::{ConfigError, Problems, Source};
use super::{
    dns, listener, raw, run_as, tracing, upstream, AccessLogTarget, Config, Limits, Timeouts,
};

/// Parses and converts `source`'s text.
pub(super) fn parse(source: Source) -> Result<Config, ConfigError> {
    let raw: raw::File =
        toml::from_str(&source.text).map_err(|e| source.parse_error(e.message(), e.span()))?;
    from_raw(raw, source)
}

/// Converts every section, collecting problems.
pub(super) fn from_raw(raw: raw::File, source: Source) -> Result<Config, ConfigError> {
    let mut p = Problems::default();
    // Paths in the file are relative to its directory.
    let base = Path::new(&source.file)
        .parent()
        .unwrap_or(Path::new(""))
        .to_path_buf();

    if raw.listeners.is_empty() && raw.streams.is_empty() {
        p.add(
            "listeners",
            "at least one [[listeners]] or [[streams]] entry is required",
        );
    }
    let listeners: Vec<_> = raw
        .listeners
        .iter()
        .enumerate()
        .filter_map(|(i, l)| listener::listener(l, i, &base, &mut p).map(|l| (i, l)))
        .collect();

    // Two sockets on one port would split its connections between them
    // (SO_REUSEPORT), as nginx's "a duplicate listen" refuses.
    for (k, (j, b)) in listeners.iter().enumerate() {
        if let Some((i, a)) = listeners[..k].iter().find(|(_, a)| overlap(a.addr, b.addr)) {
            p.add(
                format!("listeners[{j}].address"),
                format!(
                    "{} overlaps listeners[{i}].address ({}): one port, one listener",
                    b.addr, a.addr
                ),
            );
        }
    }
    let mut listeners: Vec<_> = listeners.into_iter().map(|(_, l)| l).collect();

    let dns = dns::dns(raw.dns.as_ref(), &mut p);
    let mut names: Vec<&String> = raw.upstreams.keys().collect();
    names.sort();
    let streams_only = super::stream_entry::streams_only(&raw);
    let upstreams: Vec<_> = names
        .iter()
        .filter_map(|name| {
            let only = streams_only.contains(&name.as_str());
            upstream::group(name, &raw.upstreams[*name], &base, only, &mut p)
        })
        .collect();
    let groups_ok = upstreams.len() == names.len();

    let limits = limits(raw.limits.unwrap_or_default(), &mut p);
    let timeouts = timeouts(raw.timeouts.unwrap_or_default());

    // Streams follow the HTTP listeners (whose places SNI routes name).
    let http = listeners.len();
    for (i, s) in raw.streams.iter().enumerate() {
        let around = super::stream_entry::Around {
            base: &base,
            listeners: &listeners[..http],
            upstreams: &upstreams,
            groups_ok,
            connect_timeout: timeouts.upstream_connect,
        };
        if let Some(l) = super::stream_entry::stream(s, i, &around, &mut p) {
            if let Some(o) = listeners.iter().find(|o| overlap(o.addr, l.addr)) {
                p.add(
                    format!("streams[{i}].address"),
                    format!(
                        "{} overlaps another listener's address ({}): one port, one listener",
                        l.addr, o.addr
                    ),
                );
            }
            listeners.push(l);
        }
    }
    let rate_limits = super::rate_limit::rate_limits(&raw.rate_limits, &mut p);
    // Routes name them by their place among those written (the same
    // place once every one is valid).
    let concurrency_limits =
        super::concurrency_limit::concurrency_limits(&raw.concurrency_limits, &mut p);
    let caches = super::cache::caches(&raw.caches, &base, &mut p);
    let limit_names = super::route::LimitNames {
        rate: raw.rate_limits.keys().map(String::as_str).collect(),
        concurrency: raw.concurrency_limits.keys().map(String::as_str).collect(),
        caches: raw.caches.keys().map(String::as_str).collect(),
    };

    if raw.routes.is_empty() && !raw.listeners.is_empty() {
        p.add("routes", "at least one [[routes]] entry is required");
    }
    let mut routes = Vec::new();
    for (i, rt) in raw.routes.iter().enumerate() {
        match compile_route(i, rt, &upstreams, &timeouts, &limits, &base, &limit_names) {
            Ok(r) => routes.push(r),
            Err(errors) => {
                for (f, reason) in errors {
                    // A route to a group that had problems of its own is
                    // not another problem.
                    if f != "upstream" || groups_ok {
                        p.add(format!("routes[{i}].{f}"), reason);
                    }
                }
            }
        }
    }

    for (i, rt) in raw.routes.iter().enumerate() {
        let Some(name) = &rt.name else { continue };
        if name.is_empty() {
            p.add(format!("routes[{i}].name"), "is empty");
        } else if let Some(j) = raw.routes[..i]
            .iter()
            .position(|o| o.name.as_ref() == Some(name))
        {
            p.add(
                format!("routes[{i}].name"),
                format!("`{name}` is also the name of routes[{j}]"),
            );
        }
    }

    let s = raw.server.unwrap_or_default();
    let threads = match s.threads {
        None | Some(0) => super::default_threads(),
        Some(n) if n > 1024 => {
            p.add("server.threads", format!("{n} is more than 1024"));
            1
        }
        Some(n) => n,
    };
    let log_level = s.log_level.unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
        p.add(
            "server.log_level",
            format!("`{log_level}` is not a log filter (try error, warn, info, debug)"),
        );
    }

    let admin = raw.admin.as_ref().and_then(|a| {
        let addr = a
            .address
            .parse()
            .map_err(|e| {
                p.add(
                    "admin.address",
                    format!("`{}` is not an IP:port address ({e})", a.address),
                )
            })
            .ok()?;
        if a.token.as_deref() == Some("") {
            p.add("admin.token", "is empty; leave it out for no token");
        }
        if let Some(l) = listeners.iter().find(|l| overlap(l.addr, addr)) {
            p.add(
                "admin.address",
                format!("{addr} overlaps a proxy listener's address ({})", l.addr),
            );
        }
        Some(super::Admin {
            addr,
            token: a.token.clone(),
        })
    });

    let tracing = tracing::section(raw.tracing.as_ref(), &mut p);
    let acme_names = listeners
        .iter()
        .filter_map(|l| l.tls.as_ref())
        .flat_map(|t| t.acme.iter().cloned())
        .collect();
    let plain = listeners
        .iter()
        .any(|l| l.tls.is_none() && l.stream.is_none());
    let acme = super::acme::section(raw.acme.as_ref(), acme_names, plain, &base, &mut p);
    // TLS-ALPN-01 is answered by negotiating `acme-tls/1`; a stream that
    // offers no ALPN of its own cannot add it without refusing clients
    // that offer theirs.
    if acme.as_ref().map(|a| a.challenge) == Some(super::acme::Challenge::TlsAlpn01) {
        for l in &listeners {
            let (Some(s), Some(t)) = (&l.stream, &l.tls) else {
                continue;
            };
            if s.alpn.is_empty() && !t.acme.is_empty() {
                p.add(
                    format!("streams[{}].tls.acme", s.index),
                    "TLS-ALPN-01 needs the stream to offer ALPN (set `alpn`), or use challenge = \"http-01\"",
                );
            }
        }
    }
    let run_as = run_as::run_as(s.user.as_deref(), s.group.as_deref(), &mut p);

    let config = Config {
        listeners,
        routes,
        upstreams,
        rate_limits,
        concurrency_limits,
        caches,
        timeouts,
        limits,
        threads,
        cpu_affinity: s.cpu_affinity.unwrap_or_default(),
        // Relative to the file's folder, as every path in it is.
        access_log: match AccessLogTarget::parse(s.access_log.as_deref().unwrap_or("off")) {
            AccessLogTarget::File(f) if f.is_relative() => AccessLogTarget::File(base.join(f)),
            t => t,
        },
        access_log_format: match s.access_log_format.as_deref() {
            None => super::LogFormat::Default,
            Some(f) => super::LogFormat::parse(f).unwrap_or_else(|reason| {
                p.add("server.access_log_format", reason);
                super::LogFormat::Default
            }),
        },
        shutdown_grace: s
            .shutdown_grace
            .unwrap_or(std::time::Duration::from_secs(30)),
        log_level,
        log_format: s.log_format.unwrap_or_default(),
        dns,
        admin,
        tracing,
        acme,
        run_as,
        source: source.clone(),
    };
    p.result(config, &source)
}

/// Whether sockets bound to `a` and `b` would take the same connections:
/// one port (not 0, which binds a free one each) and the same address,
/// or a wildcard address of a family that covers the other (`[::]` takes
/// IPv4 too: Linux binds it dual-stack).
fn overlap(a: std::net::SocketAddr, b: std::net::SocketAddr) -> bool {
    use std::net::IpAddr;
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    let covers = |w: IpAddr, o: IpAddr| match w {
        IpAddr::V4(v) => v.is_unspecified() && o.is_ipv4(),
        IpAddr::V6(v) => v.is_unspecified(),
    };
    a.ip() == b.ip() || covers(a.ip(), b.ip()) || covers(b.ip(), a.ip())
}

fn limits(l: raw::Limits, p: &mut Problems) -> Limits {
    let mut out = Limits::default();
    match l.max_connections {
        Some(0) => p.add("limits.max_connections", "must be at least 1"),
        n => out.max_connections = n,
    }
    if let Some(n) = l.max_request_head_bytes {
        if (1024..=1024 * 1024).contains(&n) {
            out.max_request_head_bytes = n;
        } else {
            p.add(
                "limits.max_request_head_bytes",
                format!("{n} is outside 1024..=1048576"),
            );
        }
    }
    out.max_body_bytes = l.max_body_bytes;
    if let Some(n) = l.upstream_idle_per_server {
        out.upstream_idle_per_server = n;
    }
    match l.max_requests_per_connection {
        Some(0) => p.add("limits.max_requests_per_connection", "must be at least 1"),
        Some(n) => out.max_requests_per_connection = n,
        None => {}
    }
    if let Some(n) = l.http2_max_resets {
        out.http2_max_resets = n;
    }
    if let Some(d) = l.http2_reset_window {
        out.http2_reset_window = d;
    }
    out
}

fn timeouts(t: raw::Timeouts) -> Timeouts {
    let d = Timeouts::default();
    Timeouts {
        client_header: t.client_header.unwrap_or(d.client_header),
        client_idle: t.client_idle.unwrap_or(d.client_idle),
        upstream_connect: t.upstream_connect.unwrap_or(d.upstream_connect),
        upstream_response_head: t.upstream_response_head.unwrap_or(d.upstream_response_head),
        upstream_idle: t.upstream_idle.unwrap_or(d.upstream_idle),
        tls_handshake: t.tls_handshake.unwrap_or(d.tls_handshake),
        tunnel_idle: t.tunnel_idle.unwrap_or(d.tunnel_idle),
    }
}

/// The text of a config given on the command line, for errors.
pub(super) fn command_line() -> Source {
    Source {
        file: "command line".into(),
        text: Arc::from(""),
    }
}
