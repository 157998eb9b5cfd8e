//! The admin listener's status page and its JSON: each server's state
//! (healthy, ejected, backed off, draining), in-flight requests, rates
//! and latencies, the config generation after a reload, and a page that
//! needs nothing from elsewhere.

use http::Request;
use serde_json::Value;

use crate::admin::admin_get;
use crate::common::config::{Route, TestConfig};
use crate::common::*;

fn config(origin: &Backend, dead: std::net::SocketAddr) -> String {
    TestConfig::new()
        .set("admin.address", "127.0.0.1:0")
        .route(Route::to("app").path_prefix("/api/").set("name", "api"))
        .route(Route::to("flaky").path_prefix("/flaky"))
        .route(Route::to("busy").path_prefix("/busy"))
        .group("app", [origin.addr])
        .group("flaky", [dead])
        .set("upstreams.flaky.outlier.consecutive_failures", 1)
        .set("upstreams.flaky.outlier.max_ejected_percent", 100)
        .set("upstreams.flaky.outlier.base_ejection", "10m")
        .group("busy", [origin.addr])
        .toml()
}

async fn json(proxy: &Proxy) -> Value {
    let (status, body) = admin_get(proxy, "/status.json", &[]).await;
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The server `addr` of `group` in the status.
fn server<'a>(s: &'a Value, group: &str, addr: impl ToString) -> &'a Value {
    let addr = addr.to_string();
    s["upstreams"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["group"] == group))
        .and_then(|g| g["servers"].as_array())
        .and_then(|s| s.iter().find(|s| s["address"] == addr.as_str()))
        .unwrap_or_else(|| panic!("no {group}/{addr} in {s:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_states_rates_and_generation() {
    let origin = backend(|req: Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/busy" {
            let mut r = text(429, "later");
            r.headers_mut()
                .insert("retry-after", http::HeaderValue::from_static("120"));
            return r;
        }
        text(200, "hello")
    });
    let (dead, _held) = dead_port();
    let mut proxy = Proxy::start(&config(&origin, dead));
    let p = proxy.addr;
    for _ in 0..20 {
        assert_eq!(get(p, "/api/x").await.0, 200);
    }
    assert_eq!(get(p, "/flaky").await.0, 502);
    assert_eq!(get(p, "/busy").await.0, 429);

    // Counts land as responses end: look until the 20 are in.
    let s = tokio::time::timeout(HANG, async {
        loop {
            let s = json(&proxy).await;
            let api = s["routes"]
                .as_array()
                .and_then(|r| r.iter().find(|r| r["name"] == "api"));
            if api
                .and_then(|a| a["requests_per_second"].as_f64())
                .unwrap_or(0.0)
                > 0.0
                && server(&s, "busy", origin.addr)["state"] == "backed_off"
            {
                break s;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("traffic shows");
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["config_generation"], 1);
    assert_eq!(s["last_reload_result"], "none");
    assert_eq!(s["ready"], true);
    assert_eq!(s["listeners"][0]["address"], "127.0.0.1:0");
    let api = &s["routes"][0];
    assert_eq!(api["name"], "api");
    assert_eq!(api["matches"], "prefix /api/");
    assert_eq!(api["action"], "upstream app");
    assert_eq!(api["error_rate"], 0.0);
    let p50 = api["p50_seconds"].as_f64().expect("a p50");
    let p99 = api["p99_seconds"].as_f64().expect("a p99");
    assert!(p50 > 0.0 && p50 <= p99, "{api}");
    let app = server(&s, "app", origin.addr);
    assert_eq!(app["state"], "healthy");
    assert!(app["requests_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(app["in_flight"], 0);
    let flaky = server(&s, "flaky", dead);
    assert_eq!(flaky["state"], "ejected");
    assert!(flaky["ejected_for_seconds"].as_f64().unwrap() > 60.0);
    assert_eq!(flaky["ejections"], 1);
    let busy = server(&s, "busy", origin.addr);
    assert!(busy["backed_off_for_seconds"].as_f64().unwrap() > 60.0);

    // Drained through the admin API; the page says so.
    let addr = proxy.running().admin_addr().unwrap();
    let path = format!("/upstreams/app/servers/{}/drain", origin.addr);
    let (status, _, _) = exchange(addr, "POST", "admin", &path, &[], empty()).await;
    assert_eq!(status, 200);
    assert_eq!(
        server(&json(&proxy).await, "app", origin.addr)["state"],
        "draining"
    );

    let (status, page) = admin_get(&proxy, "/status", &[]).await;
    assert_eq!(status, 200);
    for needle in [
        "<title>Tidegate status</title>",
        "http-equiv=refresh",
        "<h2>Upstream app</h2>",
        "class=\"s draining\"",
        "class=\"s ejected\"",
        "class=\"s backed_off\"",
        "<td>api</td><td>prefix /api/</td><td>upstream app</td>",
        &origin.addr.to_string(),
    ] {
        assert!(page.contains(needle), "{needle:?} not in\n{page}");
    }
    // Self-contained: no script, stylesheet, image or font from anywhere.
    for asset in ["<script", "<link", "<img", "url(", "@import"] {
        assert!(!page.contains(asset), "{asset:?} in\n{page}");
    }

    // A reload is a new generation; drained stays drained.
    proxy.reload(&config(&origin, dead));
    let s = json(&proxy).await;
    assert_eq!(s["config_generation"], 2);
    assert_eq!(s["last_reload_result"], "ok");
    assert_eq!(server(&s, "app", origin.addr)["state"], "draining");
}
