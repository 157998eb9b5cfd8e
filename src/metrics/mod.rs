//! Metrics: what the admin listener's `/metrics` exposes.
//!
//! Each worker thread counts into [`Counters`] of its own, one set per
//! config generation: plain atomics that only that thread writes (a load
//! and a store, never a contended read-modify-write) and that a scrape
//! reads. Label sets are bounded by the config: listener, route, upstream
//! group and server, status class; nothing per path or per client.
//!
//! The [`Registry`] (one per process, owned by the server) knows every
//! thread's counters; a scrape adds them up by label values, so a series
//! goes on across reloads (a route or server in both configs keeps
//! counting from where it was). Counters of a generation no worker uses
//! any more are folded into retired totals and let go.

mod exposition;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::upstream::registry::Upstreams;

pub(crate) use exposition::{open_metrics, render, Gauges, TraceCounts};

/// Upper bounds of the request-duration histogram, in seconds.
pub(crate) const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// `1xx` ... `5xx`.
const CLASSES: usize = 5;

/// The label values of one config generation's series.
#[derive(Debug)]
pub(crate) struct Labels {
    /// Listeners by configured address.
    pub(crate) listeners: Vec<SocketAddr>,
    /// Route names (`name`, else `routes[i]`), by config index; one more,
    /// `none`, for requests answered before a route was found.
    pub(crate) routes: Vec<String>,
    /// `(group, server address)` in the pool's flat order.
    pub(crate) servers: Vec<(String, String)>,
}

impl Labels {
    pub(crate) fn new(config: &Config, upstreams: &Upstreams) -> Labels {
        let mut routes: Vec<String> = config.routes.iter().map(|r| r.label()).collect();
        routes.push("none".into());
        let servers = config
            .upstreams
            .iter()
            .zip(&upstreams.groups)
            .flat_map(|(g, built)| {
                built
                    .servers
                    .iter()
                    .map(|s| (g.name.clone(), s.addr.to_string()))
            })
            .collect();
        Labels {
            listeners: config.listeners.iter().map(|l| l.addr).collect(),
            routes,
            servers,
        }
    }
}

/// One worker's counts under one config generation.
#[derive(Debug)]
pub(crate) struct Counters {
    labels: Arc<Labels>,
    /// `[listener][route][class]`.
    requests: Box<[AtomicU64]>,
    /// `[listener][route][bucket]`, the last bucket `+Inf`; not cumulative.
    duration: Box<[AtomicU64]>,
    /// `[listener][route]`, nanoseconds.
    duration_sum: Box<[AtomicU64]>,
    /// `[listener][route]`: response body bytes sent.
    sent: Box<[AtomicU64]>,
    /// `[server][class]`: responses from each upstream server.
    upstream: Box<[AtomicU64]>,
    /// `[listener]`.
    accepted: Box<[AtomicU64]>,
}

fn zeros(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

/// Adds `n`: this thread is the only writer.
fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

fn class(status: u16) -> usize {
    usize::from(status / 100).clamp(1, CLASSES) - 1
}

/// How a request ended, for its counts.
pub(crate) struct Ended {
    pub(crate) listener: SocketAddr,
    /// The route's config index.
    pub(crate) route: Option<usize>,
    /// The pool's flat index of the server that answered.
    pub(crate) server: Option<usize>,
    pub(crate) status: u16,
    pub(crate) bytes: u64,
    pub(crate) elapsed: Duration,
}

impl Counters {
    pub(crate) fn new(labels: Arc<Labels>) -> Counters {
        let pairs = labels.listeners.len() * labels.routes.len();
        Counters {
            requests: zeros(pairs * CLASSES),
            duration: zeros(pairs * (BUCKETS.len() + 1)),
            duration_sum: zeros(pairs),
            sent: zeros(pairs),
            upstream: zeros(labels.servers.len() * CLASSES),
            accepted: zeros(labels.listeners.len()),
            labels,
        }
    }

    fn listener(&self, addr: SocketAddr) -> Option<usize> {
        self.labels.listeners.iter().position(|l| *l == addr)
    }

    /// A connection accepted on the listener configured at `addr`.
    pub(crate) fn accepted(&self, addr: SocketAddr) {
        if let Some(l) = self.listener(addr) {
            add(&self.accepted[l], 1);
        }
    }

    /// A request's end.
    pub(crate) fn ended(&self, e: &Ended) {
        let Some(l) = self.listener(e.listener) else {
            return;
        };
        let routes = self.labels.routes.len();
        let r = e.route.filter(|&r| r + 1 < routes).unwrap_or(routes - 1);
        let pair = l * routes + r;
        let c = class(e.status);
        add(&self.requests[pair * CLASSES + c], 1);
        let secs = e.elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        add(&self.duration[pair * (BUCKETS.len() + 1) + bucket], 1);
        add(
            &self.duration_sum[pair],
            u64::try_from(e.elapsed.as_nanos()).unwrap_or(u64::MAX),
        );
        add(&self.sent[pair], e.bytes);
        if let Some(s) = e.server.filter(|&s| s < self.labels.servers.len()) {
            add(&self.upstream[s * CLASSES + c], 1);
        }
    }
}

/// A series: metric name and its label pairs, in order.
type Series = (&'static str, Vec<(&'static str, String)>);

/// Every thread's counters, and what retired ones counted.
#[derive(Debug)]
pub(crate) struct Registry {
    live: Mutex<Vec<Arc<Counters>>>,
    retired: Mutex<BTreeMap<Series, f64>>,
    /// Process-wide values the server keeps.
    pub(crate) reloads_ok: AtomicU64,
    pub(crate) reloads_failed: AtomicU64,
    /// Unix seconds of the last successful load (start or reload).
    pub(crate) last_reload: AtomicU64,
    pub(crate) started: SystemTime,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            live: Mutex::default(),
            retired: Mutex::default(),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            last_reload: AtomicU64::new(unix_now()),
            started: SystemTime::now(),
        }
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    /// New counters for a worker, known to scrapes from now on.
    pub(crate) fn counters(&self, labels: Arc<Labels>) -> Arc<Counters> {
        let c = Arc::new(Counters::new(labels));
        lock(&self.live).push(c.clone());
        c
    }

    /// Every series with its value, summed over threads and generations.
    pub(crate) fn collect(&self) -> BTreeMap<Series, f64> {
        let mut live = lock(&self.live);
        let mut retired = lock(&self.retired);
        let mut out = retired.clone();
        live.retain(|c| {
            // Only the registry holds it: no worker counts there any more.
            if Arc::strong_count(c) == 1 {
                series(c, &mut retired);
                series(c, &mut out);
                false
            } else {
                series(c, &mut out);
                true
            }
        });
        out
    }
}

/// Adds `c`'s series to `out`.
fn series(c: &Counters, out: &mut BTreeMap<Series, f64>) {
    let l = &c.labels;
    let mut put = |name: &'static str, labels: Vec<(&'static str, String)>, v: f64| {
        if v > 0.0 {
            *out.entry((name, labels)).or_default() += v;
        }
    };
    let get = |c: &AtomicU64| c.load(Relaxed) as f64;
    for (li, listener) in l.listeners.iter().enumerate() {
        put(
            "tidegate_connections_accepted_total",
            vec![("listener", listener.to_string())],
            get(&c.accepted[li]),
        );
        for (ri, route) in l.routes.iter().enumerate() {
            let pair = li * l.routes.len() + ri;
            let base = || vec![("listener", listener.to_string()), ("route", route.clone())];
            for class in 0..CLASSES {
                let mut labels = base();
                labels.push(("code", format!("{}xx", class + 1)));
                put(
                    "tidegate_requests_total",
                    labels,
                    get(&c.requests[pair * CLASSES + class]),
                );
            }
            put(
                "tidegate_response_body_bytes_total",
                base(),
                get(&c.sent[pair]),
            );
            // Histogram buckets are stored apart and made cumulative when
            // rendered; a count of 0 is left out like any other series.
            for b in 0..=BUCKETS.len() {
                let mut labels = base();
                labels.push(("le", bucket_label(b)));
                put(
                    "tidegate_request_duration_seconds_bucket",
                    labels,
                    get(&c.duration[pair * (BUCKETS.len() + 1) + b]),
                );
            }
            put(
                "tidegate_request_duration_seconds_sum",
                base(),
                get(&c.duration_sum[pair]) / 1e9,
            );
        }
    }
    for (si, (group, server)) in l.servers.iter().enumerate() {
        for class in 0..CLASSES {
            put(
                "tidegate_upstream_responses_total",
                vec![
                    ("group", group.clone()),
                    ("server", server.clone()),
                    ("code", format!("{}xx", class + 1)),
                ],
                get(&c.upstream[si * CLASSES + class]),
            );
        }
    }
}

/// The `le` label of bucket `b` (the last is `+Inf`).
pub(crate) fn bucket_label(b: usize) -> String {
    BUCKETS
        .get(b)
        .map_or_else(|| "+Inf".to_string(), |v| v.to_string())
}
