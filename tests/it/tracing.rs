//! Traces (`[tracing]`): W3C Trace Context continued or started and sent
//! upstream, and the spans an in-test OTLP/HTTP receiver gets (decoded
//! with prost messages written here from opentelemetry-proto, apart from
//! the proxy's own): parentage, attributes, timings; sampling; an
//! unreachable or stuck collector costs no request anything, and shows in
//! `/metrics`; config errors name their line.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Request;

use crate::common::config::{Route, TestConfig};
use crate::common::otlp::collector;
use crate::common::*;

/// A request's `traceparent` and `tracestate` as the origin saw them.
type Propagated = (Option<String>, Option<String>);

/// An origin that answers 200 and notes the `traceparent` and
/// `tracestate` of each request.
struct Origin {
    backend: Backend,
    seen: Arc<Mutex<Vec<Propagated>>>,
}

fn origin() -> Origin {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    let backend = backend(move |req: Request<hyper::body::Incoming>| {
        let kept = kept.clone();
        async move {
            let h = |n: &str| {
                let all: Vec<&str> = req
                    .headers()
                    .get_all(n)
                    .iter()
                    .map(|v| v.to_str().unwrap())
                    .collect();
                (!all.is_empty()).then(|| all.join(","))
            };
            kept.lock()
                .unwrap()
                .push((h("traceparent"), h("tracestate")));
            text(200, "hello")
        }
    });
    Origin { backend, seen }
}

impl Origin {
    /// The last request's `traceparent`, split: (version, trace ID,
    /// parent ID, flags), and its `tracestate`.
    fn last(&self) -> ([String; 4], Option<String>) {
        let (tp, ts) = self
            .seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request");
        let tp = tp.expect("a traceparent upstream");
        let parts: Vec<String> = tp.split('-').map(str::to_string).collect();
        assert_eq!(parts.len(), 4, "{tp}");
        assert_eq!(parts[0], "00", "{tp}");
        assert_eq!(parts[1].len(), 32, "{tp}");
        assert_eq!(parts[2].len(), 16, "{tp}");
        assert!(tp
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        (parts.try_into().unwrap(), ts)
    }
}

fn config(origin: &Origin, collector: &str) -> TestConfig {
    TestConfig::new()
        .threads(1)
        .set("tracing.otlp_endpoint", collector)
        .route(Route::to("app").path_prefix("/api/").set("name", "api"))
        .group("app", [origin.backend.addr])
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// GET `path` from host `app.test` with `headers`: must be a 200.
async fn ok(proxy: &Proxy, path: &str, headers: &[(&str, &str)]) {
    let (status, _, body) = exchange(proxy.addr, "GET", "app.test", path, headers, empty()).await;
    assert_eq!((status, body.as_str()), (200, "hello"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampled_parent_is_continued_and_its_span_exported() {
    let (origin, collector) = (origin(), collector());
    let proxy = Proxy::start(&config(&origin, &collector.endpoint()).toml());
    let tp = format!("00-{TRACE}-{PARENT}-01");
    ok(
        &proxy,
        "/api/x?q=1",
        &[("traceparent", &tp), ("tracestate", "vendor=abc,other=1")],
    )
    .await;
    let ([_, trace, parent, flags], state) = origin.last();
    assert_eq!((trace.as_str(), flags.as_str()), (TRACE, "01"));
    assert_ne!(parent, PARENT, "our span is the upstream's parent");
    assert_eq!(state.as_deref(), Some("vendor=abc,other=1"));

    let spans = collector.wait_for(1).await;
    assert_eq!(spans.len(), 1);
    let s = &spans[0];
    assert_eq!(s.trace_id(), TRACE);
    assert_eq!(s.parent(), PARENT);
    assert_eq!(s.span_id(), parent);
    assert_eq!(s.span.trace_state, "vendor=abc,other=1");
    assert_eq!(s.span.kind, 2, "SERVER");
    assert_eq!(s.span.name, "GET api");
    assert_eq!(s.span.flags & 0x3ff, 0x301, "sampled, remote parent");
    assert_eq!(s.service.as_deref(), Some("tidegate"));
    assert_eq!(s.text("http.request.method"), Some("GET"));
    assert_eq!(s.text("url.path"), Some("/api/x"));
    assert_eq!(s.text("server.address"), Some("app.test"));
    assert_eq!(s.text("client.address"), Some("127.0.0.1"));
    assert_eq!(s.int("http.response.status_code"), Some(200));
    assert_eq!(s.text("tidegate.route"), Some("api"));
    let upstream = origin.backend.addr.to_string();
    assert_eq!(s.text("tidegate.upstream.address"), Some(upstream.as_str()));
    assert_eq!(s.int("tidegate.retries"), Some(0));
    assert_eq!(s.text("tidegate.outcome"), Some("done"));
    assert!(s.span.status.is_none());

    // Timings: consistent, whatever their size.
    let (start, end) = (s.span.start_time_unix_nano, s.span.end_time_unix_nano);
    assert!(
        start > 1_600_000_000_000_000_000,
        "unix nanoseconds: {start}"
    );
    assert!(start <= end, "{start} > {end}");
    let length = (end - start) as f64 / 1e9;
    let connect = s
        .seconds("tidegate.upstream.connect.duration")
        .expect("connect");
    let head = s
        .seconds("tidegate.upstream.response_head.duration")
        .expect("response head");
    assert!(connect >= 0.0 && head >= 0.0);
    assert!(
        connect + head <= length + 1e-6,
        "{connect} + {head} > {length}"
    );
    let events: Vec<&str> = s.span.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(events, ["upstream connected", "upstream response head"]);
    let (connected, answered) = (
        s.span.events[0].time_unix_nano,
        s.span.events[1].time_unix_nano,
    );
    // The span's times and its events' come from one clock reading per
    // batch; allow a microsecond of rounding.
    assert!(start <= connected + 1_000 && connected <= answered && answered <= end + 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_parent_a_trace_starts_sampled_by_ratio() {
    let (origin, collector) = (origin(), collector());
    let proxy = Proxy::start(&config(&origin, &collector.endpoint()).toml());
    ok(&proxy, "/api/new", &[("tracestate", "orphan=1")]).await;
    let ([_, trace, parent, flags], state) = origin.last();
    assert_eq!(flags, "01");
    assert_ne!(trace, "0".repeat(32));
    assert_eq!(
        state, None,
        "a tracestate without its traceparent is dropped"
    );
    let spans = collector.wait_for(1).await;
    assert_eq!(spans[0].trace_id(), trace);
    assert_eq!(spans[0].span_id(), parent);
    assert!(spans[0].span.parent_span_id.is_empty(), "a root span");
    assert_eq!(spans[0].span.flags & 0x3ff, 0x101, "sampled, not remote");
    // A request without a route: still a span, named by its method.
    let (status, _, _) = exchange(proxy.addr, "GET", "app.test", "/else", &[], empty()).await;
    assert_eq!(status, 404);
    let spans = collector.wait_for(2).await;
    assert_eq!(spans[1].span.name, "GET");
    assert_eq!(spans[1].int("http.response.status_code"), Some(404));
    assert_eq!(spans[1].text("tidegate.route"), None);

    // Ratio 0: propagated unsampled, never exported; a sampled parent
    // still is (parent-based), and the queue is in order, so once its
    // span is in, an unsampled one would be too.
    let (origin, collector) = (self::origin(), self::collector());
    let proxy = Proxy::start(
        &config(&origin, &collector.endpoint())
            .set("tracing.sample_ratio", 0.0)
            .toml(),
    );
    ok(&proxy, "/api/a", &[]).await;
    let ([_, unsampled, _, flags], _) = origin.last();
    assert_eq!(flags, "00");
    let tp = format!("00-{TRACE}-{PARENT}-01");
    ok(&proxy, "/api/b", &[("traceparent", &tp)]).await;
    let spans = collector.wait_for(1).await;
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].trace_id(), TRACE);
    assert_ne!(spans[0].trace_id(), unsampled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsampled_parent_is_propagated_and_not_exported() {
    let (origin, collector) = (origin(), collector());
    let proxy = Proxy::start(&config(&origin, &collector.endpoint()).toml());
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let tp = format!("00-{unsampled}-b7ad6b7169203331-00");
    ok(
        &proxy,
        "/api/u",
        &[("traceparent", &tp), ("tracestate", "k=v")],
    )
    .await;
    let ([_, trace, parent, flags], state) = origin.last();
    assert_eq!((trace.as_str(), flags.as_str()), (unsampled, "00"));
    assert_ne!(parent, "b7ad6b7169203331");
    assert_eq!(state.as_deref(), Some("k=v"));
    let tp = format!("00-{TRACE}-{PARENT}-01");
    ok(&proxy, "/api/s", &[("traceparent", &tp)]).await;
    let spans = collector.wait_for(1).await;
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].trace_id(), TRACE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_traceparent_starts_a_new_trace() {
    let (origin, collector) = (origin(), collector());
    let proxy = Proxy::start(&config(&origin, &collector.endpoint()).toml());
    let zeros = format!("00-{}-{PARENT}-01", "0".repeat(32));
    let short = format!("00-{}-{PARENT}-01", &TRACE[1..]);
    let upper = format!("00-{}-{PARENT}-01", TRACE.to_uppercase());
    let cases = [zeros, short, upper];
    for (i, tp) in cases.iter().enumerate() {
        ok(
            &proxy,
            "/api/i",
            &[("traceparent", tp), ("tracestate", "a=b")],
        )
        .await;
        let ([_, trace, _, flags], state) = origin.last();
        assert!(trace != TRACE && trace != "0".repeat(32), "{tp}");
        assert_eq!(flags, "01", "{tp}");
        assert_eq!(state, None, "{tp}");
        let spans = collector.wait_for(i + 1).await;
        assert_eq!(spans[i].trace_id(), trace);
        assert!(spans[i].span.parent_span_id.is_empty(), "{tp}");
    }
    // Two of them: neither is taken.
    let tp = format!("00-{TRACE}-{PARENT}-01");
    ok(
        &proxy,
        "/api/i",
        &[("traceparent", &tp), ("traceparent", &tp)],
    )
    .await;
    let ([_, trace, _, _], _) = origin.last();
    assert_ne!(trace, TRACE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_onto_another_server_is_counted() {
    let (origin, collector) = (origin(), collector());
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = Proxy::start(
        &TestConfig::new()
            .threads(1)
            .set("tracing.otlp_endpoint", collector.endpoint())
            .route(Route::to("app"))
            .group("app", [dead, origin.backend.addr])
            .set("upstreams.app.balance", "round_robin")
            .set("upstreams.app.outlier.consecutive_failures", 0)
            .toml(),
    );
    // Round robin: of two requests, one goes to the dead server first.
    ok(&proxy, "/", &[]).await;
    ok(&proxy, "/", &[]).await;
    let spans = collector.wait_for(2).await;
    let mut retries: Vec<i64> = spans
        .iter()
        .map(|s| s.int("tidegate.retries").expect("retries"))
        .collect();
    retries.sort();
    assert_eq!(retries, [0, 1]);
    let upstream = origin.backend.addr.to_string();
    for s in &spans {
        assert_eq!(s.text("tidegate.upstream.address"), Some(upstream.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_follow_the_tracing_section_and_shutdown_sends_what_is_queued() {
    let (origin, first, second) = (origin(), collector(), collector());
    let mut proxy = Proxy::start(&config(&origin, &first.endpoint()).toml());
    ok(&proxy, "/api/1", &[]).await;
    first.wait_for(1).await;
    // Other settings: a new exporter.
    proxy.reload(
        &config(&origin, &second.endpoint())
            .set("tracing.service_name", "edge")
            .toml(),
    );
    ok(&proxy, "/api/2", &[]).await;
    let spans = second.wait_for(1).await;
    assert_eq!(spans[0].text("url.path"), Some("/api/2"));
    assert_eq!(spans[0].service.as_deref(), Some("edge"));
    // No [tracing]: nothing is added to requests.
    proxy.reload(
        &TestConfig::new()
            .threads(1)
            .route(Route::to("app"))
            .group("app", [origin.backend.addr])
            .toml(),
    );
    ok(&proxy, "/api/3", &[]).await;
    assert_eq!(origin.seen.lock().unwrap().last().unwrap().0, None);
    // Back on, and stopped at once: the span queued is sent before the
    // proxy is gone (an export a second later would come too late).
    proxy.reload(&config(&origin, &first.endpoint()).toml());
    ok(&proxy, "/api/4", &[]).await;
    proxy.stop();
    let spans = first.spans.lock().unwrap().clone();
    let paths: Vec<_> = spans.iter().map(|s| s.text("url.path").unwrap()).collect();
    assert_eq!(paths, ["/api/1", "/api/4"]);
    assert_eq!(second.spans.lock().unwrap().len(), 1);
}

/// The value of the series written exactly `series`, if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn metrics(proxy: &Proxy) -> String {
    let addr = proxy.running().admin_addr().expect("admin listener");
    let (status, _, body) = exchange(addr, "GET", "admin", "/metrics", &[], empty()).await;
    assert_eq!(status, 200);
    body
}

/// Scrapes until `done` holds (bounded by HANG).
async fn metrics_until(proxy: &Proxy, done: impl Fn(&str) -> bool) -> String {
    tokio::time::timeout(HANG, async {
        loop {
            let text = metrics(proxy).await;
            if done(&text) {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the metrics never showed it")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_costs_no_request_anything() {
    let origin = origin();
    let (dead, _held) = dead_port();
    let proxy = Proxy::start(
        &config(&origin, &format!("http://{dead}/v1/traces"))
            .set("admin.address", "127.0.0.1:0")
            .toml(),
    );
    for _ in 0..20 {
        ok(&proxy, "/api/x", &[]).await;
    }
    let text = metrics_until(&proxy, |t| {
        value(t, "tidegate_trace_export_failures_total").is_some_and(|n| n >= 1.0)
    })
    .await;
    assert_eq!(
        value(&text, "tidegate_trace_spans_exported_total"),
        Some(0.0)
    );
    assert!(value(&text, "tidegate_trace_spans_dropped_total").is_some());
    assert!(text.contains("# TYPE tidegate_trace_spans_dropped_total counter"));
    crate::admin::promtool(&text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_collector_with_a_full_queue_drops_and_counts() {
    // Reads requests and never answers.
    let stuck = raw_backend(|mut s| async move {
        let mut buf = [0u8; 4096];
        while tokio::io::AsyncReadExt::read(&mut s, &mut buf)
            .await
            .is_ok_and(|n| n > 0)
        {}
    });
    let origin = origin();
    let proxy = Proxy::start(
        &config(&origin, &format!("http://{}/v1/traces", stuck.addr))
            .set("admin.address", "127.0.0.1:0")
            .set("tracing.queue", 1)
            .set("tracing.timeout", "2s")
            .toml(),
    );
    // Once an export hangs, one span fits in the queue and the next is
    // dropped; keep sending until the count shows it.
    let dropped = |t: &str| value(t, "tidegate_trace_spans_dropped_total").unwrap_or(0.0);
    let text = tokio::time::timeout(HANG, async {
        loop {
            for _ in 0..5 {
                ok(&proxy, "/api/x", &[]).await;
            }
            let text = metrics(&proxy).await;
            if dropped(&text) >= 1.0 {
                break text;
            }
        }
    })
    .await
    .expect("no span was ever dropped");
    assert_eq!(
        value(&text, "tidegate_trace_spans_exported_total"),
        Some(0.0)
    );
}

#[test]
fn tracing_settings_are_checked_with_their_line() {
    let base = TestConfig::proxying("127.0.0.1:9").toml();
    let line_of = |text: &str, key: &str| {
        text.lines()
            .position(|l| l.starts_with(key))
            .map(|i| i + 1)
            .unwrap()
    };
    let cases = [
        (
            "sample_ratio = 1.5",
            "tracing.sample_ratio: 1.5 is outside 0.0..=1.0",
        ),
        ("sample_ratio = -0.1", "tracing.sample_ratio"),
        ("queue = 0", "tracing.queue: must be at least 1"),
        ("timeout = \"soon\"", "tracing.timeout"),
        ("colour = \"blue\"", "unknown field"),
    ];
    for (extra, want) in cases {
        let text = format!(
            "{base}[tracing]\notlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\n{extra}\n"
        );
        let err = tidegate::Config::from_toml(&text, "t.toml")
            .expect_err("refused")
            .to_string();
        let key = extra.split(' ').next().unwrap();
        let line = line_of(&text, key);
        assert!(
            err.starts_with(&format!("t.toml:{line}: ")),
            "{extra}: {err}"
        );
        assert!(err.contains(want), "{extra}: {err}");
    }
    for (endpoint, want) in [
        ("127.0.0.1:4318", "is not a URL like http://"),
        ("https://collector:4318/v1/traces", "https is not supported"),
        ("http://", "is not a URL like"),
    ] {
        let text = format!("{base}[tracing]\notlp_endpoint = \"{endpoint}\"\n");
        let err = tidegate::Config::from_toml(&text, "t.toml")
            .expect_err("refused")
            .to_string();
        let line = line_of(&text, "otlp_endpoint");
        assert!(
            err.starts_with(&format!("t.toml:{line}: tracing.otlp_endpoint: ")),
            "{endpoint}: {err}"
        );
        assert!(err.contains(want), "{endpoint}: {err}");
    }
    // Defaults.
    let text = format!("{base}[tracing]\notlp_endpoint = \"http://c:4318\"\n");
    let c = tidegate::Config::from_toml(&text, "t.toml").unwrap();
    let t = c.tracing.expect("tracing on");
    assert_eq!(t.otlp_endpoint.to_string(), "http://c:4318/v1/traces");
    assert_eq!(t.sample_ratio, 1.0);
    assert_eq!(t.service_name, "tidegate");
    assert_eq!(t.queue, 2048);
    assert_eq!(t.timeout, Duration::from_secs(10));
}
