//! What the admin listener reads from the server: the drain switch, the
//! config in force, and the values a scrape or the status page shows
//! beside the counters.

use std::sync::{Arc, Mutex};

use super::{lock, Shared};
use crate::config::Config;

/// The admin API's drain switch over the upstreams in force.
pub(super) fn drain(shared: &Arc<Mutex<Shared>>) -> crate::admin::Drain {
    let weak = Arc::downgrade(shared);
    Arc::new(move |group: &str, server: &str, drained: bool| {
        let shared = weak.upgrade()?;
        let s = lock(&shared);
        let g = &s.current;
        let i = g.config.upstreams.iter().position(|u| u.name == group)?;
        let mut n = 0;
        for srv in &g.upstreams.groups[i].servers {
            if srv.addr.to_string() == server {
                srv.health.drain(drained);
                n += 1;
            }
        }
        Some(n)
    })
}

/// The config in force, for the admin API.
pub(super) fn in_force(shared: &Arc<Mutex<Shared>>) -> crate::admin::ConfigSource {
    let weak = Arc::downgrade(shared);
    Arc::new(move || {
        let shared = weak.upgrade()?;
        let config = lock(&shared).current.config.clone();
        Some(config)
    })
}

/// The caches in force (`/caches` on the admin listener).
pub(super) fn caches(shared: &Arc<Mutex<Shared>>) -> crate::admin::CacheSource {
    let weak = Arc::downgrade(shared);
    Arc::new(move || {
        let shared = weak.upgrade()?;
        let caches = lock(&shared).current.caches.clone();
        Some(caches)
    })
}

/// What a scrape reads beside the counters, from the config in force.
pub(super) fn gauges(shared: &Arc<Mutex<Shared>>) -> crate::admin::GaugeSource {
    use std::sync::atomic::Ordering::Relaxed;
    let weak = Arc::downgrade(shared);
    Arc::new(move || {
        let Some(shared) = weak.upgrade() else {
            return crate::metrics::Gauges::default();
        };
        let s = lock(&shared);
        let g = &s.current;
        crate::metrics::Gauges {
            open: s
                .gates
                .iter()
                .map(|(a, gate)| (a.to_string(), gate.open() as u64))
                .collect(),
            servers: g
                .config
                .upstreams
                .iter()
                .zip(&g.upstreams.groups)
                .flat_map(|(group, built)| {
                    built.servers.iter().map(|srv| {
                        let h = &srv.health;
                        crate::metrics::ServerGauge {
                            group: group.name.clone(),
                            server: srv.addr.to_string(),
                            up: h.available(),
                            drained: h.drained(),
                            down: h.down(),
                            ejected_for: h.ejected_for(),
                            ejections: h.ejected_total.load(Relaxed),
                            went_down: h.went_down.load(Relaxed),
                            went_up: h.went_up.load(Relaxed),
                        }
                    })
                })
                .collect(),
            log_dropped: s.writer.as_ref().map_or(0, |w| w.dropped.load(Relaxed)),
            caches: g
                .caches
                .all()
                .iter()
                .map(|c| {
                    let (keys, bytes) = c.usage();
                    (c.config.name.clone(), keys, bytes)
                })
                .collect(),
            dns: dns_stats(&s.dns),
            listeners: g
                .config
                .listeners
                .iter()
                .map(|l| (l.addr.to_string(), l.tls.is_some()))
                .collect(),
            routes: g
                .config
                .routes
                .iter()
                .map(|r| (r.label(), r.describe_match(), action(r, &g.config)))
                .collect(),
            acme: g.config.acme.as_ref().map(|_| g.acme.stats().clone()),
            trace: g.config.tracing.as_ref().map(|_| {
                let t = &s.trace_stats;
                crate::metrics::TraceCounts {
                    exported: t.exported.load(Relaxed),
                    dropped: t.dropped.load(Relaxed),
                    failures: t.failures.load(Relaxed),
                }
            }),
        }
    })
}

/// What a route does, for the status page.
fn action(r: &crate::router::Route, config: &Config) -> String {
    use crate::router::Action;
    match &r.action {
        Action::Proxy(g) => config
            .upstreams
            .get(*g)
            .map_or_else(String::new, |g| format!("upstream {}", g.name)),
        Action::Redirect { status, .. } => format!("redirect {}", status.as_u16()),
        Action::Respond { status, .. } => format!("respond {}", status.as_u16()),
        Action::Static(s) => match s.upstream.and_then(|g| config.upstreams.get(g)) {
            Some(g) => format!("static {}, then upstream {}", s.root.display(), g.name),
            None => format!("static {}", s.root.display()),
        },
    }
}

fn dns_stats(
    dns: &crate::upstream::dns::DnsStats,
) -> Vec<(String, crate::upstream::dns::NameStats)> {
    let all = dns.lock().unwrap_or_else(|p| p.into_inner());
    all.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}
