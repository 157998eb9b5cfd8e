//! Traces (`[tracing]`): W3C Trace Context continued or started and sent
//! upstream, and the spans an in-test OTLP/HTTP receiver gets (decoded
//! with prost messages written here from opentelemetry-proto, apart from
//! the proxy's own): parentage, attributes, timings; sampling; an
//! unreachable or stuck collector costs no request anything, and shows in
//! `/metrics`; config errors name their line.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use prost::Message;

use crate::common::config::{Route, TestConfig};
use crate::common::*;

/// The OTLP messages, as opentelemetry-proto numbers them.
mod otlp {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InstrumentationScope {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(string, tag = "3")]
        pub trace_state: String,
        #[prost(bytes = "vec", tag = "4")]
        pub parent_span_id: Vec<u8>,
        #[prost(string, tag = "5")]
        pub name: String,
        #[prost(int32, tag = "6")]
        pub kind: i32,
        #[prost(fixed64, tag = "7")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "8")]
        pub end_time_unix_nano: u64,
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
        #[prost(message, repeated, tag = "11")]
        pub events: Vec<Event>,
        #[prost(message, optional, tag = "15")]
        pub status: Option<Status>,
        #[prost(fixed32, tag = "16")]
        pub flags: u32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        #[prost(fixed64, tag = "1")]
        pub time_unix_nano: u64,
        #[prost(string, tag = "2")]
        pub name: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(int32, tag = "3")]
        pub code: i32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(oneof = "Value", tags = "1, 2, 3, 4")]
        pub value: Option<Value>,
    }
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        String(String),
        #[prost(bool, tag = "2")]
        Bool(bool),
        #[prost(int64, tag = "3")]
        Int(i64),
        #[prost(double, tag = "4")]
        Double(f64),
    }
}

use otlp::Value;

/// A span as received, with the resource it came under.
#[derive(Debug, Clone)]
struct Got {
    span: otlp::Span,
    service: Option<String>,
}

impl Got {
    fn attr(&self, key: &str) -> Option<&Value> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    fn text(&self, key: &str) -> Option<&str> {
        match self.attr(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    fn int(&self, key: &str) -> Option<i64> {
        match self.attr(key) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        }
    }

    fn seconds(&self, key: &str) -> Option<f64> {
        match self.attr(key) {
            Some(Value::Double(n)) => Some(*n),
            _ => None,
        }
    }

    fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    fn parent(&self) -> String {
        hex(&self.span.parent_span_id)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP receiver: decodes each POST to `/v1/traces` and keeps
/// its spans.
struct Collector {
    backend: Backend,
    spans: Arc<Mutex<Vec<Got>>>,
}

fn collector() -> Collector {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = spans.clone();
    let backend = backend(move |req: Request<hyper::body::Incoming>| {
        let kept = kept.clone();
        async move {
            assert_eq!(req.method(), "POST");
            assert_eq!(req.uri().path(), "/v1/traces");
            assert_eq!(req.headers()["content-type"], "application/x-protobuf");
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let export = otlp::ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
            let mut kept = kept.lock().unwrap();
            for rs in export.resource_spans {
                let service = rs.resource.as_ref().and_then(|r| {
                    r.attributes.iter().find_map(|kv| match &kv.value {
                        Some(otlp::AnyValue {
                            value: Some(Value::String(s)),
                        }) if kv.key == "service.name" => Some(s.clone()),
                        _ => None,
                    })
                });
                for ss in rs.scope_spans {
                    assert_eq!(ss.scope.as_ref().map(|s| s.name.as_str()), Some("tidegate"));
                    for span in ss.spans {
                        kept.push(Got {
                            span,
                            service: service.clone(),
                        });
                    }
                }
            }
            let mut r = http::Response::new(empty());
            r.headers_mut()
                .insert("content-type", "application/x-protobuf".parse().unwrap());
            r
        }
    });
    Collector { backend, spans }
}

impl Collector {
    fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.backend.addr)
    }

    /// The spans once there are `n` (bounded by HANG).
    async fn wait_for(&self, n: usize) -> Vec<Got> {
        tokio::time::timeout(HANG, async {
            loop {
                {
                    let spans = self.spans.lock().unwrap();
                    if spans.len() >= n {
                        break spans.clone();
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{n} span(s) never arrived"))
    }
}

/// An origin that answers 200 and notes the `traceparent` and
/// `tracestate` of each request.
struct Origin {
    backend: Backend,
    seen: Arc<Mutex<Vec<(Option<String>, Option<String>)>>>,
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
            kept.lock().unwrap().push((h("traceparent"), h("tracestate")));
            text(200, "hello")
        }
    });
    Origin { backend, seen }
}

impl Origin {
    /// The last request's `traceparent`, split: (version, trace ID,
    /// parent ID, flags), and its `tracestate`.
    fn last(&self) -> ([String; 4], Option<String>) {
        let (tp, ts) = self.seen.lock().unwrap().last().cloned().expect("a request");
        let tp = tp.expect("a traceparent upstream");
        let parts: Vec<String> = tp.split('-').map(str::to_string).collect();
        assert_eq!(parts.len(), 4, "{tp}");
        assert_eq!(parts[0], "00", "{tp}");
        assert_eq!(parts[1].len(), 32, "{tp}");
        assert_eq!(parts[2].len(), 16, "{tp}");
        assert!(tp.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
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
    assert!(start > 1_600_000_000_000_000_000, "unix nanoseconds: {start}");
    assert!(start <= end, "{start} > {end}");
    let length = (end - start) as f64 / 1e9;
    let connect = s.seconds("tidegate.upstream.connect.duration").expect("connect");
    let head = s
        .seconds("tidegate.upstream.response_head.duration")
        .expect("response head");
    assert!(connect >= 0.0 && head >= 0.0);
    assert!(connect + head <= length + 1e-6, "{connect} + {head} > {length}");
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
    assert_eq!(state, None, "a tracestate without its traceparent is dropped");
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
    ok(&proxy, "/api/u", &[("traceparent", &tp), ("tracestate", "k=v")]).await;
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
        ok(&proxy, "/api/i", &[("traceparent", tp), ("tracestate", "a=b")]).await;
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
    ok(&proxy, "/api/i", &[("traceparent", &tp), ("traceparent", &tp)]).await;
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

fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_costs_no_request_anything() {
    let origin = origin();
    let proxy = Proxy::start(
        &config(&origin, &format!("http://{}/v1/traces", closed_port()))
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
    assert_eq!(value(&text, "tidegate_trace_spans_exported_total"), Some(0.0));
    assert!(value(&text, "tidegate_trace_spans_dropped_total").is_some());
    assert!(text.contains("# TYPE tidegate_trace_spans_dropped_total counter"));
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
    assert_eq!(value(&text, "tidegate_trace_spans_exported_total"), Some(0.0));
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
        assert!(err.starts_with(&format!("t.toml:{line}: ")), "{extra}: {err}");
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
