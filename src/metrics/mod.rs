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
mod session;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::tally::{add, bump, get, zeros, Histograms, BUCKETS};
use crate::upstream::registry::Upstreams;
use crate::upstream::stats::{Count, UpstreamStats};

pub(crate) use exposition::{open_metrics, render, Gauges, ServerGauge, TraceCounts};
pub(crate) use session::{SessionEnd, SESSION_ENDS};

/// `1xx` ... `5xx`.
const CLASSES: usize = 5;

/// A client connection's protocol, once known: `http/1.1` or `h2`, each
/// in the clear or over TLS 1.2 or 1.3.
pub(crate) const PROTOCOLS: [(&str, &str); 6] = [
    ("http/1.1", "none"),
    ("http/1.1", "TLSv1.2"),
    ("http/1.1", "TLSv1.3"),
    ("h2", "none"),
    ("h2", "TLSv1.2"),
    ("h2", "TLSv1.3"),
];

/// Why a TLS handshake with a client failed (a bounded set).
pub(crate) const TLS_FAILURES: [&str; 9] = [
    "timeout",
    "eof",
    "io",
    "no_shared_version_or_cipher",
    "no_application_protocol",
    "bad_client_certificate",
    "alert_received",
    "invalid_message",
    "other",
];

/// What became of a request on a route with a cache; its label is
/// [`CACHE_RESULTS`]`[result as usize]`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CacheResult {
    Hit,
    Miss,
    Revalidated,
    Stale,
    Bypass,
}

/// The `result` labels, in [`CacheResult`]'s order.
pub(crate) const CACHE_RESULTS: [&str; 5] = ["hit", "miss", "revalidated", "stale", "bypass"];

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
    /// Group names, by config index.
    pub(crate) groups: Vec<String>,
    /// Cache names, by config index.
    pub(crate) caches: Vec<String>,
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
            groups: config.upstreams.iter().map(|g| g.name.clone()).collect(),
            caches: config.caches.iter().map(|c| c.name.clone()).collect(),
        }
    }
}

/// One worker's counts under one config generation.
#[derive(Debug)]
pub(crate) struct Counters {
    labels: Arc<Labels>,
    /// `[listener][route][class]`.
    requests: Box<[AtomicU64]>,
    /// `[listener][route]`.
    duration: Histograms,
    /// `[listener][route]`: response body bytes sent.
    sent: Box<[AtomicU64]>,
    /// `[server][class]`: responses from each upstream server.
    upstream: Box<[AtomicU64]>,
    /// `[listener]`.
    accepted: Box<[AtomicU64]>,
    /// `[listener][protocol]` (see [`PROTOCOLS`]): connections set up,
    /// and those of them closed since.
    handled: Box<[AtomicU64]>,
    closed: Box<[AtomicU64]>,
    /// `[listener][reason]` (see [`TLS_FAILURES`]).
    tls_failed: Box<[AtomicU64]>,
    /// `[listener]`: HTTP/2 streams (requests) and GOAWAYs sent.
    streams: Box<[AtomicU64]>,
    goaways: Box<[AtomicU64]>,
    /// `[listener]`: bytes read from and written to client sockets.
    bytes_in: Box<[AtomicU64]>,
    bytes_out: Box<[AtomicU64]>,
    /// `[cache][result]` (see [`CACHE_RESULTS`]).
    cache: Box<[AtomicU64]>,
    /// `[listener][end]` (see [`SESSION_ENDS`]): stream connections.
    sessions: Box<[AtomicU64]>,
    /// `[listener]`: how long stream connections lasted.
    session_duration: Histograms,
    /// What this thread's pool counts.
    pub(crate) pool: Arc<UpstreamStats>,
}

fn class(status: u16) -> usize {
    usize::from(status / 100).clamp(1, CLASSES) - 1
}

/// How a request ended, for its counts.
pub(crate) struct Ended {
    /// The listener's index in the config (that of these counters).
    pub(crate) listener: usize,
    /// The route's config index.
    pub(crate) route: Option<usize>,
    /// The pool's flat index of the server that answered.
    pub(crate) server: Option<usize>,
    pub(crate) status: u16,
    pub(crate) bytes: u64,
    pub(crate) elapsed: Duration,
    /// An HTTP/2 stream.
    pub(crate) h2: bool,
}

/// A connection counter of [`Counters`], per listener.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Conn {
    BytesIn,
    BytesOut,
    Goaway,
}

impl Counters {
    pub(crate) fn new(labels: Arc<Labels>) -> Counters {
        let pairs = labels.listeners.len() * labels.routes.len();
        let listeners = labels.listeners.len();
        Counters {
            requests: zeros(pairs * CLASSES),
            duration: Histograms::new(pairs),
            sent: zeros(pairs),
            upstream: zeros(labels.servers.len() * CLASSES),
            accepted: zeros(listeners),
            handled: zeros(listeners * PROTOCOLS.len()),
            closed: zeros(listeners * PROTOCOLS.len()),
            tls_failed: zeros(listeners * TLS_FAILURES.len()),
            streams: zeros(listeners),
            goaways: zeros(listeners),
            bytes_in: zeros(listeners),
            bytes_out: zeros(listeners),
            cache: zeros(labels.caches.len() * CACHE_RESULTS.len()),
            sessions: zeros(listeners * SESSION_ENDS.len()),
            session_duration: Histograms::new(listeners),
            pool: Arc::new(UpstreamStats::new(
                labels.servers.len(),
                labels.groups.len(),
            )),
            labels,
        }
    }

    /// The index of the listener configured at `addr`.
    pub(crate) fn listener(&self, addr: SocketAddr) -> Option<usize> {
        self.labels.listeners.iter().position(|l| *l == addr)
    }

    /// A connection accepted on the listener configured at `addr`.
    pub(crate) fn accepted(&self, addr: SocketAddr) {
        if let Some(l) = self.listener(addr) {
            add(&self.accepted[l], 1);
        }
    }

    /// A connection on listener `l` set up with `protocol` (an index of
    /// [`PROTOCOLS`]); `closed` when it ends.
    pub(crate) fn handled(&self, l: usize, protocol: usize) {
        bump(&self.handled, l * PROTOCOLS.len() + protocol);
    }

    pub(crate) fn closed(&self, l: usize, protocol: usize) {
        bump(&self.closed, l * PROTOCOLS.len() + protocol);
    }

    /// A TLS handshake on listener `l` failed for `reason` (an index of
    /// [`TLS_FAILURES`]).
    pub(crate) fn tls_failed(&self, l: usize, reason: usize) {
        bump(&self.tls_failed, l * TLS_FAILURES.len() + reason);
    }

    /// Adds `n` to connection counter `c` of listener `l`.
    pub(crate) fn conn(&self, c: Conn, l: usize, n: u64) {
        let slice = match c {
            Conn::BytesIn => &self.bytes_in,
            Conn::BytesOut => &self.bytes_out,
            Conn::Goaway => &self.goaways,
        };
        if let Some(c) = slice.get(l) {
            add(c, n);
        }
    }

    /// A request on a route with cache `cache` came to `result`.
    pub(crate) fn cache(&self, cache: usize, result: CacheResult) {
        if cache < self.labels.caches.len() {
            bump(&self.cache, cache * CACHE_RESULTS.len() + result as usize);
        }
    }

    /// A stream connection on listener `l` ended.
    pub(crate) fn session(&self, l: usize, end: SessionEnd, elapsed: Duration) {
        if l < self.labels.listeners.len() {
            bump(&self.sessions, l * SESSION_ENDS.len() + end as usize);
            self.session_duration.observe(l, elapsed);
        }
    }

    /// A request's end.
    pub(crate) fn ended(&self, e: &Ended) {
        let l = e.listener;
        if l >= self.labels.listeners.len() {
            return;
        }
        let routes = self.labels.routes.len();
        let r = e.route.filter(|&r| r + 1 < routes).unwrap_or(routes - 1);
        let pair = l * routes + r;
        let c = class(e.status);
        add(&self.requests[pair * CLASSES + c], 1);
        self.duration.observe(pair, e.elapsed);
        add(&self.sent[pair], e.bytes);
        if e.h2 {
            add(&self.streams[l], 1);
        }
        if let Some(s) = e.server.filter(|&s| s < self.labels.servers.len()) {
            add(&self.upstream[s * CLASSES + c], 1);
        }
    }
}

/// A series: metric name and its label pairs, in order.
pub(crate) type Series = (&'static str, Vec<(&'static str, String)>);

/// Every thread's counters, and what retired ones counted.
#[derive(Debug)]
pub(crate) struct Registry {
    live: Mutex<Vec<Arc<Counters>>>,
    retired: Mutex<BTreeMap<Series, f64>>,
    /// Process-wide values the server keeps.
    pub(crate) reloads_ok: AtomicU64,
    pub(crate) reloads_failed: AtomicU64,
    /// The last reload tried was refused.
    pub(crate) last_reload_failed: std::sync::atomic::AtomicBool,
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
            last_reload_failed: false.into(),
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

    /// Until when (Unix ms) some thread skips each `(group, server)` after
    /// a `Retry-After`: the latest over threads.
    pub(crate) fn backoffs(&self) -> BTreeMap<(String, String), u64> {
        let mut out = BTreeMap::new();
        for c in lock(&self.live).iter() {
            for (si, s) in c.labels.servers.iter().enumerate() {
                let until = c.pool.get(Count::BackoffUntil, si);
                if until > 0 {
                    let e = out.entry(s.clone()).or_insert(0);
                    *e = until.max(*e);
                }
            }
        }
        out
    }

    /// Every series with its value, summed over threads and generations.
    pub(crate) fn collect(&self) -> BTreeMap<Series, f64> {
        let mut live = lock(&self.live);
        let mut retired = lock(&self.retired);
        let mut out = retired.clone();
        live.retain(|c| {
            // Only the registry holds it: no worker counts there any more.
            if Arc::strong_count(c) == 1 {
                series(c, &mut retired, true);
                series(c, &mut out, true);
                false
            } else {
                series(c, &mut out, false);
                true
            }
        });
        out
    }
}

type Labelled = Vec<(&'static str, String)>;

/// Gauges: written with their value even at 0 (counters only once they
/// counted something), and never kept for retired counters.
fn is_gauge(name: &str) -> bool {
    name.ends_with("_active") || name.ends_with("_idle")
}

/// Adds `c`'s series to `out`; its gauges too unless `retiring`.
fn series(c: &Counters, out: &mut BTreeMap<Series, f64>, retiring: bool) {
    let l = &c.labels;
    let mut put = |name: &'static str, labels: Labelled, v: f64| {
        let gauge = is_gauge(name);
        if (v > 0.0 && !gauge) || (gauge && !retiring) {
            *out.entry((name, labels)).or_default() += v;
        }
    };
    let n = |v: u64| v as f64;
    // Histogram buckets are stored apart and made cumulative when
    // rendered; a count of 0 is left out like any other series.
    let hist = |put: &mut dyn FnMut(&'static str, Labelled, f64),
                (bucket, sum): (&'static str, &'static str),
                base: &dyn Fn() -> Labelled,
                h: &Histograms,
                i: usize| {
        for b in 0..=BUCKETS.len() {
            let mut labels = base();
            labels.push(("le", bucket_label(b)));
            put(bucket, labels, n(h.bucket(i, b)));
        }
        put(sum, base(), h.sum(i));
    };
    for (li, listener) in l.listeners.iter().enumerate() {
        let at = || vec![("listener", listener.to_string())];
        put(
            "tidegate_connections_accepted_total",
            at(),
            n(get(&c.accepted, li)),
        );
        for (name, v) in [
            ("tidegate_http2_streams_total", &c.streams),
            ("tidegate_http2_goaways_sent_total", &c.goaways),
            ("tidegate_received_bytes_total", &c.bytes_in),
            ("tidegate_sent_bytes_total", &c.bytes_out),
        ] {
            put(name, at(), n(get(v, li)));
        }
        for (pi, (protocol, tls)) in PROTOCOLS.iter().enumerate() {
            let labels = || {
                let mut v = at();
                v.push(("protocol", protocol.to_string()));
                v.push(("tls", tls.to_string()));
                v
            };
            let i = li * PROTOCOLS.len() + pi;
            let (handled, closed) = (get(&c.handled, i), get(&c.closed, i));
            put("tidegate_connections_handled_total", labels(), n(handled));
            put(
                "tidegate_connections_active",
                labels(),
                n(handled.saturating_sub(closed)),
            );
        }
        for (ri, reason) in TLS_FAILURES.iter().enumerate() {
            let mut labels = at();
            labels.push(("reason", reason.to_string()));
            put(
                "tidegate_tls_handshake_failures_total",
                labels,
                n(get(&c.tls_failed, li * TLS_FAILURES.len() + ri)),
            );
        }
        for (ei, end) in SESSION_ENDS.iter().enumerate() {
            let mut labels = at();
            labels.push(("outcome", end.label().to_string()));
            put(
                "tidegate_stream_sessions_total",
                labels,
                n(get(&c.sessions, li * SESSION_ENDS.len() + ei)),
            );
        }
        hist(
            &mut put,
            (
                "tidegate_stream_session_duration_seconds_bucket",
                "tidegate_stream_session_duration_seconds_sum",
            ),
            &at,
            &c.session_duration,
            li,
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
                    n(get(&c.requests, pair * CLASSES + class)),
                );
            }
            put(
                "tidegate_response_body_bytes_total",
                base(),
                n(get(&c.sent, pair)),
            );
            hist(
                &mut put,
                (
                    "tidegate_request_duration_seconds_bucket",
                    "tidegate_request_duration_seconds_sum",
                ),
                &base,
                &c.duration,
                pair,
            );
        }
    }
    let p = &c.pool;
    for (si, (group, server)) in l.servers.iter().enumerate() {
        let base = || vec![("group", group.clone()), ("server", server.clone())];
        for class in 0..CLASSES {
            let mut labels = base();
            labels.push(("code", format!("{}xx", class + 1)));
            put(
                "tidegate_upstream_responses_total",
                labels,
                n(get(&c.upstream, si * CLASSES + class)),
            );
        }
        for (name, count) in [
            ("tidegate_upstream_connections_opened_total", Count::Opened),
            ("tidegate_upstream_connections_reused_total", Count::Reused),
            (
                "tidegate_upstream_connect_failures_total",
                Count::ConnectFailed,
            ),
            ("tidegate_upstream_retries_total", Count::Retries),
            (
                "tidegate_upstream_pending_refused_total",
                Count::PendingRefused,
            ),
            ("tidegate_upstream_backoffs_total", Count::Backoffs),
            ("tidegate_upstream_connections_idle", Count::Idle),
            ("tidegate_upstream_connections_active", Count::Active),
        ] {
            put(name, base(), n(p.get(count, si)));
        }
        hist(
            &mut put,
            (
                "tidegate_upstream_connect_duration_seconds_bucket",
                "tidegate_upstream_connect_duration_seconds_sum",
            ),
            &base,
            &p.connect,
            si,
        );
        hist(
            &mut put,
            (
                "tidegate_upstream_header_duration_seconds_bucket",
                "tidegate_upstream_header_duration_seconds_sum",
            ),
            &base,
            &p.head,
            si,
        );
    }
    for (ci, cache) in l.caches.iter().enumerate() {
        for (ri, result) in CACHE_RESULTS.iter().enumerate() {
            put(
                "tidegate_cache_requests_total",
                vec![("cache", cache.clone()), ("result", result.to_string())],
                n(get(&c.cache, ci * CACHE_RESULTS.len() + ri)),
            );
        }
    }
    for (gi, group) in l.groups.iter().enumerate() {
        put(
            "tidegate_upstream_retry_budget_exhausted_total",
            vec![("group", group.clone())],
            n(p.exhausted(gi)),
        );
    }
}

/// The `le` label of bucket `b` (the last is `+Inf`).
pub(crate) fn bucket_label(b: usize) -> String {
    BUCKETS
        .get(b)
        .map_or_else(|| "+Inf".to_string(), |v| v.to_string())
}
