//! nginx's `allow`/`deny` (to a route's `access`) and `set_real_ip_from`
//! with `real_ip_header X-Forwarded-For` (to a listener's
//! `trusted_proxies`).
//!
//! `allow`/`deny` lines are an array directive: a level with none of its
//! own takes its parent's. nginx checks them in its access phase, after
//! the rewrite phase's `return` and redirects; so only proxying and file
//! routes get them (a Tidegate route checks its rules before its own
//! answer).
//! The real-IP lines are per server in nginx, per listener in Tidegate:
//! a listener takes the first server's, and servers sharing it that
//! differ are reported.
use super::parse::Directive;
use super::write::Listener;
use super::Skipped;
use crate::message::cidr::{Cidr, Rule};

/// The lines of one level, each with where it was (`FILE:LINE`).
#[derive(Clone, Default)]
pub(super) struct Lines {
    rules: Option<Vec<(String, String)>>,
    trusted: Option<Vec<(String, String)>>,
    header: Option<(String, String)>,
    recursive: Option<bool>,
}

impl Lines {
    /// Records `d` if it is one of these directives.
    pub(super) fn read(&mut self, d: &Directive) -> bool {
        let one = d.args.first().cloned().unwrap_or_default();
        let at = d.at();
        match d.name.as_str() {
            "allow" | "deny" => self
                .rules
                .get_or_insert_with(Vec::new)
                .push((format!("{} {one}", d.name), at)),
            "set_real_ip_from" => self.trusted.get_or_insert_with(Vec::new).push((one, at)),
            "real_ip_header" => self.header = Some((one, at)),
            "real_ip_recursive" => self.recursive = Some(one == "on"),
            _ => return false,
        }
        true
    }

    /// The lines in force below a level: its own, else its parent's.
    pub(super) fn settle(&mut self, own: Lines) {
        if own.rules.is_some() {
            self.rules = own.rules;
        }
        if own.trusted.is_some() {
            self.trusted = own.trusted;
        }
        if own.header.is_some() {
            self.header = own.header;
        }
        if own.recursive.is_some() {
            self.recursive = own.recursive;
        }
    }

    /// A route's `access`; rules Tidegate cannot read are reported.
    pub(super) fn rules(&self, skipped: &mut Vec<Skipped>) -> Vec<String> {
        let mut out = Vec::new();
        for (rule, at) in self.rules.iter().flatten() {
            match Rule::parse(rule) {
                Ok(r) => out.push(r.to_string()),
                Err(why) => skipped.push(skip(at, rule.split(' ').next().unwrap_or(""), &why)),
            }
        }
        out
    }

    /// Real-IP lines in a location: not converted (Tidegate's are per
    /// listener).
    pub(super) fn location(&self, skipped: &mut Vec<Skipped>) {
        for (_, at) in self.trusted.iter().flatten().chain(&self.header) {
            skipped.push(skip(
                at,
                "real_ip",
                "in a location: Tidegate trusts proxies per listener; not converted",
            ));
        }
    }

    /// The listener's `trusted_proxies` from a server's lines (the first
    /// server on a listener decides); with `listen ... proxy_protocol`, its
    /// `proxy_protocol.from` (`set_real_ip_from` with `real_ip_header
    /// proxy_protocol`).
    pub(super) fn listener(
        &self,
        l: &mut Listener,
        proxy_protocol: bool,
        skipped: &mut Vec<Skipped>,
    ) {
        if proxy_protocol && l.proxy_protocol_from.is_none() {
            l.proxy_protocol_from = Some(self.proxy_protocol_from(&l.from, true, skipped));
        }
        let mine = self.trusted_proxies(skipped);
        match &l.trusted_proxies {
            None => l.trusted_proxies = Some(mine),
            Some(have) if *have == mine => {}
            Some(_) => skipped.push(skip(
                &l.from,
                "set_real_ip_from",
                "servers on this address trust different proxies: Tidegate trusts per listener; the first server's are kept",
            )),
        }
    }

    /// Whose PROXY headers name the client, for `listen ... proxy_protocol`
    /// at `at`: the trusted blocks (in `http`, `needs_header`, only when
    /// the real IP is the header's), else every peer (reported: nginx
    /// reads the header from any peer, and names the client by it only
    /// then).
    pub(super) fn proxy_protocol_from(
        &self,
        at: &str,
        needs_header: bool,
        skipped: &mut Vec<Skipped>,
    ) -> Vec<String> {
        let from_header =
            !needs_header || matches!(&self.header, Some((h, _)) if h == "proxy_protocol");
        match self.trusted_blocks(skipped).filter(|_| from_header) {
            Some(blocks) => blocks,
            None => {
                let missing = match needs_header {
                    true => "`set_real_ip_from` and `real_ip_header proxy_protocol`",
                    false => "`set_real_ip_from`",
                };
                skipped.push(skip(
                    at,
                    "listen",
                    &format!("proxy_protocol without {missing}: written as every peer trusted, the header's address the client (nginx would keep the peer): narrow `from`"),
                ));
                vec!["0.0.0.0/0".into(), "::/0".into()]
            }
        }
    }

    fn trusted_proxies(&self, skipped: &mut Vec<Skipped>) -> Vec<String> {
        let Some(trusted) = &self.trusted else {
            return Vec::new();
        };
        match &self.header {
            Some((h, _)) if h.eq_ignore_ascii_case("x-forwarded-for") => {}
            // (The listener's `proxy_protocol.from`.)
            Some((h, _)) if h == "proxy_protocol" => return Vec::new(),
            other => {
                let at = other.as_ref().map_or(&trusted[0].1, |(_, at)| at);
                skipped.push(skip(
                    at,
                    "real_ip_header",
                    "only `real_ip_header X-Forwarded-For` is converted (nginx's default is X-Real-IP)",
                ));
                return Vec::new();
            }
        }
        if self.recursive != Some(true) {
            skipped.push(skip(
                &trusted[0].1,
                "real_ip_recursive",
                "off: Tidegate walks past every trusted address, as `real_ip_recursive on`",
            ));
        }
        self.trusted_blocks(skipped).unwrap_or_default()
    }

    /// The `set_real_ip_from` blocks, as Tidegate writes them (`None`:
    /// no such line); those it cannot read are reported.
    fn trusted_blocks(&self, skipped: &mut Vec<Skipped>) -> Option<Vec<String>> {
        let mut out = Vec::new();
        for (block, at) in self.trusted.as_ref()? {
            match Cidr::parse(block) {
                Ok(c) => out.push(c.to_string()),
                Err(why) => skipped.push(skip(at, "set_real_ip_from", &why)),
            }
        }
        Some(out)
    }
}

fn skip(at: &str, directive: &str, why: &str) -> Skipped {
    Skipped {
        at: at.to_string(),
        directive: directive.to_string(),
        why: why.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn convert(text: &str) -> (toml::Table, Vec<String>) {
        let c = crate::convert::convert_text(text, Path::new("t.conf")).unwrap();
        let skipped = c.skipped.iter().map(ToString::to_string).collect();
        (c.toml.parse().unwrap(), skipped)
    }

    fn strings(v: &toml::Value) -> Vec<&str> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect()
    }

    #[test]
    fn allow_and_deny_become_route_rules_inherited_as_nginx_does() {
        let (t, skipped) = convert(
            r#"http { server {
  listen 8080;
  allow 10.0.0.0/8;
  allow ::1;
  deny all;
  location / { proxy_pass http://127.0.0.1:9000; }
  location /open { allow all; proxy_pass http://127.0.0.1:9000; }
  location /gone { return 404; }
  location /odd { deny unix:; deny 10.1.0.0/8; proxy_pass http://127.0.0.1:9000; }
} }"#,
        );
        let routes = t["routes"].as_array().unwrap();
        let access = |path: &str| {
            let r = routes
                .iter()
                .find(|r| r.get("path_prefix").and_then(|p| p.as_str()) == Some(path))
                .unwrap_or_else(|| panic!("{path}: {t}"));
            r.get("access").map(strings).unwrap_or_default()
        };
        assert_eq!(
            access("/"),
            ["allow 10.0.0.0/8", "allow ::1/128", "deny all"]
        );
        assert_eq!(access("/open"), ["allow all"]);
        assert!(access("/gone").is_empty());
        assert!(access("/odd").is_empty());
        let denies = skipped.iter().filter(|s| s.contains(": deny: ")).count();
        assert_eq!(denies, 2, "{skipped:?}");
        let check = crate::config::Config::from_toml(&t.to_string(), "c.toml");
        assert!(check.is_ok(), "{check:?}");
    }

    #[test]
    fn set_real_ip_from_becomes_the_listeners_trusted_proxies() {
        let (t, skipped) = convert(
            r#"http {
  set_real_ip_from 10.0.0.0/8;
  real_ip_header X-Forwarded-For;
  real_ip_recursive on;
  server { listen 8080; server_name a.test; set_real_ip_from ::1; location / { proxy_pass http://127.0.0.1:9000; }
           location /x { set_real_ip_from 192.0.2.1; proxy_pass http://127.0.0.1:9000; } }
  server { listen 8081; server_name b.test; location / { proxy_pass http://127.0.0.1:9000; } }
  server { listen 8082; server_name c.test; real_ip_header X-Real-IP; }
}"#,
        );
        let listeners = t["listeners"].as_array().unwrap();
        let trusted = |port: &str| {
            let l = listeners
                .iter()
                .find(|l| l["address"].as_str().unwrap().ends_with(port))
                .unwrap();
            l.get("trusted_proxies").map(strings).unwrap_or_default()
        };
        assert_eq!(trusted(":8080"), ["::1/128"]);
        assert_eq!(trusted(":8081"), ["10.0.0.0/8"]);
        assert!(trusted(":8082").is_empty());
        assert!(
            skipped.iter().any(|s| s.contains("real_ip_header: only")),
            "{skipped:?}"
        );
        assert!(
            skipped.iter().any(|s| s.contains("in a location")),
            "{skipped:?}"
        );
    }
}
