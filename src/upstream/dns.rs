//! Service discovery through DNS.
//!
//! An upstream server written as `name:port`, where `name` is not an IP
//! literal, is a DNS entry: every A and AAAA address the name has becomes
//! an endpoint of the group, with the entry's weight and limits and its
//! `name:port` as authority. Names are resolved when the config loads
//! (start, SIGHUP) — a name that does not resolve then is a config error —
//! and again in the background by a [`Refresher`] thread: each name after
//! its answer's TTL, bounded by `[dns] min_refresh` and `max_refresh`.
//!
//! When a name's address set changes, the running upstreams are rebuilt
//! with the new endpoints ([`crate::upstream::registry::Registry::with_addresses`])
//! and swapped in through the same path as a reload: in-flight requests finish on the old config, endpoints
//! present before and after keep their health and limits, new requests see
//! the new set. A failed refresh (timeout, NXDOMAIN, no address) keeps the
//! last known addresses and logs one line; it is tried again after
//! `min_refresh`, doubled on each failure in a row up to `max_refresh`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use tokio::sync::watch;

use crate::config::Dns as Settings;

/// A successful lookup: the addresses (sorted, no duplicates) and when the
/// answer expires.
pub(crate) type Answer = (Vec<IpAddr>, Instant);

/// Why a name has no address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LookupError {
    #[error("no such name (NXDOMAIN)")]
    NoSuchName,
    #[error("no A or AAAA record")]
    NoAddress,
    #[error("the name server answered {0} ({code})", code = u16::from(*.0))]
    Answered(hickory_resolver::proto::op::ResponseCode),
    /// Anything else the resolver said (timeouts, unreachable servers),
    /// in its words.
    #[error("{0}")]
    Failed(String),
    /// The resolver could not be set up.
    #[error("{0}")]
    Setup(String),
    /// With why the resolver may not know the name (it has no name server).
    #[error("{error}; {note}")]
    Noted {
        error: Box<LookupError>,
        note: Arc<str>,
    },
}

/// A resolver, and why it may miss names: without a readable system
/// configuration only `/etc/hosts` and `localhost` resolve.
#[derive(Clone)]
struct Resolver {
    r: TokioResolver,
    note: Option<Arc<str>>,
}

fn resolver(s: &Settings) -> Result<Resolver, LookupError> {
    let mut note = None;
    let mut builder = if s.resolvers.is_empty() {
        TokioResolver::builder_tokio().unwrap_or_else(|e| {
            note = Some(Arc::from(format!(
                "no name server: cannot read the system resolver configuration ({e})"
            )));
            hosts_only()
        })
    } else {
        let servers = s
            .resolvers
            .iter()
            .map(|a| {
                let mut ns = NameServerConfig::udp_and_tcp(a.ip());
                for c in &mut ns.connections {
                    c.port = a.port();
                }
                ns
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let o = builder.options_mut();
    o.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    o.use_hosts_file = ResolveHosts::Always;
    o.timeout = s.timeout;
    o.attempts = 1;
    // The cache must not answer a refresh with what the refresh is meant
    // to replace: positive answers live at most max_refresh, failures at
    // most min_refresh.
    o.positive_max_ttl = Some(s.max_refresh);
    o.negative_max_ttl = Some(s.min_refresh);
    let r = builder
        .build()
        .map_err(|e| LookupError::Setup(format!("cannot set up the resolver: {e}")))?;
    Ok(Resolver { r, note })
}

/// A resolver of `/etc/hosts` and `localhost` only.
fn hosts_only() -> hickory_resolver::ResolverBuilder<TokioRuntimeProvider> {
    TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(Vec::new()),
        TokioRuntimeProvider::default(),
    )
}

async fn lookup(r: &Resolver, host: &str) -> Result<Answer, LookupError> {
    let found = r.r.lookup_ip(host).await.map_err(|e| match &r.note {
        Some(note) => LookupError::Noted {
            error: Box::new(classify(&e)),
            note: note.clone(),
        },
        None => classify(&e),
    })?;
    let mut ips: Vec<IpAddr> = found.iter().collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        return Err(LookupError::NoAddress);
    }
    Ok((ips, found.valid_until()))
}

/// What a lookup error means (hickory's own Display prints the query's
/// Debug form).
fn classify(e: &hickory_resolver::net::NetError) -> LookupError {
    use hickory_resolver::net::{DnsError, NetError};
    use hickory_resolver::proto::op::ResponseCode;
    match e {
        NetError::Dns(DnsError::NoRecordsFound(n)) if n.response_code == ResponseCode::NXDomain => {
            LookupError::NoSuchName
        }
        NetError::Dns(DnsError::NoRecordsFound(_)) => LookupError::NoAddress,
        NetError::Dns(DnsError::ResponseCode(code)) => LookupError::Answered(*code),
        e => LookupError::Failed(e.to_string()),
    }
}

/// Resolves `hosts` now, all at once, on a thread of its own (so it works
/// from inside or outside a runtime). For config loading.
pub(crate) fn resolve_blocking(
    s: &Settings,
    hosts: &[String],
) -> HashMap<String, Result<Answer, LookupError>> {
    let (s, hosts) = (s.clone(), hosts.to_vec());
    let work = move || {
        let failed = |hosts: &[String], e: LookupError| {
            hosts.iter().map(|h| (h.clone(), Err(e.clone()))).collect()
        };
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let e = LookupError::Setup(format!("cannot start a runtime: {e}"));
                return failed(&hosts, e);
            }
        };
        rt.block_on(async {
            let r = match resolver(&s) {
                Ok(r) => r,
                Err(e) => return failed(&hosts, e),
            };
            let mut set = tokio::task::JoinSet::new();
            for h in hosts {
                let r = r.clone();
                set.spawn(async move {
                    let answer = lookup(&r, &h).await;
                    (h, answer)
                });
            }
            let mut out = HashMap::new();
            while let Some(done) = set.join_next().await {
                if let Ok((h, a)) = done {
                    out.insert(h, a);
                }
            }
            out
        })
    };
    match std::thread::Builder::new()
        .name("tidegate-resolve".into())
        .spawn(work)
        .map(|t| t.join())
    {
        Ok(Ok(out)) => out,
        _ => HashMap::new(),
    }
}

/// What the refreshes of one name did, for the metrics and the status
/// page.
#[derive(Debug, Default, Clone)]
pub(crate) struct NameStats {
    pub(crate) refreshes: u64,
    pub(crate) failures: u64,
    pub(crate) changes: u64,
    /// The addresses in force.
    pub(crate) addresses: Vec<IpAddr>,
    /// Addresses a change removed, with when (Unix ms); the latest few.
    pub(crate) removed: Vec<(IpAddr, u64)>,
}

/// Every name's [`NameStats`], kept by the server across reloads.
pub(crate) type DnsStats = Arc<Mutex<BTreeMap<String, NameStats>>>;

/// Removed addresses kept per name.
const REMOVED_KEPT: usize = 16;

fn note(stats: &DnsStats, host: &str, f: impl FnOnce(&mut NameStats)) {
    let mut all = stats.lock().unwrap_or_else(|p| p.into_inner());
    f(all.entry(host.to_string()).or_default());
}

/// What the refresher calls with a name's new address set (on a blocking
/// thread; it may take locks).
pub(crate) type Apply = Arc<dyn Fn(&str, &[IpAddr]) + Send + Sync>;

/// The background re-resolution of a config's DNS names; stopped by
/// [`Refresher::stop`].
pub(crate) struct Refresher {
    handle: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl Refresher {
    /// Starts re-resolving `names` (each with the addresses in force and
    /// when they expire), or returns `None` when there are none.
    pub(crate) fn spawn(
        settings: &Settings,
        names: BTreeMap<String, Answer>,
        apply: Apply,
        stats: DnsStats,
    ) -> Option<Refresher> {
        if names.is_empty() {
            return None;
        }
        for (host, (ips, _)) in &names {
            note(&stats, host, |n| n.addresses = ips.clone());
        }
        let settings = settings.clone();
        let (stop, stopped) = watch::channel(false);
        let handle = crate::rt::on_own_thread("tidegate-dns", move || async move {
            let r = match resolver(&settings) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("DNS refresh not started: {e}");
                    return;
                }
            };
            let mut tasks = tokio::task::JoinSet::new();
            for (host, answer) in names {
                tasks.spawn(refresh(
                    r.clone(),
                    settings.clone(),
                    host,
                    answer,
                    apply.clone(),
                    stats.clone(),
                    stopped.clone(),
                ));
            }
            while tasks.join_next().await.is_some() {}
        })
        .map_err(|e| tracing::error!("DNS refresh not started: {e}"))
        .ok()?;
        Some(Refresher { handle, stop })
    }

    /// Stops the thread and waits for it (a change being applied finishes).
    pub(crate) fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.handle.join();
    }
}

/// The re-resolve interval for an answer valid until `until`.
fn interval(s: &Settings, until: Instant) -> Duration {
    until
        .saturating_duration_since(Instant::now())
        .clamp(s.min_refresh, s.max_refresh)
}

/// One name's loop: wait, resolve, apply a changed set.
async fn refresh(
    r: Resolver,
    s: Settings,
    host: String,
    (mut ips, expires): Answer,
    apply: Apply,
    stats: DnsStats,
    mut stop: watch::Receiver<bool>,
) {
    let mut wait = interval(&s, expires);
    let mut failures: u32 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        let found = tokio::select! {
            found = lookup(&r, &host) => found,
            _ = stop.changed() => return,
        };
        note(&stats, &host, |n| {
            n.refreshes += 1;
            match &found {
                Err(_) => n.failures += 1,
                Ok((now, _)) if *now != ips => {
                    n.changes += 1;
                    let at = crate::tally::unix_ms();
                    n.removed.extend(
                        ips.iter()
                            .filter(|ip| !now.contains(ip))
                            .map(|ip| (*ip, at)),
                    );
                    let excess = n.removed.len().saturating_sub(REMOVED_KEPT);
                    n.removed.drain(..excess);
                    n.removed.retain(|(ip, _)| !now.contains(ip));
                    n.addresses = now.clone();
                }
                Ok(_) => {}
            }
        });
        match found {
            Ok((now, until)) => {
                if failures > 0 {
                    tracing::info!(
                        host,
                        "DNS: resolves again after {failures} failed refresh(es)"
                    );
                    failures = 0;
                }
                if now != ips {
                    tracing::info!(host, "DNS: addresses changed from {ips:?} to {now:?}");
                    let (apply, h, n) = (apply.clone(), host.clone(), now.clone());
                    if tokio::task::spawn_blocking(move || apply(&h, &n))
                        .await
                        .is_err()
                    {
                        tracing::error!(host, "DNS: applying the new addresses failed");
                    }
                    ips = now;
                }
                wait = interval(&s, until);
            }
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(
                        host,
                        "DNS: refresh failed ({e}); keeping the last known addresses {ips:?}"
                    );
                } else {
                    tracing::debug!(host, "DNS: refresh failed again ({e})");
                }
                failures = failures.saturating_add(1);
                wait = s
                    .min_refresh
                    .saturating_mul(1 << (failures - 1).min(16))
                    .min(s.max_refresh);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_name_servers_localhost_still_resolves() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut b = hosts_only();
            b.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
            let r = Resolver {
                r: b.build().unwrap(),
                note: Some("no name server".into()),
            };
            let (ips, _) = lookup(&r, "localhost").await.expect("localhost");
            assert!(ips.contains(&IpAddr::from([127, 0, 0, 1])), "{ips:?}");
            let e = lookup(&r, "nothing.invalid").await.expect_err("no server");
            assert!(
                matches!(&e, LookupError::Noted { note, .. } if &**note == "no name server"),
                "{e:?}"
            );
            assert!(e.to_string().ends_with("; no name server"), "{e}");
        });
    }

    #[test]
    fn refresh_interval_follows_the_ttl_within_bounds() {
        let s = Settings {
            min_refresh: Duration::from_secs(2),
            max_refresh: Duration::from_secs(60),
            ..Settings::default()
        };
        let now = Instant::now();
        assert_eq!(interval(&s, now), Duration::from_secs(2));
        assert_eq!(
            interval(&s, now + Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        let mid = interval(&s, now + Duration::from_secs(30));
        assert!(mid > Duration::from_secs(28) && mid <= Duration::from_secs(30));
    }
}
