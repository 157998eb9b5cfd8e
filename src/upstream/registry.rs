//! The upstream registry: what runs a config's upstream groups, built
//! from the config's pure data when it is put into service.
//!
//! For each group: its servers with every DNS name expanded to the
//! addresses it has, each server's health state and concurrency limit
//! (shared by all threads), the group's rustls client config and its
//! consistent-hash ring. The registry outlives configs: health and limits
//! are kept by `(group name, address)`, so a reload or a DNS change that
//! keeps a server keeps its state, with nothing copied from one config to
//! the next. It lives with the server (reload, DNS refresh), never on the
//! request path; workers get the built [`Upstreams`].

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::HeaderValue;

use crate::config::{Balance, Config, ConfigError, Limit, Protocol, Target, UpstreamGroup};
use crate::upstream::balance::Ring;
use crate::upstream::dns::Answer;
use crate::upstream::health::ServerHealth;
use crate::upstream::limit::ServerLimit;
use crate::upstream::tls::ServerTls;

/// A config's upstream groups, ready to use: one [`Group`] per config
/// group, in the same order.
#[derive(Debug)]
pub struct Upstreams {
    pub groups: Vec<Group>,
}

/// One group's servers (names expanded) and hash ring.
#[derive(Debug)]
pub struct Group {
    pub servers: Vec<Server>,
    /// Set for `balance = "hash"`.
    pub(crate) ring: Option<Arc<Ring>>,
    /// The group's TLS, kept for rebuilding after a DNS change.
    tls: Option<GroupTls>,
}

/// One server of a group, ready to connect to.
#[derive(Debug, Clone)]
pub struct Server {
    pub addr: SocketAddr,
    /// `host:port` as written in the config, for `UpstreamHost::Server`.
    pub authority: HeaderValue,
    /// Relative share of requests.
    pub weight: u32,
    /// Used only while no primary server of the group is in service.
    pub backup: bool,
    /// Shared by every thread; kept while the server is.
    pub(crate) health: Arc<ServerHealth>,
    /// The group's per-server concurrency cap, if set.
    pub(crate) limit: Option<Arc<ServerLimit>>,
    /// Set for `https://` servers.
    pub tls: Option<ServerTls>,
    pub protocol: Protocol,
    /// The DNS name this address came from (`name:port` servers).
    pub name: Option<String>,
}

/// A group's client configs: as the group speaks, HTTP/1.1 only, and
/// with no ALPN (streams).
#[derive(Debug, Clone)]
struct GroupTls {
    config: Arc<rustls::ClientConfig>,
    http1: Arc<rustls::ClientConfig>,
    bare: Arc<rustls::ClientConfig>,
}

/// What outlives configs: state by `(group, address)`, and the DNS answers
/// in force.
#[derive(Debug, Default)]
pub struct Registry {
    health: HashMap<(String, SocketAddr), Arc<ServerHealth>>,
    limits: HashMap<(String, SocketAddr), (Limit, Arc<ServerLimit>)>,
    answers: HashMap<String, Answer>,
}

impl Registry {
    /// Builds `config`'s upstreams: resolves every name it gives (now,
    /// blocking), reads its TLS files. Errors name the file, line and
    /// field, as load errors do.
    pub fn build(&mut self, config: &Config) -> Result<Upstreams, ConfigError> {
        let mut problems = Vec::new();
        let mut hosts: Vec<String> = names(config).into_iter().collect();
        hosts.sort();
        let resolved = if hosts.is_empty() {
            HashMap::new()
        } else {
            crate::upstream::dns::resolve_blocking(&config.dns, &hosts)
        };
        let mut answers = HashMap::new();
        for (gi, g) in config.upstreams.iter().enumerate() {
            for (i, s) in g.servers.iter().enumerate() {
                let Target::Name { host, .. } = &s.target else {
                    continue;
                };
                match resolved.get(host) {
                    Some(Ok(a)) => {
                        answers.insert(host.clone(), a.clone());
                    }
                    found => problems.push((
                        format!("upstreams.{}.servers[{i}]", config.upstreams[gi].name),
                        match found {
                            Some(Err(e)) => format!("`{}` does not resolve: {e}", written(s)),
                            _ => format!("`{}` does not resolve", written(s)),
                        },
                    )),
                }
            }
        }
        let mut tls = Vec::new();
        for g in &config.upstreams {
            match group_tls(g) {
                Ok(t) => tls.push(t),
                Err((f, reason)) => {
                    let f = format!("upstreams.{}.tls.{f}", g.name);
                    problems.push((f.trim_end_matches('.').to_string(), reason));
                    tls.push(None);
                }
            }
        }
        if !problems.is_empty() {
            return Err(config.source.invalid(problems));
        }
        self.answers = answers;
        Ok(self.assemble(config, tls))
    }

    /// `config`'s upstreams again with `host` at `ips` (sorted); `None`
    /// when that changes nothing. No I/O: the TLS configs of `current`
    /// are kept.
    pub(crate) fn with_addresses(
        &mut self,
        config: &Config,
        current: &Upstreams,
        host: &str,
        ips: &[IpAddr],
    ) -> Option<Upstreams> {
        let answer = self.answers.get_mut(host)?;
        if answer.0 == ips {
            return None;
        }
        answer.0 = ips.to_vec();
        let tls = current.groups.iter().map(|g| g.tls.clone()).collect();
        Some(self.assemble(config, tls))
    }

    /// The names in force, with their addresses and when they expire: what
    /// the DNS refresher watches.
    pub(crate) fn answers(&self) -> BTreeMap<String, Answer> {
        self.answers
            .iter()
            .map(|(h, a)| (h.clone(), a.clone()))
            .collect()
    }

    /// Puts the groups together from the answers in force; state of
    /// servers no longer present is let go.
    fn assemble(&mut self, config: &Config, tls: Vec<Option<GroupTls>>) -> Upstreams {
        let mut health = HashMap::new();
        let mut limits = HashMap::new();
        let mut groups = Vec::new();
        for (g, tls) in config.upstreams.iter().zip(tls) {
            let mut servers = Vec::new();
            for s in &g.servers {
                let (addrs, name) = match &s.target {
                    Target::Addr(a) => (vec![*a], None),
                    Target::Name { host, port } => (
                        self.answers
                            .get(host)
                            .map(|(ips, _)| ips.iter().map(|ip| SocketAddr::new(*ip, *port)))
                            .into_iter()
                            .flatten()
                            .collect(),
                        Some(host.clone()),
                    ),
                };
                for addr in addrs {
                    let key = (g.name.clone(), addr);
                    let h = self.health.get(&key).cloned().unwrap_or_default();
                    health.insert(key.clone(), h.clone());
                    let limit = g.limit.map(|l| {
                        let kept = self.limits.get(&key).filter(|(was, _)| *was == l);
                        let shared = match kept {
                            Some((_, shared)) => shared.clone(),
                            None => ServerLimit::new(l.max_connections, l.max_pending),
                        };
                        limits.insert(key.clone(), (l, shared.clone()));
                        shared
                    });
                    servers.push(Server {
                        addr,
                        authority: s.authority.clone(),
                        weight: s.weight,
                        backup: s.backup,
                        health: h,
                        limit,
                        tls: server_tls(g, s, tls.as_ref()),
                        protocol: g.protocol,
                        name: name.clone(),
                    });
                }
            }
            let ring = matches!(g.balance, Balance::Hash(_)).then(|| {
                // Backups stay off the ring while the group has a primary:
                // keys move to them only when every primary is out.
                let primaries = servers.iter().any(|s| !s.backup);
                let points: Vec<(SocketAddr, u32)> = servers
                    .iter()
                    .map(|s| (s.addr, if s.backup && primaries { 0 } else { s.weight }))
                    .collect();
                Arc::new(Ring::new(&points))
            });
            groups.push(Group { servers, ring, tls });
        }
        self.health = health;
        self.limits = limits;
        Upstreams { groups }
    }
}

/// Every DNS name `config`'s servers give.
fn names(config: &Config) -> std::collections::BTreeSet<String> {
    config
        .upstreams
        .iter()
        .flat_map(|g| &g.servers)
        .filter_map(|s| match &s.target {
            Target::Name { host, .. } => Some(host.clone()),
            Target::Addr(_) => None,
        })
        .collect()
}

/// A server entry's `host:port` as written, for errors.
fn written(s: &crate::config::Server) -> &str {
    s.authority.to_str().unwrap_or_default()
}

fn group_tls(g: &UpstreamGroup) -> Result<Option<GroupTls>, (&'static str, String)> {
    let Some(t) = &g.tls else { return Ok(None) };
    let config = crate::upstream::tls::client_config(t, g.protocol)?;
    let http1 = if g.protocol == Protocol::Http1 {
        config.clone()
    } else {
        let mut c = (*config).clone();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(c)
    };
    let mut bare = (*config).clone();
    bare.alpn_protocols = Vec::new();
    Ok(Some(GroupTls {
        config,
        http1,
        bare: Arc::new(bare),
    }))
}

fn server_tls(
    g: &UpstreamGroup,
    s: &crate::config::Server,
    tls: Option<&GroupTls>,
) -> Option<ServerTls> {
    let tls = tls?;
    let name = match g.tls.as_ref().and_then(|t| t.server_name.clone()) {
        Some(n) => n,
        // Checked at load: every https server has a name.
        None => crate::config::tls_name(s).ok()?,
    };
    Some(ServerTls {
        config: tls.config.clone(),
        http1_config: tls.http1.clone(),
        bare_config: tls.bare.clone(),
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(servers: &str) -> Config {
        let text = format!(
            "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[routes]]\nupstream = \"app\"\n\
             [upstreams.app]\nservers = [{servers}]\nmax_connections = 4\nbalance = \"hash\"\n"
        );
        Config::from_toml(&text, "t.toml").expect("valid")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn new_addresses_replace_a_names_servers_and_keep_the_others() {
        let c = config("\"10.0.0.9:80\", \"app.test:8080\"");
        let mut r = Registry::default();
        r.answers.insert(
            "app.test".into(),
            (
                vec![ip("10.0.0.1"), ip("10.0.0.2")],
                std::time::Instant::now(),
            ),
        );
        let before = r.assemble(&c, vec![None]);
        let same = [ip("10.0.0.1"), ip("10.0.0.2")];
        assert!(r.with_addresses(&c, &before, "app.test", &same).is_none());
        assert!(r
            .with_addresses(&c, &before, "other.test", &[ip("10.0.0.5")])
            .is_none());

        let after = r
            .with_addresses(&c, &before, "app.test", &[ip("10.0.0.2"), ip("10.0.0.3")])
            .expect("changed");
        let (b, a) = (&before.groups[0].servers, &after.groups[0].servers);
        let addrs: Vec<String> = a.iter().map(|s| s.addr.to_string()).collect();
        assert_eq!(addrs, ["10.0.0.9:80", "10.0.0.2:8080", "10.0.0.3:8080"]);
        // The static server and the kept address keep health and limit.
        assert!(Arc::ptr_eq(&a[0].health, &b[0].health));
        assert!(Arc::ptr_eq(&a[1].health, &b[2].health));
        assert!(Arc::ptr_eq(
            a[1].limit.as_ref().unwrap(),
            b[2].limit.as_ref().unwrap()
        ));
        // The new one starts fresh, with the entry's settings.
        assert!(!Arc::ptr_eq(&a[2].health, &b[2].health));
        assert!(a[2].limit.is_some());
        assert_eq!(a[2].authority, b[2].authority);
        assert_eq!(a[2].name.as_deref(), Some("app.test"));
        assert!(after.groups[0].ring.is_some());
    }

    #[test]
    fn a_reload_keeps_the_state_of_servers_it_keeps() {
        let mut r = Registry::default();
        let one = r
            .build(&config("\"10.0.0.1:80\", \"10.0.0.2:80\""))
            .expect("built");
        let two = r
            .build(&config("\"10.0.0.2:80\", \"10.0.0.3:80\""))
            .expect("built");
        let (a, b) = (&one.groups[0].servers, &two.groups[0].servers);
        assert!(Arc::ptr_eq(&a[1].health, &b[0].health));
        assert!(Arc::ptr_eq(
            a[1].limit.as_ref().unwrap(),
            b[0].limit.as_ref().unwrap()
        ));
        assert!(!Arc::ptr_eq(&a[0].health, &b[1].health));
        // A changed limit is a new one.
        let three = r
            .build(&config("\"10.0.0.2:80\"").replace_limit(8))
            .expect("built");
        assert!(Arc::ptr_eq(
            &b[0].health,
            &three.groups[0].servers[0].health
        ));
        assert!(!Arc::ptr_eq(
            b[0].limit.as_ref().unwrap(),
            three.groups[0].servers[0].limit.as_ref().unwrap()
        ));
    }

    trait ReplaceLimit {
        fn replace_limit(self, max: u32) -> Self;
    }

    impl ReplaceLimit for Config {
        fn replace_limit(mut self, max: u32) -> Config {
            self.upstreams[0].limit = Some(Limit {
                max_connections: max,
                max_pending: 0,
            });
            self
        }
    }
}
