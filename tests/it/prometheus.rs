//! A real Prometheus server (Debian package `prometheus`) scrapes the
//! admin listener (it asks for OpenMetrics) and answers the request rate
//! through its HTTP API.

use std::process::{Child, Command, Stdio};

use http::Request;
use serde_json::Value;

use crate::common::config::TestConfig;
use crate::common::*;

/// Stops Prometheus and removes its folder when the test ends, however
/// it ends.
struct Stopped(Child, std::path::PathBuf);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// A query's result through Prometheus's HTTP API, if it has one.
async fn query(prometheus: std::net::SocketAddr, q: &str) -> Option<f64> {
    let encoded: String = q
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let req = Request::get(format!("/api/v1/query?query={encoded}"))
        .header("host", "prometheus")
        .body(empty())
        .ok()?;
    let resp = send(prometheus, req).await.ok()?;
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .ok()?
        .to_bytes();
    let v: Value = serde_json::from_slice(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_admin_listener_and_answers_the_rate() {
    let origin = backend(|_req: Request<hyper::body::Incoming>| async { text(200, "hello") });
    let proxy = Proxy::start(
        &TestConfig::proxying(origin.addr)
            .set("admin.address", "127.0.0.1:0")
            .toml(),
    );
    let admin = proxy.running().admin_addr().expect("admin listener");
    let dir = TempFile::new("prometheus");
    std::fs::create_dir_all(dir.arg()).unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: tidegate\n    static_configs:\n      - targets: ['{admin}']\n"
    );
    let config_file = format!("{}/prometheus.yml", dir.arg());
    std::fs::write(&config_file, config).unwrap();
    // A port for Prometheus's own listener (it takes no port 0).
    let web = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={config_file}"))
        .arg(format!("--storage.tsdb.path={}/data", dir.arg()))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus runs (apt-get install prometheus)");
    let _prometheus = Stopped(child, dir.path.clone());

    // Traffic until Prometheus has seen the counter go up between two
    // scrapes (it scrapes every second): then the rate is above 0.
    let rate = tokio::time::timeout(HANG, async {
        loop {
            for _ in 0..10 {
                assert_eq!(get(proxy.addr, "/").await.0, 200);
            }
            if let Some(r) = query(web, "sum(rate(tidegate_requests_total[10s]))").await {
                if r > 0.0 {
                    break r;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("Prometheus answers a request rate");
    assert!(rate > 0.0);
    assert_eq!(query(web, "up{job=\"tidegate\"}").await, Some(1.0));
    // Histograms and gauges arrive whole too.
    let count = query(web, "sum(tidegate_request_duration_seconds_count)").await;
    assert!(count.is_some_and(|c| c >= 10.0), "{count:?}");
}
