//! The Prometheus text exposition format (version 0.0.4): `# HELP` and
//! `# TYPE` lines, then one line per series, histograms as cumulative
//! `_bucket` series with `_sum` and `_count`.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{bucket_label, Registry, Series, BUCKETS};

/// What a metric is and says.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
}

const FAMILIES: &[Family] = &[
    Family {
        name: "tidegate_requests_total",
        kind: "counter",
        help: "Requests answered, by listener, route and status class.",
    },
    Family {
        name: "tidegate_request_duration_seconds",
        kind: "histogram",
        help: "Time from a request's head to the end of its response.",
    },
    Family {
        name: "tidegate_response_body_bytes_total",
        kind: "counter",
        help: "Response body bytes sent to clients.",
    },
    Family {
        name: "tidegate_upstream_responses_total",
        kind: "counter",
        help: "Responses from upstream servers, by status class.",
    },
    Family {
        name: "tidegate_stream_sessions_total",
        kind: "counter",
        help: "[[streams]] connections ended, by listener and outcome.",
    },
    Family {
        name: "tidegate_stream_session_duration_seconds",
        kind: "histogram",
        help: "How long [[streams]] connections lasted, by listener.",
    },
    Family {
        name: "tidegate_connections_accepted_total",
        kind: "counter",
        help: "Client connections accepted.",
    },
    Family {
        name: "tidegate_connections_handled_total",
        kind: "counter",
        help: "Client connections set up, by protocol and TLS version.",
    },
    Family {
        name: "tidegate_connections_active",
        kind: "gauge",
        help: "Client connections set up and open now, by protocol and TLS version.",
    },
    Family {
        name: "tidegate_tls_handshake_failures_total",
        kind: "counter",
        help: "TLS handshakes with clients that failed, by reason.",
    },
    Family {
        name: "tidegate_http2_streams_total",
        kind: "counter",
        help: "HTTP/2 streams (requests) from clients.",
    },
    Family {
        name: "tidegate_http2_goaways_sent_total",
        kind: "counter",
        help: "GOAWAY frames sent to HTTP/2 clients (shutdown, reload, limits, errors).",
    },
    Family {
        name: "tidegate_received_bytes_total",
        kind: "counter",
        help: "Bytes read from clients (after TLS).",
    },
    Family {
        name: "tidegate_sent_bytes_total",
        kind: "counter",
        help: "Bytes written to clients (before TLS).",
    },
    Family {
        name: "tidegate_upstream_connect_duration_seconds",
        kind: "histogram",
        help: "Time to set up a new upstream connection (TCP, TLS, HTTP handshake).",
    },
    Family {
        name: "tidegate_upstream_header_duration_seconds",
        kind: "histogram",
        help: "Time from sending a request upstream to its response head.",
    },
    Family {
        name: "tidegate_upstream_connections_opened_total",
        kind: "counter",
        help: "Upstream connections opened.",
    },
    Family {
        name: "tidegate_upstream_connections_reused_total",
        kind: "counter",
        help: "Requests sent on a pooled upstream connection (or HTTP/2 connection already open).",
    },
    Family {
        name: "tidegate_upstream_connections_idle",
        kind: "gauge",
        help: "Idle upstream connections in the pools (HTTP/2: open with no stream).",
    },
    Family {
        name: "tidegate_upstream_connections_active",
        kind: "gauge",
        help: "Requests in flight to each upstream server.",
    },
    Family {
        name: "tidegate_upstream_connect_failures_total",
        kind: "counter",
        help: "Upstream connection attempts that failed.",
    },
    Family {
        name: "tidegate_upstream_retries_total",
        kind: "counter",
        help: "Requests sent again to another server after this one failed.",
    },
    Family {
        name: "tidegate_upstream_retry_budget_exhausted_total",
        kind: "counter",
        help: "Retries the group's retry budget did not allow.",
    },
    Family {
        name: "tidegate_upstream_pending_refused_total",
        kind: "counter",
        help: "Requests refused (503) with the server at max_connections and its queue at max_pending.",
    },
    Family {
        name: "tidegate_upstream_backoffs_total",
        kind: "counter",
        help: "429 or 503 answers with Retry-After that made a worker skip the server for a while.",
    },
    Family {
        name: "tidegate_cache_requests_total",
        kind: "counter",
        help: "Requests on routes with a cache, by cache and result (hit, miss, revalidated, stale, bypass).",
    },
];

/// Values read at scrape time, beside the counters.
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    /// `(listener, open connections)`.
    pub(crate) open: Vec<(String, u64)>,
    /// Each upstream server of the config in force.
    pub(crate) servers: Vec<ServerGauge>,
    /// Access-log lines dropped because the writer could not keep up.
    pub(crate) log_dropped: u64,
    /// DNS refreshes by name.
    pub(crate) dns: Vec<(String, crate::upstream::dns::NameStats)>,
    /// `(address, TLS)` of each listener, in config order.
    pub(crate) listeners: Vec<(String, bool)>,
    /// `(label, what it matches, what it does)` of each route.
    pub(crate) routes: Vec<(String, String, String)>,
    /// The trace exporter's counts, with `[tracing]` on.
    pub(crate) trace: Option<TraceCounts>,
    /// `(cache, keys, bytes)` of each cache in force.
    pub(crate) caches: Vec<(String, u64, u64)>,
    /// ACME's lock and names, with `[acme]` on.
    pub(crate) acme: Option<crate::acme::Stats>,
}

/// One upstream server's shared state.
#[derive(Debug, Clone)]
pub(crate) struct ServerGauge {
    pub(crate) group: String,
    pub(crate) server: String,
    /// In service: healthy, not ejected, not drained.
    pub(crate) up: bool,
    pub(crate) drained: bool,
    /// Marked down by active checks.
    pub(crate) down: bool,
    /// Passively ejected for this much longer.
    pub(crate) ejected_for: Option<std::time::Duration>,
    pub(crate) ejections: u64,
    pub(crate) went_down: u64,
    pub(crate) went_up: u64,
}

/// Spans exported, spans dropped (queue full), failed export requests.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TraceCounts {
    pub(crate) exported: u64,
    pub(crate) dropped: u64,
    pub(crate) failures: u64,
}

/// The whole exposition.
pub(crate) fn render(registry: &Registry, gauges: &Gauges) -> String {
    let all = registry.collect();
    let mut out = String::new();
    for f in FAMILIES {
        header(&mut out, f.name, f.kind, f.help);
        if f.kind == "histogram" {
            histogram(&mut out, f.name, &all);
        } else {
            for ((name, labels), v) in all.range((f.name, Vec::new())..) {
                if *name != f.name {
                    break;
                }
                line(&mut out, name, labels, *v);
            }
        }
    }
    header(
        &mut out,
        "tidegate_connections_open",
        "gauge",
        "Client connections open now.",
    );
    for (listener, n) in &gauges.open {
        let labels = vec![("listener", listener.clone())];
        line(&mut out, "tidegate_connections_open", &labels, *n as f64);
    }
    let mut per_server = |name: &str, kind: &str, help: &str, v: fn(&ServerGauge) -> f64| {
        header(&mut out, name, kind, help);
        for s in &gauges.servers {
            let labels = vec![("group", s.group.clone()), ("server", s.server.clone())];
            line(&mut out, name, &labels, v(s));
        }
    };
    per_server(
        "tidegate_upstream_server_up",
        "gauge",
        "1 when an upstream server is in service (healthy, not ejected, not drained).",
        |s| f64::from(u8::from(s.up)),
    );
    per_server(
        "tidegate_upstream_server_drained",
        "gauge",
        "1 while an upstream server is drained through the admin API.",
        |s| f64::from(u8::from(s.drained)),
    );
    per_server(
        "tidegate_upstream_ejections_total",
        "counter",
        "Passive ejections of an upstream server (consecutive failures).",
        |s| s.ejections as f64,
    );
    header(
        &mut out,
        "tidegate_upstream_health_transitions_total",
        "counter",
        "Active health checks marking a server down or up again.",
    );
    for s in &gauges.servers {
        for (to, v) in [("down", s.went_down), ("up", s.went_up)] {
            let labels = vec![
                ("group", s.group.clone()),
                ("server", s.server.clone()),
                ("to", to.to_string()),
            ];
            line(
                &mut out,
                "tidegate_upstream_health_transitions_total",
                &labels,
                v as f64,
            );
        }
    }
    let mut per_name = |name: &str, help: &str, v: fn(&crate::upstream::dns::NameStats) -> u64| {
        header(&mut out, name, "counter", help);
        for (host, n) in &gauges.dns {
            line(&mut out, name, &[("name", host.clone())], v(n) as f64);
        }
    };
    per_name(
        "tidegate_dns_refreshes_total",
        "Background DNS lookups of upstream names.",
        |n| n.refreshes,
    );
    per_name(
        "tidegate_dns_failures_total",
        "Background DNS lookups that failed (the last addresses stay in use).",
        |n| n.failures,
    );
    per_name(
        "tidegate_dns_changes_total",
        "Background DNS lookups that changed a name's addresses.",
        |n| n.changes,
    );
    header(
        &mut out,
        "tidegate_access_log_dropped_lines_total",
        "counter",
        "Access-log lines dropped because the log writer could not keep up.",
    );
    line(
        &mut out,
        "tidegate_access_log_dropped_lines_total",
        &[],
        gauges.log_dropped as f64,
    );
    for (name, help, pick) in [
        (
            "tidegate_cache_keys",
            "Keys a cache holds (each with its variants).",
            1,
        ),
        (
            "tidegate_cache_bytes",
            "Bytes a cache's stored responses weigh in memory.",
            2,
        ),
    ] {
        if gauges.caches.is_empty() {
            break;
        }
        header(&mut out, name, "gauge", help);
        for (cache, keys, bytes) in &gauges.caches {
            let v = if pick == 1 { *keys } else { *bytes };
            line(&mut out, name, &[("cache", cache.clone())], v as f64);
        }
    }
    if let Some(t) = gauges.trace {
        for (name, help, v) in [
            (
                "tidegate_trace_spans_exported_total",
                "Spans the OTLP collector accepted.",
                t.exported,
            ),
            (
                "tidegate_trace_spans_dropped_total",
                "Spans dropped because the export queue was full.",
                t.dropped,
            ),
            (
                "tidegate_trace_export_failures_total",
                "OTLP export requests that failed; their spans are dropped.",
                t.failures,
            ),
        ] {
            header(&mut out, name, "counter", help);
            line(&mut out, name, &[], v as f64);
        }
    }
    if let Some(a) = &gauges.acme {
        acme(&mut out, a);
    }
    process(&mut out, registry);
    out
}

fn acme(out: &mut String, a: &crate::acme::Stats) {
    let name = "tidegate_acme_lock_held";
    header(
        out,
        name,
        "gauge",
        "1 while this instance holds the ACME storage's lock (and so orders certificates).",
    );
    line(out, name, &[], f64::from(u8::from(a.lock_held)));
    let name = "tidegate_acme_certificate_expiry_timestamp_seconds";
    header(
        out,
        name,
        "gauge",
        "When the ACME certificate served for a name expires (Unix time); absent while it has none.",
    );
    for (n, s) in &a.names {
        if let Some(t) = s.expires {
            line(out, name, &[("name", n.clone())], t as f64);
        }
    }
    let name = "tidegate_acme_orders_total";
    header(
        out,
        name,
        "counter",
        "ACME certificate orders by name and result (ok, failed); a failed renewal keeps the served certificate.",
    );
    for (n, s) in &a.names {
        for (result, v) in [("ok", s.ok), ("failed", s.failed)] {
            line(
                out,
                name,
                &[("name", n.clone()), ("result", result.to_string())],
                v as f64,
            );
        }
    }
}

fn process(out: &mut String, r: &Registry) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut single =
        |name: &'static str, kind: &str, help: &str, labels: &[(&'static str, String)], v: f64| {
            header(out, name, kind, help);
            line(out, name, labels, v);
        };
    single(
        "tidegate_build_info",
        "gauge",
        "Always 1; the labels say which build this is.",
        &[("version", env!("CARGO_PKG_VERSION").to_string())],
        1.0,
    );
    single(
        "tidegate_config_reloads_total",
        "counter",
        "Config reloads that took effect.",
        &[("result", "ok".into())],
        r.reloads_ok.load(Relaxed) as f64,
    );
    line(
        out,
        "tidegate_config_reloads_total",
        &[("result", "failed".into())],
        r.reloads_failed.load(Relaxed) as f64,
    );
    let mut single = |name: &'static str, kind: &str, help: &str, v: f64| {
        header(out, name, kind, help);
        line(out, name, &[], v);
    };
    single(
        "tidegate_config_last_reload_success_timestamp_seconds",
        "gauge",
        "When the config in force was loaded (start or reload), in Unix seconds.",
        r.last_reload.load(Relaxed) as f64,
    );
    let start = r
        .started
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    single(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the Unix epoch in seconds.",
        start,
    );
    let p = proc_self();
    if let Some(cpu) = p.cpu_seconds {
        single(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            cpu,
        );
    }
    if let Some(rss) = p.rss_bytes {
        single(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            rss,
        );
    }
    if let Some(fds) = p.open_fds {
        single(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds,
        );
    }
}

/// What `/proc/self` says about the process (Linux; `None` elsewhere).
struct ProcSelf {
    cpu_seconds: Option<f64>,
    rss_bytes: Option<f64>,
    open_fds: Option<f64>,
}

fn proc_self() -> ProcSelf {
    // Clock ticks and pages as Linux reports them on every platform
    // Tidegate ships for.
    const TICKS: f64 = 100.0;
    const PAGE: f64 = 4096.0;
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    // Fields after the command name, which may hold spaces: state is
    // field 3, utime 14 and stime 15.
    let cpu_seconds = stat.as_deref().and_then(|s| {
        let rest = &s[s.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = f.get(11)?.parse().ok()?;
        let stime: f64 = f.get(12)?.parse().ok()?;
        Some((utime + stime) / TICKS)
    });
    let rss_bytes = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|pages| pages * PAGE);
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as f64);
    ProcSelf {
        cpu_seconds,
        rss_bytes,
        open_fds,
    }
}

/// The same exposition in OpenMetrics 1.0 text: a counter's family is
/// named without its `_total` (its samples keep it), and `# EOF` ends it.
pub(crate) fn open_metrics(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::with_capacity(text.len() + 8);
    for (i, l) in lines.iter().enumerate() {
        // `# HELP name ...` is followed by `# TYPE name kind`.
        let counter_family = |name: &str| {
            let type_line = if l.starts_with("# TYPE ") {
                Some(*l)
            } else {
                lines.get(i + 1).copied()
            };
            type_line.is_some_and(|t| t == format!("# TYPE {name} counter"))
        };
        let rest = l
            .strip_prefix("# HELP ")
            .or_else(|| l.strip_prefix("# TYPE "));
        match rest.and_then(|r| r.split_once(' ')) {
            Some((name, tail)) if name.ends_with("_total") && counter_family(name) => {
                let _ = writeln!(
                    out,
                    "{} {} {tail}",
                    &l[..6],
                    name.trim_end_matches("_total")
                );
            }
            _ => {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn line(out: &mut String, name: &str, labels: &[(&'static str, String)], v: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, val)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"");
            for ch in val.chars() {
                match ch {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {v}");
}

/// A histogram's buckets, cumulative, for every label set that has any,
/// then its `_sum` and `_count`.
fn histogram(out: &mut String, name: &str, all: &BTreeMap<Series, f64>) {
    let bucket_name = format!("{name}_bucket");
    let sum_name = format!("{name}_sum");
    // Label set (without `le`) -> counts per bucket.
    let mut sets: BTreeMap<Vec<(&'static str, String)>, Vec<f64>> = BTreeMap::new();
    for ((n, labels), v) in all {
        if *n != bucket_name {
            continue;
        }
        let Some(le) = labels.iter().find(|(k, _)| *k == "le") else {
            continue;
        };
        let Some(b) = (0..=BUCKETS.len()).find(|&b| bucket_label(b) == le.1) else {
            continue;
        };
        let base: Vec<_> = labels.iter().filter(|(k, _)| *k != "le").cloned().collect();
        sets.entry(base)
            .or_insert_with(|| vec![0.0; BUCKETS.len() + 1])[b] += v;
    }
    let sums: BTreeMap<&Vec<(&'static str, String)>, f64> = all
        .iter()
        .filter(|((n, _), _)| *n == sum_name)
        .map(|((_, l), v)| (l, *v))
        .collect();
    for (base, counts) in &sets {
        let mut total = 0.0;
        for (b, c) in counts.iter().enumerate() {
            total += c;
            let mut labels = base.clone();
            labels.push(("le", bucket_label(b)));
            line(out, &bucket_name, &labels, total);
        }
        line(out, &sum_name, base, sums.get(base).copied().unwrap_or(0.0));
        line(out, &format!("{name}_count"), base, total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_metrics_names_counter_families_without_total_and_ends_with_eof() {
        let text = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n\
                    # HELP g G.\n# TYPE g gauge\ng 1\n";
        assert_eq!(
            open_metrics(text),
            "# HELP a A.\n# TYPE a counter\na_total{x=\"1\"} 2\n\
             # HELP g G.\n# TYPE g gauge\ng 1\n# EOF\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        line(&mut out, "m", &[("a", "x\"y\\z\n".into())], 2.0);
        assert_eq!(out, "m{a=\"x\\\"y\\\\z\\n\"} 2\n");
    }

    #[test]
    fn process_values_are_read() {
        let p = proc_self();
        assert!(p.rss_bytes.is_some_and(|r| r > 0.0));
        assert!(p.open_fds.is_some_and(|n| n > 0.0));
        assert!(p.cpu_seconds.is_some());
    }
}
