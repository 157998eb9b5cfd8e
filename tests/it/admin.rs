//! The admin listener: `/metrics` after known traffic (exact counts, and
//! `promtool check metrics` on the text), `/healthz`, `/readyz` (503 once
//! draining), the bearer token, and that nothing of it is served on the
//! proxy's own listener.

use std::process::{Command, Stdio};

use crate::common::config::{Route, TestConfig};
use crate::common::*;
use http::Request;

/// An origin: 404 for `/missing`, 200 with `hello` otherwise.
fn origin() -> Backend {
    backend(|req: Request<hyper::body::Incoming>| async move {
        match req.uri().path() {
            "/missing" => text(404, "nope"),
            _ => text(200, "hello"),
        }
    })
}

fn config(origin: &Backend, dead: std::net::SocketAddr, token: Option<&str>) -> String {
    let c = TestConfig::new().set("admin.address", "127.0.0.1:0");
    let c = match token {
        Some(t) => c.set("admin.token", t),
        None => c,
    };
    c.route(Route::to("app").path_prefix("/api/").set("name", "api"))
        .route(Route::to("app").host("app.test"))
        .route(Route::to("dead").path_prefix("/dead"))
        .group("app", [origin.addr])
        .group("dead", [dead])
        .toml()
}

/// `METHOD path` on the admin listener with `headers`: status and body.
async fn admin(proxy: &Proxy, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let addr = proxy.running().admin_addr().expect("admin listener");
    let (status, _, body) = exchange(addr, method, "admin", path, headers, empty()).await;
    (status, body)
}

pub(crate) async fn admin_get(
    proxy: &Proxy,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    admin(proxy, "GET", path, headers).await
}

async fn admin_post(proxy: &Proxy, path: &str) -> (u16, String) {
    admin(proxy, "POST", path, &[]).await
}

/// The value of the series written exactly `series` (name and labels),
/// if present.
pub(crate) fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

pub(crate) fn closed_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_known_traffic_exactly() {
    let origin = origin();
    let proxy = Proxy::start(&config(&origin, closed_port(), None));
    let p = proxy.addr;
    for _ in 0..3 {
        assert_eq!(get(p, "/api/x").await.0, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(p, "/missing").await.0, 404);
    }
    assert_eq!(get(p, "/dead").await.0, 502);
    let req = Request::get("/other")
        .header("host", "app.test")
        .body(empty())
        .unwrap();
    assert_eq!(send(p, req).await.unwrap().status(), 200);

    let l = "listener=\"127.0.0.1:0\"";
    let want = [
        (
            format!("tidegate_requests_total{{{l},route=\"api\",code=\"2xx\"}}"),
            3.0,
        ),
        (
            format!("tidegate_requests_total{{{l},route=\"none\",code=\"4xx\"}}"),
            2.0,
        ),
        (
            format!("tidegate_requests_total{{{l},route=\"routes[2]\",code=\"5xx\"}}"),
            1.0,
        ),
        (
            format!("tidegate_requests_total{{{l},route=\"routes[1]\",code=\"2xx\"}}"),
            1.0,
        ),
        (
            format!("tidegate_request_duration_seconds_count{{{l},route=\"api\"}}"),
            3.0,
        ),
        (
            format!("tidegate_request_duration_seconds_bucket{{{l},route=\"api\",le=\"+Inf\"}}"),
            3.0,
        ),
        (
            format!("tidegate_response_body_bytes_total{{{l},route=\"api\"}}"),
            15.0,
        ),
        (
            format!(
                "tidegate_upstream_responses_total{{group=\"app\",server=\"{}\",code=\"2xx\"}}",
                origin.addr
            ),
            4.0,
        ),
        (
            "tidegate_upstream_server_up{group=\"app\",server=\"".to_string()
                + &origin.addr.to_string()
                + "\"}",
            1.0,
        ),
    ];
    // A request is counted as its response ends, which may be just after
    // the client has it: scrape until the counts are in (bounded by HANG).
    let text = tokio::time::timeout(HANG, async {
        loop {
            let (status, text) = admin_get(&proxy, "/metrics", &[]).await;
            assert_eq!(status, 200);
            if want.iter().all(|(s, v)| value(&text, s) == Some(*v)) {
                break text;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("counts never matched {want:?}"));
    // `/missing` matched no route (the catch-all one needs host
    // app.test): the router's 404s, which no upstream saw.
    assert_eq!(
        value(
            &text,
            &format!(
                "tidegate_upstream_responses_total{{group=\"app\",server=\"{}\",code=\"4xx\"}}",
                origin.addr
            )
        ),
        None
    );
    assert!(value(
        &text,
        "tidegate_connections_accepted_total{listener=\"127.0.0.1:0\"}"
    )
    .is_some_and(|n| n >= 1.0));
    assert!(value(&text, "process_resident_memory_bytes").is_some_and(|n| n > 0.0));
    assert_eq!(
        value(&text, "tidegate_config_reloads_total{result=\"ok\"}"),
        Some(0.0)
    );

    promtool(&text);
}

/// promtool (Debian package `prometheus`) accepts the exposition.
pub(crate) fn promtool(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (apt-get install prometheus)");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_token() {
    let origin = origin();
    let proxy = Proxy::start(&config(&origin, closed_port(), Some("s3cret")));
    assert_eq!(admin_get(&proxy, "/healthz", &[]).await.0, 401);
    assert_eq!(
        admin_get(&proxy, "/metrics", &[("authorization", "Bearer wrong")])
            .await
            .0,
        401
    );
    let auth = [("authorization", "Bearer s3cret")];
    assert_eq!(
        admin_get(&proxy, "/healthz", &auth).await,
        (200, "ok\n".into())
    );
    assert_eq!(
        admin_get(&proxy, "/readyz", &auth).await,
        (200, "ready\n".into())
    );
    assert_eq!(admin_get(&proxy, "/nothing", &auth).await.0, 404);
    // The proxy's own listener knows nothing of these: it routes them.
    let (status, _, body) = get(proxy.addr, "/metrics").await;
    assert_eq!(status, 404);
    let body = String::from_utf8_lossy(&body);
    assert!(!body.contains("tidegate_"), "{body}");

    proxy.running().shutdown();
    assert_eq!(
        admin_get(&proxy, "/readyz", &auth).await,
        (503, "draining\n".into())
    );
    assert_eq!(admin_get(&proxy, "/healthz", &auth).await.0, 200);
}

#[test]
fn admin_settings_are_checked() {
    let base = TestConfig::proxying("127.0.0.1:9").toml();
    let err = |extra: &str| {
        tidegate::Config::from_toml(&format!("{base}{extra}"), "t.toml")
            .expect_err("refused")
            .to_string()
    };
    assert!(
        err("[admin]\naddress = \"localhost\"\n").contains("admin.address: `localhost` is not"),
        "{}",
        err("[admin]\naddress = \"localhost\"\n")
    );
    assert!(err("[admin]\naddress = \"127.0.0.1:1\"\ntoken = \"\"\n").contains("admin.token"));
    assert!(err("[admin]\naddress = \"127.0.0.1:1\"\nport = 2\n").contains("unknown field"));
}

/// Which origin answered `n` requests in a row.
async fn answered(addr: std::net::SocketAddr, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let (status, _, body) = get(addr, "/").await;
        assert_eq!(status, 200);
        out.push(String::from_utf8_lossy(&body).into_owned());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_and_enable_under_load_fail_nothing() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let named = |name: &'static str| backend(move |_req| async move { text(200, name) });
    let (a, b) = (named("a"), named("b"));
    let toml = TestConfig::new()
        .set("admin.address", "127.0.0.1:0")
        .route(Route::to("app"))
        .group("app", [a.addr, b.addr])
        .set("upstreams.app.balance", "round_robin")
        .toml();
    let mut proxy = Proxy::start(&toml);
    let addr = proxy.addr;
    // Load all along: four clients, every answer must be a 200.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, failed, done) = (stop.clone(), failed.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let req = Request::get("/").header("host", "t").body(empty()).unwrap();
                match send(addr, req).await {
                    Ok(r) if r.status() == 200 => {}
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let b_addr = b.addr.to_string();
    assert!(answered(addr, 20).await.contains(&"b".to_string()));
    assert_eq!(
        admin_post(&proxy, &format!("/upstreams/app/servers/{b_addr}/drain")).await,
        (200, "drained\n".into())
    );
    // Requests made after the drain answered go to `a` only.
    assert!(answered(addr, 40).await.iter().all(|n| n == "a"));
    // A reload keeps the drain (the registry keeps the server's state).
    proxy.reload(&toml);
    assert!(answered(addr, 40).await.iter().all(|n| n == "a"));
    let (_, metrics) = admin_get(&proxy, "/metrics", &[]).await;
    let drained = format!("tidegate_upstream_server_drained{{group=\"app\",server=\"{b_addr}\"}}");
    assert_eq!(value(&metrics, &drained), Some(1.0), "{metrics}");
    assert_eq!(
        admin_post(&proxy, &format!("/upstreams/app/servers/{b_addr}/enable")).await,
        (200, "enabled\n".into())
    );
    assert!(answered(addr, 20).await.contains(&"b".to_string()));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert!(done.load(Ordering::Relaxed) > 0);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests under drain"
    );

    assert_eq!(
        admin_post(&proxy, "/upstreams/app/servers/10.9.9.9:1/drain")
            .await
            .0,
        404
    );
    assert_eq!(
        admin_post(&proxy, "/upstreams/nope/servers/x/drain")
            .await
            .0,
        404
    );
    assert_eq!(
        admin_get(
            &proxy,
            &format!("/upstreams/app/servers/{b_addr}/drain"),
            &[]
        )
        .await
        .0,
        405
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_metrics_when_asked_for() {
    let origin = origin();
    let proxy = Proxy::start(&config(&origin, closed_port(), None));
    assert_eq!(get(proxy.addr, "/api/x").await.0, 200);
    let addr = proxy.running().admin_addr().unwrap();
    let req = Request::get("/metrics")
        .header("host", "admin")
        // What Prometheus 2.x sends.
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        )
        .body(empty())
        .unwrap();
    let resp = send(addr, req).await.unwrap();
    assert_eq!(
        resp.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.contains("# TYPE tidegate_requests counter\n"),
        "{text}"
    );
    assert!(text.contains("\ntidegate_requests_total{"), "{text}");
    assert!(!text.contains("# TYPE tidegate_requests_total"), "{text}");
    // Without the Accept: the classic format.
    let (_, classic) = admin_get(&proxy, "/metrics", &[]).await;
    assert!(classic.contains("# TYPE tidegate_requests_total counter\n"));
    assert!(!classic.contains("# EOF"));
}

/// `GET /config`: the config in force as JSON, defaults filled in, and no
/// secret in it: the token, credential fields a route matches on, sets or
/// answers with, and the user information of URLs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_shows_what_is_in_force_without_secrets() {
    let origin = origin();
    let secrets = [
        "admin-tok-1",
        "upstream-cred-2",
        "api-key-3",
        "url-pass-4",
        "match-cookie-5",
        "respond-pass-6",
    ];
    let toml = TestConfig::new()
        .set("admin.address", "127.0.0.1:0")
        .set("admin.token", secrets[0])
        .group("app", [origin.addr])
        .route(
            Route::to("app")
                .path_prefix("/api/")
                .set("name", "api")
                .header("cookie", &format!("session={}", secrets[4]))
                .set(
                    "request_headers.set.authorization",
                    format!("Bearer {}", secrets[1]),
                )
                .set("request_headers.set.x-api-key", secrets[2])
                .set(
                    "request_headers.add.x-origin",
                    format!("https://bob:{}@origin.test/x", secrets[3]),
                ),
        )
        .route(Route::respond(302).path("/old").set(
            "respond.headers.location",
            format!("https://carol:{}@new.test/", secrets[5]),
        ))
        .toml();
    let proxy = Proxy::start(&toml);
    let auth = format!("Bearer {}", secrets[0]);
    let auth = [("authorization", auth.as_str())];
    assert_eq!(admin_get(&proxy, "/config", &[]).await.0, 401);
    assert_eq!(admin_post(&proxy, "/config").await.0, 401);

    let (status, body) = admin_get(&proxy, "/config", &auth).await;
    assert_eq!(status, 200, "{body}");
    for s in secrets {
        assert!(!body.contains(s), "{s} shown: {body}");
    }
    let c: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(c["admin"]["token"], "<redacted>");
    assert_eq!(c["source"]["file"], "test.toml");
    // Defaults, filled in.
    assert_eq!(c["timeouts"]["client_idle"], "1m");
    assert_eq!(c["limits"]["max_request_head_bytes"], 16384);
    assert_eq!(c["log_format"], "text");
    let group = &c["upstreams"][0];
    assert_eq!(group["name"], "app");
    assert_eq!(group["balance"], "peak_ewma");
    assert_eq!(group["retry"]["attempts"], 2);
    assert_eq!(group["outlier"]["base_ejection"], "10s");
    assert_eq!(
        group["servers"][0]["target"]["addr"],
        origin.addr.to_string()
    );
    let routes = c["routes"].as_array().unwrap();
    let api = routes
        .iter()
        .find(|r| r["name"] == "api")
        .expect("the route");
    assert_eq!(api["path"]["prefix"], "/api/");
    assert_eq!(api["action"]["upstream_index"], 0);
    assert_eq!(api["upstream_connect"], "5s");
    assert_eq!(api["upstream_response_head"], "1m");
    assert_eq!(api["headers"]["cookie"], "<redacted>");
    let ops = &api["request_headers"];
    assert_eq!(ops["set"]["authorization"], "<redacted>");
    assert_eq!(ops["set"]["x-api-key"], "<redacted>");
    assert_eq!(ops["add"]["x-origin"], "https://<redacted>@origin.test/x");
    let old = routes
        .iter()
        .find(|r| r["path"]["exact"] == "/old")
        .unwrap();
    assert_eq!(old["action"]["respond"]["status"], 302);
    assert_eq!(
        old["action"]["respond"]["headers"]["location"],
        "https://<redacted>@new.test/"
    );
    assert_eq!(admin(&proxy, "POST", "/config", &auth).await.0, 405);
}

/// `POST /reload` needs a config file to read again: the in-process API
/// (`tidegate::start`) has none, and says so; other methods get 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_without_a_config_file_says_so() {
    let origin = origin();
    let proxy = Proxy::start(&config(&origin, closed_port(), None));
    let (status, body) = admin_post(&proxy, "/reload").await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("--config"), "{body}");
    let addr = proxy.running().admin_addr().unwrap();
    for method in ["GET", "PUT", "HEAD"] {
        let (status, h, _) = exchange(addr, method, "admin", "/reload", &[], empty()).await;
        assert_eq!((method, status), (method, 405));
        assert_eq!(h["allow"], "POST");
    }
    // Nothing was reloaded, nor counted as tried.
    let (_, metrics) = admin_get(&proxy, "/metrics", &[]).await;
    for result in ["ok", "failed"] {
        let series = format!("tidegate_config_reloads_total{{result=\"{result}\"}}");
        assert_eq!(value(&metrics, &series), Some(0.0), "{metrics}");
    }
}
