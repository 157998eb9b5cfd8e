//! `GET /status` (HTML, for people) and `GET /status.json` (the same
//! data, for tools): version, uptime, config generation and the last
//! reload; listeners; routes; each upstream group with each server's
//! state, in-flight requests, request rate, error rate and p50/p99 over
//! the last minute; DNS names with their current and removed addresses.
//!
//! Rates and quantiles come from the metrics' own counters: the admin
//! thread keeps a snapshot every [`SAMPLE_EVERY`] for a minute, and a
//! page compares the counters now with the oldest snapshot in the
//! window. Nothing is counted for the page on the request path.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::State;
use crate::metrics::{Registry, Series};
use crate::tally::BUCKETS;

/// How often the admin thread snapshots the counters.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// The window rates and quantiles cover.
const WINDOW: Duration = Duration::from_secs(60);

/// Snapshots of the counters, oldest first.
#[derive(Default)]
pub(crate) struct Samples(Mutex<VecDeque<(Instant, BTreeMap<Series, f64>)>>);

impl Samples {
    /// Takes a snapshot; drops those older than the window needs.
    pub(crate) fn sample(&self, registry: &Registry) {
        let now = Instant::now();
        let snapshot = registry.collect();
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.push_back((now, snapshot));
        // Keep the newest one at least a window old, as the base.
        while all.len() > 1 && now.duration_since(all[1].0) >= WINDOW {
            all.pop_front();
        }
    }

    /// The snapshot to compare with: the oldest within (about) a window.
    fn base(&self) -> Option<(Instant, BTreeMap<Series, f64>)> {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.front().cloned()
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct Status {
    version: &'static str,
    uptime_seconds: u64,
    /// Configs put into service: 1 at start, one more per reload.
    config_generation: u64,
    reloads_ok: u64,
    reloads_failed: u64,
    /// Unix seconds of the last successful load.
    last_reload_success: u64,
    /// `ok` or `failed`: the last reload tried (`none` before any).
    last_reload_result: &'static str,
    ready: bool,
    /// Seconds the rates and quantiles cover.
    window_seconds: f64,
    listeners: Vec<ListenerStatus>,
    routes: Vec<RouteStatus>,
    upstreams: Vec<GroupStatus>,
    dns: Vec<DnsStatus>,
    /// With `[acme]`: whether this instance orders, and each name's
    /// certificate.
    acme: Option<AcmeStatus>,
}

#[derive(Debug, Serialize)]
struct AcmeStatus {
    lock_held: bool,
    names: Vec<AcmeName>,
}

#[derive(Debug, Serialize)]
struct AcmeName {
    name: String,
    /// The served certificate's notAfter (Unix seconds); `None`: no
    /// certificate yet.
    expires: Option<u64>,
    orders_ok: u64,
    orders_failed: u64,
}

#[derive(Debug, Serialize)]
struct ListenerStatus {
    address: String,
    tls: bool,
    open_connections: u64,
    requests_per_second: f64,
}

/// Request rate, share of 5xx, and quantiles of the duration.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Window {
    requests_per_second: f64,
    error_rate: f64,
    p50_seconds: Option<f64>,
    p99_seconds: Option<f64>,
}

#[derive(Debug, Serialize)]
struct RouteStatus {
    name: String,
    matches: String,
    action: String,
    #[serde(flatten)]
    window: Window,
}

#[derive(Debug, Serialize)]
struct GroupStatus {
    group: String,
    servers: Vec<ServerStatus>,
}

#[derive(Debug, Serialize)]
struct ServerStatus {
    address: String,
    /// `healthy`, `down` (active checks), `ejected`, `backed_off`,
    /// `draining`.
    state: &'static str,
    ejected_for_seconds: Option<f64>,
    backed_off_for_seconds: Option<f64>,
    in_flight: u64,
    ejections: u64,
    /// Over the window: the upstream's answers, and the time to their
    /// heads.
    #[serde(flatten)]
    window: Window,
}

#[derive(Debug, Serialize)]
struct DnsStatus {
    name: String,
    addresses: Vec<String>,
    /// Addresses DNS no longer gives, with when they went (Unix seconds).
    removed: Vec<(String, u64)>,
    refreshes: u64,
    failures: u64,
}

/// Sums, over series named `name`, the values whose labels `pick` maps
/// to a key (buckets keyed with their `le` too).
fn sum_by(
    all: &BTreeMap<Series, f64>,
    name: &str,
    pick: impl Fn(&[(&'static str, String)]) -> Option<String>,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for ((n, labels), v) in all.range((name, Vec::new())..) {
        if *n != name {
            break;
        }
        if let Some(k) = pick(labels) {
            *out.entry(k).or_default() += v;
        }
    }
    out
}

fn label<'a>(labels: &'a [(&'static str, String)], k: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(n, _)| *n == k)
        .map(|(_, v)| v.as_str())
}

/// `now - base` for every key of `now`.
fn delta(now: &BTreeMap<String, f64>, base: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    now.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v - base.get(k).copied().unwrap_or(0.0)).max(0.0),
            )
        })
        .collect()
}

/// The `q` quantile of a histogram's per-bucket counts (not cumulative),
/// interpolated within its bucket as Prometheus's `histogram_quantile`
/// does; `None` without observations.
fn quantile(counts: &[f64], q: f64) -> Option<f64> {
    let total: f64 = counts.iter().sum();
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut seen = 0.0;
    for (b, c) in counts.iter().enumerate() {
        if seen + c >= rank && *c > 0.0 {
            let lower = if b == 0 { 0.0 } else { BUCKETS[b - 1] };
            let Some(upper) = BUCKETS.get(b) else {
                // Past the last bound: all that can be said.
                return Some(BUCKETS[BUCKETS.len() - 1]);
            };
            return Some(lower + (upper - lower) * (rank - seen) / c);
        }
        seen += c;
    }
    None
}

/// Per key, per-bucket counts over the window of histogram `name`.
fn buckets(
    now: &BTreeMap<Series, f64>,
    base: &BTreeMap<Series, f64>,
    name: &str,
    key: &impl Fn(&[(&'static str, String)]) -> Option<String>,
) -> BTreeMap<String, Vec<f64>> {
    let pick = |l: &[(&'static str, String)]| Some(format!("{}\u{0}{}", key(l)?, label(l, "le")?));
    let d = delta(&sum_by(now, name, pick), &sum_by(base, name, pick));
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (k, v) in d {
        let Some((k, le)) = k.split_once('\u{0}') else {
            continue;
        };
        let Some(b) = (0..=BUCKETS.len()).find(|&b| crate::metrics::bucket_label(b) == le) else {
            continue;
        };
        out.entry(k.to_string())
            .or_insert_with(|| vec![0.0; BUCKETS.len() + 1])[b] += v;
    }
    out
}

/// Rates and quantiles over the window, by `key`, from a counter with a
/// `code` label and a histogram.
fn windows(
    (now, base, secs): (&BTreeMap<Series, f64>, &BTreeMap<Series, f64>, f64),
    counter: &str,
    histogram: &str,
    key: impl Fn(&[(&'static str, String)]) -> Option<String>,
) -> BTreeMap<String, Window> {
    let all = delta(&sum_by(now, counter, &key), &sum_by(base, counter, &key));
    let errors_of = |m: &BTreeMap<Series, f64>| {
        sum_by(m, counter, |l| {
            (label(l, "code") == Some("5xx")).then(|| key(l)).flatten()
        })
    };
    let errors = delta(&errors_of(now), &errors_of(base));
    let hist = buckets(now, base, histogram, &key);
    all.into_iter()
        .map(|(k, n)| {
            let e = errors.get(&k).copied().unwrap_or(0.0);
            let h = hist.get(&k);
            let w = Window {
                requests_per_second: n / secs,
                error_rate: if n > 0.0 { e / n } else { 0.0 },
                p50_seconds: h.and_then(|h| quantile(h, 0.5)),
                p99_seconds: h.and_then(|h| quantile(h, 0.99)),
            };
            (k, w)
        })
        .collect()
}

/// The status as it is now.
pub(crate) fn status(state: &State) -> Status {
    let r = &state.metrics;
    let g = (state.gauges)();
    let now = r.collect();
    let uptime = r.started.elapsed().unwrap_or_default();
    let (base, secs) = match state.samples.base() {
        Some((at, base)) => (base, at.elapsed().as_secs_f64()),
        None => (BTreeMap::new(), uptime.as_secs_f64()),
    };
    let secs = secs.max(1.0);
    let span = (&now, &base, secs);
    let route_windows = windows(
        span,
        "tidegate_requests_total",
        "tidegate_request_duration_seconds_bucket",
        |l| label(l, "route").map(str::to_string),
    );
    let per_listener = delta(
        &sum_by(&now, "tidegate_requests_total", |l| {
            label(l, "listener").map(str::to_string)
        }),
        &sum_by(&base, "tidegate_requests_total", |l| {
            label(l, "listener").map(str::to_string)
        }),
    );
    let server_key = |l: &[(&'static str, String)]| {
        Some(format!(
            "{}\u{1}{}",
            label(l, "group")?,
            label(l, "server")?
        ))
    };
    let server_windows = windows(
        span,
        "tidegate_upstream_responses_total",
        "tidegate_upstream_header_duration_seconds_bucket",
        server_key,
    );
    let in_flight = sum_by(&now, "tidegate_upstream_connections_active", server_key);
    let backoffs = r.backoffs();
    let now_ms = crate::tally::unix_ms();
    let mut upstreams: Vec<GroupStatus> = Vec::new();
    for s in &g.servers {
        let key = format!("{}\u{1}{}", s.group, s.server);
        let backed_off = backoffs
            .get(&(s.group.clone(), s.server.clone()))
            .filter(|&&until| until > now_ms)
            .map(|until| (until - now_ms) as f64 / 1000.0);
        let state = if s.drained {
            "draining"
        } else if s.down {
            "down"
        } else if s.ejected_for.is_some() {
            "ejected"
        } else if backed_off.is_some() {
            "backed_off"
        } else {
            "healthy"
        };
        let server = ServerStatus {
            address: s.server.clone(),
            state,
            ejected_for_seconds: s.ejected_for.map(|d| d.as_secs_f64()),
            backed_off_for_seconds: backed_off,
            in_flight: in_flight.get(&key).copied().unwrap_or(0.0) as u64,
            ejections: s.ejections,
            window: server_windows.get(&key).copied().unwrap_or_default(),
        };
        match upstreams.last_mut() {
            Some(last) if last.group == s.group => last.servers.push(server),
            _ => upstreams.push(GroupStatus {
                group: s.group.clone(),
                servers: vec![server],
            }),
        }
    }
    let reloads_ok = r.reloads_ok.load(Relaxed);
    let reloads_failed = r.reloads_failed.load(Relaxed);
    Status {
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: uptime.as_secs(),
        config_generation: 1 + reloads_ok,
        reloads_ok,
        reloads_failed,
        last_reload_success: r.last_reload.load(Relaxed),
        last_reload_result: match r.last_reload_failed.load(Relaxed) {
            _ if reloads_ok + reloads_failed == 0 => "none",
            true => "failed",
            false => "ok",
        },
        ready: state.ready.load(Relaxed),
        window_seconds: secs,
        listeners: g
            .listeners
            .iter()
            .map(|(address, tls)| ListenerStatus {
                open_connections: g
                    .open
                    .iter()
                    .find(|(a, _)| a == address)
                    .map_or(0, |(_, n)| *n),
                requests_per_second: per_listener.get(address).copied().unwrap_or(0.0) / secs,
                address: address.clone(),
                tls: *tls,
            })
            .collect(),
        routes: g
            .routes
            .iter()
            .map(|(name, matches, action)| RouteStatus {
                window: route_windows.get(name).copied().unwrap_or_default(),
                name: name.clone(),
                matches: matches.clone(),
                action: action.clone(),
            })
            .collect(),
        upstreams,
        dns: g
            .dns
            .iter()
            .map(|(name, n)| DnsStatus {
                name: name.clone(),
                addresses: n.addresses.iter().map(|a| a.to_string()).collect(),
                removed: n
                    .removed
                    .iter()
                    .map(|(a, at)| (a.to_string(), at / 1000))
                    .collect(),
                refreshes: n.refreshes,
                failures: n.failures,
            })
            .collect(),
        acme: g.acme.as_ref().map(|a| AcmeStatus {
            lock_held: a.lock_held,
            names: a
                .names
                .iter()
                .map(|(name, n)| AcmeName {
                    name: name.clone(),
                    expires: n.expires,
                    orders_ok: n.ok,
                    orders_failed: n.failed,
                })
                .collect(),
        }),
    }
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |s| format!("{:.1} ms", s * 1000.0))
}

fn cells(w: &Window) -> String {
    format!(
        "<td class=n>{:.1}</td><td class=n>{:.1}%</td><td class=n>{}</td><td class=n>{}</td>",
        w.requests_per_second,
        w.error_rate * 100.0,
        ms(w.p50_seconds),
        ms(w.p99_seconds)
    )
}

/// The page: plain HTML and inline CSS (no external asset), reloaded by
/// the browser every 5 seconds.
pub(crate) fn html(s: &Status) -> String {
    let mut o = String::with_capacity(8192);
    let _ = write!(
        o,
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta http-equiv=refresh content=5><title>Tidegate status</title><style>\
         body{{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d2733;background:#f7f9fb}}\
         h1{{font-size:1.4em;margin:0 0 .3em}}h2{{font-size:1.1em;margin:1.4em 0 .4em}}\
         table{{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0002}}\
         th,td{{padding:.35em .8em;border-bottom:1px solid #e3e8ee;text-align:left}}\
         th{{background:#eef2f6;font-weight:600}}td.n{{text-align:right;font-variant-numeric:tabular-nums}}\
         .s{{display:inline-block;padding:0 .5em;border-radius:.6em;color:#fff;font-size:.9em}}\
         .healthy{{background:#2e8540}}.down,.ejected{{background:#c62828}}\
         .backed_off{{background:#e08a00}}.draining{{background:#5c6bc0}}\
         .meta{{color:#52606d}}</style></head><body>\
         <h1>Tidegate {}</h1><p class=meta>up {}s · config generation {} \
         (reloads: {} ok, {} failed; last: {}) · {} · rates over the last {:.0}s</p>",
        esc(s.version),
        s.uptime_seconds,
        s.config_generation,
        s.reloads_ok,
        s.reloads_failed,
        s.last_reload_result,
        if s.ready { "ready" } else { "draining" },
        s.window_seconds
    );
    o.push_str("<h2>Listeners</h2><table><tr><th>Address<th>TLS<th>Open connections<th>Req/s</tr>");
    for l in &s.listeners {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{:.1}</td></tr>",
            esc(&l.address),
            if l.tls { "yes" } else { "no" },
            l.open_connections,
            l.requests_per_second
        );
    }
    o.push_str(
        "</table><h2>Routes</h2><table><tr><th>Route<th>Matches<th>Action\
         <th>Req/s<th>Errors<th>p50<th>p99</tr>",
    );
    for r in &s.routes {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td>{}</tr>",
            esc(&r.name),
            esc(&r.matches),
            esc(&r.action),
            cells(&r.window)
        );
    }
    o.push_str("</table>");
    for g in &s.upstreams {
        let _ = write!(
            o,
            "<h2>Upstream {}</h2><table><tr><th>Server<th>State<th>In flight\
             <th>Req/s<th>5xx<th>p50 head<th>p99 head<th>Ejections</tr>",
            esc(&g.group)
        );
        for srv in &g.servers {
            let extra = match (srv.ejected_for_seconds, srv.backed_off_for_seconds) {
                (Some(t), _) | (None, Some(t)) => format!(" {t:.0}s"),
                _ => String::new(),
            };
            let _ = write!(
                o,
                "<tr><td>{}</td><td><span class=\"s {}\">{}{}</span></td><td class=n>{}</td>{}<td class=n>{}</td></tr>",
                esc(&srv.address),
                srv.state,
                srv.state.replace('_', " "),
                extra,
                srv.in_flight,
                cells(&srv.window),
                srv.ejections
            );
        }
        o.push_str("</table>");
    }
    if !s.dns.is_empty() {
        o.push_str(
            "<h2>DNS</h2><table><tr><th>Name<th>Addresses<th>Removed\
             <th>Refreshes<th>Failures</tr>",
        );
        for d in &s.dns {
            let removed: Vec<String> = d.removed.iter().map(|(a, _)| a.clone()).collect();
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
                esc(&d.name),
                esc(&d.addresses.join(", ")),
                esc(&removed.join(", ")),
                d.refreshes,
                d.failures
            );
        }
        o.push_str("</table>");
    }
    if let Some(a) = &s.acme {
        let _ = write!(
            o,
            "<h2>ACME certificates</h2><p class=meta>{}</p><table><tr><th>Name<th>Expires\
             <th>Orders ok<th>Orders failed</tr>",
            if a.lock_held {
                "This instance orders and renews (it holds the storage's lock)."
            } else {
                "Another instance orders and renews; this one serves what it stores."
            }
        );
        for n in &a.names {
            let expires = n.expires.map_or_else(
                || "no certificate yet".to_string(),
                |t| {
                    httpdate::fmt_http_date(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(t),
                    )
                },
            );
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
                esc(&n.name),
                esc(&expires),
                n.orders_ok,
                n.orders_failed
            );
        }
        o.push_str("</table>");
    }
    o.push_str("<p class=meta>The same data: <a href=\"status.json\">status.json</a> · <a href=\"metrics\">metrics</a></p></body></html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let mut counts = vec![0.0; BUCKETS.len() + 1];
        // 100 observations in (5 ms, 10 ms].
        counts[3] = 100.0;
        let p50 = quantile(&counts, 0.5).unwrap();
        assert!((p50 - 0.0075).abs() < 1e-9, "{p50}");
        assert_eq!(quantile(&vec![0.0; BUCKETS.len() + 1], 0.5), None);
        counts[BUCKETS.len()] = 10_000.0;
        assert_eq!(quantile(&counts, 0.99), Some(10.0));
    }

    #[test]
    fn html_escapes() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
