//! Health: active checks take failing servers out and bring them back;
//! passive ejection stops traffic to a failing server; a group with no
//! server in service answers 503; reload keeps health state; backup
//! servers take over only while no primary is in service.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use http::Request;

/// An origin answering its name; `/healthz` answers 200 while `healthy`.
fn checked(name: &'static str, healthy: Arc<AtomicBool>) -> Backend {
    backend(move |req: Request<hyper::body::Incoming>| {
        let healthy = healthy.clone();
        async move {
            if req.uri().path() == "/healthz" {
                let up = healthy.load(Ordering::SeqCst);
                return text(if up { 200 } else { 503 }, "health");
            }
            text(200, name)
        }
    })
}

fn config(servers: &[&Backend], upstream_extra: &str) -> String {
    group_config(
        &quoted(servers),
        &format!("balance = \"round_robin\"\n{upstream_extra}"),
    )
}

const CHECKS: &str = r#"
[upstreams.app.health]
path = "/healthz"
interval = "50ms"
timeout = "1s"
expect = [200]
healthy_threshold = 2
unhealthy_threshold = 2
"#;

/// Sends requests until `n` in a row satisfy `want`, bounded by HANG.
async fn until_streak(addr: std::net::SocketAddr, n: usize, want: impl Fn(u16, &str) -> bool) {
    tokio::time::timeout(HANG, async {
        let mut streak = 0;
        while streak < n {
            let (status, _, body) = get(addr, "/").await;
            if want(status, std::str::from_utf8(&body).unwrap_or("")) {
                streak += 1;
            } else {
                streak = 0;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    })
    .await
    .expect("the expected answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_checks_take_a_server_out_and_back() {
    let (a_up, b_up) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(true)),
    );
    let (a, b) = (checked("a", a_up), checked("b", b_up.clone()));
    let proxy = Proxy::start(&config(&[&a, &b], CHECKS));
    until_streak(proxy.addr, 1, |_, body| body == "b").await;

    b_up.store(false, Ordering::SeqCst);
    until_streak(proxy.addr, 20, |s, body| s == 200 && body == "a").await;

    b_up.store(true, Ordering::SeqCst);
    until_streak(proxy.addr, 1, |_, body| body == "b").await;
}

/// Two primaries and a backup: the backup gets nothing while either
/// primary passes its checks, everything once both fail, and nothing again
/// when one comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_takes_over_only_while_every_primary_is_out() {
    let ups: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::new(AtomicBool::new(true))).collect();
    let (a, b, c) = (
        checked("a", ups[0].clone()),
        checked("b", ups[1].clone()),
        checked("backup", ups[2].clone()),
    );
    let servers = format!(
        "\"{}\", \"{}\", {{ address = \"{}\", backup = true }}",
        a.addr, b.addr, c.addr
    );
    let proxy = Proxy::start(&group_config(
        &servers,
        &format!("balance = \"round_robin\"\n{CHECKS}"),
    ));
    until_streak(proxy.addr, 30, |s, body| s == 200 && body != "backup").await;

    ups[0].store(false, Ordering::SeqCst);
    until_streak(proxy.addr, 20, |s, body| s == 200 && body == "b").await;
    ups[1].store(false, Ordering::SeqCst);
    until_streak(proxy.addr, 20, |s, body| s == 200 && body == "backup").await;
    ups[0].store(true, Ordering::SeqCst);
    until_streak(proxy.addr, 20, |s, body| s == 200 && body == "a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_with_no_server_in_service_answers_503() {
    let up = Arc::new(AtomicBool::new(false));
    let only = checked("only", up.clone());
    let proxy = Proxy::start(&config(&[&only], CHECKS));
    until_streak(proxy.addr, 3, |s, body| {
        s == 503 && body == "503 Service Unavailable\n"
    })
    .await;
    up.store(true, Ordering::SeqCst);
    until_streak(proxy.addr, 3, |s, body| s == 200 && body == "only").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_ejection_stops_traffic_to_a_failing_server() {
    let good = backend(|_| async { text(200, "good") });
    let bad = backend(|_| async { text(500, "bad") });
    let proxy = Proxy::start(&config(
        &[&good, &bad],
        "[upstreams.app.outlier]\nconsecutive_failures = 3\nbase_ejection = \"10m\"\n",
    ));
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(get(proxy.addr, "/").await.0);
    }
    let errors = statuses.iter().filter(|&&s| s == 500).count();
    assert_eq!(errors, 3, "{statuses:?}");
    assert!(statuses[10..].iter().all(|&s| s == 200), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_health_state() {
    let (a_up, b_up) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(false)),
    );
    let (a, b) = (checked("a", a_up), checked("b", b_up));
    let mut proxy = Proxy::start(&config(&[&a, &b], CHECKS));
    until_streak(proxy.addr, 10, |_, body| body == "a").await;
    // Same servers, checks now too slow to run again during the test:
    // b stays out because its state was kept, not because it was re-checked.
    proxy.reload(&config(&[&a, &b], &CHECKS.replace("50ms", "1h")));
    for _ in 0..10 {
        assert_eq!(get(proxy.addr, "/").await.2, "a");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_dies_is_avoided_and_used_again_when_back() {
    let a = backend(|_| async { text(200, "a") });
    let b = backend(|_| async { text(200, "b") });
    let b_addr = b.addr;
    // Passive ejection also sees b's refusals; keep its ejection short so
    // the active checks decide when b is back.
    let extra = format!(
        "{}\n[upstreams.app.outlier]\nbase_ejection = \"100ms\"\n",
        CHECKS.replace("/healthz", "/")
    );
    let proxy = Proxy::start(&config(&[&a, &b], &extra));
    until_streak(proxy.addr, 1, |_, body| body == "b").await;

    // b dies: its port refuses connections.
    drop(b);
    until_streak(proxy.addr, 20, |s, body| s == 200 && body == "a").await;

    // b comes back on the same address.
    let _b = backend_at(b_addr, |_| async { text(200, "b") });
    until_streak(proxy.addr, 1, |_, body| body == "b").await;
}
