//! Upstream groups: those an HTTP `proxy_pass` names (an `upstream`
//! block, or an address) and those of a `stream` server, which nginx opens
//! per server and Tidegate per group.
use super::{arg, Converter};
use crate::convert::parse::Directive;
use crate::convert::values;
use crate::convert::write::{Group, UpstreamTls};

/// What is said where TLS to servers begins (`https://`, `proxy_ssl on`).
pub(in crate::convert) const UNCHECKED: &str = "nginx checks no server certificate by default (proxy_ssl_verify off); Tidegate checks it against the system's roots, or the group's tls.ca_file";

/// How a `stream` server's connections to its group open (nginx sets
/// this per server, Tidegate per group: one group each way).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(in crate::convert) struct TcpWay {
    /// `proxy_protocol on`: a v1 header first.
    pub(in crate::convert) proxy_protocol: bool,
    /// `proxy_ssl on`: TLS, with these settings.
    pub(in crate::convert) tls: Option<UpstreamTls>,
}

impl Converter {
    /// The group `proxy_pass` names (an `upstream` block, or one made for
    /// an address), created on first use.
    pub(in crate::convert) fn group(
        &mut self,
        d: &Directive,
        scheme: &str,
        host: &str,
    ) -> Result<(String, bool), String> {
        let before = self.out.groups.len();
        let got = self.group_made(d, scheme, host);
        if scheme == "https" && self.out.groups.len() > before {
            self.skip(
                d,
                &format!("{UNCHECKED} (proxy_ssl_trusted_certificate is not converted in http)"),
            );
        }
        Ok(got)
    }

    fn group_made(&mut self, d: &Directive, scheme: &str, host: &str) -> (String, bool) {
        if let Some(block) = self.blocks.remove(host) {
            let g = self.upstream_block(&block, scheme);
            self.out.groups.insert(host.to_string(), g);
        }
        if self.group_names.contains(host) {
            return (host.to_string(), true);
        }
        let address = if host.starts_with('[') && host.contains("]:")
            || !host.starts_with('[') && host.contains(':')
        {
            host.to_string()
        } else {
            format!("{host}:{}", if scheme == "https" { 443 } else { 80 })
        };
        let name = format!(
            "{scheme}_{}",
            address.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        );
        self.out
            .groups
            .entry(name.clone())
            .or_insert_with(|| one_server(format!("{scheme}://{address}"), d));
        (name, false)
    }

    /// The group a `stream` server's `proxy_pass` names: its `upstream`
    /// block (`block`) or an address, opened `way`. Named as the block or
    /// `tcp_ADDRESS`, `_pp` for a PROXY header and `_tls` for TLS;
    /// `stream_` first when an HTTP group has the name (and a count after
    /// when that is taken too).
    pub(in crate::convert) fn tcp_group(
        &mut self,
        d: &Directive,
        target: &str,
        block: Option<&Directive>,
        way: &TcpWay,
    ) -> String {
        let key = (target.to_string(), way.clone());
        if let Some(name) = self.tcp_groups.get(&key) {
            return name.clone();
        }
        let scheme = if way.tls.is_some() { "https" } else { "" };
        let mut g = match block {
            Some(b) => self.upstream_block(b, scheme),
            None if way.tls.is_some() => one_server(format!("https://{target}"), d),
            None => one_server(target.to_string(), d),
        };
        let base = match block {
            Some(_) => target.to_string(),
            None => format!(
                "tcp_{}",
                target.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            ),
        };
        let mut name = base;
        if way.proxy_protocol {
            name.push_str("_pp");
        }
        if way.tls.is_some() {
            name.push_str("_tls");
        }
        if self.out.groups.contains_key(&name) {
            name = format!("stream_{name}");
        }
        let first = name.clone();
        for i in 2.. {
            if !self.out.groups.contains_key(&name) {
                break;
            }
            name = format!("{first}_{i}");
        }
        g.proxy_protocol = way.proxy_protocol.then_some("v1");
        g.tls = way.tls.clone();
        self.out.groups.insert(name.clone(), g);
        self.tcp_groups.insert(key, name.clone());
        name
    }

    /// `scheme` "" (a `stream` block's): addresses without one.
    fn upstream_block(&mut self, block: &Directive, scheme: &str) -> Group {
        let mut g = nginx_defaults(block);
        let mut failure_set = false;
        for d in block.block.iter().flatten() {
            match d.name.as_str() {
                "server" => {
                    let mut weight = 1;
                    let mut backup = false;
                    let mut keep = true;
                    for p in d.args.iter().skip(1) {
                        let (k, v) = p.split_once('=').unwrap_or((p, ""));
                        match k {
                            "weight" => match v.parse::<u32>() {
                                Ok(w) if (1..=1000).contains(&w) => weight = w,
                                _ => self.skip(d, "weight must be 1 to 1000"),
                            },
                            "max_fails" | "fail_timeout" => {
                                let ok = if k == "max_fails" {
                                    v.parse()
                                        .map(|n| g.max_fails = n)
                                        .map_err(|_| String::new())
                                } else {
                                    values::duration(v).map(|t| g.fail_timeout = t)
                                };
                                if ok.is_err() {
                                    self.skip(d, &format!("{p}: not a valid value"));
                                } else if failure_set && k == "max_fails" {
                                    self.skip(d, "max_fails/fail_timeout differ per server in nginx, per group in Tidegate: the last server's apply");
                                }
                            }
                            "backup" => backup = true,
                            "down" => keep = false,
                            _ => self.skip(d, &format!("parameter `{p}` not converted")),
                        }
                    }
                    failure_set |= d.args.iter().any(|a| a.starts_with("max_fails="));
                    let address = arg(d, 0);
                    if address.starts_with("unix:") {
                        self.skip(d, "Unix sockets are not converted");
                    } else if keep {
                        let address = if address.contains(':') {
                            address.to_string()
                        } else {
                            format!("{address}:80")
                        };
                        let address = match scheme {
                            "" => address,
                            _ => format!("{scheme}://{address}"),
                        };
                        g.servers.push((address, weight, backup));
                    }
                }
                "least_conn" => g.balance = "least_outstanding",
                "ip_hash" => {
                    g.balance = "hash";
                    g.hash_key = Some("client_ip");
                }
                "hash" if arg(d, 0) == "$remote_addr" => {
                    g.balance = "hash";
                    g.hash_key = Some("client_ip");
                }
                // Tidegate always keeps idle connections to every server.
                "keepalive" => {}
                _ => self.skip(d, "not converted (outside the reverse-proxy subset)"),
            }
        }
        g
    }
}

/// A group with no server yet and nginx's defaults (round robin,
/// `max_fails=1 fail_timeout=10s`), made for `d`.
fn nginx_defaults(d: &Directive) -> Group {
    Group {
        balance: "round_robin",
        max_fails: 1,
        fail_timeout: "10s".into(),
        from: d.at(),
        ..Group::default()
    }
}

/// The group made for an address a `proxy_pass` names.
fn one_server(address: String, d: &Directive) -> Group {
    Group {
        servers: vec![(address, 1, false)],
        ..nginx_defaults(d)
    }
}
