//! nginx's `stream` block as `[[streams]]` entries: one per `listen` of
//! each `server`.
//!
//! - `proxy_pass NAME` (an `upstream` block) or `proxy_pass HOST:PORT`:
//!   the stream's `upstream` (a group of plain addresses);
//! - `ssl_preread on` with `proxy_pass $v` and `map $ssl_preread_server_name
//!   $v { ... }`: SNI routes (exact names; with `hostnames`, `*.name` and
//!   `.name`), the map's `default` as the stream's `upstream`;
//! - `listen ... ssl` with `ssl_certificate`/`ssl_certificate_key`: TLS
//!   terminated (`tls`);
//! - `listen ... proxy_protocol`: PROXY headers read, from the
//!   `set_real_ip_from` blocks (every peer without them, reported);
//!   `proxy_protocol on`: a v1 header sent (the group's `proxy_protocol`);
//! - `proxy_ssl on`: TLS to the servers (`https://`), with
//!   `proxy_ssl_trusted_certificate`, `proxy_ssl_name`,
//!   `proxy_ssl_certificate`/`_key` as the group's `tls`;
//! - `proxy_connect_timeout`, `proxy_timeout` (between two reads or
//!   writes: Tidegate's `idle_timeout`), `preread_timeout`, `allow`/`deny`,
//!   at `stream` or `server` level; `limit_conn` on a zone keyed by
//!   `$binary_remote_addr` (or `$remote_addr`): `max_connections_per_ip`.
use std::collections::BTreeMap;

use super::access::Lines;
use super::emit::{arg, listen, Converter, TcpWay, UNCHECKED};
use super::parse::Directive;
use super::values;
use super::write::{StreamOut, UpstreamTls};

/// What a `stream` or `server` level sets for the servers inside it.
#[derive(Clone, Default)]
struct Level {
    connect_timeout: Option<String>,
    idle_timeout: Option<String>,
    preread_timeout: Option<String>,
    certificate: Option<String>,
    key: Option<String>,
    access: Lines,
    /// `limit_conn ZONE N`: the line, for its zone's key.
    limit_conn: Option<(Directive, u32)>,
    /// `proxy_protocol on`.
    send_header: bool,
    /// `proxy_ssl on` (the line), `proxy_ssl_verify on`, and the
    /// group's `tls` from `proxy_ssl_trusted_certificate`, `_name`,
    /// `_certificate`, `_certificate_key`.
    proxy_ssl: Option<Directive>,
    verify: bool,
    tls: UpstreamTls,
}

impl Level {
    /// Reads `d` if it is one of these directives.
    fn read(&mut self, c: &mut Converter, d: &Directive) -> bool {
        let text = match d.name.as_str() {
            "ssl_certificate" => &mut self.certificate,
            "ssl_certificate_key" => &mut self.key,
            "proxy_ssl_trusted_certificate" => &mut self.tls.ca_file,
            "proxy_ssl_name" => &mut self.tls.server_name,
            "proxy_ssl_certificate" => &mut self.tls.client_cert,
            "proxy_ssl_certificate_key" => &mut self.tls.client_key,
            _ => return self.read_other(c, d),
        };
        *text = Some(arg(d, 0).to_string());
        true
    }

    /// The lines that are not a file or a name: times, switches, limits,
    /// access rules.
    fn read_other(&mut self, c: &mut Converter, d: &Directive) -> bool {
        let on = arg(d, 0) == "on";
        let time = match d.name.as_str() {
            "proxy_connect_timeout" => &mut self.connect_timeout,
            "proxy_timeout" => &mut self.idle_timeout,
            "preread_timeout" => &mut self.preread_timeout,
            "proxy_protocol" => {
                self.send_header = on;
                return true;
            }
            "proxy_ssl" => {
                self.proxy_ssl = on.then(|| d.clone());
                return true;
            }
            "proxy_ssl_verify" => {
                self.verify = on;
                return true;
            }
            // (Tidegate always sends the server name.)
            "proxy_ssl_server_name" => return true,
            "limit_conn" => {
                match arg(d, 1).parse() {
                    Ok(n) if n > 0 => self.limit_conn = Some((d.clone(), n)),
                    _ => c.skip_at(d, "not a number of connections"),
                }
                return true;
            }
            _ => return self.access.read(d),
        };
        match values::duration(arg(d, 0)) {
            Ok(t) => *time = Some(t),
            Err(why) => c.skip_at(d, &why),
        }
        true
    }
}

/// The `stream { ... }` block.
pub(super) fn block(c: &mut Converter, block: &[Directive]) {
    let mut level = Level::default();
    let mut zones = BTreeMap::new();
    let mut upstreams = BTreeMap::new();
    let mut maps = BTreeMap::new();
    let mut servers = Vec::new();
    for d in block {
        match (d.name.as_str(), d.block.is_some()) {
            ("upstream", true) => {
                upstreams.insert(arg(d, 0).to_string(), d);
            }
            ("map", true) if arg(d, 0) == "$ssl_preread_server_name" => {
                maps.insert(arg(d, 1).to_string(), d);
            }
            ("map", true) => c.skip_at(
                d,
                "only a map of $ssl_preread_server_name (SNI routes) is converted",
            ),
            ("server", true) => servers.push(d),
            ("limit_conn_zone", false) => {
                let name = arg(d, 1)
                    .strip_prefix("zone=")
                    .and_then(|z| z.split(':').next());
                zones.insert(name.unwrap_or_default().to_string(), arg(d, 0).to_string());
            }
            _ if level.read(c, d) => {}
            _ => c.skip_at(d, "not converted (outside the proxying subset)"),
        }
    }
    let around = Around {
        upstreams: &upstreams,
        maps: &maps,
        zones: &zones,
    };
    for s in servers {
        server(c, s, level.clone(), &around);
    }
}

/// What a server's `proxy_pass` may name.
struct Around<'a> {
    upstreams: &'a BTreeMap<String, &'a Directive>,
    maps: &'a BTreeMap<String, &'a Directive>,
    /// `limit_conn_zone` keys by zone name.
    zones: &'a BTreeMap<String, String>,
}

fn server(c: &mut Converter, s: &Directive, mut level: Level, around: &Around<'_>) {
    let mut own = Lines::default();
    let (mut listens, mut pass, mut preread) = (Vec::new(), None, false);
    for d in s.block.iter().flatten() {
        match d.name.as_str() {
            "listen" => listens.push(d),
            "proxy_pass" => pass = Some(d),
            "ssl_preread" => preread = arg(d, 0) == "on",
            "allow" | "deny" | "set_real_ip_from" => {
                own.read(d);
            }
            _ if level.read(c, d) => {}
            _ => c.skip_at(d, "not converted (outside the proxying subset)"),
        }
    }
    level.access.settle(own);
    let mut addresses = Vec::new();
    for l in listens {
        if l.args.iter().any(|a| a == "udp") {
            c.skip_at(l, "UDP is not proxied: not converted");
            continue;
        }
        match listen(l) {
            Ok(p) => addresses.push((l, p)),
            Err(why) => c.skip_at(l, &why),
        }
    }
    if addresses.is_empty() {
        return;
    }
    let Some(pass) = pass else {
        c.skip_at(s, "no proxy_pass: not converted");
        return;
    };
    let way = TcpWay {
        proxy_protocol: level.send_header,
        tls: level.proxy_ssl.as_ref().map(|d| {
            if !level.verify {
                c.skip_at(d, &format!("{UNCHECKED} (proxy_ssl_trusted_certificate)"));
            }
            level.tls.clone()
        }),
    };
    let Some((upstream, sni)) = target(c, pass, preread, &way, around) else {
        return;
    };
    let per_ip = level.limit_conn.as_ref().and_then(|(d, n)| {
        match around.zones.get(arg(d, 0)).map(String::as_str) {
            Some("$binary_remote_addr" | "$remote_addr") => Some(*n),
            _ => {
                c.skip_at(d, "only a zone keyed by the client's address is converted (max_connections_per_ip)");
                None
            }
        }
    });
    let mut bad = Vec::new();
    let access = level.access.rules(&mut bad);
    for (l, parsed) in addresses {
        let mut out = StreamOut {
            from: l.at(),
            address: parsed.address,
            upstream: upstream.clone(),
            sni: sni.clone(),
            access: access.clone(),
            max_connections_per_ip: per_ip,
            connect_timeout: level.connect_timeout.clone(),
            idle_timeout: level.idle_timeout.clone(),
            preread_timeout: level.preread_timeout.clone(),
            ..StreamOut::default()
        };
        if parsed.ssl {
            match (&level.certificate, &level.key) {
                (Some(cert), Some(key)) => out.certificates.push((cert.clone(), key.clone())),
                _ => {
                    c.skip_at(l, "ssl without ssl_certificate and ssl_certificate_key");
                    continue;
                }
            }
        }
        if parsed.proxy_protocol {
            let from = level.access.proxy_protocol_from(&l.at(), false, &mut bad);
            out.proxy_protocol_from = Some(from);
        }
        for p in parsed.ignored {
            c.skip_at(
                l,
                &format!("parameter `{p}` not converted (the address is)"),
            );
        }
        c.push_stream(out);
    }
    for b in bad {
        c.skip_raw(&b.at, &b.directive, &b.why);
    }
}

/// The stream's `upstream` and SNI routes from its `proxy_pass`.
type Target = (Option<String>, Vec<(Vec<String>, String)>);

fn target(
    c: &mut Converter,
    pass: &Directive,
    preread: bool,
    way: &TcpWay,
    around: &Around<'_>,
) -> Option<Target> {
    let to = arg(pass, 0);
    if !to.starts_with('$') {
        return group(c, pass, to, way, around).map(|g| (Some(g), Vec::new()));
    }
    let Some(map) = around.maps.get(to) else {
        c.skip_at(
            pass,
            "a variable not set by a map of $ssl_preread_server_name: not converted",
        );
        return None;
    };
    if !preread {
        c.skip_at(
            pass,
            "$ssl_preread_server_name is empty without `ssl_preread on`: not converted",
        );
        return None;
    }
    let entries = map.block.as_deref().unwrap_or_default();
    let hostnames = entries.iter().any(|e| e.name == "hostnames");
    let (mut default, mut sni) = (None, Vec::<(Vec<String>, String)>::new());
    for e in entries.iter().filter(|e| e.name != "hostnames") {
        let name = e.name.to_ascii_lowercase();
        let value = arg(e, 0);
        if e.args.len() != 1 || value.contains('$') {
            c.skip_at(
                e,
                "only `NAME VALUE;` entries without variables are converted",
            );
            continue;
        }
        let names = match name.as_str() {
            "default" => {
                default = group(c, e, value, way, around);
                continue;
            }
            n if n.starts_with('~')
                || n.ends_with(".*")
                || n.contains('*') && !n.starts_with("*.") =>
            {
                c.skip_at(e, "regex and `name.*` entries are not converted");
                continue;
            }
            n if !hostnames && (n.starts_with('.') || n.starts_with('*')) => {
                c.skip_at(
                    e,
                    "without `hostnames`, nginx takes this name as it is: not converted",
                );
                continue;
            }
            n if n.starts_with('.') => vec![n[1..].to_string(), format!("*{n}")],
            n => vec![n.to_string()],
        };
        let Some(g) = group(c, e, value, way, around) else {
            continue;
        };
        match sni.iter_mut().find(|(_, have)| *have == g) {
            Some((list, _)) => list.extend(names),
            None => sni.push((names, g)),
        }
    }
    Some((default, sni))
}

/// The group for `to`: an `upstream` block's name or `HOST:PORT`.
fn group(
    c: &mut Converter,
    d: &Directive,
    to: &str,
    way: &TcpWay,
    around: &Around<'_>,
) -> Option<String> {
    if let Some(block) = around.upstreams.get(to) {
        return Some(c.tcp_group(d, to, Some(block), way));
    }
    let address_like = to
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if !address_like || to.starts_with("unix:") {
        c.skip_at(
            d,
            &format!("`{to}`: neither an upstream block nor HOST:PORT"),
        );
        return None;
    }
    Some(c.tcp_group(d, to, None, way))
}
